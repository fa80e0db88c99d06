// The `interval` checkpoint (src/buffer/sync_checkpoint.hpp): after a reboot a store opens at
// its last synced state; after a process kill (same boot) at its newest one. A forked child
// writes the store and exits without closing it; the parent reopens it as after a kill or, with
// another boot id, as after a power cut.
#include "buffer/sync_checkpoint.hpp"

#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>

#include "fleetpipe/buffer.hpp"
#include "support/test_paths.hpp"

using namespace fleetpipe;
namespace fs = std::filesystem;

namespace {

BufferConfig interval_config(const fs::path& dir) {
  BufferConfig c;
  c.path = dir.string();
  c.durability = Durability::interval;
  c.sync_interval_ms = 600000;  // no fsync but the ones the test asks for
  c.min_free_bytes = 0;
  c.min_free_inodes = 0;
  return c;
}

RecordMeta meta_of(const std::string& id) {
  RecordMeta m;
  m.stream = "s";
  m.event_id = id;
  m.content_type = "application/octet-stream";
  return m;
}

/// In a child: appends `synced` records, flush()es, appends `unsynced` more, exits unclosed.
void write_and_die(const fs::path& dir, int synced, int unsynced) {
  pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    Port port;
    MetricsRegistry m;
    auto b = Buffer::open(interval_config(dir), port, m);
    if (!b) _exit(2);
    for (int i = 0; i < synced; ++i)
      if (!(*b)->append(meta_of("synced-" + std::to_string(i)), std::string(300, 'a')).accepted) _exit(3);
    if (!(*b)->flush()) _exit(4);
    for (int i = 0; i < unsynced; ++i)
      if (!(*b)->append(meta_of("late-" + std::to_string(i)), std::string(300, 'b')).accepted) _exit(5);
    _exit(0);  // no close: as a kill or a power cut
  }
  int status = 0;
  REQUIRE(waitpid(pid, &status, 0) == pid);
  REQUIRE(WIFEXITED(status));
  REQUIRE(WEXITSTATUS(status) == 0);
}

std::set<std::string> ids_in(Buffer& b) {
  std::set<std::string> ids;
  auto lease = b.lease(~0ull);
  REQUIRE(lease);
  for (const auto& r : lease->records()) ids.insert(r.meta.event_id);
  lease->release();
  return ids;
}

struct Reboot {
  explicit Reboot(const fs::path& dir) {
    auto f = dir.parent_path() / "boot_id";
    std::ofstream(f) << "another-boot-" << ::getpid() << "\n";
    detail::set_boot_id_file_for_testing(f.string());
  }
  ~Reboot() { detail::set_boot_id_file_for_testing(""); }
};

}  // namespace

TEST_CASE("interval: after a process kill the store opens at its newest state, nothing rolled back",
          "[buffer][checkpoint]") {
  auto dir = test::scratch_dir("ckpt-kill") / "db";
  write_and_die(dir, 5, 7);
  Port port;
  MetricsRegistry m;
  auto b = Buffer::open(interval_config(dir), port, m);
  REQUIRE(b);
  CHECK(ids_in(**b).size() == 12);
  CHECK(m.sum("fleetpipe_buffer_power_cut_rollbacks_total") == 0);
  CHECK(m.sum("fleetpipe_buffer_checkpoints_total") >= 1);
}

TEST_CASE("interval: after a reboot an unclosed store rolls back to its last checkpoint, counted",
          "[buffer][checkpoint]") {
  auto dir = test::scratch_dir("ckpt-reboot") / "db";
  write_and_die(dir, 5, 7);
  Reboot reboot(dir);
  Port port;
  MetricsRegistry m;
  auto b = Buffer::open(interval_config(dir), port, m);
  REQUIRE(b);
  auto ids = ids_in(**b);
  CHECK(ids.size() == 5);
  for (int i = 0; i < 5; ++i) CHECK(ids.count("synced-" + std::to_string(i)) == 1);
  CHECK(m.sum("fleetpipe_buffer_power_cut_rollbacks_total") == 1);
  CHECK(m.sum("fleetpipe_buffer_quarantined_total") == 0);
  // The rolled-back store goes on: it takes records and keeps them across a clean close.
  CHECK((*b)->append(meta_of("after"), "x").accepted);
  b->reset();
  MetricsRegistry m2;
  auto again = Buffer::open(interval_config(dir), port, m2);
  REQUIRE(again);
  CHECK(ids_in(**again).size() == 6);
  CHECK(m2.sum("fleetpipe_buffer_power_cut_rollbacks_total") == 0);  // closed cleanly
}

TEST_CASE("interval: garbage in the newest meta page after a reboot is rolled back, not fatal",
          "[buffer][checkpoint]") {
  auto dir = test::scratch_dir("ckpt-garbage") / "db";
  write_and_die(dir, 4, 3);
  // What a reordering disk may leave: a meta page written, torn, or pointing at pages that
  // never arrived. Here both meta pages are overwritten with junk.
  {
    int fd = ::open((dir / "data.mdb").c_str(), O_RDWR);
    REQUIRE(fd >= 0);
    std::string junk(200, '\x5a');
    long ps = ::sysconf(_SC_PAGESIZE);
    REQUIRE(::pwrite(fd, junk.data(), junk.size(), 0) == static_cast<ssize_t>(junk.size()));
    REQUIRE(::pwrite(fd, junk.data(), junk.size(), ps) == static_cast<ssize_t>(junk.size()));
    ::close(fd);
  }
  Reboot reboot(dir);
  Port port;
  MetricsRegistry m;
  auto b = Buffer::open(interval_config(dir), port, m);
  REQUIRE(b);
  CHECK(ids_in(**b).size() == 4);
  CHECK(m.sum("fleetpipe_buffer_power_cut_rollbacks_total") == 1);
}

TEST_CASE("the checkpoint goes with its data file: copied with it, removed with it or under sync",
          "[buffer][checkpoint]") {
  auto dir = test::scratch_dir("ckpt-stale") / "db";
  write_and_die(dir, 3, 2);
  REQUIRE(fs::exists(dir / detail::CheckpointFile::kName));
  auto ck = detail::CheckpointFile::read(dir);
  REQUIRE(ck);
  CHECK(ck->meta.txnid > 0);

  SECTION("a copy of the directory keeps store and checkpoint together: it rolls back the same") {
    auto copy = dir.parent_path() / "copy";
    fs::create_directories(copy);
    for (const char* f : {"data.mdb", detail::CheckpointFile::kName}) fs::copy_file(dir / f, copy / f);
    Reboot reboot(copy);
    Port port;
    MetricsRegistry m;
    auto b = Buffer::open(interval_config(copy), port, m);
    REQUIRE(b);
    CHECK(ids_in(**b).size() == 3);
    CHECK(m.sum("fleetpipe_buffer_power_cut_rollbacks_total") == 1);
  }
  SECTION("a new store in the directory starts without the old checkpoint") {
    fs::remove(dir / "data.mdb");
    Reboot reboot(dir);
    Port port;
    MetricsRegistry m;
    auto b = Buffer::open(interval_config(dir), port, m);
    REQUIRE(b);
    CHECK(ids_in(**b).empty());
    CHECK(m.sum("fleetpipe_buffer_power_cut_rollbacks_total") == 0);
    auto ck2 = detail::CheckpointFile::read(dir);
    REQUIRE(ck2);
    CHECK(ck2->meta.txnid < ck->meta.txnid);
  }
  SECTION("opened under sync: the store is rolled back once, then the checkpoint is removed") {
    Reboot reboot(dir);
    Port port;
    MetricsRegistry m;
    auto c = interval_config(dir);
    c.durability = Durability::sync;
    auto b = Buffer::open(c, port, m);
    REQUIRE(b);
    CHECK(ids_in(**b).size() == 3);
    CHECK_FALSE(fs::exists(dir / detail::CheckpointFile::kName));
  }
}

TEST_CASE("checkpoint file: a torn slot falls back to the other one", "[buffer][checkpoint]") {
  auto dir = test::scratch_dir("ckpt-torn") / "db";
  write_and_die(dir, 2, 0);
  auto before = detail::CheckpointFile::read(dir);
  REQUIRE(before);
  // Write one more checkpoint, then tear it: the earlier one is read back.
  {
    Port port;
    MetricsRegistry m;
    auto b = Buffer::open(interval_config(dir), port, m);
    REQUIRE(b);
    REQUIRE((*b)->append(meta_of("more"), "y").accepted);
    REQUIRE((*b)->flush());
  }
  auto after = detail::CheckpointFile::read(dir);
  REQUIRE(after);
  REQUIRE(after->seq > before->seq);
  {
    int fd = ::open((dir / detail::CheckpointFile::kName).c_str(), O_RDWR);
    REQUIRE(fd >= 0);
    char bad[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    REQUIRE(::pwrite(fd, bad, sizeof bad, static_cast<off_t>((after->seq % 2) * 512 + 100)) == 8);
    ::close(fd);
  }
  auto torn = detail::CheckpointFile::read(dir);
  REQUIRE(torn);
  CHECK(torn->seq < after->seq);
}
