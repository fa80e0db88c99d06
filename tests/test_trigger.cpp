#include "fleetpipe/trigger.hpp"

#include <catch2/catch.hpp>

#include <cmath>
#include <limits>

#include "fleetpipe/config.hpp"
#include "support/capture_rig.hpp"

using namespace fleetpipe;
using fleetpipe::test::numeric_stream;
using fleetpipe::test::Rig;

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

TriggerConfig quick(TriggerConfig c) {
  c.capture.pre_s = 0;
  c.capture.post_s = 0;
  return c;
}

// Pushes `values` of channel 0 at t = 1, 2, 3, ... and returns the fire count.
std::uint64_t run(TriggerConfig trig, const std::vector<double>& values) {
  Rig rig({numeric_stream("s", {"x"})}, {quick(std::move(trig))});
  auto h = rig.cap->stream("s");
  double t = 0;
  for (double v : values) rig.cap->push(h, t += 1, {v});
  return rig.cap->trigger_stats(TriggerHandle{0}).fires;
}

}  // namespace

TEST_CASE("threshold above fires once per excursion (rising edge)", "[trigger]") {
  auto t = threshold_trigger("hot", "s", "x", ThresholdOp::above, 10);
  CHECK(run(t, {5, 11, 12, 13, 5, 11, 11}) == 2);
}

TEST_CASE("threshold value exactly at the level does not fire (strict above/below)", "[trigger]") {
  CHECK(run(threshold_trigger("a", "s", "x", ThresholdOp::above, 10), {10, 10, 10}) == 0);
  CHECK(run(threshold_trigger("b", "s", "x", ThresholdOp::below, 10), {10, 10}) == 0);
  CHECK(run(threshold_trigger("b", "s", "x", ThresholdOp::below, 10), {10, 9.999}) == 1);
}

TEST_CASE("threshold bands: inside is closed, outside is strict", "[trigger]") {
  CHECK(run(threshold_trigger("in", "s", "x", ThresholdOp::inside, 1, 2), {0, 1}) == 1);
  CHECK(run(threshold_trigger("in", "s", "x", ThresholdOp::inside, 1, 2), {0, 2, 3, 1.5}) == 2);
  CHECK(run(threshold_trigger("out", "s", "x", ThresholdOp::outside, 1, 2), {1, 2, 1.5}) == 0);
  CHECK(run(threshold_trigger("out", "s", "x", ThresholdOp::outside, 1, 2), {1.5, 2.1, 0.9}) == 1);
  CHECK(run(threshold_trigger("out", "s", "x", ThresholdOp::outside, 1, 2),
            {1.5, 2.1, 1.5, 0.9}) == 2);
}

TEST_CASE("hysteresis suppresses chatter around the threshold", "[trigger]") {
  std::vector<double> chatter = {9.9, 10.1, 9.9, 10.1, 9.95, 10.2, 9.9, 10.1};
  auto no_h = threshold_trigger("t", "s", "x", ThresholdOp::above, 10);
  CHECK(run(no_h, chatter) == 4);
  auto with_h = no_h;
  with_h.hysteresis = 0.5;
  CHECK(run(with_h, chatter) == 1);
  // Releasing needs v <= level - hysteresis; then it may fire again.
  CHECK(run(with_h, {11, 9.6, 11, 9.5, 11}) == 2);
  auto below = threshold_trigger("b", "s", "x", ThresholdOp::below, 0);
  below.hysteresis = 1;
  CHECK(run(below, {-1, 0.5, -1, 1, -1}) == 2);
}

TEST_CASE("NaN leaves the condition unchanged and is counted", "[trigger]") {
  Rig rig({numeric_stream("s", {"x"})},
          {quick(threshold_trigger("t", "s", "x", ThresholdOp::above, 10))});
  auto h = rig.cap->stream("s");
  rig.cap->push(h, 1, {kNaN});
  CHECK(rig.fires("t") == 0);
  rig.cap->push(h, 2, {11});
  rig.cap->push(h, 3, {kNaN});
  rig.cap->push(h, 4, {12});  // still the same excursion: no second fire
  CHECK(rig.fires("t") == 1);
  rig.cap->push(h, 5, {1});
  rig.cap->push(h, 6, {kNaN});
  rig.cap->push(h, 7, {12});
  CHECK(rig.fires("t") == 2);
  CHECK(rig.cap->stats().nan_samples == 3);
  CHECK(rig.metrics.value("fleetpipe_trigger_nan_samples_total") == 3);
  // A missing channel is NaN too.
  rig.cap->push(h, 8, nullptr, 0);
  CHECK(rig.cap->stats().nan_samples == 4);
}

TEST_CASE("infinity compares normally", "[trigger]") {
  CHECK(run(threshold_trigger("t", "s", "x", ThresholdOp::above, 1e300),
            {0, std::numeric_limits<double>::infinity()}) == 1);
}

TEST_CASE("delta fires on change over the window, by direction", "[trigger]") {
  // Values at t = 1, 2, 3 ...; window 2 s compares with the sample 2 s earlier.
  auto either = delta_trigger("d", "s", "x", 5, 2);
  CHECK(run(either, {0, 1, 2, 3, 4, 5}) == 0);   // change 2 per 2 s
  CHECK(run(either, {0, 0, 6, 6, 6, 6}) == 1);   // +6 within 2 s, then flat -> releases
  CHECK(run(either, {10, 10, 4}) == 1);          // -6: either
  auto rise = delta_trigger("d", "s", "x", 5, 2, DeltaDirection::rise);
  CHECK(run(rise, {10, 10, 4}) == 0);
  CHECK(run(rise, {0, 0, 6}) == 1);
  auto fall = delta_trigger("d", "s", "x", 5, 2, DeltaDirection::fall);
  CHECK(run(fall, {10, 10, 4}) == 1);
  auto rate = delta_trigger("d", "s", "x", 2.5, 2);
  rate.per_second = true;  // 6 over 2 s = 3/s >= 2.5
  CHECK(run(rate, {0, 0, 6}) == 1);
  rate.change = 3.5;
  CHECK(run(rate, {0, 0, 6}) == 0);
}

TEST_CASE("delta needs two samples and tolerates NaN history", "[trigger]") {
  auto d = delta_trigger("d", "s", "x", 1, 2);
  CHECK(run(d, {100}) == 0);
  CHECK(run(d, {kNaN, kNaN, 5}) == 0);  // compared against NaN: no edge
}

TEST_CASE("periodic fires every period of sample time", "[trigger]") {
  auto p = periodic_trigger("p", 2);
  p.stream = "s";
  // t = 1..10: clock starts at t=1, fires at 3, 5, 7, 9.
  CHECK(run(p, std::vector<double>(10, 0.0)) == 4);
}

TEST_CASE("stream-less periodic runs from tick() too, a long gap fires once", "[trigger]") {
  Rig rig({numeric_stream("s", {"x"})}, {quick(periodic_trigger("base", 10))});
  rig.cap->tick(0);
  rig.cap->tick(5);
  CHECK(rig.fires("base") == 0);
  rig.cap->tick(10);
  CHECK(rig.fires("base") == 1);
  rig.cap->tick(100);  // missed many periods: one fire, then realigned
  CHECK(rig.fires("base") == 2);
  rig.cap->tick(105);
  CHECK(rig.fires("base") == 2);
  rig.cap->tick(110);
  CHECK(rig.fires("base") == 3);
}

TEST_CASE("manual fires through cooldown, unknown names are errors", "[trigger]") {
  auto m = quick(manual_trigger("button"));
  m.cooldown_s = 5;
  Rig rig({numeric_stream("s", {"x"})}, {m});
  CHECK(*rig.cap->fire("button", 1) == true);
  CHECK(*rig.cap->fire("button", 3) == false);
  CHECK(*rig.cap->fire("button", 6.5) == true);
  CHECK(rig.fires("button") == 2);
  CHECK(rig.cap->trigger_stats(rig.cap->trigger("button")).suppressed_cooldown == 1);
  auto bad = rig.cap->fire("nope", 1);
  REQUIRE_FALSE(bad.ok());
  CHECK(bad.error().is(errc::invalid_argument));
}

TEST_CASE("composite all with tolerance across streams (hard brake)", "[trigger]") {
  std::vector<StreamConfig> streams = {numeric_stream("imu", {"accel_x"}),
                                       numeric_stream("gps", {"speed"})};
  auto hard_brake = quick(composite_trigger(
      "hard_brake", TriggerType::all,
      {threshold_trigger("", "imu", "accel_x", ThresholdOp::below, -4),
       threshold_trigger("", "gps", "speed", ThresholdOp::above, 10)},
      0.5));
  Rig rig(streams, {hard_brake});
  auto imu = rig.cap->stream("imu");
  auto gps = rig.cap->stream("gps");
  rig.cap->push(gps, 1.0, {14});
  rig.cap->push(gps, 2.0, {3});  // slowed down
  rig.cap->push(imu, 3.0, {-5});  // braking but speed > 10 was 2 s ago: outside tolerance
  CHECK(rig.fires("hard_brake") == 0);
  rig.cap->push(imu, 3.1, {0});
  rig.cap->push(gps, 4.0, {14});
  rig.cap->push(gps, 4.1, {2});  // speed > 10 was last true at 4.0
  rig.cap->push(imu, 4.4, {-5});  // 0.4 s later: within tolerance
  CHECK(rig.fires("hard_brake") == 1);
  rig.cap->push(imu, 4.45, {-6});  // same excursion
  CHECK(rig.fires("hard_brake") == 1);
}

TEST_CASE("composite any/not and references to named triggers", "[trigger]") {
  auto fast = threshold_trigger("fast", "s", "x", ThresholdOp::above, 10);
  fast.fires = false;  // condition only
  auto cold = threshold_trigger("cold", "s", "y", ThresholdOp::below, 0);
  cold.fires = false;
  auto any = quick(composite_trigger("either", TriggerType::any,
                                     {trigger_ref("fast"), trigger_ref("cold")}, 0));
  auto calm = quick(composite_trigger("calm", TriggerType::not_, {trigger_ref("fast")}, 1.0));
  Rig rig({numeric_stream("s", {"x", "y"})}, {fast, cold, any, calm});
  auto h = rig.cap->stream("s");
  rig.cap->push(h, 0, {0, 5});  // not fast: calm fires right away
  CHECK(rig.fires("calm") == 1);
  rig.cap->push(h, 1, {11, 5});
  CHECK(rig.fires("either") == 1);
  rig.cap->push(h, 2, {11, -1});  // still true (any): no new edge
  CHECK(rig.fires("either") == 1);
  rig.cap->push(h, 3, {0, 5});    // fast was true 1 s ago: not yet calm (tolerance 1)
  CHECK(rig.fires("calm") == 1);
  rig.cap->push(h, 4.5, {0, 5});
  CHECK(rig.fires("calm") == 2);
  CHECK(rig.fires("fast") == 0);  // fires = false
  CHECK(rig.fires("either") == 1);
}

TEST_CASE("cooldown suppresses and counts", "[trigger]") {
  auto t = threshold_trigger("t", "s", "x", ThresholdOp::above, 10);
  t.cooldown_s = 3.5;
  Rig rig({numeric_stream("s", {"x"})}, {quick(t)});
  auto h = rig.cap->stream("s");
  double vals[] = {11, 0, 11, 0, 11, 0, 11};  // edges at t = 1, 3, 5, 7
  double ts = 0;
  for (double v : vals) rig.cap->push(h, ts += 1, {v});
  CHECK(rig.fires("t") == 2);  // t=1 and t=5
  CHECK(rig.cap->trigger_stats(TriggerHandle{0}).suppressed_cooldown == 2);
  CHECK(rig.metrics.value("fleetpipe_trigger_suppressed_total",
                          {{"trigger", "t"}, {"reason", "cooldown"}}) == 2);
}

TEST_CASE("budget: events per hour exhaust and reset", "[trigger]") {
  auto t = threshold_trigger("t", "s", "x", ThresholdOp::above, 10);
  t.budget.max_events_per_hour = 2;
  t.budget.max_events_per_day = 3;
  Rig rig({numeric_stream("s", {"x"})}, {quick(t)});
  auto h = rig.cap->stream("s");
  auto excursion = [&](double at) {
    rig.cap->push(h, at, {11});
    rig.cap->push(h, at + 1, {0});
  };
  excursion(10);
  excursion(20);
  excursion(30);  // third in the hour: refused
  CHECK(rig.fires("t") == 2);
  CHECK(rig.cap->trigger_stats(TriggerHandle{0}).budget_hits == 1);
  excursion(10 + 3600);  // new hour window
  CHECK(rig.fires("t") == 3);
  excursion(20 + 3600);  // hour ok but the day budget (3) is spent
  CHECK(rig.fires("t") == 3);
  CHECK(rig.cap->trigger_stats(TriggerHandle{0}).budget_hits == 2);
  excursion(10 + 86400);  // new day
  CHECK(rig.fires("t") == 4);
  CHECK(rig.metrics.value("fleetpipe_trigger_suppressed_total",
                          {{"trigger", "t"}, {"reason", "budget"}}) == 2);
}

TEST_CASE("budget: bytes per day counts finished event bytes", "[trigger]") {
  auto t = threshold_trigger("t", "s", "x", ThresholdOp::above, 10);
  t.capture.pre_s = 0;
  t.capture.post_s = 0;
  t.budget.max_bytes_per_day = 1;  // the first event spends it
  Rig rig({numeric_stream("s", {"x"})}, {t});
  auto h = rig.cap->stream("s");
  rig.cap->push(h, 1, {11});
  rig.cap->push(h, 2, {0});  // closes the first event
  REQUIRE(rig.sink.items.size() == 1);
  CHECK(rig.cap->trigger_stats(TriggerHandle{0}).bytes == rig.sink.items[0].payload.size());
  rig.cap->push(h, 3, {11});
  CHECK(rig.fires("t") == 1);
  CHECK(rig.cap->trigger_stats(TriggerHandle{0}).budget_hits == 1);
  rig.cap->push(h, 4, {0});
  rig.cap->push(h, 86402, {11});
  CHECK(rig.fires("t") == 2);
}

TEST_CASE("sampling is deterministic for a seed and keeps about the given share", "[trigger]") {
  auto pattern = [](std::uint64_t seed, double p) {
    auto t = threshold_trigger("t", "s", "x", ThresholdOp::above, 10);
    t.sample_probability = p;
    t.seed = seed;
    Rig rig({numeric_stream("s", {"x"})}, {quick(t)});
    auto h = rig.cap->stream("s");
    std::vector<std::uint64_t> fires;
    for (int i = 0; i < 1000; ++i) {
      rig.cap->push(h, 2.0 * i, {11});
      rig.cap->push(h, 2.0 * i + 1, {0});
      fires.push_back(rig.fires("t"));
    }
    CHECK(rig.cap->trigger_stats(TriggerHandle{0}).sampled_out == 1000 - fires.back());
    return fires;
  };
  auto a = pattern(42, 0.3), b = pattern(42, 0.3), c = pattern(43, 0.3);
  CHECK(a == b);
  CHECK(a != c);
  CHECK(a.back() > 240);
  CHECK(a.back() < 360);
  CHECK(pattern(1, 0).back() == 0);
  CHECK(pattern(1, 1).back() == 1000);
}

TEST_CASE("custom trigger: the host's condition with fleetpipe's edge policy", "[trigger]") {
  struct EveryThird final : CustomTrigger {
    int calls = 0;
    bool evaluate(double, std::uint32_t, const double* v, std::size_t n,
                  std::size_t) noexcept override {
      ++calls;
      return n == 1 && v[0] > 0 && calls % 3 != 0;
    }
  };
  auto impl = std::make_shared<EveryThird>();
  Rig rig({numeric_stream("s", {"x"})}, {quick(custom_trigger("c", "s", impl))});
  auto h = rig.cap->stream("s");
  for (int i = 1; i <= 9; ++i) rig.cap->push(h, i, {1});
  CHECK(impl->calls == 9);
  CHECK(rig.fires("c") == 3);  // true,true,false repeated: 3 rising edges
}

TEST_CASE("trigger metrics are labelled by trigger", "[trigger]") {
  Rig rig({numeric_stream("s", {"x"})},
          {quick(threshold_trigger("overspeed", "s", "x", ThresholdOp::above, 1))});
  rig.cap->push(rig.cap->stream("s"), 1, {2});
  CHECK(rig.metrics.value("fleetpipe_trigger_fires_total", {{"trigger", "overspeed"}}) == 1);
  rig.cap->flush();
  CHECK(rig.metrics.value("fleetpipe_trigger_events_total", {{"trigger", "overspeed"}}) == 1);
}

// ---------------------------------------------------------------------------------------------
// Config
// ---------------------------------------------------------------------------------------------

namespace {
std::string config_error(const std::string& streams_and_triggers) {
  auto c = parse_config(R"({"device_id": "d1", )" + streams_and_triggers + "}");
  return c.ok() ? std::string("OK") : c.error().message;
}
const char* kStreams =
    R"("streams": [{"name": "imu", "channels": ["accel_x", "speed"]},
                   {"name": "camera", "kind": "blob", "content_type": "image/jpeg"}])";
}  // namespace

TEST_CASE("config: a full trigger section parses with every key", "[trigger][config]") {
  auto c = parse_config(std::string(R"({"device_id": "d1", )") + kStreams + R"(,
    "triggers": [
      {"name": "speeding", "type": "threshold", "stream": "imu", "channel": "speed",
       "above": 10, "hysteresis": 1, "fires": false},
      {"name": "hard_brake", "type": "all", "tolerance": "500ms",
       "of": ["speeding", {"type": "threshold", "stream": "imu", "channel": "accel_x", "below": -4}],
       "cooldown": "10s", "priority": 6, "sample_probability": 0.5, "seed": 7,
       "budget": {"max_events_per_hour": 10, "max_events_per_day": 50, "max_bytes_per_day": "200MiB"},
       "capture": {"streams": ["imu", "camera"], "pre": "5s", "post": 3, "max_bytes": "32MiB"}},
      {"name": "jerk", "type": "delta", "stream": "imu", "channel": "accel_x", "change": 8,
       "window": 0.2, "direction": "fall", "per_second": false},
      {"name": "baseline", "type": "periodic", "period": "1h"},
      {"name": "button", "type": "manual", "description": "driver pressed the button"}
    ]})");
  REQUIRE(c.ok());
  REQUIRE(c->triggers.size() == 5);
  const auto& hb = c->triggers[1];
  CHECK(hb.type == TriggerType::all);
  CHECK(hb.tolerance_s == Approx(0.5));
  REQUIRE(hb.children.size() == 2);
  CHECK(hb.children[0].ref == "speeding");
  CHECK(hb.children[1].op == ThresholdOp::below);
  CHECK(hb.children[1].level == -4);
  CHECK(hb.priority == 6);
  CHECK(hb.budget.max_bytes_per_day == 200ull << 20);
  CHECK(hb.capture.streams == std::vector<std::string>{"imu", "camera"});
  CHECK(hb.capture.max_bytes == 32ull << 20);
  CHECK(c->triggers[2].direction == DeltaDirection::fall);
  CHECK(c->triggers[3].period_s == 3600);
  CHECK(c->streams[1].kind == StreamKind::blob);
}

TEST_CASE("config: trigger errors name the JSON pointer", "[trigger][config]") {
  std::string s = kStreams;
  CHECK(config_error(s + R"(, "triggers": [{"name": "a", "type": "threshold", "stream": "gps",
        "channel": "speed", "above": 1}])") == "/triggers/0/stream: unknown stream \"gps\"");
  CHECK(config_error(s + R"(, "triggers": [{"name": "a", "type": "threshold", "stream": "imu",
        "channel": "sped", "above": 1}])") ==
        "/triggers/0/channel: stream \"imu\" has no channel \"sped\"");
  CHECK(config_error(s + R"(, "triggers": [{"name": "a", "type": "threshold", "stream": "camera",
        "channel": "x", "above": 1}])") ==
        "/triggers/0/stream: stream \"camera\" is a blob stream; threshold triggers need a "
        "numeric stream");
  CHECK(config_error(s + R"(, "triggers": [{"name": "a", "type": "threshold", "stream": "imu",
        "channel": "speed"}])") ==
        "/triggers/0: a threshold trigger needs exactly one of \"above\", \"below\", \"inside\", "
        "\"outside\"");
  CHECK(config_error(s + R"(, "triggers": [{"name": "a", "type": "threshold", "stream": "imu",
        "channel": "speed", "inside": [5, 1]}])") ==
        "/triggers/0/inside: must have low <= high, got [5,1]");
  CHECK(config_error(s + R"(, "triggers": [{"name": "a", "type": "any", "of": ["b"]}])") ==
        "/triggers/0/of/0: unknown trigger \"b\"");
  CHECK(config_error(s + R"(, "triggers": [{"name": "a", "type": "any", "of": ["b"]},
        {"name": "b", "type": "not", "of": ["a"]}])") ==
        "/triggers/0/of: reference cycle through trigger \"a\"");
  CHECK(config_error(s + R"(, "triggers": [{"name": "a", "type": "manual",
        "sample_probability": 1.5}])") == "/triggers/0/sample_probability: must be <= 1, got 1.5");
  CHECK(config_error(s + R"(, "triggers": [{"name": "a", "type": "manual", "cooldwn": 1}])") ==
        "/triggers/0/cooldwn: unknown key (did you mean \"cooldown\"?)");
  CHECK(config_error(s + R"(, "triggers": [{"name": "a", "type": "manual"},
        {"name": "a", "type": "manual"}])") == "/triggers/1/name: duplicate trigger name \"a\"");
  CHECK(config_error(s + R"(, "triggers": [{"name": "a", "type": "delta", "stream": "imu",
        "channel": "speed", "change": 1, "window": 60}])") ==
        "/triggers/0/window: must be <= ring_seconds of stream \"imu\" (10), got 60");
  CHECK(config_error(s + R"(, "triggers": [{"name": "a", "type": "manual",
        "capture": {"streams": ["lidar"]}}])") ==
        "/triggers/0/capture/streams/0: unknown stream \"lidar\"");
  CHECK(config_error(s + R"(, "triggers": [{"name": "a", "type": "all", "of": [
        {"type": "threshold", "stream": "imu", "channel": "speed", "above": 1, "cooldown": 1}]}])") ==
        "/triggers/0/of/0/cooldown: unknown key");
  CHECK(config_error(s + R"(, "triggers": [{"name": "a", "type": "not", "of": [
        {"type": "manual"}, {"type": "manual"}]}])") ==
        "/triggers/0/of: \"not\" takes exactly one condition, got 2");
  CHECK(config_error(R"("streams": [{"name": "imu"}])") ==
        "/streams/0/channels: is required for a numeric stream (channel names in push order)");
  CHECK(config_error(R"("streams": [{"name": "imu", "channels": ["a", "a"]}])") ==
        "/streams/0/channels/1: duplicate channel \"a\"");
  CHECK(config_error(R"("streams": [{"name": "imu", "channels": ["a"], "ring_bytes": "1KB",
        "ring_seconds": 0}])") == "/streams/0/ring_seconds: must be > 0 s, got 0");
}

TEST_CASE("config: a custom trigger parses but Capture needs its implementation",
          "[trigger][config]") {
  auto c = parse_config(std::string(R"({"device_id": "d1", )") + kStreams +
                        R"(, "triggers": [{"name": "lane", "type": "custom", "stream": "imu"}]})");
  REQUIRE(c.ok());
  test::RecordingSink sink;
  MetricsRegistry reg;
  auto cap = Capture::create(*c, sink, Port{}, reg);
  REQUIRE_FALSE(cap.ok());
  CHECK(cap.error().json_pointer == "/triggers/0");
  CHECK(cap.error().message.find("no implementation") != std::string::npos);
  struct Never final : CustomTrigger {
    bool evaluate(double, std::uint32_t, const double*, std::size_t, std::size_t) noexcept override {
      return false;
    }
  };
  c->triggers[0].custom = std::make_shared<Never>();
  CHECK(Capture::create(*c, sink, Port{}, reg).ok());
}

TEST_CASE("config: C++-built configs get the same validation", "[trigger][config]") {
  test::RecordingSink sink;
  MetricsRegistry reg;
  auto cap = Capture::create("d", {numeric_stream("s", {"x"})},
                             {threshold_trigger("t", "s", "y", ThresholdOp::above, 1)}, sink,
                             Port{}, reg);
  REQUIRE_FALSE(cap.ok());
  CHECK(cap.error().is(errc::invalid_config));
  CHECK(cap.error().message == "/triggers/0/channel: stream \"s\" has no channel \"y\"");
  auto bad_prio = threshold_trigger("t", "s", "x", ThresholdOp::above, 1);
  bad_prio.priority = 9;
  cap = Capture::create("d", {numeric_stream("s", {"x"})}, {bad_prio}, sink, Port{}, reg);
  REQUIRE_FALSE(cap.ok());
  CHECK(cap.error().json_pointer == "/triggers/0/priority");
}
