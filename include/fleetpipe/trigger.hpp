// fleetpipe/trigger.hpp — triggers: when is a moment worth keeping?
//
// A trigger watches samples (see capture.hpp) and *fires*; every fire opens (or joins) an event
// that Capture records and hands to the Buffer. The fleet's data volume is therefore a function
// of events, not of device-hours.
//
// Kinds (`TriggerType`):
//   threshold  one channel compared with a level (`above`, `below`) or a band (`inside`,
//              `outside`), with hysteresis.
//   delta      change of one channel over a time window (`change` in units, or in units per
//              second when `per_second`), rising, falling or either direction, with hysteresis.
//   periodic   every `period_s` seconds of sample time (baseline data).
//   manual     fires only when the host calls `Capture::fire()`.
//   all/any/not composites of other conditions with a time tolerance: a child counts as true
//              when it was true at some sample within the last `tolerance_s` seconds, so
//              hard_brake = all(accel_x < -4, speed > 10; tolerance 0.5 s).
//   custom     a condition the host implements (`CustomTrigger`).
//
// Firing policy (every kind): rising-edge semantics — a trigger fires once when its condition
// becomes true, and must become false (past hysteresis) before it can fire again; then
// `cooldown_s`, probabilistic `sample_probability` (deterministic, seeded), and `budget`
// (events per hour/day, bytes per day). A fire that passes all of them makes an event with the
// trigger's `priority`. Every suppression is counted by reason (see docs/triggers.md).
//
// Edge cases, by design (never undefined behaviour):
//   - value exactly at the threshold: `above`/`below` are strict (v > level, v < level);
//     `inside` is closed [low, high]; `outside` is strict (v < low or v > high).
//   - NaN: the condition of a trigger reading that channel is left unchanged (no edge either
//     way); counted in fleetpipe_trigger_nan_samples_total. Infinities compare normally.
//   - time going backwards on a stream: the sample is dropped before any trigger sees it;
//     counted in fleetpipe_capture_time_backwards_total and logged (see capture.hpp).
//
// Configured from JSON ("/triggers", every key in docs/triggers.md) or built in C++ with the
// helper constructors below; both go through the same validation when a Capture is created.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "fleetpipe/error.hpp"

namespace fleetpipe {

enum class TriggerType : std::uint8_t { threshold, delta, periodic, manual, all, any, not_, custom };

/// "threshold", "delta", "periodic", "manual", "all", "any", "not", "custom".
const char* to_string(TriggerType t) noexcept;

enum class ThresholdOp : std::uint8_t {
  above,    ///< v > level; releases when v <= level - hysteresis
  below,    ///< v < level; releases when v >= level + hysteresis
  inside,   ///< low <= v <= high; releases when v < low - hysteresis or v > high + hysteresis
  outside,  ///< v < low or v > high; releases when low + hysteresis <= v <= high - hysteresis
};

enum class DeltaDirection : std::uint8_t {
  either,  ///< |v(t) - v(t - window)| >= change
  rise,    ///< v(t) - v(t - window) >= change
  fall,    ///< v(t - window) - v(t) >= change
};

/// Limits per trigger; 0 means unlimited. Windows are *monotonic sample time* (the `t` the host
/// pushes), not the wall clock: a window opens at the first fire after the previous window
/// expired and lasts 3600 s / 86400 s. Budgets are in memory only (they restart with the
/// process). A fire refused by a budget is a "budget hit" (counted, logged once per window).
struct TriggerBudget {
  std::uint32_t max_events_per_hour = 0;
  std::uint32_t max_events_per_day = 0;
  /// Checked at fire time against the bytes of this trigger's finished events in the current day
  /// window (the whole event size is charged to every trigger that fired into it).
  std::uint64_t max_bytes_per_day = 0;
};

/// What an event made by this trigger records.
struct CaptureWindow {
  /// Streams recorded into the event. Empty: the trigger's own `stream` (or, for a trigger with
  /// no stream — periodic, manual, composites over several streams — every stream its
  /// conditions read; manual with no stream captures every configured stream).
  std::vector<std::string> streams;
  double pre_s = 5.0;   ///< seconds before the fire taken from the pre-trigger rings
  double post_s = 5.0;  ///< seconds recorded after the fire (extended by merging fires)
  /// Bytes recorded after the fire (all streams of the event); reaching it closes the event
  /// early (the event index says "closed": "max_bytes"). 0 = unlimited (time bound only).
  std::uint64_t max_bytes = 64ull << 20;
};

/// A condition the host implements. Called on the host's thread for every sample of the
/// trigger's stream (or every sample of every stream when the trigger has no stream); must not
/// call back into Capture, must not block. `values` are the stream's channels in declared order
/// (empty for blob streams, where `blob_size` is the payload size). Return the *level* of the
/// condition; fleetpipe applies rising-edge, cooldown, budget and sampling.
class CustomTrigger {
 public:
  virtual ~CustomTrigger() = default;
  virtual bool evaluate(double t, std::uint32_t stream_index, const double* values,
                        std::size_t n_values, std::size_t blob_size) noexcept = 0;
};

/// One trigger (or, inside `children`, one anonymous condition). Plain data.
struct TriggerConfig {
  std::string name;  ///< unique; names metrics, record metadata and replay output
  TriggerType type = TriggerType::threshold;

  // ---- what it reads -------------------------------------------------------------------------
  std::string stream;   ///< threshold/delta: required; periodic/custom: optional filter
  std::string channel;  ///< threshold/delta: a channel of `stream`

  // ---- threshold -----------------------------------------------------------------------------
  ThresholdOp op = ThresholdOp::above;
  double level = 0;            ///< above/below
  double low = 0, high = 0;    ///< inside/outside
  double hysteresis = 0;       ///< >= 0, also used by delta

  // ---- delta ---------------------------------------------------------------------------------
  double change = 0;           ///< > 0
  DeltaDirection direction = DeltaDirection::either;
  double window_s = 1.0;       ///< > 0, at most the stream's ring_seconds
  bool per_second = false;     ///< compare (v(t) - v(t-w)) / (elapsed s) instead

  // ---- periodic ------------------------------------------------------------------------------
  double period_s = 0;         ///< > 0

  // ---- composites ----------------------------------------------------------------------------
  /// Conditions combined by all/any/not (`not` takes exactly one). A child with a non-empty
  /// `ref` (and nothing else) refers to another trigger of the config by name and reads its
  /// condition; other children are anonymous inline conditions (they never fire themselves).
  std::vector<TriggerConfig> children;
  std::string ref;
  double tolerance_s = 0;      ///< a child counts as true if true within this many seconds

  // ---- custom --------------------------------------------------------------------------------
  std::shared_ptr<CustomTrigger> custom;  ///< required for TriggerType::custom (C++ only)

  // ---- firing policy -------------------------------------------------------------------------
  bool fires = true;           ///< false: a condition only (for composites), never makes events
  double cooldown_s = 0;       ///< minimum seconds between two fires
  TriggerBudget budget;
  double sample_probability = 1.0;  ///< 0..1: share of would-be fires kept
  std::uint64_t seed = 0;      ///< sampling PRNG seed (0: derived from the name); deterministic
  std::uint8_t priority = 3;   ///< 0..7 (7 most important), given to the events it makes
  CaptureWindow capture;
};

/// Helpers to build configs in C++ (everything else keeps its default; adjust the result).
TriggerConfig threshold_trigger(std::string name, std::string stream, std::string channel,
                                ThresholdOp op, double level_or_low, double high = 0);
TriggerConfig delta_trigger(std::string name, std::string stream, std::string channel,
                            double change, double window_s,
                            DeltaDirection dir = DeltaDirection::either);
TriggerConfig periodic_trigger(std::string name, double period_s);
TriggerConfig manual_trigger(std::string name);
/// type: all, any or not. Children: inline configs or `trigger_ref("name")`.
TriggerConfig composite_trigger(std::string name, TriggerType type,
                                std::vector<TriggerConfig> children, double tolerance_s);
TriggerConfig trigger_ref(std::string name);
TriggerConfig custom_trigger(std::string name, std::string stream,
                             std::shared_ptr<CustomTrigger> impl);

/// Counters of one trigger (also exported as metrics labelled trigger="<name>").
struct TriggerStats {
  std::uint64_t fires = 0;              ///< fires that made or joined an event
  std::uint64_t events = 0;             ///< finished events this trigger is part of
  std::uint64_t bytes = 0;              ///< payload bytes of those events
  std::uint64_t budget_hits = 0;        ///< fires refused by a budget
  std::uint64_t suppressed_cooldown = 0;
  std::uint64_t sampled_out = 0;
};

}  // namespace fleetpipe
