// Fuzzes the config parser: any byte string must give a config or a typed invalid_config error
// naming a JSON pointer — never a crash, an exception or a hang.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "fleetpipe/config.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  auto c = fleetpipe::parse_config(text);
  if (!c.ok()) {
    if (!c.error().is(fleetpipe::errc::invalid_config)) __builtin_trap();
    if (c.error().json_pointer.empty() || c.error().json_pointer[0] != '/') __builtin_trap();
  }
  return 0;
}
