// SampleQueue: the preallocated SPSC queue from the host to the pipeline thread.
#include "pipeline/queue.hpp"

#include <algorithm>
#include <cstring>
#include <limits>

namespace fleetpipe::detail {

namespace {
constexpr std::uint64_t kNoEntry = std::numeric_limits<std::uint64_t>::max();
}  // namespace

void SampleQueue::init(std::size_t capacity, std::size_t blob_slots, std::size_t blob_slot_bytes,
                       const std::vector<StreamConfig>& streams) {
  cap_ = capacity;
  nslots_ = blob_slots;
  slot_bytes_ = blob_slot_bytes;
  if (slot_bytes_ == 0 || nslots_ == 0) {  // no blob storage: every blob is too large
    nslots_ = 0;
    slot_bytes_ = 0;
  }
  for (const auto& s : streams) {
    const bool blob = s.kind == StreamKind::blob;
    stream_is_blob_.push_back(blob);
    stream_channels_.push_back(blob ? 0 : static_cast<std::uint32_t>(s.channels.size()));
    if (!blob) max_ch_ = std::max(max_ch_, s.channels.size());
  }
  wake_depth_ = std::max<std::uint64_t>(1, cap_ / 4);
  wake_slots_ = std::max<std::uint64_t>(1, nslots_ / 2);
  entries_.resize(cap_);
  values_.assign(cap_ * max_ch_, 0.0);
  blob_bytes_.assign(nslots_ * slot_bytes_, '\0');
}

// ---- producer --------------------------------------------------------------------------------

std::uint64_t SampleQueue::reserve_entry() noexcept {
  const std::uint64_t h = prod_.head.load(std::memory_order_relaxed);
  if (h - prod_.tail_cache >= cap_) {
    prod_.tail_cache = cons_.tail.load(std::memory_order_acquire);
    if (h - prod_.tail_cache >= cap_) return kNoEntry;
  }
  return h;
}

bool SampleQueue::reserve_slot() noexcept {
  const std::uint64_t h = prod_.blob_head.load(std::memory_order_relaxed);
  if (h - prod_.blob_tail_cache >= nslots_) {
    prod_.blob_tail_cache = cons_.blob_tail.load(std::memory_order_acquire);
    if (h - prod_.blob_tail_cache >= nslots_) return false;
  }
  return true;
}

bool SampleQueue::wake_due() const noexcept {
  const std::uint64_t depth = prod_.head.load(std::memory_order_relaxed) - prod_.tail_cache;
  const std::uint64_t slots =
      prod_.blob_head.load(std::memory_order_relaxed) - prod_.blob_tail_cache;
  return depth >= wake_depth_ || (nslots_ && slots >= wake_slots_);
}

SampleQueue::Push SampleQueue::push_row(StreamHandle stream, double t, const double* values,
                                        std::size_t n) noexcept {
  const std::uint64_t h = reserve_entry();
  if (h == kNoEntry) return Push::full;
  const std::size_t i = static_cast<std::size_t>(h % cap_);
  std::size_t k = 0;
  if (stream.index < stream_channels_.size()) {
    k = std::min<std::size_t>(n, stream_channels_[stream.index]);
  }
  if (k && values) std::memcpy(values_.data() + i * max_ch_, values, k * sizeof(double));
  Entry& e = entries_[i];
  e.kind = Kind::row;
  e.index = stream.index;
  e.t = t;
  e.n = static_cast<std::uint32_t>(values ? k : 0);
  e.blob_size = 0;
  e.has_slot = false;
  publish(h);
  return Push::ok;
}

SampleQueue::Push SampleQueue::push_blob(StreamHandle stream, double t,
                                         std::string_view bytes) noexcept {
  const bool keep = stream.index < stream_is_blob_.size() && stream_is_blob_[stream.index] &&
                    !bytes.empty();
  if (keep && bytes.size() > slot_bytes_) return Push::too_large;
  const std::uint64_t h = reserve_entry();
  if (h == kNoEntry || (keep && !reserve_slot())) return Push::full;
  Entry& e = entries_[static_cast<std::size_t>(h % cap_)];
  e.kind = Kind::blob;
  e.index = stream.index;
  e.t = t;
  e.n = 0;
  e.has_slot = keep;
  e.blob_size = keep ? bytes.size() : 0;
  if (keep) {
    const std::uint64_t bh = prod_.blob_head.load(std::memory_order_relaxed);
    std::memcpy(blob_bytes_.data() + static_cast<std::size_t>(bh % nslots_) * slot_bytes_,
                bytes.data(), bytes.size());
    prod_.blob_head.store(bh + 1, std::memory_order_relaxed);  // published with head below
  }
  publish(h);
  return Push::ok;
}

// A fire or a tick: an entry without payload.
SampleQueue::Push SampleQueue::push_marker(Kind kind, std::uint32_t index, double t) noexcept {
  const std::uint64_t h = reserve_entry();
  if (h == kNoEntry) return Push::full;
  Entry& e = entries_[static_cast<std::size_t>(h % cap_)];
  e = Entry{};
  e.kind = kind;
  e.index = index;
  e.t = t;
  publish(h);
  return Push::ok;
}

SampleQueue::Push SampleQueue::push_fire(TriggerHandle trigger, double t) noexcept {
  return push_marker(Kind::fire, trigger.index, t);
}

SampleQueue::Push SampleQueue::push_tick(double t) noexcept { return push_marker(Kind::tick, 0, t); }

// ---- consumer --------------------------------------------------------------------------------

std::uint64_t SampleQueue::drain(Pipeline& p, Gauge& high_water_gauge) noexcept {
  std::uint64_t t = cons_.tail.load(std::memory_order_relaxed);
  const std::uint64_t h = prod_.head.load(std::memory_order_acquire);
  if (t == h) return 0;
  const std::uint64_t depth = h - t;
  if (depth > high_water_.load(std::memory_order_relaxed)) {
    high_water_.store(depth, std::memory_order_relaxed);
    high_water_gauge.set(static_cast<double>(depth));
  }
  std::uint64_t bt = cons_.blob_tail.load(std::memory_order_relaxed);
  for (; t != h; ++t) {
    const std::size_t i = static_cast<std::size_t>(t % cap_);
    const Entry& e = entries_[i];
    switch (e.kind) {
      case Kind::row:
        p.push(StreamHandle{e.index}, e.t, values_.data() + i * max_ch_, e.n);
        break;
      case Kind::blob:
        if (e.has_slot) {
          const char* b = blob_bytes_.data() + static_cast<std::size_t>(bt % nslots_) * slot_bytes_;
          p.push_blob(StreamHandle{e.index}, e.t,
                      std::string_view(b, static_cast<std::size_t>(e.blob_size)));
          ++bt;
          cons_.blob_tail.store(bt, std::memory_order_release);
        } else {
          p.push_blob(StreamHandle{e.index}, e.t, std::string_view());
        }
        break;
      case Kind::fire:
        try {
          (void)p.capture().fire(TriggerHandle{e.index}, e.t);  // a bad handle is counted
        } catch (...) {  // out of memory building the error message: nothing to report to
        }
        break;
      case Kind::tick:
        p.tick(e.t);
        break;
    }
    cons_.tail.store(t + 1, std::memory_order_release);
  }
  return depth;
}

}  // namespace fleetpipe::detail
