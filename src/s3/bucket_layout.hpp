// Internal: the bucket layout — every key fleetpipe writes, rendered and parsed in one place.
//
//   {prefix}/stream=S/date=YYYY-MM-DD/device=D/{start_time}-{seq}.{ext}   data (key_template)
//   {prefix}/_manifests/device=D/date=YYYY-MM-DD/{start_time}-{seq}-{writer}.jsonl one per upload batch
//   {prefix}/_heartbeat/device=D/{YYYYMMDDTHHMMSS.mmmZ}-{seq}.json        heartbeats
//     (before: {YYYYMMDDTHHMMSSZ}.json, still parsed)
//   {prefix}/_campaigns/...                                               campaigns (reserved)
//
// The writer (uploader: data, manifests, heartbeats) and the reader (src/cloud) both use this
// class, so a key rendered here parses here (tests/test_bucket_layout.cpp). Values that come
// from record data or config (stream, device, event id) pass through key_segment(): one path
// segment each, whatever their bytes. docs/bucket-layout.md describes the layout for readers.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "fleetpipe/port.hpp"

namespace fleetpipe::detail {

/// A value from record data or config (stream, device, event id) as one key path segment:
/// printable ASCII except '/' and '\\' (others become '_'), no ".." (so no segment can climb),
/// at most 200 bytes, never empty.
std::string key_segment(std::string_view s);

/// The value of the "name=value" segment of a key (a Hive partition), "" when absent.
std::string key_partition(std::string_view key, std::string_view name);

enum class KeyKind { data, manifest, heartbeat, campaign, other };

/// What a data key is rendered from (values raw: the layout makes them key segments).
struct DataKeyFields {
  std::string stream;         ///< "" renders as "default"
  std::string device;
  std::int64_t start_ns = 0;  ///< start of the object's first record (unix ns, UTC)
  std::uint64_t seq = 0;      ///< the object's smallest record id
  std::string ext;            ///< "fpev", "json", ... (extension_for)
  std::string event_id;       ///< "" renders as seq
};

/// What a key says, as far as its kind carries it.
struct ParsedKey {
  KeyKind kind = KeyKind::other;
  std::string stream, device, date;  ///< partition values ("" when the kind has none)
  std::optional<WallTime> time;      ///< heartbeat time; data/manifest: the start time
  std::optional<std::uint64_t> seq;  ///< data/manifest: the smallest record id; heartbeat: its seq
  std::optional<std::uint64_t> writer;  ///< manifest: the writer tag that makes its key unique
};

class BucketLayout {
 public:
  static constexpr const char* kDefaultTemplate =
      "{prefix}/stream={stream}/date={YYYY-MM-DD}/device={device}/{start_time}-{seq}.{ext}";

  /// `prefix` without trailing '/' ("" = the bucket's root); `key_template` for data keys.
  explicit BucketLayout(std::string prefix, std::string key_template = kDefaultTemplate);

  /// The placeholders a key template may use.
  static const std::vector<std::string>& template_fields();
  /// "" when `t` is a usable key template, else why not (for a config error).
  static std::string check_template(std::string_view t);
  /// The file extension for a content type.
  static std::string extension_for(std::string_view content_type);

  const std::string& prefix() const { return prefix_; }

  // ---- rendering ---------------------------------------------------------------------------
  std::string data_key(const DataKeyFields& f) const;
  /// `writer`: a random tag per batch, so that a later batch starting with the same record (its
  /// object not acked before a crash) never replaces this manifest (docs/bucket-layout.md).
  std::string manifest_key(std::string_view device, std::int64_t start_ns, std::uint64_t first_id,
                           std::optional<std::uint64_t> writer = std::nullopt) const;
  /// `seq`: the sender's heartbeat count, so two heartbeats in the same millisecond (a frozen
  /// or coarse clock) still get two keys.
  std::string heartbeat_key(std::string_view device, WallTime t, std::uint64_t seq) const;
  // Campaign keys ({prefix}/_campaigns/...) are rendered and parsed here too, with the
  // campaigns issue: campaigns_prefix() is their root.

  // ---- listing prefixes (each ends with '/') -----------------------------------------------
  std::string root_prefix() const;  ///< "{prefix}/" ("" at the bucket's root)
  std::string stream_prefix(std::string_view stream) const;
  std::string manifests_prefix() const;
  std::string heartbeats_prefix() const;
  std::string campaigns_prefix() const;
  /// Where the uploader's multipart uploads live (the orphan scan's range); "" = none.
  std::string uploads_scan_prefix() const;

  // ---- parsing -----------------------------------------------------------------------------
  /// The kind of `key` and what it carries; KeyKind::other for keys outside this layout.
  ParsedKey parse(std::string_view key) const;

 private:
  std::string prefix_;
  std::string template_;
};

}  // namespace fleetpipe::detail
