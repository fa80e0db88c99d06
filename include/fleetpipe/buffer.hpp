// fleetpipe/buffer.hpp — durable LMDB store on flash (skeleton: owned by the Buffer work).
#pragma once

#include <cstdint>
#include <string>

#include "fleetpipe/error.hpp"

namespace fleetpipe {

struct BufferConfig {
  std::string path = "fleetpipe-db";
};

}  // namespace fleetpipe
