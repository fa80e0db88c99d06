// fleetpipe.Uploader: shaped, resumable delivery of a Buffer's records to S3.
#include <pybind11/stl.h>

#include <chrono>

#include "common.hpp"
#include "fleetpipe/uploader.hpp"

namespace fleetpipe::py {
namespace {

struct PyUploader {
  pybind11::object metrics;
  pybind11::object buffer_obj;  // the PyBuffer (kept alive, counted as a dependent)
  Port port;
  std::unique_ptr<Uploader> up;

  ~PyUploader() { close(); }
  void close() {
    if (up) {
      pybind11::gil_scoped_release nogil;
      up.reset();
    }
    if (buffer_obj) {
      buffer_obj.cast<PyBuffer&>().dependents--;
      buffer_obj = pybind11::object();
    }
  }
  // A stopped uploader is of no further use, and its Buffer must be closable after it.
  void shutdown() {
    if (up) {
      pybind11::gil_scoped_release nogil;
      up->shutdown();
    }
    close();
  }
  Uploader& get() {
    if (!up) raise(Error(errc::invalid_argument, "the Uploader is closed"));
    return *up;
  }
};

std::unique_ptr<PyUploader> make_uploader(pybind11::handle config, pybind11::handle buffer,
                                          pybind11::handle metrics,
                                          std::optional<std::string> device_id) {
  if (!pybind11::isinstance<PyBuffer>(buffer)) throw pybind11::type_error("buffer must be a fleetpipe.Buffer");
  Config c = section_config_from(config, "uploader");
  c.uploader.device_id = device_id ? *device_id : c.device_id;
  PyBuffer& b = buffer.cast<PyBuffer&>();
  auto pu = std::make_unique<PyUploader>();
  pu->metrics = metrics.is_none() ? b.metrics : metrics_or_new(metrics);
  pu->port = Port{}.with_defaults();
  Buffer& buf = b.get();
  MetricsRegistry& reg = pu->metrics.cast<MetricsRegistry&>();
  Result<std::unique_ptr<Uploader>> r = Error(errc::internal, "");
  {
    pybind11::gil_scoped_release nogil;
    r = Uploader::create(c.uploader, buf, pu->port, reg);
  }
  pu->up = unwrap(std::move(r));
  pu->buffer_obj = pybind11::reinterpret_borrow<pybind11::object>(buffer);
  b.dependents++;
  return pu;
}

pybind11::dict status_dict(const UploaderStatus& s) {
  pybind11::dict d;
  d["paused"] = s.paused;
  d["paused_by_host"] = s.paused_by_host;
  d["paused_by_schedule"] = s.paused_by_schedule;
  d["paused_by_network"] = s.paused_by_network;
  d["busy"] = s.busy;
  d["rate_bytes_per_s"] = s.rate_bytes_per_s;
  d["burst_bytes"] = s.burst_bytes;
  d["objects_uploaded"] = s.objects_uploaded;
  d["records_acked"] = s.records_acked;
  d["records_parked"] = s.records_parked;
  d["bytes_sent"] = s.bytes_sent;
  d["retries"] = s.retries;
  d["multipart_resumed"] = s.multipart_resumed;
  d["clock_offset_s"] = s.clock_offset_s;
  d["last_error"] = s.last_error;
  return d;
}

}  // namespace

void bind_uploader(pybind11::module_& m) {
  pybind11::class_<PyUploader>(m, "Uploader",
      "Delivers a Buffer's records to S3 (include/fleetpipe/uploader.hpp, docs/uploader.md).\n\n"
      "    up = fleetpipe.Uploader({'endpoint': 'https://127.0.0.1:9000', 'bucket': 'b',\n"
      "                             'ca_file': 'ca.pem', 'credentials': {...}}, buf, device_id='cart-1')\n"
      "    up.drain(timeout=30)     # upload everything queued now\n\n"
      "Nothing happens between calls: drive it with poll() / run_for() / drain(). run_for and\n"
      "drain release the GIL; the Buffer must not be used from another thread meanwhile.\n"
      "pause/resume/set_rate/flush are thread-safe.")
      .def(pybind11::init(&make_uploader), pybind11::arg("config"), pybind11::arg("buffer"),
           pybind11::arg("metrics") = pybind11::none(), pybind11::arg("device_id") = pybind11::none(),
           "`config`: the \"uploader\" section as a dict (errors name '/uploader/<key>') or a\n"
           "whole config. `device_id` names the device= partition (default: the config's).\n"
           "`metrics` defaults to the buffer's registry. Raises fleetpipe.Error: invalid\n"
           "configuration, insecure refused (http:// without allow_insecure_http), TLS error.")
      .def_property_readonly("metrics", [](PyUploader& u) { return u.metrics; })
      .def("poll", [](PyUploader& u) {
             Uploader& up = u.get();
             pybind11::gil_scoped_release nogil;
             return up.poll();
           }, "Runs the I/O handlers ready now (never blocks). Returns how many ran.")
      .def("run_for", [](PyUploader& u, pybind11::handle seconds) {
             auto d = duration_from(seconds);
             Uploader& up = u.get();
             pybind11::gil_scoped_release nogil;
             return up.run_for(d);
           }, pybind11::arg("seconds"), "Runs handlers for up to `seconds` (blocks, GIL released).")
      .def("drain", [](PyUploader& u, pybind11::handle timeout) {
             auto limit = duration_from(timeout);
             Uploader& up = u.get();
             Buffer& buf = u.buffer_obj.cast<PyBuffer&>().get();
             bool done = false;
             std::uint64_t left = 0;
             {
               pybind11::gil_scoped_release nogil;
               const auto deadline = std::chrono::steady_clock::now() + limit;
               up.flush();
               while (std::chrono::steady_clock::now() < deadline) {
                 up.run_for(std::chrono::milliseconds(20));
                 auto st = buf.stats();
                 left = st.records - st.parked;
                 if (left == 0 && up.idle()) {
                   done = true;
                   break;
                 }
                 up.flush();
               }
             }
             if (!done) {
               raise(Error(errc::timeout, "uploader drain: " + std::to_string(left) +
                                              " record(s) left after the timeout; last error: " +
                                              up.status().last_error));
             }
           }, pybind11::arg("timeout") = 30.0,
           "Flushes and runs until the Buffer holds nothing uploadable (parked records\n"
           "excepted) and the uploader is idle. Raises fleetpipe.Error (timeout) otherwise.")
      .def("set_rate", [](PyUploader& u, double bps, std::uint64_t burst) { u.get().set_rate(bps, burst); },
           pybind11::arg("bytes_per_second"), pybind11::arg("burst_bytes") = 0,
           "Base rate (0 = unlimited) and burst (0 = auto). Thread-safe.")
      .def("pause", [](PyUploader& u) { u.get().pause(); }, "Host pause (aborts the request in flight).")
      .def("resume", [](PyUploader& u) { u.get().resume(); })
      .def("flush", [](PyUploader& u) { u.get().flush(); }, "Upload what is queued without waiting for size/age.")
      .def("shutdown", &PyUploader::shutdown,
           "Cancels the request in flight, stops and releases the Buffer (which can then be\n"
           "closed); the Uploader is closed afterwards. Calling it again does nothing.")
      .def("idle", [](PyUploader& u) { return u.get().idle(); }, "No batch leased, nothing in flight.")
      .def("status", [](PyUploader& u) { return status_dict(u.get().status()); },
           "dict: paused*, busy, rate_bytes_per_s, objects_uploaded, records_acked, bytes_sent, ...")
      .def("close", &PyUploader::close,
           "Cancels the request in flight; leased records go back; releases the Buffer.")
      .def_property_readonly("closed", [](PyUploader& u) { return !u.up; })
      .def("__enter__", [](pybind11::object self) { return self; })
      .def("__exit__", [](PyUploader& u, pybind11::args) { u.close(); });
}

}  // namespace fleetpipe::py
