// BucketReader: the cloud-side reader of the bucket layout (docs/bucket-layout.md).
#include "fleetpipe/query.hpp"

#include <fnmatch.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdio>
#include <set>

#include <boost/asio/io_context.hpp>
#include <nlohmann/json.hpp>

#include "common/utc_time.hpp"
#include "s3/bucket_layout.hpp"
#include "s3/credentials.hpp"
#include "s3/request_sender.hpp"
#include "s3/s3_client.hpp"

namespace fleetpipe {

namespace {

using json = nlohmann::json;
constexpr std::uint64_t kRangeChunk = 4u << 20;  // the client refuses bodies above 4 MiB
constexpr std::uint32_t kAttempts = 4;

std::string lower(std::string_view s) {
  std::string out(s);
  for (auto& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::int64_t to_ns(WallTime t) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
}

WallTime from_ns(std::int64_t ns) {
  return WallTime(std::chrono::duration_cast<WallTime::duration>(std::chrono::nanoseconds(ns)));
}

const json* at(const json& j, std::initializer_list<const char*> pointers) {
  for (const char* p : pointers) {
    try {
      const json& v = j.at(json::json_pointer(p));
      if (!v.is_null()) return &v;
    } catch (const json::exception&) {
    }
  }
  return nullptr;
}

double number(const json& j, std::initializer_list<const char*> pointers, double dflt = 0) {
  const json* v = at(j, pointers);
  if (v && v->is_number()) return v->get<double>();
  return dflt;
}

std::string text(const json& j, std::initializer_list<const char*> pointers) {
  const json* v = at(j, pointers);
  if (v && v->is_string()) return v->get<std::string>();
  return {};
}

/// Sum over all series of a metric in a MetricsRegistry::to_json() document; nullopt if absent.
std::optional<double> metric_sum(const json& metrics, const char* name) {
  if (!metrics.is_object()) return std::nullopt;
  auto it = metrics.find(name);
  if (it == metrics.end() || !it->is_object()) return std::nullopt;
  double sum = 0;
  auto series = it->find("series");
  if (series == it->end() || !series->is_array()) return std::nullopt;
  for (const auto& s : *series) {
    auto v = s.find("value");
    if (v != s.end() && v->is_number()) sum += v->get<double>();
  }
  return sum;
}

std::int64_t json_ns(const json& rec, const char* ns_key, const char* time_key) {
  auto it = rec.find(ns_key);
  if (it != rec.end() && it->is_number()) return it->get<std::int64_t>();
  it = rec.find(time_key);
  if (it != rec.end() && it->is_string()) {
    auto t = parse_query_time(it->get<std::string>());
    if (t) return to_ns(*t);
  }
  return 0;
}

std::vector<std::string> split_list(std::string_view s) {
  std::vector<std::string> out;
  std::size_t pos = 0;
  while (pos <= s.size()) {
    auto end = s.find(',', pos);
    if (end == std::string_view::npos) end = s.size();
    std::string item(s.substr(pos, end - pos));
    while (!item.empty() && item.front() == ' ') item.erase(item.begin());
    while (!item.empty() && item.back() == ' ') item.pop_back();
    if (!item.empty()) out.push_back(item);
    pos = end + 1;
  }
  return out;
}

/// Parses one manifest line into entries (a line is one event, or one object with "records").
bool parse_manifest_line(const json& line, const std::string& manifest_key,
                         std::vector<EventEntry>& out) {
  if (!line.is_object()) return false;
  auto one = [&](const json& rec, const json& obj) -> bool {
    EventEntry e;
    auto str = [&](const char* k, const char* alt = nullptr) -> std::string {
      for (const json* src : {&rec, &obj}) {
        for (const char* key : {k, alt}) {
          if (!key) continue;
          auto it = src->find(key);
          if (it != src->end() && it->is_string()) return it->get<std::string>();
        }
      }
      return {};
    };
    auto num = [&](const json& src, const char* k, const char* alt = nullptr) -> std::uint64_t {
      for (const char* key : {k, alt}) {
        if (!key) continue;
        auto it = src.find(key);
        if (it != src.end() && it->is_number_unsigned()) return it->get<std::uint64_t>();
        if (it != src.end() && it->is_number_integer() && it->get<std::int64_t>() >= 0)
          return static_cast<std::uint64_t>(it->get<std::int64_t>());
      }
      return 0;
    };
    e.object_key = str("object_key", "key");
    if (e.object_key.empty()) return false;
    e.offset = num(rec, "offset");
    e.length = num(rec, "length", "size");
    e.stream = str("stream");
    e.device = str("device");
    e.date = detail::key_partition(e.object_key, "date");
    if (e.stream.empty()) e.stream = detail::key_partition(e.object_key, "stream");
    if (e.device.empty()) e.device = detail::key_partition(e.object_key, "device");
    e.event_id = str("event_id");
    e.content_type = str("content_type");
    e.manifest_key = manifest_key;
    for (const json* src : {&rec, &obj}) {
      auto it = src->find("trigger_ids");
      if (it != src->end() && it->is_array()) {
        for (const auto& t : *it)
          if (t.is_string()) e.trigger_ids.push_back(t.get<std::string>());
        break;
      }
    }
    auto p = rec.find("priority");
    if (p != rec.end() && p->is_number_integer()) e.priority = p->get<int>();
    e.start_ns = json_ns(rec, "start_ns", "start_time");
    e.end_ns = json_ns(rec, "end_ns", "end_time");
    auto md = rec.find("metadata");
    if (md != rec.end() && md->is_object()) {
      for (auto it = md->begin(); it != md->end(); ++it) {
        e.metadata[it.key()] = it->is_string() ? it->get<std::string>() : it->dump();
      }
    }
    out.push_back(std::move(e));
    return true;
  };
  auto recs = line.find("records");
  if (recs != line.end() && recs->is_array()) {
    bool any = false;
    for (const auto& r : *recs) any = one(r, line) || any;
    return any;
  }
  return one(line, json::object());
}

struct Heartbeat {
  WallTime time{};
  double backlog_records = 0, backlog_bytes = 0, evicted = 0, bytes_sent = 0, uptime_s = 0;
  std::string sdk, network, last_error;
};

Heartbeat read_heartbeat(const json& doc, WallTime key_t) {
  Heartbeat h;
  h.time = key_t;
  const json* t = at(doc, {"/time"});
  if (t && t->is_string()) {
    if (auto pt = parse_query_time(t->get<std::string>())) h.time = *pt;
  } else if (const json* tn = at(doc, {"/time_unix_ns", "/time_ns"}); tn && tn->is_number()) {
    h.time = from_ns(tn->get<std::int64_t>());
  }
  const json* metrics = at(doc, {"/metrics"});
  json empty = json::object();
  const json& m = metrics ? *metrics : empty;
  h.backlog_records = number(doc, {"/backlog/records"},
                             metric_sum(m, "fleetpipe_buffer_records").value_or(0));
  h.backlog_bytes = number(doc, {"/backlog/bytes"},
                           metric_sum(m, "fleetpipe_buffer_bytes").value_or(0));
  h.evicted = number(doc, {"/buffer/evicted_total"},
                     metric_sum(m, "fleetpipe_buffer_evicted_total").value_or(0));
  h.bytes_sent = number(doc, {"/uploads/bytes_sent", "/uploader/bytes_sent"},
                        metric_sum(m, "fleetpipe_uploader_bytes_sent_total").value_or(0));
  h.uptime_s = number(doc, {"/uptime_s"});
  h.sdk = text(doc, {"/sdk_version"});
  h.network = text(doc, {"/network"});
  h.last_error = text(doc, {"/last_error"});
  return h;
}

}  // namespace

// ---- time and glob helpers -------------------------------------------------------------------

Result<WallTime> parse_query_time(std::string_view s) {
  std::string t(s);
  if (!t.empty() && t.size() <= 12 &&
      std::all_of(t.begin(), t.end(), [](char c) { return std::isdigit(static_cast<unsigned char>(c)); })) {
    return WallTime(std::chrono::seconds(std::stoll(t)));
  }
  if (auto w = detail::parse_utc(t)) return *w;
  return Error(errc::invalid_argument,
               "not a time: \"" + t + "\" (use 2026-11-01, 2026-11-01T10:20:30Z or unix seconds)");
}

std::string format_query_time(WallTime t) { return detail::utc_iso8601_ms(t); }

bool glob_match(std::string_view pattern, std::string_view s) {
  return fnmatch(std::string(pattern).c_str(), std::string(s).c_str(), 0) == 0;
}

// ---- the reader ------------------------------------------------------------------------------

struct BucketReader::Impl {
  boost::asio::io_context ioc;
  UploaderConfig config;
  Port port;
  std::unique_ptr<detail::CredentialResolver> creds;
  std::unique_ptr<detail::S3Client> client;
  detail::ExponentialBackoff retry_policy{{kAttempts, 0.2, 0.8, /*full_jitter=*/false}};
  detail::RequestSender sender{ioc, retry_policy, {}};
  QueryStats stats;

  /// One request, retried as retry_policy says (backoff 0.2, 0.4, 0.8 s), the io_context run
  /// until its outcome.
  Result<detail::S3Response> send(const detail::S3Request& req) {
    std::optional<detail::S3Outcome> out;
    sender.send(*client, req, [&](detail::S3Outcome o) { out = std::move(o); });
    ioc.restart();
    while (!out && ioc.run_one() > 0) {
    }
    if (!out) {
      client->cancel();
      sender.cancel_retries();
      return Error(errc::internal, "S3 request finished without an outcome");
    }
    if (out->ok) return std::move(out->response);
    const detail::S3Failure& last = out->failure;
    errc code = detail::errc_of(last.cls);
    if (last.s3_code == "NoSuchKey" || (last.status == 404 && !req.key.empty())) {
      code = errc::not_found;
    }
    std::string what = req.method + " " + (req.key.empty() ? "s3://" + config.bucket
                                                            : "s3://" + config.bucket + "/" + req.key);
    return Error(code, what + ": " + last.message);
  }

  Result<std::vector<ObjectInfo>> list(std::string_view prefix, std::string_view start_after,
                                       std::vector<std::string>* common_prefixes) {
    std::vector<ObjectInfo> out;
    std::string token;
    for (;;) {
      detail::S3Request req;
      req.method = "GET";
      req.query = {{"list-type", "2"}, {"prefix", std::string(prefix)}, {"max-keys", "1000"}};
      if (common_prefixes) req.query.emplace_back("delimiter", "/");
      if (!token.empty()) req.query.emplace_back("continuation-token", token);
      else if (!start_after.empty()) req.query.emplace_back("start-after", std::string(start_after));
      ++stats.list_requests;
      auto r = send(req);
      if (!r) return std::move(r).error();
      const std::string& body = r->body;
      if (body.find("<ListBucketResult") == std::string::npos) {
        return Error(errc::decode_error, "ListObjectsV2 of s3://" + config.bucket + "/" +
                                             std::string(prefix) + ": not a listing");
      }
      for (auto block : detail::xml_blocks(body, "Contents")) {
        ObjectInfo o;
        o.key = detail::xml_text(block, "Key").value_or("");
        auto sz = detail::xml_text(block, "Size").value_or("0");
        o.size = std::strtoull(sz.c_str(), nullptr, 10);
        o.last_modified = detail::xml_text(block, "LastModified").value_or("");
        o.etag = detail::xml_text(block, "ETag").value_or("");
        if (!o.key.empty()) out.push_back(std::move(o));
      }
      if (common_prefixes) {
        for (auto block : detail::xml_blocks(body, "CommonPrefixes")) {
          if (auto p = detail::xml_text(block, "Prefix")) common_prefixes->push_back(*p);
        }
      }
      auto truncated = detail::xml_text(body, "IsTruncated").value_or("false");
      auto next = detail::xml_text(body, "NextContinuationToken").value_or("");
      if (truncated != "true" || next.empty()) break;
      token = next;
    }
    stats.objects_listed += out.size();
    return out;
  }

  Result<std::string> get(std::string_view key, std::uint64_t offset, std::uint64_t length) {
    std::string data;
    std::uint64_t pos = offset;
    const bool whole = length == 0 && offset == 0;
    for (;;) {
      detail::S3Request req;
      req.method = "GET";
      req.key = std::string(key);
      std::uint64_t want = kRangeChunk;
      if (length > 0) want = std::min<std::uint64_t>(kRangeChunk, offset + length - pos);
      req.headers.emplace_back("range", "bytes=" + std::to_string(pos) + "-" +
                                            std::to_string(pos + want - 1));
      ++stats.gets;
      auto r = send(req);
      if (!r) {
        // An empty object answers 416 to any range: retry without one.
        if (whole && pos == 0 && r.error().message.find("InvalidRange") != std::string::npos) {
          detail::S3Request plain;
          plain.method = "GET";
          plain.key = std::string(key);
          auto p = send(plain);
          if (!p) return std::move(p).error();
          return std::move(p->body);
        }
        return std::move(r).error();
      }
      data += r->body;
      pos += r->body.size();
      std::uint64_t total = 0;
      auto cr = r->header("content-range");  // "bytes a-b/total"
      auto slash = cr.rfind('/');
      if (slash != std::string::npos) total = std::strtoull(cr.c_str() + slash + 1, nullptr, 10);
      if (r->status == 200) return data;  // the server ignored the range: whole object
      if (r->body.empty()) break;
      if (length > 0 && pos >= offset + length) break;
      if (total > 0 && pos >= total) break;
      if (total == 0 && r->body.size() < want) break;
    }
    return data;
  }
};

BucketReader::BucketReader(std::unique_ptr<Impl> impl) noexcept : impl_(std::move(impl)) {}
BucketReader::~BucketReader() = default;

Result<std::unique_ptr<BucketReader>> BucketReader::open(const UploaderConfig& config,
                                                         const Port& port) {
  auto impl = std::make_unique<Impl>();
  impl->config = config;
  impl->port = port.with_defaults();
  impl->creds = std::make_unique<detail::CredentialResolver>(config.credentials, port.credentials);
  Impl* raw = impl.get();
  detail::S3Client::Hooks hooks;
  hooks.credentials = [raw] { return raw->creds->get(); };
  hooks.wall = [raw] { return raw->port.clock->wall(); };
  hooks.mono = [raw] { return raw->port.clock->monotonic(); };
  auto client = detail::S3Client::create(impl->ioc, config, std::move(hooks));
  if (!client) return std::move(client).error();
  impl->client = std::move(*client);
  return std::unique_ptr<BucketReader>(new BucketReader(std::move(impl)));
}

const QueryStats& BucketReader::stats() const noexcept { return impl_->stats; }
void BucketReader::reset_stats() noexcept { impl_->stats = {}; }
const std::string& BucketReader::prefix() const noexcept { return impl_->config.prefix; }

Result<std::vector<ObjectInfo>> BucketReader::list(std::string_view prefix,
                                                   std::string_view start_after) {
  return impl_->list(prefix, start_after, nullptr);
}

Result<std::vector<std::string>> BucketReader::list_prefixes(std::string_view prefix) {
  std::vector<std::string> prefixes;
  auto r = impl_->list(prefix, {}, &prefixes);
  if (!r) return std::move(r).error();
  return prefixes;
}

Result<std::string> BucketReader::get(std::string_view key, std::uint64_t offset,
                                      std::uint64_t length) {
  return impl_->get(key, offset, length);
}

Result<std::map<std::string, std::string>> BucketReader::head(std::string_view key) {
  detail::S3Request req;
  req.method = "HEAD";
  req.key = std::string(key);
  ++impl_->stats.heads;
  auto r = impl_->send(req);
  if (!r) return std::move(r).error();
  std::map<std::string, std::string> out;
  for (const auto& [name, value] : r->headers) {
    std::string n = lower(name);
    if (n.rfind("x-amz-meta-", 0) == 0) out[n.substr(11)] = value;
    else if (n == "content-type" || n == "content-length") out[n] = value;
  }
  return out;
}

Result<std::string> BucketReader::download(const EventEntry& e) {
  return impl_->get(e.object_key, e.offset, e.length);
}

Result<std::vector<EventEntry>> BucketReader::query(const EventQuery& q) {
  const detail::BucketLayout layout(impl_->config.prefix, impl_->config.key_template);
  std::vector<EventEntry> found;
  std::set<std::string> covered;  // data objects some manifest mentions

  // 1. Manifests ({prefix}/_manifests/device=D/date=YYYY-MM-DD/...jsonl), pruned by device.
  //    Not by date: a manifest's date is that of its batch's first record, and a batch drained
  //    from a backlog may hold records of later days.
  {
    auto devices = list_prefixes(layout.manifests_prefix());
    if (!devices) return std::move(devices).error();
    std::vector<ObjectInfo> listed;
    for (const auto& dp : *devices) {
      std::string dev = detail::key_partition(dp, "device");
      if (!q.device_glob.empty() && !glob_match(q.device_glob, dev)) continue;
      auto l = impl_->list(dp, {}, nullptr);
      if (!l) return std::move(l).error();
      listed.insert(listed.end(), l->begin(), l->end());
    }
    for (const auto& obj : listed) {
      auto body = impl_->get(obj.key, 0, 0);
      if (!body) {
        if (body.error().is(errc::not_found)) continue;  // deleted between list and get
        return std::move(body).error();
      }
      ++impl_->stats.manifests_read;
      std::size_t pos = 0;
      const std::string& b = *body;
      while (pos < b.size()) {
        auto nl = b.find('\n', pos);
        if (nl == std::string::npos) nl = b.size();
        std::string_view line(b.data() + pos, nl - pos);
        pos = nl + 1;
        if (line.find_first_not_of(" \t\r") == std::string_view::npos) continue;
        ++impl_->stats.manifest_lines;
        json j = json::parse(line.begin(), line.end(), nullptr, false);
        std::vector<EventEntry> entries;
        if (j.is_discarded() || !parse_manifest_line(j, obj.key, entries)) {
          ++impl_->stats.manifest_lines_bad;
          continue;
        }
        for (auto& e : entries) {
          covered.insert(e.object_key);
          found.push_back(std::move(e));
        }
      }
    }
  }

  // 2. Data objects no manifest mentions: listed per stream, described by their metadata.
  {
    std::vector<std::string> streams = q.streams;
    if (streams.empty()) {
      auto prefixes = list_prefixes(layout.root_prefix());
      if (!prefixes) return std::move(prefixes).error();
      for (const auto& p : *prefixes) {
        std::string s = detail::key_partition(p, "stream");
        if (!s.empty()) streams.push_back(s);
      }
    }
    for (const auto& s : streams) {
      std::string sprefix = layout.stream_prefix(s);
      // A data object holds records of one UTC start date (its date= partition): objects
      // dated before the day preceding `since` cannot hold an event ending after it (events
      // are shorter than a day), and objects dated after `until` start too late.
      std::string start_after;
      if (q.since) start_after = sprefix + "date=" + detail::utc_date(*q.since - std::chrono::hours(24));
      auto listed = impl_->list(sprefix, start_after, nullptr);
      if (!listed) return std::move(listed).error();
      for (const auto& obj : *listed) {
        if (covered.count(obj.key)) continue;
        detail::ParsedKey parsed = layout.parse(obj.key);
        if (parsed.kind != detail::KeyKind::data) continue;  // not a data object of this layout
        const std::string& dev = parsed.device;
        const std::string& date = parsed.date;
        if (!q.device_glob.empty() && !glob_match(q.device_glob, dev)) continue;
        if (q.until && date > detail::utc_date(*q.until)) continue;
        auto meta = head(obj.key);
        if (!meta) {
          if (meta.error().is(errc::not_found)) continue;
          return std::move(meta).error();
        }
        auto m = [&](std::initializer_list<const char*> names) -> std::string {
          for (const char* n : names) {
            auto it = meta->find(n);
            if (it != meta->end()) return it->second;
          }
          return {};
        };
        EventEntry e;
        e.object_key = obj.key;
        e.length = 0;
        e.stream = s;
        e.device = dev;
        e.date = date;
        e.trigger_ids = split_list(m({"fleetpipe-trigger-ids", "trigger-ids"}));
        e.event_id = m({"fleetpipe-event-id", "event-id"});
        auto ids = split_list(m({"fleetpipe-event-ids", "event-ids"}));
        if (e.event_id.empty() && ids.size() == 1) e.event_id = ids.front();
        auto num = [](const std::string& v) -> std::int64_t {
          return v.empty() ? 0 : std::strtoll(v.c_str(), nullptr, 10);
        };
        e.start_ns = num(m({"fleetpipe-start-ns", "start-ns"}));
        e.end_ns = num(m({"fleetpipe-end-ns", "end-ns"}));
        if (e.start_ns == 0) {
          if (auto t = parse_query_time(m({"fleetpipe-start-time", "start-time"}))) e.start_ns = to_ns(*t);
        }
        if (e.end_ns == 0) {
          if (auto t = parse_query_time(m({"fleetpipe-end-time", "end-time"}))) e.end_ns = to_ns(*t);
        }
        e.priority = static_cast<int>(num(m({"fleetpipe-priority", "priority", "max-priority"})));
        auto rc = m({"fleetpipe-record-count", "record-count", "records"});
        e.record_count = rc.empty() ? 1 : static_cast<std::uint64_t>(num(rc));
        e.content_type = m({"content-type"});
        for (const auto& [k, v] : *meta) e.metadata[k] = v;
        found.push_back(std::move(e));
      }
    }
  }

  // 3. Filters.
  std::vector<EventEntry> out;
  const std::int64_t since_ns = q.since ? to_ns(*q.since) : INT64_MIN;
  const std::int64_t until_ns = q.until ? to_ns(*q.until) : INT64_MAX;
  for (auto& e : found) {
    if (!q.streams.empty() &&
        std::find(q.streams.begin(), q.streams.end(), e.stream) == q.streams.end())
      continue;
    if (!q.device_glob.empty() && !glob_match(q.device_glob, e.device)) continue;
    if (!q.triggers.empty()) {
      bool any = false;
      for (const auto& t : e.trigger_ids)
        any = any || std::find(q.triggers.begin(), q.triggers.end(), t) != q.triggers.end();
      if (!any) continue;
    }
    if (e.priority < q.min_priority) continue;
    const std::int64_t end = e.end_ns ? e.end_ns : e.start_ns;
    if (q.since && end < since_ns) continue;
    if (q.until && e.start_ns >= until_ns) continue;
    out.push_back(std::move(e));
  }
  std::sort(out.begin(), out.end(), [](const EventEntry& a, const EventEntry& b) {
    if (a.start_ns != b.start_ns) return a.start_ns < b.start_ns;
    if (a.device != b.device) return a.device < b.device;
    if (a.object_key != b.object_key) return a.object_key < b.object_key;
    return a.offset < b.offset;
  });
  // The same record delivered twice (at-least-once) appears in two manifests: keep one.
  out.erase(std::unique(out.begin(), out.end(),
                        [](const EventEntry& a, const EventEntry& b) {
                          return a.object_key == b.object_key && a.offset == b.offset &&
                                 a.event_id == b.event_id;
                        }),
            out.end());
  if (q.limit > 0 && out.size() > q.limit) out.resize(q.limit);
  return out;
}

Result<std::vector<DeviceStatus>> BucketReader::status(const StatusQuery& q) {
  const detail::BucketLayout layout(impl_->config.prefix, impl_->config.key_template);
  const std::string hb_prefix = layout.heartbeats_prefix();
  const WallTime now = q.now ? *q.now : impl_->port.clock->wall();
  auto prefixes = list_prefixes(hb_prefix);
  if (!prefixes) return std::move(prefixes).error();
  std::vector<DeviceStatus> out;
  for (const auto& p : *prefixes) {
    std::string device = detail::key_partition(p, "device");
    if (device.empty()) continue;
    if (!q.device_glob.empty() && !glob_match(q.device_glob, device)) continue;
    auto listed = impl_->list(p, {}, nullptr);
    if (!listed) return std::move(listed).error();
    // (time, key) of every heartbeat, oldest first.
    std::vector<std::pair<WallTime, std::string>> beats;
    for (const auto& o : *listed) {
      detail::ParsedKey k = layout.parse(o.key);
      if (k.kind == detail::KeyKind::heartbeat) beats.emplace_back(*k.time, o.key);
    }
    if (beats.empty()) continue;
    std::sort(beats.begin(), beats.end());
    DeviceStatus d;
    d.device = device;
    const auto window_start =
        now - std::chrono::duration_cast<WallTime::duration>(std::chrono::duration<double>(q.window_s));
    auto first_in_window = std::find_if(beats.begin(), beats.end(),
                                        [&](const auto& b) { return b.first >= window_start; });
    const auto in_window = std::distance(first_in_window, beats.end());
    d.heartbeats = static_cast<std::size_t>(in_window);
    // A single heartbeat in the window is compared with the one before it, if any.
    auto baseline = first_in_window;
    if (in_window == 1 && first_in_window != beats.begin()) --baseline;
    const auto& newest = beats.back();
    auto body = impl_->get(newest.second, 0, 0);
    if (!body) return std::move(body).error();
    json doc = json::parse(*body, nullptr, false);
    if (doc.is_discarded() || !doc.is_object()) doc = json::object();
    Heartbeat last = read_heartbeat(doc, newest.first);
    d.heartbeat_json = *body;
    d.last_key = newest.second;
    d.last_seen = last.time;
    d.seconds_since_last = std::chrono::duration<double>(now - last.time).count();
    d.sdk_version = last.sdk;
    d.network = last.network;
    d.backlog_records = last.backlog_records;
    d.backlog_bytes = last.backlog_bytes;
    d.evicted_total = last.evicted;
    d.uploaded_bytes_total = last.bytes_sent;
    d.last_error = last.last_error;
    if (in_window > 0 && baseline->second != newest.second) {
      auto fb = impl_->get(baseline->second, 0, 0);
      if (!fb) return std::move(fb).error();
      json fdoc = json::parse(*fb, nullptr, false);
      if (fdoc.is_discarded() || !fdoc.is_object()) fdoc = json::object();
      Heartbeat first = read_heartbeat(fdoc, baseline->first);
      const double dt = std::chrono::duration<double>(last.time - first.time).count();
      // A counter that went down means the device restarted: count from zero.
      const bool restarted = last.bytes_sent < first.bytes_sent || last.evicted < first.evicted;
      d.evicted_in_window = restarted ? last.evicted : last.evicted - first.evicted;
      if (restarted && last.uptime_s > 0) {
        d.upload_bytes_per_s = last.bytes_sent / last.uptime_s;
      } else if (!restarted && dt > 0) {
        d.upload_bytes_per_s = (last.bytes_sent - first.bytes_sent) / dt;
      }
    } else if (in_window > 0) {
      // The device's only heartbeat: its counters are since its start.
      d.evicted_in_window = last.evicted;
      if (last.uptime_s > 0) d.upload_bytes_per_s = last.bytes_sent / last.uptime_s;
    }
    d.silent = d.seconds_since_last > q.silent_after_s;
    d.evicting = d.evicted_in_window > 0;
    out.push_back(std::move(d));
  }
  std::sort(out.begin(), out.end(),
            [](const DeviceStatus& a, const DeviceStatus& b) { return a.device < b.device; });
  return out;
}

}  // namespace fleetpipe
