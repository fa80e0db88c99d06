// The event payload format: see src/capture/event_format.hpp and docs/event-format.md.
#include "capture/event_format.hpp"

#include <cstring>

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

}  // namespace

Result<void> encode_event(const EventIn& ev, const std::vector<SectionIn>& sections,
                          std::string& out, std::string& scratch) {
  nlohmann::json index;
  index["format"] = "fleetpipe.event";
  index["version"] = kEventVersion;
  index["event_id"] = ev.event_id;
  index["device"] = ev.device;
  index["triggers"] = ev.triggers;
  index["priority"] = ev.priority;
  index["t_fire"] = ev.t_fire;
  index["t_start"] = ev.t_start;
  index["t_end"] = ev.t_end;
  index["wall_start_ns"] = ev.wall_start_ns;
  index["wall_end_ns"] = ev.wall_end_ns;
  index["closed"] = ev.closed;
  auto& secs = index["sections"] = nlohmann::json::array();

  // Data first into `scratch` so the index can carry offsets; then header + index + data.
  scratch.clear();
  for (const auto& s : sections) {
    nlohmann::json j;
    j["stream"] = s.stream->name;
    j["kind"] = kind_name(s.stream->kind);
    if (s.stream->kind == StreamKind::numeric) {
      j["channels"] = s.stream->channels;
      j["encoding"] = "f64le-rows";
    } else {
      j["encoding"] = "blob-records";
      if (!s.stream->content_type.empty()) j["content_type"] = s.stream->content_type;
    }
    j["count"] = s.count;
    j["t_first"] = s.t_first;
    j["t_last"] = s.t_last;
    j["offset"] = scratch.size();
    j["raw_length"] = s.data.size();
    if (s.stream->compression == Compression::zstd && !s.data.empty()) {
      std::size_t bound = ZSTD_compressBound(s.data.size());
      std::size_t at = scratch.size();
      scratch.resize(at + bound);
      std::size_t n = ZSTD_compress(scratch.data() + at, bound, s.data.data(), s.data.size(),
                                    s.stream->zstd_level);
      if (ZSTD_isError(n)) {
        return Error(errc::internal, std::string("zstd compression failed: ") +
                                         ZSTD_getErrorName(n));
      }
      scratch.resize(at + n);
      j["compression"] = "zstd";
      j["length"] = n;
    } else {
      scratch.append(s.data.data(), s.data.size());
      j["compression"] = "none";
      j["length"] = s.data.size();
    }
    secs.push_back(std::move(j));
  }
  std::string idx = index.dump();
  out.clear();
  out.reserve(kEventHeaderSize + idx.size() + scratch.size());
  out.append("FPEV", 4);
  put_le<std::uint16_t>(out, kEventVersion);
  put_le<std::uint16_t>(out, static_cast<std::uint16_t>(kEventHeaderSize));
  put_le<std::uint32_t>(out, static_cast<std::uint32_t>(idx.size()));
  put_le<std::uint32_t>(out, 0);
  put_le<std::uint64_t>(out, scratch.size());
  out += idx;
  out += scratch;
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
