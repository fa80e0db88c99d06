// fleetpipe.Pipeline: the facade (Capture + Buffer + Uploader + heartbeat) from one config.
#include <pybind11/stl.h>

#include <cmath>

#include "bindings.hpp"
#include "common.hpp"
#include "fleetpipe/pipeline.hpp"
#include "fleetpipe/query.hpp"

namespace fleetpipe::py {
namespace {

struct PyPipeline {
  std::unique_ptr<Pipeline> p;
  Pipeline& get() {
    if (!p) raise(Error(errc::invalid_argument, "the Pipeline is closed"));
    return *p;
  }
  void close() {
    pybind11::gil_scoped_release nogil;
    p.reset();
  }
  StreamHandle stream(const std::string& name) {
    StreamHandle h = get().stream(name);
    if (!h.valid()) raise(Error(errc::invalid_argument, "unknown stream \"" + name + "\""));
    return h;
  }
};

std::unique_ptr<PyPipeline> make_pipeline(pybind11::handle config, std::optional<std::string> buffer_path) {
  Config c = config_from(config);
  if (buffer_path) c.buffer.path = *buffer_path;
  auto pp = std::make_unique<PyPipeline>();
  Result<std::unique_ptr<Pipeline>> r = Error(errc::internal, "");
  {
    pybind11::gil_scoped_release nogil;
    r = Pipeline::create(std::move(c));
  }
  pp->p = unwrap(std::move(r));
  return pp;
}

NetworkState network_from(const std::string& s) {
  if (s == "online") return NetworkState::online;
  if (s == "metered") return NetworkState::metered;
  if (s == "offline") return NetworkState::offline;
  raise(Error(errc::invalid_argument, "network state must be online, metered or offline, got \"" + s + "\""));
}

pybind11::dict status_dict(const PipelineStatus& s) {
  // The heartbeat document carries the same numbers with stable names: reuse its shape for the
  // components, and add the pipeline's own fields.
  pybind11::dict d;
  d["device_id"] = s.device_id;
  d["time"] = format_query_time(s.time);
  d["uptime_s"] = s.uptime_s;
  d["network"] = std::string(to_string(s.network));
  pybind11::dict cap;
  cap["samples"] = s.capture.samples;
  cap["events"] = s.capture.events;
  cap["event_bytes"] = s.capture.event_bytes;
  cap["events_rejected"] = s.capture.events_rejected;
  cap["merged_fires"] = s.capture.merged_fires;
  cap["time_backwards"] = s.capture.time_backwards;
  cap["ring_overflow"] = s.capture.ring_overflow;
  cap["invalid_samples"] = s.capture.invalid_samples;
  cap["open_events"] = s.capture.open_events;
  d["capture"] = cap;
  pybind11::dict trig;
  for (const auto& t : s.triggers) {
    pybind11::dict e;
    e["fires"] = t.stats.fires;
    e["events"] = t.stats.events;
    e["bytes"] = t.stats.bytes;
    e["budget_hits"] = t.stats.budget_hits;
    e["suppressed_cooldown"] = t.stats.suppressed_cooldown;
    e["sampled_out"] = t.stats.sampled_out;
    trig[pybind11::str(t.name)] = e;
  }
  d["triggers"] = trig;
  pybind11::dict buf;
  buf["records"] = s.buffer.records;
  buf["bytes"] = s.buffer.bytes;
  buf["leased"] = s.buffer.leased;
  buf["parked"] = s.buffer.parked;
  buf["evicted_total"] = s.buffer.evicted_total;
  buf["rejected_total"] = s.buffer.rejected_total;
  buf["written_today"] = s.buffer.written_today;
  d["buffer"] = buf;
  pybind11::dict up;
  up["paused"] = s.uploader.paused;
  up["busy"] = s.uploader.busy;
  up["rate_bytes_per_s"] = s.uploader.rate_bytes_per_s;
  up["objects_uploaded"] = s.uploader.objects_uploaded;
  up["records_acked"] = s.uploader.records_acked;
  up["records_parked"] = s.uploader.records_parked;
  up["bytes_sent"] = s.uploader.bytes_sent;
  up["retries"] = s.uploader.retries;
  up["last_error"] = s.uploader.last_error;
  d["uploader"] = up;
  d["polls"] = s.polls;
  d["heartbeats_sent"] = s.heartbeats_sent;
  d["heartbeats_failed"] = s.heartbeats_failed;
  d["heartbeats_skipped"] = s.heartbeats_skipped;
  d["last_heartbeat"] = s.last_heartbeat ? pybind11::object(pybind11::str(format_query_time(*s.last_heartbeat)))
                                         : pybind11::object(pybind11::none());
  d["last_heartbeat_key"] = s.last_heartbeat_key;
  d["last_error"] = s.last_error;
  return d;
}

}  // namespace

void bind_pipeline(pybind11::module_& m) {
  pybind11::class_<PyPipeline>(m, "Pipeline",
      "The whole device side from one config (include/fleetpipe/pipeline.hpp):\n"
      "Capture + triggers -> Buffer -> Uploader, plus heartbeats.\n\n"
      "    p = fleetpipe.Pipeline('device.json')\n"
      "    p.push('imu', t, {'speed': 12.0, 'accel_x': -5.0})\n"
      "    p.poll()                      # bounded slice of background work\n"
      "    p.drain(timeout=10)           # upload what is left\n\n"
      "No hidden threads: nothing happens between calls. Not thread-safe, except\n"
      "set_network_state/pause_uploads/resume_uploads/set_upload_rate/flush_uploads.\n"
      "poll, run_for and drain release the GIL.")
      .def(pybind11::init(&make_pipeline), pybind11::arg("config"),
           pybind11::arg("buffer_path") = pybind11::none(),
           "`config`: fleetpipe.Config, dict, JSON text or a path. `buffer_path` overrides\n"
           "buffer.path. Raises fleetpipe.Error: invalid configuration (with .json_pointer),\n"
           "I/O error (buffer directory), TLS error (CA file), insecure refused.")
      .def("push",
           [](PyPipeline& pp, const std::string& stream, double t, pybind11::handle values) {
             StreamHandle h = pp.stream(stream);
             const auto& sc = pp.get().capture().streams()[h.index];
             if (sc.kind != StreamKind::numeric) raise(Error(errc::invalid_argument, "stream \"" + stream + "\" is a blob stream"));
             std::vector<double> row;
             if (pybind11::isinstance<pybind11::dict>(values)) {
               row.assign(sc.channels.size(), std::nan(""));
               for (auto item : values.cast<pybind11::dict>()) {
                 std::string name = pybind11::str(item.first);
                 int i = pp.get().capture().channel(h, name);
                 if (i < 0) raise(Error(errc::invalid_argument, "unknown channel \"" + name + "\""));
                 row[static_cast<std::size_t>(i)] = item.second.cast<double>();
               }
             } else {
               for (auto v : values) row.push_back(v.cast<double>());
             }
             pp.get().push(h, t, row.data(), row.size());
           },
           pybind11::arg("stream"), pybind11::arg("t"), pybind11::arg("values"),
           "One numeric row (list in channel order, or {channel: value}); t = monotonic seconds.")
      .def("push_rows",
           [](PyPipeline& pp, const std::string& stream, const pybind11::buffer& times,
              const pybind11::buffer& values) {
             StreamHandle h = pp.stream(stream);
             const auto& sc = pp.get().capture().streams()[h.index];
             if (sc.kind != StreamKind::numeric) raise(Error(errc::invalid_argument, "stream \"" + stream + "\" is a blob stream"));
             RowsView rows(times, values, sc.channels.size());
             pp.get().push_rows(h, rows.t(), rows.v(), rows.n);
           },
           pybind11::arg("stream"), pybind11::arg("times"), pybind11::arg("values"),
           "A block of rows: `times` float64 (n,), `values` float64 (n, channels), read in\n"
           "place (no copy). Same result as n push() calls.")
      .def("push_blob",
           [](PyPipeline& pp, const std::string& stream, double t, const pybind11::bytes& data) {
             unwrap(pp.get().push_blob(stream, t, std::string_view(data)));
           }, pybind11::arg("stream"), pybind11::arg("t"), pybind11::arg("data"))
      .def("fire", [](PyPipeline& pp, const std::string& trig, double t) { return unwrap(pp.get().fire(trig, t)); },
           pybind11::arg("trigger"), pybind11::arg("t"), "Fires a trigger now; True if it made/joined an event.")
      .def("tick", [](PyPipeline& pp, double t) { pp.get().tick(t); }, pybind11::arg("t"))
      .def("poll", [](PyPipeline& pp, pybind11::handle budget) {
             Pipeline& p = pp.get();
             if (budget.is_none()) {
               pybind11::gil_scoped_release nogil;
               return p.poll();
             }
             auto b = std::chrono::duration_cast<std::chrono::microseconds>(duration_from(budget));
             pybind11::gil_scoped_release nogil;
             return p.poll(b);
           }, pybind11::arg("budget") = pybind11::none(),
           "One bounded slice of background work (budget in seconds; default: the config's\n"
           "poll_budget). Never waits for the network. True while work is pending.")
      .def("run_for", [](PyPipeline& pp, pybind11::handle seconds) {
             auto d = std::chrono::duration_cast<std::chrono::microseconds>(duration_from(seconds));
             Pipeline& p = pp.get();
             pybind11::gil_scoped_release nogil;
             return p.run_for(d);
           }, pybind11::arg("seconds"), "Like poll() but waits for network I/O up to `seconds`.")
      .def("drain", [](PyPipeline& pp, pybind11::handle timeout) {
             auto d = std::chrono::duration_cast<std::chrono::milliseconds>(duration_from(timeout));
             Pipeline& p = pp.get();
             Result<void> r;
             {
               pybind11::gil_scoped_release nogil;
               r = p.drain(d);
             }
             unwrap(std::move(r));
           }, pybind11::arg("timeout") = 30.0,
           "Finishes open events and uploads everything queued, then a final heartbeat.\n"
           "Raises fleetpipe.Error: timeout (records left), paused (uploads paused/offline).")
      .def("set_network_state", [](PyPipeline& pp, const std::string& s) { pp.get().set_network_state(network_from(s)); },
           pybind11::arg("state"), "'online', 'metered' or 'offline'. Thread-safe.")
      .def_property_readonly("network_state", [](PyPipeline& pp) { return std::string(to_string(pp.get().network_state())); })
      .def("pause_uploads", [](PyPipeline& pp) { pp.get().pause_uploads(); })
      .def("resume_uploads", [](PyPipeline& pp) { pp.get().resume_uploads(); })
      .def("set_upload_rate", [](PyPipeline& pp, double bps, std::uint64_t burst) { pp.get().set_upload_rate(bps, burst); },
           pybind11::arg("bytes_per_second"), pybind11::arg("burst_bytes") = 0)
      .def("flush_uploads", [](PyPipeline& pp) { pp.get().flush_uploads(); })
      .def("request_heartbeat", [](PyPipeline& pp) { pp.get().request_heartbeat(); },
           "Sends a heartbeat at the next poll whatever the interval.")
      .def("request_metrics_heartbeat", [](PyPipeline& pp) { pp.get().request_metrics_heartbeat(); },
           "The same, and that heartbeat carries the full metrics export.")
      .def("status", [](PyPipeline& pp) { return status_dict(pp.get().status()); },
           "A dict snapshot: capture, triggers, buffer, uploader, heartbeats, last_error.")
      .def("metrics", [](PyPipeline& pp) { return json_loads(pp.get().metrics_json()); },
           "Every component's metrics as a dict {name: {type, help, series}}.")
      .def("metrics_prometheus", [](PyPipeline& pp) { return pp.get().metrics_prometheus(); })
      .def("heartbeat", [](PyPipeline& pp) { return json_loads(pp.get().heartbeat_json()); },
           "The heartbeat document as it would be uploaded now (dict).")
      .def("heartbeat_key", [](PyPipeline& pp, pybind11::handle when) {
             return pp.get().heartbeat_key(wall_time_from(when));
           }, pybind11::arg("when"), "The object key a heartbeat taken at `when` gets.")
      .def_property_readonly("config", [](PyPipeline& pp) { return pp.get().config(); })
      .def_property_readonly("streams", [](PyPipeline& pp) {
            std::vector<std::string> n;
            for (const auto& s : pp.get().capture().streams()) n.push_back(s.name);
            return n;
          })
      .def("close", &PyPipeline::close,
           "Cancels uploads in flight, finishes open events into the Buffer, fsyncs. No network wait.")
      .def("__enter__", [](pybind11::object self) { return self; })
      .def("__exit__", [](PyPipeline& pp, pybind11::args) { pp.close(); });
}

}  // namespace fleetpipe::py
