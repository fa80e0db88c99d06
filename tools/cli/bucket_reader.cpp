// The bucket-reading steps the CLI's cloud commands share (see bucket_reader.hpp).
#include "cli/bucket_reader.hpp"

#include <cstdio>

namespace fleetpipe::cli {

bool parse_time_flag(const char* command, const std::string& text, std::optional<WallTime>& out) {
  if (text.empty()) return true;
  auto t = parse_query_time(text);
  if (!t) {
    std::fprintf(stderr, "fleetpipe %s: %s\n", command, t.error().message.c_str());
    return false;
  }
  out = *t;
  return true;
}

Result<std::unique_ptr<BucketReader>> open_reader(const char* command, const UploaderConfig& cfg) {
  auto reader = BucketReader::open(cfg);
  if (!reader) std::fprintf(stderr, "fleetpipe %s: %s\n", command, reader.error().message.c_str());
  return reader;
}

}  // namespace fleetpipe::cli
