// Pre-trigger rings: the preallocated per-stream history Capture records events from (hot path).
//
// Rings are preallocated at init(); push() overwrites the oldest entries and never allocates.
// An open or closed-but-undelivered event reads its pre window from the ring lazily (Capture
// copies it only when the ring is about to overwrite it, or at delivery): `pin_lo` names the
// oldest entry still needed, and push() hands it to an `on_evict` callback first.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string_view>
#include <vector>

namespace fleetpipe::detail {

/// Rows of (t, channel 0..n-1) float64, overwritten oldest first.
struct NumericRing {
  std::vector<double> buf;
  std::uint32_t stride = 1;   // 1 + channels
  std::uint64_t cap = 0;      // rows
  std::uint64_t head = 0;     // rows ever written (sequence number of the next row)
  std::uint64_t wi = 0;       // row index of the next write
  double ring_seconds = 0;
  // Lowest row sequence an event still reads from the ring (its pre window, not yet copied):
  // push() hands it to on_evict before overwriting it. Max = none.
  std::uint64_t pin_lo = kNoPin;
  std::uint64_t evict_at = kNoPin;  // pin_lo + cap: the head value that overwrites pin_lo

  static constexpr std::uint64_t kNoPin = std::numeric_limits<std::uint64_t>::max();
  static constexpr double kInf = std::numeric_limits<double>::infinity();

  void init(std::size_t channels, std::uint64_t bytes, double seconds) {
    stride = static_cast<std::uint32_t>(1 + channels);
    cap = bytes / (8ull * stride);
    if (cap < 2) cap = 2;
    buf.assign(cap * stride, 0.0);
    // Unwritten rows' times are -inf: overwriting one never counts as an early eviction, so
    // push() needs no "ring full yet" check.
    for (std::uint64_t i = 0; i < cap; ++i) buf[i * stride] = -kInf;
    ring_seconds = seconds;
  }
  /// Sets pin_lo (max = none) and the head at which push() must call on_evict.
  void set_pin(std::uint64_t lo) noexcept {
    pin_lo = lo;
    evict_at = lo == kNoPin ? kNoPin : lo + cap;
  }
  /// Appends a row; returns the row pointer (t first). `evicted_early` is set when the row it
  /// overwrote was younger than ring_seconds.
  double* push(double t, const double* v, std::size_t n, bool& evicted_early) noexcept {
    return push(t, v, n, evicted_early, [](std::uint64_t) noexcept {});
  }
  /// The same; `on_evict(seq)` runs first when the row it overwrites is pinned (seq == pin_lo).
  template <class OnEvict>
  double* push(double t, const double* v, std::size_t n, bool& evicted_early,
               OnEvict&& on_evict) noexcept {
    if (head == evict_at) on_evict(pin_lo);
    double* r = buf.data() + wi * stride;
    evicted_early = (t - r[0]) < ring_seconds;  // an unwritten row's -inf never is
    const std::size_t nch = stride - 1;
    if (n >= nch) {
      fill_slot(r, t, v);
      return r;
    }
    r[0] = t;  // a short row: missing channels are NaN
    for (std::size_t i = 0; i < n; ++i) r[1 + i] = v[i];
    for (std::size_t i = n; i < nch; ++i) r[1 + i] = std::numeric_limits<double>::quiet_NaN();
    ++head;
    if (++wi == cap) wi = 0;
    return r;
  }
  /// Capture::push's fast path, in two halves. slot: the row the next push writes, or null
  /// when that push must call on_evict first (push() does). fill_slot: writes a full row
  /// (stride - 1 values) there, as push() would.
  double* slot() noexcept { return head != evict_at ? buf.data() + wi * stride : nullptr; }
  void fill_slot(double* r, double t, const double* v) noexcept {
    r[0] = t;
    const std::size_t nch = stride - 1;
    if (nch == 1) {
      r[1] = v[0];
    } else {
      for (std::size_t i = 0; i < nch; ++i) r[1 + i] = v[i];
    }
    ++head;
    if (++wi == cap) wi = 0;
  }
  /// push() of `n` rows of exactly stride - 1 values each (row-major); returns how many of
  /// them evicted a row younger than ring_seconds.
  template <class OnEvict>
  std::uint64_t push_block(const double* t, const double* v, std::size_t n,
                           OnEvict&& on_evict) noexcept {
    const std::size_t nch = stride - 1;
    std::uint64_t early = 0;
    std::size_t i = 0;
    while (i < n) {
      // Rows up to the ring's end, or to the next pinned row: one tight loop, no checks.
      std::size_t run = static_cast<std::size_t>(std::min<std::uint64_t>(n - i, cap - wi));
      if (pin_lo != kNoPin && head + cap > pin_lo) {
        const std::uint64_t until = pin_lo + cap - head;  // rows before pin_lo is overwritten
        if (until == 0) {
          on_evict(pin_lo);
          continue;
        }
        run = static_cast<std::size_t>(std::min<std::uint64_t>(run, until));
      }
      double* r = buf.data() + wi * stride;
      for (std::size_t k = 0; k < run; ++k, r += stride) {
        const double tk = t[i + k];
        early += (tk - r[0]) < ring_seconds ? 1 : 0;
        r[0] = tk;
        if (nch == 1) {
          r[1] = v[i + k];
        } else {
          for (std::size_t c = 0; c < nch; ++c) r[1 + c] = v[(i + k) * nch + c];
        }
      }
      i += run;
      head += run;
      wi += run;
      if (wi == cap) wi = 0;
    }
    return early;
  }
  std::uint64_t oldest() const noexcept { return head > cap ? head - cap : 0; }
  /// Precondition: oldest() <= seq < head.
  const double* row(std::uint64_t seq) const noexcept {
    std::int64_t idx = static_cast<std::int64_t>(wi) - static_cast<std::int64_t>(head - seq);
    if (idx < 0) idx += static_cast<std::int64_t>(cap);
    return buf.data() + static_cast<std::uint64_t>(idx) * stride;
  }
  std::size_t row_bytes() const noexcept { return 8u * stride; }
  /// Rows from `seq` on that lie contiguously in `buf` (up to its end). Precondition as row().
  std::uint64_t contiguous_rows(std::uint64_t seq) const noexcept {
    return cap - static_cast<std::uint64_t>(row(seq) - buf.data()) / stride;
  }
};

/// Blobs in one contiguous byte area used circularly, indexed FIFO.
struct BlobRing {
  struct Entry {
    double t;
    std::uint64_t off, size;
  };
  std::vector<char> data;
  std::vector<Entry> entries;  // circular, capacity max_blobs
  std::size_t first = 0, count = 0;
  std::uint64_t wp = 0;  // next write offset
  double ring_seconds = 0;
  std::uint64_t popped = 0;  // entries ever evicted: the oldest entry's sequence number
  // As NumericRing::pin_lo, in entry sequence numbers.
  std::uint64_t pin_lo = std::numeric_limits<std::uint64_t>::max();

  void init(std::uint64_t bytes, std::uint32_t max_blobs, double seconds) {
    data.assign(bytes, 0);
    entries.assign(max_blobs < 1 ? 1 : max_blobs, Entry{0, 0, 0});
    ring_seconds = seconds;
  }
  const Entry& at(std::size_t i) const noexcept {  // 0 = oldest
    std::size_t k = first + i;
    if (k >= entries.size()) k -= entries.size();
    return entries[k];
  }
  void pop() noexcept {
    if (++first == entries.size()) first = 0;
    --count;
    ++popped;
  }
  /// Returns false when the blob is larger than the ring (not stored). `evicted_early` counts
  /// evictions of blobs younger than ring_seconds.
  bool push(double t, std::string_view bytes, std::uint64_t& evicted_early) noexcept {
    return push(t, bytes, evicted_early, [](std::uint64_t) noexcept {});
  }
  /// The same; `on_evict(seq)` runs before a pinned entry (seq == pin_lo) is evicted.
  template <class OnEvict>
  bool push(double t, std::string_view bytes, std::uint64_t& evicted_early,
            OnEvict&& on_evict) noexcept {
    const std::uint64_t n = bytes.size(), capb = data.size();
    if (n > capb) return false;
    std::uint64_t place = 0;
    for (;;) {
      if (count == entries.size()) {
        if (popped == pin_lo) on_evict(popped);
        if (t - at(0).t < ring_seconds) ++evicted_early;
        pop();
        continue;
      }
      if (count == 0) {
        place = 0;
        break;
      }
      const std::uint64_t tail = at(0).off;
      const Entry& newest = at(count - 1);
      const bool wrapped = tail > newest.off;
      if (!wrapped) {
        if (n <= capb - wp) { place = wp; break; }
        if (n <= tail) { place = 0; break; }
      } else if (wp + n <= tail) {
        place = wp;
        break;
      }
      if (popped == pin_lo) on_evict(popped);
      if (t - at(0).t < ring_seconds) ++evicted_early;
      pop();
    }
    if (n) std::memcpy(data.data() + place, bytes.data(), n);
    std::size_t k = first + count;
    if (k >= entries.size()) k -= entries.size();
    entries[k] = Entry{t, place, n};
    ++count;
    wp = place + n;
    return true;
  }
};

}  // namespace fleetpipe::detail
