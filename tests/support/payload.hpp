// Test helper: payload bytes that are a function of a seed (the test rebuilds them to compare).
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>

namespace fleetpipe::test {

/// `n` pseudo-random bytes (incompressible), the same for the same seed.
inline std::string pseudo_random(std::size_t n, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::string s(n, '\0');
  for (std::size_t i = 0; i < n; i += 8) {
    std::uint64_t v = rng();
    std::memcpy(&s[i], &v, std::min<std::size_t>(8, n - i));
  }
  return s;
}

}  // namespace fleetpipe::test
