// One validate_config() per component config: every value the JSON path rejects is rejected
// from C++ too, with the same message and pointer; device labels.
#include "fleetpipe/config.hpp"

#include <catch2/catch.hpp>

#include <functional>
#include <string>
#include <vector>

#include "fleetpipe/capture.hpp"
#include "fleetpipe/pipeline.hpp"

using namespace fleetpipe;

namespace {

struct Case {
  const char* json;                    // the members added to {"device_id": "dev-1", ...}
  std::function<void(Config&)> set;    // the same value set in C++
};

// The JSON path's error for `members`, and validate_config() of a C++ config built from defaults.
void check_same(const Case& c) {
  const std::string doc = std::string(R"({"device_id": "dev-1", )") + c.json + "}";
  auto parsed = parse_config(doc);
  INFO(doc);
  REQUIRE_FALSE(parsed.ok());
  CHECK(parsed.error().is(errc::invalid_config));
  Config built;
  built.device_id = "dev-1";
  c.set(built);
  auto checked = validate_config(built);
  REQUIRE_FALSE(checked.ok());
  CHECK(checked.error().is(errc::invalid_config));
  CHECK(checked.error().message == parsed.error().message);
  CHECK(checked.error().json_pointer == parsed.error().json_pointer);
}

}  // namespace

TEST_CASE("validate: the defaults and a minimal document pass", "[config][validate]") {
  Config c;
  c.device_id = "dev-1";
  CHECK(validate_config(c).ok());
  CHECK(validate_config(c.buffer).ok());
  CHECK(validate_config(c.uploader).ok());
  CHECK(validate_config(c.pipeline).ok());
  auto parsed = parse_config(R"({"device_id": "dev-1"})");
  REQUIRE(parsed.ok());
  CHECK(validate_config(*parsed).ok());
}

TEST_CASE("validate: uploader values the JSON path rejects, with the same messages",
          "[config][validate]") {
  const std::vector<Case> cases = {
      {R"("uploader": {"io_chunk_size": 0})", [](Config& c) { c.uploader.io_chunk_bytes = 0; }},
      {R"("uploader": {"io_chunk_size": 16777216})",
       [](Config& c) { c.uploader.io_chunk_bytes = 16u << 20; }},
      {R"("uploader": {"objects": {"key_template": "{prefix}/{seq}/{stream"}})",
       [](Config& c) { c.uploader.key_template = "{prefix}/{seq}/{stream"; }},
      {R"("uploader": {"objects": {"key_template": "{prefix}/x.bin"}})",
       [](Config& c) { c.uploader.key_template = "{prefix}/x.bin"; }},
      {R"("uploader": {"objects": {"key_template": "{seq}-{colour}"}})",
       [](Config& c) { c.uploader.key_template = "{seq}-{colour}"; }},
      {R"("uploader": {"objects": {"key_template": "/{seq}"}})",
       [](Config& c) { c.uploader.key_template = "/{seq}"; }},
      {R"("uploader": {"objects": {"part_size": 1048576}})",
       [](Config& c) { c.uploader.part_bytes = 1u << 20; }},
      {R"("uploader": {"objects": {"multipart_threshold": 1024}})",
       [](Config& c) { c.uploader.multipart_threshold_bytes = 1024; }},
      {R"("uploader": {"objects": {"target_size": 0}})",
       [](Config& c) { c.uploader.target_object_bytes = 0; }},
      {R"("uploader": {"objects": {"max_age": 700000}})",
       [](Config& c) { c.uploader.max_object_age_s = 700000; }},
      {R"("uploader": {"batch": {"max_records": 0}})",
       [](Config& c) { c.uploader.batch_max_records = 0; }},
      {R"("uploader": {"batch": {"max_bytes": 0}})",
       [](Config& c) { c.uploader.batch_max_bytes = 0; }},
      {R"("uploader": {"max_concurrent_requests": 17})",
       [](Config& c) { c.uploader.max_concurrent_requests = 17; }},
      {R"("uploader": {"max_concurrent_requests": 0})",
       [](Config& c) { c.uploader.max_concurrent_requests = 0; }},
      {R"("uploader": {"bucket": "ab"})", [](Config& c) { c.uploader.bucket = "ab"; }},
      {R"("uploader": {"region": ""})", [](Config& c) { c.uploader.region = ""; }},
      {R"("uploader": {"connect_timeout": 0})",
       [](Config& c) { c.uploader.connect_timeout_s = 0; }},
      {R"("uploader": {"request_timeout": 90000})",
       [](Config& c) { c.uploader.request_timeout_s = 90000; }},
      {R"("uploader": {"credentials": {"access_key_id": "AKID"}})",
       [](Config& c) { c.uploader.credentials.access_key_id = "AKID"; }},
      {R"("uploader": {"credentials": {"source": "static"}})",
       [](Config& c) { c.uploader.credentials.source = CredentialsSource::static_keys; }},
      {R"("uploader": {"retry": {"max_attempts": 0}})",
       [](Config& c) { c.uploader.max_attempts = 0; }},
      {R"("uploader": {"retry": {"base_delay": 2, "max_delay": 1}})",
       [](Config& c) {
         c.uploader.retry_base_delay_s = 2;
         c.uploader.retry_max_delay_s = 1;
       }},
      {R"("uploader": {"bandwidth": {"bytes_per_second": -5}})",
       [](Config& c) { c.uploader.bytes_per_second = -5; }},
      {R"("uploader": {"bandwidth": {"metered_bytes_per_second": -0.5}})",
       [](Config& c) { c.uploader.metered_bytes_per_second = -0.5; }},
      {R"("uploader": {"resume": {"abandon_after": 0}})",
       [](Config& c) { c.uploader.abandon_multipart_after_s = 0; }},
      {R"("uploader": {"schedule": {"utc_offset_minutes": 900}})",
       [](Config& c) { c.uploader.schedule.utc_offset_minutes = 900; }},
      {R"("uploader": {"idle_poll_interval": 0.0001})",
       [](Config& c) { c.uploader.idle_poll_interval_s = 0.0001; }},
      {R"("uploader": {"idle_poll_interval": 61})",
       [](Config& c) { c.uploader.idle_poll_interval_s = 61; }},
  };
  for (const auto& c : cases) check_same(c);
}

TEST_CASE("validate: buffer values the JSON path rejects, with the same messages",
          "[config][validate]") {
  const std::vector<Case> cases = {
      {R"("buffer": {"path": ""})", [](Config& c) { c.buffer.path = ""; }},
      {R"("buffer": {"sync_interval": 0})", [](Config& c) { c.buffer.sync_interval_ms = 0; }},
      {R"("buffer": {"sync_interval": 90000})",
       [](Config& c) { c.buffer.sync_interval_ms = 90000u * 1000u; }},
      {R"("buffer": {"max_bytes": 0})", [](Config& c) { c.buffer.max_bytes = 0; }},
      {R"("buffer": {"max_records": 0})", [](Config& c) { c.buffer.max_records = 0; }},
      {R"("buffer": {"reserved_share": {"3": 1.5}})",
       [](Config& c) { c.buffer.reserved_share[3] = 1.5; }},
      {R"("buffer": {"reserved_share": {"2": -0.25}})",
       [](Config& c) { c.buffer.reserved_share[2] = -0.25; }},
      {R"("buffer": {"reserved_share": {"0": 0.6, "5": 0.6}})",
       [](Config& c) {
         c.buffer.reserved_share[0] = 0.6;
         c.buffer.reserved_share[5] = 0.6;
       }},
      {R"("buffer": {"wear_exempt_priority": 9})",
       [](Config& c) { c.buffer.wear_exempt_priority = 9; }},
      {R"("buffer": {"max_payload_bytes": 0})", [](Config& c) { c.buffer.max_payload_bytes = 0; }},
      {R"("buffer": {"chunk_bytes": 4096})", [](Config& c) { c.buffer.chunk_bytes = 4096; }},
      {R"("buffer": {"chunk_bytes": 10000})", [](Config& c) { c.buffer.chunk_bytes = 10000; }},
      {R"("buffer": {"compression_level": 23})",
       [](Config& c) { c.buffer.compression_level = 23; }},
      {R"("buffer": {"initial_map_bytes": 4096})",
       [](Config& c) { c.buffer.initial_map_bytes = 4096; }},
      {R"("buffer": {"max_quarantined": 101})", [](Config& c) { c.buffer.max_quarantined = 101; }},
  };
  for (const auto& c : cases) check_same(c);
}

TEST_CASE("validate: device, labels, pipeline, streams and triggers match the JSON path",
          "[config][validate]") {
  const std::vector<Case> cases = {
      {R"("pipeline": {"poll_budget": 0})", [](Config& c) { c.pipeline.poll_budget_s = 0; }},
      {R"("pipeline": {"poll_budget": 11})", [](Config& c) { c.pipeline.poll_budget_s = 11; }},
      {R"("pipeline": {"heartbeat_interval": -1})",
       [](Config& c) { c.pipeline.heartbeat_interval_s = -1; }},
      {R"("labels": {"site": "store 01"})", [](Config& c) { c.labels["site"] = "store 01"; }},
      {R"("labels": {"site": ""})", [](Config& c) { c.labels["site"] = ""; }},
      {R"("labels": {"bad/key": "x"})", [](Config& c) { c.labels["bad/key"] = "x"; }},
      {R"("labels": {"": "x"})", [](Config& c) { c.labels[""] = "x"; }},
      {R"("streams": [{"name": "imu", "channels": ["a", "a"]}])",
       [](Config& c) {
         StreamConfig s;
         s.name = "imu";
         s.channels = {"a", "a"};
         c.streams.push_back(s);
       }},
      {R"("streams": [{"name": "imu", "channels": ["a"]}],
          "triggers": [{"name": "t", "type": "threshold", "stream": "cam", "channel": "a",
                        "above": 1}])",
       [](Config& c) {
         StreamConfig s;
         s.name = "imu";
         s.channels = {"a"};
         c.streams.push_back(s);
         c.triggers.push_back(threshold_trigger("t", "cam", "a", ThresholdOp::above, 1));
       }},
  };
  for (const auto& c : cases) check_same(c);

  // The device id: the JSON path's own checks, from C++.
  Config c;
  c.device_id = "c/1";
  auto bad = validate_config(c);
  REQUIRE_FALSE(bad.ok());
  CHECK(bad.error().message ==
        "/device_id: may contain only letters, digits, '-', '_' and '.', got \"c/1\"");
  c.device_id = std::string(129, 'a');
  CHECK(validate_config(c).error().json_pointer == "/device_id");
}

TEST_CASE("labels: parsed, limited to 16, names and values of safe characters",
          "[config][labels]") {
  auto ok = parse_config(R"({"device_id": "d", "labels": {"site": "berlin-3", "store": "s_01",
      "model": "cart.mk2", "firmware": "4.2.1", "region": "eu-central-1"}})");
  REQUIRE(ok.ok());
  CHECK(ok->labels.size() == 5);
  CHECK(ok->labels.at("firmware") == "4.2.1");

  std::string sixteen, seventeen;
  for (int i = 0; i < 17; ++i) {
    std::string item = "\"k" + std::to_string(i) + "\": \"v\"";
    if (i < 16) sixteen += (i ? ", " : "") + item;
    seventeen += (i ? ", " : "") + item;
  }
  CHECK(parse_config(R"({"device_id": "d", "labels": {)" + sixteen + "}}").ok());
  auto many = parse_config(R"({"device_id": "d", "labels": {)" + seventeen + "}}");
  REQUIRE_FALSE(many.ok());
  CHECK(many.error().message == "/labels: at most 16 labels, got 17");

  auto nonstring = parse_config(R"({"device_id": "d", "labels": {"site": 5}})");
  REQUIRE_FALSE(nonstring.ok());
  CHECK(nonstring.error().json_pointer == "/labels/site");

  DeviceLabels labels{{"site", std::string(kMaxLabelValueLength, 'v')}};
  CHECK(validate_labels(labels).ok());
  labels["site"] += "v";
  CHECK(validate_labels(labels).error().json_pointer == "/labels/site");
  labels = {{std::string(kMaxLabelKeyLength + 1, 'k'), "v"}};
  CHECK_FALSE(validate_labels(labels).ok());
  labels = {{"a~b", "v\n"}};
  auto hostile = validate_labels(labels);
  REQUIRE_FALSE(hostile.ok());
  CHECK(hostile.error().json_pointer == "/labels/a~0b");
}

TEST_CASE("Capture::create and Pipeline::create reject what validate_config() rejects",
          "[config][validate]") {
  // Capture: a delta window longer than the stream's ring.
  StreamConfig s;
  s.name = "imu";
  s.channels = {"a"};
  s.ring_seconds = 2;
  auto d = delta_trigger("d", "imu", "a", 1.0, 5.0);
  auto expected = validate_config({s}, {d});
  REQUIRE_FALSE(expected.ok());
  struct NullSink final : EventSink {
    AppendOutcome deliver(const RecordMeta&, std::string_view) override { return {}; }
  } sink;
  MetricsRegistry metrics;
  auto cap = Capture::create("dev-1", {s}, {d}, sink, Port{}, metrics);
  REQUIRE_FALSE(cap.ok());
  CHECK(cap.error().message == expected.error().message);

  // Pipeline: an uploader section built in C++ (the uploader is off: still checked, as JSON is).
  Config c;
  c.device_id = "dev-1";
  c.uploader.enabled = false;
  c.uploader.io_chunk_bytes = 0;
  c.buffer.path = "/nonexistent/never-opened";
  auto p = Pipeline::create(c);
  REQUIRE_FALSE(p.ok());
  CHECK(p.error().message == "/uploader/io_chunk_size: must be >= 4096, got 0");
  CHECK(p.error().json_pointer == "/uploader/io_chunk_size");
}
