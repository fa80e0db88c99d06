// Trigger engine: the compiled triggers behind Capture and their per-sample evaluation (hot path).
//
// Layout choices for speed: every trigger and every inline composite child is a `Node` in one
// flat vector; each stream has the list of leaf nodes reading it and the composites depending on
// it (topological order), so a push walks two small index arrays, with no virtual call except
// for custom triggers. Nothing here allocates after construction.
#pragma once

#include <cstdint>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "capture/rings.hpp"
#include "fleetpipe/capture.hpp"
#include "fleetpipe/metrics.hpp"
#include "fleetpipe/port.hpp"
#include "fleetpipe/trigger.hpp"

namespace fleetpipe::detail {

inline constexpr std::uint32_t kNone = std::numeric_limits<std::uint32_t>::max();
inline constexpr double kNegInf = -std::numeric_limits<double>::infinity();

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

}  // namespace fleetpipe::detail
