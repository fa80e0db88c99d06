// Capture internals: the state behind Capture, shared by its public methods and event windows.
#pragma once

#include <cstdint>
#include <cstdio>
#include <limits>
#include <map>
#include <new>
#include <string>
#include <string_view>
#include <vector>

#include "capture/event_format.hpp"
#include "capture/rings.hpp"
#include "fleetpipe/capture.hpp"
#include "trigger/engine.hpp"

namespace fleetpipe {

namespace detail {

// A section's pre window, still in the ring: entries [lo, hi) (ring sequence numbers), preceded
// by `copied`, the ones the ring had to overwrite first (Capture::Impl::evict_pinned).
struct LazyPre {
  std::string copied;
  std::uint64_t lo = 0, hi = 0;
  bool live() const noexcept { return lo < hi; }
};

struct StreamState {
  const StreamConfig* cfg = nullptr;
  bool numeric = true;
  detail::NumericRing nring;
  detail::BlobRing bring;
  double last_t = -std::numeric_limits<double>::infinity();
  // The section of the open event this stream belongs to (at most one at a time).
  std::uint32_t event = kNone;
  LazyPre pre;          // the open event's pre window (then ev_data: its post window)
  std::string ev_data;
  std::uint64_t ev_count = 0;
  double ev_t_first = 0, ev_t_last = 0;
  // Counted on the hot path without atomics; published to the registry by publish().
  // `samples` counts blob pushes; a numeric stream's is its ring's head (accepted()).
  std::uint64_t samples = 0, samples_published = 0;
  std::uint64_t overflow = 0, overflow_published = 0;
  std::uint64_t backwards = 0, invalid = 0;
  bool overflow_logged = false;
  Counter* m_samples = nullptr;
  Counter* m_backwards = nullptr;
  Counter* m_overflow = nullptr;
  Counter* m_invalid = nullptr;

  std::uint64_t accepted() const noexcept { return numeric ? nring.head : samples; }
};

struct OpenEvent {
  bool used = false;
  std::uint64_t seq = 0;
  double t_fire = 0, deadline = 0;
  std::int64_t wall_offset_ns = 0;  // wall ns = offset + t * 1e9
  std::uint8_t priority = 0;
  std::uint32_t primary = 0;
  std::uint64_t post_bytes = 0, max_bytes = 0;  // 0 = unlimited
  std::vector<std::uint32_t> triggers;
  std::vector<std::uint32_t> streams;
};

// A closed event waiting for its sink: what finish() needs, its sections swapped out of the
// streams (sections[si] belongs to stream si, so each string keeps one stream's capacity).
struct ClosedSection {
  LazyPre pre;
  std::string data;
  std::uint64_t count = 0;
  double t_first = 0, t_last = 0;
};

struct ClosedEvent {
  std::uint64_t seq = 0;
  double t_fire = 0;
  std::int64_t wall_offset_ns = 0;
  std::uint8_t priority = 0;
  std::uint32_t primary = 0;
  const char* reason = "";
  bool out_of_memory = false;  // a pre-window entry could not be copied before its eviction
  std::vector<std::uint32_t> triggers;
  std::vector<std::uint32_t> streams;  // sorted
  std::vector<ClosedSection> sections;  // one per stream of the Capture
};

// The delivery of the oldest closed event, resumable across calls (delivery.cpp): zstd sections
// are compressed into `scratch`, then header + index and every section's bytes go into
// `payload`, then the sink gets it. The event stays in `pending` (so its pre windows stay
// pinned) until the sink has it.
struct Delivery {
  enum class Phase : std::uint8_t { idle, compress, write, hand };
  Phase phase = Phase::idle;
  std::size_t sec = 0;  // index into the slot's `streams`
  // Cursors in the current section: bytes of pre.copied and of data read, bytes of its
  // compressed form copied out of scratch. Ring entries are consumed by advancing pre.lo.
  std::uint64_t copied_pos = 0, data_pos = 0, scratch_pos = 0;
  EventIn in;
  std::vector<SectionLayout> layout;  // per slot stream
  std::vector<std::uint64_t> at;      // offset in scratch of each compressed section
  std::string counts;                 // "sample_counts" metadata
  double t_end = 0;
  ZstdStream z;
};

}  // namespace detail

struct Capture::Impl {
  std::string device_id;
  std::vector<StreamConfig> stream_cfgs;
  std::vector<TriggerConfig> trigger_cfgs;
  EventSink* sink = nullptr;
  Port port;
  detail::TriggerEngine engine;
  std::vector<detail::StreamState> streams;
  std::vector<detail::OpenEvent> events;
  std::vector<std::uint32_t> primary_of;  // per trigger
  double next_deadline = std::numeric_limits<double>::infinity();
  std::uint64_t seq = 0;
  std::uint32_t opening = detail::kNone;  // the event on_fire is opening or joining
  std::string payload, scratch;
  detail::Delivery dv;
  MetricsRegistry* metrics = nullptr;                 // for set_triggers' new engine
  std::map<std::string, std::string> event_metadata;  // recorded by every event (campaigns)
  // Hand-off (CaptureOptions::handoff_events; one slot delivered at once when 0).
  bool deferred = false;
  std::vector<detail::ClosedEvent> slots;
  std::vector<std::uint32_t> free_slots;  // stack: the slot freed last is reused first
  std::vector<std::uint32_t> pending;     // ring of slot indices, closing order
  std::size_t pending_head = 0, pending_count = 0;
  CaptureStats st;
  std::uint64_t invalid_handle = 0;
  Counter* m_invalid_handle = nullptr;
  Counter* m_events = nullptr;
  Counter* m_event_bytes = nullptr;
  Counter* m_rejected = nullptr;
  Counter* m_merged = nullptr;
  Counter* m_dropped_oom = nullptr;
  Counter* m_dropped_exception = nullptr;
  Counter* m_dropped_handoff = nullptr;
  Gauge* m_open = nullptr;
  Gauge* m_handoff = nullptr;

  // The engine calls this from its noexcept paths: an allocation failing while an event is
  // opened or joined drops that event (counted) instead of reaching std::terminate.
  static void on_fire_thunk(void* ctx, std::uint32_t trigger, double t) noexcept {
    Impl& m = *static_cast<Impl*>(ctx);
    try {
      m.on_fire(trigger, t);
    } catch (const std::bad_alloc&) {
      m.drop_event(m.opening, "out_of_memory");
    }
    m.opening = detail::kNone;
  }

  // ---- hot path helpers -----------------------------------------------------------------------
  bool admit(detail::StreamState& s, double t) noexcept {
    if (t >= s.last_t) {
      s.last_t = t;
      return true;
    }
    refuse(s, t);
    return false;
  }
  // admit()'s cold half, out of line so the hot path keeps a small frame.
  void refuse(detail::StreamState& s, double t) noexcept;
  void refuse_impl(detail::StreamState& s, double t) noexcept {
    if (t != t) {
      ++s.invalid;
      s.m_invalid->inc();
      return;
    }
    ++s.backwards;
    ++st.time_backwards;
    s.m_backwards->inc();
    if ((s.backwards & (s.backwards - 1)) == 0 &&  // first and every power of two
        log_enabled(port, LogLevel::warning)) {
      char msg[200];
      std::snprintf(msg, sizeof msg,
                    "stream %s: sample at t=%.6f is older than the previous one (t=%.6f): "
                    "dropped (%llu so far)",
                    s.cfg->name.c_str(), t, s.last_t,
                    static_cast<unsigned long long>(s.backwards));
      log(port, LogLevel::warning, "capture", msg);
    }
  }

  void note_overflow(detail::StreamState& s, std::uint64_t n, const char* what) noexcept {
    s.overflow += n;
    st.ring_overflow += n;
    if (!s.overflow_logged) {
      s.overflow_logged = true;
      if (log_enabled(port, LogLevel::warning)) {
        char msg[320];
        std::snprintf(msg, sizeof msg, "stream %s: %s (ring_overflow; counted, logged once per "
                      "stream)", s.cfg->name.c_str(), what);
        log(port, LogLevel::warning, "capture", msg);
      }
    }
  }

  // ---- events (event_window.cpp) ----------------------------------------------------------
  void append_section(detail::StreamState& s, const char* p, std::size_t n, double t);
  void record(detail::StreamState& s, std::string_view hdr, const char* p, std::size_t n,
              double t) noexcept;
  void extend_lazy(std::uint32_t si, detail::StreamState& s, std::size_t n, double t) noexcept;
  void recompute_deadline() noexcept;
  void close_due(double t) noexcept;
  void add_stream(std::uint32_t ev, std::uint32_t si, double t, double pre_s);
  void merge(std::uint32_t into, std::uint32_t from);
  void on_fire(std::uint32_t trigger, double t);
  void release(std::uint32_t i) noexcept;
  void append_entry(std::uint32_t si, std::uint64_t seq, std::string& out);
  void evict_pinned(std::uint32_t si, std::uint64_t seq) noexcept;
  void update_pin(std::uint32_t si) noexcept;
  // The eviction hook push() hands the ring of stream `si`.
  auto evict_hook(std::uint32_t si) noexcept {
    return [this, si](std::uint64_t seq) noexcept { evict_pinned(si, seq); };
  }
  void count_drop(std::uint64_t seq, const char* why) noexcept;
  void drop_event(std::uint32_t i, const char* why) noexcept;
  void close_event(std::uint32_t i, const char* reason) noexcept;
  // ---- delivery (delivery.cpp) ---------------------------------------------------------------
  bool deliver_one() noexcept;
  int deliver_step(std::size_t budget) noexcept;
  void begin_delivery(detail::ClosedEvent& c);
  std::size_t compress_some(detail::ClosedEvent& c, std::size_t budget);
  std::size_t write_some(detail::ClosedEvent& c, std::size_t budget);
  template <class Put>
  std::size_t read_section(std::uint32_t si, detail::ClosedSection& s, std::size_t budget,
                           Put&& put);
  bool section_read(const detail::ClosedSection& s) const noexcept;
  void next_section() noexcept;
  void hand_to_sink(detail::ClosedEvent& c);
  void end_delivery() noexcept;
  void publish() noexcept;
  void compute_primaries();
  std::vector<const detail::NumericRing*> numeric_rings() const;
  // push() for one admitted row of stream `si` (time order already checked).
  inline void push_row(std::uint32_t si, detail::StreamState& s, double t, const double* values,
                       std::size_t n) noexcept;
  // push() for every sample its inline fast path does not take (out of line, tail-called).
  void push_slow(StreamHandle h, double t, const double* values, std::size_t n) noexcept;
};

}  // namespace fleetpipe
