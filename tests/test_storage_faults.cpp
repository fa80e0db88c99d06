// Storage faults (issue #9) not already covered by the Buffer's own tests: a read-only
// filesystem (a tmpfs remounted read-only; needs root) and wall-clock jumps (FakeClock).
// Full filesystem, nr_inodes exhaustion: tests/test_buffer_fullfs.cpp. LMDB map full:
// tests/test_buffer.cpp ("map grows on MDB_MAP_FULL ...", "map cannot grow while a lease is
// open ..."). Corrupt DB: tests/test_buffer.cpp ("a corrupt store is quarantined ...").
#include "fleetpipe/buffer.hpp"

#include <sys/mount.h>

#include <catch2/catch.hpp>
#include <cerrno>
#include <cstring>

#include "fleetpipe/metrics.hpp"
#include "support/test_paths.hpp"

using namespace fleetpipe;
namespace fs = std::filesystem;

namespace {

RecordMeta meta(std::uint8_t prio, const std::string& id) {
  RecordMeta m;
  m.stream = prio >= 6 ? "alarm" : "imu";
  m.event_id = id;
  m.priority = prio;
  return m;
}

BufferConfig config(const fs::path& dir) {
  BufferConfig c;
  c.path = (dir / "db").string();
  c.durability = Durability::sync;
  c.min_free_bytes = 0;
  c.initial_map_bytes = 1 << 20;
  return c;
}

}  // namespace

TEST_CASE("read-only filesystem: open fails or appends are refused with a typed, counted error, "
          "nothing is lost and capture resumes when it is writable again",
          "[storage]") {
  auto dir = test::scratch_dir("ro-fs");
  if (::mount("tmpfs", dir.c_str(), "tmpfs", 0, "size=16m") != 0) {
    WARN("cannot mount a tmpfs (" << std::strerror(errno) << "): needs root; skipped");
    return;
  }
  struct Unmount {
    fs::path d;
    ~Unmount() { ::umount2(d.c_str(), MNT_DETACH); }
  } unmount{dir};
  StderrLogSink quiet(LogLevel::off);
  Port port;
  port.log = &quiet;
  {
    MetricsRegistry m;
    auto b = Buffer::open(config(dir), port, m);
    REQUIRE(b.ok());
    for (int i = 0; i < 3; ++i) REQUIRE((*b)->append(meta(7, "pre" + std::to_string(i)), "data").accepted);
  }
  REQUIRE(::mount("tmpfs", dir.c_str(), "tmpfs", MS_REMOUNT | MS_RDONLY, "size=16m") == 0);
  {
    MetricsRegistry m;
    auto b = Buffer::open(config(dir), port, m);
    if (!b.ok()) {
      INFO(b.error().message);
      CHECK(b.error().is(errc::io_error));
      CHECK(b.error().message.find((dir / "db").string()) != std::string::npos);
    } else {
      auto o = (*b)->append(meta(7, "during"), "data");
      CHECK_FALSE(o.accepted);
      CHECK((o.reason == errc::io_error || o.reason == errc::storage_full));
      CHECK(m.sum("fleetpipe_buffer_rejected_total") >= 1);
    }
  }
  REQUIRE(::mount("tmpfs", dir.c_str(), "tmpfs", MS_REMOUNT, "size=16m") == 0);
  MetricsRegistry m;
  auto b = Buffer::open(config(dir), port, m);
  REQUIRE(b.ok());
  CHECK((*b)->append(meta(7, "after"), "data").accepted);  // high priority captured again
  auto l = (*b)->lease(UINT64_MAX);
  REQUIRE(l.ok());
  CHECK(l->records().size() == 4);  // the 3 accepted before the fault survived
}

TEST_CASE("wall-clock jumps (back a year, forward 20 years) neither crash nor lose or reorder "
          "records, and the buffer keeps accepting high priority",
          "[storage][clock]") {
  auto dir = test::scratch_dir("clock-jump");
  FakeClock clock;
  StderrLogSink quiet(LogLevel::off);
  Port port;
  port.clock = &clock;
  port.log = &quiet;
  MetricsRegistry m;
  auto cfg = config(dir);
  cfg.durability = Durability::interval;
  cfg.max_bytes_written_per_day = 1 << 20;
  auto b = Buffer::open(cfg, port, m);
  REQUIRE(b.ok());
  const auto start = clock.wall();
  std::vector<std::chrono::hours> jumps = {std::chrono::hours(0), -std::chrono::hours(24 * 365),
                                           std::chrono::hours(24 * 365 * 20), std::chrono::hours(-1),
                                           std::chrono::hours(0)};
  int n = 0;
  for (auto j : jumps) {
    clock.set_wall(start + j);
    clock.advance(std::chrono::seconds(1));  // monotonic keeps going forward
    for (std::uint8_t p : {1, 7}) {
      auto o = (*b)->append(meta(p, "r" + std::to_string(n++)), std::string(100, 'x'));
      INFO("jump " << j.count() << " h, priority " << int(p) << ": " << o.message);
      CHECK(o.accepted);
    }
    CHECK((*b)->poll().ok());
  }
  auto l = (*b)->lease(UINT64_MAX);
  REQUIRE(l.ok());
  REQUIRE(l->records().size() == static_cast<std::size_t>(n));
  // Priority desc, then oldest (by id, which a clock jump does not change).
  for (std::size_t i = 1; i < l->records().size(); ++i) {
    const auto& a = l->records()[i - 1];
    const auto& c = l->records()[i];
    CHECK((a.meta.priority > c.meta.priority || (a.meta.priority == c.meta.priority && a.id < c.id)));
  }
}
