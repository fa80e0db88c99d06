#include <pybind11/stl.h>

#include "bindings.hpp"
#include "fleetpipe/config.hpp"
#include "fleetpipe/metrics.hpp"

namespace py = pybind11;

namespace fleetpipe::py {
namespace {
PyObject* g_error_type = nullptr;
}

void raise(const Error& e) {
  pybind11::object err = pybind11::reinterpret_borrow<pybind11::object>(g_error_type)(
      e.message, e.code.value(), e.code.message(), e.json_pointer);
  PyErr_SetObject(g_error_type, err.ptr());
  throw pybind11::error_already_set();
}

void bind_core(pybind11::module_& m) {
  // fleetpipe.Error(message, code, reason, json_pointer) is defined in Python (see
  // fleetpipe/__init__.py) so that it is a plain, picklable exception class.
  auto errors = pybind11::module_::import("fleetpipe._errors");
  g_error_type = errors.attr("Error").ptr();

  m.def(
      "parse_config",
      [](const std::string& text) {
        auto c = unwrap(parse_config(text));
        return c.device_id;
      },
      pybind11::arg("json_text"),
      "Validates a config document; returns its device_id.\n"
      "Raises fleetpipe.Error with .json_pointer naming the offending key.");
  m.def(
      "load_config_file",
      [](const std::string& path) { return unwrap(load_config_file(path)).device_id; },
      pybind11::arg("path"), "Validates a config file; returns its device_id.");

  pybind11::class_<MetricsRegistry>(m, "MetricsRegistry",
                                    "Counters, gauges and histograms with labels.")
      .def(pybind11::init<>())
      .def("to_prometheus", &MetricsRegistry::to_prometheus,
           "Prometheus text exposition format")
      .def("to_json", &MetricsRegistry::to_json, "JSON text (see fleetpipe.metrics_dict)");
}

}  // namespace fleetpipe::py
