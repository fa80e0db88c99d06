// Internal: shaping — host pause, network state, schedule windows and the upload rate they give.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <utility>

#include "s3/token_bucket.hpp"
#include "fleetpipe/metrics.hpp"
#include "fleetpipe/port.hpp"
#include "fleetpipe/uploader.hpp"

namespace fleetpipe::uploader_internal {

/// The schedule window in force at `wall`: whether it pauses uploads and its rate (0 = base).
struct ScheduleVerdict {
  bool pause = false;
  double bytes_per_second = 0;
};
ScheduleVerdict schedule_at(const UploaderScheduleConfig& s, WallTime wall);

/// Decides, once per engine tick, whether uploads are paused (and why) and what rate the shared
/// token bucket runs at; counts pauses and paused time. set_pending_rate / set_host_paused may
/// be called from any thread; the rest from the driving thread.
class Shaper {
 public:
  Shaper(const UploaderConfig& cfg, const Port& port, detail::TokenBucket& bucket, MetricsRegistry& m);

  void set_pending_rate(double rate, std::uint64_t burst);
  void set_host_paused(bool p) { host_paused_.store(p); }
  bool host_paused() const { return host_paused_.load(); }

  /// Starts the paused-time accounting at `now`.
  void start(MonoTime now) { last_tick_mono_ = now; }
  /// Applies a pending rate, the network state and the schedule to the bucket and the pause
  /// flags (logged and counted on every change).
  void evaluate();
  /// Paused as of the last evaluate().
  bool paused() const { return paused_host_ || paused_network_ || paused_schedule_; }
  bool paused_by_network() const { return paused_network_; }
  bool paused_by_schedule() const { return paused_schedule_; }
  /// Host and network as of now, the schedule as of the last evaluate().
  bool paused_now() const;

 private:
  std::optional<std::pair<double, std::uint64_t>> take_pending_rate();
  void log(LogLevel l, const std::string& msg);

  const UploaderConfig& cfg_;
  const Port& port_;
  detail::TokenBucket& bucket_;
  double base_rate_ = 0;
  std::uint64_t base_burst_ = 0;
  bool paused_host_ = false, paused_network_ = false, paused_schedule_ = false;
  std::atomic<bool> host_paused_{false};
  std::mutex ctl_mu_;
  std::optional<std::pair<double, std::uint64_t>> pending_rate_;
  MonoTime last_tick_mono_{};
  Gauge* rate_gauge_;
  Gauge* paused_seconds_;
  std::map<std::string, Gauge*> paused_reason_seconds_;  ///< overlapping: two reasons can hold at once
  std::map<std::string, Counter*> pauses_;
};

}  // namespace fleetpipe::uploader_internal
