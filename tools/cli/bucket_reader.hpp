// Internal to the CLI: the steps `query`, `status` and `report` share once their bucket options
// are resolved: a time flag parsed, the bucket opened for reading, each error printed as
// "fleetpipe COMMAND: message".
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "fleetpipe/query.hpp"

namespace fleetpipe::cli {

/// Parses a time flag (--since, --until, --now) into `out`; an empty `text` leaves `out` as it
/// is. On a bad value prints the error and returns false (the command exits 2).
bool parse_time_flag(const char* command, const std::string& text, std::optional<WallTime>& out);

/// The bucket `cfg` names, opened for reading (BucketReader::open); on an error also prints it
/// (the command exits 1).
Result<std::unique_ptr<BucketReader>> open_reader(const char* command, const UploaderConfig& cfg);

}  // namespace fleetpipe::cli
