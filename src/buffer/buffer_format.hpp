// Internal: the Buffer's on-disk encoding (LMDB key/value layouts). See docs/buffer.md.
//
// All integers in values are little-endian; integers in keys are big-endian so LMDB's
// lexicographic key order is numeric order.
#pragma once

#include <boost/endian/conversion.hpp>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>

#include "fleetpipe/buffer.hpp"

namespace fleetpipe::detail {

inline constexpr std::uint32_t kBufferFormat = 1;

// Named databases inside the environment.
inline constexpr const char* kDbRecords = "records";  // id(be64) -> RecordHeader + meta + inline payload
inline constexpr const char* kDbOrder = "order";      // (7-priority u8, id be64) -> OrderValue
inline constexpr const char* kDbChunks = "chunks";    // (id be64, index be32) -> kind u8 + data
inline constexpr const char* kDbState = "state";      // uploader resume state, key -> value
inline constexpr const char* kDbMeta = "meta";        // "format", "quota", "chunk", "staging"
inline constexpr const char* kDbParked = "parked";    // id(be64) -> reason, for parked records
// The counters live in the main DB, beside the named databases' records: every commit rewrites
// that page anyway (the trees' roots), so they cost no page of their own. Stores written before
// kept them in meta/"counters" (read, then moved, at open).
inline constexpr const char* kCountersKey = "fleetpipe/counters";
inline constexpr const char* kLegacyCountersKey = "counters";

enum RecordFlags : std::uint8_t { kCompressed = 1, kChunked = 2 };
enum OrderFlags : std::uint8_t { kParked = 1 };
enum ChunkKind : std::uint8_t { kChunkRaw = 0, kChunkZstd = 1 };

/// `n` (4 or 8) bytes of `v`, little-endian, appended to `s`.
inline void put_le(std::string& s, std::uint64_t v, int n) {
  unsigned char b[8];
  if (n == 4) {
    boost::endian::store_little_u32(b, static_cast<std::uint32_t>(v));
  } else {
    boost::endian::store_little_u64(b, v);
  }
  s.append(reinterpret_cast<const char*>(b), static_cast<std::size_t>(n));
}
/// The little-endian integer of `n` (4 or 8) bytes at `p`.
inline std::uint64_t get_le(const char* p, int n) {
  const auto* u = reinterpret_cast<const unsigned char*>(p);
  return n == 4 ? boost::endian::load_little_u32(u) : boost::endian::load_little_u64(u);
}
/// `n` (4 or 8) bytes of `v`, big-endian, at `p` (keys: byte order = numeric order).
inline void put_be(char* p, std::uint64_t v, int n) {
  auto* u = reinterpret_cast<unsigned char*>(p);
  if (n == 4) {
    boost::endian::store_big_u32(u, static_cast<std::uint32_t>(v));
  } else {
    boost::endian::store_big_u64(u, v);
  }
}
/// The big-endian integer of `n` (4 or 8) bytes at `p`.
inline std::uint64_t get_be(const char* p, int n) {
  const auto* u = reinterpret_cast<const unsigned char*>(p);
  return n == 4 ? boost::endian::load_big_u32(u) : boost::endian::load_big_u64(u);
}

/// Fixed 32-byte prefix of a record value.
struct RecordHeader {
  static constexpr std::size_t kSize = 32;
  std::uint8_t version = 1;
  std::uint8_t priority = 0;
  std::uint8_t flags = 0;
  std::uint32_t meta_len = 0;
  std::uint64_t payload_size = 0;   // original bytes
  std::uint64_t stored_bytes = 0;   // quota accounting: whole value + chunk values
  std::int64_t append_ns = 0;       // wall clock at append

  /// The kSize bytes at `p`.
  void encode_to(char* p) const {
    auto* u = reinterpret_cast<unsigned char*>(p);
    u[0] = version;
    u[1] = priority;
    u[2] = flags;
    u[3] = 0;
    boost::endian::store_little_u32(u + 4, meta_len);
    boost::endian::store_little_u64(u + 8, payload_size);
    boost::endian::store_little_u64(u + 16, stored_bytes);
    boost::endian::store_little_u64(u + 24, static_cast<std::uint64_t>(append_ns));
  }
  void encode(std::string& s) const {
    const std::size_t at = s.size();
    s.resize(at + kSize);
    encode_to(s.data() + at);
  }
  static std::optional<RecordHeader> decode(std::string_view v) {
    if (v.size() < kSize || static_cast<unsigned char>(v[0]) != 1) return std::nullopt;
    RecordHeader h;
    h.priority = static_cast<std::uint8_t>(v[1]);
    h.flags = static_cast<std::uint8_t>(v[2]);
    h.meta_len = static_cast<std::uint32_t>(get_le(v.data() + 4, 4));
    h.payload_size = get_le(v.data() + 8, 8);
    h.stored_bytes = get_le(v.data() + 16, 8);
    h.append_ns = static_cast<std::int64_t>(get_le(v.data() + 24, 8));
    if (h.priority > 7 || kSize + h.meta_len > v.size()) return std::nullopt;
    return h;
  }
};

/// Value of the order index: flags u8, attempts u32, stored_bytes u64 (13 bytes).
struct OrderValue {
  static constexpr std::size_t kSize = 13;
  std::uint8_t flags = 0;
  std::uint32_t attempts = 0;
  std::uint64_t stored_bytes = 0;
  void encode(char* p) const {
    auto* u = reinterpret_cast<unsigned char*>(p);
    u[0] = flags;
    boost::endian::store_little_u32(u + 1, attempts);
    boost::endian::store_little_u64(u + 5, stored_bytes);
  }
  static std::optional<OrderValue> decode(std::string_view v) {
    if (v.size() != kSize) return std::nullopt;
    OrderValue o;
    o.flags = static_cast<std::uint8_t>(v[0]);
    o.attempts = static_cast<std::uint32_t>(get_le(v.data() + 1, 4));
    o.stored_bytes = get_le(v.data() + 5, 8);
    return o;
  }
};

struct IdKey {
  char b[8];
  explicit IdKey(std::uint64_t id) { put_be(b, id, 8); }
};
struct OrderKey {
  char b[9];
  OrderKey(std::uint8_t priority, std::uint64_t id) {
    b[0] = static_cast<char>(7 - priority);
    put_be(b + 1, id, 8);
  }
};
struct ChunkKey {
  char b[12];
  ChunkKey(std::uint64_t id, std::uint32_t index) {
    put_be(b, id, 8);
    put_be(b + 8, index, 4);
  }
};

/// Record metadata: u32-length-prefixed strings, i64 times, counted lists. meta_size() bytes.
inline std::size_t meta_size(const RecordMeta& m) {
  std::size_t n = 3 * 4 + m.stream.size() + m.event_id.size() + m.content_type.size() + 16 + 4 + 4;
  for (const auto& t : m.trigger_ids) n += 4 + t.size();
  for (const auto& [k, v] : m.metadata) n += 8 + k.size() + v.size();
  return n;
}
/// Writes `m`'s metadata at `p` (meta_size(m) bytes, one pass, no string appends).
inline void encode_meta_to(const RecordMeta& m, char* p) {
  auto* u = reinterpret_cast<unsigned char*>(p);
  auto u32 = [&](std::size_t x) {
    boost::endian::store_little_u32(u, static_cast<std::uint32_t>(x));
    u += 4;
  };
  auto u64 = [&](std::int64_t x) {
    boost::endian::store_little_u64(u, static_cast<std::uint64_t>(x));
    u += 8;
  };
  auto str = [&](const std::string& x) {
    u32(x.size());
    std::memcpy(u, x.data(), x.size());
    u += x.size();
  };
  str(m.stream);
  str(m.event_id);
  str(m.content_type);
  u64(m.start_ns);
  u64(m.end_ns);
  u32(m.trigger_ids.size());
  for (const auto& t : m.trigger_ids) str(t);
  u32(m.metadata.size());
  for (const auto& [k, v] : m.metadata) {
    str(k);
    str(v);
  }
}
inline void encode_meta(const RecordMeta& m, std::string& s) {
  const std::size_t at = s.size();
  s.resize(at + meta_size(m));
  encode_meta_to(m, s.data() + at);
}

inline bool decode_meta(std::string_view v, std::uint8_t priority, RecordMeta& m) {
  std::size_t pos = 0;
  auto need = [&](std::size_t n) { return v.size() - pos >= n; };
  auto u32 = [&](std::uint32_t& out) {
    if (!need(4)) return false;
    out = static_cast<std::uint32_t>(get_le(v.data() + pos, 4));
    pos += 4;
    return true;
  };
  auto str = [&](std::string& out) {
    std::uint32_t n;
    if (!u32(n) || !need(n)) return false;
    out.assign(v.data() + pos, n);
    pos += n;
    return true;
  };
  m = RecordMeta{};
  m.priority = priority;
  if (!str(m.stream) || !str(m.event_id) || !str(m.content_type) || !need(16)) return false;
  m.start_ns = static_cast<std::int64_t>(get_le(v.data() + pos, 8));
  m.end_ns = static_cast<std::int64_t>(get_le(v.data() + pos + 8, 8));
  pos += 16;
  std::uint32_t n;
  if (!u32(n) || n > v.size()) return false;
  m.trigger_ids.resize(n);
  for (auto& t : m.trigger_ids)
    if (!str(t)) return false;
  if (!u32(n) || n > v.size()) return false;
  for (std::uint32_t i = 0; i < n; ++i) {
    std::string k, val;
    if (!str(k) || !str(val)) return false;
    m.metadata.emplace(std::move(k), std::move(val));
  }
  return pos == v.size();
}

/// Persistent counters (main DB, kCountersKey), rewritten by every write transaction.
struct PersistentCounters {
  static constexpr std::size_t kSize = 8 * 4 + 16 * 8;
  std::uint64_t next_id = 1;
  std::int64_t wear_day = 0;
  std::uint64_t wear_bytes = 0;
  std::uint64_t parked = 0;
  std::uint64_t records[8] = {};
  std::uint64_t bytes[8] = {};

  std::uint64_t total_records() const {
    std::uint64_t n = 0;
    for (auto r : records) n += r;
    return n;
  }
  std::uint64_t total_bytes() const {
    std::uint64_t n = 0;
    for (auto b : bytes) n += b;
    return n;
  }
  /// The kSize bytes of the stored value at `p` (written straight into the page LMDB reserves).
  void encode_to(char* p) const {
    auto* u = reinterpret_cast<unsigned char*>(p);
    boost::endian::store_little_u64(u, next_id);
    boost::endian::store_little_u64(u + 8, static_cast<std::uint64_t>(wear_day));
    boost::endian::store_little_u64(u + 16, wear_bytes);
    boost::endian::store_little_u64(u + 24, parked);
    for (int q = 0; q < 8; ++q) {
      boost::endian::store_little_u64(u + 32 + 16 * q, records[q]);
      boost::endian::store_little_u64(u + 40 + 16 * q, bytes[q]);
    }
  }
  static std::optional<PersistentCounters> decode(std::string_view v) {
    if (v.size() != kSize) return std::nullopt;
    PersistentCounters c;
    c.next_id = get_le(v.data(), 8);
    c.wear_day = static_cast<std::int64_t>(get_le(v.data() + 8, 8));
    c.wear_bytes = get_le(v.data() + 16, 8);
    c.parked = get_le(v.data() + 24, 8);
    for (int p = 0; p < 8; ++p) {
      c.records[p] = get_le(v.data() + 32 + 16 * p, 8);
      c.bytes[p] = get_le(v.data() + 40 + 16 * p, 8);
    }
    return c;
  }
};

}  // namespace fleetpipe::detail
