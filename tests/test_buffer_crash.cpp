// Crash tests for the Buffer: a forked child appends and acks at full speed and is killed with a
// real SIGKILL at a random moment; the parent then reopens the store and checks every promise.
#include "fleetpipe/buffer.hpp"

#include <lmdb.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdio>
#include <map>
#include <random>
#include <set>
#include <sstream>
#include <string>

#include "support/test_paths.hpp"

using namespace fleetpipe;

namespace {

BufferConfig crash_config(const std::string& path, Durability d) {
  BufferConfig c;
  c.path = path;
  c.durability = d;
  c.sync_interval_ms = 5;
  c.min_free_bytes = 0;
  c.min_free_inodes = 0;
  c.chunk_bytes = 16384;  // some payloads are chunked, some compressed
  c.compress_min_bytes = 2048;
  return c;
}

std::string payload_for(std::uint64_t seq) {
  std::size_t n = 16 + (seq * 7919) % 40000;
  std::string s(n, '\0');
  for (std::size_t i = 0; i < n; ++i) s[i] = static_cast<char>('a' + (seq + i / 64) % 26);
  return s;
}

void say(int fd, const std::string& line) {
  // One write() per line, shorter than PIPE_BUF: atomic, so the parent never sees half a line.
  ssize_t n = ::write(fd, line.data(), line.size());
  (void)n;
}

/// The real clock and filesystem, as on a device.
struct SystemPort {
  SystemClock clock;
  PosixFilesystemStats fsstats;
  Port port;
  MetricsRegistry metrics;
  SystemPort() {
    port.clock = &clock;
    port.filesystem = &fsstats;
  }
  SystemPort(const SystemPort&) = delete;
  SystemPort& operator=(const SystemPort&) = delete;
};

/// Appends records seq .. seq + n - 1 in one batch.
auto append_seq(Buffer& b, std::uint64_t seq, int n) {
  std::vector<std::string> payloads;
  std::vector<std::pair<RecordMeta, std::string_view>> batch;
  payloads.reserve(n);
  for (int i = 0; i < n; ++i) payloads.push_back(payload_for(seq + i));
  for (int i = 0; i < n; ++i) {
    RecordMeta m;
    m.stream = "s";
    m.event_id = std::to_string(seq + i);
    m.priority = static_cast<std::uint8_t>((seq + i) % 8);
    batch.emplace_back(std::move(m), payloads[i]);
  }
  return b.append_batch(batch);
}

/// The child: append and ack until killed. Reports to `fd`:
///   "A <seq> <id>"  after append returned accepted
///   "I <id>"        before ack (the ack may or may not commit before the kill)
///   "K <id>"        after ack returned ok
[[noreturn]] void child_main(int fd, const BufferConfig& cfg, std::uint64_t seq, std::uint64_t seed) {
  SystemPort sys;
  auto b = Buffer::open(cfg, sys.port, sys.metrics);
  if (!b) {
    say(fd, "E open failed\n");
    _exit(3);
  }
  say(fd, "R\n");  // the parent's kill delay counts from here, whatever the platform's speed
  std::mt19937_64 rng(seed);
  for (;;) {
    int n = 1 + static_cast<int>(rng() % 20);
    auto out = append_seq(**b, seq, n);
    for (int i = 0; i < n; ++i) {
      if (out[i].accepted)
        say(fd, "A " + std::to_string(seq + i) + " " + std::to_string(out[i].id) + "\n");
    }
    seq += n;
    if (rng() % 3 == 0) {
      auto l = (*b)->lease(200000, 1 + rng() % 30);
      if (l && !l->empty()) {
        std::vector<RecordId> ack, nack;
        for (auto& r : l->records()) (rng() % 4 ? ack : nack).push_back(r.id);
        for (auto id : ack) say(fd, "I " + std::to_string(id) + "\n");
        if ((*b)->ack(ack)) {
          for (auto id : ack) say(fd, "K " + std::to_string(id) + "\n");
        }
        (void)(*b)->nack(nack);
      }
    }
  }
}

// Blocks until the child's first line; "R" once its Buffer is open (an emulated or slow target
// takes longer than the kill delay just to get there, and a kill before it tests nothing).
std::string first_line(int fd) {
  std::string line;
  char c = 0;
  while (::read(fd, &c, 1) == 1 && c != '\n') line += c;
  return line;
}

struct ChildLog {
  std::map<RecordId, std::uint64_t> accepted;  // id -> seq
  std::set<RecordId> ack_intent, acked;
};

ChildLog read_all(int fd) {
  std::string all;
  char buf[65536];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n <= 0) break;
    all.append(buf, static_cast<std::size_t>(n));
  }
  ChildLog log;
  std::istringstream in(all);
  std::string tag;
  while (in >> tag) {
    if (tag == "A") {
      std::uint64_t seq, id;
      in >> seq >> id;
      log.accepted[id] = seq;
    } else if (tag == "I") {
      RecordId id;
      in >> id;
      log.ack_intent.insert(id);
    } else if (tag == "K") {
      RecordId id;
      in >> id;
      log.acked.insert(id);
    } else {
      FAIL("child reported: " << tag);
    }
  }
  return log;
}

}  // namespace

TEST_CASE("kill -9 at random points: every accepted record survives exactly once or was acked") {
  auto dir = (test::scratch_dir("buf-kill9") / "db").string();
  std::mt19937_64 rng(std::random_device{}());
  std::map<RecordId, std::uint64_t> expected;  // accepted, not confirmed acked
  std::set<RecordId> maybe_acked;
  RecordId max_id_seen = 0;
  std::uint64_t stale_cleared = 0;
  const int kCycles = 60;
  {
    // Run the append path once here: every forked child inherits it warm. Under emulation
    // (qemu-user translates code on first use) a cold child spent the whole kill delay on its
    // first batch, and the run tested nothing.
    SystemPort sys;
    auto warm = Buffer::open(crash_config((test::scratch_dir("buf-kill9-warm") / "db").string(),
                                          Durability::sync), sys.port, sys.metrics);
    REQUIRE(warm);
    auto out = append_seq(**warm, 0, 20);
    REQUIRE(out.size() == 20);
    CHECK(out[19].accepted);
  }
  for (int cycle = 0; cycle < kCycles; ++cycle) {
    Durability d = cycle % 3 == 0 ? Durability::interval : Durability::sync;
    BufferConfig cfg = crash_config(dir, d);
    int fds[2];
    REQUIRE(::pipe(fds) == 0);
    pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      ::close(fds[0]);
      child_main(fds[1], cfg, static_cast<std::uint64_t>(cycle) * 1000000, rng());
    }
    ::close(fds[1]);
    const std::string ready = first_line(fds[0]);
    ::usleep(static_cast<useconds_t>(2000 + rng() % 40000));
    ::kill(pid, SIGKILL);
    CHECK(ready == "R");
    ChildLog log = read_all(fds[0]);
    ::close(fds[0]);
    int status = 0;
    ::waitpid(pid, &status, 0);
    REQUIRE(WIFSIGNALED(status));
    REQUIRE(WTERMSIG(status) == SIGKILL);

    for (auto& [id, seq] : log.accepted) {
      CHECK(id > max_id_seen);  // ids never reused across restarts
      expected[id] = seq;
    }
    for (auto& [id, seq] : log.accepted) max_id_seen = std::max(max_id_seen, id);
    for (auto id : log.ack_intent) maybe_acked.insert(id);

    // Reopen: the store must open without quarantine, and hold what was promised.
    MetricsRegistry metrics;
    FakeFilesystemStats fsstats;
    Port port;
    port.filesystem = &fsstats;
    auto b = Buffer::open(crash_config(dir, Durability::sync), port, metrics);
    REQUIRE(b.ok());
    REQUIRE(metrics.value("fleetpipe_buffer_quarantined_total") == 0);
    stale_cleared += static_cast<std::uint64_t>(
        std::max(0.0, metrics.value("fleetpipe_buffer_stale_readers_cleared_total")));
    auto l = (*b)->lease(UINT64_MAX);
    REQUIRE(l.ok());
    std::map<std::string, int> seen_events;
    std::set<RecordId> present;
    for (std::size_t i = 0; i < l->records().size(); ++i) {
      const auto& r = l->records()[i];
      present.insert(r.id);
      seen_events[r.meta.event_id]++;
    }
    for (auto& [ev, n] : seen_events) CHECK(n == 1);  // exactly once
    for (auto id : log.acked) CHECK(present.count(id) == 0);
    std::size_t missing = 0;
    for (auto it = expected.begin(); it != expected.end();) {
      if (present.count(it->first)) {
        ++it;
        continue;
      }
      // Absent: only allowed when the child had started to ack it.
      if (!maybe_acked.count(it->first)) ++missing;
      it = expected.erase(it);
    }
    CHECK(missing == 0);
    // Spot-check payload integrity of a few records.
    for (std::size_t i = 0; i < l->records().size(); i += 37) {
      const auto& r = l->records()[i];
      std::string want = payload_for(std::stoull(r.meta.event_id));
      std::string got(r.payload_size, '\0');
      auto n = (*b)->read_payload(r.id, 0, got.data(), got.size());
      REQUIRE(n.ok());
      CHECK(got == want);
    }
    // Keep the store small: drain most of it now and then (acked: no longer expected).
    if (cycle % 10 == 9) {
      std::vector<RecordId> all(present.begin(), present.end());
      l->release();
      REQUIRE((*b)->ack(all).ok());
      for (auto id : all) expected.erase(id);
    }
  }
  INFO("stale reader slots cleared over the run: " << stale_cleared);
  CHECK(max_id_seen > 0);
}

TEST_CASE("reader slot of a killed reader process is cleared by poll, inspect works alongside") {
  auto dir = (test::scratch_dir("buf-stale") / "db").string();
  BufferConfig cfg = crash_config(dir, Durability::sync);
  MetricsRegistry m;
  auto b = Buffer::open(cfg, Port{}, m);
  REQUIRE(b.ok());
  REQUIRE((*b)->append(RecordMeta{}, "x").accepted);
  int fds[2];
  REQUIRE(::pipe(fds) == 0);
  pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    // A reader process (like `fleetpipe inspect`) that dies holding a read transaction.
    MDB_env* env = nullptr;
    MDB_txn* txn = nullptr;
    bool ok = mdb_env_create(&env) == 0 && mdb_env_set_maxdbs(env, 8) == 0 &&
              mdb_env_open(env, dir.c_str(), MDB_RDONLY | MDB_NOTLS, 0644) == 0 &&
              mdb_txn_begin(env, nullptr, MDB_RDONLY, &txn) == 0;
    say(fds[1], ok ? "L" : "E");
    for (;;) ::pause();
  }
  ::close(fds[1]);
  char c = 0;
  REQUIRE(::read(fds[0], &c, 1) == 1);
  REQUIRE(c == 'L');
  // While the writer and another reader hold the store, inspection works.
  auto rep = inspect_buffer(dir);
  REQUIRE(rep.ok());
  CHECK(rep->records == 1);
  ::kill(pid, SIGKILL);
  ::waitpid(pid, nullptr, 0);
  ::close(fds[0]);
  REQUIRE((*b)->poll().ok());
  CHECK(m.value("fleetpipe_buffer_stale_readers_cleared_total") >= 1);
  CHECK((*b)->append(RecordMeta{}, "y").accepted);
}
