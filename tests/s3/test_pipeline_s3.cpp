#include "fleetpipe/pipeline.hpp"

#include <catch2/catch.hpp>

#include <cstdio>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "support/fake_port.hpp"
#include "support/pipeline_config.hpp"
#include "support/s3_env.hpp"
#include "support/shell.hpp"
#include "support/unique_name.hpp"

// End to end against the real server: push samples -> trigger -> capture -> buffer -> upload,
// then read the bucket back with boto3 (tests/python/s3_bucket_tool.py).

using namespace fleetpipe;
using namespace std::chrono_literals;

namespace {

const char* kBucket = "fleetpipe-pipeline-test";

// tests/python/s3_bucket_tool.py's output; a failing run fails the test (test::run throws).
std::string tool(const std::string& args) {
  return test::run("/usr/bin/python3 " FLEETPIPE_SOURCE_DIR "/tests/python/s3_bucket_tool.py " + args);
}

struct Listed {
  std::uint64_t size;
  std::string key;
};

std::vector<Listed> list(const std::string& prefix) {
  std::istringstream in(tool(std::string("list ") + kBucket + " " + prefix));
  std::vector<Listed> v;
  Listed l;
  while (in >> l.size >> l.key) v.push_back(l);
  return v;
}

std::string unique_prefix(const std::string& tag) { return test::unique_name("pl-" + tag); }

// A Port over a FakeClock that starts at the real time (the server checks request time).
struct Env : test::FakePort {
  Env() : FakePort(std::chrono::system_clock::now()) {}
};

Config s3_config(const std::string& prefix) {
  Config c = test::bump_pipeline_config("dev-s3", "pl-s3", {"accel", "speed"});
  c.uploader = test::s3_uploader_config(test::load_s3_env(), kBucket, prefix);
  c.pipeline.heartbeat_interval_s = 60;
  return c;
}

// 10 Hz for `seconds` of fake time, one bump at `bump_at`.
void feed(Pipeline& p, Env& env, double t0, double seconds, double bump_at) {
  auto imu = p.stream("imu");
  for (int i = 0; i < static_cast<int>(seconds * 10); ++i) {
    double t = t0 + i * 0.1;
    p.push(imu, t, {std::abs(t - bump_at) < 0.05 ? 9.0 : 0.0, 12.5});
    env.clock.advance(100ms);
    p.poll(500us);
  }
}

}  // namespace

TEST_CASE("pushed samples become an uploaded event object and a heartbeat with counters",
          "[pipeline][s3]") {
  tool(std::string("make ") + kBucket);
  Env env;
  std::string prefix = unique_prefix("e2e");
  auto created = Pipeline::create(s3_config(prefix), env.port);
  REQUIRE(created.ok());
  Pipeline& p = **created;
  feed(p, env, 100.0, 6, 102.0);
  auto drained = p.drain(60s);
  INFO((drained ? std::string("drained") : drained.error().message));
  REQUIRE(drained.ok());

  auto s = p.status();
  CHECK(s.capture.events == 1);
  CHECK(s.buffer.records == 0);
  CHECK(s.uploader.objects_uploaded >= 1);
  CHECK(s.heartbeats_sent >= 1);
  CHECK(s.heartbeats_failed == 0);

  // The event object: under stream=imu, device=dev-s3, and it is an FPEV payload.
  auto events = list(prefix + "/stream=imu/");
  REQUIRE(events.size() >= 1);
  bool data_found = false;
  for (auto& o : events) {
    CHECK(o.key.find("/device=dev-s3/") != std::string::npos);
    if (o.key.find("manifest") == std::string::npos && o.key.size() > 5 &&
        o.key.compare(o.key.size() - 5, 5, ".fpev") == 0) {
      std::string body = tool(std::string("get ") + kBucket + " " + o.key);
      CHECK(body.compare(0, 4, "FPEV") == 0);
      data_found = true;
    }
  }
  CHECK(data_found);

  // The heartbeat objects: the newest one (written after the drain) carries the final counters.
  auto beats = list(prefix + "/_heartbeat/device=dev-s3/");
  REQUIRE(beats.size() >= 1);
  CHECK(beats.back().key == s.last_heartbeat_key);
  auto hb = nlohmann::json::parse(tool(std::string("get ") + kBucket + " " + beats.back().key));
  CHECK(hb["device"] == "dev-s3");
  CHECK(hb["schema"] == "fleetpipe.heartbeat/2");
  CHECK(hb["fires"]["bump"] == 1);
  CHECK(hb["obj"].get<std::uint64_t>() >= 1);
  CHECK(hb["tx"].get<std::uint64_t>() > 0);
  CHECK(hb["state"] == "ok");
  CHECK(hb["backlog"][0] == 0);
  CHECK_FALSE(hb.contains("metrics"));  // opt-in (heartbeat_metrics_every)
}

TEST_CASE("offline network holds uploads in the buffer until the host reports online",
          "[pipeline][s3]") {
  tool(std::string("make ") + kBucket);
  Env env;
  std::string prefix = unique_prefix("offline");
  Config c = s3_config(prefix);
  c.pipeline.heartbeat_on_start = false;
  auto created = Pipeline::create(c, env.port);
  REQUIRE(created.ok());
  Pipeline& p = **created;
  p.set_network_state(NetworkState::offline);
  feed(p, env, 0.0, 5, 2.0);
  p.flush_uploads();
  p.run_for(200ms);
  CHECK(p.status().uploader.objects_uploaded == 0);
  CHECK(p.status().buffer.records == 1);
  auto held = p.drain(2s);
  REQUIRE_FALSE(held.ok());
  CHECK(held.error().is(errc::paused));
  CHECK(list(prefix + "/stream=imu/").empty());

  p.set_network_state(NetworkState::online);
  auto drained = p.drain(60s);
  INFO((drained ? std::string("drained") : drained.error().message));
  REQUIRE(drained.ok());
  CHECK(p.status().uploader.objects_uploaded >= 1);
  CHECK_FALSE(list(prefix + "/stream=imu/").empty());
}

TEST_CASE("the heartbeat goes out under the uploader's rate cap and still arrives", "[pipeline][s3]") {
  tool(std::string("make ") + kBucket);
  std::string prefix = unique_prefix("hbcap");
  Config c = s3_config(prefix);
  c.pipeline.heartbeat_on_start = false;
  c.pipeline.heartbeat_metrics_every = 1;  // the full export: a heartbeat big enough to shape
  auto created = Pipeline::create(c);  // the real clock: shaping needs time to pass
  REQUIRE(created.ok());
  Pipeline& p = **created;
  // A cap that makes the heartbeat object (~N bytes + headers) take about 2 s on the wire;
  // unshaped it takes a few ms.
  const double n = static_cast<double>(nlohmann::json::parse(p.heartbeat_json()).dump().size());  // as sent: compact
  REQUIRE(n > 2000);
  p.set_upload_rate(n / 2);
  p.run_for(50ms);  // the uploader picks the rate up (its bucket starts empty)
  const auto t0 = std::chrono::steady_clock::now();
  p.request_heartbeat();
  while (p.status().heartbeats_sent + p.status().heartbeats_failed == 0 &&
         std::chrono::steady_clock::now() - t0 < 30s) {
    p.run_for(10ms);
  }
  const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  auto s = p.status();
  REQUIRE(s.heartbeats_sent == 1);
  CHECK(s.heartbeats_failed == 0);
  INFO("heartbeat of " << n << " bytes at " << n / 2 << " B/s took " << took << " s");
  CHECK(took >= 1.5);  // at most a burst (max(4 KiB, rate/50)) could go out before the cap bites
  CHECK(list(prefix + "/_heartbeat/device=dev-s3/").size() == 1);
}

TEST_CASE("a large event under interval durability is staged, written over later polls and "
          "uploaded whole",
          "[pipeline][s3]") {
  tool(std::string("make ") + kBucket);
  Env env;
  std::string prefix = unique_prefix("staged");
  Config c = s3_config(prefix);
  c.buffer.durability = Durability::interval;
  StreamConfig cam;
  cam.name = "camera";
  cam.kind = StreamKind::blob;
  cam.ring_seconds = 2;
  cam.ring_bytes = 4ull << 20;
  cam.content_type = "image/jpeg";
  c.streams.push_back(cam);
  c.triggers[0].capture.streams = {"imu", "camera"};
  auto created = Pipeline::create(c, env.port);
  REQUIRE(created.ok());
  Pipeline& p = **created;
  auto imu = p.stream("imu");
  auto camera = p.stream("camera");
  std::mt19937_64 rng(21);
  std::string frame(100000, '\0');
  for (int i = 0; i < 40; ++i) {  // 4 s at 10 Hz: frames fill the 1 s pre window and 1 s post
    const double t = 100.0 + i * 0.1;
    for (auto& ch : frame) ch = static_cast<char>(rng());  // incompressible, like a JPEG
    p.push(imu, t, {std::abs(t - 101.5) < 0.05 ? 9.0 : 0.0, 12.5});
    p.push_blob(camera, t, frame);
    env.clock.advance(100ms);
    p.poll(500us);
  }
  auto drained = p.drain(60s);
  INFO((drained ? std::string("drained") : drained.error().message));
  REQUIRE(drained.ok());
  CHECK(p.metrics().value("fleetpipe_buffer_staged_total") == 1);
  CHECK(p.status().buffer.records == 0);
  CHECK(p.status().buffer.staged == 0);
  CHECK(p.status().capture.events == 1);

  // The object holds the whole event: ~20 frames of 100 kB in the FPEV payload.
  std::uint64_t biggest = 0;
  std::string key;
  for (auto& o : list(prefix + "/stream=")) {
    if (o.key.size() > 5 && o.key.compare(o.key.size() - 5, 5, ".fpev") == 0 && o.size > biggest) {
      biggest = o.size;
      key = o.key;
    }
  }
  INFO(key);
  CHECK(biggest >= 1900000);
  CHECK(biggest == p.status().capture.event_bytes);
  CHECK(tool(std::string("get ") + kBucket + " " + key).compare(0, 4, "FPEV") == 0);
}
