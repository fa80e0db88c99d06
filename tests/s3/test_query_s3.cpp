#include "fleetpipe/query.hpp"

#include <catch2/catch.hpp>

#include <cstdio>
#include <random>
#include <string>

#include "capture/event_format.hpp"
#include "fleetpipe/pipeline.hpp"
#include "support/s3_env.hpp"
#include "support/test_paths.hpp"

// The cloud-side reader against what a real Pipeline uploaded to the real server.

using namespace fleetpipe;
using namespace std::chrono_literals;

namespace {

const char* kBucket = "fleetpipe-query-test";

void make_bucket() {
  std::string cmd = "/usr/bin/python3 " FLEETPIPE_SOURCE_DIR "/tests/python/s3_bucket_tool.py make " +
                    std::string(kBucket);
  REQUIRE(std::system(cmd.c_str()) == 0);
}

std::string unique_prefix() {
  static std::mt19937_64 rng{std::random_device{}()};
  return "q-" + std::to_string(rng() % 1000000000);
}

UploaderConfig bucket_config(const std::string& prefix, const std::string& bucket = kBucket) {
  UploaderConfig u = test::s3_uploader_config(test::load_s3_env(), bucket, prefix);
  u.max_attempts = 2;
  u.retry_base_delay_s = 0.05;
  return u;
}

/// A pipeline "dev-q" that records one "bump" event and drains it (objects, manifest, heartbeat).
std::string upload_one_event(const std::string& prefix) {
  Config c;
  c.device_id = "dev-q";
  c.buffer.path = test::scratch_dir("query-s3").string();
  c.buffer.durability = Durability::none;
  StreamConfig s;
  s.name = "imu";
  s.channels = {"accel"};
  c.streams.push_back(s);
  auto t = threshold_trigger("bump", "imu", "accel", ThresholdOp::above, 5.0);
  t.capture.pre_s = 0.5;
  t.capture.post_s = 0.5;
  c.triggers.push_back(t);
  c.uploader = bucket_config(prefix);
  c.pipeline.heartbeat_interval_s = 3600;
  auto created = Pipeline::create(c);
  REQUIRE(created.ok());
  Pipeline& p = **created;
  auto imu = p.stream("imu");
  for (int i = 0; i < 30; ++i) p.push(imu, i * 0.1, {i == 10 ? 9.0 : 0.0});
  p.tick(10.0);
  auto drained = p.drain(60s);
  INFO((drained ? std::string("drained") : drained.error().message));
  REQUIRE(drained.ok());
  REQUIRE(p.status().heartbeats_sent >= 1);
  return p.status().last_heartbeat_key;
}

}  // namespace

TEST_CASE("query finds, downloads and decodes an event a real pipeline uploaded, status sees "
          "its heartbeat",
          "[query][s3]") {
  make_bucket();
  const std::string prefix = unique_prefix();
  const std::string hb_key = upload_one_event(prefix);

  auto reader = BucketReader::open(bucket_config(prefix));
  REQUIRE(reader.ok());
  BucketReader& r = **reader;

  EventQuery q;
  q.triggers = {"bump"};
  q.device_glob = "dev-*";
  auto found = r.query(q);
  REQUIRE(found.ok());
  REQUIRE(found->size() == 1);
  const EventEntry& e = found->front();
  CHECK(e.device == "dev-q");
  CHECK(e.stream == "imu");
  CHECK(e.trigger_ids == std::vector<std::string>{"bump"});
  CHECK_FALSE(e.manifest_key.empty());
  CHECK(e.object_key.rfind(prefix + "/stream=imu/date=", 0) == 0);
  CHECK(e.length > 0);
  CHECK(r.stats().manifests_read >= 1);
  CHECK(r.stats().heads == 0);  // the manifest described the object

  auto bytes = r.download(e);
  REQUIRE(bytes.ok());
  CHECK(bytes->size() == e.length);
  auto decoded = detail::decode_events(*bytes);
  REQUIRE(decoded.ok());
  REQUIRE(decoded->size() == 1);
  CHECK(decoded->front().event_id == e.event_id);

  EventQuery none = q;
  none.device_glob = "other-*";
  auto nothing = r.query(none);
  REQUIRE(nothing.ok());
  CHECK(nothing->empty());
  EventQuery later = q;
  later.since = WallTime(std::chrono::nanoseconds(e.end_ns + 1));
  auto after = r.query(later);
  REQUIRE(after.ok());
  CHECK(after->empty());

  StatusQuery sq;
  auto devices = r.status(sq);
  REQUIRE(devices.ok());
  REQUIRE(devices->size() == 1);
  const DeviceStatus& d = devices->front();
  CHECK(d.device == "dev-q");
  CHECK(d.last_key == hb_key);
  CHECK_FALSE(d.silent);
  CHECK_FALSE(d.evicting);
  CHECK(d.backlog_records == 0);
  sq.now = std::chrono::system_clock::now() + 2h;
  auto later_status = r.status(sq);
  REQUIRE(later_status.ok());
  CHECK(later_status->front().silent);
}

TEST_CASE("reader errors are typed: missing key, missing bucket, bad credentials", "[query][s3]") {
  make_bucket();
  auto reader = BucketReader::open(bucket_config(unique_prefix()));
  REQUIRE(reader.ok());
  auto missing = (*reader)->get("no/such/key");
  REQUIRE_FALSE(missing.ok());
  CHECK(missing.error().is(errc::not_found));

  auto nobucket = BucketReader::open(bucket_config("p", "fleetpipe-no-such-bucket"));
  REQUIRE(nobucket.ok());
  auto listed = (*nobucket)->list("p/");
  REQUIRE_FALSE(listed.ok());
  CHECK(listed.error().is(errc::s3_permanent));
  CHECK(listed.error().message.find("NoSuchBucket") != std::string::npos);

  auto cfg = bucket_config("p");
  cfg.credentials.secret_access_key = "not-the-secret";
  auto badkey = BucketReader::open(cfg);
  REQUIRE(badkey.ok());
  auto denied = (*badkey)->query(EventQuery{});
  REQUIRE_FALSE(denied.ok());
  CHECK(denied.error().is(errc::auth_error));
  CHECK(denied.error().message.find("not-the-secret") == std::string::npos);

  auto insecure = bucket_config("p");
  insecure.endpoint = test::load_s3_env().endpoint_http;
  auto refused = BucketReader::open(insecure);
  REQUIRE_FALSE(refused.ok());
  CHECK(refused.error().is(errc::insecure_refused));
}
