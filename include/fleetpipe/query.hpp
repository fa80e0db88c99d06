// fleetpipe/query.hpp — the cloud side: find what the fleet uploaded, and how the fleet is doing.
//
// A `BucketReader` reads the bucket the uploaders write (docs/bucket-layout.md):
//   {prefix}/stream={stream}/date={YYYY-MM-DD}/device={device}/{start_time}-{seq}.{ext}  data
//   {prefix}/_manifests/device={device}/date={YYYY-MM-DD}/{start_time}-{seq}.jsonl     manifests
//   {prefix}/_heartbeat/device={device}/{YYYYMMDDTHHMMSS.mmmZ}-{seq}.json             heartbeats
// `query()` answers "which events match stream / trigger / device glob / time range" from the
// JSONL manifests (one line per delivered event), plus — for data objects no manifest mentions
// (manifests disabled, or a crash between the object and its manifest) — from the object's
// `x-amz-meta-*` headers. `status()` summarises the heartbeats per device and flags devices that
// are silent or evicting. `download()` fetches the bytes of one event (a ranged GET when the
// manifest gives its offset inside a packed object).
//
// Caveats (read first)
//  - This is a host/cloud tool, not device code: calls are synchronous and block on the network
//    (one request at a time on one kept-alive connection, on a private io_context). Python
//    releases the GIL around them.
//  - Pruning: manifests are listed only under the devices the glob matches
//    ({prefix}/_manifests/device=D/...), never by date: a manifest's date= is that of its batch's
//    first record, and a batch drained from a backlog holds records of other days. Data objects
//    are listed per stream (all streams when none is asked) from the date= partition of the day
//    before `since` on (a data object holds records starting on one UTC date; events are assumed
//    shorter than a day), so that objects no manifest mentions are still found; only those are
//    HEADed. Time is finally filtered on each event's own start_ns/end_ns.
//  - Key templates other than the default still work as long as they keep the
//    `stream=`, `date=` and `device=` path segments (the reader finds them by name).
//  - Not thread-safe: one thread per BucketReader.
//  - Credentials come from the config's "uploader/credentials" exactly as for the Uploader
//    (static keys, AWS_* environment, shared credentials file, or Port::credentials); they are
//    never logged or put in errors.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "fleetpipe/error.hpp"
#include "fleetpipe/port.hpp"
#include "fleetpipe/uploader.hpp"

namespace fleetpipe {

/// One object of a listing.
struct ObjectInfo {
  std::string key;
  std::uint64_t size = 0;
  std::string last_modified;  ///< as the server sent it (ISO 8601)
  std::string etag;
};

/// What to look for. Every set field must match (AND); lists match any of their values (OR).
struct EventQuery {
  std::vector<std::string> streams;   ///< empty = every stream
  std::vector<std::string> triggers;  ///< an event matches when any of its trigger ids is listed
  std::string device_glob;            ///< fnmatch(3) pattern, e.g. "cart-0*"; "" = every device
  std::optional<WallTime> since;      ///< events ending at or after this time
  std::optional<WallTime> until;      ///< events starting before this time
  int min_priority = 0;               ///< 0..7
  std::size_t limit = 0;              ///< at most this many (oldest first); 0 = no limit
  /// "ID" (any version) or "ID@VERSION": events captured under that campaign, from the record
  /// metadata "campaign_id"/"campaign_version" of manifest lines, else the object's metadata
  /// `x-amz-meta-fleetpipe-campaigns` ("id@version,..."). "" = every event.
  std::string campaign;
};


/// One event found in the bucket.
struct EventEntry {
  std::string object_key;    ///< the data object holding the event
  std::uint64_t offset = 0;  ///< first byte of the event in the object
  std::uint64_t length = 0;  ///< its length; 0 = the whole object (no manifest said more)
  std::string stream;
  std::string device;
  std::string date;          ///< the object's date= partition
  std::string event_id;      ///< "" when unknown (object without manifest packing many events)
  std::vector<std::string> trigger_ids;
  int priority = 0;
  std::int64_t start_ns = 0, end_ns = 0;  ///< wall-clock range, unix epoch ns
  std::string content_type;
  std::uint64_t record_count = 1;  ///< events in [offset, offset+length)
  std::string manifest_key;  ///< "" when the entry comes from the object's metadata
  std::map<std::string, std::string> metadata;  ///< the record's user metadata
};

/// "id@version" of every campaign that captured (part of) `e`, as `EventQuery::campaign` reads
/// them; empty for events of the local triggers.
std::vector<std::string> event_campaigns(const EventEntry& e);

/// Counters of the last call, to judge pruning.
struct QueryStats {
  std::uint64_t list_requests = 0;
  std::uint64_t objects_listed = 0;
  std::uint64_t manifests_read = 0;
  std::uint64_t manifest_lines = 0;
  std::uint64_t manifest_lines_bad = 0;  ///< skipped: not JSON or missing fields
  std::uint64_t heads = 0;               ///< objects without manifest, read via HEAD
  std::uint64_t gets = 0;
};

struct StatusQuery {
  std::string device_glob;             ///< "" = every device
  std::optional<WallTime> now;         ///< default: the Port clock's wall time
  double silent_after_s = 900;         ///< no heartbeat for this long: silent
  double window_s = 86400;             ///< evictions and upload rate are measured over this
};

/// What the heartbeats say about one device.
struct DeviceStatus {
  std::string device;
  std::size_t heartbeats = 0;          ///< in the window (all listed ones when fewer than 2)
  std::optional<WallTime> last_seen;   ///< time of the newest heartbeat
  double seconds_since_last = 0;
  std::string last_key;
  std::string sdk_version;
  std::string network;                 ///< "online" / "metered" / "offline" as reported
  double backlog_records = 0;          ///< records queued in the device buffer
  double backlog_bytes = 0;
  double evicted_total = 0;            ///< the device's eviction counter (since its start)
  double evicted_in_window = 0;        ///< growth of that counter over the window
  double uploaded_bytes_total = 0;     ///< bytes the uploader sent (since its start)
  double upload_bytes_per_s = 0;       ///< over the window (0 with a single heartbeat)
  std::string last_error;
  bool silent = false;
  bool evicting = false;
  std::string heartbeat_json;          ///< the newest heartbeat document, as stored
};

/// Reads one bucket. Create with `open`; blocking calls (see Caveats).
namespace detail {
struct ReaderAccess;  // the reader's internal files (src/cloud/)
}

class BucketReader {
 public:
  /// Uses `config.endpoint`, `bucket`, `region`, `credentials`, TLS settings and `prefix`.
  /// Errors: invalid_config / insecure_refused (endpoint), tls_error (CA file). No request is
  /// made here. Lifetime: the Port's objects must outlive the reader.
  static Result<std::unique_ptr<BucketReader>> open(const UploaderConfig& config,
                                                    const Port& port = {});
  ~BucketReader();
  BucketReader(const BucketReader&) = delete;
  BucketReader& operator=(const BucketReader&) = delete;

  /// Every object under `prefix` (ListObjectsV2, all pages), keys in order. `start_after` skips
  /// keys <= it. Errors: network_error, timeout, tls_error, auth_error, s3_permanent
  /// (NoSuchBucket, AccessDenied), http_error, decode_error (unreadable listing).
  Result<std::vector<ObjectInfo>> list(std::string_view prefix, std::string_view start_after = {});
  /// The common prefixes one level below `prefix` (delimiter "/"). Errors: as list().
  Result<std::vector<std::string>> list_prefixes(std::string_view prefix);
  /// The whole object, or bytes [offset, offset+length) when length > 0 (ranged GETs of at most
  /// 4 MiB each). Errors: as list(), not_found (NoSuchKey).
  Result<std::string> get(std::string_view key, std::uint64_t offset = 0, std::uint64_t length = 0);
  /// User metadata (x-amz-meta-* names without the prefix, lower case) plus "content-type",
  /// "content-length". Errors: as get().
  Result<std::map<std::string, std::string>> head(std::string_view key);

  /// Events matching `q`, sorted by start time then device. Errors: as list().
  Result<std::vector<EventEntry>> query(const EventQuery& q);
  /// The bytes of one event (the whole object when `e.length` is 0). Errors: as get().
  Result<std::string> download(const EventEntry& e);
  /// One summary per device with at least one heartbeat, sorted by device. Errors: as list().
  Result<std::vector<DeviceStatus>> status(const StatusQuery& q);

  /// Counters of requests since open (or reset_stats()).
  const QueryStats& stats() const noexcept;
  void reset_stats() noexcept;
  const std::string& prefix() const noexcept;

  struct Impl;  // internal

 private:
  friend struct detail::ReaderAccess;
  explicit BucketReader(std::unique_ptr<Impl> impl) noexcept;
  std::unique_ptr<Impl> impl_;
};

/// The fleet aggregated per value of one device label (`fleetpipe status --by LABEL`), over the
/// window of a StatusQuery. Heartbeat counters run since the device's start: every figure is a
/// sum of deltas between consecutive heartbeats (the first delta from the last heartbeat before
/// the window), and a counter that goes down counts as a restart (the later value is the delta).
/// Rates per device-hour / device-day divide by the seconds those deltas cover, summed over the
/// group's devices.
struct FleetGroup {
  std::string label;       ///< the label grouped by ("" = the whole fleet)
  std::string value;       ///< its value
  bool has_value = true;   ///< false: the devices whose heartbeats carry no such label
  std::vector<std::string> devices;
  std::size_t silent = 0, evicting = 0, paused_now = 0, restarts = 0;
  double observed_device_s = 0;       ///< seconds covered by deltas, summed over devices
  double upload_bytes = 0;            ///< bytes sent in the window
  double upload_bytes_per_s = 0;      ///< sum over devices of bytes / seconds covered
  double paused_share = 0;            ///< paused seconds / observed_device_s
  std::map<std::string, double> paused_share_by_reason;  ///< when heartbeats carry seconds by reason
  std::map<std::string, double> pauses_per_device_hour;  ///< pause count rate, by reason
  double evictions = 0, evictions_per_device_day = 0;
  std::map<std::string, double> fires;                  ///< per trigger, in the window
  std::map<std::string, double> fires_per_device_hour;  ///< per trigger
  double backlog_records = 0, backlog_bytes = 0;        ///< sum of the newest heartbeats
  std::map<std::string, std::size_t> campaign_versions; ///< version -> devices
};

/// Groups the devices `q` selects by their label `by` ("" = one group). Costs O(devices): the
/// listing of status(), the first and newest heartbeat of each device's window, a few more per
/// restart; the figures are those of every heartbeat of the window (docs/fleet-view.md). Errors:
/// as BucketReader::list().
Result<std::vector<FleetGroup>> fleet_status(BucketReader& reader, const StatusQuery& q,
                                             std::string_view by);
/// The groups in Prometheus text format (for a node-exporter textfile collector): gauges
/// fleetpipe_fleet_* with the label `by` (sanitised to a Prometheus label name).
std::string fleet_status_prometheus(const std::vector<FleetGroup>& groups);

/// Label selectors for events: label key -> fnmatch(3) glob of its value ("site" -> "store-01*");
/// an event matches when every selector matches one of its labels.
using LabelSelector = std::map<std::string, std::string>;
/// Parses "key=glob" (as in `fleetpipe query --label site=store-01*`). Errors: invalid_argument.
Result<std::pair<std::string, std::string>> parse_label_selector(std::string_view text);
/// `reader.query(q)` narrowed to the events whose labels match `labels` (then cut at q.limit).
/// An event's labels are those of its manifest line (`"labels": {...}`), else of its object's
/// metadata (`x-amz-meta-fleetpipe-label-KEY`), else its device's newest heartbeat's. Costs, on
/// top of query(): one GET per manifest named, and one LIST + GET per device without either.
/// Errors: as query().
Result<std::vector<EventEntry>> query_labeled(BucketReader& reader, const EventQuery& q,
                                              const LabelSelector& labels);

/// Parses "2026-11-01", "2026-11-01T10:20:30Z", "2026-11-01T10:20:30.5Z", "20261101T102030Z" or
/// a unix time in seconds ("1793500000"); UTC. Errors: invalid_argument.
Result<WallTime> parse_query_time(std::string_view text);
/// "2026-11-01T10:20:30.123Z" (milliseconds, UTC).
std::string format_query_time(WallTime t);
/// fnmatch(3)-style glob ("*", "?", "[a-z]"), no flags.
bool glob_match(std::string_view pattern, std::string_view text);

}  // namespace fleetpipe
