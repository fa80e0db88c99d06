// The `fleetpipe._fleetpipe` extension. Each component's bindings live in their own file and are
// registered here; errors become `fleetpipe.Error` (with .code, .reason and .json_pointer).
#include <pybind11/pybind11.h>

#include "bindings.hpp"
#include "fleetpipe/version.hpp"

PYBIND11_MODULE(_fleetpipe, m) {
  m.doc() = "fleetpipe: trigger, capture, buffer and upload edge-device data to S3";
  m.attr("__version__") = fleetpipe::kVersion;
  fleetpipe::py::bind_core(m);
  fleetpipe::py::bind_sigv4(m);
  fleetpipe::py::bind_buffer(m);
  fleetpipe::py::bind_capture(m);
  fleetpipe::py::bind_uploader(m);
  fleetpipe::py::bind_pipeline(m);
  fleetpipe::py::bind_query(m);
}
