// Batch planning: a lease's records grouped into objects, each with its key.
#include "uploader/planner.hpp"

#include <algorithm>
#include <cstdio>
#include <limits>
#include <map>
#include <set>
#include <tuple>

#include "common/utc_time.hpp"

namespace fleetpipe::uploader_internal {

using detail::utc_compact_ms;
using detail::utc_format;

const std::vector<std::string> kTemplateFields = {
    "prefix", "stream", "YYYY-MM-DD", "YYYY", "MM", "DD", "HH",
    "device", "start_time", "seq", "ext", "event_id"};

// Printable ASCII except '/' and '\\', no ".." (so no segment can climb), at most 200 bytes,
// never empty.
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

namespace {

std::string ext_for(const std::string& content_type) {
  if (content_type == "application/vnd.fleetpipe.event") return "fpev";
  if (content_type == "application/json") return "json";
  if (content_type == "application/x-ndjson" || content_type == "application/jsonl") return "jsonl";
  if (content_type == "text/plain") return "txt";
  return "bin";
}

}  // namespace

void plan_objects(Batch& b, const UploaderConfig& cfg) {
  const auto& recs = b.lease.records();
  std::map<std::tuple<std::string, std::string, std::string>, ObjectPlan> open;
  auto device_of = [&](const LeasedRecord& r) {
    auto it = r.meta.metadata.find("device");
    return it != r.meta.metadata.end() && !it->second.empty() ? it->second : cfg.device_id;
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
    if (r.payload_size >= cfg.large_record_bytes) {
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
    if (!p.segs.empty() && p.size + r.payload_size > cfg.target_object_bytes) {
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
    p.key = render_key(cfg, p, recs[p.segs.front().index]);
  }
}

std::string render_key(const UploaderConfig& cfg, const ObjectPlan& p, const LeasedRecord& first) {
  char seq[32];
  std::snprintf(seq, sizeof seq, "%016llu", static_cast<unsigned long long>(first.id));
  std::map<std::string, std::string> v = {
      {"prefix", cfg.prefix},
      {"stream", p.stream.empty() ? "default" : key_segment(p.stream)},
      {"YYYY-MM-DD", utc_format(first.meta.start_ns, "%Y-%m-%d")},
      {"YYYY", utc_format(first.meta.start_ns, "%Y")},
      {"MM", utc_format(first.meta.start_ns, "%m")},
      {"DD", utc_format(first.meta.start_ns, "%d")},
      {"HH", utc_format(first.meta.start_ns, "%H")},
      {"device", key_segment(p.device)},
      {"start_time", utc_compact_ms(first.meta.start_ns)},
      {"seq", seq},
      {"ext", ext_for(p.content_type)},
      {"event_id", first.meta.event_id.empty() ? std::string(seq) : key_segment(first.meta.event_id)},
  };
  std::string out;
  const std::string& t = cfg.key_template;
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

}  // namespace fleetpipe::uploader_internal
