// Config validation: one validate_config() per component config, the same checks and messages
// for a parsed JSON document and a config built in C++.
#include <cctype>
#include <cmath>
#include <limits>
#include <optional>

#include <nlohmann/json.hpp>

#include "campaign/settings.hpp"
#include "common/json_reader.hpp"
#include "fleetpipe/config.hpp"
#include "trigger/validate.hpp"

namespace fleetpipe {
namespace {

using detail::format_bound;

// The value as the JSON path shows it ("5", "0.5", "-5"): integral doubles print as integers.
std::string show(double v) {
  if (std::isfinite(v) && v == std::floor(v) && std::fabs(v) < 1e15) {
    return std::to_string(static_cast<long long>(v));
  }
  if (!std::isfinite(v)) return std::isnan(v) ? "nan" : (v > 0 ? "inf" : "-inf");
  return nlohmann::json(v).dump();
}

// Collects the first failure, as JsonReader reports it: "<pointer>: <reason>".
class Checker {
 public:
  explicit Checker(std::string base) : base_(std::move(base)) {}

  void fail(const std::string& key, const std::string& reason) {
    fail_at(base_ + "/" + key, reason);
  }
  void fail_here(const std::string& reason) { fail_at(base_, reason); }

  // JsonReader::integer / bytes.
  template <class I>
  void integer(const std::string& key, I v, long long min, long long max) {
    const long long x = static_cast<long long>(v);
    if (x < min) fail(key, "must be >= " + std::to_string(min) + ", got " + std::to_string(x));
    if (x > max) fail(key, "must be <= " + std::to_string(max) + ", got " + std::to_string(x));
  }
  void bytes(const std::string& key, std::uint64_t v, std::uint64_t min, std::uint64_t max) {
    if (v < min) fail(key, "must be >= " + std::to_string(min) + ", got " + std::to_string(v));
    if (v > max) fail(key, "must be <= " + std::to_string(max) + ", got " + std::to_string(v));
  }
  // JsonReader::number (unit "") and JsonReader::seconds (unit " s").
  void range(const std::string& key, double v, double min, double max, bool min_exclusive,
             const char* unit) {
    if (!std::isfinite(v)) {
      fail(key, "must be finite, got " + show(v));
      return;
    }
    if (min_exclusive ? !(v > min) : !(v >= min)) {
      fail(key, std::string("must be ") + (min_exclusive ? "> " : ">= ") + format_bound(min) +
                    unit + ", got " + show(v));
    }
    if (v > max) fail(key, "must be <= " + format_bound(max) + unit + ", got " + show(v));
  }
  void seconds(const std::string& key, double v, double min, double max,
               bool min_exclusive = false) {
    range(key, v, min, max, min_exclusive, " s");
  }
  // A rate whose default 0 means "unlimited"; a value given must be > 0.
  void rate(const std::string& key, double v) {
    if (v != 0) range(key, v, 0, detail::JsonReader::kInf, true, "");
  }

  Result<void> result() {
    if (err_) return std::move(*err_);
    return {};
  }

 private:
  void fail_at(const std::string& pointer, const std::string& reason) {
    if (!err_) err_ = Error(errc::invalid_config, pointer + ": " + reason, pointer);
  }

  std::string base_;
  std::optional<Error> err_;
};

bool safe_chars(const std::string& s) {
  for (unsigned char c : s) {
    if (!(std::isalnum(c) || c == '-' || c == '_' || c == '.')) return false;
  }
  return true;
}

// Placeholders of UploaderConfig::key_template (docs/uploader.md).
const char* const kTemplateFields[] = {"prefix", "stream", "YYYY-MM-DD", "YYYY", "MM", "DD",
                                       "HH", "device", "start_time", "seq", "ext", "event_id"};

void check_key_template(Checker& o, const std::string& t) {
  const std::string key = "objects/key_template";
  if (t.find("{seq}") == std::string::npos) {
    o.fail(key, "must contain {seq} (keys must be unique and deterministic)");
  }
  for (std::size_t p = t.find('{'); p != std::string::npos; p = t.find('{', p + 1)) {
    auto e = t.find('}', p);
    if (e == std::string::npos) {
      o.fail(key, "unbalanced '{'");
      break;
    }
    std::string f = t.substr(p + 1, e - p - 1);
    bool known = false;
    for (const char* k : kTemplateFields) known = known || f == k;
    if (!known) o.fail(key, "unknown placeholder {" + f + "}");
  }
  if (!t.empty() && t[0] == '/') o.fail(key, "must not start with '/'");
}

constexpr std::uint64_t kMinPart = 5ull << 20;
constexpr std::uint64_t kMaxObject = 5ull << 30;
constexpr std::uint64_t kNoMax = std::numeric_limits<std::uint64_t>::max();

}  // namespace

Result<void> validate_config(const BufferConfig& c) {
  Checker r("/buffer");
  if (c.path.empty()) r.fail("path", "must not be empty");
  if (static_cast<int>(c.durability) > 2) {
    r.fail("durability", "must be one of sync, interval, none, got " +
                             std::to_string(static_cast<int>(c.durability)));
  }
  r.seconds("sync_interval", c.sync_interval_ms / 1000.0, 0, 86400, true);
  if (static_cast<int>(c.policy) > 1) {
    r.fail("policy", "must be one of evict, reject, got " +
                         std::to_string(static_cast<int>(c.policy)));
  }
  r.bytes("max_bytes", c.max_bytes, 1, kNoMax);
  r.bytes("max_records", c.max_records, 1, kNoMax);
  double sum = 0;
  for (int p = 0; p < 8; ++p) {
    r.range("reserved_share/" + std::to_string(p), c.reserved_share[p], 0.0, 1.0, false, "");
    sum += c.reserved_share[p];
  }
  if (sum > 1.0 + 1e-9) {
    r.fail("reserved_share", "shares must sum to <= 1, got " + std::to_string(sum));
  }
  r.integer("wear_exempt_priority", c.wear_exempt_priority, 0, 8);
  r.bytes("max_payload_bytes", c.max_payload_bytes, 1, 1ull << 32);
  r.bytes("chunk_bytes", c.chunk_bytes, 8192, 64u << 20);
  if (c.chunk_bytes % 4096 != 0) {
    r.fail("chunk_bytes", "must be a multiple of 4096, got " + std::to_string(c.chunk_bytes));
  }
  r.integer("compression_level", c.compression_level, -7, 22);
  if (c.initial_map_bytes != 0 && c.initial_map_bytes < (1u << 20)) {
    r.fail("initial_map_bytes", "must be 0 (automatic) or >= 1MiB");
  }
  r.integer("max_quarantined", c.max_quarantined, 0, 100);
  return r.result();
}

Result<void> validate_config(const UploaderConfig& c) {
  Checker r("/uploader");
  if (!c.bucket.empty() && (c.bucket.size() < 3 || c.bucket.size() > 63)) {
    r.fail("bucket", "must be 3 to 63 characters, got \"" + c.bucket + "\"");
  }
  if (c.region.empty()) r.fail("region", "must not be empty");
  r.seconds("connect_timeout", c.connect_timeout_s, 0, 3600, true);
  r.seconds("request_timeout", c.request_timeout_s, 0, 86400, true);
  const auto& cr = c.credentials;
  if (cr.access_key_id.empty() != cr.secret_access_key.empty()) {
    r.fail(cr.access_key_id.empty() ? "credentials/access_key_id"
                                    : "credentials/secret_access_key",
           "access_key_id and secret_access_key must be set together");
  }
  if (cr.source == CredentialsSource::static_keys && cr.access_key_id.empty()) {
    r.fail("credentials/access_key_id", "must be set when source is \"static\"");
  }
  check_key_template(r, c.key_template);
  r.bytes("objects/target_size", c.target_object_bytes, 1, kMaxObject);
  r.seconds("objects/max_age", c.max_object_age_s, 0, 7 * 86400.0);
  r.bytes("objects/large_record_size", c.large_record_bytes, 1, kNoMax);
  r.bytes("objects/multipart_threshold", c.multipart_threshold_bytes, kMinPart, kMaxObject);
  r.bytes("objects/part_size", c.part_bytes, kMinPart, kMaxObject);
  r.bytes("batch/max_bytes", c.batch_max_bytes, 1, kNoMax);
  r.integer("batch/max_records", c.batch_max_records, 1, 1000000);
  r.integer("max_concurrent_requests", c.max_concurrent_requests, 1, 16);
  r.bytes("io_chunk_size", c.io_chunk_bytes, 4096, 8ull << 20);
  r.seconds("resume/abandon_after", c.abandon_multipart_after_s, 0, detail::JsonReader::kInf,
            true);
  r.integer("retry/max_attempts", c.max_attempts, 1, 100);
  r.seconds("retry/base_delay", c.retry_base_delay_s, 0, 3600, true);
  r.seconds("retry/max_delay", c.retry_max_delay_s, 0, 86400, true);
  if (c.retry_max_delay_s < c.retry_base_delay_s) {
    r.fail("retry/max_delay", "must be >= base_delay");
  }
  r.rate("bandwidth/bytes_per_second", c.bytes_per_second);
  r.rate("bandwidth/metered_bytes_per_second", c.metered_bytes_per_second);
  r.integer("schedule/utc_offset_minutes", c.schedule.utc_offset_minutes, -14 * 60, 14 * 60);
  for (std::size_t i = 0; i < c.schedule.windows.size(); ++i) {
    const auto& w = c.schedule.windows[i];
    const std::string p = "schedule/windows/" + std::to_string(i);
    r.integer(p + "/start", w.start_minute, 0, 1439);
    r.integer(p + "/end", w.end_minute, 0, 1439);
    r.rate(p + "/bytes_per_second", w.bytes_per_second);
  }
  r.seconds("idle_poll_interval", c.idle_poll_interval_s, 0.001, 60);
  return r.result();
}

Result<void> validate_config(const PipelineOptions& o) {
  Checker r("/pipeline");
  r.seconds("heartbeat_interval", o.heartbeat_interval_s, 0, detail::JsonReader::kInf);
  r.seconds("poll_budget", o.poll_budget_s, 0, 10, true);
  return r.result();
}

Result<void> validate_config(const std::vector<StreamConfig>& streams,
                             const std::vector<TriggerConfig>& triggers) {
  return detail::validate_capture_config(streams, triggers);
}

Result<void> validate_device_id(const std::string& id) {
  Checker r("");
  if (id.empty()) r.fail("device_id", "must not be empty");
  if (id.size() > 128) r.fail("device_id", "must be at most 128 characters");
  if (!safe_chars(id)) {
    r.fail("device_id",
           "may contain only letters, digits, '-', '_' and '.', got \"" + id + "\"");
  }
  return r.result();
}

Result<void> validate_labels(const DeviceLabels& labels) {
  Checker r("/labels");
  if (labels.size() > kMaxLabels) {
    r.fail_here("at most " + std::to_string(kMaxLabels) + " labels, got " +
                   std::to_string(labels.size()));
  }
  for (const auto& [k, v] : labels) {
    const std::string key = detail::escape_pointer_token(k);
    if (k.empty() || k.size() > kMaxLabelKeyLength || !safe_chars(k)) {
      r.fail(key, "a label name must be 1-" + std::to_string(kMaxLabelKeyLength) +
                      " letters, digits, '-', '_' and '.'");
    } else if (v.empty() || v.size() > kMaxLabelValueLength || !safe_chars(v)) {
      r.fail(key, "must be 1-" + std::to_string(kMaxLabelValueLength) +
                      " letters, digits, '-', '_' and '.', got \"" + v + "\"");
    }
  }
  return r.result();
}

Result<void> validate_config(const Config& c) {
  if (auto v = validate_device_id(c.device_id); !v) return v;
  if (auto v = validate_labels(c.labels); !v) return v;
  if (auto v = validate_config(c.streams, c.triggers); !v) return v;
  if (auto v = validate_config(c.buffer); !v) return v;
  if (auto v = validate_config(c.uploader); !v) return v;
  if (auto v = validate_config(c.pipeline); !v) return v;
  return detail::validate_campaign_settings(c.campaigns);
}

}  // namespace fleetpipe
