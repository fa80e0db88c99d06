#include "fleetpipe/pipeline.hpp"

#include <catch2/catch.hpp>

#include <chrono>
#include <random>
#include <set>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "cloud/heartbeat_keys.hpp"
#include "fleetpipe/query.hpp"
#include "s3/bucket_layout.hpp"
#include "support/s3_env.hpp"
#include "support/s3_put.hpp"
#include "support/shell.hpp"
#include "support/test_paths.hpp"

// Heartbeats against the real server: compact documents, one object per heartbeat even with a
// frozen clock, the metrics export only when asked, and what `status` costs per device.

using namespace fleetpipe;
using namespace std::chrono_literals;
using json = nlohmann::json;

namespace {

const char* kBucket = "fleetpipe-heartbeat-test";

std::string tool(const std::string& args) {
  return test::run("/usr/bin/python3 " FLEETPIPE_SOURCE_DIR "/tests/python/s3_bucket_tool.py " + args);
}

std::vector<std::pair<std::uint64_t, std::string>> list(const std::string& prefix) {
  std::istringstream in(tool(std::string("list ") + kBucket + " " + prefix));
  std::vector<std::pair<std::uint64_t, std::string>> v;
  std::uint64_t size;
  std::string key;
  while (in >> size >> key) v.emplace_back(size, key);
  return v;
}

std::string unique_prefix(const std::string& tag) {
  static std::mt19937_64 rng{std::random_device{}()};
  return "hb-" + tag + "-" + std::to_string(rng() % 1000000000);
}

// A FakeClock that starts at the real time (the server checks request times).
struct Env {
  FakeClock clock{std::chrono::system_clock::now()};
  FakeFilesystemStats fs;
  StderrLogSink log{LogLevel::warning};
  Port port;
  Env() {
    port.clock = &clock;
    port.filesystem = &fs;
    port.log = &log;
  }
};

Config config(const std::string& prefix, const std::string& device) {
  auto env = test::load_s3_env();
  Config c;
  c.device_id = device;
  c.labels = {{"site", "store-07"}, {"model", "cart-v2"}};
  c.buffer.path = test::scratch_dir("hb-" + device).string();
  c.buffer.durability = Durability::none;
  StreamConfig s;
  s.name = "imu";
  s.channels = {"accel"};
  c.streams.push_back(s);
  c.triggers.push_back(threshold_trigger("bump", "imu", "accel", ThresholdOp::above, 5.0));
  c.uploader = test::s3_uploader_config(env, kBucket, prefix);
  c.uploader.enabled = true;
  return c;
}

/// Polls (real time passing for the I/O) until `n` heartbeats are stored.
void until_sent(Pipeline& p, std::uint64_t n) {
  const auto t0 = std::chrono::steady_clock::now();
  while (p.status().heartbeats_sent < n && std::chrono::steady_clock::now() - t0 < 30s) {
    p.poll(2ms);
    std::this_thread::sleep_for(1ms);
  }
  REQUIRE(p.status().heartbeats_sent == n);
}

}  // namespace

TEST_CASE("each heartbeat is its own compact object, a frozen clock included, metrics on request",
          "[heartbeat][s3]") {
  tool(std::string("make ") + kBucket);
  Env env;
  const std::string prefix = unique_prefix("keys");
  auto created = Pipeline::create(config(prefix, "dev-hb"), env.port);
  REQUIRE(created.ok());
  Pipeline& p = **created;
  until_sent(p, 1);  // heartbeat_on_start
  p.request_heartbeat();  // the same wall time, to the millisecond
  until_sent(p, 2);
  p.request_metrics_heartbeat();
  until_sent(p, 3);

  auto beats = list(prefix + "/_heartbeat/device=dev-hb/");
  REQUIRE(beats.size() == 3);  // none overwrote another
  std::set<std::string> keys;
  for (const auto& b : beats) keys.insert(b.second);
  CHECK(keys.size() == 3);
  std::vector<json> docs;
  for (const auto& b : beats) docs.push_back(json::parse(tool(std::string("get ") + kBucket + " " + b.second)));
  std::sort(docs.begin(), docs.end(), [](const json& a, const json& b) { return a["seq"] < b["seq"]; });
  for (std::size_t i = 0; i < 3; ++i) {
    INFO(docs[i].dump());
    CHECK(docs[i]["schema"] == "fleetpipe.heartbeat/2");
    CHECK(docs[i]["seq"] == i);
    CHECK(docs[i]["labels"]["site"] == "store-07");
    CHECK(docs[i]["state"] == "ok");
    CHECK(docs[i]["t"] == docs[0]["t"]);  // the clock did not move
  }
  CHECK(docs[1]["hb"][0] == 1);  // sent before it
  CHECK_FALSE(docs[0].contains("metrics"));
  CHECK_FALSE(docs[1].contains("metrics"));
  REQUIRE(docs[2].contains("metrics"));
  CHECK(docs[2]["metrics"].contains("fleetpipe_pipeline_heartbeats_total"));
  for (const auto& b : beats) {
    const bool full = json::parse(tool(std::string("get ") + kBucket + " " + b.second)).contains("metrics");
    INFO(b.second << " " << b.first);
    if (!full) CHECK(b.first < 700);
    if (full) CHECK(b.first > 5000);
  }
  // The key the pipeline names is the one the uploader wrote.
  CHECK(keys.count(p.status().last_heartbeat_key) == 1);
}

TEST_CASE("status reads one listing from the window's start and one heartbeat per device",
          "[heartbeat][s3]") {
  tool(std::string("make ") + kBucket);
  const std::string prefix = unique_prefix("status");
  // Device i sends i + 1 heartbeats, 60 s apart (fake time; within the server's 15-min skew).
  Env env[3];
  std::vector<std::unique_ptr<Pipeline>> ps;
  for (int i = 0; i < 3; ++i) {
    auto created = Pipeline::create(config(prefix, "dev-" + std::to_string(i)), env[i].port);
    REQUIRE(created.ok());
    ps.push_back(std::move(*created));
  }
  for (int i = 0; i < 3; ++i) {
    for (int k = 0; k <= i; ++k) {
      if (k > 0) {
        env[i].clock.advance(60s);
        ps[static_cast<std::size_t>(i)]->request_heartbeat();
      }
      until_sent(*ps[static_cast<std::size_t>(i)], static_cast<std::uint64_t>(k + 1));
    }
  }
  auto reader = BucketReader::open(test::s3_uploader_config(test::load_s3_env(), kBucket, prefix));
  REQUIRE(reader.ok());
  const WallTime now = env[2].clock.wall() + 1s;

  SECTION("the default day window: the newest heartbeat's trailing day, no baseline GET") {
    StatusQuery q;
    q.now = now;
    auto devices = (*reader)->status(q);
    REQUIRE(devices.ok());
    REQUIRE(devices->size() == 3);
    for (int i = 0; i < 3; ++i) CHECK((*devices)[static_cast<std::size_t>(i)].heartbeats == static_cast<std::size_t>(i + 1));
    const QueryStats s = (*reader)->stats();
    // One page holds every device's keys: the device listing is the window listing too.
    CHECK(s.list_requests == 1);
    CHECK(s.objects_listed == 1 + 2 + 3);
    CHECK(s.gets == 3);
    CHECK(json::parse((*devices)[2].heartbeat_json)["day"].size() == 3);
  }
  SECTION("a shorter window lists only its own keys and reads each device's first one too") {
    StatusQuery q;
    q.now = now;
    q.window_s = 90;  // dev-2's last two heartbeats (60 s apart), dev-1's last, dev-0's none
    auto devices = (*reader)->status(q);
    REQUIRE(devices.ok());
    REQUIRE(devices->size() == 3);
    const QueryStats s = (*reader)->stats();
    CHECK((*devices)[0].heartbeats == 0);
    CHECK((*devices)[1].heartbeats == 1);
    CHECK((*devices)[2].heartbeats == 2);
    CHECK(s.list_requests == 1);
    CHECK(s.objects_listed == 1 + 2 + 3);
    // dev-1's one heartbeat in the window is compared with the one before it; dev-2's two with
    // each other.
    CHECK(s.gets == 3 + 2);
    CHECK((*devices)[1].upload_bytes_per_s >= 0);
  }
}

TEST_CASE("long histories: the listing jumps to each device's window and finds its baseline",
          "[heartbeat][s3]") {
  tool(std::string("make ") + kBucket);
  const std::string prefix = unique_prefix("jumps");
  const UploaderConfig cfg = test::s3_uploader_config(test::load_s3_env(), kBucket, prefix);
  const detail::BucketLayout layout(prefix);
  const WallTime now = std::chrono::time_point_cast<std::chrono::seconds>(std::chrono::system_clock::now());
  const WallTime started = now - 6h;
  // Heartbeats (minutes before now): dev-a every 10 min for 5 h (its baseline within the hour
  // before the window); dev-b silent for the last 3 h (its newest is older than the window's
  // margin); dev-c two in the window and one 4 h before (a baseline past the margin).
  std::map<std::string, std::vector<int>> minutes;
  for (int m = 300; m >= 0; m -= 10) minutes["dev-a"].push_back(m);
  for (int m = 300; m >= 180; m -= 10) minutes["dev-b"].push_back(m);
  minutes["dev-c"] = {240, 30, 10};
  for (const auto& [device, ms] : minutes) {
    std::uint64_t seq = 0;
    for (int m : ms) {
      const WallTime t = now - std::chrono::minutes(m) - 7s;
      const double up = std::chrono::duration<double>(t - started).count();
      json doc = {{"schema", "fleetpipe.heartbeat/2"}, {"device", device},
                  {"t", std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count()},
                  {"seq", seq}, {"up", up}, {"state", "ok"}, {"backlog", {seq, 100 * seq, 0, 0}},
                  {"buf", {seq / 4, 0, 0}}, {"fires", {{"bump", seq / 2}}}, {"tx", 1000 * seq * seq}};
      REQUIRE(test::s3_put(cfg, layout.heartbeat_key(device, t, seq), doc.dump()).ok());
      ++seq;
    }
  }
  auto reader = BucketReader::open(cfg);
  REQUIRE(reader.ok());
  StatusQuery q;
  q.now = now;
  q.window_s = 3600;
  auto run = [&](unsigned page_keys, const std::string& glob) {
    detail::ReaderAccess::impl(**reader).heartbeat_page_keys = page_keys;
    (*reader)->reset_stats();
    StatusQuery g = q;
    g.device_glob = glob;
    auto devices = (*reader)->status(g);
    REQUIRE(devices.ok());
    auto groups = fleet_status(**reader, g, "");
    REQUIRE(groups.ok());
    return std::make_tuple(*devices, *groups, (*reader)->stats());
  };
  const auto [all, all_groups, one_page] = run(1000, "");
  REQUIRE(all.size() == 3);
  CHECK(one_page.list_requests == 2);  // one page each for status and fleet_status
  CHECK(all[0].heartbeats == 6);
  CHECK(all[1].heartbeats == 0);
  CHECK(all[1].last_key == layout.heartbeat_key("dev-b", now - 180min - 7s, 12));
  CHECK(all[2].heartbeats == 2);
  REQUIRE(all_groups.size() == 1);
  CHECK(all_groups[0].devices.size() == 3);

  // Pages of 4 keys: the listing jumps over dev-a's and dev-b's early keys and probes back for
  // dev-b's newest and dev-c's baseline; the figures stay the same.
  const auto [small, small_groups, paged] = run(4, "");
  REQUIRE(small.size() == all.size());
  for (std::size_t i = 0; i < all.size(); ++i) {
    INFO(all[i].device);
    CHECK(small[i].device == all[i].device);
    CHECK(small[i].heartbeats == all[i].heartbeats);
    CHECK(small[i].last_key == all[i].last_key);
    CHECK(small[i].evicted_in_window == all[i].evicted_in_window);
    CHECK(small[i].upload_bytes_per_s == Approx(all[i].upload_bytes_per_s));
  }
  REQUIRE(small_groups.size() == 1);
  CHECK(small_groups[0].upload_bytes == Approx(all_groups[0].upload_bytes));
  CHECK(small_groups[0].observed_device_s == Approx(all_groups[0].observed_device_s));
  CHECK(small_groups[0].fires == all_groups[0].fires);
  CHECK(small_groups[0].evictions == all_groups[0].evictions);
  CHECK(small_groups[0].silent == all_groups[0].silent);
  // Reading every key in pages of 4 would take 12 LISTs per pass (47 keys).
  CHECK(paged.list_requests < 2 * 12);
  CHECK(paged.gets == one_page.gets);

  // A glob skips the other devices' keys (past "device=dev-b0").
  const auto [ac, ac_groups, ac_stats] = run(4, "dev-[ac]");
  REQUIRE(ac.size() == 2);
  CHECK(ac[0].last_key == all[0].last_key);
  CHECK(ac[1].last_key == all[2].last_key);
  CHECK(ac_groups.at(0).devices == std::vector<std::string>{"dev-a", "dev-c"});
}
