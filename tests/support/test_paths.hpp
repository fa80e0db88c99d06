// Test helpers: fresh scratch directories under build/test-tmp.
#pragma once

#include <filesystem>
#include <random>
#include <string>

namespace fleetpipe::test {

/// A new empty directory, unique per call, under the build tree (real disk, not tmpfs).
inline std::filesystem::path scratch_dir(const std::string& tag) {
  static std::mt19937_64 rng{std::random_device{}()};
  auto p = std::filesystem::path(FLEETPIPE_TEST_TMP) / (tag + "-" + std::to_string(rng()));
  std::filesystem::remove_all(p);
  std::filesystem::create_directories(p);
  return p;
}

}  // namespace fleetpipe::test
