#include "fleetpipe/campaign.hpp"

#include <catch2/catch.hpp>

#include <map>

#include "support/campaign_docs.hpp"

using namespace fleetpipe;
using fleetpipe::test::campaign_device;
using fleetpipe::test::campaign_doc;
using fleetpipe::test::signed_envelope;
using fleetpipe::test::test_key;
using nlohmann::json;
using std::chrono::hours;
using std::chrono::minutes;
using std::chrono::seconds;

namespace {

// The bucket as the device sees it: objects with ETags, answering conditional GETs.
struct FakeBucket {
  struct Object {
    std::string etag, body;
  };
  std::map<std::string, Object> objects;
  std::vector<std::pair<std::string, std::string>> requests;  // (key, If-None-Match)
  bool fail = false;
  int next_etag = 1;

  void put(const std::string& key, std::string body) {
    objects[key] = {"\"e" + std::to_string(next_etag++) + "\"", std::move(body)};
  }
  void fetch(const std::string& key, const std::string& inm, CampaignAgentHooks::FetchDone done) {
    requests.emplace_back(key, inm);
    if (fail) return done(Error(errc::network_error, "connection refused"));
    auto it = objects.find(key);
    if (it == objects.end()) return done(CampaignFetchReply{404, "", ""});
    if (!inm.empty() && inm == it->second.etag) return done(CampaignFetchReply{304, inm, ""});
    done(CampaignFetchReply{200, it->second.etag, it->second.body});
  }
};

const std::string kKey = "fleetpipe/_campaigns/fleet.json";

// One device: clock, state table, metrics, and what the pipeline was asked to apply.
struct Device {
  FakeClock clock;
  std::map<std::string, std::string> state;  // survives a "reboot" (a new Device::boot)
  MetricsRegistry metrics;
  FakeBucket* bucket;
  std::vector<std::string> applied;  // "id@version" or "local"
  std::optional<CampaignApplication> running;
  bool refuse_apply = false;
  CampaignSettings settings;
  CampaignDevice info = campaign_device();
  std::unique_ptr<CampaignAgent> agent;
  std::vector<std::string> logs;
  CallbackLogSink sink{[this](LogLevel, std::string_view, std::string_view m) {
    logs.emplace_back(m);
  }};

  explicit Device(FakeBucket& b) : bucket(&b) {
    settings.enabled = true;
    settings.trusted_keys = {test_key(0).trusted};
  }

  void boot() {
    Port port;
    port.clock = &clock;
    port.log = &sink;
    CampaignAgentHooks hooks;
    hooks.fetch = [this](const std::string& k, const std::string& inm,
                         CampaignAgentHooks::FetchDone done) { bucket->fetch(k, inm, done); };
    hooks.apply = [this](const CampaignApplication* app) -> Result<void> {
      if (refuse_apply) return Error(errc::invalid_config, "capture refused the triggers");
      applied.push_back(app ? app->campaign_id + "@" + std::to_string(app->campaign_version)
                            : "local");
      if (app) {
        running = *app;
      } else {
        running.reset();
      }
      return {};
    };
    hooks.store_put = [this](std::string_view k, std::string_view v) -> Result<void> {
      state[std::string(k)] = std::string(v);
      return {};
    };
    hooks.store_get = [this](std::string_view k) -> Result<std::optional<std::string>> {
      auto it = state.find(std::string(k));
      if (it == state.end()) return std::optional<std::string>();
      return std::optional<std::string>(it->second);
    };
    CampaignAgentConfig cfg;
    cfg.settings = settings;
    auto a = CampaignAgent::create(cfg, info, port, metrics, std::move(hooks));
    REQUIRE(a);
    agent = std::move(*a);
    REQUIRE(agent->resume());
  }

  // Runs the loop for `d` of device time, one poll per second.
  void run_for(std::chrono::seconds d) {
    for (auto t = seconds(0); t < d; t += seconds(1)) {
      agent->poll();
      clock.advance(seconds(1));
    }
  }
  // Boots, then runs until version 1 of campaign "fleet" (published now) is in force.
  WallTime boot_on_v1() {
    boot();
    const WallTime now = clock.wall();
    bucket->put(kKey, signed_envelope(campaign_doc("fleet", 1, now)));
    run_for(minutes(2));
    REQUIRE(applied == std::vector<std::string>{"fleet@1"});
    return now;
  }
  // Runs the loop until the agent has made one more request (at most 15 min), then the polls
  // that take its reply through (one step each: verify, check and take, persist, apply).
  void next_fetch() {
    const auto n = bucket->requests.size();
    for (int i = 0; i < 900 && bucket->requests.size() == n; ++i) {
      agent->poll();
      clock.advance(seconds(1));
    }
    REQUIRE(bucket->requests.size() == n + 1);
    for (int i = 0; i < 4; ++i) {
      agent->poll();
      clock.advance(seconds(1));
    }
    REQUIRE(bucket->requests.size() == n + 1);
  }
  double updates(const char* result) const {
    return metrics.value("fleetpipe_campaign_updates_total", {{"result", result}});
  }
  CampaignStatus status(std::size_t i = 0) const { return agent->status().at(i); }
};

}  // namespace

TEST_CASE("a published campaign is fetched, applied, persisted and reported", "[campaign]") {
  FakeBucket bucket;
  Device dev(bucket);
  dev.boot();
  CHECK(dev.agent->in_force() == nullptr);
  CHECK(dev.status().state == CampaignState::none);
  bucket.put(kKey, signed_envelope(campaign_doc("fleet", 1, dev.clock.wall())));
  dev.run_for(minutes(2));  // the first fetch waits at most the jitter share (60 s)
  REQUIRE(bucket.requests.size() == 1);
  CHECK(bucket.requests[0].first == kKey);
  CHECK(bucket.requests[0].second.empty());
  CHECK(dev.applied == std::vector<std::string>{"fleet@1"});
  REQUIRE(dev.agent->in_force());
  CHECK(dev.agent->in_force()->campaign_version == 1);
  CHECK(dev.running->triggers.back().name == "fast_1");
  CHECK(dev.status().state == CampaignState::active);
  CHECK(dev.status().in_force);
  CHECK(dev.status().version == 1);
  CHECK(dev.updates("accepted") == 1);
  CHECK(dev.metrics.value("fleetpipe_campaign_version") == 1);
  CHECK(dev.state.count("campaign/fleet") == 1);
  // Unchanged: the next poll is conditional and costs a 304.
  dev.run_for(minutes(12));
  REQUIRE(bucket.requests.size() == 2);
  CHECK(bucket.requests[1].second == bucket.objects[kKey].etag);
  CHECK(dev.updates("unchanged") == 1);
  CHECK(dev.applied.size() == 1);
}

TEST_CASE("polls follow the interval with a per-device jitter", "[campaign]") {
  FakeBucket bucket;
  std::vector<std::vector<double>> times;
  for (const char* id : {"cart-a", "cart-b"}) {
    Device dev(bucket);
    dev.info.device_id = id;
    dev.boot();
    const auto t0 = dev.clock.monotonic();
    std::vector<double> at;
    const auto before = bucket.requests.size();
    for (int i = 0; i < 6 * 3600; ++i) {
      dev.agent->poll();
      if (bucket.requests.size() != before + at.size()) {
        at.push_back(std::chrono::duration<double>(dev.clock.monotonic() - t0).count());
      }
      dev.clock.advance(seconds(1));
    }
    times.push_back(at);
  }
  for (const auto& at : times) {
    REQUIRE(at.size() >= 30);  // 6 h at 10 min +-10 %
    REQUIRE(at.size() <= 41);
    CHECK(at[0] <= 60);
    for (std::size_t i = 1; i < at.size(); ++i) {
      CHECK(at[i] - at[i - 1] >= 540 - 1);
      CHECK(at[i] - at[i - 1] <= 660 + 1);
    }
  }
  CHECK(times[0] != times[1]);  // not in step
}

TEST_CASE("rejected documents are counted by reason and the campaign in force stays", "[campaign]") {
  FakeBucket bucket;
  Device dev(bucket);
  dev.boot();
  const WallTime now = dev.clock.wall();
  bucket.put(kKey, signed_envelope(campaign_doc("fleet", 5, now)));
  dev.run_for(minutes(2));
  REQUIRE(dev.applied == std::vector<std::string>{"fleet@5"});

  json tampered = json::parse(signed_envelope(campaign_doc("fleet", 6, now)));
  std::string sig = tampered["signature"];
  sig[5] = sig[5] == 'Q' ? 'R' : 'Q';
  tampered["signature"] = sig;
  json changed5 = campaign_doc("fleet", 5, now);
  changed5["description"] = "same version, other content";
  json expired = campaign_doc("fleet", 7, now);
  expired["start"] = format_campaign_time(now - hours(48));
  expired["expiry"] = format_campaign_time(now - hours(1));
  json mismatched = campaign_doc("other", 8, now);
  std::string oversize = signed_envelope(campaign_doc("fleet", 9, now));
  oversize.insert(oversize.size() - 2, std::string(kCampaignMaxEnvelopeBytes, ' '));
  json bad_stream = campaign_doc("fleet", 10, now);
  bad_stream["content"]["triggers"][0]["stream"] = "gps";

  const std::vector<std::pair<std::string, std::string>> cases = {
      {"bad_signature", tampered.dump()},
      {"unknown_key", signed_envelope(campaign_doc("fleet", 6, now), 1)},
      {"rollback", signed_envelope(campaign_doc("fleet", 4, now))},
      {"rollback", signed_envelope(changed5)},
      {"expired", signed_envelope(expired)},
      {"invalid", "{\"format\": \"fleetpipe.campaign-envelope/1\", \"payl"},
      {"invalid", signed_envelope(mismatched)},
      {"invalid", signed_envelope(bad_stream)},
      {"unsigned", campaign_doc("fleet", 11, now).dump()},
      {"oversize", oversize},
  };
  std::map<std::string, double> want;
  for (const auto& [reason, body] : cases) {
    INFO(reason);
    bucket.put(kKey, body);
    dev.next_fetch();
    want[reason] += 1;
    CHECK(dev.updates(reason.c_str()) == want[reason]);
    CHECK(dev.status().last_rejection == reason);
    REQUIRE_FALSE(dev.logs.empty());
    CHECK(dev.logs.back().find("rejected (" + reason + ")") != std::string::npos);
    CHECK(dev.status().state == CampaignState::active);
    CHECK(dev.status().version == 5);
    REQUIRE(dev.agent->in_force());
    CHECK(dev.agent->in_force()->campaign_version == 5);
  }
  CHECK(dev.applied == std::vector<std::string>{"fleet@5"});
  const json beat = json::parse(campaign_status_json(dev.agent->status()));
  REQUIRE(beat.size() == 1);
  CHECK(beat[0]["id"] == "fleet");
  CHECK(beat[0]["version"] == 5);
  CHECK(beat[0]["state"] == "active");
  CHECK(beat[0]["in_force"] == true);
  CHECK(beat[0]["last_rejection"] == "oversize");
  CHECK(beat[0]["last_rejection_at"] == format_campaign_time(dev.status().last_rejection_at));
  for (const auto& line : dev.logs) CHECK(line.find("PRIVATE KEY") == std::string::npos);
  // A rejected object is not downloaded again: its ETag is sent, the server answers 304.
  const double unchanged = dev.updates("unchanged");
  dev.next_fetch();
  CHECK(dev.updates("unchanged") == unchanged + 1);
  CHECK(dev.updates("oversize") == 1);
  // The persisted campaign is still version 5.
  Device rebooted(bucket);
  rebooted.state = dev.state;
  rebooted.boot();
  CHECK(rebooted.applied == std::vector<std::string>{"fleet@5"});
  // A deliberate rollback is a new, higher version.
  bucket.put(kKey, signed_envelope(campaign_doc("fleet", 12, now)));
  dev.next_fetch();
  CHECK(dev.applied.back() == "fleet@12");
  CHECK(dev.status().last_rejection == "oversize");  // kept as history for the heartbeat
}

TEST_CASE("a campaign is pending until its start and falls back to local triggers at expiry",
          "[campaign]") {
  FakeBucket bucket;
  Device dev(bucket);
  dev.boot();
  const WallTime now = dev.clock.wall();
  json doc = campaign_doc("fleet", 1, now);
  doc["start"] = format_campaign_time(now + minutes(30));
  doc["expiry"] = format_campaign_time(now + hours(2));
  bucket.put(kKey, signed_envelope(doc));
  dev.run_for(minutes(2));
  CHECK(dev.status().state == CampaignState::pending);
  CHECK(json::parse(campaign_status_json(dev.agent->status()))[0].count("last_rejection") == 0);
  CHECK(dev.applied.empty());
  CHECK(dev.agent->in_force() == nullptr);
  dev.run_for(minutes(29));
  CHECK(dev.status().state == CampaignState::active);
  CHECK(dev.applied == std::vector<std::string>{"fleet@1"});
  const WallTime since = dev.status().since;
  CHECK(since >= now + minutes(30));
  CHECK(since <= now + minutes(31));
  dev.run_for(minutes(90));
  CHECK(dev.status().state == CampaignState::expired);
  CHECK(dev.applied == std::vector<std::string>{"fleet@1", "local"});
  CHECK(dev.agent->in_force() == nullptr);
  CHECK(dev.metrics.value("fleetpipe_campaign_version") == 0);
}

TEST_CASE("a signed suspension returns to local triggers and a later version resumes", "[campaign]") {
  FakeBucket bucket;
  Device dev(bucket);
  const WallTime now = dev.boot_on_v1();
  json suspended = campaign_doc("fleet", 2, now);
  suspended["suspended"] = true;
  bucket.put(kKey, signed_envelope(suspended));
  dev.next_fetch();
  CHECK(dev.status().state == CampaignState::suspended);
  CHECK(dev.agent->in_force() == nullptr);
  bucket.put(kKey, signed_envelope(campaign_doc("fleet", 3, now)));
  dev.next_fetch();
  CHECK(dev.applied == std::vector<std::string>{"fleet@1", "local", "fleet@3"});
  // A deleted object is not a withdrawal: the campaign stays in force.
  bucket.objects.clear();
  dev.next_fetch();
  CHECK(dev.updates("not_found") == 1);
  CHECK(dev.agent->in_force() != nullptr);
}

TEST_CASE("a reboot resumes the persisted campaign before any network", "[campaign]") {
  FakeBucket bucket;
  Device dev(bucket);
  dev.boot();
  bucket.put(kKey, signed_envelope(campaign_doc("fleet", 2, dev.clock.wall())));
  dev.run_for(minutes(2));
  REQUIRE(dev.applied.size() == 1);

  Device after(bucket);
  after.state = dev.state;  // the Buffer's state table survives kill -9
  after.clock = dev.clock;
  bucket.fail = true;       // offline
  const auto requests = bucket.requests.size();
  after.boot();
  CHECK(bucket.requests.size() == requests);  // resume() does not fetch
  CHECK(after.applied == std::vector<std::string>{"fleet@2"});
  CHECK(after.status().state == CampaignState::active);
  after.run_for(minutes(2));
  CHECK(after.updates("fetch_error") == 1);
  CHECK(after.agent->in_force()->campaign_version == 2);
  // Online again: the persisted ETag makes the first fetch conditional.
  bucket.fail = false;
  after.next_fetch();
  CHECK(bucket.requests.back().second == bucket.objects[kKey].etag);
  CHECK(after.updates("unchanged") == 1);

  SECTION("a persisted campaign signed by a key no longer trusted is dropped") {
    Device rotated(bucket);
    rotated.state = dev.state;
    rotated.settings.trusted_keys = {test_key(1).trusted};
    rotated.boot();
    CHECK(rotated.applied.empty());
    CHECK(rotated.updates("unknown_key") == 1);
    CHECK(rotated.status().state == CampaignState::rejected);
  }
  SECTION("a persisted campaign that expired while off is not applied") {
    Device late(bucket);
    late.state = dev.state;
    late.clock.set_wall(dev.clock.wall() + hours(48));
    late.boot();
    CHECK(late.applied.empty());
    CHECK(late.status().state == CampaignState::expired);
    // ... and still guards against a rollback to an older version.
    json old = campaign_doc("fleet", 1, late.clock.wall());
    bucket.put(kKey, signed_envelope(old));
    late.run_for(minutes(2));
    CHECK(late.updates("rollback") == 1);
  }
}

TEST_CASE("targeting decides which devices switch, and only the stable hash", "[campaign]") {
  FakeBucket bucket;
  const WallTime now = FakeClock().wall();
  json doc = campaign_doc("fleet", 1, now);
  doc["targeting"] = {{"labels", {{"site", "store-01*"}}}, {"rollout_percent", 50}};
  bucket.put(kKey, signed_envelope(doc));
  std::vector<std::string> ids;
  for (int i = 0; i < 24; ++i) ids.push_back("cart-" + std::to_string(i));
  std::map<std::string, bool> switched;
  for (const auto& id : ids) {
    Device dev(bucket);
    dev.info.device_id = id;
    if (id == "cart-0") dev.info.labels["site"] = "store-02";  // outside the selector
    dev.boot();
    dev.run_for(minutes(2));
    switched[id] = dev.agent->in_force() != nullptr;
    const bool expect = id != "cart-0" && campaign_rollout_bucket("fleet", id) < 5000;
    CHECK(switched[id] == expect);
    CHECK(dev.status().state == (expect ? CampaignState::active : CampaignState::not_targeted));
  }
  // 100 %: the rest of the selector joins, none leaves.
  doc["version"] = 2;
  doc["targeting"]["rollout_percent"] = 100;
  bucket.put(kKey, signed_envelope(doc));
  for (const auto& id : ids) {
    Device dev(bucket);
    dev.info.device_id = id;
    if (id == "cart-0") dev.info.labels["site"] = "store-02";
    dev.boot();
    dev.run_for(minutes(2));
    if (switched[id]) CHECK(dev.agent->in_force() != nullptr);
    CHECK((dev.agent->in_force() != nullptr) == (id != "cart-0"));
  }
}

TEST_CASE("of two followed campaigns the higher priority is in force", "[campaign]") {
  FakeBucket bucket;
  Device dev(bucket);
  dev.settings.follow = {"fleet", "study"};
  dev.boot();
  const WallTime now = dev.clock.wall();
  json study = campaign_doc("study", 1, now);
  study["priority"] = 10;
  study["content"]["triggers"][0]["name"] = "study_fast";
  bucket.put(kKey, signed_envelope(campaign_doc("fleet", 1, now)));
  bucket.put("fleetpipe/_campaigns/study.json", signed_envelope(study));
  dev.run_for(minutes(2));
  REQUIRE(dev.agent->in_force());
  CHECK(dev.agent->in_force()->campaign_id == "study");
  CHECK(dev.status(0).state == CampaignState::active);
  CHECK_FALSE(dev.status(0).in_force);
  CHECK(dev.status(1).in_force);
  // The study is suspended: the fleet campaign takes over, not the local triggers.
  json ended = study;
  ended["version"] = 2;
  ended["suspended"] = true;
  bucket.put("fleetpipe/_campaigns/study.json", signed_envelope(ended));
  dev.run_for(minutes(12));  // both ids polled at least once
  CHECK(dev.agent->in_force()->campaign_id == "fleet");
  CHECK(dev.applied.back() == "fleet@1");
}

TEST_CASE("a failed apply is counted, keeps what runs and is not retried", "[campaign]") {
  FakeBucket bucket;
  Device dev(bucket);
  const WallTime now = dev.boot_on_v1();
  dev.refuse_apply = true;
  bucket.put(kKey, signed_envelope(campaign_doc("fleet", 2, now)));
  dev.run_for(minutes(30));
  CHECK(dev.updates("apply_failed") == 1);
  CHECK(dev.agent->in_force()->campaign_version == 1);
  CHECK(dev.applied == std::vector<std::string>{"fleet@1"});
  dev.refuse_apply = false;
  bucket.put(kKey, signed_envelope(campaign_doc("fleet", 3, now)));
  dev.next_fetch();
  CHECK(dev.applied.back() == "fleet@3");
}

TEST_CASE("the agent refuses missing hooks and bad settings", "[campaign]") {
  FakeClock clock;
  Port port;
  port.clock = &clock;
  MetricsRegistry metrics;
  CampaignAgentConfig cfg;
  cfg.settings.trusted_keys = {test_key(0).trusted};
  auto no_hooks = CampaignAgent::create(cfg, campaign_device(), port, metrics, {});
  REQUIRE_FALSE(no_hooks);
  CHECK(no_hooks.error().is(errc::invalid_argument));
  cfg.settings.follow.clear();
  auto no_follow = CampaignAgent::create(cfg, campaign_device(), port, metrics, {});
  REQUIRE_FALSE(no_follow);
  CHECK(no_follow.error().json_pointer == "/campaigns/follow");
}

TEST_CASE("a later-starting version keeps the running one in force until its start", "[campaign]") {
  FakeBucket bucket;
  Device dev(bucket);
  const WallTime now = dev.boot_on_v1();
  json next = campaign_doc("fleet", 2, now);
  next["start"] = format_campaign_time(now + minutes(40));
  bucket.put(kKey, signed_envelope(next));
  dev.next_fetch();
  CHECK(dev.status().state == CampaignState::pending);
  CHECK(dev.status().version == 2);
  CHECK(dev.status().in_force);
  REQUIRE(dev.agent->in_force());
  CHECK(dev.agent->in_force()->campaign_version == 1);
  CHECK(dev.applied == std::vector<std::string>{"fleet@1"});
  dev.run_for(minutes(30));
  CHECK(dev.applied == std::vector<std::string>{"fleet@1", "fleet@2"});
  CHECK(dev.status().state == CampaignState::active);
}

TEST_CASE("a fetched document is verified, taken, persisted and applied in separate polls",
          "[campaign]") {
  FakeBucket bucket;
  Device dev(bucket);
  dev.boot();
  bucket.put(kKey, signed_envelope(campaign_doc("fleet", 1, dev.clock.wall())));
  // The poll that receives the reply does nothing else with it.
  for (int i = 0; i < 120 && bucket.requests.empty(); ++i) {
    dev.agent->poll();
    dev.clock.advance(seconds(1));
  }
  REQUIRE(bucket.requests.size() == 1);
  CHECK(dev.updates("accepted") == 0);
  CHECK(dev.state.empty());
  dev.agent->poll();  // the signature check
  CHECK(dev.updates("accepted") == 0);
  dev.agent->poll();  // version, expiry and target checks; the triggers resolved
  CHECK(dev.updates("accepted") == 1);
  CHECK(dev.state.empty());
  CHECK(dev.applied.empty());
  dev.agent->poll();  // the state table write
  CHECK(dev.state.count("campaign/fleet") == 1);
  CHECK(dev.applied.empty());
  dev.agent->poll();  // in force only once it is persisted
  CHECK(dev.applied == std::vector<std::string>{"fleet@1"});
  CHECK(bucket.requests.size() == 1);
}
