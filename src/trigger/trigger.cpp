// Triggers: config helpers, JSON parsing, validation and the evaluation engine.
#include "fleetpipe/trigger.hpp"

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <optional>
#include <cmath>
#include <functional>
#include <map>
#include <set>

#include "common/json_reader.hpp"
#include "trigger/trigger_engine.hpp"

namespace fleetpipe {

const char* to_string(TriggerType t) noexcept {
  switch (t) {
    case TriggerType::threshold: return "threshold";
    case TriggerType::delta: return "delta";
    case TriggerType::periodic: return "periodic";
    case TriggerType::manual: return "manual";
    case TriggerType::all: return "all";
    case TriggerType::any: return "any";
    case TriggerType::not_: return "not";
    case TriggerType::custom: return "custom";
  }
  return "unknown";
}

TriggerConfig threshold_trigger(std::string name, std::string stream, std::string channel,
                                ThresholdOp op, double level_or_low, double high) {
  TriggerConfig c;
  c.name = std::move(name);
  c.type = TriggerType::threshold;
  c.stream = std::move(stream);
  c.channel = std::move(channel);
  c.op = op;
  if (op == ThresholdOp::above || op == ThresholdOp::below) {
    c.level = level_or_low;
  } else {
    c.low = level_or_low;
    c.high = high;
  }
  return c;
}

TriggerConfig delta_trigger(std::string name, std::string stream, std::string channel,
                            double change, double window_s, DeltaDirection dir) {
  TriggerConfig c;
  c.name = std::move(name);
  c.type = TriggerType::delta;
  c.stream = std::move(stream);
  c.channel = std::move(channel);
  c.change = change;
  c.window_s = window_s;
  c.direction = dir;
  return c;
}

TriggerConfig periodic_trigger(std::string name, double period_s) {
  TriggerConfig c;
  c.name = std::move(name);
  c.type = TriggerType::periodic;
  c.period_s = period_s;
  return c;
}

TriggerConfig manual_trigger(std::string name) {
  TriggerConfig c;
  c.name = std::move(name);
  c.type = TriggerType::manual;
  return c;
}

TriggerConfig composite_trigger(std::string name, TriggerType type,
                                std::vector<TriggerConfig> children, double tolerance_s) {
  TriggerConfig c;
  c.name = std::move(name);
  c.type = type;
  c.children = std::move(children);
  c.tolerance_s = tolerance_s;
  return c;
}

TriggerConfig trigger_ref(std::string name) {
  TriggerConfig c;
  c.ref = std::move(name);
  return c;
}

TriggerConfig custom_trigger(std::string name, std::string stream,
                             std::shared_ptr<CustomTrigger> impl) {
  TriggerConfig c;
  c.name = std::move(name);
  c.type = TriggerType::custom;
  c.stream = std::move(stream);
  c.custom = std::move(impl);
  return c;
}

}  // namespace fleetpipe

namespace fleetpipe::detail {
namespace {

bool is_composite(TriggerType t) {
  return t == TriggerType::all || t == TriggerType::any || t == TriggerType::not_;
}

bool valid_name(const std::string& s) {
  if (s.empty() || s.size() > 64) return false;
  for (unsigned char c : s) {
    if (!(std::isalnum(c) || c == '_' || c == '-' || c == '.')) return false;
  }
  return true;
}

std::string quoted(const std::string& s) { return "\"" + s + "\""; }

std::string fmt(double v) {
  char b[64];
  std::snprintf(b, sizeof b, "%g", v);
  return b;
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

Error config_error(const std::string& pointer, const std::string& reason) {
  return Error(errc::invalid_config, pointer + ": " + reason, pointer);
}

// Validation of one trigger node (top-level or inline child). Returns an empty string when OK,
// else sets `err`.
struct Validator {
  const std::vector<StreamConfig>& streams;
  const std::vector<TriggerConfig>& triggers;
  std::map<std::string, std::size_t> stream_index;
  std::map<std::string, std::size_t> trigger_index;
  std::optional<Error> err;

  void fail(const std::string& pointer, const std::string& reason) {
    if (!err) err = config_error(pointer, reason);
  }

  const StreamConfig* numeric_stream(const TriggerConfig& c, const std::string& p) {
    if (c.stream.empty()) {
      fail(p + "/stream", "is required for a " + std::string(to_string(c.type)) + " trigger");
      return nullptr;
    }
    auto it = stream_index.find(c.stream);
    if (it == stream_index.end()) {
      fail(p + "/stream", "unknown stream " + quoted(c.stream));
      return nullptr;
    }
    const auto& s = streams[it->second];
    if (s.kind != StreamKind::numeric) {
      fail(p + "/stream", "stream " + quoted(c.stream) + " is a blob stream; " +
                              to_string(c.type) + " triggers need a numeric stream");
      return nullptr;
    }
    if (c.channel.empty()) {
      fail(p + "/channel", "is required for a " + std::string(to_string(c.type)) + " trigger");
      return nullptr;
    }
    if (std::find(s.channels.begin(), s.channels.end(), c.channel) == s.channels.end()) {
      fail(p + "/channel", "stream " + quoted(c.stream) + " has no channel " + quoted(c.channel));
      return nullptr;
    }
    return &s;
  }

  void optional_stream(const TriggerConfig& c, const std::string& p) {
    if (!c.stream.empty() && !stream_index.count(c.stream)) {
      fail(p + "/stream", "unknown stream " + quoted(c.stream));
    }
  }

  void node(const TriggerConfig& c, const std::string& p, bool top) {
    if (!c.ref.empty()) {
      if (top) {
        fail(p + "/name", "a top-level trigger cannot be a reference");
        return;
      }
      if (!trigger_index.count(c.ref)) fail(p, "unknown trigger " + quoted(c.ref));
      return;
    }
    if (top || !c.name.empty()) {
      if (!valid_name(c.name)) {
        fail(p + "/name", "must be 1-64 characters of letters, digits, '_', '-' and '.', got " +
                              quoted(c.name));
      }
    }
    if (!std::isfinite(c.hysteresis) || c.hysteresis < 0) {
      fail(p + "/hysteresis", "must be >= 0, got " + fmt(c.hysteresis));
    }
    switch (c.type) {
      case TriggerType::threshold: {
        numeric_stream(c, p);
        if (c.op == ThresholdOp::inside || c.op == ThresholdOp::outside) {
          const char* key = c.op == ThresholdOp::inside ? "/inside" : "/outside";
          if (!std::isfinite(c.low) || !std::isfinite(c.high) || c.low > c.high) {
            fail(p + key, "must be [low, high] with finite low <= high, got [" + fmt(c.low) +
                              ", " + fmt(c.high) + "]");
          }
        } else if (std::isnan(c.level)) {
          fail(p + (c.op == ThresholdOp::above ? "/above" : "/below"), "must be a number");
        }
        break;
      }
      case TriggerType::delta: {
        const StreamConfig* s = numeric_stream(c, p);
        if (!(c.change > 0) || !std::isfinite(c.change)) {
          fail(p + "/change", "must be > 0, got " + fmt(c.change));
        }
        if (!(c.window_s > 0) || !std::isfinite(c.window_s)) {
          fail(p + "/window", "must be > 0 s, got " + fmt(c.window_s));
        } else if (s && c.window_s > s->ring_seconds) {
          fail(p + "/window", "must be <= ring_seconds of stream " + quoted(s->name) + " (" +
                                  fmt(s->ring_seconds) + "), got " + fmt(c.window_s));
        }
        break;
      }
      case TriggerType::periodic:
        optional_stream(c, p);
        if (!(c.period_s > 0) || !std::isfinite(c.period_s)) {
          fail(p + "/period", "must be > 0 s, got " + fmt(c.period_s));
        }
        break;
      case TriggerType::manual:
        if (!top) fail(p + "/type", "a manual condition must be a named top-level trigger");
        optional_stream(c, p);
        break;
      case TriggerType::custom:
        optional_stream(c, p);
        if (!c.custom) {
          fail(p, "custom trigger " + quoted(c.name) +
                      " has no implementation (set TriggerConfig::custom before Capture::create)");
        }
        break;
      case TriggerType::all:
      case TriggerType::any:
      case TriggerType::not_: {
        if (c.children.empty()) fail(p + "/of", "must list at least one condition");
        if (c.type == TriggerType::not_ && c.children.size() != 1) {
          fail(p + "/of", "\"not\" takes exactly one condition, got " +
                              std::to_string(c.children.size()));
        }
        if (!std::isfinite(c.tolerance_s) || c.tolerance_s < 0) {
          fail(p + "/tolerance", "must be >= 0 s, got " + fmt(c.tolerance_s));
        }
        for (std::size_t j = 0; j < c.children.size(); ++j) {
          node(c.children[j], p + "/of/" + std::to_string(j), false);
        }
        break;
      }
    }
    if (!top) return;
    if (!std::isfinite(c.cooldown_s) || c.cooldown_s < 0) {
      fail(p + "/cooldown", "must be >= 0 s, got " + fmt(c.cooldown_s));
    }
    if (!(c.sample_probability >= 0 && c.sample_probability <= 1)) {
      fail(p + "/sample_probability", "must be within [0, 1], got " + fmt(c.sample_probability));
    }
    if (c.priority > 7) {
      fail(p + "/priority", "must be <= 7, got " + std::to_string(c.priority));
    }
    if (!std::isfinite(c.capture.pre_s) || c.capture.pre_s < 0) {
      fail(p + "/capture/pre", "must be >= 0 s, got " + fmt(c.capture.pre_s));
    }
    if (!std::isfinite(c.capture.post_s) || c.capture.post_s < 0) {
      fail(p + "/capture/post", "must be >= 0 s, got " + fmt(c.capture.post_s));
    }
    std::set<std::string> seen;
    for (std::size_t j = 0; j < c.capture.streams.size(); ++j) {
      const auto& s = c.capture.streams[j];
      std::string sp = p + "/capture/streams/" + std::to_string(j);
      if (!stream_index.count(s)) fail(sp, "unknown stream " + quoted(s));
      if (!seen.insert(s).second) fail(sp, "stream " + quoted(s) + " listed twice");
    }
  }
};

}  // namespace

Result<void> validate_capture_config(const std::vector<StreamConfig>& streams,
                                     const std::vector<TriggerConfig>& triggers) {
  Validator v{streams, triggers, {}, {}, std::nullopt};
  for (std::size_t i = 0; i < streams.size(); ++i) {
    const auto& s = streams[i];
    std::string p = "/streams/" + std::to_string(i);
    if (!valid_name(s.name)) {
      v.fail(p + "/name", "must be 1-64 characters of letters, digits, '_', '-' and '.', got " +
                              quoted(s.name));
    } else if (!v.stream_index.emplace(s.name, i).second) {
      v.fail(p + "/name", "duplicate stream name " + quoted(s.name));
    }
    if (s.kind == StreamKind::numeric) {
      if (s.channels.empty()) v.fail(p + "/channels", "a numeric stream needs channels");
      std::set<std::string> seen;
      for (std::size_t j = 0; j < s.channels.size(); ++j) {
        if (!valid_name(s.channels[j])) {
          v.fail(p + "/channels/" + std::to_string(j),
                 "must be 1-64 characters of letters, digits, '_', '-' and '.', got " +
                     quoted(s.channels[j]));
        } else if (!seen.insert(s.channels[j]).second) {
          v.fail(p + "/channels/" + std::to_string(j), "duplicate channel " + quoted(s.channels[j]));
        }
      }
    } else if (!s.channels.empty()) {
      v.fail(p + "/channels", "a blob stream has no channels");
    }
    if (!(s.ring_seconds > 0) || !std::isfinite(s.ring_seconds)) {
      v.fail(p + "/ring_seconds", "must be > 0 s, got " + fmt(s.ring_seconds));
    }
    if (s.ring_bytes < 64) {
      v.fail(p + "/ring_bytes", "must be >= 64, got " + std::to_string(s.ring_bytes));
    }
    if (s.ring_max_blobs < 1) v.fail(p + "/ring_max_blobs", "must be >= 1, got 0");
    if (s.compression == Compression::zstd && (s.zstd_level < 1 || s.zstd_level > 19)) {
      v.fail(p + "/zstd_level", "must be within [1, 19], got " + std::to_string(s.zstd_level));
    }
  }
  for (std::size_t i = 0; i < triggers.size(); ++i) {
    if (valid_name(triggers[i].name) && !v.trigger_index.emplace(triggers[i].name, i).second) {
      v.fail("/triggers/" + std::to_string(i) + "/name",
             "duplicate trigger name " + quoted(triggers[i].name));
    }
  }
  for (std::size_t i = 0; i < triggers.size(); ++i) {
    v.node(triggers[i], "/triggers/" + std::to_string(i), true);
  }
  if (v.err) return *v.err;
  // Reference cycles (a composite reading itself through references).
  std::vector<int> state(triggers.size(), 0);  // 0 new, 1 on stack, 2 done
  std::function<bool(std::size_t)> visit;
  std::function<bool(const TriggerConfig&, std::size_t)> walk =
      [&](const TriggerConfig& c, std::size_t top) -> bool {
    for (std::size_t j = 0; j < c.children.size(); ++j) {
      const auto& ch = c.children[j];
      if (!ch.ref.empty()) {
        if (!visit(v.trigger_index.at(ch.ref))) return false;
      } else if (!walk(ch, top)) {
        return false;
      }
    }
    return true;
  };
  std::size_t culprit = 0;
  visit = [&](std::size_t i) -> bool {
    if (state[i] == 2) return true;
    if (state[i] == 1) {
      culprit = i;
      return false;
    }
    state[i] = 1;
    if (!walk(triggers[i], i)) return false;
    state[i] = 2;
    return true;
  };
  for (std::size_t i = 0; i < triggers.size(); ++i) {
    if (!visit(i)) {
      return config_error("/triggers/" + std::to_string(culprit) + "/of",
                          "reference cycle through trigger " + quoted(triggers[culprit].name));
    }
  }
  return {};
}

// ------------------------------------------------------------------------------------------
// JSON
// ------------------------------------------------------------------------------------------

TriggerConfig parse_trigger_config(JsonReader& r, bool child) {
  TriggerConfig c;
  c.name = child ? r.string("name", "") : r.required_string("name");
  r.string("description", "");
  auto type = r.one_of("type", "", {"threshold", "delta", "periodic", "manual", "all", "any",
                                    "not", "custom"});
  if (type.empty()) r.fail("type", "is required");
  static const std::map<std::string, TriggerType> kTypes = {
      {"threshold", TriggerType::threshold}, {"delta", TriggerType::delta},
      {"periodic", TriggerType::periodic},   {"manual", TriggerType::manual},
      {"all", TriggerType::all},             {"any", TriggerType::any},
      {"not", TriggerType::not_},            {"custom", TriggerType::custom}};
  c.type = kTypes.at(type);
  c.stream = r.string("stream", "");
  c.hysteresis = r.number("hysteresis", 0, 0);
  switch (c.type) {
    case TriggerType::threshold: {
      c.channel = r.required_string("channel");
      int given = 0;
      for (const char* k : {"above", "below", "inside", "outside"}) given += r.has(k) ? 1 : 0;
      if (given != 1) {
        r.fail_here("a threshold trigger needs exactly one of \"above\", \"below\", \"inside\", "
                    "\"outside\"");
      }
      if (r.has("above")) {
        c.op = ThresholdOp::above;
        c.level = r.required_number("above");
      } else if (r.has("below")) {
        c.op = ThresholdOp::below;
        c.level = r.required_number("below");
      } else {
        const char* key = r.has("inside") ? "inside" : "outside";
        c.op = r.has("inside") ? ThresholdOp::inside : ThresholdOp::outside;
        const auto* v = r.raw(key);
        if (!v->is_array() || v->size() != 2 || !(*v)[0].is_number() || !(*v)[1].is_number()) {
          r.fail(key, "must be [low, high], got " + v->dump());
        }
        c.low = (*v)[0].get<double>();
        c.high = (*v)[1].get<double>();
        if (c.low > c.high) r.fail(key, "must have low <= high, got " + v->dump());
      }
      break;
    }
    case TriggerType::delta: {
      c.channel = r.required_string("channel");
      c.change = r.required_number("change", 0, JsonReader::kInf, true);
      c.window_s = r.seconds("window", 1.0, 0, JsonReader::kInf, true);
      auto d = r.one_of("direction", "either", {"either", "rise", "fall"});
      c.direction = d == "rise"   ? DeltaDirection::rise
                    : d == "fall" ? DeltaDirection::fall
                                  : DeltaDirection::either;
      c.per_second = r.boolean("per_second", false);
      break;
    }
    case TriggerType::periodic:
      if (!r.has("period")) r.fail("period", "is required");
      c.period_s = r.seconds("period", 0, 0, JsonReader::kInf, true);
      break;
    case TriggerType::all:
    case TriggerType::any:
    case TriggerType::not_: {
      c.tolerance_s = r.seconds("tolerance", 0);
      const auto* of = r.raw("of");
      if (!of) r.fail("of", "is required");
      if (!of->is_array()) r.fail("of", "must be an array of trigger names or conditions");
      for (std::size_t j = 0; j < of->size(); ++j) {
        const auto& e = (*of)[j];
        std::string p = r.pointer_of("of") + "/" + std::to_string(j);
        if (e.is_string()) {
          if (e.get<std::string>().empty()) throw ConfigError(p, "must not be empty");
          c.children.push_back(trigger_ref(e.get<std::string>()));
        } else {
          JsonReader cr(e, p);
          c.children.push_back(parse_trigger_config(cr, true));
        }
      }
      break;
    }
    case TriggerType::manual:
    case TriggerType::custom:
      break;
  }
  if (!child) {
    c.fires = r.boolean("fires", true);
    c.cooldown_s = r.seconds("cooldown", 0);
    c.sample_probability = r.number("sample_probability", 1.0, 0, 1);
    c.seed = static_cast<std::uint64_t>(r.integer("seed", 0, 0));
    c.priority = static_cast<std::uint8_t>(r.integer("priority", 3, 0, 7));
    {
      auto b = r.object("budget");
      c.budget.max_events_per_hour =
          static_cast<std::uint32_t>(b.integer("max_events_per_hour", 0, 0, 1000000000));
      c.budget.max_events_per_day =
          static_cast<std::uint32_t>(b.integer("max_events_per_day", 0, 0, 1000000000));
      c.budget.max_bytes_per_day = b.bytes("max_bytes_per_day", 0);
      b.finish();
    }
    {
      auto cap = r.object("capture");
      c.capture.streams = cap.string_array("streams");
      c.capture.pre_s = cap.seconds("pre", c.capture.pre_s);
      c.capture.post_s = cap.seconds("post", c.capture.post_s);
      c.capture.max_bytes = cap.bytes("max_bytes", c.capture.max_bytes);
      cap.finish();
    }
  }
  r.finish();
  return c;
}

// ------------------------------------------------------------------------------------------
// Engine
// ------------------------------------------------------------------------------------------

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
