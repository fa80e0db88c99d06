// fleet_sim: N simulated devices in one process, each a complete fleetpipe Pipeline with its own
// LMDB directory, device id, clock and bandwidth cap, uploading to one bucket.
//
// Every device has an IMU (accel_x, accel_y, temp_c at 20 Hz, noisy) and a camera (6 KB frames
// at 1 Hz). Rare events: shocks (accel_x spikes), overheating (temp ramps past 70 °C), plus a
// periodic baseline. Some devices lose their network for 2 minutes (uploads pause) and some have
// a tiny buffer quota (old low-priority data gets evicted). Sample time is simulated and runs
// `--speed` times faster than real time; the pipelines use the real clock, so bandwidth caps,
// object ages and heartbeat intervals are in real seconds. Ends with a table per device.
//
//   fleet_sim --devices 20 --sim-minutes 10 --db-root /tmp/fleet [--speed 12] [S3 flags, see
//   ../common/example_args.hpp] [--campaign-key BASE64 [--campaign-poll SECONDS]]
//   [--imu-hz 20] [--frame-every 1] [--heartbeat 20] [--object-age 5] [--steady-mix 1]
// The last four trade detail for scale (scripts/bench fleet runs 1,000 devices in one process
// with 5 Hz IMUs, a frame every 4 s, heartbeats every 300 s and objects of up to 30 s); the
// events keep their shape: the same triggers, windows and rates per simulated second.
// --steady-mix 1 makes every device's part depend on its index mod 10 (quota, cap, outage) and
// schedules its shocks and fan failure instead of drawing them, so any multiple of 10 devices
// has the same mix of devices and events: bytes per event compare across fleet sizes.
// With --campaign-key every device follows campaign "fleet" (labels site=store-01,
// model=cart-v3 or cart-v2 on alternate devices), polled every --campaign-poll s (10).
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <fleetpipe/fleetpipe.hpp>

#include "../common/example_args.hpp"

using namespace fleetpipe;
using namespace std::chrono;

struct Device {
  std::unique_ptr<Pipeline> p;
  StreamHandle imu, camera;
  std::mt19937 rng;
  double cap = 0;                 // bytes per second
  double temp = 40, temp_target = 40;
  double shock_until = -1, outage_start = 0, outage_end = 0;
  int slot = -1;  // --steady-mix: the device's index mod 10 (its scheduled events), else -1
};

static Config device_config(int index, const example::Args& args, const std::string& db_root) {
  const int i = (args.number("--steady-mix", 0) > 0) ? index % 10 : index;  // the device's part
  char id[32];
  std::snprintf(id, sizeof id, "sim-%03d", index);
  Config c;
  c.device_id = id;
  c.buffer.path = db_root + "/" + id;
  c.buffer.durability = Durability::interval;  // fsync at most once a second
  c.buffer.max_bytes = (i % 8 == 1) ? 40 << 10 : 8 << 20;  // a few devices with a tiny quota
  c.buffer.min_free_bytes = 16 << 20;

  StreamConfig imu;
  imu.name = "imu";
  imu.channels = {"accel_x", "accel_y", "temp_c"};
  StreamConfig camera;
  camera.name = "camera";
  camera.kind = StreamKind::blob;
  camera.content_type = "image/jpeg";
  camera.ring_seconds = 5;
  camera.ring_bytes = 256 << 10;
  c.streams = {imu, camera};

  auto shock = threshold_trigger("shock", "imu", "accel_x", ThresholdOp::above, 2.5);
  shock.hysteresis = 0.5;
  shock.cooldown_s = 5;
  shock.priority = 5;
  shock.capture.streams = {"imu", "camera"};
  shock.capture.pre_s = 3;
  shock.capture.post_s = 2;
  auto overheat = threshold_trigger("overheat", "imu", "temp_c", ThresholdOp::above, 70);
  overheat.hysteresis = 5;
  overheat.priority = 6;
  overheat.capture.pre_s = 10;
  overheat.capture.post_s = 5;
  auto baseline = periodic_trigger("baseline", 120);
  baseline.stream = "imu";
  baseline.priority = 1;
  baseline.capture.pre_s = 2;
  baseline.capture.post_s = 1;
  c.triggers = {shock, overheat, baseline};

  c.uploader.enabled = example::apply_s3(args, c.uploader, "fleetpipe-demo");
  c.uploader.prefix = args.get("--prefix", c.uploader.prefix);  // default "fleetpipe"
  c.uploader.bytes_per_second = 4096.0 * (1 << (i % 4));  // 4, 8, 16, 32 KB/s
  c.uploader.target_object_bytes = 256 << 10;
  c.uploader.max_object_age_s = args.number("--object-age", 5);
  c.pipeline.heartbeat_interval_s = args.number("--heartbeat", 20);
  // Labels for campaign targeting and queries: half the fleet is the newer cart model.
  c.labels = {{"site", "store-01"}, {"model", i % 2 == 0 ? "cart-v3" : "cart-v2"}};
  // --campaign-key BASE64: follow campaign "fleet", trusting that Ed25519 key (docs/campaigns.md).
  if (std::string key = args.get("--campaign-key"); !key.empty()) {
    c.campaigns.enabled = true;
    c.campaigns.trusted_keys = {{"demo", key}};
    c.campaigns.poll_interval_s = args.number("--campaign-poll", 10);
  }
  return c;
}

// One step (one IMU sample, `step` s) of one device's sensors.
static void simulate(Device& d, double t, double step, double frame_every, std::string& frame) {
  std::normal_distribution<double> noise(0.0, 0.3);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  const double shock_at = 60.0 * (d.slot * 7 % 10) + 15;  // --steady-mix: every 600 s from here
  if (d.slot < 0 ? u(d.rng) < step / 600  // a shock per 10 minutes
                 : t >= shock_at && std::fmod(t - shock_at, 600.0) < step)
    d.shock_until = t + std::max(0.3, step);
  if (d.slot < 0 ? u(d.rng) < step / 900 : d.slot == 5 && std::fabs(t - 30) < step / 2)
    d.temp_target = 78;  // rarely: a fan fails ...
  if (d.temp > 75) d.temp_target = 40;                  // ... and recovers
  d.temp += (d.temp_target - d.temp) * 0.2 * step;
  double ax = (t < d.shock_until ? 4.0 : 0.0) + noise(d.rng);
  d.p->push(d.imu, t, {ax, noise(d.rng), d.temp + noise(d.rng)});
  if (std::fmod(t + 1e-9, frame_every) < step) {  // a camera frame every `frame_every` s
    for (auto& ch : frame) ch = static_cast<char>(d.rng());
    d.p->push_blob(d.camera, t, frame);
  }
  bool offline = t >= d.outage_start && t < d.outage_end;
  d.p->set_network_state(offline ? NetworkState::offline : NetworkState::online);
}

static double total(std::vector<Device>& fleet, double (*f)(Device&)) {
  double s = 0;
  for (auto& d : fleet) s += f(d);
  return s;
}

int main(int argc, char** argv) {
  example::Args args(argc, argv);
  const int n = static_cast<int>(args.number("--devices", 20));
  const double sim_s = args.number("--sim-minutes", 10) * 60;
  const double speed = args.number("--speed", 12);  // simulated seconds per real second (cap)
  const std::string db_root = args.get("--db-root", "fleet_sim-db");
  std::filesystem::create_directories(db_root);
  StderrLogSink log(LogLevel::error);

  std::vector<Device> fleet(n);
  for (int i = 0; i < n; ++i) {
    Device& d = fleet[i];
    d.rng.seed(1000 + i);
    Port port;  // real clock, statvfs; the network cell is each pipeline's own
    port.log = &log;
    Config c = device_config(i, args, db_root);
    d.cap = c.uploader.bytes_per_second;
    const int part = (args.number("--steady-mix", 0) > 0) ? i % 10 : i;
    if ((args.number("--steady-mix", 0) > 0)) d.slot = part;
    if (part % 4 == 1) {  // a quarter of the fleet loses its network for two simulated minutes
      d.outage_start = sim_s * (0.2 + 0.1 * (part % 5));
      d.outage_end = d.outage_start + 120;
    }
    if (!c.uploader.enabled) return std::fprintf(stderr, "fleet_sim needs an S3 server\n"), 2;
    auto p = Pipeline::create(c, port);
    if (!p) return std::fprintf(stderr, "%s: %s\n", c.device_id.c_str(), p.error().message.c_str()), 1;
    d.p = std::move(*p);
    d.imu = d.p->stream("imu");
    d.camera = d.p->stream("camera");
  }
  std::printf("fleet_sim: %d devices, %.0f simulated minutes, up to %.0fx real time\n", n,
              sim_s / 60, speed);

  std::string frame(6000, '\0');
  const auto real_start = steady_clock::now();
  const double step = 1.0 / std::max(1.0, args.number("--imu-hz", 20));
  const double frame_every = std::max(step, args.number("--frame-every", 1));
  for (int k = 0; k * step < sim_s; ++k) {
    double t = k * step;
    for (auto& d : fleet) {
      simulate(d, t, step, frame_every, frame);
      d.p->poll(microseconds(200));
    }
    // Pace: never run more than `speed` times faster than real time; spend the slack polling.
    while (duration<double>(steady_clock::now() - real_start).count() * speed < t) {
      for (auto& d : fleet) d.p->poll(microseconds(200));
      std::this_thread::sleep_for(microseconds(500));
    }
    if (k > 0 && std::fmod(t, 60.0) < step / 2) {  // progress, once per simulated minute
      std::printf("  [sim %2.0f:00 | real %5.1fs] events %4.0f  uploaded %8.0f KB  buffered %7.0f KB\n",
                  t / 60, duration<double>(steady_clock::now() - real_start).count(),
                  total(fleet, [](Device& d) { return double(d.p->status().capture.events); }),
                  total(fleet, [](Device& d) { return d.p->status().uploader.bytes_sent / 1024.0; }),
                  total(fleet, [](Device& d) { return d.p->status().buffer.bytes / 1024.0; }));
      std::fflush(stdout);
    }
  }
  const double sim_real_s = duration<double>(steady_clock::now() - real_start).count();

  // Tail: the sensors stop; every device uploads what is left (caps still hold) for up to 60 s,
  // then each one drains and sends its final heartbeat.
  std::printf("  sensors stopped; uploading what is left ...\n");
  std::fflush(stdout);
  for (auto& d : fleet) d.p->set_network_state(NetworkState::online), d.p->flush_uploads();
  while (duration<double>(steady_clock::now() - real_start).count() < sim_real_s + 60) {
    bool busy = false;
    for (auto& d : fleet) busy = d.p->poll(microseconds(500)) || busy;
    if (!busy) break;
    std::this_thread::sleep_for(microseconds(500));
  }
  // Drain 16 devices at a time (each pipeline on one thread at a time): a drain waits for its
  // final heartbeat, and 1,000 of them one after the other would keep the last devices running
  // (and beating) for minutes longer than the first.
  std::atomic<int> failed{0}, next{0};
  std::vector<std::thread> drainers;
  for (int w = 0; w < std::min(16, n); ++w) {
    drainers.emplace_back([&] {
      for (int k; (k = next++) < n;) {
        Device& d = fleet[static_cast<std::size_t>(k)];
        auto r = d.p->drain(seconds(20));
        if (!r) ++failed, std::fprintf(stderr, "%s: %s\n", d.p->config().device_id.c_str(), r.error().message.c_str());
      }
    });
  }
  for (auto& t : drainers) t.join();
  const double real_s = duration<double>(steady_clock::now() - real_start).count();

  // ---- the table ------------------------------------------------------------------------------
  std::printf("\n%-8s %7s %6s %6s %6s %6s %9s %7s %7s %7s %6s %6s\n", "device", "cap KB/s", "shock",
              "heat", "base", "events", "uploaded", "objects", "evicted", "reject", "pauses", "left");
  double ev[3] = {0, 0, 0}, bytes = 0, objects = 0, evicted = 0, pauses = 0, left = 0;
  for (auto& d : fleet) {
    auto s = d.p->status();
    double dp = d.p->metrics().sum("fleetpipe_uploader_pauses_total");
    std::printf("%-8s %8.0f %6llu %6llu %6llu %6llu %8.0fK %7llu %7llu %7llu %6.0f %6llu\n",
                s.device_id.c_str(), d.cap / 1024, (unsigned long long)s.triggers[0].stats.fires,
                (unsigned long long)s.triggers[1].stats.fires,
                (unsigned long long)s.triggers[2].stats.fires, (unsigned long long)s.capture.events,
                s.uploader.bytes_sent / 1024.0, (unsigned long long)s.uploader.objects_uploaded,
                (unsigned long long)s.buffer.evicted_total, (unsigned long long)s.buffer.rejected_total,
                dp, (unsigned long long)s.buffer.records);
    for (int i = 0; i < 3; ++i) ev[i] += double(s.triggers[i].stats.events);
    bytes += double(s.uploader.bytes_sent);
    objects += double(s.uploader.objects_uploaded);
    evicted += double(s.buffer.evicted_total);
    pauses += dp;
    left += double(s.buffer.records);
  }
  std::printf("\nevents per trigger: shock %.0f, overheat %.0f, baseline %.0f\n", ev[0], ev[1], ev[2]);
  std::printf("uploaded %.1f MB in %.0f objects; evictions %.0f; pauses %.0f; left in buffers %.0f\n",
              bytes / 1e6, objects, evicted, pauses, left);
  std::printf("throughput %.1f KB/s (fleet, real time); %.0f simulated minutes took %.1fs + %.1fs "
              "draining\n", bytes / 1024 / real_s, sim_s / 60, sim_real_s, real_s - sim_real_s);
  return failed.load() == 0 && ev[0] + ev[1] + ev[2] > 0 ? 0 : 1;
}
