// Test helper: the Buffer config of the tests that upload or kill: no fsync, no free-space floor.
#pragma once

#include <cstdint>
#include <string>

#include "fleetpipe/buffer.hpp"

namespace fleetpipe::test {

/// A Buffer at `path` with `max_bytes` of room. Durability none: a kill -9 keeps committed
/// transactions (they are in the page cache); min_free_bytes 0: a full test disk does not refuse.
inline BufferConfig scratch_buffer_config(const std::string& path,
                                          std::uint64_t max_bytes = 256ull << 20) {
  BufferConfig b;
  b.path = path;
  b.durability = Durability::none;
  b.min_free_bytes = 0;
  b.max_bytes = max_bytes;
  return b;
}

}  // namespace fleetpipe::test
