// Trigger parsing: one "/triggers/N" JSON object to a TriggerConfig.
#pragma once

#include "fleetpipe/trigger.hpp"

namespace fleetpipe::detail {

class JsonReader;
/// Parses one "/triggers/N" object (or, with `child`, one inline composite condition).
/// Throws ConfigError. Cross references are checked by validate_capture_config.
TriggerConfig parse_trigger_config(JsonReader& r, bool child);

}  // namespace fleetpipe::detail
