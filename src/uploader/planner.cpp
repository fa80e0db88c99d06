// Batch planning: a lease's records grouped into objects, each with its key.
#include "uploader/planner.hpp"

#include <algorithm>
#include <limits>
#include <map>
#include <set>
#include <tuple>

#include "common/utc_time.hpp"

namespace fleetpipe::uploader_internal {

using detail::utc_format;

void plan_objects(Batch& b, const UploaderConfig& cfg, const detail::BucketLayout& layout) {
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
    p.key = render_key(layout, p, recs[p.segs.front().index]);
  }
}

std::string render_key(const detail::BucketLayout& layout, const ObjectPlan& p, const LeasedRecord& first) {
  detail::DataKeyFields f;
  f.stream = p.stream;
  f.device = p.device;
  f.start_ns = first.meta.start_ns;
  f.seq = first.id;
  f.ext = detail::BucketLayout::extension_for(p.content_type);
  f.event_id = first.meta.event_id;
  return layout.data_key(f);
}

}  // namespace fleetpipe::uploader_internal
