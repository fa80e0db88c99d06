// Internal to the Python module: one bind_* function per component, plus the shared helpers
// (errors, config coercion, JSON <-> Python).
#pragma once

#include <pybind11/pybind11.h>

#include <string>

#include "fleetpipe/config.hpp"
#include "fleetpipe/error.hpp"
#include "fleetpipe/port.hpp"

namespace fleetpipe::py {

/// Raises fleetpipe.Error (a Python exception carrying code, reason and json_pointer).
[[noreturn]] void raise(const Error& e);

/// Unwraps a Result or raises.
template <class T>
T unwrap(Result<T>&& r) {
  if (!r.ok()) raise(r.error());
  return std::move(*r);
}
inline void unwrap(Result<void>&& r) {
  if (!r.ok()) raise(r.error());
}

/// A whole config from a fleetpipe.Config, a dict, JSON text, or a path (str / os.PathLike).
Config config_from(pybind11::handle obj);
/// A config whose only non-default section is `section` (e.g. "buffer"), from a dict of that
/// section (errors name "/buffer/..."), or the section of a whole config given as above.
Config section_config_from(pybind11::handle obj, const char* section);

/// json.loads(text) / json.dumps(obj).
pybind11::object json_loads(const std::string& text);
std::string json_dumps(pybind11::handle obj);

/// Seconds (float) or datetime.timedelta -> nanoseconds.
std::chrono::nanoseconds duration_from(pybind11::handle obj);
/// datetime (naive = UTC), str (fleetpipe.parse_time formats) or unix seconds -> WallTime.
WallTime wall_time_from(pybind11::handle obj);

void bind_core(pybind11::module_& m);      // errors, config, metrics, enums (core.cpp)
void bind_sigv4(pybind11::module_& m);     // sign_s3_request (sigv4.cpp)
void bind_buffer(pybind11::module_& m);    // Buffer, Lease, inspect_buffer (buffer.cpp)
void bind_capture(pybind11::module_& m);   // Capture, trigger stats (capture.cpp)
void bind_uploader(pybind11::module_& m);  // Uploader (uploader.cpp)
void bind_pipeline(pybind11::module_& m);  // Pipeline (pipeline.cpp)
void bind_query(pybind11::module_& m);     // BucketReader, time helpers (query.cpp)

}  // namespace fleetpipe::py
