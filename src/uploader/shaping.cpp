// Shaping: host pause, network state, schedule windows and the upload rate they give.
#include "uploader/shaping.hpp"

#include <algorithm>
#include <chrono>

namespace fleetpipe::uploader_internal {

ScheduleVerdict schedule_at(const UploaderScheduleConfig& s, WallTime wall) {
  ScheduleVerdict v;
  if (s.windows.empty() && !s.pause_outside_windows) return v;
  auto secs = std::chrono::duration_cast<std::chrono::seconds>(wall.time_since_epoch()).count();
  long long local = secs + s.utc_offset_minutes * 60LL;
  int minute = static_cast<int>(((local / 60) % 1440 + 1440) % 1440);
  for (const auto& w : s.windows) {
    bool in = w.start_minute == w.end_minute ||
              (w.start_minute < w.end_minute ? (minute >= w.start_minute && minute < w.end_minute)
                                             : (minute >= w.start_minute || minute < w.end_minute));
    if (in) {
      v.pause = w.pause;
      v.bytes_per_second = w.bytes_per_second;
      return v;
    }
  }
  v.pause = s.pause_outside_windows;
  return v;
}

Shaper::Shaper(const UploaderConfig& cfg, const Port& port, detail::TokenBucket& bucket, MetricsRegistry& m)
    : cfg_(cfg), port_(port), bucket_(bucket), base_rate_(cfg.bytes_per_second), base_burst_(cfg.burst_bytes) {
  rate_gauge_ = &m.gauge("fleetpipe_uploader_rate_bytes_per_second",
                         "Effective upload rate limit now (0 = unlimited)");
  for (const char* reason : {"host", "schedule", "network"}) {
    pauses_[reason] = &m.counter("fleetpipe_uploader_pauses_total",
                                 "Times uploads were paused, by reason", {{"reason", reason}});
    paused_reason_seconds_[reason] =
        &m.gauge("fleetpipe_uploader_paused_reason_seconds",
                 "Cumulative seconds each pause reason held (reasons can overlap)", {{"reason", reason}});
  }
  paused_seconds_ = &m.gauge("fleetpipe_uploader_paused_seconds",
                             "Cumulative seconds spent paused (any reason)");
  rate_gauge_->set(cfg.bytes_per_second);
}

void Shaper::log(LogLevel l, const std::string& msg) { fleetpipe::log(port_, l, "uploader", msg); }

void Shaper::set_pending_rate(double rate, std::uint64_t burst) {
  std::lock_guard<std::mutex> g(ctl_mu_);
  pending_rate_ = std::make_pair(rate, burst);
}

std::optional<std::pair<double, std::uint64_t>> Shaper::take_pending_rate() {
  std::lock_guard<std::mutex> g(ctl_mu_);
  auto r = pending_rate_;
  pending_rate_.reset();
  return r;
}

bool Shaper::paused_now() const {
  NetworkState ns = port_.network->get();
  return paused() || host_paused_.load() || ns == NetworkState::offline ||
         (ns == NetworkState::metered && cfg_.pause_when_metered);
}

void Shaper::evaluate() {
  MonoTime now = port_.clock->monotonic();
  if (auto pr = take_pending_rate()) {
    base_rate_ = pr->first;
    base_burst_ = pr->second;
  }
  bool host = host_paused_.load();
  NetworkState ns = port_.network->get();
  bool network = ns == NetworkState::offline || (ns == NetworkState::metered && cfg_.pause_when_metered);
  double rate = base_rate_;
  ScheduleVerdict sv = schedule_at(cfg_.schedule, port_.clock->wall());
  bool schedule = sv.pause;
  if (sv.bytes_per_second > 0) rate = sv.bytes_per_second;
  if (ns == NetworkState::metered && !cfg_.pause_when_metered && cfg_.metered_bytes_per_second > 0) {
    rate = rate > 0 ? std::min(rate, cfg_.metered_bytes_per_second) : cfg_.metered_bytes_per_second;
  }
  if (rate != bucket_.rate() || (rate > 0 && base_burst_ != 0 && base_burst_ != bucket_.burst())) {
    bucket_.set_rate(rate, base_burst_, now);
    rate_gauge_->set(rate);
    log(LogLevel::info, "upload rate now " + (rate > 0 ? std::to_string(static_cast<long long>(rate)) + " B/s" : std::string("unlimited")));
  }
  // Pause accounting.
  const bool host_before = paused_host_, network_before = paused_network_,
             schedule_before = paused_schedule_;
  bool any_before = host_before || network_before || schedule_before;
  auto count = [&](bool before, bool after, const char* reason) {
    if (!before && after) {
      pauses_[reason]->inc();
      log(LogLevel::info, std::string("uploads paused (") + reason + ")");
    } else if (before && !after) {
      log(LogLevel::info, std::string("uploads resumed (") + reason + ")");
    }
  };
  count(paused_host_, host, "host");
  count(paused_network_, network, "network");
  count(paused_schedule_, schedule, "schedule");
  paused_host_ = host;
  paused_network_ = network;
  paused_schedule_ = schedule;
  if (any_before) {
    const double dt = std::chrono::duration<double>(now - last_tick_mono_).count();
    paused_seconds_->add(dt);
    if (host_before) paused_reason_seconds_["host"]->add(dt);
    if (network_before) paused_reason_seconds_["network"]->add(dt);
    if (schedule_before) paused_reason_seconds_["schedule"]->add(dt);
  }
  last_tick_mono_ = now;
}

}  // namespace fleetpipe::uploader_internal
