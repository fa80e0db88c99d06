// fleetpipe/pipeline.hpp — the facade: one object, built from one JSON config, that owns the
// MetricsRegistry, Capture (+ triggers), Buffer and Uploader, and the heartbeat.
//
//   auto p = fleetpipe::Pipeline::create(config, port);     // Result<unique_ptr<Pipeline>>
//   auto imu = (*p)->stream("imu");                          // resolve names once
//   loop {
//     (*p)->push(imu, t, {speed, accel_x});                  // hot path: no allocation
//     (*p)->poll(std::chrono::microseconds(500));            // bounded slice of background work
//   }
//   (*p)->drain(std::chrono::seconds(10));                   // optional: upload what is left
//
// What poll(budget) does, in order, and never longer than the budget (plus the length of one
// step already started — one event's encoding and append, one buffer chunk, one I/O handler):
//   1. advances Capture's time when streams went quiet (`tick`, see "Time" below), so post
//      windows close and stream-less periodic triggers run;
//   2. Buffer housekeeping (a staged chunk, interval fsync, gauges);
//   3. delivers the events that finished since the last poll from Capture's hand-off to the
//      Buffer (encoding, zstd, Buffer::append_staged — with its fsync under `sync`), oldest
//      first, while half the budget is left, and whatever the budget while half the hand-off
//      is taken;
//   4. starts a heartbeat when one is due (see "Heartbeat");
//   5. runs the uploader's and the heartbeat's *ready* I/O handlers until none is ready or the
//      budget is spent. It does not wait for the network: an idle pipeline returns in about a
//      microsecond. Hosts with time to spare may call `run_for(d)`, which does wait for I/O.
// `last_poll()` says where the time of the last poll went; a poll that overran its budget is
// counted in fleetpipe_pipeline_poll_overruns_total and, by its largest part, in
// fleetpipe_pipeline_poll_overrun_causes_total{cause}, and logged at debug level with its parts.
//
// push/push_blob/push_rows/fire/tick never do I/O, encode or compress, in any durability mode:
// an event they finish waits in Capture's hand-off (2 x streams slots, at least 4; capture.hpp
// "Delivery") until the next poll. An event counts as *accepted* when poll() has appended it to
// the Buffer (fleetpipe_capture_events_total); from then on the Buffer's durability mode says
// what a power cut may lose. Before that — open, or closed and waiting for poll — a crash loses
// it, and a hand-off found full (the host did not poll while more events finished than it has
// slots) drops the newest event, counted in
// fleetpipe_capture_events_dropped_total{reason="handoff_full"}.
//
// Caveats (read first)
//  - No hidden threads: nothing happens between calls. A host that stops calling poll() stops
//    uploads (data stays safe in the Buffer). Hosts that prefer a collector thread opt in with
//    fleetpipe/pipeline_thread.hpp (PipelineThread: a wait-free queue in front of this class).
//  - Not thread-safe: one thread (the host's loop) calls push/poll/run_for/drain/status. The
//    exceptions are `set_network_state`, `pause`, `resume`, `set_rate`, `flush_uploads`, which
//    any thread may call (they take effect on the next poll), and reading metrics().
//  - The Port's objects must outlive the Pipeline. Members the host leaves null get defaults;
//    the network cell and the log sink default to objects *owned by this pipeline* (not the
//    process-wide ones), so several pipelines in one process do not share a network state.
//  - Time: `t` given to push() is the host's monotonic time in seconds (any origin, as in
//    capture.hpp). poll() ticks Capture with `last_t + (clock.monotonic() - when last_t was
//    first seen)`, i.e. it extrapolates the host's timebase with the Port clock. A host whose
//    `t` does not advance with the Port clock should call `tick(t)` itself and set
//    "pipeline": {"auto_tick": false}.
//
// Heartbeat: every `heartbeat_interval` (Port clock, monotonic), and at the first poll when
// `heartbeat_on_start`, the pipeline PUTs a small JSON object to
//   {uploader.prefix}/_heartbeat/device={device_id}/{YYYYMMDDTHHMMSS.mmmZ}-{seq}.json
// holding, compactly (`fleetpipe.heartbeat/2`), the device, time, labels, SDK version, uptime,
// network and upload state, backlog, evictions/rejections, pauses by reason, fires per trigger,
// bytes sent, errors, the trailing day's deltas and the campaign state; the full metrics JSON
// export only every `heartbeat_metrics_every`-th time or on request (schema: docs/pipeline.md). It goes through the same endpoint, credentials and TLS settings as
// the uploader, on its own connection, under the uploader's rate cap (one token bucket for every
// byte sent) and clock correction; it is skipped while the network is offline or uploads are
// paused (counted), and a failed one is not retried (the next one carries newer numbers); all are
// counted in fleetpipe_pipeline_heartbeats_total{result}.
#pragma once

#include <chrono>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "fleetpipe/buffer.hpp"
#include "fleetpipe/capture.hpp"
#include "fleetpipe/config.hpp"
#include "fleetpipe/error.hpp"
#include "fleetpipe/metrics.hpp"
#include "fleetpipe/port.hpp"
#include "fleetpipe/trigger.hpp"
#include "fleetpipe/uploader.hpp"

namespace fleetpipe {

/// Totals of one trigger, by name.
struct NamedTriggerStats {
  std::string name;
  TriggerStats stats;
};

/// A point-in-time view of the whole pipeline (cheap; no I/O). No secrets.
struct PipelineStatus {
  std::string device_id;
  WallTime time{};                    ///< Port clock wall time of the snapshot
  double uptime_s = 0;                ///< Port clock monotonic time since create()
  NetworkState network = NetworkState::online;
  CaptureStats capture;
  std::vector<NamedTriggerStats> triggers;  ///< config order
  BufferStats buffer;
  UploaderStatus uploader;
  std::uint64_t polls = 0;
  std::uint64_t heartbeats_sent = 0;
  std::uint64_t heartbeats_failed = 0;
  std::uint64_t heartbeats_skipped = 0;  ///< due while offline or uploads paused
  std::optional<WallTime> last_heartbeat;  ///< wall time of the last stored heartbeat
  std::string last_heartbeat_key;          ///< its object key
  std::string last_error;  ///< newest failure of any component, for people ("" if none)
};

/// Where the time of one poll() went (Pipeline::last_poll()): wall time of each step, so a poll
/// that overran its budget is explained by its cause.
struct PollProfile {
  std::chrono::nanoseconds budget{}, total{};
  std::chrono::nanoseconds tick{};           ///< Capture::tick (auto-tick): trigger evaluation
  std::chrono::nanoseconds encode{};         ///< encoding finished events (JSON index, zstd)
  std::chrono::nanoseconds buffer_append{};  ///< Buffer::append_staged (fsync wait under sync)
  std::chrono::nanoseconds buffer_poll{};    ///< Buffer::poll: staged chunk write, interval sync
  std::chrono::nanoseconds gauges{};         ///< refreshing gauges (Buffer::stats)
  std::chrono::nanoseconds heartbeat{};      ///< building and starting a heartbeat
  std::chrono::nanoseconds uploader_io{};    ///< I/O handlers: TLS writes/reads, SigV4 and
                                             ///< payload hashing, buffer reads
  std::uint32_t events_delivered = 0;
  std::uint32_t encode_slices = 0;  ///< Capture::deliver_slice calls (an event takes several)
  std::uint32_t io_handlers = 0;
  /// Name of the largest step ("tick", "encode", "buffer_append", "buffer_poll", "gauges",
  /// "heartbeat", "uploader_io").
  const char* cause() const noexcept;
  bool overran() const noexcept { return total > budget; }
};

/// The facade. Create with `create`; not copyable, not movable (hand out the unique_ptr).
class Pipeline {
 public:
  /// Builds and wires every component: opens the Buffer (config.buffer.path), creates Capture
  /// with the streams and triggers, creates the Uploader (unless uploader.enabled is false) and
  /// the heartbeat client, registers the pipeline metrics. `config.uploader.device_id` is set
  /// from `config.device_id`.
  /// Errors: invalid_config (any component; JSON pointer set when it names a key), io_error
  /// (buffer directory), tls_error (CA file), insecure_refused.
  static Result<std::unique_ptr<Pipeline>> create(Config config, const Port& port = {});
  /// load_config_file + create. Errors: as both.
  static Result<std::unique_ptr<Pipeline>> create_from_file(const std::string& path,
                                                            const Port& port = {});
  /// Cancels uploads in flight (their records stay in the Buffer and come back next time),
  /// finishes open events into the Buffer (Capture::flush), fsyncs the Buffer. Never blocks on
  /// the network; call drain() first to upload what is left.
  ~Pipeline();
  Pipeline(const Pipeline&) = delete;
  Pipeline& operator=(const Pipeline&) = delete;

  // ---- setup-time lookups (forward to Capture) ------------------------------------------------
  StreamHandle stream(std::string_view name) const noexcept;
  TriggerHandle trigger(std::string_view name) const noexcept;

  // ---- hot path (forward to Capture; see capture.hpp) ----------------------------------------
  void push(StreamHandle stream, double t, const double* values, std::size_t n) noexcept;
  void push(StreamHandle stream, double t, std::initializer_list<double> values) noexcept {
    push(stream, t, values.begin(), values.size());
  }
  void push_blob(StreamHandle stream, double t, std::string_view bytes) noexcept;
  /// A block of numeric rows (see Capture::push_rows): the same result as n push() calls.
  void push_rows(StreamHandle stream, const double* times, const double* values,
                 std::size_t n) noexcept;
  /// By name (a lookup per call). Errors: invalid_argument (unknown stream/channel, wrong kind).
  Result<void> push(std::string_view stream, double t,
                    std::initializer_list<std::pair<std::string_view, double>> values);
  Result<void> push_blob(std::string_view stream, double t, std::string_view bytes);
  /// Fires a trigger now (see Capture::fire). Errors: invalid_argument.
  Result<bool> fire(std::string_view trigger, double t);
  /// Advances Capture's time explicitly (see Capture::tick and "Time" above).
  void tick(double t) noexcept;

  // ---- driving ----------------------------------------------------------------------------------
  /// One bounded slice of background work (see the top of this file). Returns true when work is
  /// pending (records queued for upload, a request or heartbeat in flight), false when idle.
  /// Never blocks on the network. Uses the config's `poll_budget` when called without argument.
  /// Out of memory inside the slice ends it early (counted in
  /// fleetpipe_pipeline_poll_out_of_memory_total, logged) and returns true; it never throws.
  bool poll(std::chrono::microseconds budget);
  bool poll();
  /// Like poll() but waits for network I/O for up to `d` (for hosts with nothing else to do,
  /// and for drain). Returns as poll().
  bool run_for(std::chrono::microseconds d);
  /// Finishes open events, asks the uploader to upload everything queued now, and runs until the
  /// Buffer holds nothing uploadable (parked records excepted) and the uploader is idle, or
  /// `timeout` (real time) passes; then sends a final heartbeat (when enabled) and waits for it
  /// within what is left of the timeout.
  /// Errors: timeout (records left; message says how many), paused (uploads are paused or the
  /// network is offline/metered-paused, so nothing could drain; records stay in the Buffer).
  Result<void> drain(std::chrono::milliseconds timeout);

  // ---- host hooks (port layer) -----------------------------------------------------------------
  /// Sets the network cell this pipeline reads (the Port's, or its own). Any thread.
  void set_network_state(NetworkState s) noexcept;
  NetworkState network_state() const noexcept;
  /// Host pause/resume of uploads, rate change, upload-now (Uploader). Any thread.
  void pause_uploads();
  void resume_uploads();
  void set_upload_rate(double bytes_per_second, std::uint64_t burst_bytes = 0);
  void flush_uploads();
  /// Starts a heartbeat at the next poll whatever the interval (if none is in flight).
  void request_heartbeat() noexcept;
  /// Same, and that heartbeat carries the full metrics export (`pipeline.heartbeat_metrics_every`).
  void request_metrics_heartbeat() noexcept;

  // ---- observability ---------------------------------------------------------------------------
  PipelineStatus status() const;
  /// Where the time of the last poll() went (zero before the first).
  const PollProfile& last_poll() const noexcept;
  /// Every component's metrics, gauges refreshed first: Prometheus text 0.0.4 / JSON
  /// (MetricsRegistry formats).
  std::string metrics_prometheus() const;
  std::string metrics_json() const;
  /// The heartbeat document as it would be uploaded now (JSON text).
  std::string heartbeat_json() const;
  /// The object key a heartbeat taken at `wall` gets.
  std::string heartbeat_key(WallTime wall) const;

  // ---- components (for what the facade does not forward) ------------------------------------
  Capture& capture() noexcept;
  Buffer& buffer() noexcept;
  /// Precondition: uploader enabled (has_uploader()).
  Uploader& uploader() noexcept;
  bool has_uploader() const noexcept;
  MetricsRegistry& metrics() noexcept;
  const Config& config() const noexcept;
  /// The Port with defaults filled in (what every component uses).
  const Port& port() const noexcept;

  struct Impl;  // internal

 private:
  explicit Pipeline(std::unique_ptr<Impl> impl) noexcept;
  std::unique_ptr<Impl> impl_;
};

}  // namespace fleetpipe
