// Internal: heartbeat documents as the readers see them. Devices write the compact
// `fleetpipe.heartbeat/2` (docs/pipeline.md); older ones wrote `fleetpipe.heartbeat/1`. The
// readers (status, fleet view, report) read the /1 shape, so a /2 document is expanded first.
#pragma once

#include <nlohmann/json.hpp>

namespace fleetpipe::detail {

/// A /2 document in the /1 shape (the members /2 carries; "day" kept as is). Any other
/// document (/1, unknown) is returned unchanged. Never throws on well-formed JSON input.
nlohmann::json heartbeat_as_v1(const nlohmann::json& doc);

}  // namespace fleetpipe::detail
