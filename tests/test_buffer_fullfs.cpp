// The Buffer on a real full filesystem: a small tmpfs (bytes) and a tmpfs with few inodes
// (nr_inodes), mounted by the test (needs root; the mounts are removed when each test ends).
#include "fleetpipe/buffer.hpp"

#include <sys/mount.h>
#include <sys/statvfs.h>

#include <cerrno>
#include <cstring>

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <random>

#include "support/test_paths.hpp"

using namespace fleetpipe;
namespace fs = std::filesystem;

namespace {

/// A tmpfs mounted for the life of the object.
struct TmpfsMount {
  fs::path dir;
  bool mounted = false;
  std::string error;
  TmpfsMount(const std::string& tag, const std::string& options) {
    dir = test::scratch_dir(tag);
    if (::mount("tmpfs", dir.c_str(), "tmpfs", 0, options.c_str()) == 0) {
      mounted = true;
    } else {
      error = std::strerror(errno);
    }
  }
  ~TmpfsMount() {
    if (mounted && ::umount2(dir.c_str(), MNT_DETACH) != 0) {
      std::fprintf(stderr, "warning: could not unmount %s\n", dir.c_str());
    }
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
};

std::string payload_for(std::uint64_t seq, std::size_t n) {
  std::mt19937_64 rng(seq);
  std::string s(n, '\0');
  for (auto& c : s) c = static_cast<char>(rng());
  return s;
}

RecordMeta meta(std::uint8_t prio, std::uint64_t seq) {
  RecordMeta m;
  m.stream = prio >= 6 ? "alarm" : "imu";
  m.event_id = std::to_string(seq);
  m.priority = prio;
  return m;
}

BufferConfig base_config(const fs::path& dir, FullPolicy policy) {
  BufferConfig c;
  c.path = (dir / "db").string();
  c.policy = policy;
  c.durability = Durability::sync;
  c.max_bytes = 64 << 20;  // far above the filesystem: the headroom guard must act
  c.compress_min_bytes = 0;
  c.initial_map_bytes = 1 << 20;
  c.min_free_bytes = 256 << 10;
  c.min_free_inodes = 4;
  return c;
}

/// Every record still in the store reads back intact; returns how many there are.
std::size_t verify_contents(Buffer& b, std::size_t size) {
  auto l = b.lease(UINT64_MAX);
  REQUIRE(l.ok());
  for (const auto& r : l->records()) {
    std::string got(r.payload_size, '\0');
    auto n = b.read_payload(r.id, 0, got.data(), got.size());
    REQUIRE(n.ok());
    REQUIRE(got == payload_for(std::stoull(r.meta.event_id), size));
  }
  return l->records().size();
}

}  // namespace

TEST_CASE("full tmpfs: evict keeps headroom, counts evictions, high priority still accepted") {
  TmpfsMount m("buf-tmpfs-evict", "size=4m");
  if (!m.mounted) {
    WARN("cannot mount tmpfs (" << m.error << "): test needs root; skipped");
    return;
  }
  auto cfg = base_config(m.dir, FullPolicy::evict);
  MetricsRegistry metrics;
  const std::size_t size = 8000;
  std::uint64_t seq = 0, accepted = 0, io_errors = 0;
  {
    auto b = Buffer::open(cfg, Port{}, metrics);
    REQUIRE(b.ok());
    for (int i = 0; i < 1500; ++i) {  // ~12 MB into a 4 MB filesystem
      ++seq;
      auto o = (*b)->append(meta(static_cast<std::uint8_t>(seq % 4), seq), payload_for(seq, size));
      if (o.accepted) ++accepted;
      if (o.reason == errc::io_error) ++io_errors;
    }
    CHECK(accepted > 1000);  // evict: old low-priority data makes room for new
    CHECK(io_errors == 0);
    CHECK(metrics.sum("fleetpipe_buffer_evicted_total") > 0);
    CHECK(metrics.value("fleetpipe_buffer_evicted_total",
                        {{"reason", "min_free_bytes"}, {"priority", "0"}, {"stream", "imu"}}) > 0);
    struct statvfs sv {};
    REQUIRE(::statvfs(m.dir.c_str(), &sv) == 0);
    CHECK(sv.f_bavail * sv.f_frsize > 0);  // the filesystem was not filled
    // High priority is still accepted (it evicts low priority).
    for (int i = 0; i < 20; ++i) {
      ++seq;
      auto o = (*b)->append(meta(7, seq), payload_for(seq, size));
      CHECK(o.accepted);
    }
    CHECK(verify_contents(**b, size) > 0);
  }
  // The store reopens and is usable.
  auto b = Buffer::open(cfg, Port{}, metrics);
  REQUIRE(b.ok());
  CHECK(metrics.value("fleetpipe_buffer_quarantined_total") == 0);
  auto n = verify_contents(**b, size);
  CHECK(n > 20);
  CHECK((*b)->stats().by_priority[7].records == 20);
  ++seq;
  CHECK((*b)->append(meta(7, seq), payload_for(seq, size)).accepted);
}

TEST_CASE("full tmpfs: reject applies back-pressure with counters, acked space is reused") {
  TmpfsMount m("buf-tmpfs-reject", "size=4m");
  if (!m.mounted) {
    WARN("cannot mount tmpfs (" << m.error << "): test needs root; skipped");
    return;
  }
  auto cfg = base_config(m.dir, FullPolicy::reject);
  MetricsRegistry metrics;
  const std::size_t size = 8000;
  auto b = Buffer::open(cfg, Port{}, metrics);
  REQUIRE(b.ok());
  std::uint64_t seq = 0;
  int accepted = 0, rejected = 0;
  for (int i = 0; i < 800; ++i) {
    ++seq;
    auto o = (*b)->append(meta(1, seq), payload_for(seq, size));
    if (o.accepted) {
      ++accepted;
    } else {
      CHECK(o.reason == errc::storage_full);
      ++rejected;
    }
  }
  CHECK(accepted > 100);
  CHECK(rejected > 100);
  CHECK(metrics.sum("fleetpipe_buffer_evicted_total") == 0);
  CHECK(metrics.value("fleetpipe_buffer_rejected_total",
                      {{"reason", "min_free_bytes"}, {"priority", "1"}, {"stream", "imu"}}) > 0);
  CHECK(static_cast<int>(verify_contents(**b, size)) == accepted);
  // Upload drains the buffer: the space inside the file is reused, appends flow again.
  auto l = (*b)->lease(UINT64_MAX);
  std::vector<RecordId> ids;
  for (auto& r : l->records()) ids.push_back(r.id);
  l->release();
  REQUIRE((*b)->ack(ids).ok());
  int after = 0;
  for (int i = 0; i < 50; ++i) {
    ++seq;
    if ((*b)->append(meta(1, seq), payload_for(seq, size)).accepted) ++after;
  }
  CHECK(after == 50);
}

TEST_CASE("real ENOSPC (no headroom configured): rejected, counted, process and store survive") {
  TmpfsMount m("buf-tmpfs-enospc", "size=2m");
  if (!m.mounted) {
    WARN("cannot mount tmpfs (" << m.error << "): test needs root; skipped");
    return;
  }
  auto cfg = base_config(m.dir, FullPolicy::reject);
  cfg.min_free_bytes = 0;
  cfg.min_free_inodes = 0;
  MetricsRegistry metrics;
  const std::size_t size = 30000;
  std::uint64_t seq = 0;
  int accepted = 0;
  {
    auto b = Buffer::open(cfg, Port{}, metrics);
    REQUIRE(b.ok());
    for (int i = 0; i < 200; ++i) {
      ++seq;
      auto o = (*b)->append(meta(2, seq), payload_for(seq, size));
      if (o.accepted) ++accepted;
      else CHECK(o.reason == errc::storage_full);
    }
    CHECK(accepted > 10);
    CHECK(metrics.sum("fleetpipe_buffer_rejected_total") > 0);
    CHECK(static_cast<int>(verify_contents(**b, size)) == accepted);
  }
  auto b = Buffer::open(cfg, Port{}, metrics);
  REQUIRE(b.ok());
  CHECK(static_cast<int>(verify_contents(**b, size)) == accepted);
}

TEST_CASE("inode exhaustion (tmpfs nr_inodes): guard acts per policy, high priority accepted") {
  TmpfsMount m("buf-tmpfs-inodes", "size=16m,nr_inodes=32");
  if (!m.mounted) {
    WARN("cannot mount tmpfs (" << m.error << "): test needs root; skipped");
    return;
  }
  const std::size_t size = 4000;
  for (FullPolicy policy : {FullPolicy::evict, FullPolicy::reject}) {
    auto cfg = base_config(m.dir, policy);
    cfg.path = (m.dir / (policy == FullPolicy::evict ? "evict" : "reject")).string();
    MetricsRegistry metrics;
    auto b = Buffer::open(cfg, Port{}, metrics);
    REQUIRE(b.ok());
    std::uint64_t seq = 0;
    for (int i = 0; i < 50; ++i) {
      ++seq;
      REQUIRE((*b)->append(meta(1, seq), payload_for(seq, size)).accepted);
    }
    // The device's real job uses up the inodes.
    std::vector<fs::path> fillers;
    for (int i = 0; i < 100; ++i) {
      fs::path f = m.dir / ("filler-" + std::to_string(i));
      std::ofstream out(f);
      if (!out) break;
      fillers.push_back(f);
    }
    struct statvfs sv {};
    REQUIRE(::statvfs(m.dir.c_str(), &sv) == 0);
    REQUIRE(sv.f_favail < cfg.min_free_inodes);
    int accepted = 0, rejected = 0;
    for (int i = 0; i < 100; ++i) {
      ++seq;
      auto o = (*b)->append(meta(1, seq), payload_for(seq, size));
      (o.accepted ? accepted : rejected)++;
    }
    std::uint64_t before = (*b)->stats().records;
    if (policy == FullPolicy::evict) {
      CHECK(accepted == 100);
      CHECK(metrics.value("fleetpipe_buffer_evicted_total",
                          {{"reason", "min_free_inodes"}, {"priority", "1"}, {"stream", "imu"}}) > 0);
      for (int i = 0; i < 10; ++i) {
        ++seq;
        auto o = (*b)->append(meta(7, seq), payload_for(seq, size));
        CHECK(o.accepted);
      }
      CHECK((*b)->stats().records <= before + 10);
    } else {
      CHECK(rejected > 0);
      CHECK(metrics.value("fleetpipe_buffer_rejected_total",
                          {{"reason", "min_free_inodes"}, {"priority", "1"}, {"stream", "imu"}}) > 0);
    }
    CHECK(verify_contents(**b, size) > 0);
    // A new store cannot even be created now: a clean error, not a crash.
    BufferConfig other = cfg;
    other.path = (m.dir / "other").string();
    MetricsRegistry m2;
    auto o2 = Buffer::open(other, Port{}, m2);
    CHECK(!o2.ok());
    for (auto& f : fillers) fs::remove(f);
  }
}
