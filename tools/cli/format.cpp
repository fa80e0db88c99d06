// Internal: how the CLI prints sizes for people.
#include "cli/format.hpp"

#include <cstdio>

namespace fleetpipe::cli {

std::string human_bytes(double bytes, int decimals) {
  static constexpr const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
  constexpr int last = sizeof units / sizeof units[0] - 1;
  int u = 0;
  while (bytes >= 1024 && u < last) {
    bytes /= 1024;
    ++u;
  }
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f %s", u == 0 ? 0 : decimals, bytes, units[u]);
  return buf;
}

}  // namespace fleetpipe::cli
