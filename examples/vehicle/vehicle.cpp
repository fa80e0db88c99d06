// vehicle: keep every hard brake with the 5 s before and 3 s after it, plus a small baseline
// sample every minute. Five minutes of driving at 100 Hz, simulated on a FakeClock (fast).
//
// hard_brake = all(moving: speed > 10 m/s, braking: accel_x < -4 m/s²) within 0.5 s.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <random>

#include <fleetpipe/fleetpipe.hpp>

#include "../common/example_args.hpp"

using namespace fleetpipe;

int main(int argc, char** argv) {
  using namespace std::chrono;
  example::Args args(argc, argv);
  Config config;
  config.device_id = "truck-7";
  config.buffer.path = args.get("--db", "vehicle-db");
  StreamConfig motion;
  motion.name = "motion";
  motion.channels = {"speed_mps", "accel_x"};
  config.streams.push_back(motion);

  // Two conditions that never fire on their own, and the composite that does.
  auto moving = threshold_trigger("moving", "motion", "speed_mps", ThresholdOp::above, 10);
  auto braking = threshold_trigger("braking", "motion", "accel_x", ThresholdOp::below, -4);
  moving.fires = braking.fires = false;
  braking.hysteresis = 1;  // must recover above -3 m/s² before it can trigger again
  auto hard_brake = composite_trigger("hard_brake", TriggerType::all,
                                      {trigger_ref("moving"), trigger_ref("braking")}, 0.5);
  hard_brake.priority = 6;  // uploaded first, evicted last
  hard_brake.cooldown_s = 10;
  hard_brake.capture.streams = {"motion"};
  hard_brake.capture.pre_s = 5;
  hard_brake.capture.post_s = 3;
  auto baseline = periodic_trigger("baseline", 60);  // what normal driving looks like
  baseline.priority = 1;
  baseline.stream = "motion";
  baseline.capture.pre_s = 2;
  baseline.capture.post_s = 1;
  config.triggers = {moving, braking, hard_brake, baseline};
  config.uploader.enabled = example::apply_s3(args, config.uploader, "fleetpipe-examples");

  FakeClock clock(system_clock::now());  // simulated time; wall time stays real for signing
  Port port;
  port.clock = &clock;
  auto created = Pipeline::create(config, port);
  if (!created) return std::fprintf(stderr, "%s\n", created.error().message.c_str()), 1;
  Pipeline& p = **created;
  auto h = p.stream("motion");

  std::mt19937 rng(7);
  std::normal_distribution<double> noise(0.0, 0.3);
  double speed = 0;
  for (int i = 0; i < 300 * 100; ++i) {  // 300 s at 100 Hz
    double t = i * 0.01;
    double phase = std::fmod(t, 100.0);  // every 100 s: speed up, cruise, brake hard at 70 s
    double accel = phase < 15 ? 1.5 : (phase >= 70 && phase < 72.5) ? -6.5 : 0.0;
    if (speed <= 0 && accel < 0) accel = 0;
    speed = std::max(0.0, speed + accel * 0.01);
    p.push(h, t, {speed, accel + noise(rng)});
    clock.advance(milliseconds(10));
    if (i % 10 == 0) p.poll(microseconds(500));  // the host polls at 10 Hz here
  }

  auto drained = p.has_uploader() ? p.drain(seconds(60)) : Result<void>();
  for (const auto& t : p.status().triggers) {
    std::printf("%-11s fires %3llu  events %3llu  bytes %8llu\n", t.name.c_str(),
                (unsigned long long)t.stats.fires, (unsigned long long)t.stats.events,
                (unsigned long long)t.stats.bytes);
  }
  auto s = p.status();
  std::printf("objects uploaded %llu, buffered %llu: %s\n",
              (unsigned long long)s.uploader.objects_uploaded, (unsigned long long)s.buffer.records,
              drained ? "ok" : drained.error().message.c_str());
  return drained && s.capture.events > 0 ? 0 : 1;
}
