// Trigger parsing: one "/triggers/N" JSON object to a TriggerConfig.
#include "trigger/parse.hpp"

#include <map>
#include <string>

#include "common/json_reader.hpp"

namespace fleetpipe::detail {

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

}  // namespace fleetpipe::detail
