// Internal: the fleet view — heartbeat histories per device, summarised over a window and
// aggregated per label value (`fleetpipe status --by`, the report page).
//
// Counters in a heartbeat run since the device's start, so every figure over the window is a sum
// of deltas between consecutive heartbeats; a counter that goes down (or an uptime that does)
// means the device restarted, and the later value is then the delta (counted from zero).
#pragma once

#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "fleetpipe/query.hpp"

namespace fleetpipe::detail {

/// What the fleet view reads from one heartbeat document (absent fields read as 0 / empty).
struct HeartbeatPoint {
  WallTime time{};
  std::string key;
  double uptime_s = 0;
  double bytes_sent = 0, evicted = 0, rejected = 0, paused_s = 0;
  double backlog_records = 0, backlog_bytes = 0;
  bool paused = false;
  std::map<std::string, double> paused_s_by_reason;  ///< only when the heartbeat carries it
  std::map<std::string, double> pauses_by_reason;    ///< pause counts, by reason
  std::map<std::string, double> fires;               ///< per trigger
  std::map<std::string, std::string> labels;
  std::string campaign_version;  ///< "" without a campaign object
  std::string sdk_version, last_error;
  /// What resets trigger counters without a restart (the campaigns in force, as the heartbeat
  /// states them): two heartbeats with different epochs are never telescoped.
  std::string epoch;
};

/// `doc` is one heartbeat; `key_time` (from its key) is used when the document has no time.
HeartbeatPoint read_heartbeat_point(const nlohmann::json& doc, WallTime key_time);

/// One heartbeat object, as its key names it.
struct HeartbeatKey {
  WallTime time{};
  std::uint64_t seq = 0;
  bool has_seq = false;  ///< keys before the seq suffix (YYYYMMDDTHHMMSSZ.json) have none
  std::string key;
};

/// One device's heartbeats, oldest first: those in the window, preceded by the last one before
/// it (the baseline of the first delta) when there is one.
struct DeviceHistory {
  std::string device;
  std::vector<HeartbeatPoint> beats;
};

/// One device over the window.
struct DeviceWindow {
  std::string device;
  HeartbeatPoint last;     ///< its newest heartbeat
  double span_s = 0;       ///< seconds covered by deltas (0 with a single heartbeat)
  double bytes = 0, evicted = 0, paused_s = 0;
  std::map<std::string, double> paused_s_by_reason, pauses_by_reason, fires;
  std::size_t restarts = 0;
  double seconds_since_last = 0;
  bool silent = false, evicting = false;
  double upload_bytes_per_s() const { return span_s > 0 ? bytes / span_s : 0; }
};

DeviceWindow summarise(const DeviceHistory& h, WallTime now, const StatusQuery& q);

/// Groups by the value of label `by` ("" = one group for the whole fleet); devices without the
/// label form the group whose `has_value` is false. Groups sorted by value, that one last.
std::vector<FleetGroup> aggregate(const std::vector<DeviceWindow>& devices, std::string_view by);

/// Fleet totals per time bin (for the report's charts): bins of `bin_s` seconds ending at `now`.
struct FleetBin {
  WallTime end{};
  double upload_bytes_per_s = 0;  ///< bytes sent in the bin / bin seconds
  double backlog_records = 0;     ///< sum of each device's newest backlog at the bin's end
  double fires = 0;               ///< fires in the bin, all triggers
  double paused_share = 0;        ///< paused seconds in the bin / (bin seconds x devices seen)
  double evictions = 0;
};
std::vector<FleetBin> fleet_bins(const std::vector<DeviceHistory>& histories, WallTime now,
                                 double window_s, std::size_t bins);

/// One device's heartbeat keys over the window (the baseline first; those after `now` left out
/// when the query sets it) and the ones read so far (nullopt: missing or not a heartbeat, which
/// the window skips).
struct WindowKeys {
  std::string device;
  std::vector<HeartbeatKey> keys;
  std::map<std::size_t, std::optional<HeartbeatPoint>> read;
};

/// Lists the window's keys of every device matching `q.device_glob` (heartbeat_keys.hpp: one
/// LIST per 1,000 keys of short histories, about one per device for long ones). Errors: as list().
Result<std::vector<WindowKeys>> list_windows(BucketReader& reader, const StatusQuery& q, WallTime now);

using FetchPoint = std::function<Result<std::optional<HeartbeatPoint>>(const HeartbeatKey&)>;
/// GETs one heartbeat (nullopt when it is gone or does not parse).
FetchPoint fetch_from(BucketReader& reader);

/// The heartbeats of `w` that give summarise() — and fleet_bins() over bins with these `edges`
/// (bin_edges()) — the same figures as every heartbeat of the window would, reading as few as it
/// can: the first and the newest, the last one before each bin edge and those within 2 s of it,
/// both sides of a seq that goes down (a restart). Between two points read, the heartbeats in
/// between are summed by the difference of the two (counters telescope) unless the pair shows a
/// restart or a reset: a counter lower, an uptime that grew less or more than the time (2 s +
/// 0.2 %), a trigger or pause reason gone or lower, a different campaign epoch. Then the middle
/// one is read, and so on down to consecutive heartbeats (as many reads as the restarts need, a
/// few each). Points already in `w.read` are not fetched again. Errors: those of `fetch`.
Result<DeviceHistory> read_history(WindowKeys& w, const std::vector<WallTime>& edges,
                                   const FetchPoint& fetch);

/// The bin edges fleet_bins() uses: the window's start, then each bin's end.
std::vector<WallTime> bin_edges(WallTime now, double window_s, std::size_t bins);

/// list_windows() and read_history() without bins, for every device (status --by).
Result<std::vector<DeviceHistory>> load_histories(BucketReader& reader, const StatusQuery& q,
                                                  WallTime now);

}  // namespace fleetpipe::detail
