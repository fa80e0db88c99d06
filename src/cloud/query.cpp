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

#include "cloud/reader_impl.hpp"
#include "common/utc_time.hpp"
#include "s3/bucket_layout.hpp"
#include "s3/credentials.hpp"
#include "s3/request_sender.hpp"
#include "s3/s3_client.hpp"

namespace fleetpipe {

namespace {

using json = nlohmann::json;

std::string lower(std::string_view s) {
  std::string out(s);
  for (auto& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::int64_t to_ns(WallTime t) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
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

// `want` is "ID" (any version) or "ID@VERSION".
bool captured_by(const EventEntry& e, const std::string& want) {
  const bool any_version = want.find('@') == std::string::npos;
  for (const auto& tag : event_campaigns(e)) {
    if (any_version ? tag.compare(0, want.size() + 1, want + "@") == 0 : tag == want) return true;
  }
  return false;
}

}  // namespace

std::vector<std::string> event_campaigns(const EventEntry& e) {
  auto id = e.metadata.find("campaign_id");
  if (id != e.metadata.end()) {
    auto v = e.metadata.find("campaign_version");
    return {id->second + "@" + (v == e.metadata.end() ? std::string("0") : v->second)};
  }
  auto obj = e.metadata.find("fleetpipe-campaigns");
  return obj == e.metadata.end() ? std::vector<std::string>{} : split_list(obj->second);
}

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
    if (!q.campaign.empty() && !captured_by(e, q.campaign)) continue;
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

}  // namespace fleetpipe
