// The byte token bucket that shapes socket writes (src/s3/token_bucket.hpp).
#include "s3/token_bucket.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <deque>
#include <random>

using fleetpipe::MonoTime;
using fleetpipe::detail::TokenBucket;
using namespace std::chrono_literals;

namespace {
MonoTime t0() { return MonoTime(std::chrono::seconds(1000)); }
}  // namespace

TEST_CASE("a new bucket starts empty, fills to its burst, then refills at the rate", "[token_bucket]") {
  TokenBucket b(1000, 500, t0());
  CHECK(b.available(t0()) == 0);  // no burst on top of the rate right after a start
  CHECK(b.available(t0() + 100ms) == 100);
  CHECK(b.available(t0() + 1s) == 500);
  b.consume(500, t0() + 1s);
  CHECK(b.available(t0() + 1s) == 0);
  CHECK(b.available(t0() + 1100ms) == 100);
  CHECK(b.available(t0() + 10s) == 500);  // capped at burst
}

TEST_CASE("the first interval after a start never exceeds rate * t", "[token_bucket]") {
  TokenBucket b(100000, 0, t0());  // default burst max(4 KiB, 2 kB)
  const std::size_t chunk = b.chunk_size(256 * 1024);
  MonoTime now = t0();
  std::uint64_t sent = 0;
  while (now < t0() + 100ms) {
    if (b.available(now) < chunk) {
      now += b.wait_for(chunk, now);
      continue;
    }
    b.consume(chunk, now);
    sent += chunk;
  }
  CHECK(sent <= 10000);  // 100 ms at 100 kB/s: the old full-bucket start allowed 20 kB
  CHECK(sent >= 8000);
}

TEST_CASE("an emptied bucket refills at the rate", "[token_bucket]") {
  TokenBucket b(1000, 500, t0() - 10s);
  CHECK(b.available(t0()) == 500);
  b.consume(500, t0());
  CHECK(b.available(t0()) == 0);
  CHECK(b.available(t0() + 100ms) == 100);
  CHECK(b.available(t0() + 10s) == 500);  // capped at burst
}

TEST_CASE("debt from an oversized write must be waited off", "[token_bucket]") {
  TokenBucket b(1000, 500, t0() - 10s);  // full at t0
  b.consume(1500, t0());  // 1000 bytes of debt
  CHECK(b.available(t0() + 500ms) == 0);
  auto w = b.wait_for(100, t0() + 500ms);  // 500 bytes of debt left + 100 wanted
  CHECK(w >= 600ms);
  CHECK(w <= 600ms + 1us);
  CHECK(b.available(t0() + 1100ms) == 100);
}

TEST_CASE("bytes granted over a long run stay within rate*t + burst", "[token_bucket]") {
  TokenBucket b(100000, 8192, t0());
  MonoTime now = t0();
  std::uint64_t sent = 0;
  std::size_t chunk = b.chunk_size(256 * 1024);
  CHECK(chunk == 8192);  // one burst
  const MonoTime end = t0() + 20s;
  while (now < end) {
    auto avail = b.available(now);
    if (avail < chunk) {
      now += b.wait_for(chunk, now);
      continue;
    }
    b.consume(chunk, now);
    sent += chunk;
  }
  double achieved = static_cast<double>(sent) / 20.0;
  CHECK(achieved <= 100000 + 8192 / 20.0 + 1);
  CHECK(achieved >= 99000);
}

TEST_CASE("set_rate keeps debt, caps tokens, and 0 means unlimited", "[token_bucket]") {
  TokenBucket b(1000, 1000, t0() - 10s);
  b.set_rate(10000, 200, t0());
  CHECK(b.available(t0()) == 200);
  b.consume(400, t0());
  b.set_rate(0, 0, t0());
  CHECK(b.unlimited());
  CHECK(b.available(t0()) == TokenBucket::kUnlimited);
  CHECK(b.wait_for(1 << 20, t0()) == std::chrono::nanoseconds(0));
  b.set_rate(1000, 0, t0() + 1s);  // back to limited: default burst max(4 KiB, rate/50)
  CHECK(b.burst() == 4096);
  CHECK(b.available(t0() + 1s) == 0);  // a cap replacing "unlimited" starts empty
  CHECK(b.available(t0() + 3s) == 2000);
}

TEST_CASE("a clock that stands still or goes back adds no tokens", "[token_bucket]") {
  TokenBucket b(1000, 1000, t0() - 10s);
  b.consume(1000, t0());
  CHECK(b.available(t0() - 5s) == 0);
  CHECK(b.available(t0()) == 0);
  CHECK(b.available(t0() + 1ms) == 1);
}

TEST_CASE("after an idle spell a 100 ms window carries at most 1.2 x the rate", "[token_bucket]") {
  TokenBucket b(1e6, 0, t0());  // default burst: 20 ms of traffic
  CHECK(b.burst() == 20000);
  const MonoTime start = t0() + 10s;  // idle for 10 s: the bucket is full
  const std::size_t chunk = b.chunk_size(256 * 1024);
  CHECK(chunk == 20000);  // one burst
  MonoTime now = start;
  std::uint64_t sent = 0;
  while (now < start + 100ms) {
    if (b.available(now) < chunk) {
      now += b.wait_for(chunk, now);
      continue;
    }
    b.consume(chunk, now);
    if (now < start + 100ms) sent += chunk;
  }
  CHECK(sent <= 120000);
  CHECK(sent >= 100000);
}

TEST_CASE("token accounting is exact: waiting what wait_for says always yields the bytes", "[token_bucket]") {
  // Rates whose byte period is not a whole number of nanoseconds: a floating-point bucket
  // could land just below the byte after the wait it computed itself (and did, with FMA).
  for (double rate : {3.0, 7.0, 1000.0, 1e6 / 3, 123457.0}) {
    TokenBucket b(rate, 1000, t0());
    MonoTime now = t0();
    for (int i = 0; i < 200; ++i) {
      const auto w = b.wait_for(7, now);
      now += w;
      INFO("rate " << rate << " step " << i);
      if (w > std::chrono::nanoseconds(0)) REQUIRE(b.available(now - std::chrono::nanoseconds(1)) < 7);
      REQUIRE(b.available(now) >= 7);
      b.consume(7, now);
    }
  }
}

TEST_CASE("a long idle spell at the highest rate fills the bucket without overflow", "[token_bucket]") {
  TokenBucket b(1e12, TokenBucket::kMaxBurst * 2, t0());
  CHECK(b.burst() == TokenBucket::kMaxBurst);
  CHECK(b.available(t0() + std::chrono::hours(24 * 365)) == TokenBucket::kMaxBurst);
  b.consume(TokenBucket::kMaxBurst, t0() + std::chrono::hours(24 * 365));
  CHECK(b.available(t0() + std::chrono::hours(24 * 365)) == 0);
  CHECK(b.available(t0() + std::chrono::hours(24 * 365) + 1s) == TokenBucket::kMaxRate);
}

TEST_CASE("a write is at most one burst and at most the caller's chunk", "[token_bucket]") {
  TokenBucket b(400000, 0, t0());
  CHECK(b.burst() == 8000);
  CHECK(b.chunk_size(256 * 1024) == 8000);
  CHECK(b.chunk_size(4096) == 4096);
  TokenBucket u(0, 0, t0());
  CHECK(u.chunk_size(256 * 1024) == 256 * 1024);
  CHECK(u.wait_target(1000) == 1000);
}

TEST_CASE("the wait target follows the timers' lateness, between burst/2 and the burst", "[token_bucket]") {
  TokenBucket b(400000, 0, t0());  // burst 8000 = 20 ms
  CHECK(b.wait_target(8000) == 4000);  // nothing measured yet: half the burst, as before
  CHECK(b.wait_target(3000) == 3000);  // never more than asked for
  b.note_wake_lateness(1ms);  // 400 bytes accrue per 1 ms late
  CHECK(b.wait_target(8000) == 8000 - 800 - 500);
  for (int i = 0; i < 100; ++i) b.note_wake_lateness(0ms);  // on time: the slack decays
  CHECK(b.wait_target(8000) == 8000 - 500);
  b.note_wake_lateness(50ms);  // far later than the burst lasts: back to half
  CHECK(b.wait_target(8000) == 4000);
  b.note_wake_lateness(-5ms);  // a clock set back counts as on time
  CHECK(b.wait_target(8000) == 4000);  // the decaying maximum still holds the 50 ms
}

// A writer as S3Client's: waits for wait_target, its timer fires `late` after the wait it asked
// for, then writes what is available up to one burst. Checks every window against rate*T + burst
// and the long-run rate against the cap.
namespace {
struct WriterRun {
  double achieved = 0;
  std::uint64_t worst_excess = 0;  // max over windows of bytes - (rate*T + burst), clamped at 0
  std::size_t writes = 0;
};
template <class Late>
WriterRun run_writer(double rate, std::chrono::seconds length, Late late) {
  TokenBucket b(rate, 0, t0());
  const std::size_t chunk = b.chunk_size(256 * 1024);
  MonoTime now = t0();
  const MonoTime end = t0() + length;
  std::vector<std::pair<MonoTime, std::uint64_t>> writes;
  std::uint64_t sent = 0;
  while (now < end) {
    const auto avail = b.available(now);
    if (avail < b.wait_target(chunk)) {
      const auto w = b.wait_for(b.wait_target(chunk), now);
      const auto l = late();
      now += w + l;
      b.note_wake_lateness(l);
      continue;
    }
    const std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(avail, chunk));
    b.consume(n, now);
    writes.emplace_back(now, n);
    sent += n;
  }
  WriterRun r;
  r.achieved = static_cast<double>(sent) / static_cast<double>(length.count());
  r.writes = writes.size();
  // Every window that starts at a write and ends at a later write (the worst ones).
  for (std::size_t i = 0; i < writes.size(); ++i) {
    std::uint64_t bytes = 0;
    for (std::size_t j = i; j < writes.size() && j < i + 400; ++j) {
      bytes += writes[j].second;
      const double t = std::chrono::duration<double>(writes[j].first - writes[i].first).count();
      const double bound = rate * t + static_cast<double>(b.burst());
      if (static_cast<double>(bytes) > bound + 1)
        r.worst_excess = std::max<std::uint64_t>(r.worst_excess, static_cast<std::uint64_t>(bytes - bound));
    }
  }
  return r;
}
}  // namespace

TEST_CASE("writes of about one burst keep the cap exact with on-time or late timers", "[token_bucket]") {
  SECTION("on time") {
    auto r = run_writer(400000, 20s, [] { return std::chrono::nanoseconds(0); });
    CHECK(r.worst_excess == 0);
    CHECK(r.achieved <= 400000 + 8000 / 20.0 + 1);
    CHECK(r.achieved >= 400000 * 0.995);
    CHECK(r.writes <= 20 * 400000 / 7000);  // ~7.5 kB writes: ~53/s (4 kB chunks made 100/s)
  }
  SECTION("a 1 kHz host poll: up to 1 ms late") {
    std::mt19937 rng(7);
    std::uniform_int_distribution<int> us(0, 1000);
    auto r = run_writer(400000, 20s, [&] { return std::chrono::microseconds(us(rng)); });
    CHECK(r.worst_excess == 0);
    CHECK(r.achieved >= 400000 * 0.995);
    CHECK(r.writes <= 20 * 400000 / 6000);
  }
  SECTION("a 100 Hz host poll: up to 10 ms late, half the burst's time") {
    std::mt19937 rng(11);
    std::uniform_int_distribution<int> us(0, 10000);
    auto r = run_writer(400000, 20s, [&] { return std::chrono::microseconds(us(rng)); });
    CHECK(r.worst_excess == 0);
    CHECK(r.achieved >= 400000 * 0.99);
  }
}
