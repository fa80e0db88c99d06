// Configuration faults (issue #24 item 7) against the real S3 server: pipelines pointed at a
// bucket that does not exist yet, or holding a wrong secret or key id, keep every event queued
// (none parked), report the fault (status, metric, heartbeat document) and deliver everything on
// their own once the bucket exists or the credentials provider returns the right keys.
#include "fleetpipe/pipeline.hpp"

#include <catch2/catch.hpp>
#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "support/index_check.hpp"
#include "support/readback.hpp"
#include "support/s3_env.hpp"
#include "support/test_paths.hpp"

using namespace fleetpipe;
using namespace std::chrono_literals;
using nlohmann::json;

namespace {

constexpr int kDevices = 3;
constexpr int kEventsPerDevice = 3;

std::string unique(const std::string& tag) {
  static std::mt19937_64 rng{std::random_device{}()};
  return tag + std::to_string(rng() % 1000000000u);
}

// A host credentials provider whose keys the test swaps, as a rotation would.
struct SwappableCredentials final : CredentialsProvider {
  std::mutex mu;
  Credentials creds;
  Result<Credentials> get() override {
    std::lock_guard<std::mutex> l(mu);
    return creds;
  }
  void set(Credentials c) {
    std::lock_guard<std::mutex> l(mu);
    creds = std::move(c);
  }
};

Config device_config(const test::S3Env& env, const std::string& bucket, const std::string& prefix,
                     int device) {
  Config c;
  c.device_id = "cfg-dev-" + std::to_string(device);
  c.buffer.path = test::scratch_dir("cfg-faults").string();
  c.buffer.durability = Durability::none;
  c.buffer.min_free_bytes = 0;
  StreamConfig s;
  s.name = "imu";
  s.channels = {"v"};
  s.ring_seconds = 2;
  c.streams.push_back(s);
  auto t = manual_trigger("m");
  t.capture.pre_s = 0.05;
  t.capture.post_s = 0.05;
  c.triggers.push_back(t);
  c.uploader.endpoint = env.endpoint_https;
  c.uploader.ca_file = env.ca_file;
  c.uploader.region = env.region;
  c.uploader.bucket = bucket;
  c.uploader.prefix = prefix;
  c.uploader.credentials.source = CredentialsSource::static_keys;
  c.uploader.credentials.access_key_id = env.access_key;
  c.uploader.credentials.secret_access_key = env.secret_key;
  c.uploader.max_object_age_s = 0.05;
  c.uploader.retry_base_delay_s = 0.02;
  c.uploader.retry_max_delay_s = 0.1;
  c.uploader.fault_max_delay_s = 0.4;  // the documented default is 15 min
  c.uploader.idle_poll_interval_s = 0.02;
  c.pipeline.heartbeat_on_start = false;
  c.pipeline.heartbeat_interval_s = 3600;
  return c;
}

// Each device records kEventsPerDevice events, then runs for `seconds` (real time).
void capture_and_run(std::vector<std::unique_ptr<Pipeline>>& ps, double seconds) {
  for (auto& p : ps) {
    auto imu = p->stream("imu");
    for (int e = 0; e < kEventsPerDevice; ++e) {
      for (int i = 0; i < 30; ++i) {
        double t = e * 10.0 + i * 0.01;
        p->push(imu, t, {static_cast<double>(i)});
        if (i == 10) REQUIRE(p->fire("m", t).ok());
        p->tick(t);
      }
      p->tick(e * 10.0 + 5);
    }
  }
  auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  while (std::chrono::steady_clock::now() < end)
    for (auto& p : ps) p->run_for(5ms);
}

// While the fault lasts: nothing parked or lost, every event queued, the fault reported.
// `codes`: what the server may answer (AWS says InvalidAccessKeyId for an unknown key id, Swift's
// s3api SignatureDoesNotMatch).
void check_held(std::vector<std::unique_ptr<Pipeline>>& ps, const std::set<std::string>& codes) {
  for (auto& p : ps) {
    const std::string code = p->status().uploader.destination_fault;
    INFO("fault " << code);
    CHECK(codes.count(code) == 1);
    auto s = p->status();
    INFO(p->config().device_id << ": last error " << s.uploader.last_error);
    CHECK(s.capture.events == static_cast<std::uint64_t>(kEventsPerDevice));
    CHECK(s.buffer.records == static_cast<std::uint64_t>(kEventsPerDevice));
    CHECK(s.buffer.parked == 0);
    CHECK(s.uploader.records_parked == 0);
    CHECK(s.uploader.objects_uploaded == 0);
    CHECK(s.uploader.destination_fault_probes >= 2);  // it re-probed, backing off
    CHECK(p->metrics().value("fleetpipe_uploader_destination_faults_total", {{"code", code}}) >= 2);
    auto hb = json::parse(p->heartbeat_json());
    CHECK(hb["fault"] == code);
    CHECK(hb["state"] == "fault");
  }
}

// After the fault cleared: every event of every device in the bucket once, in the index.
void check_delivered(std::vector<std::unique_ptr<Pipeline>>& ps, const test::S3Env& env,
                     const std::string& bucket, const std::string& prefix) {
  for (auto& p : ps) {
    auto d = p->drain(60s);
    INFO(p->config().device_id << ": " << (d ? std::string("drained") : d.error().message));
    REQUIRE(d.ok());
    auto s = p->status();
    CHECK(s.buffer.records == 0);
    CHECK(s.buffer.parked == 0);
    CHECK(s.uploader.records_parked == 0);
    CHECK(s.uploader.destination_fault.empty());
  }
  auto dir = test::scratch_dir("cfg-faults-rb");
  auto rb = test::readback(env, "dump " + bucket + " " + prefix + "/ '" + dir.string() + "'");
  std::set<std::string> events;
  std::map<std::string, int> per_device;
  for (const auto& o : rb["objects"]) {
    auto key = o["key"].get<std::string>();
    if (key.size() < 5 || key.compare(key.size() - 5, 5, ".fpev") != 0) continue;  // manifests, heartbeats
    auto ev = detail::decode_events(test::slurp(o["file"].get<std::string>()));
    REQUIRE(ev.ok());
    for (const auto& e : *ev) {
      events.insert(e.event_id);
      for (int i = 0; i < kDevices; ++i)
        if (key.find("/device=cfg-dev-" + std::to_string(i) + "/") != std::string::npos) ++per_device[std::to_string(i)];
    }
  }
  for (int i = 0; i < kDevices; ++i) CHECK(per_device[std::to_string(i)] == kEventsPerDevice);
  auto report = test::check_index(rb, events, [](const std::string&, std::string_view) { return false; });
  INFO(report.summary());
  CHECK(report.accepted == kDevices * kEventsPerDevice);
  CHECK(report.duplicated == 0);
  CHECK(report.bad_lines == 0);
  CHECK(report.unlisted_objects == 0);
  CHECK(report.unindexed == 0);
}

}  // namespace

TEST_CASE("pipelines pointed at a bucket that does not exist yet keep every event and deliver "
          "all of them once it is created, none parked",
          "[config-faults][s3]") {
  auto env = test::load_s3_env();
  std::string bucket = unique("fp-cfg-missing-");
  std::string prefix = unique("m");
  std::vector<std::unique_ptr<Pipeline>> ps;
  for (int i = 0; i < kDevices; ++i) {
    auto p = Pipeline::create(device_config(env, bucket, prefix, i));
    REQUIRE(p.ok());
    ps.push_back(std::move(*p));
  }
  capture_and_run(ps, 2.0);
  check_held(ps, {"NoSuchBucket"});

  test::readback(env, "mkbucket " + bucket);
  check_delivered(ps, env, bucket, prefix);
}

TEST_CASE("pipelines holding a wrong secret or key id keep every event and deliver all of them "
          "once the credentials provider returns the right keys, none parked",
          "[config-faults][s3]") {
  auto env = test::load_s3_env();
  std::string bucket = unique("fp-cfg-creds-");
  std::string prefix = unique("c");
  test::readback(env, "mkbucket " + bucket);
  Credentials wrong_secret{env.access_key, env.secret_key + "x", ""};
  Credentials wrong_key{"AKIDNOSUCHKEY0000000", env.secret_key, ""};
  const std::set<std::string> wrong_key_codes = {"InvalidAccessKeyId", "SignatureDoesNotMatch"};
  for (const auto& [bad, name, codes] :
       {std::make_tuple(wrong_secret, std::string("wrong-secret"), std::set<std::string>{"SignatureDoesNotMatch"}),
        std::make_tuple(wrong_key, std::string("wrong-key-id"), wrong_key_codes)}) {
    SECTION(name) {
      std::vector<std::unique_ptr<SwappableCredentials>> providers;
      std::vector<std::unique_ptr<Pipeline>> ps;
      std::string pfx = prefix + "-" + name;
      for (int i = 0; i < kDevices; ++i) {
        providers.push_back(std::make_unique<SwappableCredentials>());
        providers.back()->set(bad);
        Port port;
        port.credentials = providers.back().get();
        auto c = device_config(env, bucket, pfx, i);
        c.uploader.credentials = UploaderCredentialsConfig{};
        c.uploader.credentials.source = CredentialsSource::host;
        auto p = Pipeline::create(c, port);
        REQUIRE(p.ok());
        ps.push_back(std::move(*p));
      }
      capture_and_run(ps, 2.0);
      check_held(ps, codes);
      // A record parked while the keys were wrong (as an older version did) comes back once the
      // provider's keys change.
      {
        ps[0]->pause_uploads();  // the uploader's lease goes back to the Buffer
        for (int i = 0; i < 20 && ps[0]->status().uploader.busy; ++i) ps[0]->run_for(10ms);
        auto lease = ps[0]->buffer().lease(~0ull, 1);
        REQUIRE(lease.ok());
        REQUIRE(lease->records().size() == 1);
        auto id = lease->records()[0].id;
        lease->release();
        REQUIRE(ps[0]->buffer().park({id}, "SignatureDoesNotMatch").ok());
        REQUIRE(ps[0]->status().buffer.parked == 1);
        ps[0]->resume_uploads();
      }
      for (auto& pr : providers) pr->set(Credentials{env.access_key, env.secret_key, ""});
      check_delivered(ps, env, bucket, pfx);
    }
  }
}
