// Internal: batch planning — a lease's records grouped into objects, each with its key.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "fleetpipe/buffer.hpp"
#include "fleetpipe/uploader.hpp"

namespace fleetpipe::uploader_internal {

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

struct Batch {
  Lease lease;
  std::vector<ObjectPlan> objects;
  std::size_t next = 0;
  std::string manifest_key;
  std::string manifest_lines;  // JSONL of delivered objects
  std::uint64_t gen = 0;
};

/// The key template's placeholders (checked by the config parser).
extern const std::vector<std::string> kTemplateFields;

/// Fills b.objects from b.lease: records of one (stream, UTC date, device) packed up to
/// target_object_bytes, large records alone; records by id inside an object, each object keyed
/// after its first record (render_key). Objects keep the lease's order (priority first).
void plan_objects(Batch& b, const UploaderConfig& cfg);

/// The object key of `p` from cfg.key_template, `first` being its smallest record.
std::string render_key(const UploaderConfig& cfg, const ObjectPlan& p, const LeasedRecord& first);

/// A value from record data (stream, device, event id) as one key path segment.
std::string key_segment(std::string_view s);

}  // namespace fleetpipe::uploader_internal
