// Internal: Pipeline::Impl, the state behind one Pipeline (pipeline.cpp drives it, heartbeat.cpp
// builds and sends its heartbeat document).
#pragma once

#include "fleetpipe/pipeline.hpp"

#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <mutex>
#include <new>
#include <boost/asio/io_context.hpp>
#include <nlohmann/json.hpp>
#include "common/config_parsers.hpp"
#include "common/utc_time.hpp"
#include "s3/bucket_layout.hpp"
#include "fleetpipe/asio.hpp"
#include "fleetpipe/campaign.hpp"
#include "fleetpipe/version.hpp"

namespace fleetpipe {

namespace pipeline_internal {

using SteadyClock = std::chrono::steady_clock;

inline double seconds_between(MonoTime a, MonoTime b) {
  return std::chrono::duration<double>(b - a).count();
}

inline std::int64_t unix_ns(WallTime t) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
}

// Forwards every log line to the host's sink and remembers the newest error for status() and the
// heartbeat. Called on the driving thread only (port.hpp), so no lock is needed for last_.
class TrackingLogSink final : public LogSink {
 public:
  void set_inner(LogSink* inner) noexcept { inner_ = inner; }
  void write(LogLevel level, std::string_view component,
             std::string_view message) noexcept override {
    if (level >= LogLevel::error) {
      ++errors_;
      try {
        last_.assign(component.data(), component.size());
        last_ += ": ";
        last_.append(message.data(), message.size());
      } catch (...) {  // out of memory: keep the previous one
      }
    }
    if (inner_) inner_->write(level, component, message);
  }
  // Errors are always taken (they feed status() and the heartbeat); the rest as the host says.
  bool enabled(LogLevel level) const noexcept override {
    return level >= LogLevel::error || (inner_ && inner_->enabled(level));
  }
  const std::string& last_error() const noexcept { return last_; }
  std::uint64_t errors() const noexcept { return errors_; }  ///< error-level lines so far
  void set_last_error(std::string s) { last_ = std::move(s); }

 private:
  LogSink* inner_ = nullptr;
  std::string last_;
  std::uint64_t errors_ = 0;
};


// The Buffer sink behind Capture's hand-off, timing its appends for PollProfile.
class TimedBufferSink final : public EventSink {
 public:
  explicit TimedBufferSink(Buffer& buffer) noexcept : inner_(buffer) {}
  AppendOutcome deliver(const RecordMeta& meta, std::string_view payload) override {
    const auto t0 = std::chrono::steady_clock::now();
    AppendOutcome o = inner_.deliver(meta, payload);
    spent += std::chrono::steady_clock::now() - t0;
    return o;
  }
  std::chrono::nanoseconds spent{};

 private:
  BufferSink inner_;
};

}  // namespace pipeline_internal

// ---------------------------------------------------------------------------------------------
// Impl
// ---------------------------------------------------------------------------------------------

struct Pipeline::Impl {
  Config config;
  // Port pieces the pipeline owns when the host leaves them null (not the process-wide ones).
  NetworkStatus own_network;
  StderrLogSink own_log{LogLevel::warning};
  pipeline_internal::TrackingLogSink log_sink;
  Port port;

  // Declaration order = construction order; destruction runs backwards (uploader and heartbeat
  // client before the io_context they run on, uploader before buffer).
  MetricsRegistry metrics;
  std::unique_ptr<Buffer> buffer;
  std::unique_ptr<pipeline_internal::TimedBufferSink> sink;
  std::unique_ptr<Capture> capture;
  // One io_context for the uploader and the heartbeat, run only inside poll/run_for/drain.
  boost::asio::io_context ioc;
  std::unique_ptr<Uploader> uploader;
  // The campaign agent when the config has a "campaigns" section (docs/campaigns.md); null
  // otherwise. The heartbeat reports its status() and the uploader attributes data to in_force().
  std::unique_ptr<CampaignAgent> campaigns;
  // The trigger set the agent asked for (campaign.cpp in this folder): switched in at the first
  // poll with no event open; nullopt in campaign_want = the local triggers.
  bool campaign_switch_due = false;
  bool campaign_rate_set = false;  // the uploader runs at a campaign's rate
  bool campaign_booting = false;   // inside CampaignAgent::resume(): switch at once
  std::optional<CampaignApplication> campaign_want;
  MonoTime campaign_due_since{};
  Counter* campaign_switches = nullptr;
  Counter* campaign_forced = nullptr;
  Counter* campaign_switch_failed = nullptr;

  // Heartbeat: the document is built here, sent by the uploader (Uploader::send_heartbeat;
  // docs/pipeline.md).
  bool hb_enabled = false;
  bool hb_in_flight = false;
  std::atomic<bool> hb_requested{false};
  std::atomic<bool> hb_metrics_requested{false};  ///< the next heartbeat carries the metrics
  MonoTime next_heartbeat{};
  std::uint64_t hb_seq = 0;
  std::uint64_t hb_sent = 0, hb_failed = 0, hb_skipped = 0;
  std::optional<WallTime> last_heartbeat;
  std::string last_heartbeat_key;
  // Hourly checkpoints of the counters behind the heartbeat's trailing-day figures ("day").
  struct HbCheckpoint {
    MonoTime t{};
    double tx = 0, ev = 0;
  };
  std::array<HbCheckpoint, 26> hb_ring{};
  std::size_t hb_ring_head = 0, hb_ring_n = 0;

  // Time bookkeeping for auto-tick.
  MonoTime created{};
  double last_t = 0;        // largest t pushed (host timebase)
  bool have_t = false;
  bool have_seen = false;
  double seen_t = 0;        // last_t as of the previous poll ...
  MonoTime seen_mono{};     // ... and the Port time at which poll first saw it
  double ticked_t = 0;

  MonoTime last_refresh{};  // gauges

  // Metrics owned by the pipeline.
  Counter* polls = nullptr;
  Counter* poll_overruns = nullptr;
  Counter* poll_overrun_cause[7] = {};  // by PollProfile::cause(), kPollCauses order
  PollProfile last_poll;
  std::size_t handoff_slots = 0;  // Capture's hand-off (CaptureOptions::handoff_events)
  Counter* poll_out_of_memory = nullptr;
  Counter* hb_ok = nullptr;
  Counter* hb_fail = nullptr;
  Counter* hb_skip = nullptr;
  Counter* hb_skip_paused = nullptr;
  Gauge* uptime = nullptr;
  Gauge* backlog_records[8] = {};
  Gauge* backlog_bytes[8] = {};
  Gauge* backlog_leased = nullptr;
  Gauge* backlog_parked = nullptr;
  Gauge* wear_written = nullptr;
  Gauge* wear_ratio = nullptr;
  Gauge* uploads_paused = nullptr;
  Gauge* network_state = nullptr;

  void register_metrics();
  Result<void> start_campaigns();                   // campaign.cpp
  Result<void> switch_triggers(MonoTime now);       // campaign.cpp
  void poll_campaigns(MonoTime now);                // campaign.cpp
  void refresh_gauges(MonoTime now);
  void auto_tick(MonoTime now);
  void maybe_start_heartbeat(MonoTime now);
  void heartbeat_done(const HeartbeatOutcome& o);
  std::size_t run_ready(pipeline_internal::SteadyClock::time_point start,
                        pipeline_internal::SteadyClock::time_point deadline);
  // What one I/O handler is expected to cost: the longest of the recent ones (decaying), so
  // run_ready starts a handler only where it fits in what is left of the budget.
  std::chrono::nanoseconds handler_cost{0};
  std::uint32_t starved_polls = 0;  // polls in a row that ran no handler because none fitted
  bool pending() const;
  void heartbeat_checkpoint(MonoTime now);
  bool next_heartbeat_has_metrics() const;
  nlohmann::json heartbeat_doc(bool with_metrics) const;
  std::string heartbeat_key(WallTime wall) const;
  void note_error(std::string_view component, std::string_view message) {
    log(port, LogLevel::error, component, message);
  }
};

}  // namespace fleetpipe
