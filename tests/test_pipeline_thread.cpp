#include "fleetpipe/pipeline_thread.hpp"

#include <catch2/catch.hpp>

#include <pthread.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "support/counting_allocator.hpp"
#include "support/test_paths.hpp"

using namespace fleetpipe;
using namespace std::chrono_literals;

namespace {

// A Port over a FakeClock that is never advanced while a pipeline thread runs (the thread reads
// it; FakeClock is not thread-safe for writes), a fake filesystem and a log sink that keeps lines.
struct Env {
  FakeClock clock{WallTime{std::chrono::seconds(1795608000)}};
  FakeFilesystemStats fs;
  std::mutex mu;
  std::vector<std::string> lines;
  CallbackLogSink sink{[this](LogLevel, std::string_view c, std::string_view m) {
                         std::lock_guard<std::mutex> g(mu);
                         lines.push_back(std::string(c) + ": " + std::string(m));
                       },
                       LogLevel::info};
  Port port;
  Env() {
    port.clock = &clock;
    port.filesystem = &fs;
    port.log = &sink;
  }
  bool logged(const std::string& needle) {
    std::lock_guard<std::mutex> g(mu);
    for (auto& l : lines)
      if (l.find(needle) != std::string::npos) return true;
    return false;
  }
};

// imu (2 channels) + cam (blobs); "bump" (accel > 5) records both 1 s before / 1 s after;
// "mark" is a manual trigger. No uploader unless the test enables one.
Config base_config(const std::string& tag) {
  Config c;
  c.device_id = "dev-thread";
  c.buffer.path = test::scratch_dir(tag).string();
  c.buffer.durability = Durability::none;
  StreamConfig imu;
  imu.name = "imu";
  imu.channels = {"accel", "gyro"};
  StreamConfig cam;
  cam.name = "cam";
  cam.kind = StreamKind::blob;
  cam.ring_bytes = 1 << 20;
  cam.content_type = "application/octet-stream";
  c.streams = {imu, cam};
  auto bump = threshold_trigger("bump", "imu", "accel", ThresholdOp::above, 5.0);
  bump.capture.streams = {"imu", "cam"};
  bump.capture.pre_s = 1;
  bump.capture.post_s = 1;
  bump.priority = 5;
  auto mark = manual_trigger("mark");
  mark.capture.streams = {"imu"};
  mark.capture.pre_s = 0.5;
  mark.capture.post_s = 0.5;
  c.triggers = {bump, mark};
  c.uploader.enabled = false;
  c.pipeline.heartbeat_on_start = false;
  return c;
}

// An uploader that can never deliver (connection refused on the discard port): pause, resume,
// rate, flush and heartbeats all have something to act on, without a server.
Config dead_uploader_config(const std::string& tag) {
  Config c = base_config(tag);
  c.uploader.enabled = true;
  c.uploader.endpoint = "http://127.0.0.1:9";
  c.uploader.allow_insecure_http = true;
  c.uploader.bucket = "bucket-x";
  c.uploader.connect_timeout_s = 2;
  c.uploader.max_object_age_s = 0.05;
  c.uploader.credentials.source = CredentialsSource::static_keys;
  c.uploader.credentials.access_key_id = "AK";
  c.uploader.credentials.secret_access_key = "SK";
  c.pipeline.heartbeat_interval_s = 3600;
  return c;
}

std::unique_ptr<Pipeline> make_pipeline(Config c, const Port& port) {
  auto p = Pipeline::create(std::move(c), port);
  if (!p) FAIL(p.error().message);
  return std::move(*p);
}

std::unique_ptr<PipelineThread> make_thread(Config c, const Port& port,
                                            PipelineThreadOptions o = {}) {
  auto t = PipelineThread::create(make_pipeline(std::move(c), port), std::move(o));
  if (!t) FAIL(t.error().message);
  return std::move(*t);
}

// The test's sample sequence: 100 Hz rows for 7 s (bumps at 2.0 and 4.5 s), a 1-3 KB blob
// every 10 rows, a manual fire at 3.3 s; the last events close before the end.
struct Sample {
  enum Kind { row, blob, fire } kind;
  double t;
  double v[2];
  std::string bytes;
};
std::vector<Sample> sequence() {
  std::vector<Sample> out;
  for (int i = 0; i < 700; ++i) {
    double t = i * 0.01;
    bool bump = i == 200 || i == 450;
    out.push_back({Sample::row, t, {bump ? 9.0 : std::sin(t), 0.5 * i}, {}});
    if (i % 10 == 0) {
      std::string b(1000 + 20 * static_cast<std::size_t>(i % 100), '\0');
      for (std::size_t k = 0; k < b.size(); ++k) b[k] = static_cast<char>((k * 131 + i) & 0xff);
      out.push_back({Sample::blob, t, {0, 0}, std::move(b)});
    }
    if (i == 330) out.push_back({Sample::fire, t, {0, 0}, {}});
  }
  return out;
}

// Every record in the buffer: stream, event id, triggers, priority and the payload bytes.
std::vector<std::string> buffer_records(Pipeline& p) {
  std::vector<std::string> out;
  auto lease = p.buffer().lease(~0ull);
  REQUIRE(lease.ok());
  for (std::size_t i = 0; i < lease->records().size(); ++i) {
    const auto& r = lease->records()[i];
    std::string s = r.meta.stream + "|" + r.meta.event_id + "|" + std::to_string(r.meta.priority);
    for (auto& t : r.meta.trigger_ids) s += "|" + t;
    auto payload = lease->payload(i);
    REQUIRE(payload.ok());
    s += "|" + std::string(*payload);
    out.push_back(std::move(s));
  }
  return out;
}

std::int64_t process_cpu_ns() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

double metric(PipelineThread& th, const char* reason) {
  return th.metrics().value("fleetpipe_pipeline_thread_dropped_samples_total",
                            {{"reason", reason}});
}

}  // namespace

TEST_CASE("create validates the options with typed errors", "[pipeline_thread]") {
  Env env;
  auto bad = [&](PipelineThreadOptions o, const std::string& what) {
    auto t = PipelineThread::create(make_pipeline(base_config("pt-opts"), env.port), o);
    REQUIRE_FALSE(t.ok());
    CHECK(t.error().is(errc::invalid_argument));
    CHECK(t.error().message.find(what) != std::string::npos);
  };
  auto null = PipelineThread::create(nullptr);
  REQUIRE_FALSE(null.ok());
  CHECK(null.error().is(errc::invalid_argument));
  PipelineThreadOptions o;
  o.queue_capacity = 0;
  bad(o, "queue_capacity");
  o = {};
  o.blob_slots = o.queue_capacity + 1;
  bad(o, "blob_slots");
  o = {};
  o.blob_slot_bytes = (std::size_t{1} << 30) + 1;
  bad(o, "blob_slot_bytes");
  o = {};
  o.blob_slots = 1024;
  o.blob_slot_bytes = std::size_t{1} << 30;
  bad(o, "4 GiB");
  o = {};
  o.idle_wait = 0ms;
  bad(o, "idle_wait");
  o = {};
  o.thread_name = "a-name-longer-than-15";
  bad(o, "thread_name");
  o = {};
  o.nice = 20;
  bad(o, "nice");
}

TEST_CASE("samples pushed through the thread land in the buffer exactly as pushed directly",
          "[pipeline_thread]") {
  const auto seq = sequence();
  Env env_direct, env_thread;

  auto direct = make_pipeline(base_config("pt-direct"), env_direct.port);
  {
    auto imu = direct->stream("imu"), cam = direct->stream("cam");
    auto mark = direct->trigger("mark");
    std::size_t n = 0;
    for (const auto& s : seq) {
      if (s.kind == Sample::row) direct->push(imu, s.t, s.v, 2);
      if (s.kind == Sample::blob) direct->push_blob(cam, s.t, s.bytes);
      if (s.kind == Sample::fire) REQUIRE(direct->capture().fire(mark, s.t).ok());
      if (++n % 10 == 0) direct->poll(500us);
    }
    direct->poll(500us);
  }

  PipelineThreadOptions o;
  o.queue_capacity = 64;  // small: the host outruns the thread and retries (no sample lost)
  o.blob_slots = 4;
  o.blob_slot_bytes = 4096;
  auto th = make_thread(base_config("pt-thread"), env_thread.port, o);
  REQUIRE(th->start().ok());
  CHECK(th->running());
  {
    auto imu = th->stream("imu"), cam = th->stream("cam");
    auto mark = th->trigger("mark");
    for (const auto& s : seq) {
      for (;;) {
        bool ok = s.kind == Sample::row    ? th->push(imu, s.t, s.v, 2)
                  : s.kind == Sample::blob ? th->push_blob(cam, s.t, s.bytes)
                                           : th->fire(mark, s.t);
        if (ok) break;
        std::this_thread::sleep_for(100us);
      }
    }
  }
  th->stop();
  CHECK_FALSE(th->running());
  auto st = th->stats();
  CHECK(st.queued == seq.size());
  CHECK(st.processed == seq.size());
  CHECK(st.queue_high_water >= 1);

  auto ds = direct->status();
  auto ts = th->pipeline().status();
  CHECK(ts.capture.samples == ds.capture.samples);
  CHECK(ts.capture.samples == seq.size() - 1);  // every row and blob (the fire is not a sample)
  CHECK(ts.capture.events == ds.capture.events);
  CHECK(ds.capture.events == 3);  // two bumps, one manual mark
  CHECK(ts.capture.invalid_samples == 0);
  CHECK(ts.capture.open_events == 0);
  auto want = buffer_records(*direct);
  auto got = buffer_records(th->pipeline());
  REQUIRE(want.size() == ds.buffer.records);
  CHECK(got.size() == want.size());
  CHECK(got == want);  // same streams, event ids, triggers, priorities, payload bytes
}

TEST_CASE("a full queue, full blob slots and oversized blobs are dropped and counted",
          "[pipeline_thread]") {
  Env env;
  PipelineThreadOptions o;
  o.queue_capacity = 8;
  o.blob_slots = 2;
  o.blob_slot_bytes = 100;
  auto th = make_thread(base_config("pt-drops"), env.port, o);
  auto imu = th->stream("imu"), cam = th->stream("cam");
  // Not started: nothing takes the queue, so it fills deterministically.
  CHECK(th->push_blob(cam, 0.0, std::string(50, 'a')));
  CHECK(th->push_blob(cam, 0.01, std::string(100, 'b')));  // exactly a slot
  CHECK_FALSE(th->push_blob(cam, 0.02, std::string(10, 'c')));   // no free slot
  CHECK_FALSE(th->push_blob(cam, 0.03, std::string(101, 'd')));  // larger than a slot
  int accepted_rows = 0;
  for (int i = 0; i < 10; ++i) accepted_rows += th->push(imu, 0.1 + i * 0.01, {1.0, 2.0}) ? 1 : 0;
  CHECK(accepted_rows == 6);  // 8 entries, 2 taken by the blobs
  CHECK_FALSE(th->tick(1.0));
  auto st = th->stats();
  CHECK(st.queued == 8);
  CHECK(st.dropped_queue_full == 1 + 4 + 1);
  CHECK(st.dropped_blob_too_large == 1);
  CHECK(metric(*th, "queue_full") == 6);
  CHECK(metric(*th, "blob_too_large") == 1);

  th->stop();  // not running: the caller takes the queue; everything accepted reaches Capture
  st = th->stats();
  CHECK(st.processed == 8);
  CHECK(th->pipeline().status().capture.samples == 8);
  CHECK(env.logged("samples dropped so far (queue_full"));
  CHECK(env.logged("samples dropped so far (blob_too_large"));

  // The slots are free again: the same blob fits now.
  CHECK(th->push_blob(cam, 0.5, std::string(100, 'e')));
}

TEST_CASE("push, push_blob, fire, tick and drops allocate nothing", "[pipeline_thread]") {
  Env env;
  PipelineThreadOptions o;
  o.queue_capacity = 256;
  o.blob_slots = 4;
  o.blob_slot_bytes = 4096;
  auto th = make_thread(base_config("pt-alloc"), env.port, o);
  auto imu = th->stream("imu"), cam = th->stream("cam");
  auto mark = th->trigger("mark");
  const std::string frame(4000, 'x'), huge(5000, 'y');
  const double v[2] = {1.0, 2.0};
  const auto before = test::g_allocs.load();
  int ok = 0;
  for (int i = 0; i < 300; ++i) {  // past capacity: the drop path too
    ok += th->push(imu, i * 0.01, v, 2);
    ok += th->push(imu, i * 0.01, {3.0});
    if (i % 50 == 0) ok += th->push_blob(cam, i * 0.01, frame);
    if (i % 100 == 0) ok += th->push_blob(cam, i * 0.01, huge);
    if (i == 10) ok += th->fire(mark, i * 0.01);
    if (i == 11) ok += th->tick(i * 0.01);
  }
  const auto after = test::g_allocs.load();
  CHECK(after - before == 0);
  CHECK(ok == 256);
  CHECK(th->stats().dropped_queue_full > 0);
  CHECK(th->stats().dropped_blob_too_large == 3);
}

TEST_CASE("entries queued before start or before stop are all processed", "[pipeline_thread]") {
  Env env;
  auto th = make_thread(base_config("pt-stop"), env.port);
  auto imu = th->stream("imu");
  for (int i = 0; i < 100; ++i) REQUIRE(th->push(imu, i * 0.01, {0.0, 0.0}));
  REQUIRE(th->start().ok());
  for (int i = 100; i < 900; ++i) REQUIRE(th->push(imu, i * 0.01, {0.0, 0.0}));  // < capacity
  th->stop();  // immediately: whatever the thread has not taken yet is processed before join
  CHECK(th->stats().processed == 900);
  CHECK(th->pipeline().status().capture.samples == 900);

  // Restartable; pushes after stop wait for the next start (or stop).
  for (int i = 900; i < 950; ++i) REQUIRE(th->push(imu, i * 0.01, {0.0, 0.0}));
  CHECK(th->stats().processed == 900);
  REQUIRE(th->start().ok());
  auto again = th->start();
  REQUIRE_FALSE(again.ok());
  CHECK(again.error().is(errc::invalid_argument));
  auto s = th->status(5s);  // runs on the thread, after every entry queued before the call
  REQUIRE(s.ok());
  CHECK(s->capture.samples == 950);
  th->stop();
}

TEST_CASE("release stops the thread and hands the pipeline back", "[pipeline_thread]") {
  Env env;
  Config c = base_config("pt-release");
  auto th = make_thread(c, env.port);
  auto imu = th->stream("imu");
  REQUIRE(th->start().ok());
  REQUIRE(th->push(imu, 1.0, {0.0, 0.0}));
  REQUIRE(th->push(imu, 1.1, {9.0, 0.0}));  // opens an event (post window 1 s)
  auto p = th->release();
  REQUIRE(p);
  CHECK_FALSE(th->running());
  CHECK(p->status().capture.samples == 2);
  CHECK(p->status().capture.open_events == 1);
  CHECK_FALSE(th->push(imu, 1.2, {0.0, 0.0}));  // released: refused, nothing counted
  CHECK_FALSE(th->start().ok());
  CHECK_FALSE(th->release());
  p.reset();  // the caller's pipeline finishes the open event into the buffer
  auto again = make_pipeline(c, env.port);
  CHECK(again->status().buffer.records == 1);
}

TEST_CASE("calls run on the named, niced pipeline thread", "[pipeline_thread]") {
  Env env;
  PipelineThreadOptions o;
  o.thread_name = "fp-test";
  errno = 0;
  const int base_nice = getpriority(PRIO_PROCESS, 0);
  o.nice = std::min(19, base_nice + 3);
  std::atomic<int> hook_calls{0};
  o.on_thread_start = [&] { hook_calls.fetch_add(1); };
  auto th = make_thread(base_config("pt-name"), env.port, o);
  REQUIRE(th->start().ok());
  std::string name;
  int nice_value = -100;
  std::thread::id id;
  auto r = th->call(
      [&](Pipeline&) {
        char buf[32] = {};
        pthread_getname_np(pthread_self(), buf, sizeof buf);
        name = buf;
        errno = 0;
        nice_value = getpriority(PRIO_PROCESS, static_cast<id_t>(syscall(SYS_gettid)));
        id = std::this_thread::get_id();
      },
      5s);
  REQUIRE(r.ok());
  CHECK(name == "fp-test");
  CHECK(nice_value == *o.nice);
  CHECK(id != std::this_thread::get_id());
  CHECK(hook_calls.load() == 1);

  auto threw = th->call([](Pipeline&) { throw std::runtime_error("boom"); }, 5s);
  REQUIRE_FALSE(threw.ok());
  CHECK(threw.error().is(errc::internal));
  CHECK(threw.error().message.find("boom") != std::string::npos);

  auto m = th->metrics_prometheus();
  REQUIRE(m.ok());
  CHECK(m->find("fleetpipe_pipeline_thread_running 1") != std::string::npos);
  auto d = th->drain(100ms);  // runs Pipeline::drain on the thread: no uploader here
  REQUIRE_FALSE(d.ok());
  CHECK(d.error().is(errc::unsupported));
  th->stop();
  CHECK(hook_calls.load() == 1);
}

TEST_CASE("control calls from a third thread while the host pushes", "[pipeline_thread]") {
  Env env;
  PipelineThreadOptions o;
  o.queue_capacity = 4096;
  o.blob_slots = 16;
  o.blob_slot_bytes = 4096;
  o.idle_wait = 5ms;
  auto th = make_thread(dead_uploader_config("pt-controls"), env.port, o);
  REQUIRE(th->pipeline().has_uploader());
  REQUIRE(th->start().ok());
  auto imu = th->stream("imu"), cam = th->stream("cam");
  std::atomic<bool> done{false};
  std::uint64_t accepted = 0;
  std::thread host([&] {
    const std::string frame(2000, 'f');
    for (int i = 0; i < 3000; ++i) {
      const double t = i * 0.001;
      accepted += th->push(imu, t, {i % 500 == 0 ? 9.0 : 0.0, 1.0});  // events now and then
      if (i % 20 == 0) accepted += th->push_blob(cam, t, frame);
      if (i % 50 == 0) std::this_thread::sleep_for(1ms);
    }
    done = true;
  });
  int rounds = 0, statuses = 0;
  std::thread control([&] {
    while (!done.load()) {
      th->pause_uploads();
      th->set_upload_rate(1000.0 + rounds, 4096);
      th->set_network_state(rounds % 3 == 0 ? NetworkState::metered : NetworkState::online);
      th->flush_uploads();
      th->request_heartbeat();
      th->resume_uploads();
      if (auto s = th->status(5s); s.ok()) ++statuses;
      (void)th->stats();
      (void)th->metrics().value("fleetpipe_pipeline_polls_total");
      ++rounds;
    }
    th->pause_uploads();  // the final word
    th->set_upload_rate(12345, 0);
    th->set_network_state(NetworkState::online);
  });
  host.join();
  control.join();
  CHECK(rounds > 0);
  CHECK(statuses == rounds);
  auto s = th->status(5s);
  REQUIRE(s.ok());
  CHECK(s->capture.samples == accepted);  // the status call comes after every accepted push
  th->stop();
  auto st = th->stats();
  CHECK(st.processed == st.queued);
  CHECK(st.queued == accepted);
  auto us = th->pipeline().uploader().status();
  CHECK(us.paused_by_host);
  CHECK(th->pipeline().network_state() == NetworkState::online);
  CHECK(th->pipeline().metrics().value("fleetpipe_pipeline_polls_total") > 0);
}

TEST_CASE("an idle pipeline thread sleeps instead of spinning", "[pipeline_thread]") {
  const bool with_uploader = GENERATE(false, true);
  Env env;
  auto th = make_thread(with_uploader ? dead_uploader_config("pt-idle-up")
                                      : base_config("pt-idle"),
                        env.port);
  auto imu = th->stream("imu");
  REQUIRE(th->start().ok());
  REQUIRE(th->push(imu, 0.0, {0.0, 0.0}));
  std::this_thread::sleep_for(200ms);  // settle (startup, first polls)
  const auto w0 = th->stats().wakeups;
  const auto c0 = process_cpu_ns();   // only the pipeline thread works in this process now
  std::this_thread::sleep_for(500ms);
  const auto cpu_ms = (process_cpu_ns() - c0) / 1e6;
  const auto wakeups = th->stats().wakeups - w0;
  INFO("with uploader: " << with_uploader << ", CPU " << cpu_ms << " ms, " << wakeups
                         << " wakeups in 500 ms (idle_wait 50 ms)");
  CHECK(cpu_ms < 50);        // generous: a spinning thread burns ~500 ms
  CHECK(wakeups < 100);      // ~10 expected; a 2 ms slice loop would be ~250
  CHECK(th->stats().processed == 1);
  th->stop();
}

TEST_CASE("without blob storage every blob is dropped as blob_too_large", "[pipeline_thread]") {
  Env env;
  PipelineThreadOptions o;
  o.blob_slots = 0;
  auto th = make_thread(base_config("pt-noblob"), env.port, o);
  auto cam = th->stream("cam");
  CHECK_FALSE(th->push_blob(cam, 0.0, "x"));
  CHECK(th->push_blob(cam, 0.1, ""));  // an empty blob needs no slot
  CHECK(th->stats().dropped_blob_too_large == 1);
  CHECK(th->stats().dropped_queue_full == 0);
  th->stop();
  CHECK(th->pipeline().status().capture.samples == 1);
}

TEST_CASE("a call the busy thread does not pick up in time times out and never runs",
          "[pipeline_thread]") {
  Env env;
  auto th = make_thread(base_config("pt-timeout"), env.port);
  REQUIRE(th->start().ok());
  std::atomic<bool> entered{false}, release{false};
  std::thread blocker([&] {
    auto r = th->call(
        [&](Pipeline&) {
          entered = true;
          while (!release.load()) std::this_thread::sleep_for(1ms);
        },
        10s);
    CHECK(r.ok());
  });
  while (!entered.load()) std::this_thread::sleep_for(1ms);
  bool ran = false;
  auto late = th->call([&](Pipeline&) { ran = true; }, 50ms);  // the thread is inside the first
  REQUIRE_FALSE(late.ok());
  CHECK(late.error().is(errc::timeout));
  release = true;
  blocker.join();
  auto after = th->status(5s);  // the thread serves calls again
  CHECK(after.ok());
  th->stop();
  CHECK_FALSE(ran);
}
