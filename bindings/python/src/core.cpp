// Errors, config, metrics and the shared conversion helpers.
#include <pybind11/stl.h>

#include <cctype>

#include "bindings.hpp"
#include "fleetpipe/config.hpp"
#include "fleetpipe/metrics.hpp"
#include "fleetpipe/query.hpp"

namespace py = pybind11;

namespace fleetpipe::py {
namespace {
PyObject* g_error_type = nullptr;

Config parse_or_raise(const std::string& text) { return unwrap(parse_config(text)); }
}  // namespace

void raise(const Error& e) {
  pybind11::object err = pybind11::reinterpret_borrow<pybind11::object>(g_error_type)(
      e.message, e.code.value(), e.code.message(), e.json_pointer);
  PyErr_SetObject(g_error_type, err.ptr());
  throw pybind11::error_already_set();
}

pybind11::object json_loads(const std::string& text) {
  return pybind11::module_::import("json").attr("loads")(text);
}

std::string json_dumps(pybind11::handle obj) {
  return pybind11::module_::import("json").attr("dumps")(obj).cast<std::string>();
}

Config config_from(pybind11::handle obj) {
  if (pybind11::isinstance<Config>(obj)) return obj.cast<Config>();
  if (pybind11::isinstance<pybind11::dict>(obj)) return parse_or_raise(json_dumps(obj));
  pybind11::object os = pybind11::module_::import("os");
  if (pybind11::isinstance<pybind11::str>(obj) ||
      pybind11::isinstance(obj, os.attr("PathLike"))) {
    std::string s = os.attr("fspath")(obj).cast<std::string>();
    std::size_t i = 0;
    while (i < s.size() && std::isspace(static_cast<unsigned char>(s[i]))) ++i;
    if (i < s.size() && s[i] == '{') return parse_or_raise(s);
    pybind11::gil_scoped_release nogil;
    auto c = load_config_file(s);
    pybind11::gil_scoped_acquire gil;
    return unwrap(std::move(c));
  }
  throw pybind11::type_error(
      "config must be a fleetpipe.Config, a dict, JSON text or a path to a config file");
}

Config section_config_from(pybind11::handle obj, const char* section) {
  if (pybind11::isinstance<pybind11::dict>(obj) && !obj.cast<pybind11::dict>().contains("device_id")) {
    pybind11::dict doc;
    doc["device_id"] = "python";
    doc[section] = obj;
    return parse_or_raise(json_dumps(doc));
  }
  return config_from(obj);
}

std::chrono::nanoseconds duration_from(pybind11::handle obj) {
  pybind11::object dt = pybind11::module_::import("datetime");
  double s = pybind11::isinstance(obj, dt.attr("timedelta"))
                 ? obj.attr("total_seconds")().cast<double>()
                 : obj.cast<double>();
  if (!(s >= 0)) throw pybind11::value_error("duration must be >= 0 seconds");
  return std::chrono::nanoseconds(static_cast<std::int64_t>(s * 1e9));
}

WallTime wall_time_from(pybind11::handle obj) {
  pybind11::object dt = pybind11::module_::import("datetime");
  if (pybind11::isinstance(obj, dt.attr("datetime"))) {
    pybind11::object v = pybind11::reinterpret_borrow<pybind11::object>(obj);
    if (v.attr("tzinfo").is_none()) v = v.attr("replace")(pybind11::arg("tzinfo") = dt.attr("timezone").attr("utc"));
    double s = v.attr("timestamp")().cast<double>();
    return WallTime(std::chrono::duration_cast<WallTime::duration>(std::chrono::duration<double>(s)));
  }
  if (pybind11::isinstance(obj, dt.attr("date"))) {
    return unwrap(parse_query_time(obj.attr("isoformat")().cast<std::string>()));
  }
  if (pybind11::isinstance<pybind11::str>(obj)) return unwrap(parse_query_time(obj.cast<std::string>()));
  double s = obj.cast<double>();
  return WallTime(std::chrono::duration_cast<WallTime::duration>(std::chrono::duration<double>(s)));
}

void bind_core(pybind11::module_& m) {
  // fleetpipe.Error(message, code, reason, json_pointer) is defined in Python (fleetpipe/_errors.py)
  // so that it is a plain, picklable exception class.
  auto errors = pybind11::module_::import("fleetpipe._errors");
  g_error_type = errors.attr("Error").ptr();

  pybind11::class_<Config>(m, "Config",
      "A parsed, validated fleetpipe configuration (see docs/config.md).\n\n"
      "Get one from fleetpipe.parse_config(text_or_dict) or fleetpipe.load_config(path); every\n"
      "constructor of Pipeline, Buffer, Uploader, Capture and BucketReader also accepts the dict,\n"
      "JSON text or path directly.")
      .def_readwrite("device_id", &Config::device_id, "the device name (keys, metrics)")
      .def_property("labels", [](const Config& c) { return c.labels; },
                    [](Config& c, const DeviceLabels& labels) {
                      unwrap(validate_labels(labels));
                      c.labels = labels;
                    },
                    "device labels (dict str -> str, at most 16; names and values of\n"
                    "[A-Za-z0-9._-]); setting validates them like the JSON \"labels\" key")
      .def_property_readonly("log_level", [](const Config& c) { return std::string(to_string(c.log_level)); })
      .def_property_readonly("streams", [](const Config& c) {
            std::vector<std::string> n;
            for (const auto& s : c.streams) n.push_back(s.name);
            return n;
          }, "stream names, in config order")
      .def_property_readonly("triggers", [](const Config& c) {
            std::vector<std::string> n;
            for (const auto& t : c.triggers) n.push_back(t.name);
            return n;
          }, "trigger names, in config order")
      .def_property("buffer_path", [](const Config& c) { return c.buffer.path; },
                    [](Config& c, const std::string& p) { c.buffer.path = p; },
                    "buffer.path (the LMDB directory); settable, e.g. to a temp dir in tests")
      .def_property_readonly("bucket", [](const Config& c) { return c.uploader.bucket; })
      .def_property_readonly("endpoint", [](const Config& c) { return c.uploader.endpoint; })
      .def_property_readonly("prefix", [](const Config& c) { return c.uploader.prefix; })
      .def_property_readonly("heartbeat_interval_s",
                             [](const Config& c) { return c.pipeline.heartbeat_interval_s; })
      .def("__repr__", [](const Config& c) {
        return "<fleetpipe.Config device_id='" + c.device_id + "' streams=" +
               std::to_string(c.streams.size()) + " triggers=" + std::to_string(c.triggers.size()) + ">";
      });

  m.def("parse_config", [](pybind11::handle doc) { return config_from(doc); },
        pybind11::arg("json_text_or_dict"),
        "Validates a config document (JSON text or a dict) and returns a fleetpipe.Config.\n"
        "Raises fleetpipe.Error with .json_pointer naming the offending key, e.g.\n"
        "'/uploader/bandwidth/bytes_per_second'.");
  m.def("load_config", [](pybind11::handle path) { return config_from(path); },
        pybind11::arg("path"),
        "Reads and validates a config file. Raises fleetpipe.Error (reason 'I/O error' when\n"
        "unreadable, 'invalid configuration' with .json_pointer when invalid).");
  m.def("load_config_file", [](pybind11::handle path) { return config_from(path); },
        pybind11::arg("path"), "Alias of load_config.");

  pybind11::class_<MetricsRegistry>(m, "MetricsRegistry",
      "Counters, gauges and histograms with labels. Pass one to Buffer/Uploader/Capture to\n"
      "collect their metrics in one place; read it with to_dict(), to_json() or to_prometheus().")
      .def(pybind11::init<>())
      .def("to_prometheus", &MetricsRegistry::to_prometheus,
           "Prometheus text exposition format 0.0.4")
      .def("to_json", &MetricsRegistry::to_json,
           "JSON text: {name: {type, help, series: [{labels, value}]}}")
      .def("to_dict", [](const MetricsRegistry& r) { return json_loads(r.to_json()); },
           "The metrics as a dict (the JSON export, parsed)")
      .def("value", [](const MetricsRegistry& r, const std::string& name, const pybind11::dict& labels) {
            Labels l;
            for (auto item : labels) l.emplace_back(pybind11::str(item.first), pybind11::str(item.second));
            return r.value(name, l);
          }, pybind11::arg("name"), pybind11::arg("labels") = pybind11::dict(),
          "Value of one counter/gauge series; -1 when absent")
      .def("sum", &MetricsRegistry::sum, pybind11::arg("name"),
           "Sum of a counter/gauge over all its series; 0 when absent");
}

}  // namespace fleetpipe::py
