// Trigger engine: compiles validated triggers and evaluates them per sample (hot path).
#include "trigger/engine.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <map>

#include "trigger/validate.hpp"

namespace fleetpipe::detail {
namespace {

bool is_composite(TriggerType t) {
  return t == TriggerType::all || t == TriggerType::any || t == TriggerType::not_;
}

std::uint64_t splitmix64(std::uint64_t& state) {
  std::uint64_t z = (state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

std::uint64_t fnv1a(const std::string& s) {
  std::uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

}  // namespace

Result<void> TriggerEngine::build(const std::vector<StreamConfig>& streams,
                                  const std::vector<TriggerConfig>& triggers, const Port& port,
                                  MetricsRegistry& metrics) {
  if (auto v = validate_capture_config(streams, triggers); !v) return v;
  port_ = &port;
  std::map<std::string, std::uint32_t> sidx;
  for (std::size_t i = 0; i < streams.size(); ++i) sidx[streams[i].name] = std::uint32_t(i);
  std::map<std::string, std::uint32_t> tidx;
  for (std::size_t i = 0; i < triggers.size(); ++i) tidx[triggers[i].name] = std::uint32_t(i);

  nodes_.assign(triggers.size(), Node{});
  // Fills node `id` from config `c` (appending inline children).
  std::function<void(std::uint32_t, const TriggerConfig&)> fill = [&](std::uint32_t id,
                                                                    const TriggerConfig& c) {
    Node nd;
    nd.type = c.type;
    nd.op = c.op;
    nd.dir = c.direction;
    nd.per_second = c.per_second;
    nd.level = c.level;
    nd.low = c.low;
    nd.high = c.high;
    nd.hyst = c.hysteresis;
    nd.change = c.change;
    nd.window = c.window_s;
    nd.period = c.period_s;
    nd.tol = c.tolerance_s;
    nd.custom = c.custom.get();
    if (!c.stream.empty()) nd.stream = sidx.at(c.stream);
    if (!c.channel.empty() && nd.stream != kNone) {
      const auto& ch = streams[nd.stream].channels;
      nd.channel = std::uint32_t(std::find(ch.begin(), ch.end(), c.channel) - ch.begin());
    }
    for (const auto& child : c.children) {
      if (!child.ref.empty()) {
        nd.children.push_back(tidx.at(child.ref));
      } else {
        std::uint32_t cid = std::uint32_t(nodes_.size());
        nodes_.emplace_back();
        fill(cid, child);
        nd.children.push_back(cid);
      }
    }
    nodes_[id] = std::move(nd);
  };
  for (std::size_t i = 0; i < triggers.size(); ++i) fill(std::uint32_t(i), triggers[i]);
  for (std::size_t i = 0; i < triggers.size(); ++i) nodes_[i].fires = triggers[i].fires;

  // Leaves per stream; stream-less periodic/custom leaves run on every stream.
  per_stream_.assign(streams.size(), StreamEval{});
  for (std::uint32_t id = 0; id < nodes_.size(); ++id) {
    const Node& nd = nodes_[id];
    if (is_composite(nd.type) || nd.type == TriggerType::manual) continue;
    if (nd.stream == kNone) {
      global_leaves_.push_back(id);
      for (auto& ps : per_stream_) ps.leaves.push_back(id);
    } else {
      per_stream_[nd.stream].leaves.push_back(id);
    }
  }
  // Composites in topological order (children first), and which streams each depends on.
  std::vector<int> mark(nodes_.size(), 0);
  std::vector<std::vector<bool>> deps(nodes_.size(), std::vector<bool>(streams.size(), false));
  std::function<void(std::uint32_t)> topo = [&](std::uint32_t id) {
    if (mark[id]) return;
    mark[id] = 1;
    Node& nd = nodes_[id];
    if (is_composite(nd.type)) {
      for (auto ch : nd.children) {
        topo(ch);
        for (std::size_t s = 0; s < streams.size(); ++s) {
          if (deps[ch][s]) deps[id][s] = true;
        }
      }
      all_composites_.push_back(id);
    } else if (nd.type != TriggerType::manual) {
      for (std::size_t s = 0; s < streams.size(); ++s) {
        if (nd.stream == kNone || nd.stream == s) deps[id][s] = true;
      }
    }
  };
  for (std::uint32_t id = 0; id < nodes_.size(); ++id) topo(id);
  for (auto id : all_composites_) {
    for (std::size_t s = 0; s < streams.size(); ++s) {
      if (deps[id][s]) per_stream_[s].composites.push_back(id);
    }
  }

  for (std::size_t si = 0; si < per_stream_.size(); ++si) {
    StreamEval& ps = per_stream_[si];
    bool block = ps.composites.empty();
    for (auto id : ps.leaves) {
      const Node& nd = nodes_[id];
      if (nd.type != TriggerType::threshold ||
          (nd.op != ThresholdOp::above && nd.op != ThresholdOp::below)) {
        block = false;
      }
    }
    ps.save.assign(ps.leaves.size(), LeafSave{});
    ps.fire.assign(ps.leaves.size(), 0);
    ps.thresholds.clear();
    if (block) {
      for (auto id : ps.leaves) ps.thresholds.push_back(&nodes_[id]);
    }
    ps.fast_n = block && streams[si].kind == StreamKind::numeric ? streams[si].channels.size()
                                                                    : kNoFast;
  }

  // Policies, capture streams and metrics of the top-level triggers.
  policy_.assign(triggers.size(), Policy{});
  names_.clear();
  nan_counter_ = &metrics.counter("fleetpipe_trigger_nan_samples_total",
                                  "NaN values seen by triggers (condition left unchanged)");
  for (std::size_t i = 0; i < triggers.size(); ++i) {
    const auto& c = triggers[i];
    Policy& p = policy_[i];
    names_.push_back(c.name);
    p.cooldown = c.cooldown_s;
    p.probability = c.sample_probability;
    p.rng = c.seed ? c.seed : fnv1a(c.name);
    p.budget = c.budget;
    p.priority = c.priority;
    if (!c.capture.streams.empty()) {
      for (const auto& s : c.capture.streams) p.capture_streams.push_back(sidx.at(s));
    } else if (nodes_[i].stream != kNone) {
      p.capture_streams.push_back(nodes_[i].stream);
    } else {
      for (std::uint32_t s = 0; s < streams.size(); ++s) {
        bool reads = false;
        std::function<void(std::uint32_t)> scan = [&](std::uint32_t id) {
          if (nodes_[id].stream == s) reads = true;
          for (auto ch : nodes_[id].children) scan(ch);
        };
        scan(std::uint32_t(i));
        if (reads) p.capture_streams.push_back(s);
      }
      if (p.capture_streams.empty()) {
        for (std::uint32_t s = 0; s < streams.size(); ++s) p.capture_streams.push_back(s);
      }
    }
    Labels l{{"trigger", c.name}};
    p.fires = &metrics.counter("fleetpipe_trigger_fires_total",
                               "Trigger fires that made or joined an event", l);
    p.events = &metrics.counter("fleetpipe_trigger_events_total",
                                "Finished events each trigger is part of", l);
    p.bytes = &metrics.counter("fleetpipe_trigger_event_bytes_total",
                               "Encoded bytes of the events each trigger is part of", l);
    p.budget_hits = &metrics.counter("fleetpipe_trigger_suppressed_total",
                                     "Would-be fires refused, by reason",
                                     {{"trigger", c.name}, {"reason", "budget"}});
    p.cooldown_hits = &metrics.counter("fleetpipe_trigger_suppressed_total",
                                       "Would-be fires refused, by reason",
                                       {{"trigger", c.name}, {"reason", "cooldown"}});
    p.sampled_out = &metrics.counter("fleetpipe_trigger_suppressed_total",
                                     "Would-be fires refused, by reason",
                                     {{"trigger", c.name}, {"reason", "sampled_out"}});
  }
  return {};
}

bool TriggerEngine::eval_leaf(Node& nd, double t, const double* v, std::uint32_t stream,
                              std::size_t blob_size) noexcept {
  switch (nd.type) {
    case TriggerType::threshold: {
      const double x = v[nd.channel];
      if (x != x) {
        note_nan();
        return nd.cond;
      }
      switch (nd.op) {
        case ThresholdOp::above: return nd.cond ? x > nd.level - nd.hyst : x > nd.level;
        case ThresholdOp::below: return nd.cond ? x < nd.level + nd.hyst : x < nd.level;
        case ThresholdOp::inside:
          return nd.cond ? (x >= nd.low - nd.hyst && x <= nd.high + nd.hyst)
                         : (x >= nd.low && x <= nd.high);
        case ThresholdOp::outside:
          return nd.cond ? (x < nd.low + nd.hyst || x > nd.high - nd.hyst)
                         : (x < nd.low || x > nd.high);
      }
      return false;
    }
    case TriggerType::delta: {
      const NumericRing& ring = *rings_[nd.stream];
      const double x = v[nd.channel];
      if (x != x) {
        note_nan();
        return nd.cond;
      }
      const std::uint64_t oldest = ring.oldest();
      if (nd.cursor < oldest) nd.cursor = oldest;
      const double horizon = t - nd.window;
      while (nd.cursor + 1 < ring.head && ring.row(nd.cursor + 1)[0] <= horizon) ++nd.cursor;
      if (nd.cursor + 1 >= ring.head) return false;  // the current row only: no change yet
      const double* then = ring.row(nd.cursor);
      const double x0 = then[1 + nd.channel];
      if (x0 != x0) return nd.cond;
      double d = x - x0;
      if (nd.per_second) {
        const double dt = t - then[0];
        if (!(dt > 0)) return nd.cond;
        d /= dt;
      }
      const double need = nd.cond ? nd.change - nd.hyst : nd.change;
      switch (nd.dir) {
        case DeltaDirection::either: return std::fabs(d) >= need;
        case DeltaDirection::rise: return d >= need;
        case DeltaDirection::fall: return -d >= need;
      }
      return false;
    }
    case TriggerType::periodic: {
      if (nd.next_due != nd.next_due) {
        nd.next_due = t + nd.period;  // first sample starts the clock
        return false;
      }
      if (t < nd.next_due) return false;
      nd.next_due = (t - nd.next_due >= nd.period) ? t + nd.period : nd.next_due + nd.period;
      nd.prev = false;  // every period is a new edge
      return true;
    }
    case TriggerType::custom: {
      const std::size_t n = v ? rings_[stream]->stride - 1 : 0;
      return nd.custom->evaluate(t, stream, v, n, blob_size);
    }
    default:
      return false;
  }
}

void TriggerEngine::eval_composites(const std::vector<std::uint32_t>& list, double t) noexcept {
  for (std::uint32_t id : list) {
    Node& nd = nodes_[id];
    const double tol = nd.tol;
    auto child_true = [&](std::uint32_t ch) {
      const Node& k = nodes_[ch];
      return k.cond || (t - k.last_true) <= tol;
    };
    bool c;
    if (nd.type == TriggerType::all) {
      c = true;
      for (auto ch : nd.children) {
        if (!child_true(ch)) {
          c = false;
          break;
        }
      }
    } else if (nd.type == TriggerType::any) {
      c = false;
      for (auto ch : nd.children) {
        if (child_true(ch)) {
          c = true;
          break;
        }
      }
    } else {
      c = !child_true(nd.children[0]);
    }
    nd.cond = c;
    if (c) nd.last_true = t;
    if (c && !nd.prev && nd.fires) attempt(id, t);
    nd.prev = c;
  }
}

void TriggerEngine::fire_block_row(std::uint32_t stream, double t) noexcept {
  StreamEval& ps = per_stream_[stream];
  for (std::size_t j = 0; j < ps.leaves.size(); ++j) {
    if (ps.fire[j]) attempt(ps.leaves[j], t);
  }
}

void TriggerEngine::note_nan() noexcept {
  ++nan_count_;
  nan_counter_->inc();
}

void TriggerEngine::tick(double t) noexcept {
  for (std::uint32_t id : global_leaves_) {
    Node& nd = nodes_[id];
    if (nd.type != TriggerType::periodic) continue;
    const bool c = eval_leaf(nd, t, nullptr, 0, 0);
    nd.cond = c;
    if (c) {
      nd.last_true = t;
      if (!nd.prev && nd.fires) attempt(id, t);
    }
    nd.prev = c;
  }
  eval_composites(all_composites_, t);
}

bool TriggerEngine::fire_manual(std::uint32_t trigger, double t) noexcept {
  Node& nd = nodes_[trigger];
  nd.last_true = t;  // composites reading it see a true within their tolerance
  bool ok = attempt(trigger, t);
  eval_composites(all_composites_, t);
  return ok;
}

bool TriggerEngine::attempt(std::uint32_t trigger, double t) noexcept {
  Policy& p = policy_[trigger];
  if (p.cooldown > 0 && t - p.last_fire < p.cooldown) {
    ++p.stats.suppressed_cooldown;
    p.cooldown_hits->inc();
    note(LogLevel::debug, trigger, "fire suppressed by cooldown");
    return false;
  }
  if (p.probability < 1.0) {
    const double u = double(splitmix64(p.rng) >> 11) * 0x1.0p-53;
    if (!(u < p.probability)) {
      ++p.stats.sampled_out;
      p.sampled_out->inc();
      note(LogLevel::debug, trigger, "fire sampled out");
      return false;
    }
  }
  if (t - p.hour_start >= 3600 || t < p.hour_start) {
    p.hour_start = t;
    p.hour_count = 0;
    p.hour_hit_logged = false;
  }
  if (t - p.day_start >= 86400 || t < p.day_start) {
    p.day_start = t;
    p.day_count = 0;
    p.day_bytes = 0;
    p.day_hit_logged = false;
  }
  const char* which = nullptr;
  bool* logged = &p.hour_hit_logged;
  if (p.budget.max_events_per_hour && p.hour_count >= p.budget.max_events_per_hour) {
    which = "max_events_per_hour";
  } else if (p.budget.max_events_per_day && p.day_count >= p.budget.max_events_per_day) {
    which = "max_events_per_day";
    logged = &p.day_hit_logged;
  } else if (p.budget.max_bytes_per_day && p.day_bytes >= p.budget.max_bytes_per_day) {
    which = "max_bytes_per_day";
    logged = &p.day_hit_logged;
  }
  if (which) {
    ++p.stats.budget_hits;
    p.budget_hits->inc();
    if (!*logged) {
      *logged = true;
      if (log_enabled(*port_, LogLevel::warning)) {
        char msg[200];
        std::snprintf(msg, sizeof msg,
                      "budget %s reached; fires refused until the window resets (further "
                      "refusals are counted, not logged)",
                      which);
        note(LogLevel::warning, trigger, msg);
      }
    }
    return false;
  }
  ++p.hour_count;
  ++p.day_count;
  p.last_fire = t;
  ++p.stats.fires;
  p.fires->inc();
  note(LogLevel::debug, trigger, "fired");
  on_fire_(ctx_, trigger, t);
  return true;
}

// Formats into a stack buffer (names are at most 64 characters): no allocation, so nothing
// here can throw out of the noexcept evaluation path, and nothing is built when filtered.
void TriggerEngine::note(LogLevel level, std::uint32_t trigger, const char* what) const noexcept {
  if (!log_enabled(*port_, level)) return;
  char line[320];
  std::snprintf(line, sizeof line, "%s: %s", names_[trigger].c_str(), what);
  port_->log->write(level, "trigger", line);
}

void TriggerEngine::charge_event(std::uint32_t trigger, std::uint64_t bytes, double t) noexcept {
  Policy& p = policy_[trigger];
  if (t - p.day_start >= 86400) {
    p.day_start = t;
    p.day_count = 0;
    p.day_bytes = 0;
    p.day_hit_logged = false;
  }
  p.day_bytes += bytes;
  ++p.stats.events;
  p.stats.bytes += bytes;
  p.events->inc();
  p.bytes->inc(bytes);
}

}  // namespace fleetpipe::detail
