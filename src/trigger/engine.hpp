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

  TriggerEngine() = default;
  // Movable only: StreamEval::thresholds point into nodes_ (a move keeps its buffer).
  TriggerEngine(const TriggerEngine&) = delete;
  TriggerEngine& operator=(const TriggerEngine&) = delete;
  TriggerEngine(TriggerEngine&&) noexcept = default;
  TriggerEngine& operator=(TriggerEngine&&) noexcept = default;

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
  /// push()'s fast path: for a block_ok stream whose sample changes no trigger's level and
  /// holds no NaN, does what observe() would (refreshes last_true of leaves that stay on) and
  /// returns true. Otherwise returns false having changed nothing observe() would not set the
  /// same way again, so the caller then runs observe() for the sample. No call, no store
  /// besides last_true: the caller stays a leaf function.
  /// Precondition: fast_ok(stream, n).
  inline bool observe_quiet(std::uint32_t stream, double t, const double* values) noexcept;
  /// One compare for stream kind, row length and trigger kinds: true when `stream` is a
  /// numeric stream of `n` channels that is block_ok (push()'s fast path may take the row).
  bool fast_ok(std::uint32_t stream, std::size_t n) const noexcept {
    return stream < per_stream_.size() && per_stream_[stream].fast_n == n;
  }
  /// True when `stream` is numeric, every trigger reading it is an above/below threshold and
  /// no composite depends on it: its rows can then be evaluated as a block (observe_block).
  bool block_ok(std::uint32_t stream) const noexcept {
    return per_stream_[stream].fast_n != kNoFast;
  }
  /// Precondition: block_ok(stream). Evaluates rows `t[r]`, `v[r * stride + channel]` of
  /// `stream` in order as observe() would, up to and including the first row at which a trigger
  /// would fire (its cooldown, sampling and budget are not consulted yet); returns that row, or
  /// `n` when none would. The fire itself is fire_block_row(), called once the caller has put
  /// the rows up to it into the ring and the open event.
  inline std::size_t observe_block(std::uint32_t stream, const double* t, const double* v,
                                   std::size_t stride, std::size_t n) noexcept;
  /// The fires observe_block stopped at, in the order observe() makes them (leaf order).
  void fire_block_row(std::uint32_t stream, double t) noexcept;
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
  // A leaf's state before a block scan (observe_block rescans a leaf that ran past a fire).
  struct LeafSave {
    bool cond = false, prev = false;
    double last_true = kNegInf;
    std::size_t end = 0;   // rows scanned
    std::size_t nans = 0;  // NaN values among them
    bool edge = false;     // the last row scanned is a firing leaf's rising edge
  };
  struct StreamEval {
    std::vector<std::uint32_t> leaves;      // nodes reading this stream (and stream-less ones)
    std::vector<std::uint32_t> composites;  // composites depending on it, topological order
    std::vector<LeafSave> save;             // per leaf (block scans)
    std::vector<std::uint8_t> fire;         // per leaf: fires at the row observe_block returned
    std::vector<Node*> thresholds;          // when block: the leaves' nodes (observe's fast path)
    // A numeric stream's channel count when block_ok (see fast_ok()), else kNoFast. In place of
    // a bool: StreamEval stays 128 bytes, so indexing needs no multiply.
    std::size_t fast_n = kNoFast;
  };
  static constexpr std::size_t kNoFast = ~std::size_t{0};
  // Scans one above/below threshold leaf over rows [0, n); stops after the first rising edge
  // of a firing leaf (sv.edge). Returns the rows consumed (also in sv.end, NaNs in sv.nans).
  static inline std::size_t scan_threshold(Node& nd, const double* t, const double* v,
                                           std::size_t stride, std::size_t n,
                                           LeafSave& sv) noexcept;
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
  if (ps.fast_n != kNoFast) {
    // Above/below thresholds only, no composite: no type dispatch, one pointer per leaf; after
    // an evaluation prev == cond, so the edge is read from cond alone.
    for (Node* nd : ps.thresholds) {
      const double x = values[nd->channel];
      if (x != x) {
        note_nan();
        if (nd->cond) nd->last_true = t;  // condition unchanged: no edge either way
        continue;
      }
      const bool was = nd->cond;
      const bool c = nd->op == ThresholdOp::above ? x > (was ? nd->level - nd->hyst : nd->level)
                                                  : x < (was ? nd->level + nd->hyst : nd->level);
      if (c) {
        nd->last_true = t;
        if (!was) {
          nd->cond = nd->prev = true;
          if (nd->fires) attempt(static_cast<std::uint32_t>(nd - nodes_.data()), t);
        }
      } else if (was) {
        nd->cond = nd->prev = false;
      }
    }
    return;
  }
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

inline bool TriggerEngine::observe_quiet(std::uint32_t stream, double t,
                                         const double* values) noexcept {
  const StreamEval& ps = per_stream_[stream];
  for (Node* nd : ps.thresholds) {
    const double x = values[nd->channel];
    const bool was = nd->cond;
    const bool c = nd->op == ThresholdOp::above ? x > (was ? nd->level - nd->hyst : nd->level)
                                                : x < (was ? nd->level + nd->hyst : nd->level);
    if ((c != was) | (x != x)) return false;  // an edge or a NaN: observe() handles it
    if (c) nd->last_true = t;                 // observe() would store the same t again
  }
  return true;
}

inline std::size_t TriggerEngine::scan_threshold(Node& nd, const double* t, const double* v,
                                                 std::size_t stride, std::size_t n,
                                                 LeafSave& sv) noexcept {
  const double* x = v + nd.channel;
  const bool above = nd.op == ThresholdOp::above;
  // above: on when x > level, stays on while x > level - hyst; below mirrored.
  const double on = nd.level, stay = above ? nd.level - nd.hyst : nd.level + nd.hyst;
  const bool fires = nd.fires;
  bool cond = nd.cond, prev = nd.prev;
  double last_true = nd.last_true;
  std::size_t r = 0, nans = 0;
  sv.edge = false;
  for (; r < n; ++r) {
    const double xv = x[r * stride];
    bool c;
    if (xv != xv) {
      ++nans;
      c = cond;
    } else {
      c = above ? xv > (cond ? stay : on) : xv < (cond ? stay : on);
    }
    if (c) {
      last_true = t[r];
      if (!prev && fires) {
        cond = prev = true;
        sv.edge = true;
        ++r;
        break;
      }
    }
    cond = prev = c;
  }
  nd.cond = cond;
  nd.prev = prev;
  nd.last_true = last_true;
  sv.nans = nans;
  sv.end = r;
  return r;
}

inline std::size_t TriggerEngine::observe_block(std::uint32_t stream, const double* t,
                                                const double* v, std::size_t stride,
                                                std::size_t n) noexcept {
  StreamEval& ps = per_stream_[stream];
  const std::size_t nl = ps.leaves.size();
  std::size_t limit = n;  // rows every leaf evaluates: up to and including the earliest fire
  bool stopped = false;
  for (std::size_t j = 0; j < nl; ++j) {
    Node& nd = nodes_[ps.leaves[j]];
    LeafSave& sv = ps.save[j];
    sv.cond = nd.cond;
    sv.prev = nd.prev;
    sv.last_true = nd.last_true;
    scan_threshold(nd, t, v, stride, limit, sv);
    if (sv.edge) {  // later leaves stop there too
      limit = sv.end;
      stopped = true;
    }
  }
  std::size_t nans = 0;
  for (std::size_t j = 0; j < nl; ++j) {
    LeafSave& sv = ps.save[j];
    Node& nd = nodes_[ps.leaves[j]];
    if (sv.end > limit) {  // ran past an earlier leaf's fire: again, from where it was, to it
      nd.cond = sv.cond;
      nd.prev = sv.prev;
      nd.last_true = sv.last_true;
      scan_threshold(nd, t, v, stride, limit, sv);
    }
    nans += sv.nans;
    ps.fire[j] = sv.edge ? 1 : 0;
  }
  if (nans) {
    nan_count_ += nans;
    nan_counter_->inc(nans);
  }
  return stopped ? limit - 1 : n;
}

}  // namespace fleetpipe::detail
