// Internal: the heartbeat keys of a fleet's window, for `fleetpipe status`, `status --by` and the
// report, from one flat listing of {prefix}/_heartbeat/ (docs/fleet-view.md "What `fleetpipe
// status` costs").
//
// Keys sort by device, then time. The listing runs through the devices in order; where a page
// ends in a device's history before the window, the next request jumps (`start-after`) to that
// device's window, so a page holds one device's window and the beginning of the next device's
// history. A device whose whole history fits there needs no request of its own: short histories
// cost one LIST per 1,000 keys of the fleet, long ones one LIST per device (and one to start).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "cloud/fleet_view.hpp"
#include "cloud/reader_impl.hpp"

namespace fleetpipe::detail {

struct ReaderAccess {
  static BucketReader::Impl& impl(BucketReader& r) noexcept { return *r.impl_; }
};

/// One device's keys, sorted by (time, seq): every key from the window's start on, preceded by
/// the newest key before it (the baseline) when there is one and it was asked for.
struct DeviceKeys {
  std::string device;
  std::vector<HeartbeatKey> keys;
  std::size_t first_in_window = 0;  ///< index of the first key at or after the window's start
  bool has_baseline() const { return first_in_window > 0; }
};

/// The keys of every device matching `glob` (fnmatch(3); "" = all) over the window starting at
/// `from`. `need_baseline(n)` says whether a device with `n` keys in the window needs its
/// baseline when the listing did not show it (one more LIST or a few: a device whose newest key
/// before the window is over an hour older than the window). Devices without keys are left out.
/// Errors: as BucketReader::list().
Result<std::vector<DeviceKeys>> list_heartbeat_keys(
    BucketReader::Impl& reader, std::string_view glob, WallTime from,
    const std::function<bool(std::size_t in_window)>& need_baseline);

}  // namespace fleetpipe::detail
