// smart_cart: a shopping cart with a load cell, indoor positioning and a basket camera.
//   - weight_change: the basket weight moved by >= 80 g within 1 s -> weight, location and the
//     camera frames from 2 s before to 2 s after.
//   - scan_mismatch: the host's own check (scanned item vs. weight added) fires a manual
//     trigger, priority 7 -> everything from 5 s before to 3 s after.
//   - uploads pause during store hours (08:00-22:00 local) unless the store network is idle.
// Four simulated minutes around closing time (21:58-22:02) on a FakeClock.
#include <chrono>
#include <cstdio>
#include <random>
#include <string>

#include <fleetpipe/fleetpipe.hpp>

#include "../common/example_args.hpp"

using namespace fleetpipe;

static StreamConfig stream(std::string name, std::vector<std::string> channels) {
  StreamConfig s;
  s.name = std::move(name);
  s.channels = std::move(channels);
  if (s.channels.empty()) {  // a blob stream: JPEG frames, 3 s of them in the ring
    s.kind = StreamKind::blob;
    s.content_type = "image/jpeg";
    s.ring_seconds = 3;
    s.ring_bytes = 4 << 20;
  }
  return s;
}

int main(int argc, char** argv) {
  using namespace std::chrono;
  example::Args args(argc, argv);
  Config config;
  config.device_id = "cart-0042";
  config.buffer.path = args.get("--db", "smart_cart-db");
  config.streams = {stream("weight", {"grams"}), stream("location", {"x_m", "y_m"}),
                    stream("camera", {})};
  auto weight_change = delta_trigger("weight_change", "weight", "grams", 80, 1.0);
  weight_change.capture.streams = {"weight", "location", "camera"};
  weight_change.capture.pre_s = weight_change.capture.post_s = 2;
  weight_change.priority = 4;
  auto mismatch = manual_trigger("scan_mismatch");  // no stream: captures every stream
  mismatch.capture.pre_s = 5;
  mismatch.capture.post_s = 3;
  mismatch.priority = 7;
  config.triggers = {weight_change, mismatch};
  config.uploader.enabled = example::apply_s3(args, config.uploader, "fleetpipe-examples");

  FakeClock clock(system_clock::now());  // wall time stays real (requests are signed with it)
  Port port;
  port.clock = &clock;
  auto created = Pipeline::create(config, port);
  if (!created) return std::fprintf(stderr, "%s\n", created.error().message.c_str()), 1;
  Pipeline& p = **created;
  auto weight = p.stream("weight"), location = p.stream("location"), camera = p.stream("camera");

  std::mt19937 rng(42);
  std::normal_distribution<double> noise(0.0, 3.0);
  std::string frame(15000, '\0');  // a stand-in for a 15 KB JPEG
  double basket = 0, local_s = 21 * 3600 + 58 * 60;  // local time of day: 21:58:00
  bool paused = false;
  for (int i = 0; i < 240 * 10; ++i, local_s += 0.1) {  // 240 s, 10 Hz
    double t = i * 0.1;
    if (i % 150 == 75) {  // every 15 s the shopper puts an item in and scans it
      double item = 100 + rng() % 900, scanned = (rng() % 4 == 0) ? item * 0.5 : item;
      basket += item;
      if (std::abs(scanned - item) > 0.2 * item) (void)p.fire("scan_mismatch", t);  // host logic
    }
    p.push(weight, t, {basket + noise(rng)});
    if (i % 10 == 0) p.push(location, t, {0.01 * i, 3.0});
    if (i % 2 == 0) {
      frame[0] = static_cast<char>(i);
      p.push_blob(camera, t, frame);
    }
    // Store hours: keep the customers' Wi-Fi free unless nobody is using it right now.
    bool store_open = local_s >= 8 * 3600 && local_s < 22 * 3600;
    bool network_idle = (i / 100) % 3 == 0;  // stand-in for the AP's client count
    bool pause = store_open && !network_idle;
    if (pause != paused) pause ? p.pause_uploads() : p.resume_uploads();
    paused = pause;
    clock.advance(milliseconds(100));
    p.poll(microseconds(500));
  }

  auto drained = p.has_uploader() ? p.drain(seconds(120)) : Result<void>();
  auto s = p.status();
  for (const auto& t : s.triggers) {
    std::printf("%-14s fires %3llu  events %3llu  bytes %9llu\n", t.name.c_str(),
                (unsigned long long)t.stats.fires, (unsigned long long)t.stats.events,
                (unsigned long long)t.stats.bytes);
  }
  std::printf("upload pauses %.0f, objects uploaded %llu, bytes sent %llu, buffered %llu: %s\n",
              p.metrics().sum("fleetpipe_uploader_pauses_total"),
              (unsigned long long)s.uploader.objects_uploaded,
              (unsigned long long)s.uploader.bytes_sent, (unsigned long long)s.buffer.records,
              drained ? "ok" : drained.error().message.c_str());
  return drained && s.capture.events > 0 ? 0 : 1;
}
