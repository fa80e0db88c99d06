// Batch ingest (Capture::push_rows): the same data pushed row by row and as blocks gives the same
// fires, the same events byte for byte and the same counters; and it allocates nothing.
#include "fleetpipe/capture.hpp"

#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "support/capture_rig.hpp"
#include "support/counting_allocator.hpp"

using namespace fleetpipe;
using fleetpipe::test::numeric_stream;
using fleetpipe::test::Rig;

namespace {

// Rows of a 3-channel stream at 1 kHz: slow waves crossing the thresholds many times, NaNs,
// and a few rows whose time goes backwards (dropped by both paths).
struct Data {
  std::vector<double> times, values;
  std::size_t rows() const { return times.size(); }
};

Data make_data(std::size_t n) {
  Data d;
  std::uint64_t x = 0x9E3779B97F4A7C15ull;
  auto rnd = [&] {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return double(x % 1000) / 1000.0;
  };
  double t = 0;
  for (std::size_t i = 0; i < n; ++i) {
    t += 0.001;
    double ti = t;
    if (i % 997 == 500) ti = t - 0.01;  // time went backwards
    d.times.push_back(ti);
    double a = 6 * std::sin(i * 0.0021) + rnd();
    double b = 3 * std::cos(i * 0.0013) + rnd();
    double c = rnd() * 10;
    if (i % 331 == 7) a = std::numeric_limits<double>::quiet_NaN();
    if (i % 577 == 3) b = std::numeric_limits<double>::quiet_NaN();
    d.values.insert(d.values.end(), {a, b, c});
  }
  return d;
}

std::vector<TriggerConfig> block_triggers() {
  auto hi = threshold_trigger("hi", "imu", "a", ThresholdOp::above, 4.0);
  hi.hysteresis = 0.5;
  hi.capture.pre_s = 0.2;
  hi.capture.post_s = 0.3;
  auto lo = threshold_trigger("lo", "imu", "b", ThresholdOp::below, -2.0);
  lo.hysteresis = 0.3;
  lo.cooldown_s = 0.5;
  lo.capture.pre_s = 0.1;
  lo.capture.post_s = 0.05;
  auto spike = threshold_trigger("spike", "imu", "c", ThresholdOp::above, 9.95);
  spike.capture.pre_s = 0.05;
  spike.capture.post_s = 0.05;
  spike.capture.max_bytes = 2000;
  return {hi, lo, spike};
}

std::vector<StreamConfig> streams() {
  return {numeric_stream("imu", {"a", "b", "c"}, 1.0, 64 << 10)};
}

void check_same(Rig& a, Rig& b, const std::vector<TriggerConfig>& trs) {
  a.cap->flush();
  b.cap->flush();
  for (const auto& t : trs) {
    INFO(t.name);
    CHECK(a.fires(t.name.c_str()) == b.fires(t.name.c_str()));
    auto sa = a.cap->trigger_stats(a.cap->trigger(t.name));
    auto sb = b.cap->trigger_stats(b.cap->trigger(t.name));
    CHECK(sa.events == sb.events);
    CHECK(sa.suppressed_cooldown == sb.suppressed_cooldown);
  }
  REQUIRE(a.sink.items.size() == b.sink.items.size());
  for (std::size_t i = 0; i < a.sink.items.size(); ++i) {
    INFO("event " << i);
    CHECK(a.sink.items[i].meta.event_id == b.sink.items[i].meta.event_id);
    CHECK(a.sink.items[i].meta.trigger_ids == b.sink.items[i].meta.trigger_ids);
    CHECK(a.sink.items[i].payload == b.sink.items[i].payload);
  }
  CaptureStats x = a.cap->stats(), y = b.cap->stats();
  CHECK(x.samples == y.samples);
  CHECK(x.events == y.events);
  CHECK(x.event_bytes == y.event_bytes);
  CHECK(x.merged_fires == y.merged_fires);
  CHECK(x.time_backwards == y.time_backwards);
  CHECK(x.ring_overflow == y.ring_overflow);
  CHECK(x.nan_samples == y.nan_samples);
  CHECK(x.invalid_samples == y.invalid_samples);
}

void replay(const std::vector<TriggerConfig>& trs, std::size_t block) {
  const Data d = make_data(20000);
  Rig one(streams(), trs), many(streams(), trs);
  auto h1 = one.cap->stream("imu"), h2 = many.cap->stream("imu");
  for (std::size_t i = 0; i < d.rows(); ++i) one.cap->push(h1, d.times[i], &d.values[3 * i], 3);
  for (std::size_t i = 0; i < d.rows(); i += block) {
    const std::size_t n = std::min(block, d.rows() - i);
    many.cap->push_rows(h2, &d.times[i], &d.values[3 * i], n);
  }
  REQUIRE(one.sink.items.size() > 20);  // the data does fire, many times
  CHECK(one.cap->stats().nan_samples > 0);
  CHECK(one.cap->stats().time_backwards > 0);
  check_same(one, many, trs);
}

}  // namespace

TEST_CASE("push_rows fires and records exactly as row-by-row push (threshold block path)",
          "[capture][push_rows]") {
  for (std::size_t block : {1u, 7u, 64u, 1000u, 20000u}) {
    INFO("block " << block);
    replay(block_triggers(), block);
  }
}

TEST_CASE("push_rows matches push when a trigger needs row-by-row evaluation (delta)",
          "[capture][push_rows]") {
  auto trs = block_triggers();
  auto d = delta_trigger("jump", "imu", "c", 8.0, 0.002);
  d.capture.pre_s = 0.02;
  d.capture.post_s = 0.02;
  d.cooldown_s = 0.3;
  trs.push_back(d);
  for (std::size_t block : {5u, 512u}) {
    INFO("block " << block);
    replay(trs, block);
  }
}

TEST_CASE("push_rows counts bad handles and blob streams as invalid rows", "[capture][push_rows]") {
  Rig rig({numeric_stream("imu", {"a"}), test::blob_stream("cam")}, {});
  const double t[3] = {1, 2, 3}, v[3] = {0, 0, 0};
  rig.cap->push_rows(StreamHandle{}, t, v, 3);
  rig.cap->push_rows(rig.cap->stream("cam"), t, v, 3);
  CHECK(rig.cap->stats().invalid_samples == 6);
  CHECK(rig.cap->stats().samples == 0);
  rig.cap->push_rows(rig.cap->stream("imu"), t, v, 3);
  CHECK(rig.cap->stats().samples == 3);
}

TEST_CASE("after warm-up, push_rows allocates nothing", "[capture][push_rows][alloc]") {
  auto trs = block_triggers();
  Rig rig(streams(), trs);
  auto h = rig.cap->stream("imu");
  const Data d = make_data(20000);
  auto run = [&](double offset) {
    std::vector<double> ts(d.times);
    for (auto& x : ts) x += offset;
    const std::uint64_t before = test::g_allocs.load();
    std::uint64_t open_or_finish = 0;
    // Blocks of 256 rows between events: warm capacity covers the event sections; each event
    // opened and delivered allocates (documented), the rows between them must not.
    for (std::size_t i = 0; i < ts.size(); i += 256) {
      const std::size_t n = std::min<std::size_t>(256, ts.size() - i);
      const auto ev0 = rig.cap->stats().events + rig.cap->stats().open_events;
      const std::uint64_t a0 = test::g_allocs.load();
      rig.cap->push_rows(h, &ts[i], &d.values[3 * i], n);
      const auto ev1 = rig.cap->stats().events + rig.cap->stats().open_events;
      if (ev1 != ev0 || rig.cap->stats().merged_fires) open_or_finish += test::g_allocs.load() - a0;
    }
    return test::g_allocs.load() - before - open_or_finish;
  };
  run(0);  // warm-up
  rig.cap->flush();
  CHECK(run(100) == 0);
  // No trigger firing: not a single allocation over 20000 rows.
  Rig quiet(streams(), {threshold_trigger("never", "imu", "a", ThresholdOp::above, 1e9)});
  auto q = quiet.cap->stream("imu");
  quiet.cap->push_rows(q, d.times.data(), d.values.data(), 100);
  const std::uint64_t a0 = test::g_allocs.load();
  quiet.cap->push_rows(q, d.times.data() + 100, d.values.data() + 300, d.rows() - 100);
  CHECK(test::g_allocs.load() - a0 == 0);
}

TEST_CASE("a pre window the ring overwrites before delivery is copied first, byte for byte",
          "[capture][push_rows]") {
  // The same pushes into a ring far larger than any window and into one that wraps while the
  // event is open and while it waits in the hand-off: the events must be identical.
  auto trig = threshold_trigger("hi", "imu", "a", ThresholdOp::above, 5.0);
  trig.capture.pre_s = 0.5;
  trig.capture.post_s = 2.0;
  auto snap = manual_trigger("snap");
  snap.capture.streams = {"cam"};
  snap.capture.pre_s = 0.5;
  snap.capture.post_s = 0.5;
  struct Side {
    FakeClock clock;
    MetricsRegistry metrics;
    test::RecordingSink sink;
    std::unique_ptr<Capture> cap;
    Side(std::uint64_t ring_bytes, std::uint64_t blob_ring, std::uint32_t handoff,
         std::vector<TriggerConfig> trs) {
      Port port;
      port.clock = &clock;
      static StderrLogSink quiet(LogLevel::off);
      port.log = &quiet;
      CaptureOptions o;
      o.handoff_events = handoff;
      auto r = Capture::create("dev-1",
                               {numeric_stream("imu", {"a"}, 10, ring_bytes),
                                test::blob_stream("cam", blob_ring)},
                               std::move(trs), sink, port, metrics, o);
      if (!r) throw std::runtime_error(r.error().message);
      cap = std::move(*r);
    }
  };
  for (std::uint32_t handoff : {0u, 4u}) {
    INFO("handoff " << handoff);
    Side big(1 << 20, 1 << 20, handoff, {trig, snap}), small(80 * 16, 40 * 64, handoff, {trig, snap}),
        rows(80 * 16, 40 * 64, handoff, {trig, snap});
    for (Side* s : {&big, &small, &rows}) {
      auto imu = s->cap->stream("imu"), cam = s->cap->stream("cam");
      std::string blob(40, 'x');
      for (int i = 0; i < 1000; ++i) {
        const double t = i * 0.01;
        const double v = (i % 300 == 100) ? 9.0 : 0.0;
        if (s != &rows) {
          s->cap->push(imu, t, &v, 1);
        } else if (i % 5 == 0) {  // rows i-4..i as one block: the same order across streams
          double ts[5], vs[5];
          std::size_t n = 0;
          for (int r = std::max(0, i - 4); r <= i; ++r, ++n) {
            ts[n] = r * 0.01;
            vs[n] = (r % 300 == 100) ? 9.0 : 0.0;
          }
          s->cap->push_rows(imu, ts, vs, n);
        }
        blob[0] = char(i);
        if (i % 5 == 0) s->cap->push_blob(cam, t, blob);
        if (i % 400 == 50) REQUIRE(s->cap->fire(s->cap->trigger("snap"), t).ok());
        if (handoff && i % 250 == 0) s->cap->deliver();  // others wait while the ring wraps
      }
      if (s == &rows) {  // the rows after the last block
        const double ts[4] = {996 * 0.01, 997 * 0.01, 998 * 0.01, 999 * 0.01}, vs[4] = {};
        s->cap->push_rows(imu, ts, vs, 4);
      }
      s->cap->flush();
    }
    CHECK(small.cap->stats().ring_overflow > 0);  // the small rings did wrap under the events
    REQUIRE(big.sink.items.size() >= 4);
    REQUIRE(big.sink.items.size() == small.sink.items.size());
    REQUIRE(big.sink.items.size() == rows.sink.items.size());
    for (std::size_t i = 0; i < big.sink.items.size(); ++i) {
      INFO("event " << i);
      CHECK(big.sink.items[i].meta.event_id == small.sink.items[i].meta.event_id);
      CHECK(big.sink.items[i].payload == small.sink.items[i].payload);
      CHECK(big.sink.items[i].payload == rows.sink.items[i].payload);
    }
  }
}
