// Internal to the CLI: `fleetpipe status --by LABEL` / `--prometheus`, the fleet per label value.
#pragma once

#include <string>

#include "fleetpipe/query.hpp"

namespace fleetpipe::cli {

/// Prints one row (or JSON object, or Prometheus series) per group; returns the exit status.
int run_fleet(BucketReader& reader, const StatusQuery& q, const std::string& by, bool json,
              bool prometheus);

}  // namespace fleetpipe::cli
