// Internal: SampleQueue, the preallocated SPSC queue from the host to the pipeline thread.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

#include "fleetpipe/capture.hpp"
#include "fleetpipe/metrics.hpp"
#include "fleetpipe/pipeline.hpp"

namespace fleetpipe::detail {

// One producer (the host) and one consumer at a time (the thread, or the owner while it is
// stopped). Every entry, value and blob slot is allocated by init(): pushes allocate nothing.
class SampleQueue {
 public:
  enum class Push : std::uint8_t { ok, full, too_large };

  // Sizes the storage for `capacity` entries, `blob_slots` x `blob_slot_bytes` of blob bytes and
  // the widest numeric stream. Throws std::bad_alloc.
  void init(std::size_t capacity, std::size_t blob_slots, std::size_t blob_slot_bytes,
            const std::vector<StreamConfig>& streams);

  // ---- producer: each push publishes the entry (seq_cst) when it returns ok ------------------
  Push push_row(StreamHandle stream, double t, const double* values, std::size_t n) noexcept;
  // A blob to a numeric stream or a bad handle is queued without its bytes: Capture counts it
  // as "invalid" either way.
  Push push_blob(StreamHandle stream, double t, std::string_view bytes) noexcept;
  Push push_fire(TriggerHandle trigger, double t) noexcept;
  Push push_tick(double t) noexcept;
  // After a push: enough is waiting (a quarter of the entries or half the blob slots) to be
  // worth waking a sleeping consumer.
  bool wake_due() const noexcept;

  // ---- consumer ----------------------------------------------------------------------------
  bool empty(std::memory_order head_order = std::memory_order_acquire) const noexcept {
    return cons_.tail.load(std::memory_order_relaxed) == prod_.head.load(head_order);
  }
  // Hands every visible entry to p, in order; raises high_water_gauge on a new high. Returns how
  // many.
  std::uint64_t drain(Pipeline& p, Gauge& high_water_gauge) noexcept;

  // ---- any thread --------------------------------------------------------------------------
  std::uint64_t queued() const noexcept { return prod_.head.load(std::memory_order_relaxed); }
  std::uint64_t processed() const noexcept { return cons_.tail.load(std::memory_order_relaxed); }
  std::uint64_t high_water() const noexcept { return high_water_.load(std::memory_order_relaxed); }

 private:
  enum class Kind : std::uint8_t { row, blob, fire, tick };

  // Values live in a parallel array (max_ch_ doubles per entry), blob bytes in the blob slot
  // ring (consumed in the same order as the entries that use them).
  struct Entry {
    double t = 0;
    std::uint64_t blob_size = 0;
    std::uint32_t index = 0;  // stream or trigger
    std::uint32_t n = 0;      // values copied
    Kind kind = Kind::row;
    bool has_slot = false;    // blob bytes are in the next blob slot
  };

  // Index of a free entry, or UINT64_MAX.
  std::uint64_t reserve_entry() noexcept;
  bool reserve_slot() noexcept;
  Push push_marker(Kind kind, std::uint32_t index, double t) noexcept;
  void publish(std::uint64_t h) noexcept { prod_.head.store(h + 1, std::memory_order_seq_cst); }

  std::size_t cap_ = 0, max_ch_ = 0, nslots_ = 0, slot_bytes_ = 0;
  std::uint64_t wake_depth_ = 1, wake_slots_ = 1;
  std::vector<Entry> entries_;
  std::vector<double> values_;     // cap_ * max_ch_
  std::vector<char> blob_bytes_;   // nslots_ * slot_bytes_ (zeroed: pages committed up front)
  std::vector<std::uint32_t> stream_channels_;  // per stream: numeric channel count, 0 for blob
  std::vector<bool> stream_is_blob_;

  // Producer side (written by the producer only; head/blob_head read by the consumer).
  struct alignas(64) Producer {
    std::atomic<std::uint64_t> head{0};
    std::atomic<std::uint64_t> blob_head{0};
    std::uint64_t tail_cache = 0, blob_tail_cache = 0;
  } prod_;
  // Consumer side (written by whoever consumes).
  struct alignas(64) Consumer {
    std::atomic<std::uint64_t> tail{0};
    std::atomic<std::uint64_t> blob_tail{0};
  } cons_;
  std::atomic<std::uint64_t> high_water_{0};
};

}  // namespace fleetpipe::detail
