// Buffer configuration: the limits of a BufferConfig, checked for configs built in C++ and
// parsed from the "buffer" section of a JSON config (errors name the JSON pointer).
#include "buffer/impl.hpp"
#include "common/config_parsers.hpp"

namespace fleetpipe::detail {

std::string validate(const BufferConfig& c) {
  if (c.path.empty()) return "path: must not be empty";
  if (c.max_bytes == 0) return "max_bytes: must be > 0";
  if (c.max_records == 0) return "max_records: must be > 0";
  double sum = 0;
  for (double s : c.reserved_share) {
    if (!(s >= 0 && s <= 1)) return "reserved_share: each share must be within [0, 1]";
    sum += s;
  }
  if (sum > 1.0 + 1e-9) return "reserved_share: shares must sum to <= 1";
  if (c.wear_exempt_priority > 8) return "wear_exempt_priority: must be within [0, 8]";
  if (c.chunk_bytes < 8192 || c.chunk_bytes % 4096 != 0) return "chunk_bytes: must be a multiple of 4096, >= 8192";
  if (c.compression_level < -7 || c.compression_level > 22) return "compression_level: must be within [-7, 22]";
  if (c.max_payload_bytes == 0) return "max_payload_bytes: must be > 0";
  if (c.durability == Durability::interval && c.sync_interval_ms == 0) return "sync_interval_ms: must be > 0";
  return {};
}

BufferConfig parse_buffer_config(JsonReader& r) {
  BufferConfig c;
  c.path = r.string("path", c.path);
  if (c.path.empty()) r.fail("path", "must not be empty");
  std::string d = r.one_of("durability", "sync", {"sync", "interval", "none"});
  c.durability = d == "sync" ? Durability::sync : d == "interval" ? Durability::interval : Durability::none;
  c.sync_interval_ms = static_cast<std::uint32_t>(
      r.seconds("sync_interval", c.sync_interval_ms / 1000.0, 0, 86400, true) * 1000.0 + 0.5);
  if (c.sync_interval_ms == 0) r.fail("sync_interval", "must be >= 1ms");
  c.async_sync = r.boolean("async_sync", c.async_sync);
  c.policy = r.one_of("policy", "evict", {"evict", "reject"}) == "evict" ? FullPolicy::evict
                                                                         : FullPolicy::reject;
  c.max_bytes = r.bytes("max_bytes", c.max_bytes, 1);
  c.max_records = r.bytes("max_records", c.max_records, 1);
  if (const nlohmann::json* rs = r.raw("reserved_share")) {
    JsonReader sub(*rs, r.pointer_of("reserved_share"));
    double sum = 0;
    for (int p = 0; p < 8; ++p) {
      c.reserved_share[p] = sub.number(std::to_string(p), 0.0, 0.0, 1.0);
      sum += c.reserved_share[p];
    }
    sub.finish();
    if (sum > 1.0 + 1e-9)
      r.fail("reserved_share", "shares must sum to <= 1, got " + std::to_string(sum));
  }
  c.min_free_bytes = r.bytes("min_free_bytes", c.min_free_bytes);
  c.min_free_inodes = static_cast<std::uint64_t>(
      r.integer("min_free_inodes", static_cast<std::int64_t>(c.min_free_inodes), 0));
  c.max_bytes_written_per_day = r.bytes("max_bytes_written_per_day", c.max_bytes_written_per_day);
  c.wear_exempt_priority =
      static_cast<std::uint8_t>(r.integer("wear_exempt_priority", c.wear_exempt_priority, 0, 8));
  c.max_payload_bytes = r.bytes("max_payload_bytes", c.max_payload_bytes, 1, 1ull << 32);
  c.chunk_bytes = static_cast<std::uint32_t>(r.bytes("chunk_bytes", c.chunk_bytes, 8192, 64u << 20));
  if (c.chunk_bytes % 4096 != 0)
    r.fail("chunk_bytes", "must be a multiple of 4096, got " + std::to_string(c.chunk_bytes));
  c.compress_min_bytes = r.bytes("compress_min_bytes", c.compress_min_bytes);
  c.compression_level = static_cast<int>(r.integer("compression_level", c.compression_level, -7, 22));
  c.initial_map_bytes = r.bytes("initial_map_bytes", c.initial_map_bytes);
  if (c.initial_map_bytes != 0 && c.initial_map_bytes < (1u << 20))
    r.fail("initial_map_bytes", "must be 0 (automatic) or >= 1MiB");
  c.max_quarantined = static_cast<std::uint32_t>(r.integer("max_quarantined", c.max_quarantined, 0, 100));
  c.unpark_on_open = r.boolean("unpark_on_open", c.unpark_on_open);
  r.finish();
  return c;
}

}  // namespace fleetpipe::detail
