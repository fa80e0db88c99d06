// The campaign agent inside the Pipeline (no network): the config section, resuming the
// persisted campaign at boot, the trigger switch at a clean point and event attribution.
#include "fleetpipe/pipeline.hpp"

#include <catch2/catch.hpp>

#include <nlohmann/json.hpp>

#include "support/campaign_docs.hpp"
#include "support/test_paths.hpp"

using namespace fleetpipe;
using namespace std::chrono_literals;
using nlohmann::json;

namespace {

struct Env {
  FakeClock clock{std::chrono::system_clock::now()};
  FakeFilesystemStats fs;
  StderrLogSink log{LogLevel::error};
  Port port;
  Env() {
    port.clock = &clock;
    port.filesystem = &fs;
    port.log = &log;
  }
};

// The device of test::campaign_device() as a pipeline config, uploads off.
Config device_config(const std::string& dir) {
  auto d = test::campaign_device();
  Config c;
  c.device_id = d.device_id;
  c.labels = d.labels;
  c.streams = d.streams;
  c.triggers = d.local_triggers;
  c.buffer.path = dir;
  c.buffer.durability = Durability::none;
  c.uploader.enabled = false;
  c.campaigns.enabled = true;
  c.campaigns.trusted_keys = {test::test_key(0).trusted};
  return c;
}

std::vector<std::string> trigger_names(Pipeline& p) {
  std::vector<std::string> out;
  for (const auto& t : p.capture().triggers()) out.push_back(t.name);
  return out;
}

// Every buffered record's metadata.
std::vector<LeasedRecord> buffered(Pipeline& p) {
  auto lease = p.buffer().lease(1ull << 30);
  REQUIRE(lease.ok());
  return lease->records();
}

// What a previous run accepted: the agent's record of campaign "fleet" in the state table.
void persist(Env& env, const std::string& dir, const std::string& envelope) {
  Config c = device_config(dir);
  MetricsRegistry m;
  auto b = Buffer::open(c.buffer, env.port, m);
  REQUIRE(b.ok());
  json rec = {{"etag", "\"e1\""}, {"envelope", envelope}};
  REQUIRE((*b)->put_state("campaign/fleet", rec.dump()).ok());
}

}  // namespace

TEST_CASE("the config's campaigns section is parsed strictly with pointers", "[campaign][pipeline]") {
  const std::string base = R"({"device_id": "d1", "campaigns": )";
  auto ok = parse_config(base + R"({"enabled": true, "poll_interval": "5m",
      "trusted_keys": [{"id": "k", "ed25519": ")" + test::test_key(0).pair.public_key + R"("}]}})");
  REQUIRE(ok.ok());
  CHECK(ok->campaigns.enabled);
  CHECK(ok->campaigns.poll_interval_s == 300);
  CHECK(ok->campaigns.follow == std::vector<std::string>{"fleet"});
  auto bad = parse_config(base + R"({"enabled": true, "trusted_keys": [], "typo": 1}})");
  REQUIRE_FALSE(bad.ok());
  CHECK(bad.error().json_pointer.rfind("/campaigns", 0) == 0);
  auto nokeys = parse_config(base + R"({"enabled": true}})");
  REQUIRE_FALSE(nokeys.ok());
  CHECK(nokeys.error().json_pointer == "/campaigns/trusted_keys");
  auto absent = parse_config(R"({"device_id": "d1"})");
  REQUIRE(absent.ok());
  CHECK_FALSE(absent->campaigns.enabled);
}

TEST_CASE("a persisted campaign is in force from boot, offline, and its events carry its id",
          "[campaign][pipeline]") {
  Env env;
  const std::string dir = test::scratch_dir("campaign-pipeline-resume").string();
  const WallTime now = env.clock.wall();
  persist(env, dir, test::signed_envelope(test::campaign_doc("fleet", 2, now)));
  auto created = Pipeline::create(device_config(dir), env.port);
  REQUIRE(created.ok());
  Pipeline& p = **created;
  CHECK(trigger_names(p) == std::vector<std::string>{"hard_brake", "fast_2"});
  CHECK(p.metrics().value("fleetpipe_campaign_version", {}) == 2);
  auto hb = json::parse(p.heartbeat_json());
  REQUIRE(hb.contains("campaigns"));
  CHECK(hb["campaigns"][0]["id"] == "fleet");
  CHECK(hb["campaigns"][0]["version"] == 2);
  CHECK(hb["campaigns"][0]["state"] == "active");

  auto imu = p.stream("imu");
  for (int i = 0; i < 40; ++i) {
    p.push(imu, i * 0.1, {0.0, i == 10 ? 5.0 : 0.0});  // speed 5 > 3 fires fast_2 once
    env.clock.advance(100ms);
    p.poll();
  }
  p.capture().flush();
  for (int i = 0; i < 10; ++i) p.poll();
  auto recs = buffered(p);
  REQUIRE(recs.size() == 1);
  CHECK(recs[0].meta.trigger_ids == std::vector<std::string>{"fast_2"});
  CHECK(recs[0].meta.metadata.at("campaign_id") == "fleet");
  CHECK(recs[0].meta.metadata.at("campaign_version") == "2");
}

TEST_CASE("a persisted campaign past its expiry leaves the local triggers in force",
          "[campaign][pipeline]") {
  Env env;
  const std::string dir = test::scratch_dir("campaign-pipeline-expired").string();
  const WallTime now = env.clock.wall();
  persist(env, dir, test::signed_envelope(test::campaign_doc("fleet", 3, now - 48h)));
  auto created = Pipeline::create(device_config(dir), env.port);
  REQUIRE(created.ok());
  CHECK(trigger_names(**created) == std::vector<std::string>{"hard_brake"});
  auto hb = json::parse((*created)->heartbeat_json());
  CHECK(hb["campaigns"][0]["state"] == "expired");
}

TEST_CASE("Capture::set_triggers waits for open events and keeps the pre-trigger rings",
          "[campaign][capture]") {
  Env env;
  Config c = device_config(test::scratch_dir("campaign-capture-switch").string());
  c.campaigns.enabled = false;
  c.triggers[0].capture.pre_s = 2;
  c.triggers[0].capture.post_s = 1;
  auto created = Pipeline::create(c, env.port);
  REQUIRE(created.ok());
  Pipeline& p = **created;
  Capture& cap = p.capture();
  auto imu = p.stream("imu");
  double t = 0;
  for (; t < 3; t += 0.1) p.push(imu, t, {0.0, 0.0});
  p.push(imu, t, {-5.0, 0.0});  // hard_brake opens an event
  REQUIRE(cap.has_open_events());
  auto fast = threshold_trigger("fast", "imu", "speed", ThresholdOp::above, 3);
  fast.capture.pre_s = 2;
  fast.capture.post_s = 0.5;
  auto refused = cap.set_triggers({fast}, {{"campaign_id", "x"}});
  REQUIRE_FALSE(refused.ok());
  CHECK(refused.error().is(errc::would_block));
  CHECK(cap.triggers().size() == 1);
  for (t += 0.1; t < 6; t += 0.1) p.push(imu, t, {0.0, 0.0});  // the event closes ...
  // ... into the hand-off, where it still counts: it is encoded with its own campaign's metadata.
  CHECK(cap.has_open_events());
  CHECK_FALSE(cap.set_triggers({fast}, {{"campaign_id", "x"}}).ok());
  p.poll();  // delivers it
  REQUIRE_FALSE(cap.has_open_events());
  auto bad = cap.set_triggers({threshold_trigger("g", "gps", "x", ThresholdOp::above, 1)}, {});
  CHECK_FALSE(bad.ok());
  CHECK(cap.triggers().size() == 1);  // a refused set changes nothing
  REQUIRE(cap.set_triggers({fast}, {{"campaign_id", "x"}}).ok());
  CHECK(cap.triggers()[0].name == "fast");
  for (; t < 9; t += 0.1) p.push(imu, t, {0.0, 0.0});
  p.push(imu, t, {0.0, 5.0});  // fast fires; its event has the 2 s of history before it
  for (t += 0.1; t < 11; t += 0.1) p.push(imu, t, {0.0, 0.0});
  cap.flush();
  for (int i = 0; i < 10; ++i) p.poll();
  auto recs = buffered(p);
  REQUIRE(recs.size() == 2);
  CHECK(recs[0].meta.metadata.count("campaign_id") == 0);
  CHECK(recs[1].meta.trigger_ids == std::vector<std::string>{"fast"});
  CHECK(recs[1].meta.metadata.at("campaign_id") == "x");
  CHECK(recs[1].meta.end_ns - recs[1].meta.start_ns >= 2'000'000'000);
}
