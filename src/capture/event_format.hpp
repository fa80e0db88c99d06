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

struct ZSTD_CCtx_s;  // <zstd.h>, kept out of this header

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
/// for compression. Errors: internal (zstd failure). Capture encodes the same bytes in slices
/// (write_head + ZstdStream); this is the one-step form.
Result<void> encode_event(const EventIn& ev, const std::vector<SectionIn>& sections,
                          std::string& out, std::string& scratch);

/// A section's place in the data area, all that the header and index need: the data itself may
/// be written afterwards (in slices) in section order.
struct SectionLayout {
  const StreamConfig* stream = nullptr;
  std::uint64_t count = 0;
  double t_first = 0, t_last = 0;
  std::uint64_t raw_length = 0;  ///< bytes before compression
  std::uint64_t length = 0;      ///< bytes stored (== raw_length unless zstd)
  bool zstd = false;
};

/// Clears `out` and writes the header and JSON index of an event whose sections are laid out as
/// `sections` (offsets are cumulative lengths); reserves room for the data that follows.
/// Throws std::bad_alloc.
void write_head(const EventIn& ev, const std::vector<SectionLayout>& sections, std::string& out);

/// Whether a section of `raw_length` bytes of `stream` is stored zstd-compressed.
inline bool stored_zstd(const StreamConfig& stream, std::uint64_t raw_length) noexcept {
  return stream.compression == Compression::zstd && raw_length > 0;
}

/// One zstd frame compressed in pieces (ZSTD streaming API; the content size is pledged, so the
/// frame carries it as ZSTD_compress's does). Owns its context only between begin() and end().
class ZstdStream {
 public:
  ZstdStream() = default;
  ZstdStream(const ZstdStream&) = delete;
  ZstdStream& operator=(const ZstdStream&) = delete;
  ~ZstdStream();
  /// Starts a frame of exactly `size` input bytes. Errors: internal. Throws std::bad_alloc.
  Result<void> begin(int level, std::uint64_t size);
  /// Compresses `in` (end: finishes the frame), appending to `out`. Errors: internal.
  Result<void> feed(std::string_view in, std::string& out, bool end = false);
  void reset() noexcept;
  bool active() const noexcept { return cctx_ != nullptr; }

 private:
  ::ZSTD_CCtx_s* cctx_ = nullptr;
  std::string obuf_;  // ZSTD_CStreamOutSize(), allocated at the first feed
};

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
