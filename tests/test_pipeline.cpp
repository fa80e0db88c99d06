#include "fleetpipe/pipeline.hpp"

#include <catch2/catch.hpp>

#include <chrono>
#include <fstream>
#include <string>

#include <nlohmann/json.hpp>

#include "fleetpipe/version.hpp"
#include "support/test_paths.hpp"

using namespace fleetpipe;
using namespace std::chrono_literals;

namespace {

// A Port over a FakeClock (2026-11-25 12:00:00 UTC), a fake filesystem and a quiet log.
struct Env {
  FakeClock clock{WallTime{std::chrono::seconds(1795608000)}};
  FakeFilesystemStats fs;
  StderrLogSink quiet{LogLevel::off};
  Port port;
  Env() {
    port.clock = &clock;
    port.filesystem = &fs;
    port.log = &quiet;
  }
};

Config base_config(const std::string& tag) {
  Config c;
  c.device_id = "dev-1";
  c.buffer.path = test::scratch_dir(tag).string();
  c.buffer.durability = Durability::none;
  StreamConfig s;
  s.name = "imu";
  s.channels = {"accel"};
  c.streams.push_back(s);
  auto t = threshold_trigger("bump", "imu", "accel", ThresholdOp::above, 5.0);
  t.capture.pre_s = 1;
  t.capture.post_s = 1;
  t.priority = 5;
  c.triggers.push_back(t);
  c.uploader.enabled = false;
  return c;
}

std::unique_ptr<Pipeline> make(Config c, const Port& port) {
  auto p = Pipeline::create(std::move(c), port);
  if (!p) FAIL(p.error().message);
  return std::move(*p);
}

// 10 Hz samples from t0 for `seconds`, one bump at `bump_at` (if >= 0); the clock follows.
void feed(Pipeline& p, Env& env, double t0, double seconds, double bump_at) {
  auto imu = p.stream("imu");
  for (double t = t0; t < t0 + seconds - 1e-9; t += 0.1) {
    bool bump = bump_at >= 0 && t >= bump_at - 1e-9 && t < bump_at + 0.05;
    p.push(imu, t, {bump ? 9.0 : 0.0});
    env.clock.advance(100ms);
    p.poll(500us);
  }
}

}  // namespace

TEST_CASE("Pipeline::create rejects a config without device_id", "[pipeline]") {
  Env env;
  Config c = base_config("pl-nodev");
  c.device_id.clear();
  auto p = Pipeline::create(c, env.port);
  REQUIRE_FALSE(p.ok());
  CHECK(p.error().is(errc::invalid_config));
  CHECK(p.error().json_pointer == "/device_id");
}

TEST_CASE("Pipeline::create reports a component's config error", "[pipeline]") {
  Env env;
  Config c = base_config("pl-badtrig");
  c.triggers[0].stream = "no_such_stream";
  auto p = Pipeline::create(c, env.port);
  REQUIRE_FALSE(p.ok());
  CHECK(p.error().is(errc::invalid_config));
}

TEST_CASE("push and poll record a triggered event into the buffer", "[pipeline]") {
  Env env;
  auto p = make(base_config("pl-event"), env.port);
  feed(*p, env, 0, 5, 2.0);
  auto s = p->status();
  CHECK(s.capture.events == 1);
  REQUIRE(s.triggers.size() == 1);
  CHECK(s.triggers[0].name == "bump");
  CHECK(s.triggers[0].stats.fires == 1);
  CHECK(s.buffer.records == 1);
  CHECK(s.buffer.by_priority[5].records == 1);
  CHECK(s.device_id == "dev-1");
  CHECK(s.polls == 50);
  CHECK_FALSE(p->has_uploader());
}

TEST_CASE("poll's auto-tick finishes an event when the streams go quiet", "[pipeline]") {
  Env env;
  auto p = make(base_config("pl-autotick"), env.port);
  auto imu = p->stream("imu");
  p->push(imu, 10.0, {0.0});
  p->push(imu, 10.1, {9.0});  // fires; post window ends at 11.1
  p->poll(500us);
  CHECK(p->status().capture.events == 0);
  env.clock.advance(2s);  // no more samples, but time passes on the Port clock
  p->poll(500us);
  CHECK(p->status().capture.events == 1);
  CHECK(p->status().buffer.records == 1);
}

TEST_CASE("auto_tick off leaves the event open until the host ticks", "[pipeline]") {
  Env env;
  Config c = base_config("pl-noautotick");
  c.pipeline.auto_tick = false;
  auto p = make(c, env.port);
  auto imu = p->stream("imu");
  p->push(imu, 10.0, {0.0});
  p->push(imu, 10.1, {9.0});
  env.clock.advance(5s);
  p->poll(500us);
  CHECK(p->status().capture.events == 0);
  p->tick(12.0);  // closes the event into the hand-off; the next poll appends it
  CHECK(p->status().capture.handoff_pending == 1);
  CHECK(p->status().capture.events == 0);
  p->poll(500us);
  CHECK(p->status().capture.events == 1);
  CHECK(p->status().buffer.records == 1);
}

TEST_CASE("push and tick never append to the buffer, even under sync: poll does", "[pipeline]") {
  Env env;
  Config c = base_config("pl-handoff");
  c.buffer.durability = Durability::sync;
  auto p = make(c, env.port);
  auto imu = p->stream("imu");
  p->push(imu, 1.0, {9.0});   // fires; post window ends at 2.0
  p->push(imu, 2.5, {0.0});   // closes it: into the hand-off, not the buffer
  p->tick(3.0);
  auto s = p->status();
  CHECK(s.capture.handoff_pending == 1);
  CHECK(s.capture.events == 0);
  CHECK(s.buffer.records == 0);
  p->poll(500us);
  s = p->status();
  CHECK(s.capture.handoff_pending == 0);
  CHECK(s.capture.events == 1);
  CHECK(s.buffer.records == 1);
  const PollProfile& pp = p->last_poll();
  CHECK(pp.events_delivered == 1);
  CHECK(pp.buffer_append.count() > 0);
  CHECK(pp.total >= pp.buffer_append + pp.encode);
}

TEST_CASE("a full hand-off drops the newest finished event, counted", "[pipeline]") {
  Env env;
  auto p = make(base_config("pl-handoff-full"), env.port);  // 1 stream: 4 slots
  auto imu = p->stream("imu");
  for (int k = 0; k < 7; ++k) {  // 6 events closed without a poll, the 7th left open
    p->push(imu, 3.0 * k, {9.0});
    p->push(imu, 3.0 * k + 0.5, {0.0});
  }
  auto s = p->status();
  CHECK(s.capture.handoff_pending == 4);
  CHECK(s.capture.handoff_full == 2);
  CHECK(s.capture.events_dropped == 2);
  CHECK(s.buffer.records == 0);
  for (int i = 0; i < 10 && p->status().capture.handoff_pending; ++i) p->poll(500us);
  s = p->status();
  CHECK(s.capture.events == 4);
  CHECK(s.buffer.records == 4);
  CHECK(p->metrics_prometheus().find(
            "fleetpipe_capture_events_dropped_total{reason=\"handoff_full\"} 2") !=
        std::string::npos);
}

TEST_CASE("name-based push and fire forward to capture and report unknown names",
          "[pipeline]") {
  Env env;
  Config c = base_config("pl-names");
  c.triggers.push_back(manual_trigger("mark"));
  auto p = make(c, env.port);
  CHECK(p->push("imu", 1.0, {{"accel", 0.0}}).ok());
  auto bad = p->push("nope", 1.1, {{"accel", 0.0}});
  REQUIRE_FALSE(bad.ok());
  CHECK(bad.error().is(errc::invalid_argument));
  auto fired = p->fire("mark", 1.2);
  REQUIRE(fired.ok());
  CHECK(*fired);
  CHECK_FALSE(p->fire("nope", 1.3).ok());
  CHECK(p->trigger("mark").valid());
  CHECK_FALSE(p->stream("nope").valid());
}

TEST_CASE("the destructor finishes open events into the buffer", "[pipeline]") {
  Env env;
  Config c = base_config("pl-dtor");
  {
    auto p = make(c, env.port);
    auto imu = p->stream("imu");
    p->push(imu, 1.0, {0.0});
    p->push(imu, 1.1, {9.0});  // event still open (post window 1 s)
    CHECK(p->status().capture.open_events == 1);
  }
  auto again = make(c, env.port);
  CHECK(again->status().buffer.records == 1);
}

TEST_CASE("metrics export pipeline gauges and every component's counters", "[pipeline]") {
  Env env;
  auto p = make(base_config("pl-metrics"), env.port);
  feed(*p, env, 0, 4, 1.0);
  std::string prom = p->metrics_prometheus();
  CHECK(prom.find("fleetpipe_pipeline_backlog_records{priority=\"5\"} 1") != std::string::npos);
  CHECK(prom.find("fleetpipe_pipeline_polls_total 40") != std::string::npos);
  CHECK(prom.find("fleetpipe_capture_events_total 1") != std::string::npos);
  CHECK(prom.find("# TYPE fleetpipe_pipeline_heartbeats_total counter") != std::string::npos);
  auto j = nlohmann::json::parse(p->metrics_json());
  CHECK(j.contains("fleetpipe_pipeline_uptime_seconds"));
  CHECK(j["fleetpipe_pipeline_uptime_seconds"]["series"][0]["value"].get<double>() ==
        Approx(4.0));
  CHECK(j.contains("fleetpipe_capture_events_total"));
}

TEST_CASE("the heartbeat document is compact: device, version, backlog, fires, labels, no metrics",
          "[pipeline]") {
  Env env;
  Config c = base_config("pl-hbdoc");
  c.labels = {{"site", "store-01"}, {"model", "cart-v2"}};
  auto p = make(c, env.port);
  feed(*p, env, 0, 4, 1.0);
  auto j = nlohmann::json::parse(p->heartbeat_json());
  CHECK(j["schema"] == "fleetpipe.heartbeat/2");
  CHECK(j["device"] == "dev-1");
  CHECK(j["sdk"] == kVersion);
  CHECK(j["t"] == 1795608004000);  // 2026-11-25T12:00:04.000Z in unix ms
  CHECK(j["up"] == 4);
  CHECK(j["net"] == "online");
  CHECK(j["state"] == "local");  // no uploader
  CHECK(j["backlog"][0] == 1);
  CHECK(j["buf"] == nlohmann::json::array({0, 0, 0}));
  CHECK(j["fires"]["bump"] == 1);
  CHECK(j["labels"]["site"] == "store-01");
  CHECK(j["labels"]["model"] == "cart-v2");
  CHECK(j["err"] == 0);
  CHECK_FALSE(j.contains("last_error"));
  CHECK_FALSE(j.contains("campaigns"));  // no campaign agent
  CHECK_FALSE(j.contains("metrics"));
  CHECK(j.dump().size() < 400);
}

TEST_CASE("the full metrics export rides on every Nth heartbeat or on request", "[pipeline]") {
  Env env;
  Config c = base_config("pl-hbmetrics");
  auto p = make(c, env.port);
  CHECK_FALSE(nlohmann::json::parse(p->heartbeat_json()).contains("metrics"));
  p->request_metrics_heartbeat();
  auto j = nlohmann::json::parse(p->heartbeat_json());
  REQUIRE(j.contains("metrics"));
  CHECK(j["metrics"].contains("fleetpipe_capture_events_total"));

  Config c3 = base_config("pl-hbmetrics3");
  c3.pipeline.heartbeat_metrics_every = 3;
  auto every = make(c3, env.port);
  CHECK(nlohmann::json::parse(every->heartbeat_json()).contains("metrics"));  // seq 0

  auto parsed = parse_config(R"({"device_id": "d", "pipeline": {"heartbeat_metrics_every": 12}})");
  REQUIRE(parsed.ok());
  CHECK(parsed->pipeline.heartbeat_metrics_every == 12);
  auto bad = parse_config(R"({"device_id": "d", "pipeline": {"heartbeat_metrics_every": -1}})");
  REQUIRE_FALSE(bad.ok());
  CHECK(bad.error().json_pointer == "/pipeline/heartbeat_metrics_every");
}

TEST_CASE("heartbeat keys follow {prefix}/_heartbeat/device={id}/{time}-{seq}.json", "[pipeline]") {
  Env env;
  Config c = base_config("pl-hbkey");
  c.uploader.prefix = "fleet-a";
  auto p = make(c, env.port);
  CHECK(p->heartbeat_key(env.clock.wall()) ==
        "fleet-a/_heartbeat/device=dev-1/20261125T120000.000Z-0.json");
}

TEST_CASE("each pipeline owns its network cell unless the host passes one", "[pipeline]") {
  Env env;
  auto a = make(base_config("pl-net-a"), env.port);
  auto b = make(base_config("pl-net-b"), env.port);
  a->set_network_state(NetworkState::offline);
  CHECK(a->network_state() == NetworkState::offline);
  CHECK(b->network_state() == NetworkState::online);

  NetworkStatus host_cell;
  Port shared = env.port;
  shared.network = &host_cell;
  auto c = make(base_config("pl-net-c"), shared);
  host_cell.set(NetworkState::metered);
  CHECK(c->network_state() == NetworkState::metered);
}

TEST_CASE("the host's log sink receives the pipeline's log lines", "[pipeline]") {
  Env env;
  std::vector<std::string> lines;
  CallbackLogSink sink([&](LogLevel, std::string_view c, std::string_view m) {
    lines.push_back(std::string(c) + ": " + std::string(m));
  });
  Port port = env.port;
  port.log = &sink;  // the host's sink gets every line; the pipeline forwards it
  auto p = make(base_config("pl-log"), port);
  bool started = false;
  for (auto& l : lines) started = started || l.find("started device dev-1") != std::string::npos;
  CHECK(started);
}

TEST_CASE("the pipeline section parses its keys and rejects unknown ones", "[pipeline][config]") {
  auto ok = parse_config(R"({"device_id": "d", "pipeline": {"heartbeat_interval": "60s",
      "poll_budget": "1ms", "heartbeat_on_start": false, "auto_tick": false}})");
  REQUIRE(ok.ok());
  CHECK(ok->pipeline.heartbeat_interval_s == Approx(60));
  CHECK(ok->pipeline.poll_budget_s == Approx(0.001));
  CHECK_FALSE(ok->pipeline.heartbeat_on_start);
  CHECK_FALSE(ok->pipeline.auto_tick);
  auto bad = parse_config(R"({"device_id": "d", "pipeline": {"heartbeat": 1}})");
  REQUIRE_FALSE(bad.ok());
  CHECK(bad.error().json_pointer == "/pipeline/heartbeat");
  auto zero = parse_config(R"({"device_id": "d", "pipeline": {"poll_budget": 0}})");
  REQUIRE_FALSE(zero.ok());
  CHECK(zero.error().json_pointer == "/pipeline/poll_budget");
}

// An uploader with static keys aimed at `endpoint` on 127.0.0.1 where nothing answers.
Config with_dead_uploader(Config c, const std::string& endpoint) {
  c.uploader.enabled = true;
  c.uploader.endpoint = endpoint;
  c.uploader.bucket = "bucket-x";
  c.uploader.credentials.source = CredentialsSource::static_keys;
  c.uploader.credentials.access_key_id = "AK";
  c.uploader.credentials.secret_access_key = "SK";
  return c;
}

TEST_CASE("a heartbeat due while offline is skipped and counted", "[pipeline]") {
  Env env;
  Config c = with_dead_uploader(base_config("pl-hboff"), "https://127.0.0.1:9");  // never reached: offline
  c.pipeline.heartbeat_interval_s = 60;
  auto p = make(c, env.port);
  p->set_network_state(NetworkState::offline);
  p->poll(500us);  // heartbeat_on_start: due now
  env.clock.advance(61s);
  p->poll(500us);
  auto s = p->status();
  CHECK(s.heartbeats_skipped == 2);
  CHECK(s.heartbeats_sent == 0);
  CHECK(p->metrics().value("fleetpipe_pipeline_heartbeats_total",
                           {{"result", "skipped_offline"}}) == 2);
}

TEST_CASE("a heartbeat due while uploads are paused is skipped and counted", "[pipeline]") {
  Env env;
  Config c = with_dead_uploader(base_config("pl-hbpause"), "https://127.0.0.1:9");  // never reached: paused
  c.pipeline.heartbeat_interval_s = 60;
  auto p = make(c, env.port);
  p->pause_uploads();
  p->poll(500us);  // heartbeat_on_start: due now, host pause
  env.clock.advance(61s);
  p->set_network_state(NetworkState::metered);  // pause_when_metered (default)
  p->resume_uploads();
  p->poll(500us);
  auto s = p->status();
  CHECK(s.heartbeats_skipped == 2);
  CHECK(s.heartbeats_sent == 0);
  CHECK(s.heartbeats_failed == 0);
  CHECK(p->metrics().value("fleetpipe_pipeline_heartbeats_total", {{"result", "skipped_paused"}}) == 2);
  CHECK(p->metrics().value("fleetpipe_pipeline_heartbeats_total", {{"result", "skipped_offline"}}) == 0);
}

TEST_CASE("a heartbeat that cannot be delivered is counted as failed", "[pipeline]") {
  Env env;
  Config c = with_dead_uploader(base_config("pl-hbfail"), "http://127.0.0.1:9");  // discard port: refused
  c.uploader.allow_insecure_http = true;
  c.uploader.connect_timeout_s = 2;
  auto p = make(c, env.port);
  p->request_heartbeat();
  for (int i = 0; i < 500 && p->status().heartbeats_failed == 0; ++i) p->run_for(10ms);
  auto s = p->status();
  CHECK(s.heartbeats_failed == 1);
  CHECK(s.heartbeats_sent == 0);
  CHECK_FALSE(s.last_heartbeat.has_value());
}

TEST_CASE("without an uploader poll reports idle and drain reports unsupported", "[pipeline]") {
  Env env;
  auto p = make(base_config("pl-noup"), env.port);
  CHECK_FALSE(p->poll(500us));
  auto r = p->drain(100ms);
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().is(errc::unsupported));
  p->pause_uploads();  // no-ops without an uploader, never crash
  p->resume_uploads();
  p->flush_uploads();
  p->set_upload_rate(1000);
  CHECK(p->status().uploader.objects_uploaded == 0);
}

TEST_CASE("create_from_file builds the pipeline a JSON file describes", "[pipeline][config]") {
  Env env;
  auto dir = test::scratch_dir("pl-file");
  std::string path = (dir / "pipeline.json").string();
  {
    std::ofstream out(path);
    out << R"({"device_id": "file-dev", "buffer": {"path": ")" << (dir / "db").string()
        << R"("}, "uploader": {"enabled": false},
        "streams": [{"name": "imu", "channels": ["accel"]}],
        "triggers": [{"name": "bump", "type": "threshold", "stream": "imu",
                      "channel": "accel", "above": 5}],
        "pipeline": {"heartbeat_interval": "1min"}})";
  }
  auto p = Pipeline::create_from_file(path, env.port);
  REQUIRE(p.ok());
  CHECK((*p)->config().device_id == "file-dev");
  CHECK((*p)->config().pipeline.heartbeat_interval_s == Approx(60));
  CHECK((*p)->trigger("bump").valid());
  auto missing = Pipeline::create_from_file((dir / "nope.json").string(), env.port);
  REQUIRE_FALSE(missing.ok());
  CHECK(missing.error().is(errc::io_error));
}

TEST_CASE("one registry exports every counter the fleet is monitored by", "[pipeline]") {
  Env env;
  Config c = base_config("pl-families");
  c.uploader.enabled = true;
  c.uploader.endpoint = "https://127.0.0.1:9";
  c.uploader.bucket = "bucket-x";
  c.uploader.credentials.source = CredentialsSource::static_keys;
  c.uploader.credentials.access_key_id = "AK";
  c.uploader.credentials.secret_access_key = "SK";
  auto p = make(c, env.port);
  p->set_network_state(NetworkState::offline);
  feed(*p, env, 0, 4, 1.0);
  auto j = nlohmann::json::parse(p->metrics_json());
  std::string prom = p->metrics_prometheus();
  for (const char* family : {
           "fleetpipe_trigger_fires_total",            // trigger fires per trigger
           "fleetpipe_capture_events_total",           // events
           "fleetpipe_pipeline_backlog_records",       // buffer records per priority
           "fleetpipe_pipeline_backlog_bytes",         // buffer bytes per priority
           "fleetpipe_pipeline_wear_budget_used_ratio",  // wear-budget use
           "fleetpipe_uploader_uploads_total",         // uploads ok / failed
           "fleetpipe_uploader_retries_total",         // retried
           "fleetpipe_uploader_bytes_sent_total",      // bytes sent
           "fleetpipe_uploader_rate_bytes_per_second",  // current rate
           "fleetpipe_uploader_pauses_total",          // pause count
           "fleetpipe_uploader_paused_seconds",        // pause time
           "fleetpipe_uploader_multipart_resumed_total",  // resumed multipart uploads
           "fleetpipe_pipeline_heartbeats_total"}) {
    INFO(family);
    CHECK(j.contains(family));
    CHECK(prom.find(std::string("# TYPE ") + family + " ") != std::string::npos);
  }
  // Evictions and rejections are registered by the buffer at their first occurrence (with their
  // reason labels); until then the heartbeat carries the totals from BufferStats.
  auto hb = nlohmann::json::parse(p->heartbeat_json());
  CHECK(hb["buf"][0] == 0);  // evicted
  CHECK(hb["buf"][1] == 0);  // rejected
  bool bump_series = false;
  for (auto& s : j["fleetpipe_trigger_fires_total"]["series"]) {
    if (s["labels"].value("trigger", "") == "bump") bump_series = s["value"] == 1;
  }
  CHECK(bump_series);
}

TEST_CASE("auto-tick starts from the first sample time even when it is 0", "[pipeline]") {
  Env env;
  Config c = base_config("pl-tick0");
  auto b = periodic_trigger("baseline", 10);
  b.stream = "";
  b.capture.streams = {"imu"};
  b.capture.pre_s = 1;
  b.capture.post_s = 1;
  c.triggers.push_back(b);
  auto p = make(c, env.port);
  auto imu = p->stream("imu");
  for (int i = 0; i <= 400; ++i) {  // 40 s at 10 Hz from t = 0, polled every sample
    p->push(imu, i * 0.1, {0.0});
    env.clock.advance(100ms);
    p->poll(500us);
  }
  auto s = p->status();
  CHECK(s.triggers[1].stats.fires == 4);  // t = 10, 20, 30, 40 (not a jump to the clock's epoch)
  CHECK(s.triggers[1].stats.events >= 3);
}
