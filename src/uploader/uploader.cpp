// The Uploader: lease -> pack -> PutObject / multipart -> manifest -> ack, on an io_context.
//
// One batch (one Buffer lease) at a time, one request at a time. The engine is a chain of
// callbacks; every callback holds only a weak reference to the engine and the batch generation
// it belongs to, so a pause (which drops the batch) or destruction turns stale callbacks into
// no-ops. Multipart progress lives in the Buffer's state table ("uploader/mpu/<key>"), pending
// manifest lines in "uploader/manifest/<key>". Between batches the engine also scans the bucket
// (ListMultipartUploads under "<prefix>/") and aborts multipart uploads older than
// resume.abandon_after, whoever started them (docs/uploader.md "Resume").
#include "fleetpipe/uploader.hpp"

#include <algorithm>
#include <functional>
#include <atomic>
#include <cmath>
#include <limits>
#include <cstring>
#include <ctime>
#include <map>
#include <mutex>
#include <random>
#include <set>

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <nlohmann/json.hpp>

#include "common/config_parsers.hpp"
#include "s3/credentials.hpp"
#include "s3/digest.hpp"
#include "s3/md5_lanes.hpp"
#include "s3/s3_client.hpp"
#include "s3/token_bucket.hpp"
#include "uploader/uploader_shared.hpp"
#include "fleetpipe/asio.hpp"
#include "fleetpipe/version.hpp"

namespace fleetpipe {

namespace net = boost::asio;
using detail::FailureClass;
using detail::S3Outcome;
using detail::S3Request;
using nlohmann::json;

namespace {

constexpr std::uint64_t kMinPart = 5ull << 20;
constexpr const char* kMpuPrefix = "uploader/mpu/";
constexpr const char* kManifestPrefix = "uploader/manifest/";
constexpr const char* kComponent = "uploader";
constexpr double kMinScanInterval_s = 1.0;          // bucket scan period bounds (docs/uploader.md)
constexpr double kMaxScanInterval_s = 6 * 3600.0;

std::string utc_format(std::int64_t ns, const char* fmt) {
  std::time_t t = static_cast<std::time_t>(ns / 1000000000);
  if (ns < 0) t = 0;
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[64];
  std::strftime(buf, sizeof buf, fmt, &tm);
  return buf;
}

// "20260125T010203.123Z": sortable, unambiguous, no ':' (safe in keys).
std::string start_time_string(std::int64_t ns) {
  char ms[8];
  std::snprintf(ms, sizeof ms, ".%03d", static_cast<int>((ns < 0 ? 0 : ns) / 1000000 % 1000));
  return utc_format(ns, "%Y%m%dT%H%M%S") + ms + "Z";
}

std::string ext_for(const std::string& content_type) {
  if (content_type == "application/vnd.fleetpipe.event") return "fpev";
  if (content_type == "application/json") return "json";
  if (content_type == "application/x-ndjson" || content_type == "application/jsonl") return "jsonl";
  if (content_type == "text/plain") return "txt";
  return "bin";
}

// Metadata values go into HTTP headers: printable ASCII only, bounded.
std::string header_safe(std::string_view s, std::size_t max = 512) {
  std::string out;
  for (unsigned char c : s) {
    if (out.size() >= max) {
      out += "...";
      break;
    }
    out.push_back(c >= 0x20 && c < 0x7f ? static_cast<char>(c) : '_');
  }
  return out;
}

// A value from record data (stream, device, event id) as one key path segment: printable
// ASCII except '/' and '\\', no ".." (so no segment can climb), at most 200 bytes, never empty.
std::string key_segment(std::string_view s) {
  std::string out;
  for (unsigned char c : s) {
    if (out.size() >= 200) break;
    bool ok = c > 0x20 && c < 0x7f && c != '/' && c != '\\';
    char ch = ok ? static_cast<char>(c) : '_';
    if (ch == '.' && !out.empty() && out.back() == '.') ch = '_';
    out.push_back(ch);
  }
  if (out.empty() || out == ".") out = "_";
  return out;
}

std::string strip_quotes(std::string s) {
  if (s.size() >= 2 && s.front() == '"' && s.back() == '"') s = s.substr(1, s.size() - 2);
  return s;
}

// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil).
std::int64_t days_from_civil(std::int64_t y, unsigned m, unsigned d) {
  y -= m <= 2;
  const std::int64_t era = (y >= 0 ? y : y - 399) / 400;
  const unsigned yoe = static_cast<unsigned>(y - era * 400);
  const unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + static_cast<std::int64_t>(doe) - 719468;
}

// An S3 timestamp ("2026-01-25T01:02:03.000Z"; also without fraction, with "+01:00"/"-0130" or
// no zone, read as UTC) in unix seconds; nullopt when it is not one. No locale, no TZ.
std::optional<double> parse_s3_time(std::string_view s) {
  auto num = [&](std::size_t at, std::size_t n) -> int {
    if (at + n > s.size()) return -1;
    int v = 0;
    for (std::size_t i = at; i < at + n; ++i) {
      if (s[i] < '0' || s[i] > '9') return -1;
      v = v * 10 + (s[i] - '0');
    }
    return v;
  };
  if (s.size() < 19 || s[4] != '-' || s[7] != '-' || (s[10] != 'T' && s[10] != 't' && s[10] != ' ') ||
      s[13] != ':' || s[16] != ':') {
    return std::nullopt;
  }
  int Y = num(0, 4), M = num(5, 2), D = num(8, 2), h = num(11, 2), mi = num(14, 2), sec = num(17, 2);
  if (Y < 1970 || M < 1 || M > 12 || D < 1 || D > 31 || h < 0 || h > 23 || mi < 0 || mi > 59 || sec < 0 ||
      sec > 60) {
    return std::nullopt;
  }
  std::size_t i = 19;
  double frac = 0;
  if (i < s.size() && s[i] == '.') {
    double scale = 0.1;
    std::size_t digits = 0;
    for (++i; i < s.size() && s[i] >= '0' && s[i] <= '9'; ++i, ++digits) {
      frac += (s[i] - '0') * scale;
      scale /= 10;
    }
    if (digits == 0) return std::nullopt;
  }
  int offset_min = 0;
  if (i < s.size()) {
    if (s[i] == 'Z' || s[i] == 'z') {
      ++i;
    } else if (s[i] == '+' || s[i] == '-') {
      int sign = s[i] == '-' ? -1 : 1;
      int oh = num(i + 1, 2), om = -1;
      if (i + 3 < s.size() && s[i + 3] == ':') {
        om = num(i + 4, 2);
        i += 6;
      } else {
        om = num(i + 3, 2);
        i += 5;
      }
      if (oh < 0 || oh > 23 || om < 0 || om > 59) return std::nullopt;
      offset_min = sign * (oh * 60 + om);
    } else {
      return std::nullopt;
    }
  }
  if (i != s.size()) return std::nullopt;
  std::int64_t days = days_from_civil(Y, static_cast<unsigned>(M), static_cast<unsigned>(D));
  std::int64_t secs = days * 86400 + h * 3600 + mi * 60 + sec - offset_min * 60LL;
  return static_cast<double>(secs) + frac;
}

const std::vector<std::string> kTemplateFields = {
    "prefix", "stream", "YYYY-MM-DD", "YYYY", "MM", "DD", "HH",
    "device", "start_time", "seq", "ext", "event_id"};

}  // namespace

// =============================================================================================
// Config
// =============================================================================================

namespace detail {

namespace {
int parse_hhmm(JsonReader& r, std::string_view key, const std::string& def) {
  std::string s = r.string(key, def);
  int h = -1, m = -1;
  char extra = 0;
  if (std::sscanf(s.c_str(), "%d:%d%c", &h, &m, &extra) != 2 || h < 0 || h > 24 || m < 0 ||
      m > 59 || (h == 24 && m != 0) || s.size() != 5) {
    r.fail(key, "must be \"HH:MM\" (00:00 to 24:00), got \"" + s + "\"");
  }
  return h * 60 + m;
}
}  // namespace

UploaderConfig parse_uploader_config(JsonReader& r) {
  UploaderConfig c;
  c.enabled = r.boolean("enabled", c.enabled);
  c.endpoint = r.string("endpoint", c.endpoint);
  c.bucket = r.string("bucket", c.bucket);
  if (!c.bucket.empty() && (c.bucket.size() < 3 || c.bucket.size() > 63)) {
    r.fail("bucket", "must be 3 to 63 characters, got \"" + c.bucket + "\"");
  }
  c.region = r.string("region", c.region);
  if (c.region.empty()) r.fail("region", "must not be empty");
  c.virtual_host_style = r.one_of("addressing", "path", {"path", "virtual"}) == "virtual";
  c.connect_address = r.string("connect_address", c.connect_address);
  c.allow_insecure_http = r.boolean("allow_insecure_http", c.allow_insecure_http);
  {
    auto t = r.object("tls");
    c.tls_verify = t.boolean("verify", c.tls_verify);
    c.ca_file = t.string("ca_file", c.ca_file);
    t.finish();
  }
  c.connect_timeout_s = r.seconds("connect_timeout", c.connect_timeout_s, 0, 3600, true);
  c.request_timeout_s = r.seconds("request_timeout", c.request_timeout_s, 0, 86400, true);
  {
    auto k = r.object("credentials");
    auto src = k.one_of("source", "auto", {"auto", "static", "env", "profile", "host"});
    c.credentials.source = src == "static"    ? CredentialsSource::static_keys
                           : src == "env"     ? CredentialsSource::environment
                           : src == "profile" ? CredentialsSource::profile
                           : src == "host"    ? CredentialsSource::host
                                              : CredentialsSource::auto_detect;
    c.credentials.access_key_id = k.string("access_key_id", "");
    c.credentials.secret_access_key = k.string("secret_access_key", "");
    c.credentials.session_token = k.string("session_token", "");
    c.credentials.profile = k.string("profile", c.credentials.profile);
    c.credentials.shared_credentials_file = k.string("shared_credentials_file", "");
    if (c.credentials.access_key_id.empty() != c.credentials.secret_access_key.empty()) {
      k.fail(c.credentials.access_key_id.empty() ? "access_key_id" : "secret_access_key",
             "access_key_id and secret_access_key must be set together");
    }
    if (c.credentials.source == CredentialsSource::static_keys && c.credentials.access_key_id.empty()) {
      k.fail("access_key_id", "must be set when source is \"static\"");
    }
    k.finish();
  }
  c.unsigned_payload = r.boolean("unsigned_payload", c.unsigned_payload);
  {
    auto o = r.object("objects");
    c.prefix = o.string("prefix", c.prefix);
    while (!c.prefix.empty() && c.prefix.back() == '/') c.prefix.pop_back();
    c.key_template = o.string("key_template", c.key_template);
    std::string t = c.key_template;
    if (t.find("{seq}") == std::string::npos) {
      o.fail("key_template", "must contain {seq} (keys must be unique and deterministic)");
    }
    for (std::size_t p = t.find('{'); p != std::string::npos; p = t.find('{', p + 1)) {
      auto e = t.find('}', p);
      if (e == std::string::npos) o.fail("key_template", "unbalanced '{'");
      std::string f = t.substr(p + 1, e - p - 1);
      if (std::find(kTemplateFields.begin(), kTemplateFields.end(), f) == kTemplateFields.end()) {
        o.fail("key_template", "unknown placeholder {" + f + "}");
      }
    }
    if (!t.empty() && t[0] == '/') o.fail("key_template", "must not start with '/'");
    c.target_object_bytes = o.bytes("target_size", c.target_object_bytes, 1, 5ull << 30);
    c.max_object_age_s = o.seconds("max_age", c.max_object_age_s, 0, 7 * 86400.0);
    c.large_record_bytes = o.bytes("large_record_size", c.large_record_bytes, 1);
    c.multipart_threshold_bytes =
        o.bytes("multipart_threshold", c.multipart_threshold_bytes, kMinPart, 5ull << 30);
    c.part_bytes = o.bytes("part_size", c.part_bytes, kMinPart, 5ull << 30);
    c.write_manifest = o.boolean("manifest", c.write_manifest);
    o.finish();
  }
  {
    auto b = r.object("batch");
    c.batch_max_bytes = b.bytes("max_bytes", c.batch_max_bytes, 1);
    c.batch_max_records = static_cast<std::uint64_t>(
        b.integer("max_records", static_cast<std::int64_t>(c.batch_max_records), 1, 1000000));
    b.finish();
  }
  c.max_concurrent_requests = static_cast<std::uint32_t>(
      r.integer("max_concurrent_requests", c.max_concurrent_requests, 1, 16));
  c.io_chunk_bytes = static_cast<std::uint32_t>(
      r.bytes("io_chunk_size", c.io_chunk_bytes, 4096, 8ull << 20));
  {
    auto s = r.object("resume");
    c.abandon_multipart_after_s = s.seconds("abandon_after", c.abandon_multipart_after_s, 0, JsonReader::kInf, true);
    s.finish();
  }
  {
    auto s = r.object("retry");
    c.max_attempts = static_cast<std::uint32_t>(s.integer("max_attempts", c.max_attempts, 1, 100));
    c.retry_base_delay_s = s.seconds("base_delay", c.retry_base_delay_s, 0, 3600, true);
    c.retry_max_delay_s = s.seconds("max_delay", c.retry_max_delay_s, 0, 86400, true);
    if (c.retry_max_delay_s < c.retry_base_delay_s) s.fail("max_delay", "must be >= base_delay");
    s.finish();
  }
  {
    auto b = r.object("bandwidth");
    c.bytes_per_second = b.number("bytes_per_second", c.bytes_per_second, 0, JsonReader::kInf, true);
    c.burst_bytes = b.bytes("burst_bytes", c.burst_bytes, 0);
    c.pause_when_metered = b.one_of("metered", "pause", {"pause", "run"}) == "pause";
    c.metered_bytes_per_second =
        b.number("metered_bytes_per_second", c.metered_bytes_per_second, 0, JsonReader::kInf, true);
    b.finish();
  }
  {
    auto s = r.object("schedule");
    c.schedule.utc_offset_minutes =
        static_cast<int>(s.integer("utc_offset_minutes", 0, -14 * 60, 14 * 60));
    c.schedule.pause_outside_windows = s.one_of("outside_windows", "run", {"run", "pause"}) == "pause";
    for (auto& w : s.objects("windows")) {
      ScheduleWindow win;
      win.start_minute = parse_hhmm(w, "start", "00:00");
      win.end_minute = parse_hhmm(w, "end", "24:00") % 1440;
      if (win.start_minute == 1440) win.start_minute = 0;
      win.pause = w.boolean("pause", false);
      win.bytes_per_second = w.number("bytes_per_second", 0, 0, JsonReader::kInf, true);
      w.finish();
      c.schedule.windows.push_back(win);
    }
    s.finish();
  }
  c.idle_poll_interval_s = r.seconds("idle_poll_interval", c.idle_poll_interval_s, 0.001, 60);
  r.finish();
  return c;
}

}  // namespace detail

// =============================================================================================
// Engine
// =============================================================================================

namespace {

struct Segment {
  std::size_t index;        // in the lease
  RecordId id;
  std::uint64_t offset;     // within the object
  std::uint64_t size;
  bool chunked;
};

struct ObjectPlan {
  std::string key;
  std::vector<Segment> segs;
  std::uint64_t size = 0;
  std::string stream, device, content_type, date;
  std::int64_t start_ns = 0, end_ns = 0;
  bool done = false, failed = false;
  std::string etag;
  std::uint32_t parts = 0;
  std::vector<RecordId> ids() const {
    std::vector<RecordId> v;
    for (const auto& s : segs) v.push_back(s.id);
    return v;
  }
};

struct PartState {
  std::uint32_t number = 0;
  std::string etag;  // unquoted hex md5
};

struct MultipartState {
  std::string upload_id;
  std::uint64_t size = 0, part_size = 0;
  std::vector<RecordId> ids;
  std::int64_t created_unix = 0;
  std::map<std::uint32_t, std::string> parts;  // number -> md5 hex
  std::uint32_t part_count() const {
    return static_cast<std::uint32_t>((size + part_size - 1) / part_size);
  }
};

json to_json(const MultipartState& m, const std::string& key) {
  json parts = json::array();
  for (const auto& [n, e] : m.parts) parts.push_back({{"n", n}, {"etag", e}});
  return {{"key", key},        {"upload_id", m.upload_id}, {"size", m.size},
          {"part_size", m.part_size}, {"ids", m.ids}, {"created_unix", m.created_unix},
          {"parts", parts}};
}

std::optional<MultipartState> mpu_from_json(const std::string& text) {
  try {
    auto j = json::parse(text);
    MultipartState m;
    m.upload_id = j.at("upload_id").get<std::string>();
    m.size = j.at("size").get<std::uint64_t>();
    m.part_size = j.at("part_size").get<std::uint64_t>();
    m.ids = j.at("ids").get<std::vector<RecordId>>();
    m.created_unix = j.at("created_unix").get<std::int64_t>();
    for (const auto& p : j.at("parts")) m.parts[p.at("n").get<std::uint32_t>()] = p.at("etag").get<std::string>();
    if (m.part_size == 0) return std::nullopt;
    return m;
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

struct Batch {
  Lease lease;
  std::vector<ObjectPlan> objects;
  std::size_t next = 0;
  std::string manifest_key;
  std::string manifest_lines;  // JSONL of delivered objects
  std::uint64_t gen = 0;
};

}  // namespace

class Engine : public std::enable_shared_from_this<Engine> {
 public:
  Engine(net::io_context& ioc, const UploaderConfig& cfg, Buffer& buffer, const Port& port,
         MetricsRegistry& m)
      : ioc_(ioc),
        cfg_(cfg),
        buffer_(buffer),
        port_(port.with_defaults()),
        creds_(cfg.credentials, port.credentials),
        bucket_(cfg.bytes_per_second, cfg.burst_bytes, port_.clock->monotonic()),
        wake_(ioc),
        rng_(std::random_device{}()) {
    base_rate_ = cfg.bytes_per_second;
    base_burst_ = cfg.burst_bytes;
    auto cls_labels = [](FailureClass c) { return Labels{{"class", detail::class_name(c)}}; };
    for (int i = 0; i <= static_cast<int>(FailureClass::cancelled); ++i) {
      auto c = static_cast<FailureClass>(i);
      failed_by_class_[i] = &m.counter("fleetpipe_uploader_request_failures_total",
                                       "Failed S3 requests by retry class", cls_labels(c));
      retried_by_class_[i] = &m.counter("fleetpipe_uploader_retries_total",
                                        "S3 requests retried, by retry class", cls_labels(c));
    }
    uploads_ok_ = &m.counter("fleetpipe_uploader_uploads_total", "Objects uploaded (PutObject or "
                             "completed multipart)", {{"result", "ok"}});
    uploads_failed_ = &m.counter("fleetpipe_uploader_uploads_total", "Objects uploaded (PutObject "
                                 "or completed multipart)", {{"result", "failed"}});
    bytes_sent_ = &m.counter("fleetpipe_uploader_bytes_sent_total",
                             "Request bytes (headers and bodies) handed to the socket");
    records_acked_ = &m.counter("fleetpipe_uploader_records_acked_total",
                                "Records acked after their object was stored");
    records_nacked_ = &m.counter("fleetpipe_uploader_records_nacked_total",
                                 "Records returned to the buffer after retries ran out");
    rate_gauge_ = &m.gauge("fleetpipe_uploader_rate_bytes_per_second",
                           "Effective upload rate limit now (0 = unlimited)");
    for (const char* reason : {"host", "schedule", "network"}) {
      pauses_[reason] = &m.counter("fleetpipe_uploader_pauses_total",
                                   "Times uploads were paused, by reason", {{"reason", reason}});
    }
    paused_seconds_ = &m.gauge("fleetpipe_uploader_paused_seconds",
                               "Cumulative seconds spent paused (any reason)");
    resumed_ = &m.counter("fleetpipe_uploader_multipart_resumed_total",
                          "Multipart uploads continued from persisted state (after a restart or a pause)");
    // reason="own_state": found in our resume state; "orphan": found by the bucket scan only.
    aborted_own_ = &m.counter("fleetpipe_uploader_multipart_aborted_total",
                              "Abandoned multipart uploads aborted, by how they were found",
                              {{"reason", "own_state"}});
    aborted_orphan_ = &m.counter("fleetpipe_uploader_multipart_aborted_total",
                                 "Abandoned multipart uploads aborted, by how they were found",
                                 {{"reason", "orphan"}});
    scans_ok_ = &m.counter("fleetpipe_uploader_multipart_scans_total",
                           "Bucket scans for abandoned multipart uploads", {{"result", "ok"}});
    scans_failed_ = &m.counter("fleetpipe_uploader_multipart_scans_total",
                               "Bucket scans for abandoned multipart uploads", {{"result", "failed"}});
    // The scan runs every abandon_after (at most every 6 h, at least every second).
    scan_interval_ = std::chrono::nanoseconds(static_cast<std::int64_t>(
        std::min(std::max(cfg.abandon_multipart_after_s, kMinScanInterval_s), kMaxScanInterval_s) * 1e9));
    manifests_ok_ = &m.counter("fleetpipe_uploader_manifests_total", "Manifest objects written",
                               {{"result", "ok"}});
    manifests_failed_ = &m.counter("fleetpipe_uploader_manifests_total",
                                   "Manifest objects written", {{"result", "failed"}});
    etag_mismatch_ = &m.counter("fleetpipe_uploader_etag_mismatch_total",
                                "Responses whose ETag did not match the MD5 sent");
    clock_offset_gauge_ = &m.gauge("fleetpipe_uploader_clock_offset_seconds",
                                   "Clock correction learned from RequestTimeTooSkewed");
    metrics_ = &m;
    rate_gauge_->set(cfg.bytes_per_second);
  }

  Result<void> init() {
    detail::S3Client::Hooks h;
    std::weak_ptr<Engine> w = weak_from_this();
    h.credentials = [w]() -> Result<Credentials> {
      auto s = w.lock();
      if (!s) return Error(errc::cancelled, "uploader gone");
      return s->creds_.get();
    };
    h.wall = [w]() {
      auto s = w.lock();
      return s ? s->corrected_wall() : std::chrono::system_clock::now();
    };
    h.mono = [w]() {
      auto s = w.lock();
      return s ? s->port_.clock->monotonic() : std::chrono::steady_clock::now();
    };
    h.bucket = &bucket_;
    h.on_bytes_sent = [w](std::uint64_t n) {
      if (auto s = w.lock()) {
        s->bytes_sent_->inc(n);
        s->bytes_sent_total_ += n;
      }
    };
    std::size_t n = std::max<std::uint32_t>(1, cfg_.max_concurrent_requests);
    for (std::size_t i = 0; i < n; ++i) {
      auto c = detail::S3Client::create(ioc_, cfg_, h);
      if (!c) return std::move(c).error();
      clients_.push_back(std::move(*c));
    }
    slot_part_.assign(n, 0);
    last_tick_mono_ = port_.clock->monotonic();
    if (auto w = detail::credentials_file_warning(cfg_.credentials); !w.empty()) log(LogLevel::warning, w);
    startup_pending_ = true;
    next_scan_ = port_.clock->monotonic();  // first scan once nothing is ready to upload
    arm_wake(std::chrono::nanoseconds(0));
    return {};
  }

  ~Engine() { cancel_all(); }

  // ---- host controls (any thread) ---------------------------------------------------------

  void set_rate(double rate, std::uint64_t burst) {
    {
      std::lock_guard<std::mutex> g(ctl_mu_);
      pending_rate_ = std::make_pair(rate, burst);
    }
    poke();
  }
  void pause() {
    host_paused_.store(true);
    poke();
  }
  void resume() {
    host_paused_.store(false);
    poke();
  }
  void flush() {
    flush_requested_.store(true);
    poke();
  }
  void shutdown() {
    stopped_ = true;
    drop_batch(false);
    wake_.cancel();
  }

  bool idle() const { return !batch_ && !any_busy(); }

  // For the pipeline's heartbeat (detail/uploader_shared.hpp), on the driving thread only.
  detail::TokenBucket* shaping_bucket() { return &bucket_; }
  WallTime signing_wall() const { return corrected_wall(); }
  bool uploads_paused() const {  // host and network as of now (the next tick would see them too)
    NetworkState ns = port_.network->get();
    return paused() || host_paused_.load() || ns == NetworkState::offline ||
           (ns == NetworkState::metered && cfg_.pause_when_metered);
  }

  UploaderStatus status() const {
    std::lock_guard<std::mutex> g(status_mu_);
    UploaderStatus s = status_;
    s.paused_by_host = host_paused_.load();
    s.paused = s.paused_by_host || s.paused_by_network || s.paused_by_schedule;
    return s;
  }

 private:
  // ---- plumbing ----------------------------------------------------------------------------

  template <class F>
  auto weak(F f) {
    return [w = weak_from_this(), f = std::move(f)](auto&&... a) mutable {
      if (auto s = w.lock()) f(std::forward<decltype(a)>(a)...);
    };
  }

  bool any_busy() const {
    for (const auto& c : clients_)
      if (c->busy()) return true;
    return false;
  }

  // Aborts every request in flight and every pending retry; their callbacks never run.
  void cancel_all() {
    for (auto& c : clients_)
      if (c->busy()) c->cancel();  // idle kept-alive connections stay open
    for (auto& w : retry_timers_)
      if (auto t = w.lock()) t->cancel();
    retry_timers_.clear();
    std::fill(slot_part_.begin(), slot_part_.end(), 0);
    inflight_parts_.clear();
  }

  // Invalidates the callbacks of the current batch's requests (after cancel_all) while the
  // batch itself goes on (an object failed; the next one starts).
  void new_generation() {
    cancel_all();
    if (batch_) batch_->gen = ++batch_gen_;
  }

  void poke() {
    net::post(ioc_, weak([this]() { tick(); }));
  }

  void arm_wake(std::chrono::nanoseconds d) {
    if (stopped_) return;
    wake_.expires_after(d);
    wake_.async_wait(weak([this](boost::system::error_code ec) {
      if (ec == net::error::operation_aborted) return;
      tick();
      arm_wake(std::chrono::nanoseconds(static_cast<std::int64_t>(cfg_.idle_poll_interval_s * 1e9)));
    }));
  }

  WallTime corrected_wall() const {
    return port_.clock->wall() +
           std::chrono::duration_cast<WallTime::duration>(std::chrono::duration<double>(clock_offset_s_));
  }

  void log(LogLevel l, const std::string& msg) { fleetpipe::log(port_, l, kComponent, msg); }

  void set_last_error(const std::string& e) {
    std::lock_guard<std::mutex> g(status_mu_);
    status_.last_error = e;
  }

  void update_status() {
    std::lock_guard<std::mutex> g(status_mu_);
    status_.paused_by_network = paused_network_;
    status_.paused_by_schedule = paused_schedule_;
    status_.busy = static_cast<bool>(batch_);
    status_.rate_bytes_per_s = bucket_.unlimited() ? 0 : bucket_.rate();
    status_.burst_bytes = bucket_.unlimited() ? 0 : bucket_.burst();
    status_.bytes_sent = bytes_sent_total_;
    status_.clock_offset_s = clock_offset_s_;
  }

  template <class F>
  void with_status(F f) {
    std::lock_guard<std::mutex> g(status_mu_);
    f(status_);
  }

  // ---- shaping: host pause, network state, schedule windows --------------------------------

  void evaluate_shaping() {
    MonoTime now = port_.clock->monotonic();
    if (auto pr = take_pending_rate()) {
      base_rate_ = pr->first;
      base_burst_ = pr->second;
    }
    bool host = host_paused_.load();
    NetworkState ns = port_.network->get();
    bool network = ns == NetworkState::offline || (ns == NetworkState::metered && cfg_.pause_when_metered);
    double rate = base_rate_;
    bool schedule = false;
    if (!cfg_.schedule.windows.empty() || cfg_.schedule.pause_outside_windows) {
      auto secs = std::chrono::duration_cast<std::chrono::seconds>(port_.clock->wall().time_since_epoch()).count();
      long long local = secs + cfg_.schedule.utc_offset_minutes * 60LL;
      int minute = static_cast<int>(((local / 60) % 1440 + 1440) % 1440);
      const ScheduleWindow* hit = nullptr;
      for (const auto& w : cfg_.schedule.windows) {
        bool in = w.start_minute == w.end_minute ||
                  (w.start_minute < w.end_minute ? (minute >= w.start_minute && minute < w.end_minute)
                                                 : (minute >= w.start_minute || minute < w.end_minute));
        if (in) {
          hit = &w;
          break;
        }
      }
      if (hit) {
        schedule = hit->pause;
        if (hit->bytes_per_second > 0) rate = hit->bytes_per_second;
      } else {
        schedule = cfg_.schedule.pause_outside_windows;
      }
    }
    if (ns == NetworkState::metered && !cfg_.pause_when_metered && cfg_.metered_bytes_per_second > 0) {
      rate = rate > 0 ? std::min(rate, cfg_.metered_bytes_per_second) : cfg_.metered_bytes_per_second;
    }
    if (rate != bucket_.rate() || (rate > 0 && base_burst_ != 0 && base_burst_ != bucket_.burst())) {
      bucket_.set_rate(rate, base_burst_, now);
      rate_gauge_->set(rate);
      log(LogLevel::info, "upload rate now " + (rate > 0 ? std::to_string(static_cast<long long>(rate)) + " B/s" : std::string("unlimited")));
    }
    // Pause accounting.
    bool any_before = paused_host_ || paused_network_ || paused_schedule_;
    auto count = [&](bool before, bool after, const char* reason) {
      if (!before && after) {
        pauses_[reason]->inc();
        log(LogLevel::info, std::string("uploads paused (") + reason + ")");
      } else if (before && !after) {
        log(LogLevel::info, std::string("uploads resumed (") + reason + ")");
      }
    };
    count(paused_host_, host, "host");
    count(paused_network_, network, "network");
    count(paused_schedule_, schedule, "schedule");
    paused_host_ = host;
    paused_network_ = network;
    paused_schedule_ = schedule;
    if (any_before) {
      paused_seconds_->add(std::chrono::duration<double>(now - last_tick_mono_).count());
    }
    last_tick_mono_ = now;
  }

  std::optional<std::pair<double, std::uint64_t>> take_pending_rate() {
    std::lock_guard<std::mutex> g(ctl_mu_);
    auto r = pending_rate_;
    pending_rate_.reset();
    return r;
  }

  bool paused() const { return paused_host_ || paused_network_ || paused_schedule_; }

  // ---- the main loop -----------------------------------------------------------------------

  void tick() {
    if (stopped_) return;
    evaluate_shaping();
    update_status();
    if (paused()) {
      // waiting_: a request between retries (its timer would fire during the pause).
      if (batch_ || any_busy() || waiting_) {
        log(LogLevel::info, "pausing: aborting the request in flight, records go back to the buffer");
        drop_batch(false);
      }
      if (scan_active_) {
        scan_active_ = false;  // next_scan_ is unchanged: it runs again after the pause
        log(LogLevel::info, "pausing: bucket scan for abandoned multipart uploads interrupted");
      }
      return;
    }
    if (any_busy() || waiting_ || batch_) return;
    if (port_.clock->monotonic() < backoff_until_) return;
    if (startup_pending_) return startup();
    if (!pending_manifests_.empty()) return write_pending_manifest();
    if (!abandoned_.empty()) return abort_next_abandoned();
    // A scan step always has a request in flight or a retry timer (waiting_); if a handler was
    // dropped without running, start over instead of stalling.
    scan_active_ = false;
    // Uploads go first; the scan runs when nothing is ready (start_batch), or before the next
    // batch once it is a whole interval late (a backlog that never drains).
    if (scan_due() && port_.clock->monotonic() >= next_scan_ + scan_interval_) return start_scan();
    start_batch();
  }

  // At start: pending manifests and abandoned multipart uploads from an earlier run.
  void startup() {
    startup_pending_ = false;
    auto ms = buffer_.list_state(kManifestPrefix);
    if (ms) {
      for (auto& [k, v] : *ms) pending_manifests_.emplace_back(k.substr(std::strlen(kManifestPrefix)), v);
    }
    auto mp = buffer_.list_state(kMpuPrefix);
    if (mp) {
      auto now = std::chrono::duration_cast<std::chrono::seconds>(port_.clock->wall().time_since_epoch()).count();
      for (auto& [k, v] : *mp) {
        auto st = mpu_from_json(v);
        std::string key = k.substr(std::strlen(kMpuPrefix));
        if (!st) {
          log(LogLevel::warning, "dropping unreadable multipart resume state for " + key);
          (void)buffer_.erase_state(k);
          continue;
        }
        if (static_cast<double>(now - st->created_unix) > cfg_.abandon_multipart_after_s) {
          abandoned_.emplace_back(key, st->upload_id);
        }
      }
    }
    poke();
  }

  void abort_next_abandoned() {
    auto [key, upload_id] = abandoned_.front();
    S3Request r;
    r.method = "DELETE";
    r.key = key;
    r.query = {{"uploadId", upload_id}};
    waiting_ = true;
    send(std::move(r), 0, [this, key = key](S3Outcome o) {
      waiting_ = false;
      abandoned_.erase(abandoned_.begin());
      if (o.ok || o.failure.cls == FailureClass::upload_gone || o.failure.status == 404) {
        aborted_own_->inc();
        log(LogLevel::warning, "aborted abandoned multipart upload of " + key + " (reason own_state: resume "
                               "state older than resume.abandon_after)");
        (void)buffer_.erase_state(kMpuPrefix + key);
      } else {
        log(LogLevel::warning, "could not abort abandoned multipart upload of " + key + ": " + o.failure.message +
                                   " (the bucket scan retries it)");
      }
      poke();
    });
  }

  // ---- bucket scan: abandoned multipart uploads nobody has state for ------------------------
  //
  // Resume state covers only uploads whose id we persisted. A crash between the
  // CreateMultipartUpload reply and put_state, a quarantined or recreated DB, or a device whose
  // storage was wiped leaves uploads in the bucket that no state names; they hold storage until
  // aborted. Every uploader sharing the prefix applies the same rule to the uploads it starts (it
  // completes or aborts them within resume.abandon_after), so any upload under "<prefix>/" older
  // than that is abandoned by definition, whoever started it: ListMultipartUploads (paginated),
  // AbortMultipartUpload for each one initiated more than abandon_after ago by the (corrected)
  // wall clock, except the upload this uploader is working on. One request at a time, between
  // batches, with the usual retries; a failed list or abort is logged, counted, and tried again at
  // the next scan.

  std::string scan_prefix() const { return cfg_.prefix + "/"; }

  // An empty prefix would claim the whole bucket: no scan then.
  bool scan_due() const { return !cfg_.prefix.empty() && port_.clock->monotonic() >= next_scan_; }

  void start_scan() {
    scan_active_ = true;
    scan_key_marker_.clear();
    scan_upload_id_marker_.clear();
    scan_todo_.clear();
    scan_next_ = 0;
    scan_aborted_ = 0;
    scan_pages_ = 0;
    log(LogLevel::debug, "scanning " + scan_prefix() + " for multipart uploads older than " +
                             std::to_string(cfg_.abandon_multipart_after_s) + " s");
    list_uploads_page();
  }

  void list_uploads_page() {
    S3Request r;
    r.method = "GET";
    r.key = "";
    r.query = {{"uploads", ""}, {"prefix", scan_prefix()}};
    if (!scan_key_marker_.empty()) {
      r.query.emplace_back("key-marker", scan_key_marker_);
      r.query.emplace_back("upload-id-marker", scan_upload_id_marker_);
    }
    waiting_ = true;
    send(std::move(r), 0, [this](S3Outcome o) {
      waiting_ = false;
      if (!scan_active_) return;
      if (!o.ok) return finish_scan(false, "listing multipart uploads failed: " + o.failure.message);
      ++scan_pages_;
      const std::string& body = o.response.body;
      const std::string prefix = scan_prefix();
      const double now = std::chrono::duration<double>(corrected_wall().time_since_epoch()).count();
      scan_todo_.clear();
      scan_next_ = 0;
      for (auto block : detail::xml_blocks(body, "Upload")) {
        std::string key = detail::xml_text(block, "Key").value_or("");
        std::string id = detail::xml_text(block, "UploadId").value_or("");
        std::string initiated = detail::xml_text(block, "Initiated").value_or("");
        if (key.empty() || id.empty() || key.compare(0, prefix.size(), prefix) != 0) continue;
        auto t = parse_s3_time(initiated);
        if (!t) {
          log(LogLevel::warning, "multipart upload " + id + " of " + key + " has an unreadable Initiated time \"" +
                                     header_safe(initiated, 64) + "\"; left alone");
          continue;
        }
        double age = now - *t;
        if (age > cfg_.abandon_multipart_after_s) scan_todo_.push_back(ScanCandidate{key, id, age});
      }
      bool truncated = detail::xml_text(body, "IsTruncated").value_or("false") == "true";
      if (truncated) {
        std::string nk = detail::xml_text(body, "NextKeyMarker").value_or("");
        std::string nu = detail::xml_text(body, "NextUploadIdMarker").value_or("");
        if (nk.empty() || (nk == scan_key_marker_ && nu == scan_upload_id_marker_)) {
          log(LogLevel::warning, "ListMultipartUploads is truncated but gives no new marker; the scan stops at "
                                 "page " + std::to_string(scan_pages_));
          truncated = false;
        } else {
          scan_key_marker_ = nk;
          scan_upload_id_marker_ = nu;
        }
      }
      scan_truncated_ = truncated;
      abort_next_orphan();
    });
  }

  void abort_next_orphan() {
    while (scan_next_ < scan_todo_.size() && scan_todo_[scan_next_].upload_id == current_upload_id_) {
      const auto& c = scan_todo_[scan_next_];
      log(LogLevel::debug, "bucket scan: keeping multipart upload " + c.upload_id + " of " + c.key +
                               " (in progress here, initiated " + std::to_string(static_cast<long long>(c.age_s)) +
                               " s ago)");
      ++scan_next_;
    }
    if (scan_next_ >= scan_todo_.size()) {
      if (scan_truncated_) return list_uploads_page();
      return finish_scan(true, "");
    }
    const ScanCandidate c = scan_todo_[scan_next_];
    S3Request r;
    r.method = "DELETE";
    r.key = c.key;
    r.query = {{"uploadId", c.upload_id}};
    waiting_ = true;
    send(std::move(r), 0, [this, c](S3Outcome o) {
      waiting_ = false;
      if (!scan_active_) return;
      ++scan_next_;
      bool gone = !o.ok && (o.failure.cls == FailureClass::upload_gone || o.failure.status == 404);
      if (o.ok || gone) {
        bool own = erase_own_state(c.key, c.upload_id);
        if (o.ok) {
          ++scan_aborted_;
          (own ? aborted_own_ : aborted_orphan_)->inc();
          log(LogLevel::warning, "aborted abandoned multipart upload " + c.upload_id + " of " + c.key +
                                     " (initiated " + std::to_string(static_cast<long long>(c.age_s)) +
                                     " s ago, resume.abandon_after is " +
                                     std::to_string(static_cast<long long>(cfg_.abandon_multipart_after_s)) +
                                     " s; reason " + (own ? "own_state" : "orphan") + ")");
        } else {
          log(LogLevel::info, "multipart upload " + c.upload_id + " of " + c.key + " is already gone");
        }
      } else {
        log(LogLevel::warning, "could not abort abandoned multipart upload " + c.upload_id + " of " + c.key + ": " +
                                   o.failure.message + " (tried again at the next scan)");
        // A refusal for this one upload (403, other 4xx) does not stop the others; a network or
        // server failure ends the scan (the next one retries).
        if (o.failure.cls != FailureClass::auth && o.failure.cls != FailureClass::permanent) {
          return finish_scan(false, "aborting multipart uploads failed: " + o.failure.message);
        }
      }
      abort_next_orphan();
    });
  }

  // Our resume state for `key` names this upload: it is gone now, so is the state.
  bool erase_own_state(const std::string& key, const std::string& upload_id) {
    auto saved = buffer_.get_state(kMpuPrefix + key);
    if (!saved || !*saved) return false;
    auto st = mpu_from_json(**saved);
    if (!st || st->upload_id != upload_id) return false;
    (void)buffer_.erase_state(kMpuPrefix + key);
    abandoned_.erase(std::remove(abandoned_.begin(), abandoned_.end(), std::make_pair(key, upload_id)),
                     abandoned_.end());
    return true;
  }

  void finish_scan(bool ok, const std::string& why) {
    scan_active_ = false;
    scan_todo_.clear();
    next_scan_ = port_.clock->monotonic() + scan_interval_;
    std::string next = std::to_string(static_cast<long long>(std::chrono::duration<double>(scan_interval_).count()));
    if (ok) {
      scans_ok_->inc();
      log(LogLevel::debug, "bucket scan of " + scan_prefix() + " done (" + std::to_string(scan_pages_) +
                               " pages, " + std::to_string(scan_aborted_) + " uploads aborted); next in " + next + " s");
    } else {
      scans_failed_->inc();
      log(LogLevel::warning, "bucket scan for abandoned multipart uploads failed: " + why + "; next scan in " +
                                 next + " s");
    }
    poke();
  }

  void write_pending_manifest() {
    auto [key, body] = pending_manifests_.front();
    waiting_ = true;
    put_manifest(key, body, [this, key = key](bool ok) {
      waiting_ = false;
      pending_manifests_.erase(pending_manifests_.begin());
      (void)buffer_.erase_state(kManifestPrefix + key);
      (void)ok;
      poke();
    });
  }

  // ---- batches -----------------------------------------------------------------------------

  // Nothing to upload now: the time for a due bucket scan.
  void idle_scan() {
    if (scan_due()) start_scan();
  }

  void start_batch() {
    BufferStats st = buffer_.stats();
    if (st.records <= st.parked + st.leased) {
      first_seen_.reset();
      flush_requested_.store(false);
      return idle_scan();
    }
    auto lease = buffer_.lease(cfg_.batch_max_bytes, static_cast<std::size_t>(cfg_.batch_max_records));
    if (!lease) {
      set_last_error("lease failed: " + lease.error().message);
      log(LogLevel::error, "lease failed: " + lease.error().message);
      return idle_scan();
    }
    if (lease->empty()) {
      first_seen_.reset();
      flush_requested_.store(false);
      return idle_scan();
    }
    MonoTime now = port_.clock->monotonic();
    if (!first_seen_) first_seen_ = now;
    bool flush = flush_requested_.exchange(false);
    bool large = false;
    std::int64_t oldest = std::numeric_limits<std::int64_t>::max();
    for (const auto& r : lease->records()) {
      large = large || r.payload_size >= cfg_.large_record_bytes;
      oldest = std::min(oldest, r.meta.end_ns > 0 ? r.meta.end_ns : r.meta.start_ns);
    }
    std::int64_t wall_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(port_.clock->wall().time_since_epoch()).count();
    double age = static_cast<double>(wall_ns - oldest) / 1e9;
    double waited = std::chrono::duration<double>(now - *first_seen_).count();
    bool full = lease->payload_bytes() >= cfg_.target_object_bytes;
    if (!flush && !large && !full && age < cfg_.max_object_age_s && waited < cfg_.max_object_age_s) {
      lease->release();
      return idle_scan();  // not enough yet: wait for size or age
    }
    first_seen_.reset();
    batch_ = std::make_unique<Batch>();
    batch_->lease = std::move(*lease);
    batch_->gen = ++batch_gen_;
    plan_objects(*batch_);
    update_status();
    next_object();
  }

  void plan_objects(Batch& b) {
    const auto& recs = b.lease.records();
    std::map<std::tuple<std::string, std::string, std::string>, ObjectPlan> open;
    auto device_of = [&](const LeasedRecord& r) {
      auto it = r.meta.metadata.find("device");
      return it != r.meta.metadata.end() && !it->second.empty() ? it->second : cfg_.device_id;
    };
    auto close_plan = [&](ObjectPlan&& p) {
      if (p.segs.empty()) return;
      b.objects.push_back(std::move(p));
    };
    for (std::size_t i = 0; i < recs.size(); ++i) {
      const auto& r = recs[i];
      std::string device = device_of(r);
      std::string date = utc_format(r.meta.start_ns, "%Y-%m-%d");
      Segment s{i, r.id, 0, r.payload_size, r.chunked};
      if (r.payload_size >= cfg_.large_record_bytes) {
        ObjectPlan p;
        p.stream = r.meta.stream;
        p.device = device;
        p.date = date;
        p.segs.push_back(s);
        close_plan(std::move(p));
        continue;
      }
      auto gk = std::make_tuple(r.meta.stream, date, device);
      auto& p = open[gk];
      if (!p.segs.empty() && p.size + r.payload_size > cfg_.target_object_bytes) {
        close_plan(std::move(p));
        p = ObjectPlan{};
      }
      p.stream = r.meta.stream;
      p.device = device;
      p.date = date;
      p.segs.push_back(s);
      p.size += r.payload_size;
    }
    for (auto& [k, p] : open) close_plan(std::move(p));
    // Deterministic layout: records by id inside an object, objects by first id.
    for (auto& p : b.objects) {
      std::sort(p.segs.begin(), p.segs.end(), [](const Segment& a, const Segment& c) { return a.id < c.id; });
      std::uint64_t off = 0;
      p.start_ns = std::numeric_limits<std::int64_t>::max();
      p.end_ns = std::numeric_limits<std::int64_t>::min();
      std::set<std::string> types;
      for (auto& s : p.segs) {
        s.offset = off;
        off += s.size;
        const auto& m = recs[s.index].meta;
        p.start_ns = std::min(p.start_ns, m.start_ns);
        p.end_ns = std::max(p.end_ns, m.end_ns);
        types.insert(m.content_type);
      }
      p.size = off;
      p.content_type = types.size() == 1 && !types.begin()->empty() ? *types.begin() : "application/octet-stream";
      p.key = render_key(p, recs[p.segs.front().index]);
    }
    // Objects keep the lease's order (priority first); the manifest is named after the
    // batch's smallest record id.
    if (!b.objects.empty()) {
      std::size_t first_index = b.objects.front().segs.front().index;
      for (const auto& p : b.objects)
        if (p.segs.front().id < recs[first_index].id) first_index = p.segs.front().index;
      const auto& first = recs[first_index];
      char seq[32];
      std::snprintf(seq, sizeof seq, "%016llu", static_cast<unsigned long long>(first.id));
      b.manifest_key = (cfg_.prefix.empty() ? "" : cfg_.prefix + "/") + "_manifests/device=" +
                       key_segment(b.objects.front().device) + "/date=" + utc_format(first.meta.start_ns, "%Y-%m-%d") +
                       "/" + start_time_string(first.meta.start_ns) + "-" + seq + ".jsonl";
    }
  }

  std::string render_key(const ObjectPlan& p, const LeasedRecord& first) {
    char seq[32];
    std::snprintf(seq, sizeof seq, "%016llu", static_cast<unsigned long long>(first.id));
    std::map<std::string, std::string> v = {
        {"prefix", cfg_.prefix},
        {"stream", p.stream.empty() ? "default" : key_segment(p.stream)},
        {"YYYY-MM-DD", utc_format(first.meta.start_ns, "%Y-%m-%d")},
        {"YYYY", utc_format(first.meta.start_ns, "%Y")},
        {"MM", utc_format(first.meta.start_ns, "%m")},
        {"DD", utc_format(first.meta.start_ns, "%d")},
        {"HH", utc_format(first.meta.start_ns, "%H")},
        {"device", key_segment(p.device)},
        {"start_time", start_time_string(first.meta.start_ns)},
        {"seq", seq},
        {"ext", ext_for(p.content_type)},
        {"event_id", first.meta.event_id.empty() ? std::string(seq) : key_segment(first.meta.event_id)},
    };
    std::string out;
    const std::string& t = cfg_.key_template;
    for (std::size_t i = 0; i < t.size(); ++i) {
      if (t[i] == '{') {
        auto e = t.find('}', i);
        out += v[t.substr(i + 1, e - i - 1)];
        i = e;
      } else {
        out.push_back(t[i]);
      }
    }
    // An empty prefix must not leave a leading or doubled '/'.
    std::string clean;
    for (char c : out) {
      if (c == '/' && (clean.empty() || clean.back() == '/')) continue;
      clean.push_back(c);
    }
    if (clean.size() > 1024) clean.resize(1024);  // S3's key limit (bytes)
    return clean;
  }

  // Reads object bytes [off, off+n) from the lease / buffer.
  Result<std::size_t> read_object(const Batch& b, const ObjectPlan& p, std::uint64_t off, char* out,
                                  std::size_t n) {
    std::size_t done = 0;
    auto r = visit_object(b, p, off, n, [&](const char* d, std::size_t k) {
      std::memcpy(out + done, d, k);
      done += k;
    });
    if (!r) return std::move(r).error();
    return done;
  }

  struct Digests {
    std::string md5_raw;
    std::string sha256_hex;
  };

  // Calls f(data, n) over object bytes [off, off+len), one object_piece at a time.
  template <class F>
  Result<void> visit_object(const Batch& b, const ObjectPlan& p, std::uint64_t off, std::uint64_t len, F&& f) {
    for (std::uint64_t done = 0; done < len;) {
      auto piece = object_piece(b, p, off + done, len - done, /*may_copy=*/true);
      if (!piece) return std::move(piece).error();
      f(piece->data(), piece->size());
      done += piece->size();
    }
    return {};
  }

  // First pass over LMDB: MD5 (always) and SHA-256 (when the payload is signed).
  Result<Digests> digest(const Batch& b, const ObjectPlan& p, std::uint64_t off, std::uint64_t len) {
    detail::Digest md5(detail::Digest::Kind::md5);
    std::optional<detail::Digest> sha;
    if (!cfg_.unsigned_payload) sha.emplace(detail::Digest::Kind::sha256);
    auto r = visit_object(b, p, off, len, [&](const char* d, std::size_t n) {
      md5.update(d, n);
      if (sha) sha->update(d, n);
    });
    if (!r) return std::move(r).error();
    Digests d;
    d.md5_raw = md5.finish();
    d.sha256_hex = sha ? detail::to_hex(sha->finish()) : "UNSIGNED-PAYLOAD";
    return d;
  }

  // MD5 + SHA-256 of 64 KiB take ~0.25 ms here: a handler of that length keeps the host's poll()
  // within its budget; the old io_chunk_size (256 KiB) slices took ~1 ms and overran it. With
  // several parts hashed in SIMD lanes a slice is this much of each part (~0.15 ms for eight).
  static constexpr std::uint64_t kDigestSliceBytes = 64u << 10;
  static constexpr std::size_t kAheadLanes = detail::Md5Lanes::kLanes;

  // Digest-ahead: while parts are on the wire, the digests of the next parts to send are
  // computed one kDigestSliceBytes slice per posted handler (interleaved with the I/O
  // completions), so a connection that frees up starts its next part at once instead of after
  // a whole-part hash pass that also stalls every other connection's writes. Up to eight parts
  // of a multipart upload are hashed together, one per SIMD lane (Md5Lanes: MD5 is most of the
  // uploader's CPU, and eight lanes cost about what one does); a single range (a PutObject, or
  // an object of small records) uses OpenSSL's MD5.
  struct DigestAhead {
    std::uint64_t gen = 0;
    const ObjectPlan* plan = nullptr;
    std::size_t lanes = 0;
    std::array<std::uint64_t, kAheadLanes> off{}, len{};
    std::uint64_t pos = 0, longest = 0;  ///< bytes hashed of every range (lockstep)
    std::optional<detail::Digest> md5;   ///< lanes == 1
    std::array<std::optional<detail::Digest>, kAheadLanes> sha;
    std::function<void()> on_done;  ///< a PutObject waiting for its digests (see put_object)
  };
  DigestAhead ahead_;
  std::uint64_t ahead_token_ = 0;
  std::unique_ptr<detail::Md5Lanes> md5_lanes_;  // reused: lane states live here while hashing
  // Finished digests of ranges not sent yet (multipart), by object offset.
  std::map<std::uint64_t, Digests> ready_;
  std::uint64_t ready_gen_ = 0;
  const ObjectPlan* ready_plan_ = nullptr;
  std::uint64_t lanes_unusable_gen_ = ~std::uint64_t{0};  // a compressed chunk: this batch hashes part by part

  bool ahead_on(const ObjectPlan& p) const { return ahead_.plan == &p && batch_ && ahead_.gen == batch_->gen; }
  bool ready_on(const ObjectPlan& p) const { return ready_plan_ == &p && batch_ && ready_gen_ == batch_->gen; }

  void start_digest_ahead(const ObjectPlan& p, const std::vector<std::pair<std::uint64_t, std::uint64_t>>& ranges) {
    if (!batch_ || ranges.empty()) return;
    ahead_ = DigestAhead{};
    ahead_.gen = batch_->gen;
    ahead_.plan = &p;
    ahead_.lanes = std::min(ranges.size(), kAheadLanes);
    for (std::size_t i = 0; i < ahead_.lanes; ++i) {
      ahead_.off[i] = ranges[i].first;
      ahead_.len[i] = ranges[i].second;
      ahead_.longest = std::max(ahead_.longest, ranges[i].second);
      if (!cfg_.unsigned_payload) ahead_.sha[i].emplace(detail::Digest::Kind::sha256);
    }
    if (ahead_.lanes == 1) {
      ahead_.md5.emplace(detail::Digest::Kind::md5);
    } else {
      if (!md5_lanes_) md5_lanes_ = std::make_unique<detail::Md5Lanes>();
      md5_lanes_->clear();
    }
    std::uint64_t token = ++ahead_token_;
    net::post(ioc_, weak([this, token]() { digest_ahead_step(token); }));
  }

  // Hashes up to `max` more bytes of each range ahead; when all are done their digests move to
  // ready_. False when it cannot go on (dropped; the part's own pass reports the error).
  bool digest_ahead_advance(std::uint64_t max) {
    const std::uint64_t end = std::min(ahead_.longest, ahead_.pos + max);
    Result<void> r;
    if (ahead_.lanes == 1) {
      r = visit_object(*batch_, *ahead_.plan, ahead_.off[0] + ahead_.pos, end - ahead_.pos,
                       [&](const char* d, std::size_t k) {
                         ahead_.md5->update(d, k);
                         if (ahead_.sha[0]) ahead_.sha[0]->update(d, k);
                       });
      if (r) ahead_.pos = end;
    }
    while (r && ahead_.lanes > 1 && ahead_.pos < end) {
      // Each lane's next contiguous piece; all lanes advance by the shortest.
      std::array<detail::Md5Lanes::Span, kAheadLanes> spans{};
      std::uint64_t step = end - ahead_.pos;
      for (std::size_t i = 0; i < ahead_.lanes && r; ++i) {
        if (ahead_.pos >= ahead_.len[i]) continue;
        std::uint64_t want = std::min(end, ahead_.len[i]) - ahead_.pos;
        auto piece = object_piece(*batch_, *ahead_.plan, ahead_.off[i] + ahead_.pos, want, /*may_copy=*/false);
        if (!piece) {
          r = std::move(piece).error();
          break;
        }
        spans[i] = {piece->data(), piece->size()};
        step = std::min<std::uint64_t>(step, piece->size());
      }
      if (!r) break;
      for (std::size_t i = 0; i < ahead_.lanes; ++i) {
        if (!spans[i].data) continue;
        spans[i].size = static_cast<std::size_t>(step);
        if (ahead_.sha[i]) ahead_.sha[i]->update(spans[i].data, spans[i].size);
      }
      md5_lanes_->update(spans);
      ahead_.pos += step;
    }
    if (!r) {
      if (r.error().is(errc::unsupported)) lanes_unusable_gen_ = ahead_.gen;
      ahead_ = DigestAhead{};
      return false;
    }
    if (ahead_.pos < ahead_.longest) return true;
    if (!ready_on(*ahead_.plan)) {
      ready_.clear();
      ready_gen_ = ahead_.gen;
      ready_plan_ = ahead_.plan;
    }
    for (std::size_t i = 0; i < ahead_.lanes; ++i) {
      Digests d;
      d.md5_raw = ahead_.lanes == 1 ? ahead_.md5->finish() : md5_lanes_->finish(i);
      d.sha256_hex = ahead_.sha[i] ? detail::to_hex(ahead_.sha[i]->finish()) : "UNSIGNED-PAYLOAD";
      ready_[ahead_.off[i]] = std::move(d);
    }
    auto waiting = std::move(ahead_.on_done);
    ahead_ = DigestAhead{};
    ahead_.on_done = std::move(waiting);
    return true;
  }

  // One contiguous view of object bytes at `off` (at most `max`, never empty): straight from the
  // lease's mapped pages where it can (a chunked record one stored chunk at a time). Bytes stored
  // compressed in chunks are copied into scratch_ (io_chunk_bytes at most; the view lasts until
  // the next call) when `may_copy`, else `unsupported`: the lanes hold several views at once.
  Result<std::string_view> object_piece(const Batch& b, const ObjectPlan& p, std::uint64_t off, std::uint64_t max,
                                        bool may_copy) {
    auto it = std::upper_bound(p.segs.begin(), p.segs.end(), off,
                               [](std::uint64_t o, const Segment& s) { return o < s.offset; });
    if (it == p.segs.begin()) return Error(errc::decode_error, "object " + p.key + ": offset before its start");
    --it;
    while (it != p.segs.end() && off >= it->offset + it->size) ++it;  // skip empty records
    if (it == p.segs.end()) return Error(errc::decode_error, "object " + p.key + " is shorter than its plan");
    std::uint64_t local = off - it->offset;
    auto n = static_cast<std::size_t>(std::min<std::uint64_t>(max, it->size - local));
    auto piece = b.lease.payload_piece(it->index, local, n);
    if (!piece && piece.error().is(errc::unsupported)) {
      if (!it->chunked) {
        piece = b.lease.payload(it->index);  // compressed inline: unpacked once by the lease
        if (piece) piece = piece->substr(static_cast<std::size_t>(local), n);
      } else if (may_copy) {
        if (!scratch_) scratch_.reset(new char[cfg_.io_chunk_bytes]);
        n = std::min<std::size_t>(n, cfg_.io_chunk_bytes);
        auto r = buffer_.read_payload(it->id, local, scratch_.get(), n);
        if (!r) return std::move(r).error();
        if (*r != n) return Error(errc::decode_error, "record " + std::to_string(it->id) + " is shorter than its size");
        return std::string_view(scratch_.get(), n);
      }
    }
    if (piece && piece->empty()) return Error(errc::decode_error, "object " + p.key + " is shorter than its plan");
    return piece;
  }

  void digest_ahead_step(std::uint64_t token) {
    if (token != ahead_token_ || !ahead_.plan || !batch_ || batch_->gen != ahead_.gen) return;
    std::function<void()> waiting = ahead_.on_done;  // survives the reset a read error does
    if (!digest_ahead_advance(kDigestSliceBytes)) {
      if (waiting) waiting();  // the waiter hashes again and reports the error
      return;
    }
    if (ahead_.plan) {
      net::post(ioc_, weak([this, token]() { digest_ahead_step(token); }));
      return;
    }
    if (ahead_.on_done) {
      auto done = std::move(ahead_.on_done);
      ahead_.on_done = nullptr;
      done();
    }
  }

  // The range's digests: ready from the digest-ahead, or finished now when the digest-ahead is
  // on it, else a full pass.
  Result<Digests> part_digest(const ObjectPlan& p, std::uint64_t off, std::uint64_t len) {
    if (ahead_on(p)) {
      bool covers = false;
      for (std::size_t i = 0; i < ahead_.lanes; ++i) covers |= ahead_.off[i] == off && ahead_.len[i] == len;
      if (covers) {
        ++ahead_token_;  // the posted step is stale now
        while (ahead_.plan && digest_ahead_advance(ahead_.longest)) {
        }
      }
    }
    if (ready_on(p)) {
      auto it = ready_.find(off);
      if (it != ready_.end()) {
        Digests d = std::move(it->second);
        ready_.erase(it);
        return d;
      }
    }
    return digest(*batch_, p, off, len);
  }

  bool range_hashed_or_hashing(const ObjectPlan& p, std::uint64_t off) const {
    if (ready_on(p) && ready_.count(off)) return true;
    if (ahead_on(p))
      for (std::size_t i = 0; i < ahead_.lanes; ++i)
        if (ahead_.off[i] == off) return true;
    return false;
  }

  HeaderList object_headers(const Batch& b, const ObjectPlan& p) {
    const auto& recs = b.lease.records();
    std::set<std::string> triggers;
    std::string events;
    for (const auto& s : p.segs) {
      for (const auto& t : recs[s.index].meta.trigger_ids) triggers.insert(t);
      if (!recs[s.index].meta.event_id.empty()) {
        if (!events.empty()) events += ",";
        events += recs[s.index].meta.event_id;
      }
    }
    std::string trig;
    for (const auto& t : triggers) trig += (trig.empty() ? "" : ",") + t;
    HeaderList h = {
        {"content-type", p.content_type},
        {"x-amz-meta-fleetpipe-sdk-version", kVersion},
        {"x-amz-meta-fleetpipe-stream", header_safe(p.stream, 128)},
        {"x-amz-meta-fleetpipe-device", header_safe(p.device, 128)},
        {"x-amz-meta-fleetpipe-record-count", std::to_string(p.segs.size())},
        {"x-amz-meta-fleetpipe-start-ns", std::to_string(p.start_ns)},
        {"x-amz-meta-fleetpipe-end-ns", std::to_string(p.end_ns)},
        {"x-amz-meta-fleetpipe-first-record-id", std::to_string(p.segs.front().id)},
        {"x-amz-meta-fleetpipe-last-record-id", std::to_string(p.segs.back().id)},
        {"x-amz-meta-fleetpipe-trigger-ids", header_safe(trig, 512)},
    };
    if (!events.empty()) h.emplace_back("x-amz-meta-fleetpipe-event-ids", header_safe(events, 512));
    return h;
  }

  void next_object() {
    if (!batch_) return;
    Batch& b = *batch_;
    if (b.next >= b.objects.size()) return finish_batch();
    ObjectPlan& p = b.objects[b.next];
    if (p.size >= cfg_.multipart_threshold_bytes) return start_multipart(p);
    put_object(p);
  }

  void object_done(ObjectPlan& p, const std::string& etag, bool multipart, std::uint32_t parts) {
    Batch& b = *batch_;
    p.done = true;
    p.etag = etag;
    p.parts = parts;
    uploads_ok_->inc();
    const auto& recs = b.lease.records();
    json line = {{"key", p.key},
                 {"bucket", cfg_.bucket},
                 {"size", p.size},
                 {"etag", etag},
                 {"content_type", p.content_type},
                 {"stream", p.stream},
                 {"device", p.device},
                 {"record_count", p.segs.size()},
                 {"start_ns", p.start_ns},
                 {"end_ns", p.end_ns},
                 {"multipart", multipart},
                 {"parts", parts},
                 {"sdk_version", kVersion}};
    json rs = json::array();
    for (const auto& s : p.segs) {
      const auto& m = recs[s.index].meta;
      rs.push_back({{"id", s.id},
                    {"event_id", m.event_id},
                    {"offset", s.offset},
                    {"size", s.size},
                    {"start_ns", m.start_ns},
                    {"end_ns", m.end_ns},
                    {"priority", m.priority},
                    {"trigger_ids", m.trigger_ids},
                    {"content_type", m.content_type},
                    {"metadata", m.metadata}});
    }
    line["records"] = std::move(rs);
    b.manifest_lines += line.dump() + "\n";
    // Manifest lines first (synced), then the ack: a crash in between re-uploads the object
    // under the same key; a crash after the ack still leaves the manifest to be written.
    if (cfg_.write_manifest) (void)buffer_.put_state(kManifestPrefix + b.manifest_key, b.manifest_lines);
    auto ids = p.ids();
    auto ack = buffer_.ack(ids);
    if (!ack) {
      log(LogLevel::error, "ack failed after uploading " + p.key + ": " + ack.error().message);
    } else {
      records_acked_->inc(ids.size());
    }
    with_status([&](UploaderStatus& s) {
      s.objects_uploaded++;
      s.records_acked += ids.size();
    });
    log(LogLevel::debug, "uploaded " + p.key + " (" + std::to_string(p.size) + " bytes, " +
                             std::to_string(ids.size()) + " records)");
    b.next++;
    poke_next();
  }

  void object_failed_permanently(ObjectPlan& p, const detail::S3Failure& f) {
    new_generation();  // sibling parts of a multipart upload stop here
    Batch& b = *batch_;
    p.failed = true;
    uploads_failed_->inc();
    if (p.size >= cfg_.multipart_threshold_bytes) current_upload_id_.clear();  // parked: its state ages out
    std::string reason = f.s3_code.empty() ? detail::class_name(f.cls) : f.s3_code;
    auto ids = p.ids();
    auto r = buffer_.park(ids, reason);
    metrics_->counter("fleetpipe_uploader_records_parked_total",
                      "Records parked after a permanent upload error, by reason",
                      {{"reason", reason}}).inc(ids.size());
    with_status([&](UploaderStatus& s) { s.records_parked += ids.size(); });
    std::string msg = "permanent error uploading " + p.key + ": " + f.message + "; " +
                      std::to_string(ids.size()) + " records parked (reason " + reason + ")";
    if (!r) msg += "; park failed: " + r.error().message;
    set_last_error(msg);
    log(LogLevel::error, msg);
    b.next++;
    poke_next();
  }

  // Retries ran out or a non-record-specific failure (TLS): give the records back, back off.
  void batch_failed(const detail::S3Failure& f, bool nack) {
    std::string msg = "upload failed (" + std::string(detail::class_name(f.cls)) + "): " + f.message +
                      (nack ? "; records returned to the buffer" : "");
    set_last_error(msg);
    log(LogLevel::error, msg);
    drop_batch(nack);
    backoff_until_ = port_.clock->monotonic() +
                     std::chrono::nanoseconds(static_cast<std::int64_t>(cfg_.retry_max_delay_s * 1e9));
  }

  void poke_next() {
    net::post(ioc_, weak([this, g = batch_ ? batch_->gen : 0]() {
      if (batch_ && batch_->gen == g) next_object();
    }));
  }

  void drop_batch(bool nack) {
    cancel_all();
    waiting_ = false;
    if (!batch_) return;
    if (cfg_.write_manifest && !batch_->manifest_lines.empty()) {
      // Objects already delivered keep their manifest: it is written before the next batch.
      pending_manifests_.emplace_back(batch_->manifest_key, batch_->manifest_lines);
    }
    if (nack) {
      std::vector<RecordId> ids;
      for (const auto& p : batch_->objects)
        if (!p.done && !p.failed)
          for (auto id : p.ids()) ids.push_back(id);
      if (!ids.empty()) {
        (void)buffer_.nack(ids);
        records_nacked_->inc(ids.size());
      }
    }
    batch_->lease.release();
    batch_.reset();
    ++batch_gen_;
    update_status();
  }

  void finish_batch() {
    Batch& b = *batch_;
    if (!cfg_.write_manifest || b.manifest_lines.empty()) {
      if (cfg_.write_manifest) (void)buffer_.erase_state(kManifestPrefix + b.manifest_key);
      drop_batch(false);
      poke();
      return;
    }
    auto key = b.manifest_key;
    put_manifest(key, b.manifest_lines, [this, key, g = b.gen](bool) {
      (void)buffer_.erase_state(kManifestPrefix + key);
      if (batch_ && batch_->gen == g) {
        batch_->manifest_lines.clear();  // written (or counted as failed): not pending
        drop_batch(false);
      }
      poke();
    });
  }

  void put_manifest(const std::string& key, const std::string& body, std::function<void(bool)> done) {
    S3Request r;
    r.method = "PUT";
    r.key = key;
    r.body_inline = body;
    r.headers = {{"content-type", "application/x-ndjson"},
                 {"content-md5", detail::base64_encode(detail::md5_raw(body))},
                 {"x-amz-meta-fleetpipe-sdk-version", kVersion}};
    r.payload_sha256 = cfg_.unsigned_payload ? "UNSIGNED-PAYLOAD" : sha256_hex(body);
    send(std::move(r), batch_ ? batch_->gen : 0, [this, key, done](S3Outcome o) {
      if (o.ok) {
        manifests_ok_->inc();
      } else {
        manifests_failed_->inc();
        set_last_error("manifest " + key + " not written: " + o.failure.message);
        log(LogLevel::error, "manifest " + key + " not written: " + o.failure.message);
      }
      done(o.ok);
    });
  }

  // ---- PutObject ---------------------------------------------------------------------------

  void put_object(ObjectPlan& p, bool hashed_ahead = false) {
    Batch& b = *batch_;
    if (!hashed_ahead && p.size > cfg_.io_chunk_bytes) {
      // Hash in kDigestSliceBytes slices between handlers, as for multipart parts, so one large
      // object cannot hold the host's poll() for a whole MD5 pass (tens of ms for 8 MiB).
      start_digest_ahead(p, {{0, p.size}});
      const std::uint64_t gen = b.gen;
      ObjectPlan* pp = &p;
      ahead_.on_done = [this, gen, pp] {
        if (batch_ && batch_->gen == gen) put_object(*pp, true);
      };
      return;
    }
    auto d = hashed_ahead ? part_digest(p, 0, p.size) : digest(b, p, 0, p.size);
    if (!d) return object_unreadable(p, d.error());
    S3Request r;
    r.method = "PUT";
    r.key = p.key;
    r.headers = object_headers(b, p);
    r.headers.emplace_back("content-md5", detail::base64_encode(d->md5_raw));
    r.body_size = p.size;
    r.payload_sha256 = d->sha256_hex;
    Batch* bp = &b;
    ObjectPlan* pp = &p;
    r.reader = [this, bp, pp](std::uint64_t off, char* out, std::size_t n) { return read_object(*bp, *pp, off, out, n); };
    std::string want = detail::to_hex(d->md5_raw);
    send(std::move(r), b.gen, [this, pp, want](S3Outcome o) {
      if (!o.ok) return handle_object_failure(*pp, o.failure);
      std::string etag = strip_quotes(o.response.header("ETag"));
      if (!etag.empty() && etag.find('-') == std::string::npos && etag != want) {
        etag_mismatch_->inc();
        detail::S3Failure f;
        f.cls = FailureClass::bad_digest;
        f.message = "ETag " + etag + " does not match the MD5 sent (" + want + ")";
        return handle_object_failure(*pp, f);
      }
      object_done(*pp, etag, false, 0);
    });
  }

  // A record of the object could not be read back from the buffer: retrying cannot help.
  void object_unreadable(ObjectPlan& p, const Error& e) {
    detail::S3Failure f;
    f.cls = FailureClass::permanent;
    f.s3_code = "unreadable_record";
    f.message = e.message;
    object_failed_permanently(p, f);
  }

  void handle_object_failure(ObjectPlan& p, const detail::S3Failure& f) {
    if (f.cls == FailureClass::tls) return batch_failed(f, false);
    if (detail::is_retryable(f.cls)) return batch_failed(f, true);
    object_failed_permanently(p, f);
  }

  // ---- multipart ---------------------------------------------------------------------------

  void start_multipart(ObjectPlan& p) {
    Batch& b = *batch_;
    auto saved = buffer_.get_state(kMpuPrefix + p.key);
    if (saved && *saved) {
      auto st = mpu_from_json(**saved);
      if (st && st->size == p.size && st->ids == p.ids() && st->part_size >= kMinPart) {
        mpu_ = *st;
        current_upload_id_ = mpu_.upload_id;  // the bucket scan keeps it
        return reconcile_parts(p, std::string());
      }
      if (st) {  // same key, different content: the old upload is useless
        S3Request r;
        r.method = "DELETE";
        r.key = p.key;
        r.query = {{"uploadId", st->upload_id}};
        send(std::move(r), b.gen, [this, pp = &p](S3Outcome) {
          (void)buffer_.erase_state(kMpuPrefix + pp->key);
          start_multipart(*pp);
        });
        return;
      }
      (void)buffer_.erase_state(kMpuPrefix + p.key);
    }
    S3Request r;
    r.method = "POST";
    r.key = p.key;
    r.query = {{"uploads", ""}};
    r.headers = object_headers(b, p);
    send(std::move(r), b.gen, [this, pp = &p](S3Outcome o) {
      if (!o.ok) return handle_object_failure(*pp, o.failure);
      auto id = detail::xml_text(o.response.body, "UploadId");
      if (!id || id->empty()) {
        detail::S3Failure f;
        f.cls = FailureClass::server_error;
        f.message = "CreateMultipartUpload reply has no UploadId";
        return handle_object_failure(*pp, f);
      }
      mpu_ = MultipartState{};
      mpu_.upload_id = *id;
      mpu_.size = pp->size;
      mpu_.part_size = cfg_.part_bytes;
      mpu_.ids = pp->ids();
      mpu_.created_unix = std::chrono::duration_cast<std::chrono::seconds>(port_.clock->wall().time_since_epoch()).count();
      current_upload_id_ = mpu_.upload_id;  // the bucket scan keeps it
      save_mpu(*pp);
      log(LogLevel::debug, "started multipart upload of " + pp->key);
      next_part(*pp);
    });
  }

  void save_mpu(const ObjectPlan& p) {
    auto r = buffer_.put_state(kMpuPrefix + p.key, to_json(mpu_, p.key).dump());
    if (!r) log(LogLevel::warning, "cannot persist multipart progress of " + p.key + ": " + r.error().message);
  }

  // After a restart: ask the server which parts it has; keep those whose ETag equals our MD5.
  void reconcile_parts(ObjectPlan& p, std::string marker) {
    S3Request r;
    r.method = "GET";
    r.key = p.key;
    r.query = {{"uploadId", mpu_.upload_id}};
    if (!marker.empty()) r.query.emplace_back("part-number-marker", marker);
    send(std::move(r), batch_->gen, [this, pp = &p, first = marker.empty()](S3Outcome o) {
      ObjectPlan& p = *pp;
      if (!o.ok) {
        if (o.failure.cls == FailureClass::upload_gone || o.failure.status == 404) {
          log(LogLevel::warning, "multipart upload of " + p.key + " is gone on the server; starting over");
          (void)buffer_.erase_state(kMpuPrefix + p.key);
          return start_multipart(p);
        }
        return handle_object_failure(p, o.failure);
      }
      if (first) {
        mpu_.parts.clear();
        resumed_->inc();
        with_status([](UploaderStatus& s) { s.multipart_resumed++; });
      }
      for (auto part : detail::xml_blocks(o.response.body, "Part")) {
        auto n = std::strtoul(detail::xml_text(part, "PartNumber").value_or("0").c_str(), nullptr, 10);
        std::string etag = strip_quotes(detail::xml_text(part, "ETag").value_or(""));
        std::uint64_t size = std::strtoull(detail::xml_text(part, "Size").value_or("0").c_str(), nullptr, 10);
        if (n == 0 || n > mpu_.part_count()) continue;
        std::uint64_t off = (n - 1) * mpu_.part_size;
        std::uint64_t want = std::min<std::uint64_t>(mpu_.part_size, p.size - off);
        if (size != want) continue;
        auto d = digest(*batch_, p, off, want);
        if (d && detail::to_hex(d->md5_raw) == etag) mpu_.parts[static_cast<std::uint32_t>(n)] = etag;
      }
      if (detail::xml_text(o.response.body, "IsTruncated").value_or("false") == "true") {
        return reconcile_parts(p, detail::xml_text(o.response.body, "NextPartNumberMarker").value_or(""));
      }
      save_mpu(p);
      log(LogLevel::info, "resumed multipart upload " + mpu_.upload_id + " of " + p.key + ": " +
                              std::to_string(mpu_.parts.size()) + " of " +
                              std::to_string(mpu_.part_count()) + " parts already stored");
      next_part(p);
    });
  }

  // Keeps up to max_concurrent_requests parts in flight, one per client slot; completes the
  // upload when every part is stored.
  void next_part(ObjectPlan& p) {
    const std::uint64_t gen = batch_->gen;
    for (std::size_t ci = 0; ci < clients_.size(); ++ci) {
      if (slot_part_[ci] != 0) continue;
      std::uint32_t n = 1;
      while (n <= mpu_.part_count() && (mpu_.parts.count(n) || inflight_parts_.count(n))) ++n;
      if (n > mpu_.part_count()) break;
      dispatch_part(p, n, ci);
      if (!batch_ || batch_->gen != gen) return;  // the object failed meanwhile
    }
    if (inflight_parts_.empty() && mpu_.parts.size() == mpu_.part_count()) return complete_multipart(p);
    // Hash the next parts ahead, several at once, while half a batch of digests is still ready.
    if (ahead_on(p) || (ready_on(p) && ready_.size() > kAheadLanes / 2)) return;
    const bool lanes = lanes_unusable_gen_ != batch_->gen && detail::Md5Lanes::available() != detail::Md5Lanes::Simd::none;
    const std::size_t want = lanes ? kAheadLanes : 1;
    std::vector<std::pair<std::uint64_t, std::uint64_t>> ranges;
    for (std::uint32_t n = 1; n <= mpu_.part_count() && ranges.size() < want; ++n) {
      std::uint64_t off = (n - 1) * mpu_.part_size;
      if (mpu_.parts.count(n) || inflight_parts_.count(n) || range_hashed_or_hashing(p, off)) continue;
      ranges.emplace_back(off, std::min<std::uint64_t>(mpu_.part_size, p.size - off));
    }
    start_digest_ahead(p, ranges);
  }

  void dispatch_part(ObjectPlan& p, std::uint32_t n, std::size_t ci) {
    std::uint64_t off = (n - 1) * mpu_.part_size;
    std::uint64_t len = std::min<std::uint64_t>(mpu_.part_size, p.size - off);
    auto d = part_digest(p, off, len);
    if (!d) return object_unreadable(p, d.error());
    S3Request r;
    r.method = "PUT";
    r.key = p.key;
    r.query = {{"partNumber", std::to_string(n)}, {"uploadId", mpu_.upload_id}};
    r.headers = {{"content-md5", detail::base64_encode(d->md5_raw)}};
    r.body_size = len;
    r.payload_sha256 = d->sha256_hex;
    Batch* bp = batch_.get();
    ObjectPlan* pp = &p;
    r.reader = [this, bp, pp, off](std::uint64_t o, char* out, std::size_t k) {
      return read_object(*bp, *pp, off + o, out, k);
    };
    std::string want = detail::to_hex(d->md5_raw);
    slot_part_[ci] = n;
    inflight_parts_.insert(n);
    send(std::move(r), batch_->gen, [this, pp, n, want, ci](S3Outcome o) {
      ObjectPlan& p = *pp;
      slot_part_[ci] = 0;
      inflight_parts_.erase(n);
      if (!o.ok) {
        if (o.failure.cls == FailureClass::upload_gone) {
          new_generation();
          (void)buffer_.erase_state(kMpuPrefix + p.key);
          return start_multipart(p);
        }
        return handle_object_failure(p, o.failure);
      }
      std::string etag = strip_quotes(o.response.header("ETag"));
      if (etag != want) {
        etag_mismatch_->inc();
        detail::S3Failure f;
        f.cls = FailureClass::bad_digest;
        f.message = "part " + std::to_string(n) + " ETag " + etag + " does not match its MD5 " + want;
        return handle_object_failure(p, f);
      }
      // Not persisted per part: after a restart ListParts is the authority (reconcile_parts), so
      // a synced write here would only cost an fsync per part on the event loop.
      mpu_.parts[n] = etag;
      log(LogLevel::debug, "stored part " + std::to_string(n) + "/" + std::to_string(mpu_.part_count()) +
                               " of multipart upload " + mpu_.upload_id + " (" + p.key + ")");
      next_part(p);
    }, 1, ci);
  }

  void complete_multipart(ObjectPlan& p) {
    std::string body = "<CompleteMultipartUpload>";
    std::string concat;
    for (const auto& [n, e] : mpu_.parts) {
      body += "<Part><PartNumber>" + std::to_string(n) + "</PartNumber><ETag>\"" + e + "\"</ETag></Part>";
      for (std::size_t i = 0; i + 1 < e.size(); i += 2) {
        concat.push_back(static_cast<char>(std::stoi(e.substr(i, 2), nullptr, 16)));
      }
    }
    body += "</CompleteMultipartUpload>";
    std::string want = detail::to_hex(detail::md5_raw(concat)) + "-" + std::to_string(mpu_.parts.size());
    S3Request r;
    r.method = "POST";
    r.key = p.key;
    r.query = {{"uploadId", mpu_.upload_id}};
    r.headers = {{"content-type", "application/xml"}};
    r.body_inline = body;
    send(std::move(r), batch_->gen, [this, pp = &p, want](S3Outcome o) {
      ObjectPlan& p = *pp;
      if (!o.ok) {
        if (o.failure.cls == FailureClass::upload_gone) {
          (void)buffer_.erase_state(kMpuPrefix + p.key);
          return start_multipart(p);
        }
        return handle_object_failure(p, o.failure);
      }
      std::string etag = strip_quotes(detail::xml_text(o.response.body, "ETag").value_or(""));
      if (!etag.empty() && etag != want) {
        etag_mismatch_->inc();
        log(LogLevel::warning, "multipart ETag of " + p.key + " is " + etag + ", expected " + want);
      }
      std::uint32_t parts = static_cast<std::uint32_t>(mpu_.parts.size());
      log(LogLevel::info, "completed multipart upload " + mpu_.upload_id + " of " + p.key);
      (void)buffer_.erase_state(kMpuPrefix + p.key);
      current_upload_id_.clear();
      object_done(p, etag.empty() ? want : etag, true, parts);
    });
  }

  // ---- requests with retries ---------------------------------------------------------------

  void send(S3Request req, std::uint64_t gen, std::function<void(S3Outcome)> done, std::uint32_t attempt = 1,
            std::size_t ci = 0) {
    auto req_copy = req;
    clients_[ci]->async_send(std::move(req), weak([this, req = std::move(req_copy), gen, done, attempt, ci](S3Outcome o) mutable {
      if (gen != 0 && (!batch_ || batch_->gen != gen)) return;  // batch dropped meanwhile
      if (o.ok) return done(std::move(o));
      const auto cls = o.failure.cls;
      if (cls == FailureClass::cancelled && o.failure.status == 0 && o.failure.message.empty()) return;
      failed_by_class_[static_cast<int>(cls)]->inc();
      if (cls == FailureClass::clock_skew && o.failure.server_time && attempt < cfg_.max_attempts) {
        double offset = std::chrono::duration<double>(*o.failure.server_time - port_.clock->wall()).count();
        clock_offset_s_ = offset;
        clock_offset_gauge_->set(offset);
        log(LogLevel::warning, "server clock differs by " + std::to_string(static_cast<long long>(offset)) +
                                   " s (RequestTimeTooSkewed); signing with the corrected time");
        retried_by_class_[static_cast<int>(cls)]->inc();
        with_status([](UploaderStatus& s) { s.retries++; });
        return send(std::move(req), gen, std::move(done), attempt + 1, ci);
      }
      bool retry = detail::is_retryable(cls) && cls != FailureClass::upload_gone && attempt < cfg_.max_attempts;
      if (!retry) return done(std::move(o));
      retried_by_class_[static_cast<int>(cls)]->inc();
      with_status([](UploaderStatus& s) { s.retries++; });
      double cap = std::min(cfg_.retry_max_delay_s, cfg_.retry_base_delay_s * std::pow(2.0, attempt - 1));
      double delay = std::uniform_real_distribution<double>(0, cap)(rng_);  // full jitter
      log(LogLevel::warning, "request failed (" + std::string(detail::class_name(cls)) + ": " +
                                 o.failure.message + "); retry " + std::to_string(attempt) + " in " +
                                 std::to_string(delay) + " s");
      waiting_ = true;
      auto timer = std::make_shared<net::steady_timer>(ioc_);
      retry_timers_.push_back(timer);
      timer->expires_after(std::chrono::nanoseconds(static_cast<std::int64_t>(delay * 1e9)));
      timer->async_wait(weak([this, timer, req = std::move(req), gen, done = std::move(done), attempt, ci](
                                 boost::system::error_code ec) mutable {
        retry_timers_.erase(std::remove_if(retry_timers_.begin(), retry_timers_.end(),
                                           [](const std::weak_ptr<net::steady_timer>& w) { return w.expired(); }),
                            retry_timers_.end());
        if (ec) return;
        waiting_ = false;
        if (gen != 0 && (!batch_ || batch_->gen != gen)) return;
        send(std::move(req), gen, std::move(done), attempt + 1, ci);
      }));
    }));
  }

  net::io_context& ioc_;
  UploaderConfig cfg_;
  Buffer& buffer_;
  Port port_;
  detail::CredentialResolver creds_;
  detail::TokenBucket bucket_;
  net::steady_timer wake_;
  std::vector<std::unique_ptr<detail::S3Client>> clients_;
  std::vector<std::weak_ptr<net::steady_timer>> retry_timers_;
  std::vector<std::uint32_t> slot_part_;  // part number per client slot, 0 = free
  std::set<std::uint32_t> inflight_parts_;
  std::mt19937_64 rng_;
  MetricsRegistry* metrics_ = nullptr;

  std::unique_ptr<Batch> batch_;
  std::uint64_t batch_gen_ = 0;
  MultipartState mpu_;
  std::unique_ptr<char[]> scratch_;
  bool waiting_ = false;
  bool stopped_ = false;
  bool startup_pending_ = false;
  std::vector<std::pair<std::string, std::string>> pending_manifests_;
  std::vector<std::pair<std::string, std::string>> abandoned_;
  // Bucket scan (see "bucket scan" above).
  struct ScanCandidate {
    std::string key, upload_id;
    double age_s = 0;
  };
  bool scan_active_ = false;
  bool scan_truncated_ = false;
  std::string scan_key_marker_, scan_upload_id_marker_;
  std::vector<ScanCandidate> scan_todo_;  // one page's uploads older than abandon_after
  std::size_t scan_next_ = 0, scan_aborted_ = 0, scan_pages_ = 0;
  MonoTime next_scan_{};
  std::chrono::nanoseconds scan_interval_{};
  std::string current_upload_id_;  // the multipart upload this uploader is working on
  std::optional<MonoTime> first_seen_;
  MonoTime backoff_until_{};
  MonoTime last_tick_mono_{};
  double clock_offset_s_ = 0;
  std::uint64_t bytes_sent_total_ = 0;

  double base_rate_ = 0;
  std::uint64_t base_burst_ = 0;
  bool paused_host_ = false, paused_network_ = false, paused_schedule_ = false;
  std::atomic<bool> host_paused_{false};
  std::atomic<bool> flush_requested_{false};
  std::mutex ctl_mu_;
  std::optional<std::pair<double, std::uint64_t>> pending_rate_;
  mutable std::mutex status_mu_;
  UploaderStatus status_;

  Counter* failed_by_class_[16] = {};
  Counter* retried_by_class_[16] = {};
  Counter *uploads_ok_, *uploads_failed_, *bytes_sent_, *records_acked_, *records_nacked_;
  Counter *resumed_, *aborted_own_, *aborted_orphan_, *scans_ok_, *scans_failed_;
  Counter *manifests_ok_, *manifests_failed_, *etag_mismatch_;
  Gauge *rate_gauge_, *paused_seconds_, *clock_offset_gauge_;
  std::map<std::string, Counter*> pauses_;
};

// =============================================================================================
// Public facade
// =============================================================================================

struct Uploader::Impl {
  std::unique_ptr<net::io_context> own_ioc;  // null when the host's context is used
  net::io_context* ioc = nullptr;
  std::shared_ptr<Engine> engine;
  ~Impl() {
    if (engine) engine->shutdown();
    engine.reset();
  }
};

struct UploaderFactory {
  static Engine& engine(const Uploader& u) { return *u.impl_->engine; }
  static Result<std::unique_ptr<Uploader>> make(std::unique_ptr<net::io_context> own,
                                                net::io_context& ioc, const UploaderConfig& config,
                                                Buffer& buffer, const Port& port,
                                                MetricsRegistry& metrics) {
    if (config.bucket.empty()) {
      return Error(errc::invalid_config, "/uploader/bucket: must be set", "/uploader/bucket");
    }
    if (config.part_bytes < kMinPart || config.multipart_threshold_bytes < kMinPart) {
      return Error(errc::invalid_config, "/uploader/objects/part_size: must be >= 5 MiB",
                   "/uploader/objects/part_size");
    }
    auto impl = std::make_unique<Uploader::Impl>();
    impl->own_ioc = std::move(own);
    impl->ioc = &ioc;
    impl->engine = std::make_shared<Engine>(ioc, config, buffer, port, metrics);
    auto r = impl->engine->init();
    if (!r) return std::move(r).error();
    return std::unique_ptr<Uploader>(new Uploader(std::move(impl)));
  }
};

namespace detail {
TokenBucket* uploader_token_bucket(Uploader& u) noexcept { return UploaderFactory::engine(u).shaping_bucket(); }
WallTime uploader_signing_wall(const Uploader& u) { return UploaderFactory::engine(u).signing_wall(); }
bool uploader_paused(const Uploader& u) noexcept { return UploaderFactory::engine(u).uploads_paused(); }
}  // namespace detail

Uploader::Uploader(std::unique_ptr<Impl> impl) noexcept : impl_(std::move(impl)) {}
Uploader::~Uploader() = default;

Result<std::unique_ptr<Uploader>> Uploader::create(const UploaderConfig& config, Buffer& buffer,
                                                   const Port& port, MetricsRegistry& metrics) {
  auto ioc = std::make_unique<net::io_context>(1);
  auto& ref = *ioc;
  return UploaderFactory::make(std::move(ioc), ref, config, buffer, port, metrics);
}

Result<std::unique_ptr<Uploader>> create_uploader(boost::asio::io_context& ioc,
                                                  const UploaderConfig& config, Buffer& buffer,
                                                  const Port& port, MetricsRegistry& metrics) {
  return UploaderFactory::make(nullptr, ioc, config, buffer, port, metrics);
}

std::size_t Uploader::poll() {
  if (!impl_->own_ioc) return 0;
  if (impl_->own_ioc->stopped()) impl_->own_ioc->restart();
  return impl_->own_ioc->poll();
}

std::size_t Uploader::run_for(std::chrono::nanoseconds d) {
  if (!impl_->own_ioc) return 0;
  if (impl_->own_ioc->stopped()) impl_->own_ioc->restart();
  return impl_->own_ioc->run_for(d);
}

void Uploader::set_rate(double bps, std::uint64_t burst) { impl_->engine->set_rate(bps, burst); }
void Uploader::pause() { impl_->engine->pause(); }
void Uploader::resume() { impl_->engine->resume(); }
void Uploader::flush() { impl_->engine->flush(); }
void Uploader::shutdown() {
  impl_->engine->shutdown();
  if (impl_->own_ioc) impl_->own_ioc->stop();
}
bool Uploader::idle() const { return impl_->engine->idle(); }
UploaderStatus Uploader::status() const { return impl_->engine->status(); }

}  // namespace fleetpipe
