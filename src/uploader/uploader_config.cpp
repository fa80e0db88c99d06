// Uploader config: "/uploader" in the JSON configuration, checked key by key.
#include <cstdio>

#include "common/config_parsers.hpp"
#include "s3/bucket_layout.hpp"

namespace fleetpipe {

namespace {
constexpr std::uint64_t kMinPart = 5ull << 20;
}  // namespace

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
  c.content_md5 = r.boolean("content_md5", c.content_md5);
  {
    auto o = r.object("objects");
    c.prefix = o.string("prefix", c.prefix);
    while (!c.prefix.empty() && c.prefix.back() == '/') c.prefix.pop_back();
    c.key_template = o.string("key_template", c.key_template);
    if (auto why = detail::BucketLayout::check_template(c.key_template); !why.empty()) {
      o.fail("key_template", why);
    }
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
    c.fault_max_delay_s = s.seconds("fault_max_delay", c.fault_max_delay_s, 0, 86400, true);
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

}  // namespace fleetpipe
