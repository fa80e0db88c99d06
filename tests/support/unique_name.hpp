// Test helper: names no other test run uses (buckets and key prefixes on the shared S3 server).
#pragma once

#include <random>
#include <string>

namespace fleetpipe::test {

/// "<tag>-<random number below 10^9>": a fresh bucket name or key prefix per call.
inline std::string unique_name(const std::string& tag) {
  static std::mt19937_64 rng{std::random_device{}()};
  return tag + "-" + std::to_string(rng() % 1000000000ull);
}

}  // namespace fleetpipe::test
