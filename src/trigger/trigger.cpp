// Trigger config builders: the public helpers of fleetpipe/trigger.hpp.
#include "fleetpipe/trigger.hpp"

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
