// Internal: the pre-trigger rings and the trigger engine behind Capture (hot path).
//
// Layout choices for speed: every trigger and every inline composite child is a `Node` in one
// flat vector; each stream has the list of leaf nodes reading it and the composites depending on
// it (topological order), so a push walks two small index arrays, with no virtual call except
// for custom triggers. Rings are preallocated; nothing here allocates after construction.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <string_view>
#include <vector>

#include "fleetpipe/capture.hpp"
#include "fleetpipe/metrics.hpp"
#include "fleetpipe/port.hpp"
#include "fleetpipe/trigger.hpp"

namespace fleetpipe::detail {

inline constexpr std::uint32_t kNone = std::numeric_limits<std::uint32_t>::max();
inline constexpr double kNegInf = -std::numeric_limits<double>::infinity();

/// Rows of (t, channel 0..n-1) float64, overwritten oldest first.
struct NumericRing {
  std::vector<double> buf;
  std::uint32_t stride = 1;   // 1 + channels
  std::uint64_t cap = 0;      // rows
  std::uint64_t head = 0;     // rows ever written (sequence number of the next row)
  std::uint64_t wi = 0;       // row index of the next write
  double ring_seconds = 0;

  void init(std::size_t channels, std::uint64_t bytes, double seconds) {
    stride = static_cast<std::uint32_t>(1 + channels);
    cap = bytes / (8ull * stride);
    if (cap < 2) cap = 2;
    buf.assign(cap * stride, 0.0);
    ring_seconds = seconds;
  }
  /// Appends a row; returns the row pointer (t first). `evicted_early` is set when the row it
  /// overwrote was younger than ring_seconds.
  double* push(double t, const double* v, std::size_t n, bool& evicted_early) noexcept {
    double* r = buf.data() + wi * stride;
    evicted_early = head >= cap && (t - r[0]) < ring_seconds;
    r[0] = t;
    const std::size_t nch = stride - 1;
    const std::size_t m = n < nch ? n : nch;
    for (std::size_t i = 0; i < m; ++i) r[1 + i] = v[i];
    for (std::size_t i = m; i < nch; ++i) r[1 + i] = std::numeric_limits<double>::quiet_NaN();
    ++head;
    if (++wi == cap) wi = 0;
    return r;
  }
  std::uint64_t oldest() const noexcept { return head > cap ? head - cap : 0; }
  /// Precondition: oldest() <= seq < head.
  const double* row(std::uint64_t seq) const noexcept {
    std::int64_t idx = static_cast<std::int64_t>(wi) - static_cast<std::int64_t>(head - seq);
    if (idx < 0) idx += static_cast<std::int64_t>(cap);
    return buf.data() + static_cast<std::uint64_t>(idx) * stride;
  }
  std::size_t row_bytes() const noexcept { return 8u * stride; }
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
  }
  /// Returns false when the blob is larger than the ring (not stored). `evicted_early` counts
  /// evictions of blobs younger than ring_seconds.
  bool push(double t, std::string_view bytes, std::uint64_t& evicted_early) noexcept {
    const std::uint64_t n = bytes.size(), capb = data.size();
    if (n > capb) return false;
    std::uint64_t place = 0;
    for (;;) {
      if (count == entries.size()) {
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

struct Node {
  TriggerType type = TriggerType::threshold;
  ThresholdOp op = ThresholdOp::above;
  DeltaDirection dir = DeltaDirection::either;
  bool per_second = false;
  bool fires = false;       // top-level trigger with fires=true
  bool cond = false;        // current level (after hysteresis)
  bool prev = false;        // level at the previous evaluation (rising edge)
  std::uint32_t stream = kNone, channel = 0;
  double level = 0, low = 0, high = 0, hyst = 0;
  double change = 0, window = 0, period = 0, tol = 0;
  double last_true = kNegInf;
  double next_due = std::numeric_limits<double>::quiet_NaN();
  std::uint64_t cursor = 0;
  std::vector<std::uint32_t> children;
  CustomTrigger* custom = nullptr;
};

/// Cooldown, sampling and budget state of one top-level trigger.
struct Policy {
  double cooldown = 0, last_fire = kNegInf, probability = 1;
  std::uint64_t rng = 0;
  TriggerBudget budget;
  double hour_start = kNegInf, day_start = kNegInf;
  std::uint64_t hour_count = 0, day_count = 0, day_bytes = 0;
  bool hour_hit_logged = false, day_hit_logged = false;
  std::uint8_t priority = 3;
  std::vector<std::uint32_t> capture_streams;
  TriggerStats stats;
  Counter* fires = nullptr;
  Counter* events = nullptr;
  Counter* bytes = nullptr;
  Counter* budget_hits = nullptr;
  Counter* cooldown_hits = nullptr;
  Counter* sampled_out = nullptr;
};

class TriggerEngine {
 public:
  using FireFn = void (*)(void* ctx, std::uint32_t trigger, double t);

  /// Validates and compiles; errors carry the JSON pointer of the offending key.
  Result<void> build(const std::vector<StreamConfig>& streams,
                     const std::vector<TriggerConfig>& triggers, const Port& port,
                     MetricsRegistry& metrics);
  void bind(FireFn fn, void* ctx, std::vector<const NumericRing*> rings) {
    on_fire_ = fn;
    ctx_ = ctx;
    rings_ = std::move(rings);
  }

  /// Evaluates the stream's triggers for one sample (`values` = the normalized ring row's
  /// channels, or null for blobs).
  /// Defined inline below: it is the hot path (threshold leaves are evaluated in place).
  inline void observe(std::uint32_t stream, double t, const double* values,
                      std::size_t blob_size) noexcept;
  /// Stream-less periodic triggers and every composite.
  void tick(double t) noexcept;
  /// Host-driven fire of a top-level trigger (manual). True when it passed the policy.
  bool fire_manual(std::uint32_t trigger, double t) noexcept;
  /// Charges a finished event's bytes to a trigger (bytes/day budget, stats).
  void charge_event(std::uint32_t trigger, std::uint64_t bytes, double t) noexcept;

  std::size_t trigger_count() const noexcept { return policy_.size(); }
  const Policy& policy(std::uint32_t i) const noexcept { return policy_[i]; }
  std::uint64_t nan_samples() const noexcept { return nan_count_; }

 private:
  struct StreamEval {
    std::vector<std::uint32_t> leaves;      // nodes reading this stream (and stream-less ones)
    std::vector<std::uint32_t> composites;  // composites depending on it, topological order
  };
  bool eval_leaf(Node& nd, double t, const double* v, std::uint32_t stream,
                 std::size_t blob_size) noexcept;
  void note_nan() noexcept;
  void eval_composites(const std::vector<std::uint32_t>& list, double t) noexcept;
  bool attempt(std::uint32_t trigger, double t) noexcept;
  void note(LogLevel level, std::uint32_t trigger, const char* what) const noexcept;

  std::vector<Node> nodes_;
  std::vector<Policy> policy_;
  std::vector<std::string> names_;
  std::vector<StreamEval> per_stream_;
  std::vector<std::uint32_t> global_leaves_;
  std::vector<std::uint32_t> all_composites_;
  std::vector<const NumericRing*> rings_;
  FireFn on_fire_ = nullptr;
  void* ctx_ = nullptr;
  const Port* port_ = nullptr;
  Counter* nan_counter_ = nullptr;
  std::uint64_t nan_count_ = 0;
};

inline void TriggerEngine::observe(std::uint32_t stream, double t, const double* values,
                                  std::size_t blob_size) noexcept {
  const StreamEval& ps = per_stream_[stream];
  for (std::uint32_t id : ps.leaves) {
    Node& nd = nodes_[id];
    bool c;
    if (nd.type == TriggerType::threshold &&
        (nd.op == ThresholdOp::above || nd.op == ThresholdOp::below)) {
      const double x = values[nd.channel];
      if (x != x) {
        note_nan();
        c = nd.cond;  // condition unchanged: no edge either way
      } else {
        c = nd.op == ThresholdOp::above ? (nd.cond ? x > nd.level - nd.hyst : x > nd.level)
                                        : (nd.cond ? x < nd.level + nd.hyst : x < nd.level);
      }
    } else {
      c = eval_leaf(nd, t, values, stream, blob_size);
    }
    nd.cond = c;
    if (c) {
      nd.last_true = t;
      if (!nd.prev && nd.fires) attempt(id, t);
    }
    nd.prev = c;
  }
  if (!ps.composites.empty()) eval_composites(ps.composites, t);
}

/// Capture streams each top-level trigger records (resolved at build()).
/// The same validation the JSON parser applies to C++-built configs; throws nothing.
Result<void> validate_capture_config(const std::vector<StreamConfig>& streams,
                                     const std::vector<TriggerConfig>& triggers);

}  // namespace fleetpipe::detail

namespace fleetpipe::detail {
class JsonReader;
/// Parses one "/triggers/N" object (or, with `child`, one inline composite condition).
/// Throws ConfigError. Cross references are checked by validate_capture_config.
TriggerConfig parse_trigger_config(JsonReader& r, bool child);
}  // namespace fleetpipe::detail
