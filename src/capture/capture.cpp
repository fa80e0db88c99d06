// Capture: pre-trigger rings, event windows and merging, hand-off to the sink.
#include "fleetpipe/capture.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <new>

#include "common/config_parsers.hpp"
#include "common/guard_oom.hpp"
#include "capture/event_format.hpp"
#include "trigger/engine.hpp"
#include "trigger/parse.hpp"
#include "trigger/validate.hpp"
#include "fleetpipe/config.hpp"

namespace fleetpipe {

using detail::kNone;

namespace {

struct StreamState {
  const StreamConfig* cfg = nullptr;
  bool numeric = true;
  detail::NumericRing nring;
  detail::BlobRing bring;
  double last_t = -std::numeric_limits<double>::infinity();
  // The section of the open event this stream belongs to (at most one at a time).
  std::uint32_t event = kNone;
  std::string ev_data;
  std::uint64_t ev_count = 0;
  double ev_t_first = 0, ev_t_last = 0;
  // Counted on the hot path without atomics; published to the registry by publish().
  std::uint64_t samples = 0, samples_published = 0;
  std::uint64_t overflow = 0, overflow_published = 0;
  std::uint64_t backwards = 0, invalid = 0;
  bool overflow_logged = false;
  Counter* m_samples = nullptr;
  Counter* m_backwards = nullptr;
  Counter* m_overflow = nullptr;
  Counter* m_invalid = nullptr;
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

std::int64_t to_ns(WallTime w) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(w.time_since_epoch()).count();
}

}  // namespace

struct Capture::Impl {
  std::string device_id;
  std::vector<StreamConfig> stream_cfgs;
  std::vector<TriggerConfig> trigger_cfgs;
  EventSink* sink = nullptr;
  Port port;
  detail::TriggerEngine engine;
  std::vector<StreamState> streams;
  std::vector<OpenEvent> events;
  std::vector<std::uint32_t> primary_of;  // per trigger
  double next_deadline = std::numeric_limits<double>::infinity();
  std::uint64_t seq = 0;
  std::uint32_t opening = kNone;  // the event on_fire is opening or joining
  std::string payload, scratch;
  CaptureStats st;
  std::uint64_t invalid_handle = 0;
  Counter* m_invalid_handle = nullptr;
  Counter* m_events = nullptr;
  Counter* m_event_bytes = nullptr;
  Counter* m_rejected = nullptr;
  Counter* m_merged = nullptr;
  Counter* m_dropped_oom = nullptr;
  Counter* m_dropped_exception = nullptr;
  Gauge* m_open = nullptr;

  // The engine calls this from its noexcept paths: an allocation failing while an event is
  // opened or joined drops that event (counted) instead of reaching std::terminate.
  static void on_fire_thunk(void* ctx, std::uint32_t trigger, double t) noexcept {
    Impl& m = *static_cast<Impl*>(ctx);
    try {
      m.on_fire(trigger, t);
    } catch (const std::bad_alloc&) {
      m.drop_event(m.opening, "out_of_memory");
    }
    m.opening = kNone;
  }

  // ---- hot path helpers -----------------------------------------------------------------------
  bool admit(StreamState& s, double t) noexcept {
    if (t >= s.last_t) {
      s.last_t = t;
      return true;
    }
    if (t != t) {
      ++s.invalid;
      s.m_invalid->inc();
      return false;
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
    return false;
  }

  void note_overflow(StreamState& s, std::uint64_t n, const char* what) noexcept {
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

  // Throws std::bad_alloc when the section cannot grow (callers on the hot path use record()).
  void append_section(StreamState& s, const char* p, std::size_t n, double t) {
    s.ev_data.append(p, n);
    if (s.ev_count == 0) s.ev_t_first = t;
    s.ev_t_last = t;
    ++s.ev_count;
  }

  // A sample joins the open event of its stream: `hdr` (blob record header, may be empty) then
  // the bytes. Out of memory drops the event (counted) rather than recording a hole.
  void record(StreamState& s, std::string_view hdr, const char* p, std::size_t n,
              double t) noexcept {
    try {
      s.ev_data.append(hdr.data(), hdr.size());
      append_section(s, p, n, t);
    } catch (const std::bad_alloc&) {
      drop_event(s.event, "out_of_memory");
      return;
    }
    OpenEvent& e = events[s.event];
    e.post_bytes += hdr.size() + n;
    if (e.max_bytes && e.post_bytes >= e.max_bytes) close_event(s.event, "max_bytes");
  }

  // ---- events -------------------------------------------------------------------------------
  void recompute_deadline() noexcept {
    next_deadline = std::numeric_limits<double>::infinity();
    for (const auto& e : events) {
      if (e.used && e.deadline < next_deadline) next_deadline = e.deadline;
    }
  }

  void close_due(double t) noexcept {
    for (std::uint32_t i = 0; i < events.size(); ++i) {
      if (events[i].used && events[i].deadline < t) close_event(i, "time");
    }
    recompute_deadline();
  }

  void add_stream(std::uint32_t ev, std::uint32_t si, double t, double pre_s) {
    StreamState& s = streams[si];
    events[ev].streams.push_back(si);  // reserved: listed first so a drop releases it
    s.event = ev;
    s.ev_data.clear();
    s.ev_count = 0;
    const double from = t - std::min(pre_s, s.cfg->ring_seconds);
    if (s.numeric) {
      const auto& r = s.nring;
      std::uint64_t first = r.head;
      while (first > r.oldest() && r.row(first - 1)[0] >= from) --first;
      for (std::uint64_t q = first; q < r.head; ++q) {
        const double* row = r.row(q);
        append_section(s, reinterpret_cast<const char*>(row), r.row_bytes(), row[0]);
      }
    } else {
      const auto& r = s.bring;
      std::size_t first = r.count;
      while (first > 0 && r.at(first - 1).t >= from) --first;
      for (std::size_t i = first; i < r.count; ++i) {
        const auto& en = r.at(i);
        char hdr[detail::kBlobRecordHeader];
        std::memcpy(hdr, &en.t, 8);
        std::memcpy(hdr + 8, &en.size, 8);
        s.ev_data.append(hdr, sizeof hdr);
        append_section(s, r.data.data() + en.off, en.size, en.t);
      }
    }
  }

  void merge(std::uint32_t into, std::uint32_t from) {
    OpenEvent& a = events[into];
    OpenEvent& b = events[from];
    for (auto tr : b.triggers) {
      if (std::find(a.triggers.begin(), a.triggers.end(), tr) == a.triggers.end()) {
        a.triggers.push_back(tr);
      }
    }
    for (auto s : b.streams) {
      a.streams.push_back(s);
      streams[s].event = into;
    }
    a.priority = std::max(a.priority, b.priority);
    a.deadline = std::max(a.deadline, b.deadline);
    a.post_bytes += b.post_bytes;
    a.max_bytes = (a.max_bytes == 0 || b.max_bytes == 0) ? 0 : std::max(a.max_bytes, b.max_bytes);
    if (b.t_fire < a.t_fire) a.t_fire = b.t_fire;
    b.used = false;
    b.triggers.clear();
    b.streams.clear();
  }

  void on_fire(std::uint32_t trigger, double t) {
    const auto& pol = engine.policy(trigger);
    const auto& cap = trigger_cfgs[trigger].capture;
    std::uint32_t target = kNone;
    for (auto s : pol.capture_streams) {
      std::uint32_t e = streams[s].event;
      if (e == kNone) continue;
      if (target == kNone) {
        target = e;
      } else if (e != target) {
        merge(target, e);
      }
    }
    if (target == kNone) {
      for (std::uint32_t i = 0; i < events.size(); ++i) {
        if (!events[i].used) {
          target = i;
          break;
        }
      }
      if (target == kNone) return;  // cannot happen: one slot per stream
      opening = target;
      OpenEvent& e = events[target];
      e.used = true;
      e.seq = ++seq;
      e.t_fire = t;
      e.deadline = t;
      e.wall_offset_ns =
          to_ns(port.clock->wall()) - static_cast<std::int64_t>(std::llround(t * 1e9));
      e.priority = 0;
      e.primary = primary_of[trigger];
      e.post_bytes = 0;
      e.max_bytes = cap.max_bytes;
    } else {
      opening = target;
      ++st.merged_fires;
      m_merged->inc();
      OpenEvent& e = events[target];
      e.max_bytes = (e.max_bytes == 0 || cap.max_bytes == 0) ? 0
                                                              : std::max(e.max_bytes, cap.max_bytes);
    }
    for (auto s : pol.capture_streams) {
      if (streams[s].event != target) add_stream(target, s, t, cap.pre_s);
    }
    OpenEvent& e = events[target];
    if (std::find(e.triggers.begin(), e.triggers.end(), trigger) == e.triggers.end()) {
      e.triggers.push_back(trigger);
    }
    e.priority = std::max(e.priority, pol.priority);
    e.deadline = std::max(e.deadline, t + cap.post_s);
    recompute_deadline();
  }

  // Frees event `i` and its streams' sections (keeping their capacity for the next event).
  void release(std::uint32_t i) noexcept {
    OpenEvent& e = events[i];
    for (auto si : e.streams) {
      streams[si].event = kNone;
      streams[si].ev_data.clear();
      streams[si].ev_count = 0;
    }
    e.used = false;
    e.triggers.clear();
    e.streams.clear();
  }

  // An event that cannot be finished (out of memory, a throwing sink): counted by reason,
  // logged without allocating, its slot freed. Never throws.
  void drop_event(std::uint32_t i, const char* why) noexcept {
    if (i >= events.size() || !events[i].used) return;
    ++st.events_dropped;
    (std::strcmp(why, "out_of_memory") == 0 ? m_dropped_oom : m_dropped_exception)->inc();
    if (log_enabled(port, LogLevel::error)) {
      char msg[160];
      std::snprintf(msg, sizeof msg, "event #%llu dropped (%s; counted in "
                    "fleetpipe_capture_events_dropped_total)",
                    static_cast<unsigned long long>(events[i].seq), why);
      log(port, LogLevel::error, "capture", msg);
    }
    release(i);
    recompute_deadline();
  }

  void close_event(std::uint32_t i, const char* reason) noexcept {
    OpenEvent& e = events[i];
    if (!e.used) return;
    try {
      finish_event(e, reason);
    } catch (const std::bad_alloc&) {
      drop_event(i, "out_of_memory");
    } catch (...) {  // the sink is host code: its exception must not end the host
      drop_event(i, "exception");
    }
    release(i);
    publish();
  }

  // Encodes event `e` and hands it to the sink. Throws std::bad_alloc (and whatever the sink
  // throws); close_event turns that into a counted drop.
  void finish_event(OpenEvent& e, const char* reason) {
    detail::EventIn in;
    char idbuf[64];
    std::int64_t wall_fire = e.wall_offset_ns + std::llround(e.t_fire * 1e9);
    std::snprintf(idbuf, sizeof idbuf, "%016llx-%06llu",
                  static_cast<unsigned long long>(wall_fire),
                  static_cast<unsigned long long>(e.seq));
    in.event_id = idbuf;
    in.device = device_id;
    for (auto tr : e.triggers) in.triggers.push_back(trigger_cfgs[tr].name);
    in.priority = e.priority;
    in.t_fire = e.t_fire;
    in.closed = reason;
    double t0 = std::numeric_limits<double>::infinity(), t1 = -t0;
    std::vector<detail::SectionIn> secs;
    // {"imu":512,"cam":40}: stream names are [A-Za-z0-9_.-] (validated), nothing to escape.
    // Written by hand, not through a JSON object tree, whose destructor allocates.
    std::string counts = "{";
    std::vector<std::uint32_t> order = e.streams;
    std::sort(order.begin(), order.end());
    for (auto si : order) {
      StreamState& s = streams[si];
      detail::SectionIn sec;
      sec.stream = s.cfg;
      sec.data = s.ev_data;
      sec.count = s.ev_count;
      sec.t_first = s.ev_count ? s.ev_t_first : e.t_fire;
      sec.t_last = s.ev_count ? s.ev_t_last : e.t_fire;
      if (s.ev_count) {
        t0 = std::min(t0, s.ev_t_first);
        t1 = std::max(t1, s.ev_t_last);
      }
      if (counts.size() > 1) counts += ',';
      counts += '"';
      counts += s.cfg->name;
      counts += "\":";
      counts += std::to_string(s.ev_count);
      secs.push_back(sec);
    }
    counts += '}';
    if (!(t0 <= t1)) t0 = t1 = e.t_fire;
    in.t_start = t0;
    in.t_end = t1;
    in.wall_start_ns = e.wall_offset_ns + std::llround(t0 * 1e9);
    in.wall_end_ns = e.wall_offset_ns + std::llround(t1 * 1e9);
    auto enc = detail::encode_event(in, secs, payload, scratch);
    if (!enc) {
      if (log_enabled(port, LogLevel::error)) {
        log(port, LogLevel::error, "capture",
            "event " + in.event_id + " could not be encoded: " + enc.error().message);
      }
      ++st.events_rejected;
      m_rejected->inc();
    } else {
      RecordMeta meta;
      meta.stream = stream_cfgs[e.primary].name;
      meta.event_id = in.event_id;
      meta.trigger_ids = in.triggers;
      meta.priority = e.priority;
      meta.start_ns = in.wall_start_ns;
      meta.end_ns = in.wall_end_ns;
      meta.content_type = kEventContentType;
      meta.metadata["device"] = device_id;
      meta.metadata["sample_counts"] = std::move(counts);
      AppendOutcome out = sink->deliver(meta, payload);
      ++st.events;
      st.event_bytes += payload.size();
      m_events->inc();
      m_event_bytes->inc(payload.size());
      if (!out.accepted) {
        ++st.events_rejected;
        m_rejected->inc();
        if (log_enabled(port, LogLevel::warning)) {
          try {
            log(port, LogLevel::warning, "capture",
                "event " + in.event_id + " (" + std::to_string(payload.size()) +
                    " bytes) rejected by the sink: " + out.message);
          } catch (const std::bad_alloc&) {  // the line is lost; the rejection is counted
          }
        }
      }
      for (auto tr : e.triggers) engine.charge_event(tr, payload.size(), t1);
    }
  }

  void publish() noexcept {
    std::size_t open = 0;
    for (const auto& e : events) open += e.used ? 1 : 0;
    m_open->set(double(open));
    for (auto& s : streams) {
      s.m_samples->inc(s.samples - s.samples_published);
      s.samples_published = s.samples;
      s.m_overflow->inc(s.overflow - s.overflow_published);
      s.overflow_published = s.overflow;
    }
  }
};

Capture::Capture(std::unique_ptr<Impl> impl) noexcept : impl_(std::move(impl)) {}
Capture::~Capture() = default;

Result<std::unique_ptr<Capture>> Capture::create(const Config& config, EventSink& sink,
                                                 const Port& port, MetricsRegistry& metrics) {
  return create(config.device_id, config.streams, config.triggers, sink, port, metrics);
}

Result<std::unique_ptr<Capture>> Capture::create(std::string device_id,
                                                 std::vector<StreamConfig> streams,
                                                 std::vector<TriggerConfig> triggers,
                                                 EventSink& sink, const Port& port,
                                                 MetricsRegistry& metrics) {
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
  const std::size_t n = impl->stream_cfgs.size();
  impl->streams.resize(n);
  std::vector<const detail::NumericRing*> rings(n, nullptr);
  std::uint64_t ring_total = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const auto& c = impl->stream_cfgs[i];
    auto& s = impl->streams[i];
    s.cfg = &c;
    s.numeric = c.kind == StreamKind::numeric;
    if (s.numeric) {
      s.nring.init(c.channels.size(), c.ring_bytes, c.ring_seconds);
      rings[i] = &s.nring;
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
  for (std::size_t t = 0; t < impl->trigger_cfgs.size(); ++t) {
    const auto& tc = impl->trigger_cfgs[t];
    const auto& caps = impl->engine.policy(std::uint32_t(t)).capture_streams;
    std::uint32_t primary = caps.empty() ? 0 : caps.front();
    for (std::uint32_t i = 0; i < n; ++i) {
      if (impl->stream_cfgs[i].name == tc.stream &&
          std::find(caps.begin(), caps.end(), i) != caps.end()) {
        primary = i;
      }
    }
    impl->primary_of.push_back(primary);
  }
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
  const char* dropped_help = "Events lost before the sink, by reason (out_of_memory, exception)";
  impl->m_dropped_oom = &metrics.counter("fleetpipe_capture_events_dropped_total", dropped_help,
                                         {{"reason", "out_of_memory"}});
  impl->m_dropped_exception = &metrics.counter("fleetpipe_capture_events_dropped_total",
                                               dropped_help, {{"reason", "exception"}});
  impl->engine.bind(&Impl::on_fire_thunk, impl.get(), std::move(rings));
  return std::unique_ptr<Capture>(new Capture(std::move(impl)));
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

void Capture::push(StreamHandle h, double t, const double* values, std::size_t n) noexcept {
  Impl& m = *impl_;
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
  if (t > m.next_deadline) m.close_due(t);
  bool early = false;
  const double* row = s.nring.push(t, values, n, early);
  ++s.samples;
  if (early) m.note_overflow(s, 1, "ring_bytes evicted rows younger than ring_seconds");
  if (s.event != kNone) {
    m.record(s, {}, reinterpret_cast<const char*>(row), s.nring.row_bytes(), t);
  }
  m.engine.observe(h.index, t, row + 1, 0);
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
  const bool stored = s.bring.push(t, bytes, early);
  ++s.samples;
  if (!stored) m.note_overflow(s, 1, "a blob larger than ring_bytes was not kept in the ring");
  if (early) m.note_overflow(s, early, "ring bytes/blobs evicted blobs younger than ring_seconds");
  if (s.event != kNone) {
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
  for (std::uint32_t i = 0; i < impl_->events.size(); ++i) {
    if (impl_->events[i].used) impl_->close_event(i, "flush");
  }
  impl_->recompute_deadline();
  impl_->publish();
}

TriggerStats Capture::trigger_stats(TriggerHandle h) const noexcept {
  if (h.index >= impl_->trigger_cfgs.size()) return {};
  return impl_->engine.policy(h.index).stats;
}

CaptureStats Capture::stats() const noexcept {
  CaptureStats s = impl_->st;
  s.invalid_samples = impl_->invalid_handle;
  for (const auto& ss : impl_->streams) {
    s.samples += ss.samples;
    s.invalid_samples += ss.invalid;
  }
  s.nan_samples = impl_->engine.nan_samples();
  for (const auto& e : impl_->events) s.open_events += e.used ? 1 : 0;
  return s;
}

}  // namespace fleetpipe

// ----------------------------------------------------------------------------------------------
// JSON: "/streams" and "/triggers"
// ----------------------------------------------------------------------------------------------
namespace fleetpipe::detail {

namespace {
StreamConfig parse_stream(JsonReader& r) {
  StreamConfig s;
  s.name = r.required_string("name");
  r.string("description", "");
  s.kind = r.one_of("kind", "numeric", {"numeric", "blob"}) == "numeric" ? StreamKind::numeric
                                                                          : StreamKind::blob;
  s.channels = r.string_array("channels");
  if (s.kind == StreamKind::numeric && s.channels.empty()) {
    r.fail("channels", "is required for a numeric stream (channel names in push order)");
  }
  if (s.kind == StreamKind::blob && !s.channels.empty()) {
    r.fail("channels", "a blob stream has no channels");
  }
  s.ring_seconds = r.seconds("ring_seconds", s.ring_seconds, 0, JsonReader::kInf, true);
  s.ring_bytes = r.bytes("ring_bytes", s.ring_bytes, 64);
  s.ring_max_blobs =
      static_cast<std::uint32_t>(r.integer("ring_max_blobs", s.ring_max_blobs, 1, 1 << 24));
  s.compression =
      r.one_of("compression", "none", {"none", "zstd"}) == "zstd" ? Compression::zstd
                                                                  : Compression::none;
  s.zstd_level = static_cast<int>(r.integer("zstd_level", s.zstd_level, 1, 19));
  s.content_type = r.string("content_type", "");
  r.finish();
  return s;
}
}  // namespace

void parse_capture_sections(JsonReader& root, Config& out) {
  for (auto& s : root.objects("streams")) out.streams.push_back(parse_stream(s));
  for (auto& t : root.objects("triggers")) out.triggers.push_back(parse_trigger_config(t, false));
  // Custom triggers get their implementation from the host after parsing: skip that check here.
  std::vector<TriggerConfig> check = out.triggers;
  struct Placeholder final : CustomTrigger {
    bool evaluate(double, std::uint32_t, const double*, std::size_t, std::size_t) noexcept override {
      return false;
    }
  };
  auto placeholder = std::make_shared<Placeholder>();
  std::function<void(TriggerConfig&)> fill = [&](TriggerConfig& c) {
    if (c.type == TriggerType::custom && !c.custom) c.custom = placeholder;
    for (auto& ch : c.children) fill(ch);
  };
  for (auto& c : check) fill(c);
  throw_if_invalid(validate_capture_config(out.streams, check));
}

}  // namespace fleetpipe::detail
