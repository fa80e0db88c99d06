// Fuzzes the C++ event decoder (concatenated FPEV events, docs/event-format.md): any byte
// string must decode or give a typed decode_error naming an offset — never a crash, an uncaught
// exception, a hang or an allocation sized by a hostile length field.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "capture/event_format.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view bytes(reinterpret_cast<const char*>(data), size);
  auto r = fleetpipe::detail::decode_events(bytes);
  if (!r.ok()) {
    if (!r.error().is(fleetpipe::errc::decode_error)) __builtin_trap();
    if (r.error().message.find("offset") == std::string::npos) __builtin_trap();
    return 0;
  }
  std::size_t total = 0;
  for (const auto& ev : *r) {
    if (ev.encoded_size < fleetpipe::detail::kEventHeaderSize) __builtin_trap();
    total += ev.encoded_size;
    for (const auto& s : ev.sections) {
      if (s.kind == fleetpipe::StreamKind::numeric &&
          s.rows.size() != s.count * (1 + s.channels.size()))
        __builtin_trap();
      if (s.kind == fleetpipe::StreamKind::blob && s.blobs.size() != s.count) __builtin_trap();
    }
  }
  if (total != size) __builtin_trap();  // events tile the input exactly
  return 0;
}
