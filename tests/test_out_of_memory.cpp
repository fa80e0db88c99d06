// Out of memory never terminates the host: Capture (push, push_blob, fire, tick, flush) and
// Pipeline (the same, and poll) run with an allocator that fails after N allocations, for every
// N up to what the run needs; each lost event is counted, logged, and the next one works.
#include "fleetpipe/capture.hpp"

#include <catch2/catch.hpp>

#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

#include "capture/event_format.hpp"
#include "fleetpipe/pipeline.hpp"
#include "support/counting_allocator.hpp"
#include "support/test_paths.hpp"

using namespace fleetpipe;
using fleetpipe::test::FailAfter;
using fleetpipe::test::g_allocs;

namespace {

// Stores every event; allocates (so it fails too when memory runs out).
class StoringSink final : public EventSink {
 public:
  AppendOutcome deliver(const RecordMeta&, std::string_view payload) override {
    events.emplace_back(payload);
    AppendOutcome out;
    out.accepted = true;
    out.id = events.size();
    return out;
  }
  std::vector<std::string> events;
};

// Counts lines without allocating: how many, and how many report a dropped event.
class CountingLog final : public LogSink {
 public:
  explicit CountingLog(LogLevel min) : min_(min) {}
  void write(LogLevel level, std::string_view, std::string_view message) noexcept override {
    ++lines;
    if (level < min_) ++below_min;
    if (level == LogLevel::error && message.find("dropped") != std::string_view::npos) {
      ++dropped_lines;
    }
  }
  bool enabled(LogLevel level) const noexcept override { return level >= min_; }
  std::uint64_t lines = 0, below_min = 0, dropped_lines = 0;

 private:
  LogLevel min_;
};

std::vector<StreamConfig> streams() {
  StreamConfig imu;
  imu.name = "imu";
  imu.channels = {"speed"};
  imu.ring_seconds = 2;
  imu.ring_bytes = 64 << 10;
  StreamConfig cam;
  cam.name = "cam";
  cam.kind = StreamKind::blob;
  cam.ring_seconds = 2;
  cam.ring_bytes = 64 << 10;
  return {imu, cam};
}

std::vector<TriggerConfig> triggers() {
  auto fast = threshold_trigger("fast", "imu", "speed", ThresholdOp::above, 10);
  fast.capture.streams = {"imu", "cam"};
  fast.capture.pre_s = 0.5;
  fast.capture.post_s = 0.5;
  auto snap = manual_trigger("snap");
  snap.capture.streams = {"cam"};
  snap.capture.pre_s = 0.2;
  snap.capture.post_s = 0.2;
  auto beat = periodic_trigger("beat", 1.5);
  beat.capture.streams = {"imu"};
  beat.capture.pre_s = 0.1;
  beat.capture.post_s = 0.1;
  return {fast, snap, beat};
}

const char kBlob[200] = "jpeg";

// Four seconds of samples with two threshold crossings, blobs, manual fires (by handle and by
// name), periodic fires and ticks; every call is one that must survive out of memory.
template <class Target>
void run_script(Target& c) {
  const auto imu = c.stream("imu");
  const auto cam = c.stream("cam");
  [[maybe_unused]] const auto snap = c.trigger("snap");
  for (int i = 0; i < 400; ++i) {
    const double t = i * 0.01;
    const bool fast = (i >= 100 && i < 110) || (i >= 250 && i < 255);
    c.push(imu, t, {fast ? 20.0 : 1.0});
    if (i % 5 == 0) c.push_blob(cam, t, std::string_view(kBlob, sizeof kBlob));
    if constexpr (std::is_same_v<Target, Capture>) {
      if (i == 200) (void)c.fire(snap, t);
    } else if (i == 200) {
      (void)c.fire("snap", t);
    }
    if (i == 300) (void)c.fire("snap", t);
    if (i % 50 == 0) c.tick(t + 0.005);
  }
  c.tick(10.0);
}

struct Rig {
  CountingLog log{LogLevel::warning};
  FakeClock clock;
  Port port;
  MetricsRegistry metrics;
  StoringSink sink;
  std::unique_ptr<Capture> capture;
  Rig() {
    port.clock = &clock;
    port.log = &log;
    auto c = Capture::create("dev-oom", streams(), triggers(), sink, port, metrics);
    if (!c) FAIL(c.error().message);
    capture = std::move(*c);
    sink.events.reserve(64);  // so the sink fails only when memory really runs out
  }
  double dropped_metric() const {
    return metrics.value("fleetpipe_capture_events_dropped_total", {{"reason", "out_of_memory"}});
  }
};

bool decodes(const std::string& payload) {
  auto d = detail::decode_events(payload);
  return d.ok() && !d->empty();
}

}  // namespace

TEST_CASE("Capture survives out of memory at every allocation and counts each lost event",
          "[capture][oom]") {
  std::uint64_t needed = 0;
  std::size_t baseline_events = 0;
  {
    Rig rig;
    const std::uint64_t before = g_allocs.load();
    run_script(*rig.capture);
    rig.capture->flush();
    needed = g_allocs.load() - before;
    baseline_events = rig.sink.events.size();
    REQUIRE(rig.capture->stats().events_dropped == 0);
  }
  REQUIRE(baseline_events >= 4);  // two crossings, two manual fires, periodic fires
  REQUIRE(needed > 10);

  std::uint64_t runs = 0, runs_with_drops = 0;
  for (std::uint64_t n = 0; n <= needed + 2; ++n) {
    Rig rig;
    {
      FailAfter fail(static_cast<std::int64_t>(n));
      run_script(*rig.capture);
      rig.capture->flush();
    }
    ++runs;
    const CaptureStats st = rig.capture->stats();
    INFO("allocations allowed: " << n << " of " << needed);
    CHECK(st.open_events == 0);
    CHECK(st.events == rig.sink.events.size());
    CHECK(double(st.events_dropped) == rig.dropped_metric());
    CHECK(rig.log.dropped_lines == st.events_dropped);
    if (n < needed) {
      CHECK(st.events_dropped >= 1);  // something failed, and it was counted
    } else {
      CHECK(st.events_dropped == 0);
      CHECK(st.events == baseline_events);
    }
    if (st.events_dropped) ++runs_with_drops;
    for (const auto& e : rig.sink.events) CHECK(decodes(e));

    // The capture goes on once memory is back: a new event is recorded whole.
    const auto before = st.events;
    auto fired = rig.capture->fire("snap", 20.0);
    REQUIRE(fired.ok());
    CHECK(*fired);
    rig.capture->tick(30.0);
    CHECK(rig.capture->stats().events == before + 1);
    REQUIRE(!rig.sink.events.empty());
    CHECK(decodes(rig.sink.events.back()));
  }
  CHECK(runs_with_drops >= needed / 2);
  WARN("out-of-memory runs: " << runs << ", allocations per run: " << needed);
}

TEST_CASE("Capture's name-based calls return out_of_memory instead of throwing", "[capture][oom]") {
  Rig rig;
  Result<bool> fired = false;
  Result<void> pushed, blob;
  {
    FailAfter fail(0);
    fired = rig.capture->fire("no-such-trigger-with-a-long-name", 1.0);
    pushed = rig.capture->push("no-such-stream-with-a-long-name", 1.0, {{"speed", 1.0}});
    blob = rig.capture->push_blob("no-such-stream-with-a-long-name", 1.0, "x");
  }
  REQUIRE(!fired.ok());
  CHECK(fired.error().is(errc::out_of_memory));
  REQUIRE(!pushed.ok());
  CHECK(pushed.error().is(errc::out_of_memory));
  REQUIRE(!blob.ok());
  CHECK(blob.error().is(errc::out_of_memory));
  // With memory, the same calls report what is wrong.
  auto again = rig.capture->fire("no-such-trigger-with-a-long-name", 1.0);
  REQUIRE(!again.ok());
  CHECK(again.error().is(errc::invalid_argument));
}

// Pipeline::poll under out of memory. Only poll() runs with the failing allocator, at a moment
// where the periodic trigger fires inside it (auto_tick): Buffer writes stay outside the armed
// window, because an exception inside a Buffer write transaction leaves the LMDB writer lock
// held today (src/buffer/buffer.cpp write_txn has no RAII abort), which would hang the test.
TEST_CASE("Pipeline poll survives out of memory and counts it", "[pipeline][oom]") {
  struct Run {
    CountingLog log{LogLevel::warning};
    FakeClock clock;
    std::unique_ptr<Pipeline> p;
    Run() {
      Config c;
      c.device_id = "dev-oom";
      c.streams = streams();
      c.triggers = triggers();
      c.buffer.path = test::scratch_dir("oom-pipeline").string();
      c.buffer.durability = Durability::none;
      c.uploader.enabled = false;
      c.pipeline.heartbeat_interval_s = 0;
      Port port;
      port.clock = &clock;
      port.log = &log;
      auto made = Pipeline::create(std::move(c), port);
      if (!made) FAIL(made.error().message);
      p = std::move(*made);
      const auto imu = p->stream("imu");
      for (int i = 0; i < 150; ++i) p->push(imu, i * 0.01, {1.0});  // "beat" is due at 1.5 s
    }
    // 150 polls, 1 ms apart: auto_tick crosses 1.5 s, "beat" opens an event (its pre window
    // stays in the ring: no allocation), its post window (0.1 s) ends and a later poll encodes
    // it and appends it to the Buffer (allocating).
    void polls() {
      for (int i = 0; i < 150; ++i) {
        clock.advance(std::chrono::milliseconds(1));
        p->poll(std::chrono::milliseconds(5));
      }
    }
    double metric(const char* name, Labels l = {}) const { return p->metrics().value(name, l); }
  };
  std::uint64_t needed = 0;
  {
    Run r;
    const std::uint64_t before = g_allocs.load();
    r.polls();
    needed = g_allocs.load() - before;
    REQUIRE(r.p->capture().stats().events == 1);
  }
  REQUIRE(needed > 0);
  for (std::uint64_t n = 0; n <= needed; ++n) {
    Run r;
    {
      FailAfter fail(static_cast<std::int64_t>(n));
      r.polls();
    }
    INFO("allocations allowed: " << n << " of " << needed);
    const double oom_polls = r.metric("fleetpipe_pipeline_poll_out_of_memory_total");
    const CaptureStats st = r.p->capture().stats();
    CHECK(double(st.events_dropped) ==
          r.metric("fleetpipe_capture_events_dropped_total", {{"reason", "out_of_memory"}}));
    if (n < needed) CHECK(st.events_dropped + oom_polls >= 1);  // the failure was counted
    if (n >= needed) CHECK(st.events_dropped + oom_polls == 0);
    // Memory is back: the open event (if it survived) and a new one reach the Buffer.
    REQUIRE(r.p->fire("snap", 2.0).ok());
    r.p->tick(5.0);  // "beat" fires again here (due every 1.5 s) ...
    r.p->tick(6.0);  // ... and its event closes here, before the next one is due (6.5 s)
    for (int i = 0; i < 5; ++i) r.p->poll(std::chrono::milliseconds(5));
    CHECK(r.p->capture().stats().open_events == 0);
    // Every stored record is a counted event, or a dropped one whose append threw after the
    // Buffer had committed it (Buffer::append can fail to allocate after its commit).
    const CaptureStats end = r.p->capture().stats();
    CHECK(r.p->buffer().stats().records >= end.events);
    CHECK(r.p->buffer().stats().records <= end.events + end.events_dropped);
    CHECK(r.p->buffer().stats().records >= 1);
  }
}

TEST_CASE("Log lines below the sink's level are neither built nor written", "[capture][log]") {
  // The trigger engine logs every fire at debug level: a sink at warning never sees one.
  Rig quiet;
  run_script(*quiet.capture);
  quiet.capture->flush();
  CHECK(quiet.capture->stats().events >= 4);
  CHECK(quiet.log.below_min == 0);

  // A sink that keeps LogSink's default enabled() (true) gets them, as before.
  struct Everything final : LogSink {
    void write(LogLevel level, std::string_view component, std::string_view msg) noexcept override {
      if (level == LogLevel::debug && component == "trigger" &&
          msg.find(": fired") != std::string_view::npos) {
        ++fired;
      }
    }
    int fired = 0;
  } everything;
  FakeClock clock;
  Port port;
  port.clock = &clock;
  port.log = &everything;
  MetricsRegistry metrics;
  StoringSink sink;
  auto c = Capture::create("dev-log", streams(), triggers(), sink, port, metrics);
  REQUIRE(c.ok());
  run_script(**c);
  (*c)->flush();
  std::uint64_t fires = 0;
  for (const char* t : {"fast", "snap", "beat"}) {
    fires += (*c)->trigger_stats((*c)->trigger(t)).fires;
  }
  CHECK(fires >= 4);
  CHECK(std::uint64_t(everything.fired) == fires);
}
