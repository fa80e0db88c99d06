// Trigger validation: checks of streams and triggers, with JSON pointers in every error.
#include "trigger/validate.hpp"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>

namespace fleetpipe::detail {
namespace {

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

}  // namespace fleetpipe::detail
