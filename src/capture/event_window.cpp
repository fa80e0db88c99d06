// Event windows: opening, merging, recording and closing events, and the hand-off to the sink.
#include "capture/capture_impl.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>

#include "capture/event_format.hpp"

namespace fleetpipe {

using detail::kNone;
using detail::OpenEvent;
using detail::StreamState;

namespace {

std::int64_t to_ns(WallTime w) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(w.time_since_epoch()).count();
}

}  // namespace

// Throws std::bad_alloc when the section cannot grow (callers on the hot path use record()).
void Capture::Impl::append_section(StreamState& s, const char* p, std::size_t n, double t) {
  s.ev_data.append(p, n);
  if (s.ev_count == 0) s.ev_t_first = t;
  s.ev_t_last = t;
  ++s.ev_count;
}

// A sample joins the open event of its stream: `hdr` (blob record header, may be empty) then
// the bytes. Out of memory drops the event (counted) rather than recording a hole.
void Capture::Impl::record(StreamState& s, std::string_view hdr, const char* p, std::size_t n,
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

// A blob stream's sample that the ring stored right after the open event's lazy window (entry
// pre.hi) joins the event as record() would put it there, still in the ring.
void Capture::Impl::extend_lazy(std::uint32_t si, StreamState& s, std::size_t n,
                                double t) noexcept {
  const bool was_live = s.pre.live();
  ++s.pre.hi;
  if (s.ev_count == 0) s.ev_t_first = t;
  s.ev_t_last = t;
  ++s.ev_count;
  if (!was_live) update_pin(si);  // the ring must now keep (or copy) it
  OpenEvent& e = events[s.event];
  e.post_bytes += detail::kBlobRecordHeader + n;
  if (e.max_bytes && e.post_bytes >= e.max_bytes) close_event(s.event, "max_bytes");
}

// ---- events -------------------------------------------------------------------------------
void Capture::Impl::recompute_deadline() noexcept {
  next_deadline = std::numeric_limits<double>::infinity();
  for (const auto& e : events) {
    if (e.used && e.deadline < next_deadline) next_deadline = e.deadline;
  }
}

void Capture::Impl::close_due(double t) noexcept {
  for (std::uint32_t i = 0; i < events.size(); ++i) {
    if (events[i].used && events[i].deadline < t) close_event(i, "time");
  }
  recompute_deadline();
}

// The stream joins event `ev` with its pre window left in the ring (pinned, copied lazily:
// evict_pinned before the ring overwrites it, materialize at delivery), so a fire costs no copy.
void Capture::Impl::add_stream(std::uint32_t ev, std::uint32_t si, double t, double pre_s) {
  StreamState& s = streams[si];
  events[ev].streams.push_back(si);  // reserved: listed first so a drop releases it
  s.event = ev;
  s.ev_data.clear();
  s.ev_count = 0;
  s.pre.copied.clear();
  const double from = t - std::min(pre_s, s.cfg->ring_seconds);
  if (s.numeric) {
    const auto& r = s.nring;
    std::uint64_t first = r.head;
    while (first > r.oldest() && r.row(first - 1)[0] >= from) --first;
    s.pre.lo = first;
    s.pre.hi = r.head;
    if (first < r.head) {
      s.ev_t_first = r.row(first)[0];
      s.ev_t_last = r.row(r.head - 1)[0];
    }
  } else {
    const auto& r = s.bring;
    std::size_t first = r.count;
    while (first > 0 && r.at(first - 1).t >= from) --first;
    s.pre.lo = r.popped + first;
    s.pre.hi = r.popped + r.count;
    if (first < r.count) {
      s.ev_t_first = r.at(first).t;
      s.ev_t_last = r.at(r.count - 1).t;
    }
  }
  s.ev_count = s.pre.hi - s.pre.lo;
  update_pin(si);
}

// Ring entry `seq` of stream `si` as the event format stores it (a row; a blob header + bytes).
// Precondition: the ring still holds it. Throws std::bad_alloc.
void Capture::Impl::append_entry(std::uint32_t si, std::uint64_t seq, std::string& out) {
  StreamState& s = streams[si];
  if (s.numeric) {
    out.append(reinterpret_cast<const char*>(s.nring.row(seq)), s.nring.row_bytes());
    return;
  }
  const auto& en = s.bring.at(static_cast<std::size_t>(seq - s.bring.popped));
  char hdr[detail::kBlobRecordHeader];
  std::memcpy(hdr, &en.t, 8);
  std::memcpy(hdr + 8, &en.size, 8);
  out.append(hdr, sizeof hdr);
  out.append(s.bring.data.data() + en.off, en.size);
}

// The ring of stream `si` is about to overwrite entry `seq`: every pre window still reading it
// copies it first. Out of memory drops the event that needed it.
void Capture::Impl::evict_pinned(std::uint32_t si, std::uint64_t seq) noexcept {
  StreamState& s = streams[si];
  if (s.event != kNone && s.pre.live() && s.pre.lo == seq) {
    try {
      append_entry(si, seq, s.pre.copied);
      ++s.pre.lo;
    } catch (const std::bad_alloc&) {
      drop_event(s.event, "out_of_memory");
    }
  }
  for (std::size_t q = 0; q < pending_count; ++q) {
    std::size_t at = pending_head + q;
    if (at >= pending.size()) at -= pending.size();
    detail::ClosedEvent& c = slots[pending[at]];
    detail::LazyPre& p = c.sections[si].pre;
    if (!p.live() || p.lo != seq) continue;
    try {
      append_entry(si, seq, p.copied);
      ++p.lo;
    } catch (const std::bad_alloc&) {
      c.out_of_memory = true;
      p.lo = p.hi = 0;
    }
  }
  update_pin(si);
}

// The ring's pin: the oldest entry a live pre window (open event or hand-off) still reads.
void Capture::Impl::update_pin(std::uint32_t si) noexcept {
  StreamState& s = streams[si];
  std::uint64_t lo = std::numeric_limits<std::uint64_t>::max();
  if (s.event != kNone && s.pre.live()) lo = s.pre.lo;
  for (std::size_t q = 0; q < pending_count; ++q) {
    std::size_t at = pending_head + q;
    if (at >= pending.size()) at -= pending.size();
    const detail::LazyPre& p = slots[pending[at]].sections[si].pre;
    if (p.live() && p.lo < lo) lo = p.lo;
  }
  if (s.numeric) {
    s.nring.set_pin(lo);
  } else {
    s.bring.pin_lo = lo;
  }
}

void Capture::Impl::merge(std::uint32_t into, std::uint32_t from) {
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

void Capture::Impl::on_fire(std::uint32_t trigger, double t) {
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
void Capture::Impl::release(std::uint32_t i) noexcept {
  OpenEvent& e = events[i];
  for (auto si : e.streams) {
    streams[si].event = kNone;
    streams[si].ev_data.clear();
    streams[si].ev_count = 0;
    streams[si].pre.copied.clear();
    streams[si].pre.lo = streams[si].pre.hi = 0;
    update_pin(si);
  }
  e.used = false;
  e.triggers.clear();
  e.streams.clear();
}

// An event that cannot be finished (out of memory, a throwing sink, a full hand-off): counted
// by reason, logged without allocating. Never throws.
void Capture::Impl::count_drop(std::uint64_t seq, const char* why) noexcept {
  ++st.events_dropped;
  Counter* c = m_dropped_exception;
  if (std::strcmp(why, "out_of_memory") == 0) {
    c = m_dropped_oom;
  } else if (std::strcmp(why, "handoff_full") == 0) {
    c = m_dropped_handoff;
    ++st.handoff_full;
  }
  c->inc();
  if (log_enabled(port, LogLevel::error)) {
    char msg[160];
    std::snprintf(msg, sizeof msg, "event #%llu dropped (%s; counted in "
                  "fleetpipe_capture_events_dropped_total)",
                  static_cast<unsigned long long>(seq), why);
    log(port, LogLevel::error, "capture", msg);
  }
}

// Drops open event `i` and frees its slot.
void Capture::Impl::drop_event(std::uint32_t i, const char* why) noexcept {
  if (i >= events.size() || !events[i].used) return;
  count_drop(events[i].seq, why);
  release(i);
  recompute_deadline();
}

// Closes open event `i` into a hand-off slot: its sections are swapped out of the streams (no
// copy, no allocation: every vector is reserved at creation). Without a deferred hand-off the
// slot is delivered at once.
void Capture::Impl::close_event(std::uint32_t i, const char* reason) noexcept {
  OpenEvent& e = events[i];
  if (!e.used) return;
  if (free_slots.empty()) {
    count_drop(e.seq, "handoff_full");
    release(i);
    publish();
    return;
  }
  const std::uint32_t k = free_slots.back();
  free_slots.pop_back();
  detail::ClosedEvent& c = slots[k];
  c.seq = e.seq;
  c.t_fire = e.t_fire;
  c.wall_offset_ns = e.wall_offset_ns;
  c.priority = e.priority;
  c.primary = e.primary;
  c.reason = reason;
  c.out_of_memory = false;
  c.triggers.assign(e.triggers.begin(), e.triggers.end());
  c.streams.assign(e.streams.begin(), e.streams.end());
  std::sort(c.streams.begin(), c.streams.end());
  for (auto si : c.streams) {
    StreamState& s = streams[si];
    detail::ClosedSection& sec = c.sections[si];
    sec.pre.copied.swap(s.pre.copied);
    sec.pre.lo = s.pre.lo;
    sec.pre.hi = s.pre.hi;
    s.pre.lo = s.pre.hi = 0;
    sec.data.swap(s.ev_data);
    sec.count = s.ev_count;
    sec.t_first = s.ev_t_first;
    sec.t_last = s.ev_t_last;
  }
  std::size_t tail = pending_head + pending_count;
  if (tail >= pending.size()) tail -= pending.size();
  pending[tail] = k;
  ++pending_count;
  release(i);
  if (!deferred) deliver_one();
  publish();
}

void Capture::Impl::publish() noexcept {
  std::size_t open = 0;
  for (const auto& e : events) open += e.used ? 1 : 0;
  m_open->set(double(open));
  for (auto& s : streams) {
    const std::uint64_t n = s.accepted();
    s.m_samples->inc(n - s.samples_published);
    s.samples_published = n;
    s.m_overflow->inc(s.overflow - s.overflow_published);
    s.overflow_published = s.overflow;
  }
}

}  // namespace fleetpipe
