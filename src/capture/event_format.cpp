// The event payload format: see src/capture/event_format.hpp and docs/event-format.md.
#include "capture/event_format.hpp"

#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <new>
#include <string_view>

#include <nlohmann/json.hpp>
#include <zstd.h>

namespace fleetpipe::detail {
namespace {

template <class T>
void put_le(std::string& out, T v) {
  char b[sizeof(T)];
  std::memcpy(b, &v, sizeof(T));
  out.append(b, sizeof(T));
}

template <class T>
T get_le(const char* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

const char* kind_name(StreamKind k) { return k == StreamKind::numeric ? "numeric" : "blob"; }

// Writes the JSON index straight into a string. A JSON library's object tree would do too, but
// its destructor allocates (it flattens children onto a heap stack), so out of memory while an
// event is finished would end in std::terminate; here a failed allocation simply throws
// std::bad_alloc to Capture, which drops and counts the event.
class IndexWriter {
 public:
  explicit IndexWriter(std::string& out) : out_(out) {}
  // `first`: opens an object ('{') instead of continuing one (',').
  IndexWriter& key(const char* k, bool first = false) {
    out_ += first ? '{' : ',';
    string(k);
    out_ += ':';
    return *this;
  }
  IndexWriter& string(std::string_view s) {
    out_ += '"';
    for (unsigned char c : s) {
      switch (c) {
        case '"': out_ += "\\\""; break;
        case '\\': out_ += "\\\\"; break;
        case '\b': out_ += "\\b"; break;
        case '\f': out_ += "\\f"; break;
        case '\n': out_ += "\\n"; break;
        case '\r': out_ += "\\r"; break;
        case '\t': out_ += "\\t"; break;
        default:
          if (c < 0x20) {
            char u[8];
            std::snprintf(u, sizeof u, "\\u%04x", c);
            out_ += u;
          } else {
            out_ += static_cast<char>(c);
          }
      }
    }
    out_ += '"';
    return *this;
  }
  IndexWriter& strings(const std::vector<std::string>& v) {
    out_ += '[';
    for (std::size_t i = 0; i < v.size(); ++i) {
      if (i) out_ += ',';
      string(v[i]);
    }
    out_ += ']';
    return *this;
  }
  IndexWriter& number(std::uint64_t v) { return integer(v); }
  IndexWriter& number(std::int64_t v) { return integer(v); }
  // Shortest round-trip digits; integral values keep a ".0" (a double stays a double), and
  // non-finite ones are null, as JSON has no NaN.
  IndexWriter& number(double v) {
    if (!std::isfinite(v)) {
      out_ += "null";
      return *this;
    }
    char b[64];
    auto r = std::to_chars(b, b + sizeof b, v);
    std::string_view text(b, static_cast<std::size_t>(r.ptr - b));
    out_ += text;
    if (text.find_first_of(".e") == std::string_view::npos) out_ += ".0";
    return *this;
  }

 private:
  template <class I>
  IndexWriter& integer(I v) {
    char b[24];
    auto r = std::to_chars(b, b + sizeof b, v);
    out_.append(b, static_cast<std::size_t>(r.ptr - b));
    return *this;
  }
  std::string& out_;
};

}  // namespace

ZstdStream::~ZstdStream() { reset(); }

void ZstdStream::reset() noexcept {
  ZSTD_freeCCtx(cctx_);
  cctx_ = nullptr;
}

Result<void> ZstdStream::begin(int level, std::uint64_t size) {
  reset();
  cctx_ = ZSTD_createCCtx();
  if (!cctx_) throw std::bad_alloc();
  std::size_t r = ZSTD_CCtx_setParameter(cctx_, ZSTD_c_compressionLevel, level);
  if (!ZSTD_isError(r)) r = ZSTD_CCtx_setPledgedSrcSize(cctx_, size);
  if (ZSTD_isError(r)) {
    reset();
    return Error(errc::internal, std::string("zstd compression failed: ") + ZSTD_getErrorName(r));
  }
  return {};
}

Result<void> ZstdStream::feed(std::string_view in, std::string& out, bool end) {
  // Output goes through a fixed buffer: sizing `out` for the worst case of every piece would
  // zero-fill that room each time.
  if (obuf_.empty()) obuf_.resize(ZSTD_CStreamOutSize());
  ZSTD_inBuffer ib{in.data(), in.size(), 0};
  const ZSTD_EndDirective mode = end ? ZSTD_e_end : ZSTD_e_continue;
  for (;;) {
    ZSTD_outBuffer ob{obuf_.data(), obuf_.size(), 0};
    const std::size_t left = ZSTD_compressStream2(cctx_, &ob, &ib, mode);
    if (ZSTD_isError(left)) {
      reset();
      return Error(errc::internal, std::string("zstd compression failed: ") +
                                       ZSTD_getErrorName(left));
    }
    out.append(obuf_.data(), ob.pos);
    if (end ? left == 0 : ib.pos == ib.size) break;
  }
  if (end) reset();
  return {};
}

void write_head(const EventIn& ev, const std::vector<SectionLayout>& sections, std::string& out) {
  // Keys are written in sorted order (what a JSON object library would print).
  std::string idx;
  IndexWriter w(idx);
  w.key("closed", true).string(ev.closed);
  w.key("device").string(ev.device);
  w.key("event_id").string(ev.event_id);
  w.key("format").string("fleetpipe.event");
  w.key("priority").number(std::uint64_t{ev.priority});
  w.key("sections");
  idx += '[';
  std::uint64_t offset = 0;
  for (std::size_t i = 0; i < sections.size(); ++i) {
    const SectionLayout& s = sections[i];
    if (i) idx += ',';
    const bool numeric = s.stream->kind == StreamKind::numeric;
    if (numeric) w.key("channels", true).strings(s.stream->channels);
    w.key("compression", !numeric).string(s.zstd ? "zstd" : "none");
    if (!numeric && !s.stream->content_type.empty()) {
      w.key("content_type").string(s.stream->content_type);
    }
    w.key("count").number(s.count);
    w.key("encoding").string(numeric ? "f64le-rows" : "blob-records");
    w.key("kind").string(kind_name(s.stream->kind));
    w.key("length").number(s.length);
    w.key("offset").number(offset);
    w.key("raw_length").number(s.raw_length);
    w.key("stream").string(s.stream->name);
    w.key("t_first").number(s.t_first);
    w.key("t_last").number(s.t_last);
    idx += '}';
    offset += s.length;
  }
  idx += ']';
  w.key("t_end").number(ev.t_end);
  w.key("t_fire").number(ev.t_fire);
  w.key("t_start").number(ev.t_start);
  w.key("triggers").strings(ev.triggers);
  w.key("version").number(std::uint64_t{kEventVersion});
  w.key("wall_end_ns").number(ev.wall_end_ns);
  w.key("wall_start_ns").number(ev.wall_start_ns);
  idx += '}';

  out.clear();
  out.reserve(kEventHeaderSize + idx.size() + offset);
  out.append("FPEV", 4);
  put_le<std::uint16_t>(out, kEventVersion);
  put_le<std::uint16_t>(out, static_cast<std::uint16_t>(kEventHeaderSize));
  put_le<std::uint32_t>(out, static_cast<std::uint32_t>(idx.size()));
  put_le<std::uint32_t>(out, 0);
  put_le<std::uint64_t>(out, offset);
  out += idx;
}

Result<void> encode_event(const EventIn& ev, const std::vector<SectionIn>& sections,
                          std::string& out, std::string& scratch) {
  // Compressed sections first into `scratch` so the index can carry their lengths.
  scratch.clear();
  std::vector<SectionLayout> layout(sections.size());
  std::vector<std::uint64_t> at(sections.size());
  ZstdStream z;
  for (std::size_t i = 0; i < sections.size(); ++i) {
    const SectionIn& s = sections[i];
    SectionLayout& l = layout[i];
    l.stream = s.stream;
    l.count = s.count;
    l.t_first = s.t_first;
    l.t_last = s.t_last;
    l.raw_length = l.length = s.data.size();
    l.zstd = stored_zstd(*s.stream, s.data.size());
    if (!l.zstd) continue;
    at[i] = scratch.size();
    if (auto r = z.begin(s.stream->zstd_level, s.data.size()); !r) return r;
    if (auto r = z.feed(s.data, scratch, true); !r) return r;
    l.length = scratch.size() - at[i];
  }
  write_head(ev, layout, out);
  for (std::size_t i = 0; i < sections.size(); ++i) {
    if (layout[i].zstd) {
      out.append(scratch, at[i], layout[i].length);
    } else {
      out.append(sections[i].data.data(), sections[i].data.size());
    }
  }
  return {};
}

Result<std::vector<EventOut>> decode_events(std::string_view bytes) {
  std::vector<EventOut> events;
  std::size_t pos = 0;
  auto fail = [&](const std::string& why) {
    return Error(errc::decode_error, "event at offset " + std::to_string(pos) + ": " + why);
  };
  while (pos < bytes.size()) {
    if (bytes.size() - pos < kEventHeaderSize) return fail("truncated header");
    const char* h = bytes.data() + pos;
    if (std::memcmp(h, "FPEV", 4) != 0) return fail("bad magic");
    auto version = get_le<std::uint16_t>(h + 4);
    if (version != kEventVersion) return fail("unsupported version " + std::to_string(version));
    auto header_size = get_le<std::uint16_t>(h + 6);
    auto index_len = get_le<std::uint32_t>(h + 8);
    auto data_len = get_le<std::uint64_t>(h + 16);
    if (header_size < kEventHeaderSize) return fail("header too short");
    // Each length is checked on its own first: a hostile data_len must not wrap the sum.
    std::uint64_t avail = bytes.size() - pos;
    if (data_len > avail || index_len > avail) return fail("truncated event");
    std::uint64_t total = std::uint64_t{header_size} + index_len + data_len;
    if (total > avail) return fail("truncated event");
    EventOut ev;
    ev.encoded_size = total;
    ev.index_json.assign(h + header_size, index_len);
    std::string_view data(h + header_size + index_len, data_len);
    nlohmann::json idx = nlohmann::json::parse(ev.index_json, nullptr, false);
    if (idx.is_discarded() || !idx.is_object()) return fail("index is not a JSON object");
    try {
      ev.event_id = idx.at("event_id").get<std::string>();
      ev.triggers = idx.at("triggers").get<std::vector<std::string>>();
      ev.priority = idx.at("priority").get<int>();
      for (const auto& js : idx.at("sections")) {
        SectionOut s;
        s.stream = js.at("stream").get<std::string>();
        s.kind = js.at("kind").get<std::string>() == "numeric" ? StreamKind::numeric
                                                                 : StreamKind::blob;
        if (js.contains("channels")) s.channels = js["channels"].get<std::vector<std::string>>();
        if (js.contains("content_type")) s.content_type = js["content_type"].get<std::string>();
        s.count = js.at("count").get<std::uint64_t>();
        auto off = js.at("offset").get<std::uint64_t>();
        auto len = js.at("length").get<std::uint64_t>();
        auto raw_len = js.at("raw_length").get<std::uint64_t>();
        if (off > data.size() || len > data.size() - off) return fail("section out of range");
        std::string raw;
        std::string_view body = data.substr(off, len);
        if (js.at("compression").get<std::string>() == "zstd") {
          // raw_length must match the frame's own content size (and be sane) before anything
          // is allocated: a hostile index must not size the allocation.
          auto frame = ZSTD_getFrameContentSize(body.data(), body.size());
          if (frame != raw_len || raw_len > kMaxDecodedSection) return fail("bad zstd section " + s.stream);
          raw.resize(raw_len);
          std::size_t n = ZSTD_decompress(raw.data(), raw.size(), body.data(), body.size());
          if (ZSTD_isError(n) || n != raw_len) return fail("bad zstd section " + s.stream);
          body = raw;
        }
        if (s.kind == StreamKind::numeric) {
          std::size_t stride = 8 * (1 + s.channels.size());
          if (body.size() != stride * s.count) return fail("numeric section size mismatch");
          s.rows.resize(body.size() / 8);
          if (!body.empty()) std::memcpy(s.rows.data(), body.data(), body.size());
        } else {
          std::size_t p = 0;
          for (std::uint64_t i = 0; i < s.count; ++i) {
            if (body.size() - p < kBlobRecordHeader) return fail("truncated blob record");
            double t = get_le<double>(body.data() + p);
            auto n = get_le<std::uint64_t>(body.data() + p + 8);
            p += kBlobRecordHeader;
            if (n > body.size() - p) return fail("truncated blob");
            s.blobs.emplace_back(t, std::string(body.substr(p, n)));
            p += n;
          }
          if (p != body.size()) return fail("trailing bytes in blob section");
        }
        ev.sections.push_back(std::move(s));
      }
    } catch (const nlohmann::json::exception& e) {
      return fail(std::string("bad index: ") + e.what());
    }
    events.push_back(std::move(ev));
    pos += total;
  }
  return events;
}

}  // namespace fleetpipe::detail
