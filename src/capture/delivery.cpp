// Delivery: encoding closed events and handing them to the sink, in slices that resume at the
// next call (Capture::deliver_slice; Pipeline::poll does one or more per poll).
//
// A section's bytes are read straight from where they are, in order: the entries its ring had to
// overwrite first (pre.copied), the entries still in the ring (pre.lo..pre.hi, pinned until read),
// then the post window (data). There is no intermediate copy of the pre window; zstd sections
// are compressed piece by piece (ZSTD streaming API) into `scratch`, every other section is
// copied from those pieces into `payload` once. Between two slices the host may push: the ring
// then copies a pinned entry into pre.copied before overwriting it (evict_pinned), which the
// reader takes next, so the order is kept. A ring entry is never split across slices, so a
// slice can exceed its budget by at most one blob.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "capture/capture_impl.hpp"

namespace fleetpipe {

using detail::ClosedEvent;
using detail::ClosedSection;
using Phase = detail::Delivery::Phase;

namespace {

// zstd at the default levels costs roughly this many times a copy per input byte: a slice's
// byte budget is divided by it for compression.
constexpr std::size_t kZstdCost = 8;
constexpr std::size_t kUnlimited = std::numeric_limits<std::size_t>::max();

}  // namespace

// Delivers the oldest closed event whole; false when none waits.
bool Capture::Impl::deliver_one() noexcept {
  while (pending_count) {
    if (deliver_step(kUnlimited) == 2) return true;
  }
  return false;
}

// One slice of about `budget` bytes of work on the oldest closed event: 0 = none waits, 1 = it
// is not finished yet, 2 = it left the hand-off (delivered, rejected or dropped). Never throws.
int Capture::Impl::deliver_step(std::size_t budget) noexcept {
  if (pending_count == 0) return 0;
  ClosedEvent& c = slots[pending[pending_head]];
  if (budget == 0) budget = 1;
  try {
    if (c.out_of_memory) throw std::bad_alloc();
    std::size_t used = 0;
    if (dv.phase == Phase::idle) begin_delivery(c);
    while (dv.phase == Phase::compress && used < budget) used += compress_some(c, budget - used);
    if (dv.phase == Phase::idle) return 2;  // the encoder failed: rejected, counted
    while (dv.phase == Phase::write && used < budget) used += write_some(c, budget - used);
    // The sink's append copies the payload: it joins this slice when that copy fits the budget
    // left (a small event is delivered by one slice, whatever the machine's speed), and is a
    // slice of its own otherwise.
    const bool hand_fits = used == 0 || budget == kUnlimited || used + payload.size() <= budget;
    if (dv.phase == Phase::hand && hand_fits) {
      hand_to_sink(c);
      end_delivery();
      return 2;
    }
    return 1;
  } catch (const std::bad_alloc&) {
    count_drop(c.seq, "out_of_memory");
  } catch (...) {  // the sink is host code: its exception must not end the host
    count_drop(c.seq, "exception");
  }
  end_delivery();
  return 2;
}

// The event's id, index fields and section layout (lengths known, except compressed ones).
void Capture::Impl::begin_delivery(ClosedEvent& e) {
  detail::EventIn& in = dv.in;
  char idbuf[64];
  std::int64_t wall_fire = e.wall_offset_ns + std::llround(e.t_fire * 1e9);
  std::snprintf(idbuf, sizeof idbuf, "%016llx-%06llu",
                static_cast<unsigned long long>(wall_fire),
                static_cast<unsigned long long>(e.seq));
  in.event_id = idbuf;
  in.device = device_id;
  in.triggers.clear();
  for (auto tr : e.triggers) in.triggers.push_back(trigger_cfgs[tr].name);
  in.priority = e.priority;
  in.t_fire = e.t_fire;
  in.closed = e.reason;
  double t0 = std::numeric_limits<double>::infinity(), t1 = -t0;
  dv.layout.clear();
  dv.at.assign(e.streams.size(), 0);
  // {"imu":512,"cam":40}: stream names are [A-Za-z0-9_.-] (validated), nothing to escape.
  // Written by hand, not through a JSON object tree, whose destructor allocates.
  dv.counts = "{";
  for (auto si : e.streams) {
    const ClosedSection& s = e.sections[si];
    const detail::StreamState& st = streams[si];
    detail::SectionLayout l;
    l.stream = st.cfg;
    l.count = s.count;
    l.t_first = s.count ? s.t_first : e.t_fire;
    l.t_last = s.count ? s.t_last : e.t_fire;
    std::uint64_t ring = 0;
    if (s.pre.live()) {
      if (st.numeric) {
        ring = (s.pre.hi - s.pre.lo) * st.nring.row_bytes();
      } else {
        for (std::uint64_t q = s.pre.lo; q < s.pre.hi; ++q) {
          ring += detail::kBlobRecordHeader +
                  st.bring.at(static_cast<std::size_t>(q - st.bring.popped)).size;
        }
      }
    }
    l.raw_length = l.length = s.pre.copied.size() + ring + s.data.size();
    l.zstd = detail::stored_zstd(*st.cfg, l.raw_length);
    if (s.count) {
      t0 = std::min(t0, s.t_first);
      t1 = std::max(t1, s.t_last);
    }
    if (dv.counts.size() > 1) dv.counts += ',';
    dv.counts += '"';
    dv.counts += st.cfg->name;
    dv.counts += "\":";
    dv.counts += std::to_string(s.count);
    dv.layout.push_back(l);
  }
  dv.counts += '}';
  if (!(t0 <= t1)) t0 = t1 = e.t_fire;
  in.t_start = t0;
  in.t_end = t1;
  in.wall_start_ns = e.wall_offset_ns + std::llround(t0 * 1e9);
  in.wall_end_ns = e.wall_offset_ns + std::llround(t1 * 1e9);
  dv.t_end = t1;
  scratch.clear();
  dv.sec = 0;
  dv.copied_pos = dv.data_pos = dv.scratch_pos = 0;
  dv.phase = Phase::compress;
}

// Reads up to about `budget` bytes of section `s` (stream `si`) at the cursors, handing each
// contiguous piece to `put(const char*, size_t)`; returns the bytes read. Reads at least one
// piece when any is left; a ring entry is read whole.
template <class Put>
std::size_t Capture::Impl::read_section(std::uint32_t si, ClosedSection& s, std::size_t budget,
                                        Put&& put) {
  detail::StreamState& st = streams[si];
  std::size_t done = 0;
  bool unpinned = false;
  while (done < budget) {
    const std::size_t room = budget - done;
    if (dv.copied_pos < s.pre.copied.size()) {  // first: what the ring overwrote
      const std::size_t n = static_cast<std::size_t>(
          std::min<std::uint64_t>(room, s.pre.copied.size() - dv.copied_pos));
      put(s.pre.copied.data() + dv.copied_pos, n);
      dv.copied_pos += n;
      done += n;
    } else if (s.pre.live()) {  // then the ring, oldest first
      if (st.numeric) {
        const auto& r = st.nring;
        const std::uint64_t rb = r.row_bytes();
        std::uint64_t rows = std::min(s.pre.hi - s.pre.lo, r.contiguous_rows(s.pre.lo));
        rows = std::min<std::uint64_t>(rows, std::max<std::uint64_t>(1, room / rb));
        put(reinterpret_cast<const char*>(r.row(s.pre.lo)), static_cast<std::size_t>(rows * rb));
        s.pre.lo += rows;
        done += static_cast<std::size_t>(rows * rb);
      } else {
        const auto& r = st.bring;
        const auto& en = r.at(static_cast<std::size_t>(s.pre.lo - r.popped));
        char hdr[detail::kBlobRecordHeader];
        std::memcpy(hdr, &en.t, 8);
        std::memcpy(hdr + 8, &en.size, 8);
        put(hdr, sizeof hdr);
        if (en.size) put(r.data.data() + en.off, static_cast<std::size_t>(en.size));
        ++s.pre.lo;
        done += static_cast<std::size_t>(sizeof hdr + en.size);
      }
      unpinned = true;
    } else if (dv.data_pos < s.data.size()) {  // then the post window
      const std::size_t n = static_cast<std::size_t>(
          std::min<std::uint64_t>(room, s.data.size() - dv.data_pos));
      put(s.data.data() + dv.data_pos, n);
      dv.data_pos += n;
      done += n;
    } else {
      break;
    }
  }
  if (unpinned) {
    if (!s.pre.live()) s.pre.lo = s.pre.hi = 0;
    update_pin(si);  // the entries read may be overwritten now
  }
  return done;
}

bool Capture::Impl::section_read(const ClosedSection& s) const noexcept {
  return dv.copied_pos == s.pre.copied.size() && !s.pre.live() && dv.data_pos == s.data.size();
}

void Capture::Impl::next_section() noexcept {
  ++dv.sec;
  dv.copied_pos = dv.data_pos = dv.scratch_pos = 0;
}

// Compresses part of the next zstd section into scratch; with none left, writes the header and
// index into payload and moves to the write phase. Returns the work done (in copy bytes).
std::size_t Capture::Impl::compress_some(ClosedEvent& c, std::size_t budget) {
  while (dv.sec < c.streams.size() && !dv.layout[dv.sec].zstd) next_section();
  if (dv.sec == c.streams.size()) {
    detail::write_head(dv.in, dv.layout, payload);
    dv.sec = 0;
    dv.copied_pos = dv.data_pos = dv.scratch_pos = 0;
    dv.phase = Phase::write;
    return payload.size();
  }
  const std::uint32_t si = c.streams[dv.sec];
  ClosedSection& s = c.sections[si];
  detail::SectionLayout& l = dv.layout[dv.sec];
  Result<void> ok;
  if (!dv.z.active()) {
    dv.at[dv.sec] = scratch.size();
    ok = dv.z.begin(l.stream->zstd_level, l.raw_length);
  }
  std::size_t n = 0;
  if (ok) {
    const std::size_t in_budget = std::max<std::size_t>(1, budget / kZstdCost);
    n = read_section(si, s, in_budget, [&](const char* p, std::size_t k) {
      if (ok) ok = dv.z.feed(std::string_view(p, k), scratch);
    });
    if (ok && section_read(s)) {
      ok = dv.z.feed({}, scratch, true);
      l.length = scratch.size() - dv.at[dv.sec];
      next_section();
    }
  }
  if (!ok) {  // not delivered: counted as rejected, as a sink's refusal is
    if (log_enabled(port, LogLevel::error)) {
      log(port, LogLevel::error, "capture",
          "event " + dv.in.event_id + " could not be encoded: " + ok.error().message);
    }
    ++st.events_rejected;
    m_rejected->inc();
    end_delivery();
    return budget;
  }
  return n * kZstdCost;
}

// Copies part of the data area into payload, section by section; with all of it there, moves
// to the hand phase. Returns the bytes copied.
std::size_t Capture::Impl::write_some(ClosedEvent& c, std::size_t budget) {
  if (dv.sec == c.streams.size()) {
    dv.phase = Phase::hand;
    return 0;
  }
  const detail::SectionLayout& l = dv.layout[dv.sec];
  if (l.zstd) {
    const std::size_t n =
        static_cast<std::size_t>(std::min<std::uint64_t>(budget, l.length - dv.scratch_pos));
    payload.append(scratch, static_cast<std::size_t>(dv.at[dv.sec] + dv.scratch_pos), n);
    dv.scratch_pos += n;
    if (dv.scratch_pos == l.length) next_section();
    return n;
  }
  ClosedSection& s = c.sections[c.streams[dv.sec]];
  const std::size_t n = read_section(c.streams[dv.sec], s, budget,
                                     [&](const char* p, std::size_t k) { payload.append(p, k); });
  if (section_read(s)) next_section();
  return n;
}

// Hands the encoded event to the sink. Throws std::bad_alloc (and whatever the sink throws).
void Capture::Impl::hand_to_sink(ClosedEvent& e) {
  RecordMeta meta;
  meta.stream = stream_cfgs[e.primary].name;
  meta.event_id = dv.in.event_id;
  meta.trigger_ids = dv.in.triggers;
  meta.priority = e.priority;
  meta.start_ns = dv.in.wall_start_ns;
  meta.end_ns = dv.in.wall_end_ns;
  meta.content_type = kEventContentType;
  meta.metadata["device"] = device_id;
  meta.metadata["sample_counts"] = std::move(dv.counts);
  for (const auto& [k, v] : event_metadata) meta.metadata.emplace(k, v);
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
            "event " + dv.in.event_id + " (" + std::to_string(payload.size()) +
                " bytes) rejected by the sink: " + out.message);
      } catch (const std::bad_alloc&) {  // the line is lost; the rejection is counted
      }
    }
  }
  for (auto tr : e.triggers) engine.charge_event(tr, payload.size(), dv.t_end);
}

// The oldest closed event leaves the hand-off: its slot is freed (capacity kept) and its pins
// released.
void Capture::Impl::end_delivery() noexcept {
  dv.phase = Phase::idle;
  dv.z.reset();
  const std::uint32_t k = pending[pending_head];
  if (++pending_head == pending.size()) pending_head = 0;
  --pending_count;
  ClosedEvent& c = slots[k];
  for (auto si : c.streams) {  // clear() keeps the capacity
    c.sections[si].data.clear();
    c.sections[si].pre.copied.clear();
    c.sections[si].pre.lo = c.sections[si].pre.hi = 0;
    update_pin(si);
  }
  c.triggers.clear();
  c.streams.clear();
  free_slots.push_back(k);  // reserved: never allocates
  m_handoff->set(double(pending_count));
}

}  // namespace fleetpipe
