// Trigger validation: the checks every stream and trigger config passes, JSON or C++-built.
#pragma once

#include <vector>

#include "fleetpipe/capture.hpp"
#include "fleetpipe/error.hpp"
#include "fleetpipe/trigger.hpp"

namespace fleetpipe::detail {

/// The same validation the JSON parser applies to C++-built configs; throws nothing.
Result<void> validate_capture_config(const std::vector<StreamConfig>& streams,
                                     const std::vector<TriggerConfig>& triggers);

}  // namespace fleetpipe::detail
