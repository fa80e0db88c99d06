// fleetpipe/capture.hpp — pre/post-trigger capture (skeleton: owned by the Trigger/Capture work).
#pragma once

#include <string>

#include "fleetpipe/error.hpp"

namespace fleetpipe {

struct StreamConfig {
  std::string name;
};

}  // namespace fleetpipe
