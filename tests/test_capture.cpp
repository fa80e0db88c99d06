#include "fleetpipe/capture.hpp"

#include <catch2/catch.hpp>

#include <atomic>
#include <cstdlib>
#include <new>

#include <nlohmann/json.hpp>

#include "capture/event_format.hpp"
#include "support/capture_rig.hpp"

// ---- counting allocator (whole test binary) ---------------------------------------------------
#include "support/counting_allocator.hpp"
using fleetpipe::test::g_allocs;

using namespace fleetpipe;
using fleetpipe::test::blob_stream;
using fleetpipe::test::numeric_stream;
using fleetpipe::test::Rig;

namespace {

detail::EventOut decode_one(const std::string& payload) {
  auto evs = detail::decode_events(payload);
  REQUIRE(evs.ok());
  REQUIRE(evs->size() == 1);
  return (*evs)[0];
}

nlohmann::json index_of(const detail::EventOut& e) { return nlohmann::json::parse(e.index_json); }

TriggerConfig window(TriggerConfig c, double pre, double post) {
  c.capture.pre_s = pre;
  c.capture.post_s = post;
  return c;
}

}  // namespace

TEST_CASE("an event takes the pre window from the ring and records the post window",
          "[capture]") {
  Rig rig({numeric_stream("imu", {"a", "b"})},
          {window(threshold_trigger("hit", "imu", "a", ThresholdOp::above, 10), 2, 3)});
  auto h = rig.cap->stream("imu");
  for (int i = 0; i <= 100; ++i) rig.cap->push(h, i * 0.1, {i == 50 ? 11.0 : 0.0, double(i)});
  // fire at t=5.0: pre [3.0, 5.0] = 21 rows, post (5.0, 8.0] = 30 rows
  REQUIRE(rig.sink.items.size() == 1);
  const auto& item = rig.sink.items[0];
  CHECK(item.meta.stream == "imu");
  CHECK(item.meta.trigger_ids == std::vector<std::string>{"hit"});
  CHECK(item.meta.priority == 3);
  CHECK(item.meta.content_type == "application/vnd.fleetpipe.event");
  CHECK(item.meta.metadata.at("device") == "dev-1");
  auto ev = decode_one(item.payload);
  REQUIRE(ev.sections.size() == 1);
  const auto& s = ev.sections[0];
  CHECK(s.channels == std::vector<std::string>{"a", "b"});
  CHECK(s.count == 51);
  CHECK(s.rows[0] == Approx(3.0));       // t of the first row
  CHECK(s.rows[2] == Approx(30));        // channel b of the first row
  CHECK(s.rows[3 * 50] == Approx(8.0));  // t of the last row
  CHECK(nlohmann::json::parse(item.meta.metadata.at("sample_counts"))["imu"] == 51);
  auto idx = index_of(ev);
  CHECK(idx["closed"] == "time");
  CHECK(idx["t_fire"].get<double>() == Approx(5.0));
}

TEST_CASE("wall-clock range maps monotonic t through the clock at event open", "[capture]") {
  Rig rig({numeric_stream("imu", {"a"})},
          {window(threshold_trigger("hit", "imu", "a", ThresholdOp::above, 10), 1, 1)});
  auto h = rig.cap->stream("imu");
  const std::int64_t wall0 = std::chrono::duration_cast<std::chrono::nanoseconds>(
                                 rig.clock.wall().time_since_epoch())
                                 .count();
  rig.cap->push(h, 100.0, {0});
  rig.cap->push(h, 100.5, {0});
  rig.cap->push(h, 101.0, {11});  // clock's wall now = wall0 at t=101
  rig.cap->push(h, 102.0, {0});
  rig.cap->push(h, 102.5, {0});
  REQUIRE(rig.sink.items.size() == 1);
  CHECK(rig.sink.items[0].meta.start_ns == wall0 - 1'000'000'000);
  CHECK(rig.sink.items[0].meta.end_ns == wall0 + 1'000'000'000);
}

TEST_CASE("overlapping windows on a stream merge into one event with every trigger id",
          "[capture]") {
  auto a = window(threshold_trigger("a", "imu", "x", ThresholdOp::above, 10), 1, 2);
  auto b = window(threshold_trigger("b", "imu", "y", ThresholdOp::above, 10), 1, 2);
  b.priority = 6;
  Rig rig({numeric_stream("imu", {"x", "y"})}, {a, b});
  auto h = rig.cap->stream("imu");
  rig.cap->push(h, 1, {0, 0});
  rig.cap->push(h, 2, {11, 0});   // a fires: until 4
  rig.cap->push(h, 3, {0, 11});   // b fires inside: merged, until 5
  rig.cap->push(h, 4.5, {0, 0});
  rig.cap->push(h, 5, {0, 0});
  CHECK(rig.sink.items.empty());
  rig.cap->push(h, 5.5, {0, 0});
  REQUIRE(rig.sink.items.size() == 1);
  CHECK(rig.sink.items[0].meta.trigger_ids == std::vector<std::string>{"a", "b"});
  CHECK(rig.sink.items[0].meta.priority == 6);
  CHECK(rig.cap->stats().merged_fires == 1);
  auto ev = decode_one(rig.sink.items[0].payload);
  CHECK(ev.sections[0].count == 5);  // t = 1, 2, 3, 4.5, 5
  // Later, a separate excursion makes a separate event.
  rig.cap->push(h, 20, {11, 0});
  rig.cap->flush();
  REQUIRE(rig.sink.items.size() == 2);
  CHECK(rig.sink.items[1].meta.trigger_ids == std::vector<std::string>{"a"});
  CHECK(index_of(decode_one(rig.sink.items[1].payload))["closed"] == "flush");
  CHECK(rig.cap->trigger_stats(TriggerHandle{0}).events == 2);
  CHECK(rig.cap->trigger_stats(TriggerHandle{1}).events == 1);
}

TEST_CASE("an event spans the streams the trigger names, blobs included", "[capture]") {
  auto t = window(threshold_trigger("hit", "imu", "x", ThresholdOp::above, 10), 0.5, 0.5);
  t.capture.streams = {"imu", "camera"};
  std::vector<StreamConfig> streams = {numeric_stream("imu", {"x"}), blob_stream("camera")};
  streams[1].content_type = "image/jpeg";
  Rig rig(streams, {t});
  auto imu = rig.cap->stream("imu");
  auto cam = rig.cap->stream("camera");
  for (int i = 0; i < 40; ++i) {
    double ts = i * 0.1;
    rig.cap->push_blob(cam, ts, std::string(100 + i, char('A' + i % 26)));
    rig.cap->push(imu, ts, {i == 20 ? 11.0 : 0.0});
  }
  REQUIRE(rig.sink.items.size() == 1);
  const auto& item = rig.sink.items[0];
  CHECK(item.meta.stream == "imu");
  auto counts = nlohmann::json::parse(item.meta.metadata.at("sample_counts"));
  auto ev = decode_one(item.payload);
  REQUIRE(ev.sections.size() == 2);
  CHECK(ev.sections[1].stream == "camera");
  CHECK(ev.sections[1].content_type == "image/jpeg");
  // camera frames from t=1.5 to t=2.5
  REQUIRE(ev.sections[1].blobs.size() == 11);
  CHECK(counts["camera"] == 11);
  CHECK(ev.sections[1].blobs[0].first == Approx(1.5));
  CHECK(ev.sections[1].blobs[0].second == std::string(115, char('A' + 15)));
  CHECK(ev.sections[1].blobs[10].second == std::string(125, char('A' + 25)));
}

TEST_CASE("a fire naming streams of two open events merges them", "[capture]") {
  auto a = window(threshold_trigger("a", "imu", "x", ThresholdOp::above, 10), 0, 5);
  auto b = window(threshold_trigger("b", "gps", "v", ThresholdOp::above, 10), 0, 5);
  auto both = window(manual_trigger("both"), 0, 1);
  both.capture.streams = {"imu", "gps"};
  Rig rig({numeric_stream("imu", {"x"}), numeric_stream("gps", {"v"})}, {a, b, both});
  rig.cap->push(rig.cap->stream("imu"), 1, {11});
  rig.cap->push(rig.cap->stream("gps"), 1.5, {11});
  CHECK(rig.cap->stats().open_events == 2);
  CHECK(*rig.cap->fire("both", 2));
  CHECK(rig.cap->stats().open_events == 1);
  rig.cap->tick(10);
  REQUIRE(rig.sink.items.size() == 1);
  CHECK(rig.sink.items[0].meta.trigger_ids == std::vector<std::string>{"a", "b", "both"});
  CHECK(decode_one(rig.sink.items[0].payload).sections.size() == 2);
}

TEST_CASE("the post window is byte-bounded per trigger", "[capture]") {
  auto t = window(threshold_trigger("hit", "imu", "x", ThresholdOp::above, 10), 0, 100);
  t.capture.max_bytes = 16 * 10;  // rows are 16 bytes: 10 rows after the fire
  Rig rig({numeric_stream("imu", {"x"})}, {t});
  auto h = rig.cap->stream("imu");
  rig.cap->push(h, 0, {11});
  for (int i = 1; i <= 30; ++i) rig.cap->push(h, i, {0});
  REQUIRE(rig.sink.items.size() == 1);
  auto ev = decode_one(rig.sink.items[0].payload);
  CHECK(index_of(ev)["closed"] == "max_bytes");
  CHECK(ev.sections[0].count == 11);
}

TEST_CASE("the pre-trigger ring is bounded by bytes, early eviction is counted", "[capture]") {
  // 16-byte rows, 64-byte ring = 4 rows, ring_seconds 10 asks for much more.
  Rig rig({numeric_stream("imu", {"x"}, 10, 64)},
          {window(threshold_trigger("hit", "imu", "x", ThresholdOp::above, 10), 10, 0)});
  auto h = rig.cap->stream("imu");
  for (int i = 0; i < 10; ++i) rig.cap->push(h, i, {0});
  rig.cap->push(h, 10, {11});
  rig.cap->flush();
  REQUIRE(rig.sink.items.size() == 1);
  CHECK(decode_one(rig.sink.items[0].payload).sections[0].count == 4);
  CHECK(rig.cap->stats().ring_overflow == 7);  // rows 0..6 evicted younger than 10 s
  CHECK(rig.metrics.value("fleetpipe_capture_dropped_samples_total",
                          {{"stream", "imu"}, {"reason", "ring_overflow"}}) == 7);
}

TEST_CASE("the pre-trigger ring is bounded by time", "[capture]") {
  Rig rig({numeric_stream("imu", {"x"}, 2.0)},
          {window(threshold_trigger("hit", "imu", "x", ThresholdOp::above, 10), 60, 0)});
  auto h = rig.cap->stream("imu");
  for (int i = 0; i < 100; ++i) rig.cap->push(h, i * 0.5, {0});
  rig.cap->push(h, 50, {11});
  rig.cap->flush();
  REQUIRE(rig.sink.items.size() == 1);
  // pre is clamped to ring_seconds: t in [48, 50] = 48, 48.5, 49, 49.5, 50
  CHECK(decode_one(rig.sink.items[0].payload).sections[0].count == 5);
}

TEST_CASE("blob ring wraps, evicts oldest and keeps blob bytes intact", "[capture]") {
  auto t = window(manual_trigger("snap"), 100, 0);
  t.capture.streams = {"cam"};
  Rig rig({blob_stream("cam", 1000, 100)}, {t});
  auto cam = rig.cap->stream("cam");
  std::uint64_t n = 0;
  for (int i = 0; i < 200; ++i) {
    std::string blob(37 + (i * 13) % 150, char(i));
    rig.cap->push_blob(cam, i, blob);
    n += blob.size();
  }
  CHECK(*rig.cap->fire("snap", 200));
  rig.cap->flush();
  REQUIRE(rig.sink.items.size() == 1);
  auto ev = decode_one(rig.sink.items[0].payload);
  const auto& blobs = ev.sections[0].blobs;
  REQUIRE(!blobs.empty());
  std::uint64_t held = 0;
  for (std::size_t k = 0; k < blobs.size(); ++k) {
    int i = int(blobs[k].first);
    CHECK(i == 200 - int(blobs.size()) + int(k));  // the newest, contiguous
    CHECK(blobs[k].second == std::string(37 + (i * 13) % 150, char(i)));
    held += blobs[k].second.size();
  }
  CHECK(held <= 1000);
  CHECK(held > 1000 - 2 * 187);  // a reasonably full ring
}

// The post window of a blob stream stays in the ring (no copy in push_blob) until delivery or
// until the ring overwrites it: a window far longer than the ring keeps every blob, in order.
TEST_CASE("a blob post window longer than the ring keeps every blob intact", "[capture]") {
  auto t = window(manual_trigger("snap"), 5, 1000);
  t.capture.streams = {"cam"};
  Rig rig({blob_stream("cam", 1000, 100)}, {t});
  auto cam = rig.cap->stream("cam");
  auto blob = [](int i) { return std::string(i == 150 ? 3000 : 37 + (i * 13) % 150, char(i)); };
  for (int i = 0; i < 10; ++i) rig.cap->push_blob(cam, i, blob(i));
  CHECK(*rig.cap->fire("snap", 9.5));
  for (int i = 10; i < 200; ++i) rig.cap->push_blob(cam, i, blob(i));  // 150: not in the ring
  rig.cap->flush();
  REQUIRE(rig.sink.items.size() == 1);
  auto ev = decode_one(rig.sink.items[0].payload);
  const auto& blobs = ev.sections[0].blobs;
  REQUIRE(blobs.size() == 195);  // t = 5..9 (pre), 10..199 (post)
  for (std::size_t k = 0; k < blobs.size(); ++k) {
    const int i = 5 + int(k);
    CHECK(blobs[k].first == double(i));
    CHECK(blobs[k].second == blob(i));
  }
  auto counts = nlohmann::json::parse(rig.sink.items[0].meta.metadata.at("sample_counts"));
  CHECK(counts["cam"] == 195);
}

TEST_CASE("a blob larger than the ring is counted but still recorded into an open event",
          "[capture]") {
  auto t = window(manual_trigger("snap"), 0, 10);
  t.capture.streams = {"cam"};
  Rig rig({blob_stream("cam", 1000)}, {t});
  auto cam = rig.cap->stream("cam");
  rig.cap->push_blob(cam, 0, std::string(5000, 'x'));
  CHECK(rig.cap->stats().ring_overflow == 1);
  CHECK(*rig.cap->fire("snap", 1));
  rig.cap->push_blob(cam, 2, std::string(5000, 'y'));
  rig.cap->flush();
  REQUIRE(rig.sink.items.size() == 1);
  auto ev = decode_one(rig.sink.items[0].payload);
  REQUIRE(ev.sections[0].blobs.size() == 1);
  CHECK(ev.sections[0].blobs[0].second == std::string(5000, 'y'));
  CHECK(rig.cap->stats().ring_overflow == 2);
}

TEST_CASE("time going backwards drops the sample, counts and does not trigger", "[capture]") {
  Rig rig({numeric_stream("imu", {"x"})},
          {window(threshold_trigger("hit", "imu", "x", ThresholdOp::above, 10), 5, 1)});
  auto h = rig.cap->stream("imu");
  rig.cap->push(h, 10, {0});
  rig.cap->push(h, 9, {11});   // backwards: dropped before evaluation
  rig.cap->push(h, 10, {0});   // equal time is fine
  CHECK(rig.fires("hit") == 0);
  CHECK(rig.cap->stats().time_backwards == 1);
  CHECK(rig.metrics.value("fleetpipe_capture_dropped_samples_total",
                          {{"stream", "imu"}, {"reason", "time_backwards"}}) == 1);
  rig.cap->push(h, 11, {11});
  rig.cap->push(h, std::numeric_limits<double>::quiet_NaN(), {0});  // NaN time: invalid
  rig.cap->flush();
  REQUIRE(rig.sink.items.size() == 1);
  CHECK(decode_one(rig.sink.items[0].payload).sections[0].count == 3);  // 10, 10, 11
  CHECK(rig.cap->stats().invalid_samples == 1);
}

TEST_CASE("bad handles and wrong kinds are counted, name lookups report errors", "[capture]") {
  Rig rig({numeric_stream("imu", {"x", "y"}), blob_stream("cam")}, {});
  rig.cap->push(StreamHandle{}, 1, {1});
  rig.cap->push_blob(rig.cap->stream("imu"), 1, "abc");
  rig.cap->push(rig.cap->stream("cam"), 1, {1});
  CHECK(rig.cap->stats().invalid_samples == 3);
  CHECK(rig.cap->push("imu", 1, {{"y", 2.0}}).ok());
  CHECK(rig.cap->push("imu", 2, {{"z", 2.0}}).error().message ==
        "stream \"imu\" has no channel \"z\"");
  CHECK(rig.cap->push("lidar", 2, {{"x", 2.0}}).error().is(errc::invalid_argument));
  CHECK(rig.cap->push_blob("imu", 2, "x").error().is(errc::invalid_argument));
  CHECK(rig.cap->push_blob("cam", 2, "x").ok());
  CHECK(rig.cap->channel(rig.cap->stream("imu"), "y") == 1);
  CHECK(rig.cap->stats().samples == 2);
}

TEST_CASE("a sink rejection is counted and the capture carries on", "[capture]") {
  Rig rig({numeric_stream("imu", {"x"})}, {window(manual_trigger("m"), 0, 0)});
  rig.sink.reject = true;
  CHECK(*rig.cap->fire("m", 1));
  rig.cap->tick(2);
  CHECK(rig.cap->stats().events_rejected == 1);
  CHECK(rig.metrics.value("fleetpipe_capture_events_rejected_total") == 1);
  rig.sink.reject = false;
  CHECK(*rig.cap->fire("m", 3));
  rig.cap->tick(4);
  CHECK(rig.cap->stats().events == 2);
  CHECK(rig.cap->stats().events_rejected == 1);
}

TEST_CASE("zstd-compressed sections round-trip", "[capture]") {
  auto s = numeric_stream("imu", {"x"});
  s.compression = Compression::zstd;
  Rig rig({s}, {window(threshold_trigger("hit", "imu", "x", ThresholdOp::above, 10), 5, 0)});
  auto h = rig.cap->stream("imu");
  for (int i = 0; i < 500; ++i) rig.cap->push(h, i * 0.01, {i == 499 ? 11.0 : 1.0});
  rig.cap->flush();
  REQUIRE(rig.sink.items.size() == 1);
  auto ev = decode_one(rig.sink.items[0].payload);
  CHECK(ev.sections[0].count == 500);
  CHECK(index_of(ev)["sections"][0]["compression"] == "zstd");
  auto sec = index_of(ev)["sections"][0];
  CHECK(sec["length"].get<std::uint64_t>() < sec["raw_length"].get<std::uint64_t>());
  CHECK(sec["raw_length"] == 500 * 16);
}

TEST_CASE("after warm-up, push and trigger evaluation allocate nothing", "[capture][alloc]") {
  auto thr = window(threshold_trigger("hit", "imu", "x", ThresholdOp::above, 10), 1, 2);
  thr.hysteresis = 0.5;
  auto comp = window(composite_trigger(
                         "combo", TriggerType::all,
                         {threshold_trigger("", "imu", "x", ThresholdOp::above, 5),
                          threshold_trigger("", "imu", "y", ThresholdOp::below, -5),
                          delta_trigger("", "imu", "y", 3, 0.5)},
                         0.5),
                     1, 2);
  auto snap = window(manual_trigger("snap"), 1, 2);
  snap.capture.streams = {"imu", "cam"};
  Rig rig({numeric_stream("imu", {"x", "y"}, 2, 64 << 10), blob_stream("cam", 256 << 10, 2)},
          {thr, comp, snap});
  auto imu = rig.cap->stream("imu");
  auto cam = rig.cap->stream("cam");
  std::string frame(4096, 'f');
  double t = 0;
  auto cycle = [&](bool count) -> std::uint64_t {
    // Quiet samples (rings wrap), then an event's post window being recorded.
    std::uint64_t before = g_allocs.load();
    for (int i = 0; i < 5000; ++i) {
      t += 0.001;
      rig.cap->push(imu, t, {1.0, double(i % 7) - 3});
      if (i % 33 == 0) rig.cap->push_blob(cam, t, frame);
    }
    std::uint64_t quiet = g_allocs.load() - before;
    (void)rig.cap->fire("snap", t);  // opening an event allocates (not hot path)
    before = g_allocs.load();
    for (int i = 0; i < 1500; ++i) {  // 1.5 s of the 2 s post window
      t += 0.001;
      rig.cap->push(imu, t, {1.0, 0.0});
      if (i % 33 == 0) rig.cap->push_blob(cam, t, frame);
    }
    std::uint64_t recording = g_allocs.load() - before;
    t += 1.0;
    before = g_allocs.load();
    rig.cap->tick(t);  // finishes the event (allocates: metadata, index)
    CHECK(g_allocs.load() > before);  // proves the counting allocator is in place
    return count ? quiet + recording : 0;
  };
  cycle(false);
  cycle(false);
  CHECK(rig.sink.items.size() == 2);
  CHECK(cycle(true) == 0);
  CHECK(rig.sink.items.size() == 3);
}

// A slice covers the hand-off when the payload fits its budget: a small event leaves the
// hand-off in one call, so one poll delivers it however slow the machine is.
TEST_CASE("a small event is encoded and handed to the sink by one slice", "[capture][slices]") {
  FakeClock clock;
  MetricsRegistry metrics;
  test::RecordingSink sink;
  Port port;
  port.clock = &clock;
  static StderrLogSink quiet(LogLevel::off);
  port.log = &quiet;
  CaptureOptions o;
  o.handoff_events = 4;  // closed events wait for deliver_slice, as under a Pipeline
  auto r = Capture::create("dev-1", {numeric_stream("imu", {"a"}, 10, 16 * 300)},
                           {window(threshold_trigger("hit", "imu", "a", ThresholdOp::above, 10), 0.1, 0.1)},
                           sink, port, metrics, o);
  REQUIRE(r);
  auto& cap = **r;
  auto imu = cap.stream("imu");
  for (int i = 0; i <= 100; ++i) cap.push(imu, i * 0.01, {i == 50 ? 11.0 : 0.0});
  REQUIRE(cap.pending_events() == 1);
  CHECK(cap.deliver_slice(64 * 1024) == 1);
  CHECK(cap.pending_events() == 0);
  REQUIRE(sink.items.size() == 1);
  CHECK(sink.items[0].payload.size() < 64 * 1024);
}

// An event larger than one slice is delivered by several deliver_slice() calls, with the host
// pushing in between (so the rings overwrite pinned pre-window entries mid-delivery), and comes
// out byte-identical to the same event delivered in one deliver().
TEST_CASE("an event delivered in slices across pushes is byte-identical to one delivery",
          "[capture][slices]") {
  struct Side {
    FakeClock clock;
    MetricsRegistry metrics;
    test::RecordingSink sink;
    std::unique_ptr<Capture> cap;
    Side() {
      Port port;
      port.clock = &clock;
      static StderrLogSink quiet(LogLevel::off);
      port.log = &quiet;
      CaptureOptions o;
      o.handoff_events = 4;
      auto imu = numeric_stream("imu", {"a", "b"}, 10, 24 * 300);  // 300 rows: 3 s at 100 Hz
      imu.compression = Compression::zstd;
      auto trig = window(threshold_trigger("hit", "imu", "a", ThresholdOp::above, 10), 1, 1);
      trig.capture.streams = {"imu", "cam", "gps"};
      auto r = Capture::create(
          "dev-1", {imu, blob_stream("cam", 8 * 1000), numeric_stream("gps", {"x"}, 10, 16 * 40)},
          {trig}, sink, port, metrics, o);
      if (!r) throw std::runtime_error(r.error().message);
      cap = std::move(*r);
    }
    int i = 0;  // imu rows pushed (100 Hz); every 10th also pushes a cam blob and a gps row
    void push_until(double t_end) {
      auto imu = cap->stream("imu"), cam = cap->stream("cam"), gps = cap->stream("gps");
      for (; i * 0.01 <= t_end; ++i) {
        const double t = i * 0.01;
        cap->push(imu, t, {i == 500 ? 11.0 : 0.0, double(i)});
        if (i % 10 == 0) {
          cap->push_blob(cam, t, std::string(1000, char('a' + (i / 10) % 26)));
          cap->push(gps, t, {double(i)});
        }
      }
    }
  };
  Side one, sliced;
  for (Side* s : {&one, &sliced}) s->push_until(6.05);  // fire at 5.0, closed after 6.0
  REQUIRE(one.cap->pending_events() == 1);
  REQUIRE(sliced.cap->pending_events() == 1);
  CHECK(one.cap->deliver() == 1);
  one.push_until(9.0);
  int slices = 0;
  double t = 6.05;
  while (sliced.cap->pending_events()) {
    ++slices;
    sliced.cap->deliver_slice(512);
    t += 0.1;  // 10 rows per slice: the 3 s rings overwrite the pinned pre window meanwhile
    sliced.push_until(t);
    REQUIRE(slices < 10000);
  }
  sliced.push_until(9.0);
  CHECK(slices > 5);
  REQUIRE(one.sink.items.size() == 1);
  REQUIRE(sliced.sink.items.size() == 1);
  CHECK(sliced.sink.items[0].payload == one.sink.items[0].payload);
  CHECK(sliced.sink.items[0].meta.metadata == one.sink.items[0].meta.metadata);
  auto ev = decode_one(sliced.sink.items[0].payload);
  REQUIRE(ev.sections.size() == 3);
  CHECK(ev.sections[0].count == 201);  // imu [4.0, 6.0]
  CHECK(index_of(ev)["sections"][0]["compression"] == "zstd");
  CHECK(ev.sections[1].blobs.size() == ev.sections[1].count);
  CHECK(ev.sections[1].blobs.size() > 10);
  CHECK(ev.sections[2].count == 21);
  // The slices outlasted the 3 s imu ring: its pinned pre window was copied mid-delivery.
  CHECK(t > 6.05 + 3.0);
  CHECK(sliced.cap->stats().events_dropped == 0);
}
