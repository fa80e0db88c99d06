// fleetpipe/capture.hpp — pre/post-trigger capture: the front of the pipeline, its hottest path.
//
// The host pushes samples from its loop: numeric rows (`push`) and opaque blobs (`push_blob`,
// e.g. an encoded video frame). Every stream keeps a *pre-trigger ring* bounded by time and bytes
// (preallocated at creation). When a trigger fires (trigger.hpp), an *event* takes the pre window
// from the rings of the streams the trigger names and records the post window; fires whose
// windows overlap on a stream merge into one event carrying every trigger id. A finished event is
// encoded (docs/event-format.md: "FPEV" header + JSON index + data; concatenable) and handed to an
// `EventSink` — the Buffer in a pipeline (`BufferSink`), anything in tests or replay.
//
// Time: `t` is the host's *monotonic* time in seconds (double). Windows, cooldowns, periodic
// triggers and budgets use it. Wall-clock times in the record metadata come from
// `Port::clock->wall()` read when the event is opened (wall = wall_at_open - (t_open - t)).
//
// Hot path: after warm-up (every ring filled once, every stream's event buffer grown once by a
// recorded event), `push`, `push_blob`, `push_rows` and trigger evaluation allocate nothing;
// finishing an event (metadata strings, JSON index, optional zstd) does allocate — inside the
// call that finishes it, or inside deliver() with a hand-off (see "Delivery"). Handle-based
// calls cost no lookup; the name-based overloads do a map lookup per call (documented on each).
//
// Out of memory: push, push_blob, tick, fire and flush never let std::bad_alloc escape (and never
// terminate). An allocation failing while an event is opened, recorded or encoded drops that
// event, counted in fleetpipe_capture_events_dropped_total{reason="out_of_memory"} and logged at
// error level without allocating; the rings are preallocated, so samples and triggers go on.
// The name-based calls return errc::out_of_memory. A sink that throws is handled the same way
// (reason "exception").
//
// Edge cases (never UB):
//   - a sample older than the previous sample of the same stream (time went backwards) is
//     dropped: not recorded, not evaluated; counted in
//     fleetpipe_capture_dropped_samples_total{reason="time_backwards",stream} and logged
//     (first occurrence and each power of two).
//   - a blob larger than its stream's ring is not kept in the ring (counted reason
//     "ring_overflow") but is still recorded into an open event.
//   - a numeric sample evicting a ring row younger than ring_seconds (ring_bytes too small for
//     ring_seconds) is counted as "ring_overflow" (the pre window is then shorter than asked).
//   - a bad handle or a blob pushed to a numeric stream (or the reverse) is counted as
//     "invalid" and ignored.
//
// Delivery (CaptureOptions::handoff_events): with 0 (the default) the sink is called
// synchronously from the push/push_blob/tick/fire/flush that finishes an event. With N > 0 a
// finished event is only *closed* inside that call: its sections move (pointer swaps, no copy,
// no allocation) into one of N preallocated hand-off slots, and `deliver()` — called by the host
// when it chooses — encodes it and hands it to the sink; `deliver_slice()` does the same in
// bounded slices that resume at the next call (Pipeline::poll does a few per poll). Nothing in
// push/push_blob/tick/fire then encodes, compresses or does I/O. A closed event finding every
// slot taken is dropped: counted in fleetpipe_capture_events_dropped_total{reason="handoff_full"}
// and logged (push never waits). Events wait in the hand-off in closing order; `flush()`
// delivers them all. Memory: a slot keeps the capacity of the largest event it carried; the
// slot freed last is reused first, so a host that delivers every loop uses one.
//
// Thread context: not thread-safe; one thread (the host's loop) makes every call, deliver()
// included. Metrics may be read from any thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <limits>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "fleetpipe/buffer.hpp"
#include "fleetpipe/error.hpp"
#include "fleetpipe/metrics.hpp"
#include "fleetpipe/port.hpp"
#include "fleetpipe/trigger.hpp"

namespace fleetpipe {

struct Config;

enum class StreamKind : std::uint8_t {
  numeric,  ///< rows of float64 channels (speed, accel_x, ...)
  blob,     ///< opaque payloads (encoded video frames, JPEGs, ...)
};

enum class Compression : std::uint8_t { none, zstd };

/// One stream of samples. Plain data; "/streams/N" in the JSON config (docs/triggers.md).
struct StreamConfig {
  std::string name;                         ///< unique, [A-Za-z0-9_.-]
  StreamKind kind = StreamKind::numeric;
  std::vector<std::string> channels;        ///< numeric: channel names in push order (required)
  double ring_seconds = 10;                 ///< pre-trigger ring time bound (> 0)
  std::uint64_t ring_bytes = 1ull << 20;    ///< pre-trigger ring byte bound (preallocated)
  std::uint32_t ring_max_blobs = 1024;      ///< blob streams: most blobs the ring indexes
  Compression compression = Compression::none;  ///< of this stream's section in each event
  int zstd_level = 3;                       ///< 1..19
  std::string content_type;                 ///< blob streams: MIME type of each blob (index only)
};

/// Content type of an encoded event (record metadata and uploaded objects).
inline constexpr const char* kEventContentType = "application/vnd.fleetpipe.event";

/// Receives finished events. `meta.stream` is the event's primary stream (that of the first
/// trigger that fired), `meta.metadata` holds {"device": id, "sample_counts": "{\"imu\":512}"}.
/// The payload view is valid only during the call. Return the Buffer's outcome; a rejection is
/// counted (fleetpipe_capture_events_rejected_total) and logged by Capture, never retried.
class EventSink {
 public:
  virtual ~EventSink() = default;
  virtual AppendOutcome deliver(const RecordMeta& meta, std::string_view payload) = 0;
};

/// The production sink: appends every event to a Buffer (which must outlive the sink) with
/// Buffer::append_staged, so a large event is written over the next poll() calls instead of
/// holding the host's loop for the whole commit.
class BufferSink final : public EventSink {
 public:
  explicit BufferSink(Buffer& buffer) noexcept : buffer_(buffer) {}
  AppendOutcome deliver(const RecordMeta& meta, std::string_view payload) override {
    return buffer_.append_staged(meta, payload);
  }

 private:
  Buffer& buffer_;
};

/// Construction options of a Capture (not part of the JSON config).
struct CaptureOptions {
  /// Hand-off slots between closing an event and its sink; 0 = call the sink synchronously
  /// from the call that finishes the event (see "Delivery" at the top of this file).
  std::uint32_t handoff_events = 0;
};

/// Index of a stream (in config order). Obtain with Capture::stream(); cheap to copy.
struct StreamHandle {
  std::uint32_t index = std::numeric_limits<std::uint32_t>::max();
  bool valid() const noexcept { return index != std::numeric_limits<std::uint32_t>::max(); }
};

/// Index of a top-level trigger (in config order). Obtain with Capture::trigger().
struct TriggerHandle {
  std::uint32_t index = std::numeric_limits<std::uint32_t>::max();
  bool valid() const noexcept { return index != std::numeric_limits<std::uint32_t>::max(); }
};

/// Totals of one Capture (also exported as fleetpipe_capture_* metrics).
struct CaptureStats {
  std::uint64_t samples = 0;            ///< accepted numeric rows and blobs
  std::uint64_t events = 0;             ///< finished events handed to the sink
  std::uint64_t event_bytes = 0;        ///< their encoded payload bytes
  std::uint64_t events_rejected = 0;    ///< refused by the sink
  /// lost before the sink: out of memory while recording or encoding, or a sink that threw
  /// (fleetpipe_capture_events_dropped_total{reason="out_of_memory"|"exception"})
  std::uint64_t events_dropped = 0;
  std::uint64_t merged_fires = 0;       ///< fires that joined an already open event
  std::uint64_t time_backwards = 0;     ///< samples dropped: time went backwards
  std::uint64_t ring_overflow = 0;      ///< blobs too big for the ring + rows evicted early
  std::uint64_t invalid_samples = 0;    ///< bad handle / wrong kind
  std::uint64_t nan_samples = 0;        ///< NaN values seen by a trigger (no edge)
  std::size_t open_events = 0;
  /// closed events waiting in the hand-off for deliver()
  std::size_t handoff_pending = 0;
  /// closed events dropped because every hand-off slot was taken (also in events_dropped)
  std::uint64_t handoff_full = 0;
};

/// Records events. Create with `create()`; not copyable, not movable (hand out the unique_ptr).
class Capture {
 public:
  /// Validates streams and triggers (cross references, cycles, custom implementations), sizes
  /// and preallocates every ring, registers metrics. Errors: invalid_config with a JSON pointer
  /// ("/triggers/2/capture/streams/0: unknown stream \"cam\""), also for C++-built configs.
  /// `sink`, the Port's objects and `metrics` must outlive the Capture.
  static Result<std::unique_ptr<Capture>> create(std::string device_id,
                                                 std::vector<StreamConfig> streams,
                                                 std::vector<TriggerConfig> triggers,
                                                 EventSink& sink, const Port& port,
                                                 MetricsRegistry& metrics,
                                                 const CaptureOptions& options = {});
  /// Same, taking device_id, streams and triggers from a parsed Config.
  static Result<std::unique_ptr<Capture>> create(const Config& config, EventSink& sink,
                                                 const Port& port, MetricsRegistry& metrics,
                                                 const CaptureOptions& options = {});
  ~Capture();
  Capture(const Capture&) = delete;
  Capture& operator=(const Capture&) = delete;

  // ---- setup-time lookups (allocation-free, but do a name search) ----------------------------
  /// Invalid handle when unknown.
  StreamHandle stream(std::string_view name) const noexcept;
  /// Channel index within a numeric stream, or -1.
  int channel(StreamHandle stream, std::string_view name) const noexcept;
  TriggerHandle trigger(std::string_view name) const noexcept;
  const std::vector<StreamConfig>& streams() const noexcept;
  const std::vector<TriggerConfig>& triggers() const noexcept;

  // ---- hot path -------------------------------------------------------------------------------
  /// One numeric row: `values[i]` is channel i in declared order; missing trailing channels
  /// (n < channels) are recorded as NaN, extra ones ignored. Evaluates the stream's triggers,
  /// may open, extend or finish events (calling the sink). Never fails; see header notes.
  void push(StreamHandle stream, double t, const double* values, std::size_t n) noexcept;
  void push(StreamHandle stream, double t, std::initializer_list<double> values) noexcept {
    push(stream, t, values.begin(), values.size());
  }
  /// One blob (copied into the ring, and into the open event if any).
  void push_blob(StreamHandle stream, double t, std::string_view bytes) noexcept;
  /// A block of `n` numeric rows: `times[i]` and `values[i * channels .. +channels)` (row-major,
  /// exactly the stream's channel count per row). Same result as `n` calls of push() — the same
  /// rows recorded, the same fires at the same rows, the same events byte for byte, the same
  /// counters — but the stream's triggers are evaluated over the block in one pass when every
  /// one is an above/below threshold and no composite reads the stream (other triggers are
  /// evaluated row by row). Allocation-free like push(). A bad handle or blob stream counts
  /// the n rows as "invalid".
  void push_rows(StreamHandle stream, const double* times, const double* values,
                 std::size_t n) noexcept;

  // ---- convenience (name lookups per call: a few tens of ns per name) -------------------------
  /// Channels by name; unnamed channels are NaN. Errors: invalid_argument (unknown stream or
  /// channel, blob stream).
  Result<void> push(std::string_view stream, double t,
                    std::initializer_list<std::pair<std::string_view, double>> values);
  /// Errors: invalid_argument (unknown stream, numeric stream).
  Result<void> push_blob(std::string_view stream, double t, std::string_view bytes);

  // ---- control --------------------------------------------------------------------------------
  /// Fires a trigger now (normally a manual one; any top-level trigger may be fired) through
  /// its cooldown, sampling and budget. Returns true when it made or joined an event.
  /// Errors: invalid_argument (bad handle / unknown name).
  Result<bool> fire(TriggerHandle trigger, double t);
  Result<bool> fire(std::string_view trigger, double t);
  /// Advances time without a sample: finishes events whose post window ended before `t` and
  /// runs stream-less periodic triggers. Call it from the loop when streams may go quiet.
  void tick(double t) noexcept;
  /// Finishes every open event now (shutdown); their index says "closed": "flush". Delivers
  /// every event waiting in the hand-off first, then the flushed ones (the sink is called here).
  void flush() noexcept;
  /// Replaces the top-level triggers (a campaign taking effect, campaign.hpp) and the metadata
  /// every later event records beside "device" and "sample_counts" (e.g. "campaign_id",
  /// "campaign_version"; an empty map records none). Only at a clean point: while an event is
  /// open it changes nothing and returns would_block, so open events finish under the triggers
  /// that opened them; call again later. Streams and their pre-trigger rings are kept, so the
  /// new triggers have their history at once; trigger handles are renumbered and trigger
  /// statistics start from zero. Errors: invalid_config (as create), would_block. Allocates
  /// (not for the hot path); driving thread only.
  Result<void> set_triggers(std::vector<TriggerConfig> triggers,
                            std::map<std::string, std::string> event_metadata);
  /// True while an event is being recorded or waits in the hand-off (set_triggers would refuse).
  bool has_open_events() const noexcept;
  /// Encodes up to `max_events` events waiting in the hand-off (oldest first) and hands them
  /// to the sink; returns how many left the hand-off (delivered, rejected or dropped). A no-op
  /// returning 0 when none waits or handoff_events is 0. This is where encoding (JSON index,
  /// zstd) and the sink's work (the Buffer's append) happen. Never throws.
  std::size_t deliver(std::size_t max_events = static_cast<std::size_t>(-1)) noexcept;
  /// One bounded slice of that work: about `max_bytes` bytes of encoding on the oldest waiting
  /// event (zstd input counts 8 times; a ring entry is never split, so a slice can exceed it by
  /// one blob), then its hand-off to the sink when that copy of the payload still fits in
  /// `max_bytes` (a small event leaves in one call), else as a slice of its own. The next call resumes where
  /// this one stopped; the event stays in the hand-off (and its pre window pinned in the ring)
  /// until the sink has it, producing the same bytes as deliver(). Returns 1 when an event left
  /// the hand-off in this call, else 0. Never throws.
  std::size_t deliver_slice(std::size_t max_bytes) noexcept;
  /// Events waiting in the hand-off.
  std::size_t pending_events() const noexcept;

  // ---- introspection --------------------------------------------------------------------------
  TriggerStats trigger_stats(TriggerHandle trigger) const noexcept;
  CaptureStats stats() const noexcept;

  struct Impl;

 private:
  explicit Capture(std::unique_ptr<Impl> impl) noexcept;
  std::unique_ptr<Impl> impl_;
};

}  // namespace fleetpipe
