// fleetpipe/trigger.hpp — triggers (skeleton: owned by the Trigger/Capture work).
#pragma once

#include <string>

#include "fleetpipe/error.hpp"

namespace fleetpipe {

struct TriggerConfig {
  std::string name;
};

}  // namespace fleetpipe
