// fleetpipe/pipeline_thread.hpp — the optional own-thread mode: one Pipeline driven by one
// thread that the host starts explicitly, fed through a preallocated lock-free queue.
//
//   auto p = fleetpipe::Pipeline::create(config, port);              // as usual
//   fleetpipe::PipelineThreadOptions o;                             // queue and blob slot sizes
//   auto th = fleetpipe::PipelineThread::create(std::move(*p), o);  // takes ownership
//   auto imu = (*th)->stream("imu");                                // resolve names once
//   (*th)->start();                                                 // the ONLY place a thread starts
//   loop {
//     (*th)->push(imu, t, {speed, accel_x});   // wait-free, no allocation, never blocks
//   }
//   (*th)->drain(std::chrono::seconds(10));    // optional: upload what is left (on the thread)
//   (*th)->stop();                             // joins; everything queued is processed
//
// When to use it: when the host's loop cannot spare the time of poll() (a real-time loop, a
// loop whose tick budget is smaller than poll's worst handler). The pipeline thread does all of
// Capture (trigger evaluation, event encoding), Buffer writes (fsync) and uploads; the host only
// copies the sample into the queue (tens of nanoseconds for a row, a memcpy for a blob).
// Without start(), nothing runs on its own: fleetpipe's default stays "no hidden threads".
//
// The queue (allocated once, in create()):
//  - `queue_capacity` entries, each a numeric row of up to the widest numeric stream's channel
//    count, a blob reference, a fire or a tick, in push order;
//  - `blob_slots` slots of `blob_slot_bytes` each for the blob bytes (a blob is copied into one
//    slot; it must fit in one).
//  Memory: about queue_capacity × (32 + 8 × max channels) + blob_slots × blob_slot_bytes bytes.
//  When an entry or (for a blob) a slot is not free, or a blob is larger than a slot, the push
//  returns false and the sample is dropped and counted:
//    fleetpipe_pipeline_thread_dropped_samples_total{reason="queue_full"|"blob_too_large"}
//  (in the pipeline's registry), and logged by the pipeline thread at the first drop and at each
//  power of two. The host is never blocked.
//
// The pipeline thread's loop: take every queued entry in order and hand it to the Pipeline
// (Pipeline::push / push_blob, Capture::fire, Pipeline::tick), run requested calls, then one
// Pipeline::poll(). Then, if a request is in flight on the network, wait for network I/O in a
// ≤ 2 ms slice (Pipeline::run_for); otherwise sleep until woken or `idle_wait` passes. It
// never spins: an idle pipeline thread wakes about 1/idle_wait times per second. The host wakes a
// sleeping thread (a futex wake on Linux: one syscall, no lock) only when the queue is a quarter
// full or half of the blob slots are used, and on every control call; so a quiet stream's samples
// reach Capture within `idle_wait`, and Capture's times are the host's `t`, never the arrival time.
//
// Thread context (the contract; the TSan CI step checks it):
//  - Producer calls (`push`, `push_blob`, `fire`, `tick`): one thread at a time (the queue has
//    a single producer), usually the host's loop. Wait-free, allocation-free, noexcept.
//  - Control calls (`pause_uploads`, `resume_uploads`, `set_upload_rate`, `flush_uploads`,
//    `set_network_state`, `request_heartbeat`): any thread, any time between create() and
//    destruction. They take effect at the pipeline thread's next poll (they wake it).
//  - Calls run on the pipeline thread (`call`, `status`, `metrics_prometheus`, `metrics_json`,
//    `drain`): any thread; they block the caller until the pipeline thread has run them (after
//    every entry queued before the call). Not for the hot loop. When the thread is not running
//    they run on the calling thread.
//  - `stats()`, `running()`, `metrics()` values, `stream()`, `trigger()`: any thread.
//  - Lifecycle (`start`, `stop`, `release`, destructor): the owner's thread, never concurrently
//    with a producer call.
//  - While the thread runs, every Port call (clock, filesystem stats, log sink, credentials)
//    is made on the pipeline thread: the Port's objects must tolerate that (the defaults do;
//    FakeClock must not be advanced from another thread while the pipeline thread runs).
//  - `pipeline()` gives the Pipeline itself: while the thread runs, use only its thread-safe
//    members (see pipeline.hpp) on it; everything else goes through `call()`.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "fleetpipe/capture.hpp"
#include "fleetpipe/error.hpp"
#include "fleetpipe/metrics.hpp"
#include "fleetpipe/pipeline.hpp"
#include "fleetpipe/port.hpp"

namespace fleetpipe {

/// Sizes and thread settings of a PipelineThread. Plain data; validated by create().
struct PipelineThreadOptions {
  /// Queue entries (numeric rows, blobs, fires, ticks waiting for the thread). 1 .. 2^24.
  std::size_t queue_capacity = 1024;
  /// Blob slots (blobs waiting for the thread). 0 .. queue_capacity (0, or blob_slot_bytes 0:
  /// no blob storage, every non-empty blob is dropped as blob_too_large).
  std::size_t blob_slots = 8;
  /// Largest blob a slot holds (bytes). 0 .. 1 GiB; blob_slots × blob_slot_bytes ≤ 4 GiB.
  std::size_t blob_slot_bytes = 256 * 1024;
  /// Longest sleep of an idle pipeline thread (bounds the delay before a quiet queue, the
  /// auto-tick and the uploader's timers are looked at). 1 ms .. 10 s.
  std::chrono::milliseconds idle_wait{50};
  /// Thread name (Linux pthread_setname_np: visible in top -H, ps -L). At most 15 bytes; empty
  /// leaves the name unchanged.
  std::string thread_name = "fleetpipe";
  /// Niceness of the pipeline thread (Linux setpriority on the thread id; -20 .. 19), e.g. 10 to
  /// run the collector below the host. Unset: inherited. Lowering it below the process's value
  /// needs privileges; a refusal is logged at warning level and the thread runs anyway.
  std::optional<int> nice;
  /// Called first on the pipeline thread, before any pipeline work (e.g. sched_setscheduler,
  /// CPU affinity, a cgroup). Must not call back into this PipelineThread. May be empty.
  std::function<void()> on_thread_start;
};

/// Totals of the queue (also exported as fleetpipe_pipeline_thread_* metrics). Any thread.
struct PipelineThreadStats {
  std::uint64_t queued = 0;                  ///< entries accepted by push/push_blob/fire/tick
  std::uint64_t processed = 0;               ///< entries handed to the Pipeline
  std::uint64_t dropped_queue_full = 0;      ///< no free entry (or no free blob slot)
  std::uint64_t dropped_blob_too_large = 0;  ///< blob larger than blob_slot_bytes
  std::uint64_t queue_high_water = 0;        ///< most entries seen waiting at once
  std::uint64_t wakeups = 0;                 ///< iterations of the thread's loop
  bool running = false;                      ///< between start() and stop()
};

/// A Pipeline on its own thread. Create with `create`; not copyable, not movable.
class PipelineThread {
 public:
  /// Takes ownership of `pipeline`, validates `options`, allocates the queue and the blob
  /// slots, registers the fleetpipe_pipeline_thread_* metrics in the pipeline's registry.
  /// Starts no thread (see start()).
  /// Errors: invalid_argument (null pipeline; an option out of its range, message names it).
  static Result<std::unique_ptr<PipelineThread>> create(std::unique_ptr<Pipeline> pipeline,
                                                        PipelineThreadOptions options = {});
  /// stop(), then destroys the Pipeline (which finishes open events into the Buffer and fsyncs
  /// it; see ~Pipeline). To keep the Pipeline, call release() first.
  ~PipelineThread();
  PipelineThread(const PipelineThread&) = delete;
  PipelineThread& operator=(const PipelineThread&) = delete;

  // ---- lifecycle (owner's thread) ------------------------------------------------------------
  /// Starts the pipeline thread. Entries queued before are processed first. May be called again
  /// after stop(). Errors: invalid_argument (already running, or released), internal (the OS
  /// refused to create a thread; nothing runs).
  Result<void> start();
  /// Asks the thread to finish, waits for it (it processes every entry queued before this call
  /// and runs pending calls; a call in progress, e.g. drain(), finishes first), and joins it.
  /// Entries pushed after stop() are processed by the next start() or by stop()/the destructor.
  /// Does not drain uploads (call drain() before). When not running it processes what is
  /// queued on the calling thread. Ignored when called on the pipeline thread (from call()).
  void stop() noexcept;
  /// stop(), then hands the Pipeline back (driven by the caller from now on). Afterwards only
  /// stats(), running() and the destructor may be called; producer calls return false and count
  /// nothing. Returns null when already released.
  std::unique_ptr<Pipeline> release() noexcept;
  bool running() const noexcept;

  // ---- setup-time lookups (any thread; a name search) ---------------------------------------
  StreamHandle stream(std::string_view name) const noexcept;
  TriggerHandle trigger(std::string_view name) const noexcept;

  // ---- producer (one thread at a time; wait-free, no allocation, never blocks) --------------
  /// Queues one numeric row (copied: the first min(n, the stream's channel count) values; see
  /// Capture::push for missing channels). Returns false when the queue is full (counted,
  /// reason queue_full). A bad handle or a blob stream is queued as is and counted by Capture.
  bool push(StreamHandle stream, double t, const double* values, std::size_t n) noexcept;
  bool push(StreamHandle stream, double t, std::initializer_list<double> values) noexcept {
    return push(stream, t, values.begin(), values.size());
  }
  /// Queues one blob, copied into a free blob slot. Returns false when it is larger than
  /// blob_slot_bytes (counted, reason blob_too_large) or no entry or slot is free (queue_full).
  bool push_blob(StreamHandle stream, double t, std::string_view bytes) noexcept;
  /// Queues Capture::fire(trigger, t) (a manual trigger, in order with the samples). Returns
  /// false when the queue is full (counted, reason queue_full). A bad handle is counted by
  /// Capture when processed.
  bool fire(TriggerHandle trigger, double t) noexcept;
  /// Queues Pipeline::tick(t) (hosts with "auto_tick": false). Returns false when full.
  bool tick(double t) noexcept;

  // ---- controls (any thread; forward to the Pipeline's thread-safe calls and wake the thread)
  void set_network_state(NetworkState s) noexcept;
  void pause_uploads();
  void resume_uploads();
  void set_upload_rate(double bytes_per_second, std::uint64_t burst_bytes = 0);
  void flush_uploads();
  void request_heartbeat() noexcept;

  // ---- calls run on the pipeline thread (any thread; block the caller) ----------------------
  /// Runs `fn(pipeline)` on the pipeline thread between two polls, after every entry queued
  /// before this call, and returns when it has run. Runs it on the calling thread when the
  /// thread is not running (or when called from the pipeline thread itself, e.g. from a log
  /// sink — though sinks must not call back into fleetpipe). `fn` must not call stop/release.
  /// Errors: timeout (the thread did not pick the call up within `timeout`; `fn` will not run),
  /// internal (`fn` threw; the message says what), invalid_argument (released).
  Result<void> call(const std::function<void(Pipeline&)>& fn, std::chrono::milliseconds timeout);
  /// Pipeline::status() taken on the pipeline thread. Errors: as call().
  Result<PipelineStatus> status(std::chrono::milliseconds timeout = std::chrono::seconds(1));
  /// Pipeline::metrics_prometheus() / metrics_json() (gauges refreshed) taken on the pipeline
  /// thread. Errors: as call(). (The registry's values can also be read directly from any
  /// thread: metrics().)
  Result<std::string> metrics_prometheus(std::chrono::milliseconds timeout = std::chrono::seconds(1));
  Result<std::string> metrics_json(std::chrono::milliseconds timeout = std::chrono::seconds(1));
  /// Pipeline::drain(timeout) run on the pipeline thread. While it runs the queue is not taken
  /// (pushes may fill it and drop). Errors: as Pipeline::drain, plus those of call().
  Result<void> drain(std::chrono::milliseconds timeout);

  // ---- observability (any thread) -----------------------------------------------------------
  PipelineThreadStats stats() const noexcept;
  /// The pipeline's registry (values are lock-free reads; exporting takes its lock).
  MetricsRegistry& metrics() noexcept;
  /// The owned Pipeline (see the thread-context notes at the top). Precondition: not released.
  Pipeline& pipeline() noexcept;
  const PipelineThreadOptions& options() const noexcept;

  struct Impl;  // internal

 private:
  explicit PipelineThread(std::unique_ptr<Impl> impl) noexcept;
  std::unique_ptr<Impl> impl_;
};

}  // namespace fleetpipe
