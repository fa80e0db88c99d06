// Internal to the Python module: one bind_* function per component.
#pragma once

#include <pybind11/pybind11.h>

#include "fleetpipe/error.hpp"

namespace fleetpipe::py {

/// Raises fleetpipe.Error (a Python exception carrying code, name and json_pointer).
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

void bind_core(pybind11::module_& m);  // errors, config, metrics, port enums (core.cpp)

}  // namespace fleetpipe::py
