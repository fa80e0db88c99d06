// fleetpipe.Capture: triggers + pre/post-trigger capture, with a Buffer, a callable or a list
// as the event sink.
#include <pybind11/stl.h>

#include <cmath>
#include <optional>

#include "common.hpp"
#include "fleetpipe/capture.hpp"

namespace fleetpipe::py {
namespace {

/// Calls a Python callable (meta dict, payload bytes) -> None/True (accepted) or False
/// (rejected); or, without a callable, appends (meta, payload) to a list. A Python exception
/// raised by the callable is kept and re-raised when the Capture call returns (the C++ side
/// is noexcept).
class PySink final : public EventSink {
 public:
  explicit PySink(pybind11::object fn) : fn_(std::move(fn)) {}
  AppendOutcome deliver(const RecordMeta& meta, std::string_view payload) override {
    AppendOutcome o;
    pybind11::gil_scoped_acquire gil;
    try {
      pybind11::dict m = record_meta_dict(meta);
      pybind11::bytes b(payload.data(), payload.size());
      if (fn_.is_none()) {
        events.append(pybind11::make_tuple(m, b));
        o.accepted = true;
      } else {
        pybind11::object r = fn_(m, b);
        o.accepted = r.is_none() || r.cast<bool>();
      }
      if (o.accepted) o.id = ++next_id_;
      else {
        o.reason = errc::storage_full;
        o.message = "rejected by the Python sink";
      }
    } catch (pybind11::error_already_set& e) {
      if (!pending) pending.emplace(std::move(e));
      o.accepted = false;
      o.reason = errc::internal;
      o.message = "the Python sink raised";
    }
    return o;
  }
  pybind11::list events;
  std::optional<pybind11::error_already_set> pending;

 private:
  pybind11::object fn_;
  RecordId next_id_ = 0;
};

struct PyCapture {
  pybind11::object metrics;
  pybind11::object buffer_obj;  // a PyBuffer when the sink is a Buffer
  Port port;
  std::unique_ptr<EventSink> sink;
  PySink* py_sink = nullptr;
  std::unique_ptr<Capture> cap;

  ~PyCapture() { close(); }
  /// Destroys the Capture, then releases the Buffer it wrote to.
  void close() {
    cap.reset();
    if (buffer_obj) {
      buffer_obj.cast<PyBuffer&>().dependents--;
      buffer_obj = pybind11::object();
    }
  }
  Capture& get() {
    if (!cap) raise(Error(errc::invalid_argument, "the Capture is closed"));
    return *cap;
  }
  void check() {
    if (py_sink && py_sink->pending) {
      auto e = std::move(*py_sink->pending);
      py_sink->pending.reset();
      e.restore();
      throw pybind11::error_already_set();
    }
  }
  StreamHandle stream(const std::string& name) {
    StreamHandle h = get().stream(name);
    if (!h.valid()) raise(Error(errc::invalid_argument, "unknown stream \"" + name + "\""));
    return h;
  }
};

std::unique_ptr<PyCapture> make_capture(pybind11::handle config, pybind11::handle sink,
                                        pybind11::handle metrics) {
  Config c = config_from(config);
  auto pc = std::make_unique<PyCapture>();
  pc->metrics = metrics_or_new(metrics);
  pc->port = Port{}.with_defaults();
  if (pybind11::isinstance<PyBuffer>(sink)) {
    PyBuffer& b = sink.cast<PyBuffer&>();
    pc->sink = std::make_unique<BufferSink>(b.get());
    pc->buffer_obj = pybind11::reinterpret_borrow<pybind11::object>(sink);
    b.dependents++;
  } else {
    if (!sink.is_none() && !PyCallable_Check(sink.ptr())) {
      throw pybind11::type_error("sink must be a fleetpipe.Buffer, a callable or None");
    }
    auto s = std::make_unique<PySink>(pybind11::reinterpret_borrow<pybind11::object>(sink));
    pc->py_sink = s.get();
    pc->sink = std::move(s);
  }
  pc->cap = unwrap(Capture::create(c, *pc->sink, pc->port, pc->metrics.cast<MetricsRegistry&>()));
  return pc;
}

pybind11::dict trigger_stats_dict(const TriggerStats& s) {
  pybind11::dict d;
  d["fires"] = s.fires;
  d["events"] = s.events;
  d["bytes"] = s.bytes;
  d["budget_hits"] = s.budget_hits;
  d["suppressed_cooldown"] = s.suppressed_cooldown;
  d["sampled_out"] = s.sampled_out;
  return d;
}

pybind11::dict capture_stats_dict(const CaptureStats& s) {
  pybind11::dict d;
  d["samples"] = s.samples;
  d["events"] = s.events;
  d["event_bytes"] = s.event_bytes;
  d["events_rejected"] = s.events_rejected;
  d["merged_fires"] = s.merged_fires;
  d["time_backwards"] = s.time_backwards;
  d["ring_overflow"] = s.ring_overflow;
  d["invalid_samples"] = s.invalid_samples;
  d["nan_samples"] = s.nan_samples;
  d["open_events"] = s.open_events;
  return d;
}

}  // namespace

RowsView::RowsView(const pybind11::buffer& t, const pybind11::buffer& v, std::size_t channels)
    : times(t.request()), values(v.request()) {
  auto is_f64 = [](const pybind11::buffer_info& b) {
    return b.itemsize == 8 && (b.format == "d" || b.format == "<d" || b.format == "=d");
  };
  auto contiguous = [](const pybind11::buffer_info& b) {
    pybind11::ssize_t stride = b.itemsize;
    for (pybind11::ssize_t d = b.ndim; d-- > 0;) {
      if (b.shape[d] > 1 && b.strides[d] != stride) return false;
      stride *= b.shape[d];
    }
    return true;
  };
  if (!is_f64(times) || !is_f64(values)) {
    raise(Error(errc::invalid_argument, "push_rows: times and values must be float64 arrays"));
  }
  if (!contiguous(times) || !contiguous(values)) {
    raise(Error(errc::invalid_argument,
                "push_rows: times and values must be C-contiguous (no copy is made)"));
  }
  if (times.ndim != 1) raise(Error(errc::invalid_argument, "push_rows: times must be 1-D"));
  n = static_cast<std::size_t>(times.shape[0]);
  const bool rows_ok =
      values.ndim == 2 ? static_cast<std::size_t>(values.shape[0]) == n &&
                             static_cast<std::size_t>(values.shape[1]) == channels
      : values.ndim == 1 ? static_cast<std::size_t>(values.shape[0]) == n * channels
                         : false;
  if (!rows_ok) {
    raise(Error(errc::invalid_argument,
                "push_rows: values must be (n, " + std::to_string(channels) +
                    ") for n = len(times) = " + std::to_string(n)));
  }
}

/// Fills `row` from a list of floats (declared channel order) or a {channel: value} dict.
template <class Lookup>
void row_from(pybind11::handle values, std::vector<double>& row, std::size_t n_channels,
              Lookup&& channel_index) {
  row.assign(n_channels, std::nan(""));
  if (pybind11::isinstance<pybind11::dict>(values)) {
    for (auto item : values.cast<pybind11::dict>()) {
      std::string name = pybind11::str(item.first);
      int i = channel_index(name);
      if (i < 0) raise(Error(errc::invalid_argument, "unknown channel \"" + name + "\""));
      row[static_cast<std::size_t>(i)] = item.second.cast<double>();
    }
  } else {
    row.clear();
    for (auto v : values) row.push_back(v.cast<double>());
  }
}

void bind_capture(pybind11::module_& m) {
  pybind11::class_<PyCapture>(m, "Capture",
      "Triggers and pre/post-trigger capture (include/fleetpipe/capture.hpp, docs/triggers.md).\n\n"
      "    cap = fleetpipe.Capture(config, sink=None)   # sink: Buffer, callable(meta, payload) or None\n"
      "    cap.push('imu', t, {'speed': 12.0, 'accel_x': -5.1})\n"
      "    cap.fire('manual', t); cap.tick(t); cap.flush()\n"
      "    for meta, payload in cap.take_events(): fleetpipe.decode_events(payload)\n\n"
      "`t` is the host's monotonic time in seconds. Events are FPEV payloads (fleetpipe.event).\n"
      "Not thread-safe. The sink runs synchronously inside push/fire/tick/flush; an exception it\n"
      "raises is re-raised from that call (the event is then counted as rejected).")
      .def(pybind11::init(&make_capture), pybind11::arg("config"),
           pybind11::arg("sink") = pybind11::none(), pybind11::arg("metrics") = pybind11::none(),
           "`config`: a whole config (fleetpipe.Config, dict, JSON text or path) — its\n"
           "device_id, streams and triggers are used. Raises fleetpipe.Error (invalid\n"
           "configuration, with .json_pointer, e.g. '/triggers/0/stream').")
      .def_property_readonly("metrics", [](PyCapture& c) { return c.metrics; })
      .def("push",
           [](PyCapture& c, const std::string& stream, double t, pybind11::handle values) {
             StreamHandle h = c.stream(stream);
             const auto& sc = c.get().streams()[h.index];
             if (sc.kind != StreamKind::numeric) raise(Error(errc::invalid_argument, "stream \"" + stream + "\" is a blob stream"));
             std::vector<double> row;
             row_from(values, row, sc.channels.size(),
                      [&](const std::string& n) { return c.get().channel(h, n); });
             c.get().push(h, t, row.data(), row.size());
             c.check();
           },
           pybind11::arg("stream"), pybind11::arg("t"), pybind11::arg("values"),
           "One numeric row: a list of floats in declared channel order, or a dict\n"
           "{channel: value} (missing channels are NaN). Evaluates triggers; may emit events.")
      .def("push_rows",
           [](PyCapture& c, const std::string& stream, const pybind11::buffer& times,
              const pybind11::buffer& values) {
             StreamHandle h = c.stream(stream);
             const auto& sc = c.get().streams()[h.index];
             if (sc.kind != StreamKind::numeric) raise(Error(errc::invalid_argument, "stream \"" + stream + "\" is a blob stream"));
             RowsView rows(times, values, sc.channels.size());
             c.get().push_rows(h, rows.t(), rows.v(), rows.n);
             c.check();
           },
           pybind11::arg("stream"), pybind11::arg("times"), pybind11::arg("values"),
           "A block of rows: `times` float64 (n,), `values` float64 (n, channels), both\n"
           "C-contiguous (numpy arrays are read in place, never copied). Same fires and events\n"
           "as n push() calls.")
      .def("push_blob",
           [](PyCapture& c, const std::string& stream, double t, const pybind11::bytes& data) {
             StreamHandle h = c.stream(stream);
             if (c.get().streams()[h.index].kind != StreamKind::blob) raise(Error(errc::invalid_argument, "stream \"" + stream + "\" is a numeric stream"));
             c.get().push_blob(h, t, std::string_view(data));
             c.check();
           },
           pybind11::arg("stream"), pybind11::arg("t"), pybind11::arg("data"),
           "One blob (e.g. an encoded frame) on a blob stream.")
      .def("fire",
           [](PyCapture& c, const std::string& trigger, double t) {
             auto r = c.get().fire(trigger, t);
             c.check();
             return unwrap(std::move(r));
           },
           pybind11::arg("trigger"), pybind11::arg("t"),
           "Fires a trigger now (through cooldown, sampling, budget). True when it made or\n"
           "joined an event. Raises invalid argument for an unknown trigger.")
      .def("tick", [](PyCapture& c, double t) { c.get().tick(t); c.check(); }, pybind11::arg("t"),
           "Advances time without a sample (closes post windows, runs periodic triggers).")
      .def("flush", [](PyCapture& c) { c.get().flush(); c.check(); },
           "Finishes every open event now.")
      .def("take_events", [](PyCapture& c) {
             if (!c.py_sink) return pybind11::list();
             pybind11::list out = c.py_sink->events;
             c.py_sink->events = pybind11::list();
             return out;
           }, "With sink=None: the [(meta dict, payload bytes)] collected so far (and forgets them).")
      .def_property_readonly("streams", [](PyCapture& c) {
            std::vector<std::string> n;
            for (const auto& s : c.get().streams()) n.push_back(s.name);
            return n;
          })
      .def_property_readonly("triggers", [](PyCapture& c) {
            std::vector<std::string> n;
            for (const auto& t : c.get().triggers()) n.push_back(t.name);
            return n;
          })
      .def("channels", [](PyCapture& c, const std::string& stream) {
             return c.get().streams()[c.stream(stream).index].channels;
           }, pybind11::arg("stream"))
      .def("stats", [](PyCapture& c) { return capture_stats_dict(c.get().stats()); },
           "dict: samples, events, event_bytes, events_rejected, merged_fires, ...")
      .def("trigger_stats", [](PyCapture& c, const std::string& name) {
             TriggerHandle h = c.get().trigger(name);
             if (!h.valid()) raise(Error(errc::invalid_argument, "unknown trigger \"" + name + "\""));
             return trigger_stats_dict(c.get().trigger_stats(h));
           }, pybind11::arg("trigger"),
           "dict: fires, events, bytes, budget_hits, suppressed_cooldown, sampled_out")
      .def("close", &PyCapture::close, "Destroys the Capture (open events are dropped: flush() first).")
      .def("__enter__", [](pybind11::object self) { return self; })
      .def("__exit__", [](PyCapture& c, pybind11::args) {
             if (c.cap) c.cap->flush();
             c.close();
             c.check();
           });
}

}  // namespace fleetpipe::py
