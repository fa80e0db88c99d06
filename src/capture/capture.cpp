// Capture: the public methods (create, look-ups, push, fire, tick, flush, stats).
#include "fleetpipe/capture.hpp"

#include <algorithm>
#include <cstring>
#include <limits>

#include "capture/capture_impl.hpp"
#include "capture/event_format.hpp"
#include "common/guard_oom.hpp"
#include "fleetpipe/config.hpp"

namespace fleetpipe {

using detail::kNone;
using detail::StreamState;

Capture::Capture(std::unique_ptr<Impl> impl) noexcept : impl_(std::move(impl)) {}
Capture::~Capture() = default;

Result<std::unique_ptr<Capture>> Capture::create(const Config& config, EventSink& sink,
                                                 const Port& port, MetricsRegistry& metrics,
                                                 const CaptureOptions& options) {
  return create(config.device_id, config.streams, config.triggers, sink, port, metrics, options);
}

Result<std::unique_ptr<Capture>> Capture::create(std::string device_id,
                                                 std::vector<StreamConfig> streams,
                                                 std::vector<TriggerConfig> triggers,
                                                 EventSink& sink, const Port& port,
                                                 MetricsRegistry& metrics,
                                                 const CaptureOptions& options) {
  auto impl = std::make_unique<Impl>();
  impl->device_id = std::move(device_id);
  impl->stream_cfgs = std::move(streams);
  impl->trigger_cfgs = std::move(triggers);
  impl->sink = &sink;
  impl->port = port.with_defaults();
  if (auto r = impl->engine.build(impl->stream_cfgs, impl->trigger_cfgs, impl->port, metrics);
      !r) {
    return std::move(r).error();
  }
  impl->metrics = &metrics;
  const std::size_t n = impl->stream_cfgs.size();
  impl->streams.resize(n);
  std::uint64_t ring_total = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const auto& c = impl->stream_cfgs[i];
    auto& s = impl->streams[i];
    s.cfg = &c;
    s.numeric = c.kind == StreamKind::numeric;
    if (s.numeric) {
      s.nring.init(c.channels.size(), c.ring_bytes, c.ring_seconds);
    } else {
      s.bring.init(c.ring_bytes, c.ring_max_blobs, c.ring_seconds);
    }
    ring_total += c.ring_bytes;
    Labels l{{"stream", c.name}};
    s.m_samples = &metrics.counter("fleetpipe_capture_samples_total",
                                   "Samples accepted (published on tick and event close)", l);
    const char* help = "Samples dropped or evicted early, by reason";
    s.m_backwards = &metrics.counter("fleetpipe_capture_dropped_samples_total", help,
                                     {{"stream", c.name}, {"reason", "time_backwards"}});
    s.m_overflow = &metrics.counter("fleetpipe_capture_dropped_samples_total", help,
                                    {{"stream", c.name}, {"reason", "ring_overflow"}});
    s.m_invalid = &metrics.counter("fleetpipe_capture_dropped_samples_total", help,
                                   {{"stream", c.name}, {"reason", "invalid"}});
  }
  metrics.gauge("fleetpipe_capture_ring_bytes", "Bytes preallocated for pre-trigger rings")
      .set(double(ring_total));
  impl->events.resize(n);
  for (auto& e : impl->events) {
    e.triggers.reserve(impl->trigger_cfgs.size());
    e.streams.reserve(n);
  }
  impl->deferred = options.handoff_events > 0;
  const std::size_t nslots = impl->deferred ? options.handoff_events : 1;
  impl->slots.resize(nslots);
  impl->free_slots.reserve(nslots);
  impl->pending.assign(nslots, 0);
  for (std::size_t k = 0; k < nslots; ++k) {
    auto& c = impl->slots[k];
    c.triggers.reserve(impl->trigger_cfgs.size());
    c.streams.reserve(n);
    c.sections.resize(n);
    impl->free_slots.push_back(static_cast<std::uint32_t>(nslots - 1 - k));
  }
  impl->dv.layout.reserve(n);
  impl->dv.at.reserve(n);
  impl->compute_primaries();
  impl->m_invalid_handle = &metrics.counter("fleetpipe_capture_dropped_samples_total",
                                            "Samples dropped or evicted early, by reason",
                                            {{"stream", ""}, {"reason", "invalid"}});
  impl->m_events = &metrics.counter("fleetpipe_capture_events_total", "Events finished");
  impl->m_event_bytes =
      &metrics.counter("fleetpipe_capture_event_bytes_total", "Encoded bytes of finished events");
  impl->m_rejected = &metrics.counter("fleetpipe_capture_events_rejected_total",
                                      "Finished events the sink (buffer) refused");
  impl->m_merged = &metrics.counter("fleetpipe_capture_merged_fires_total",
                                    "Fires that joined an already open event");
  impl->m_open = &metrics.gauge("fleetpipe_capture_open_events", "Events being recorded");
  const char* dropped_help =
      "Events lost before the sink, by reason (out_of_memory, exception, handoff_full)";
  impl->m_dropped_oom = &metrics.counter("fleetpipe_capture_events_dropped_total", dropped_help,
                                         {{"reason", "out_of_memory"}});
  impl->m_dropped_exception = &metrics.counter("fleetpipe_capture_events_dropped_total",
                                               dropped_help, {{"reason", "exception"}});
  impl->m_dropped_handoff = &metrics.counter("fleetpipe_capture_events_dropped_total",
                                             dropped_help, {{"reason", "handoff_full"}});
  impl->m_handoff = &metrics.gauge("fleetpipe_capture_handoff_events",
                                   "Closed events waiting in the hand-off for deliver()");
  impl->engine.bind(&Impl::on_fire_thunk, impl.get(), impl->numeric_rings());
  return std::unique_ptr<Capture>(new Capture(std::move(impl)));
}

// The primary stream of each trigger's events: its own stream when captured, else the first
// captured one.
void Capture::Impl::compute_primaries() {
  primary_of.clear();
  for (std::size_t t = 0; t < trigger_cfgs.size(); ++t) {
    const auto& tc = trigger_cfgs[t];
    const auto& caps = engine.policy(std::uint32_t(t)).capture_streams;
    std::uint32_t primary = caps.empty() ? 0 : caps.front();
    for (std::uint32_t i = 0; i < stream_cfgs.size(); ++i) {
      if (stream_cfgs[i].name == tc.stream &&
          std::find(caps.begin(), caps.end(), i) != caps.end()) {
        primary = i;
      }
    }
    primary_of.push_back(primary);
  }
}

std::vector<const detail::NumericRing*> Capture::Impl::numeric_rings() const {
  std::vector<const detail::NumericRing*> rings(streams.size(), nullptr);
  for (std::size_t i = 0; i < streams.size(); ++i) {
    if (streams[i].numeric) rings[i] = &streams[i].nring;
  }
  return rings;
}

Result<void> Capture::set_triggers(std::vector<TriggerConfig> triggers,
                                   std::map<std::string, std::string> event_metadata) {
  return detail::guard_oom([&]() -> Result<void> {
    Impl& m = *impl_;
    if (has_open_events()) {
      return Error(errc::would_block, "set_triggers: an event is open (retry when it finishes)");
    }
    detail::TriggerEngine engine;
    if (auto r = engine.build(m.stream_cfgs, triggers, m.port, *m.metrics); !r) return r;
    for (auto& e : m.events) e.triggers.reserve(triggers.size());
    for (auto& c : m.slots) c.triggers.reserve(triggers.size());
    m.engine = std::move(engine);
    m.trigger_cfgs = std::move(triggers);
    m.event_metadata = std::move(event_metadata);
    m.compute_primaries();
    m.engine.bind(&Impl::on_fire_thunk, &m, m.numeric_rings());
    return {};
  });
}

bool Capture::has_open_events() const noexcept {
  // An event waiting in the hand-off counts: it is encoded with the metadata (campaign) of the
  // triggers that recorded it.
  if (impl_->pending_count > 0) return true;
  for (const auto& e : impl_->events) {
    if (e.used) return true;
  }
  return false;
}

StreamHandle Capture::stream(std::string_view name) const noexcept {
  for (std::uint32_t i = 0; i < impl_->stream_cfgs.size(); ++i) {
    if (impl_->stream_cfgs[i].name == name) return StreamHandle{i};
  }
  return {};
}

int Capture::channel(StreamHandle h, std::string_view name) const noexcept {
  if (h.index >= impl_->stream_cfgs.size()) return -1;
  const auto& ch = impl_->stream_cfgs[h.index].channels;
  for (std::size_t i = 0; i < ch.size(); ++i) {
    if (ch[i] == name) return static_cast<int>(i);
  }
  return -1;
}

TriggerHandle Capture::trigger(std::string_view name) const noexcept {
  for (std::uint32_t i = 0; i < impl_->trigger_cfgs.size(); ++i) {
    if (impl_->trigger_cfgs[i].name == name) return TriggerHandle{i};
  }
  return {};
}

const std::vector<StreamConfig>& Capture::streams() const noexcept { return impl_->stream_cfgs; }
const std::vector<TriggerConfig>& Capture::triggers() const noexcept {
  return impl_->trigger_cfgs;
}

void Capture::Impl::refuse(StreamState& s, double t) noexcept { refuse_impl(s, t); }

// The hot path: inlined into push() (one call less per sample) and push_rows' slow path.
__attribute__((always_inline)) inline void Capture::Impl::push_row(std::uint32_t si,
                                                                   StreamState& s, double t,
                                                                   const double* values,
                                                                   std::size_t n) noexcept {
  if (t > next_deadline) close_due(t);
  bool early = false;
  const double* row = s.nring.push(t, values, n, early, evict_hook(si));
  if (early) note_overflow(s, 1, "ring_bytes evicted rows younger than ring_seconds");
  if (s.event != kNone) record(s, {}, reinterpret_cast<const char*>(row), s.nring.row_bytes(), t);
  engine.observe(si, t, row + 1, 0);
}

// Fast path for the common sample: a valid handle, a full row of a numeric stream in time
// order, no event open on the stream or due to close, no pinned or early-evicted ring row, and
// thresholds that stay where they are. Every check push promises is one compare here; any
// other sample goes to push_slow (a tail call), which does it all in order as before. With no
// call on this path the function needs no stack frame.
void Capture::push(StreamHandle h, double t, const double* values, std::size_t n) noexcept {
  Impl& m = *impl_;
  // fast_ok: the handle is valid (the engine has one entry per stream), the stream numeric,
  // the row full (n == its channel count) and its triggers block_ok thresholds.
  if (m.engine.fast_ok(h.index, n) && values) {
    detail::StreamState& s = m.streams[h.index];
    if (t >= s.last_t && t <= m.next_deadline && s.event == detail::kNone) {
      // The engine first (fewer live registers); if the ring then sends the row to push_slow,
      // observe() there repeats the same last_true stores.
      if (m.engine.observe_quiet(h.index, t, values)) {
        double* r = s.nring.slot();
        // An early eviction is counted here once logged (note_overflow logs once per stream).
        const bool early = r && (t - r[0]) < s.nring.ring_seconds;  // unwritten rows are -inf
        if (r && (!early || s.overflow_logged)) {
          s.last_t = t;
          s.overflow += early;
          m.st.ring_overflow += early;
          s.nring.fill_slot(r, t, values);
          return;
        }
      }
    }
  }
  m.push_slow(h, t, values, n);
}

void Capture::Impl::push_slow(StreamHandle h, double t, const double* values,
                              std::size_t n) noexcept {
  Impl& m = *this;
  if (h.index >= m.streams.size()) {
    ++m.invalid_handle;
    m.m_invalid_handle->inc();
    return;
  }
  StreamState& s = m.streams[h.index];
  if (!s.numeric || (n && !values)) {
    ++s.invalid;
    s.m_invalid->inc();
    return;
  }
  if (!m.admit(s, t)) return;
  m.push_row(h.index, s, t, values, n);
}

namespace {

// The end of the run of times from i in non-decreasing order, starting at or after `last`
// (NaN ends it). Checked 8 at a time without an early exit, so the compiler can vectorize it.
std::size_t ordered_run(const double* times, std::size_t i, std::size_t n, double last) noexcept {
  if (!(times[i] >= last)) return i;
  std::size_t e = i + 1;
  while (e + 8 <= n) {
    bool ok = true;
    for (std::size_t k = 0; k < 8; ++k) ok &= times[e + k] >= times[e + k - 1];
    if (!ok) break;
    e += 8;
  }
  while (e < n && times[e] >= times[e - 1]) ++e;
  return e;
}

}  // namespace

// Block path: the engine evaluates a run of rows in time order up to its first fire; those rows
// then go into the ring and the open event exactly as push() would put them, then the fire runs.
void Capture::push_rows(StreamHandle h, const double* times, const double* values,
                        std::size_t n) noexcept {
  Impl& m = *impl_;
  if (n == 0) return;
  if (h.index >= m.streams.size()) {
    m.invalid_handle += n;
    m.m_invalid_handle->inc(n);
    return;
  }
  StreamState& s = m.streams[h.index];
  if (!s.numeric || !times || !values) {
    s.invalid += n;
    s.m_invalid->inc(n);
    return;
  }
  const std::size_t nch = s.nring.stride - 1;
  const bool block = m.engine.block_ok(h.index);
  std::size_t i = 0;
  while (i < n) {
    if (!block) {
      if (m.admit(s, times[i])) m.push_row(h.index, s, times[i], values + i * nch, nch);
      ++i;
      continue;
    }
    // The run of rows in time order from i: the engine evaluates it until its first fire.
    const std::size_t e = ordered_run(times, i, n, s.last_t);
    if (e == i) {  // out of order (or NaN time): refused and counted as push() does
      m.admit(s, times[i]);
      ++i;
      continue;
    }
    const std::size_t k = m.engine.observe_block(h.index, times + i, values + i * nch, nch, e - i);
    const std::size_t last = k < e - i ? i + k : e - 1;  // the row that fires, or the run's last
    if (s.event == kNone && times[last] <= m.next_deadline) {
      // Nothing to record and no event to close among these rows: the ring takes them at once.
      s.last_t = times[last];
      const std::uint64_t early = s.nring.push_block(times + i, values + i * nch, last + 1 - i,
                                                       m.evict_hook(h.index));
      if (early) m.note_overflow(s, early, "ring_bytes evicted rows younger than ring_seconds");
      if (k < e - i) m.engine.fire_block_row(h.index, times[last]);
      i = last + 1;
      continue;
    }
    for (std::size_t r = i; r <= last; ++r) {
      const double t = times[r];
      s.last_t = t;
      if (t > m.next_deadline) m.close_due(t);
      bool early = false;
      const double* row = s.nring.push(t, values + r * nch, nch, early, m.evict_hook(h.index));
      if (early) m.note_overflow(s, 1, "ring_bytes evicted rows younger than ring_seconds");
      if (s.event != kNone) {
        m.record(s, {}, reinterpret_cast<const char*>(row), s.nring.row_bytes(), t);
      }
    }
    if (k < e - i) m.engine.fire_block_row(h.index, times[last]);
    i = last + 1;
  }
}

void Capture::push_blob(StreamHandle h, double t, std::string_view bytes) noexcept {
  Impl& m = *impl_;
  if (h.index >= m.streams.size()) {
    ++m.invalid_handle;
    m.m_invalid_handle->inc();
    return;
  }
  StreamState& s = m.streams[h.index];
  if (s.numeric) {
    ++s.invalid;
    s.m_invalid->inc();
    return;
  }
  if (!m.admit(s, t)) return;
  if (t > m.next_deadline) m.close_due(t);
  std::uint64_t early = 0;
  const bool stored = s.bring.push(t, bytes, early, m.evict_hook(h.index));
  ++s.samples;
  if (!stored) m.note_overflow(s, 1, "a blob larger than ring_bytes was not kept in the ring");
  if (early) m.note_overflow(s, early, "ring bytes/blobs evicted blobs younger than ring_seconds");
  if (s.event != kNone && stored && s.ev_data.empty() &&
      s.bring.popped + s.bring.count - 1 == s.pre.hi) {
    // The blob directly follows the event's lazy window in the ring: the window grows over it
    // instead of copying it (no allocation nor first-touch page faults in push_blob; the bytes
    // are copied at delivery, or before the ring overwrites them, as the pre window is).
    m.extend_lazy(h.index, s, bytes.size(), t);
  } else if (s.event != kNone) {
    char hdr[detail::kBlobRecordHeader];
    const std::uint64_t size = bytes.size();
    std::memcpy(hdr, &t, 8);
    std::memcpy(hdr + 8, &size, 8);
    m.record(s, std::string_view(hdr, sizeof hdr), bytes.data(), bytes.size(), t);
  }
  m.engine.observe(h.index, t, nullptr, bytes.size());
}

Result<void> Capture::push(std::string_view stream_name, double t,
                           std::initializer_list<std::pair<std::string_view, double>> values) {
  return detail::guard_oom([&]() -> Result<void> {
    StreamHandle h = stream(stream_name);
    if (!h.valid()) {
      return Error(errc::invalid_argument, "unknown stream \"" + std::string(stream_name) + "\"");
    }
    const auto& cfg = impl_->stream_cfgs[h.index];
    if (cfg.kind != StreamKind::numeric) {
      return Error(errc::invalid_argument,
                   "stream \"" + cfg.name + "\" is a blob stream: use push_blob");
    }
    double stack[64];
    std::vector<double> heap;
    double* row = stack;
    if (cfg.channels.size() > 64) {
      heap.resize(cfg.channels.size());
      row = heap.data();
    }
    std::fill(row, row + cfg.channels.size(), std::numeric_limits<double>::quiet_NaN());
    for (const auto& [name, v] : values) {
      int c = channel(h, name);
      if (c < 0) {
        return Error(errc::invalid_argument, "stream \"" + cfg.name + "\" has no channel \"" +
                                                 std::string(name) + "\"");
      }
      row[c] = v;
    }
    push(h, t, row, cfg.channels.size());
    return {};
  });
}

Result<void> Capture::push_blob(std::string_view stream_name, double t, std::string_view bytes) {
  return detail::guard_oom([&]() -> Result<void> {
    StreamHandle h = stream(stream_name);
    if (!h.valid()) {
      return Error(errc::invalid_argument, "unknown stream \"" + std::string(stream_name) + "\"");
    }
    if (impl_->stream_cfgs[h.index].kind != StreamKind::blob) {
      return Error(errc::invalid_argument, "stream \"" + std::string(stream_name) +
                                               "\" is a numeric stream: use push");
    }
    push_blob(h, t, bytes);
    return {};
  });
}

Result<bool> Capture::fire(TriggerHandle h, double t) {
  if (h.index >= impl_->trigger_cfgs.size()) {
    return detail::guard_oom(
        []() -> Result<bool> { return Error(errc::invalid_argument, "invalid trigger handle"); });
  }
  if (t > impl_->next_deadline) impl_->close_due(t);
  return impl_->engine.fire_manual(h.index, t);
}

Result<bool> Capture::fire(std::string_view name, double t) {
  TriggerHandle h = trigger(name);
  if (!h.valid()) {
    return detail::guard_oom([&]() -> Result<bool> {
      return Error(errc::invalid_argument, "unknown trigger \"" + std::string(name) + "\"");
    });
  }
  return fire(h, t);
}

void Capture::tick(double t) noexcept {
  if (t > impl_->next_deadline) impl_->close_due(t);
  impl_->engine.tick(t);
  impl_->publish();
}

void Capture::flush() noexcept {
  while (impl_->deliver_one()) {
  }
  for (std::uint32_t i = 0; i < impl_->events.size(); ++i) {
    if (impl_->events[i].used) impl_->close_event(i, "flush");
    while (impl_->deliver_one()) {
    }
  }
  impl_->recompute_deadline();
  impl_->publish();
}

std::size_t Capture::deliver(std::size_t max_events) noexcept {
  std::size_t done = 0;
  while (done < max_events && impl_->deliver_one()) ++done;
  return done;
}

std::size_t Capture::deliver_slice(std::size_t max_bytes) noexcept {
  return impl_->deliver_step(max_bytes) == 2 ? 1 : 0;
}

std::size_t Capture::pending_events() const noexcept { return impl_->pending_count; }

TriggerStats Capture::trigger_stats(TriggerHandle h) const noexcept {
  if (h.index >= impl_->trigger_cfgs.size()) return {};
  return impl_->engine.policy(h.index).stats;
}

CaptureStats Capture::stats() const noexcept {
  CaptureStats s = impl_->st;
  s.invalid_samples = impl_->invalid_handle;
  for (const auto& ss : impl_->streams) {
    s.samples += ss.accepted();
    s.invalid_samples += ss.invalid;
  }
  s.nan_samples = impl_->engine.nan_samples();
  for (const auto& e : impl_->events) s.open_events += e.used ? 1 : 0;
  s.handoff_pending = impl_->pending_count;
  return s;
}

}  // namespace fleetpipe
