// A fleet of pipelines in one process against the real S3 server: a campaign published to half
// of a label selector, raised to all of it, refused documents of every kind, a device killed
// with SIGKILL after accepting v2 (it restarts on v2 offline), and expiry (local triggers again).
#include "fleetpipe/pipeline.hpp"

#include <catch2/catch.hpp>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "fleetpipe/campaign.hpp"
#include "fleetpipe/query.hpp"
#include "support/campaign_docs.hpp"
#include "support/s3_env.hpp"
#include "support/s3_put.hpp"
#include "support/test_paths.hpp"

using namespace fleetpipe;
using namespace std::chrono_literals;
using nlohmann::json;

namespace {

const char* kBucket = "fleetpipe-campaign-fleet";
constexpr int kSelected = 20;  // model cart-v3: the selector's devices
constexpr int kOthers = 4;     // model cart-v2: never targeted

std::string run(const std::string& cmd) {
  std::string out;
  FILE* f = popen(cmd.c_str(), "r");
  REQUIRE(f != nullptr);
  char buf[4096];
  std::size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) out.append(buf, n);
  int rc = pclose(f);
  INFO(cmd << "\n" << out);
  REQUIRE(rc == 0);
  return out;
}

void put_raw(const UploaderConfig& cfg, const std::string& key, const std::string& body) {
  auto r = test::s3_put(cfg, key, body);
  INFO((r ? std::string() : r.error().message));
  REQUIRE(r.ok());
}

std::string device_name(int i) {
  char b[32];
  std::snprintf(b, sizeof b, "cart-%02d", i);
  return b;
}

struct Fleet {
  test::S3Env env = test::load_s3_env();
  std::string prefix;
  FakeClock clock{std::chrono::system_clock::now()};
  FakeFilesystemStats fs;
  StderrLogSink log{LogLevel::error};
  Port port;
  std::vector<std::unique_ptr<Pipeline>> devices;

  Fleet() {
    static std::mt19937_64 rng{std::random_device{}()};
    prefix = "cf-" + std::to_string(rng() % 1000000000);
    port.clock = &clock;
    port.filesystem = &fs;
    port.log = &log;
  }

  UploaderConfig bucket() const { return test::s3_uploader_config(env, kBucket, prefix); }

  Config config(const std::string& id, bool selected, const std::string& dir) const {
    auto d = test::campaign_device(id);
    Config c;
    c.device_id = id;
    c.labels = {{"site", "store-01"}, {"model", selected ? "cart-v3" : "cart-v2"}};
    c.streams = d.streams;
    c.triggers = d.local_triggers;
    c.buffer.path = dir;
    c.buffer.durability = Durability::none;
    c.buffer.max_bytes = 8u << 20;
    c.uploader = bucket();
    c.uploader.max_object_age_s = 1;
    c.pipeline.heartbeat_interval_s = 3600;
    c.pipeline.heartbeat_on_start = false;
    c.campaigns.enabled = true;
    c.campaigns.poll_interval_s = 10;
    c.campaigns.trusted_keys = {test::test_key(0).trusted};
    return c;
  }

  void start() {
    for (int i = 0; i < kSelected + kOthers; ++i) {
      auto p = Pipeline::create(
          config(device_name(i), i < kSelected, test::scratch_dir("cf-" + device_name(i)).string()),
          port);
      REQUIRE(p.ok());
      devices.push_back(std::move(*p));
    }
  }

  static double updates(Pipeline& p) { return p.metrics().sum("fleetpipe_campaign_updates_total"); }

  // Past the poll interval (10 s + 10 % jitter), then drives every device until its fetch ended.
  void round() {
    clock.advance(12s);
    for (auto& p : devices) {
      const double before = updates(*p);
      const auto deadline = std::chrono::steady_clock::now() + 20s;
      p->poll();
      while (updates(*p) == before && std::chrono::steady_clock::now() < deadline) {
        p->run_for(5ms);
        p->poll();  // a fetched document is verified, then checked, one step per poll
      }
      REQUIRE(updates(*p) > before);
      // Then the state-table write, the apply, and the trigger switch at the next clean point.
      for (int i = 0; i < 3; ++i) p->poll();
    }
  }

  void publish(const std::string& body) { put_raw(bucket(), campaign_object_key(prefix, "fleet"), body); }
};

bool selected_at(const std::string& device, int i, double percent) {
  return i < kSelected && campaign_rollout_bucket("fleet", device) < percent * 100;
}

std::vector<std::string> trigger_names(Pipeline& p) {
  std::vector<std::string> out;
  for (const auto& t : p.capture().triggers()) out.push_back(t.name);
  return out;
}

bool runs(Pipeline& p, const std::string& trigger) {
  auto n = trigger_names(p);
  return std::find(n.begin(), n.end(), trigger) != n.end();
}

json campaign_state(Pipeline& p) { return json::parse(p.heartbeat_json())["campaigns"][0]; }

double result(Pipeline& p, const char* r) {
  return p.metrics().value("fleetpipe_campaign_updates_total", {{"result", r}});
}

json doc_at(const std::string& id, std::uint64_t version, WallTime now, double percent) {
  json d = test::campaign_doc(id, version, now);
  d["targeting"] = {{"labels", {{"model", "cart-v3"}}}, {"rollout_percent", percent}};
  return d;
}

}  // namespace

TEST_CASE("a campaign rolls out to exactly the hashed share of a selector, then to all of it, "
          "refused documents keep it, a killed device restarts on it offline, expiry restores "
          "the local triggers",
          "[campaign][s3]") {
  Fleet f;
  run("/usr/bin/python3 " FLEETPIPE_SOURCE_DIR "/tests/python/s3_bucket_tool.py make " +
      std::string(kBucket));
  f.start();
  const int n = kSelected + kOthers;

  // No campaign in the bucket: everybody asks, gets 404, runs the local triggers.
  f.round();
  for (auto& p : f.devices) {
    CHECK(result(*p, "not_found") == 1);
    CHECK(trigger_names(*p) == std::vector<std::string>{"hard_brake"});
  }

  // v1 at 50 % of model=cart-v3.
  const WallTime t0 = f.clock.wall();
  f.publish(test::signed_envelope(doc_at("fleet", 1, t0, 50)));
  const auto publish_1 = std::chrono::steady_clock::now();
  f.round();
  std::set<std::string> half;
  for (int i = 0; i < n; ++i) {
    Pipeline& p = *f.devices[i];
    const std::string id = device_name(i);
    const bool want = selected_at(id, i, 50);
    if (want) half.insert(id);
    INFO(id << " bucket " << campaign_rollout_bucket("fleet", id));
    CHECK(result(p, "accepted") == 1);
    CHECK(runs(p, "fast_1") == want);
    CHECK(campaign_state(p)["state"] == (want ? "active" : "not_targeted"));
    CHECK(campaign_state(p)["version"] == 1);
  }
  CHECK(half.size() > 2);
  CHECK(half.size() < kSelected - 2);

  // Every device sees speed 5: only the campaign's devices capture it, attributed to fleet@1.
  for (auto& p : f.devices) {
    auto imu = p->stream("imu");
    for (int k = 0; k < 40; ++k) p->push(imu, 100 + k * 0.1, {0.0, k == 10 ? 5.0 : 0.0});
    p->capture().flush();
  }
  for (auto& p : f.devices) {
    auto d = p->drain(60s);
    INFO((d ? std::string("drained") : d.error().message));
    REQUIRE(d.ok());
  }
  const double publish_to_event_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - publish_1).count();
  WARN("campaign_publish_to_first_event_s (in-process fleet, uploaded) = " << publish_to_event_s);
  auto reader = BucketReader::open(f.bucket());
  REQUIRE(reader.ok());
  EventQuery q;
  q.campaign = "fleet@1";
  auto events = (*reader)->query(q);
  REQUIRE(events.ok());
  std::set<std::string> captured;
  for (const auto& e : *events) {
    CHECK(e.trigger_ids == std::vector<std::string>{"fast_1"});
    CHECK(event_campaigns(e) == std::vector<std::string>{"fleet@1"});
    captured.insert(e.device);
  }
  CHECK(captured == half);
  q.campaign = "fleet";
  CHECK((*reader)->query(q)->size() == events->size());
  q.campaign = "fleet@2";
  CHECK((*reader)->query(q)->empty());
  // Labels travel with the data (manifest lines and object metadata).
  auto by_label = query_labeled(**reader, EventQuery{}, {{"model", "cart-v3"}});
  REQUIRE(by_label.ok());
  CHECK(by_label->size() == events->size());
  CHECK(query_labeled(**reader, EventQuery{}, {{"model", "cart-v2"}})->empty());

  // v2 at 100 %: the rest of the selector joins, nobody leaves.
  f.publish(test::signed_envelope(doc_at("fleet", 2, t0, 100)));
  f.round();
  for (int i = 0; i < n; ++i) {
    Pipeline& p = *f.devices[i];
    INFO(device_name(i));
    CHECK(runs(p, "fast_2") == (i < kSelected));
    CHECK(campaign_state(p)["state"] == (i < kSelected ? "active" : "not_targeted"));
    CHECK(campaign_state(p)["version"] == 2);
  }

  // Refused, each counted on every device; v2 stays in force.
  json v3 = doc_at("fleet", 3, t0, 100);
  std::string tampered = test::signed_envelope(v3);
  {
    json env = json::parse(tampered);
    json other = doc_at("fleet", 3, t0, 100);
    other["description"] = "not what was signed";
    auto good = json::parse(test::signed_envelope(other));
    env["payload"] = good["payload"];  // the payload of another document, the old signature
    tampered = env.dump();
  }
  json expired = doc_at("fleet", 4, t0 - 72h, 100);
  const std::vector<std::pair<const char*, std::string>> refused = {
      {"bad_signature", tampered},
      {"unknown_key", test::signed_envelope(v3, /*which=*/1)},
      {"rollback", test::signed_envelope(doc_at("fleet", 1, t0, 100))},
      {"expired", test::signed_envelope(expired)},
      {"invalid", "{\"format\": \"fleetpipe.campaign-envelope/1\", \"payload\": 12"},
  };
  for (const auto& [reason, body] : refused) {
    f.publish(body);
    f.round();
    for (int i = 0; i < n; ++i) {
      Pipeline& p = *f.devices[i];
      INFO(device_name(i) << " " << reason);
      CHECK(result(p, reason) == 1);
      CHECK(p.metrics().value("fleetpipe_campaign_version", {}) == (i < kSelected ? 2 : 0));
      CHECK(runs(p, "fast_2") == (i < kSelected));
      CHECK(campaign_state(p)["last_rejection"] == reason);
    }
  }

  // `fleetpipe campaign status` from the heartbeats.
  for (auto& p : f.devices) {
    p->request_heartbeat();
    const auto sent = p->status().heartbeats_sent;
    const auto deadline = std::chrono::steady_clock::now() + 20s;
    while (p->status().heartbeats_sent == sent && std::chrono::steady_clock::now() < deadline) {
      p->run_for(5ms);
    }
    REQUIRE(p->status().heartbeats_sent > sent);
  }
  const std::string bucket_args = " --endpoint " + f.env.endpoint_https + " --bucket " + kBucket +
                                  " --prefix " + f.prefix + " --ca-file " + f.env.ca_file +
                                  " --region " + f.env.region + " --access-key " +
                                  f.env.access_key + " --secret-key " + f.env.secret_key;
  json st = json::parse(run(FLEETPIPE_BINARY_DIR "/fleetpipe campaign status --json" + bucket_args));
  REQUIRE(st["campaigns"].size() == 1);
  const json& fs = st["campaigns"][0];
  CHECK(fs["id"] == "fleet");
  CHECK(fs["devices"] == n);
  CHECK(fs["targeted"] == kSelected);
  CHECK(fs["states"]["active"] == kSelected);
  CHECK(fs["states"]["not_targeted"] == kOthers);
  CHECK(fs["versions"]["2"] == n);
  CHECK(fs["rejections"]["invalid"] == n);
  CHECK(fs["rejected_devices"].size() == static_cast<std::size_t>(n));

  // kill -9 after v2 was accepted: the device comes back on v2 before any network.
  const std::string k9_dir = test::scratch_dir("cf-k9").string();
  {
    int ready[2];
    REQUIRE(pipe(ready) == 0);
    pid_t child = fork();
    REQUIRE(child >= 0);
    if (child == 0) {
      close(ready[0]);
      FakeClock clock{std::chrono::system_clock::now()};
      Port port = f.port;
      port.clock = &clock;
      auto p = Pipeline::create(f.config("cart-k9", true, k9_dir), port);
      if (!p) _exit(3);
      f.publish(test::signed_envelope(doc_at("fleet", 2, t0, 100)));  // the same v2 again
      clock.advance(12s);
      for (int k = 0; k < 4000; ++k) {
        (*p)->poll();
        (*p)->run_for(5ms);
        if ((*p)->metrics().value("fleetpipe_campaign_version", {}) == 2) {
          (void)!write(ready[1], "y", 1);
          for (;;) pause();
        }
      }
      _exit(4);
    }
    close(ready[1]);
    char c = 0;
    const bool got = read(ready[0], &c, 1) == 1;
    kill(child, SIGKILL);
    int status = 0;
    waitpid(child, &status, 0);
    close(ready[0]);
    REQUIRE(got);
    CHECK(WIFSIGNALED(status));
  }
  {
    Config c = f.config("cart-k9", true, k9_dir);
    c.uploader.endpoint = "https://127.0.0.1:9";  // nothing listens there
    NetworkStatus offline;
    offline.set(NetworkState::offline);
    Port port = f.port;
    port.network = &offline;
    auto p = Pipeline::create(c, port);
    REQUIRE(p.ok());
    CHECK(runs(**p, "fast_2"));
    CHECK(campaign_state(**p)["state"] == "active");
    CHECK(campaign_state(**p)["version"] == 2);
  }

  // Expiry: v5 ends 30 s from now; past it every device is back on its local triggers.
  f.publish(test::signed_envelope([&] {
    json d = doc_at("fleet", 5, t0, 100);
    d["expiry"] = format_campaign_time(f.clock.wall() + 30s);
    return d;
  }()));
  f.round();
  for (int i = 0; i < kSelected; ++i) CHECK(runs(*f.devices[i], "fast_5"));
  f.clock.advance(40s);
  for (auto& p : f.devices) {
    p->poll();  // the agent sees the expiry ...
    p->poll();  // ... and the local triggers are switched in
  }
  for (int i = 0; i < n; ++i) {
    Pipeline& p = *f.devices[i];
    INFO(device_name(i));
    CHECK(trigger_names(p) == std::vector<std::string>{"hard_brake"});
    CHECK(campaign_state(p)["state"] == (i < kSelected ? "expired" : "not_targeted"));
    CHECK(p.metrics().value("fleetpipe_campaign_version", {}) == 0);
  }
}
