// Internal: the event payload format (docs/event-format.md), encoder and C++ decoder.
//
//   offset 0  "FPEV"            magic
//          4  u16 version (1)
//          6  u16 header_size   (24; readers skip unknown extra header bytes)
//          8  u32 index_len     JSON index, UTF-8
//         12  u32 flags         reserved, 0
//         16  u64 data_len
//         24  index JSON, then data_len bytes of data; the next event (if any) follows.
// All integers and floats little-endian.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "fleetpipe/capture.hpp"
#include "fleetpipe/error.hpp"

namespace fleetpipe::detail {

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "fleetpipe's event encoding copies float64 rows as-is: little-endian hosts only"
#endif

inline constexpr std::uint16_t kEventVersion = 1;
inline constexpr std::size_t kEventHeaderSize = 24;
/// Blob record header inside a blob section: f64 t, u64 size.
inline constexpr std::size_t kBlobRecordHeader = 16;
/// The decoder refuses a compressed section that claims to inflate beyond this.
inline constexpr std::uint64_t kMaxDecodedSection = 1ull << 30;

/// One stream's section of an event, as handed to the encoder.
struct SectionIn {
  const StreamConfig* stream = nullptr;
  std::string_view data;  ///< raw encoding (f64 rows or blob records)
  std::uint64_t count = 0;
  double t_first = 0, t_last = 0;
};

struct EventIn {
  std::string event_id;
  std::string device;
  std::vector<std::string> triggers;
  std::uint8_t priority = 0;
  double t_fire = 0;             ///< monotonic time of the first fire
  double t_start = 0, t_end = 0; ///< monotonic range of the recorded samples
  std::int64_t wall_start_ns = 0, wall_end_ns = 0;
  std::string closed;            ///< "time", "max_bytes", "flush"
};

/// Encodes one event into `out` (cleared first; its capacity is reused). `scratch` is reused
/// for compression. Errors: internal (zstd failure).
Result<void> encode_event(const EventIn& ev, const std::vector<SectionIn>& sections,
                          std::string& out, std::string& scratch);

/// A decoded section (data decompressed).
struct SectionOut {
  std::string stream;
  StreamKind kind = StreamKind::numeric;
  std::vector<std::string> channels;
  std::string content_type;
  std::uint64_t count = 0;
  std::vector<double> rows;                       ///< numeric: count * (1 + channels) values
  std::vector<std::pair<double, std::string>> blobs;  ///< blob: (t, bytes)
};

struct EventOut {
  std::string index_json;
  std::string event_id;
  std::vector<std::string> triggers;
  int priority = 0;
  std::vector<SectionOut> sections;
  std::size_t encoded_size = 0;
};

/// Decodes every event in `bytes` (concatenated events). Errors: decode_error with the offset.
Result<std::vector<EventOut>> decode_events(std::string_view bytes);

}  // namespace fleetpipe::detail
