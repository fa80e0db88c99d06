// Test helper: a small fleet of real Pipelines filling a bucket on the real S3 server — events
// with numeric channels and JPEG frames, heartbeats a minute apart (a FakeClock that starts at
// the real time, as the server checks request times), one device that goes silent early and
// one whose uploads are paused for a while.
#pragma once

#include <catch2/catch.hpp>

#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "fleetpipe/pipeline.hpp"
#include "support/s3_env.hpp"
#include "support/shell.hpp"
#include "support/test_paths.hpp"

namespace fleetpipe::test {

struct FilledFleet {
  std::string bucket, prefix;
  std::vector<std::string> devices;
  std::string silent_device;  ///< stopped after the second round
  WallTime end{};             ///< the fake wall clock after the last drain
  UploaderConfig reader_config;
};

inline UploaderConfig fleet_bucket_config(const std::string& bucket, const std::string& prefix) {
  UploaderConfig u = s3_uploader_config(load_s3_env(), bucket, prefix);
  u.max_attempts = 3;
  u.retry_base_delay_s = 0.05;
  return u;
}

/// `devices` pipelines ("{tag}-0".."{tag}-N") through `rounds` rounds of one simulated minute:
/// 5 s of 10 Hz samples (a "bump" spike on accel, a "brake" dip on speed on some rounds, a JPEG
/// `frame` every 0.5 s), then a heartbeat.
inline FilledFleet fill_fleet(const std::string& bucket, const std::string& tag,
                              const std::string& frame, int devices = 3, int rounds = 5) {
  using namespace std::chrono_literals;
  run("/usr/bin/python3 " FLEETPIPE_SOURCE_DIR "/tests/python/s3_bucket_tool.py make " + bucket);
  FilledFleet f;
  f.bucket = bucket;
  f.prefix = tag + "-" + std::to_string(std::chrono::system_clock::now().time_since_epoch().count() % 1000000007);
  f.reader_config = fleet_bucket_config(bucket, f.prefix);
  FakeClock clock{std::chrono::system_clock::now()};
  StderrLogSink log{LogLevel::warning};
  Port port;
  port.clock = &clock;
  port.log = &log;
  std::vector<std::unique_ptr<Pipeline>> ps;
  for (int d = 0; d < devices; ++d) {
    Config c;
    c.device_id = tag + "-" + std::to_string(d);
    c.buffer.path = scratch_dir("fleet-" + tag).string();
    c.buffer.durability = Durability::none;
    StreamConfig imu;
    imu.name = "imu";
    imu.channels = {"accel", "speed"};
    StreamConfig cam;
    cam.name = "camera";
    cam.kind = StreamKind::blob;
    cam.ring_seconds = 2;
    cam.ring_bytes = 1u << 20;
    cam.content_type = "image/jpeg";
    c.streams = {imu, cam};
    auto bump = threshold_trigger("bump", "imu", "accel", ThresholdOp::above, 5.0);
    bump.capture.pre_s = 0.5;
    bump.capture.post_s = 0.5;
    bump.capture.streams = {"imu", "camera"};
    auto brake = threshold_trigger("brake", "imu", "speed", ThresholdOp::below, -3.0);
    brake.capture.pre_s = 0.5;
    brake.capture.post_s = 0.5;
    c.triggers = {bump, brake};
    c.uploader = f.reader_config;
    c.pipeline.heartbeat_interval_s = 60;
    auto created = Pipeline::create(c, port);
    INFO((created ? std::string() : created.error().message));
    REQUIRE(created.ok());
    f.devices.push_back(c.device_id);
    ps.push_back(std::move(*created));
  }
  f.silent_device = f.devices.front();
  std::vector<bool> active(ps.size(), true);
  auto wait_heartbeat = [&](Pipeline& p, std::uint64_t before) {
    for (int i = 0; i < 2000 && p.status().heartbeats_sent == before; ++i) {
      p.poll(std::chrono::microseconds(2000));
      std::this_thread::sleep_for(5ms);
    }
    REQUIRE(p.status().heartbeats_sent > before);
  };
  for (std::size_t d = 0; d < ps.size(); ++d) wait_heartbeat(*ps[d], 0);  // heartbeat_on_start
  for (int r = 0; r < rounds; ++r) {
    const bool pause_round = r == 2 || r == 3;
    if (ps.size() > 2) {
      if (r == 2) ps[2]->pause_uploads();
      if (r == 4) ps[2]->resume_uploads();
    }
    for (int i = 0; i < 50; ++i) {
      const double t = std::chrono::duration<double>(clock.monotonic().time_since_epoch()).count();
      for (std::size_t d = 0; d < ps.size(); ++d) {
        if (!active[d]) continue;
        Pipeline& p = *ps[d];
        const bool bump_now = i == 10 && (r + static_cast<int>(d)) % 2 == 0;
        const bool brake_now = i == 30 && r % 3 == static_cast<int>(d) % 3;
        p.push(p.stream("imu"), t,
               {bump_now ? 9.0 : std::sin(i * 0.3 + static_cast<double>(d)),
                brake_now ? -6.0 : 10.0 + std::cos(i * 0.2)});
        if (i % 5 == 0) p.push_blob(p.stream("camera"), t, frame);
        p.poll(std::chrono::microseconds(500));
      }
      clock.advance(100ms);
    }
    clock.advance(55s);
    for (std::size_t d = 0; d < ps.size(); ++d) {
      if (!active[d]) continue;
      if (d == 2 && pause_round) {
        ps[d]->poll(std::chrono::microseconds(500));
        continue;  // a paused link sends no heartbeat
      }
      wait_heartbeat(*ps[d], ps[d]->status().heartbeats_sent);
    }
    if (r == 1) {  // device 0 stops here: silent from now on
      auto drained = ps[0]->drain(60s);
      REQUIRE(drained.ok());
      active[0] = false;
    }
  }
  clock.advance(2s);  // the final heartbeats get their own second
  for (std::size_t d = 0; d < ps.size(); ++d) {
    if (!active[d]) continue;
    auto drained = ps[d]->drain(60s);
    INFO((drained ? std::string() : drained.error().message));
    REQUIRE(drained.ok());
  }
  f.end = clock.wall();
  return f;
}

/// A real JPEG frame, rendered by headless Chromium from a tiny page (no image fixture needed).
inline std::string chromium_jpeg(const std::string& dir, const std::string& text) {
  const std::string html = dir + "/frame.html", jpg = dir + "/frame.jpg";
  run("printf '%s' '<html><body style=\"margin:0;background:linear-gradient(90deg,#0369a1,#f97316)\">"
      "<h1 style=\"font:bold 30px sans-serif;color:#fff;margin:10px\">" + text +
      "</h1></body></html>' > " + html);
  run("chromium --headless --no-sandbox --disable-gpu --window-size=160,100 --screenshot=" + jpg +
      " file://" + html + " > /dev/null 2>&1");
  return slurp(jpg);
}

}  // namespace fleetpipe::test
