// Internal: out of memory at the public boundary becomes an errc::out_of_memory result.
#pragma once

#include <new>
#include <string>

#include "fleetpipe/error.hpp"

namespace fleetpipe::detail {

/// Runs `f` (returning a Result) and turns std::bad_alloc into errc::out_of_memory, so no
/// exception crosses the public API. The error's message is empty: building one could fail too.
template <class F>
auto guard_oom(F&& f) noexcept -> decltype(f()) {
  try {
    return f();
  } catch (const std::bad_alloc&) {
    return Error(errc::out_of_memory, std::string());
  }
}

}  // namespace fleetpipe::detail
