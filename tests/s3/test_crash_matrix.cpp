// Crash matrix (issues #9, #24): a forked child runs capture + buffer + upload (Capture and
// mixed-size records of random priority -> Buffer -> Uploader to the real S3 server) and is
// killed with SIGKILL at a random point, again and again: 20-320 ms after it accepted its first
// record, the window stretched on a platform that gets there slower (qemu, sanitizers), so the
// kills fall as deep into the upload everywhere. After each kill the DB must open. Then
// a drain uploads the rest, and an independent boto3 read-back (tests/s3/uploader_readback.py)
// checks the bucket and its index: every accepted record is in exactly one data object and in a
// manifest line with the right key, offset, size and event id; no line names a missing object.
//
// Kill count: $FLEETPIPE_CRASH_KILLS, default 100 (20 in sanitizer builds, which run ~5x slower,
// and where the first child shows a platform more than kSlowPlatform times slower, e.g. qemu).
// $FLEETPIPE_CRASH_VERBOSE prints how long each child took to accept its first record.
#include "fleetpipe/capture.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <cmath>
#include <cstring>
#include <cstdio>
#include <fstream>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <sstream>
#include <thread>

#include "capture/event_format.hpp"
#include "fleetpipe/buffer.hpp"
#include "fleetpipe/metrics.hpp"
#include "fleetpipe/trigger.hpp"
#include "fleetpipe/uploader.hpp"
#include "support/buffer_config.hpp"
#include "support/crash_uploader.hpp"
#include "support/index_check.hpp"
#include "support/payload.hpp"
#include "support/readback.hpp"
#include "support/s3_env.hpp"
#include "support/shell.hpp"
#include "support/test_paths.hpp"
#include "support/unique_name.hpp"

using namespace fleetpipe;
using test::readback;
using test::slurp;
using namespace std::chrono_literals;
using nlohmann::json;
namespace fs = std::filesystem;

namespace {

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr int kDefaultKills = 20;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
constexpr int kDefaultKills = 20;
#else
constexpr int kDefaultKills = 100;
#endif
#else
constexpr int kDefaultKills = 100;
#endif

BufferConfig buffer_config(const fs::path& dir) { return test::scratch_buffer_config((dir / "db").string()); }

UploaderConfig uploader_config(const test::S3Env& env, const std::string& bucket,
                               const std::string& prefix) {
  auto c = test::crash_uploader_config(env, bucket, prefix, "crash-dev");
  c.target_object_bytes = 64 << 10;
  // Mixed sizes: records >= 256 KiB are objects of their own, >= 5 MiB multipart uploads whose
  // parts go out in parallel, so a batch holds several objects and a kill often falls between
  // them (or between parts).
  c.large_record_bytes = 256 << 10;
  c.multipart_threshold_bytes = 5ull << 20;
  c.part_bytes = 5ull << 20;
  c.max_concurrent_requests = 4;
  return c;
}

// A blob record's payload, a function of its event id (the parent checks the bytes).
std::string blob_payload(const std::string& event_id, std::size_t size) {
  return test::pseudo_random(size, std::hash<std::string>{}(event_id));
}

// "blob-<run>-<n>-<size>": the size travels in the id, so the parent can rebuild the payload.
std::size_t blob_size_of(const std::string& event_id) {
  return static_cast<std::size_t>(std::stoull(event_id.substr(event_id.rfind('-') + 1)));
}

// Appends each finished event to the Buffer; logs its id once the Buffer has accepted it, and
// tells the parent (one byte on `ready_fd`) when the first one is.
struct LoggingSink final : EventSink {
  Buffer* buffer = nullptr;
  int log_fd = -1;
  int ready_fd = -1;
  AppendOutcome deliver(const RecordMeta& meta, std::string_view payload) override {
    auto o = buffer->append(meta, payload);
    if (o.accepted) {
      std::string line = meta.event_id + "\n";
      if (write(log_fd, line.data(), line.size()) < 0) _exit(5);
      if (ready_fd >= 0) {
        if (write(ready_fd, "a", 1) != 1) _exit(8);
        close(ready_fd);
        ready_fd = -1;
      }
    }
    return o;
  }
};

// How long a child may take to accept its first record before the test gives up on it.
constexpr auto kReadyTimeout = 120s;
// A child here reaches its first accepted record within tens of ms, also on a loaded machine
// (Buffer open, Uploader create, the first event). Where the fastest child is slower than this
// reference (an emulator, a sanitizer), the kill window and the drain's settle time stretch by
// the same factor, so kills still land as far into the upload.
constexpr double kNativeReadyS = 0.1;
// From this slowdown on, the default kill count is the sanitizer builds' (the stretched windows
// would not fit ctest's timeout 100 times).
constexpr double kSlowPlatform = 4;
constexpr int kSlowPlatformKills = 20;

// Waits for the child's first-record mark on `fd`: the seconds it took, or < 0 when the child
// closed the pipe first (it died) or did not get there within kReadyTimeout.
double wait_ready(int fd, std::chrono::steady_clock::time_point forked) {
  pollfd p{fd, POLLIN, 0};
  const int timeout_ms = static_cast<int>(std::chrono::milliseconds(kReadyTimeout).count());
  char c = 0;
  if (poll(&p, 1, timeout_ms) != 1 || read(fd, &c, 1) != 1) return -1;
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - forked).count();
}

// The child: capture + buffer + upload until killed.
[[noreturn]] void child_main(const fs::path& dir, const test::S3Env& env, const std::string& bucket,
                             const std::string& prefix, std::uint64_t seed, int run, int ready_fd) {
  StderrLogSink quiet(LogLevel::off);
  Port port;
  port.log = &quiet;
  MetricsRegistry metrics;
  auto buf = Buffer::open(buffer_config(dir), port, metrics);
  if (!buf) _exit(3);
  LoggingSink sink;
  sink.buffer = buf->get();
  sink.ready_fd = ready_fd;
  sink.log_fd = open((dir / "accepted.log").c_str(), O_WRONLY | O_APPEND | O_CREAT, 0644);
  if (sink.log_fd < 0) _exit(4);
  StreamConfig s;
  s.name = "imu";
  s.channels = {"v"};
  s.ring_seconds = 2;
  auto trig = manual_trigger("m");
  trig.capture.pre_s = 0.03;
  trig.capture.post_s = 0.03;
  auto cap = Capture::create("crash-dev", {s}, {trig}, sink, port, metrics);
  if (!cap) _exit(6);
  auto up = Uploader::create(uploader_config(env, bucket, prefix), **buf, port, metrics);
  if (!up) _exit(7);
  auto imu = (*cap)->stream("imu");
  auto m = (*cap)->trigger("m");
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> log_size(std::log(10.0), std::log(7.0 * 1024 * 1024));
  double t = 0;
  int blobs = 0;
  for (std::uint64_t i = 0;; ++i) {
    t += 0.01;
    (*cap)->push(imu, t, {static_cast<double>(rng() % 1000)});
    if (i % 20 == 0) (void)(*cap)->fire(m, t);
    if (i % 40 == 10 && blobs < 2) {  // 10 B .. 7 MiB, log-uniform, priority 0..7
      auto size = static_cast<std::size_t>(std::exp(log_size(rng)));
      RecordMeta meta;
      meta.stream = "blob";
      meta.event_id = "blob-" + std::to_string(run) + "-" + std::to_string(blobs++) + "-" +
                      std::to_string(size);
      meta.priority = static_cast<std::uint8_t>(rng() % 8);
      meta.start_ns = meta.end_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
          std::chrono::system_clock::now().time_since_epoch()).count();
      meta.content_type = "application/octet-stream";
      (void)sink.deliver(meta, blob_payload(meta.event_id, size));
    }
    (*cap)->tick(t);
    (*up)->poll();
    if (i % 5 == 0) (*up)->run_for(1ms);
  }
}

}  // namespace

TEST_CASE("kill -9 of capture+buffer+upload at random points: the DB opens every time, every "
          "accepted record is in the bucket exactly once and in a manifest line that names it right",
          "[crash][s3]") {
  auto env = test::load_s3_env();
  int kills = kDefaultKills;
  const char* kills_env = std::getenv("FLEETPIPE_CRASH_KILLS");
  if (kills_env) kills = std::max(1, std::atoi(kills_env));
  std::string bucket = test::unique_name("fp-crash");
  std::string prefix = test::unique_name("c");
  readback(env, "mkbucket " + bucket);
  auto dir = test::scratch_dir("crash-matrix");
  std::mt19937_64 rng(std::random_device{}());
  StderrLogSink quiet(LogLevel::off);
  Port port;
  port.log = &quiet;

  int killed = 0, mid_batch = 0, mid_multipart = 0, orphans_aborted = 0;
  double fastest_ready_s = 1e9;  // the quickest first record so far: this platform's pace
  for (int i = 0; i < kills; ++i) {
    int ready[2];
    REQUIRE(pipe(ready) == 0);
    const auto forked = std::chrono::steady_clock::now();
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      close(ready[0]);
      child_main(dir, env, bucket, prefix, rng(), i, ready[1]);
    }
    close(ready[1]);
    const double ready_s = wait_ready(ready[0], forked);
    close(ready[0]);
    if (ready_s < 0) {  // died or stuck before its first record: say so, then see how it ended
      kill(pid, SIGKILL);
      int status = 0;
      waitpid(pid, &status, 0);
      FAIL("kill " << i << ": the child accepted no record within " << kReadyTimeout.count()
                   << " s (wait status " << status << ")");
    }
    fastest_ready_s = std::min(fastest_ready_s, ready_s);
    if (std::getenv("FLEETPIPE_CRASH_VERBOSE")) std::printf("kill %d: first record after %.3f s\n", i, ready_s);
    const double slowdown = std::max(1.0, fastest_ready_s / kNativeReadyS);
    if (i == 0 && !kills_env && slowdown > kSlowPlatform) kills = std::min(kills, kSlowPlatformKills);
    std::this_thread::sleep_for(std::chrono::duration<double, std::milli>(
        static_cast<double>(20 + rng() % 300) * slowdown));
    REQUIRE(kill(pid, SIGKILL) == 0);
    int status = 0;
    REQUIRE(waitpid(pid, &status, 0) == pid);
    INFO("kill " << i << " status " << status);
    REQUIRE(WIFSIGNALED(status));  // the child was running (it did not fail on its own)
    REQUIRE(WTERMSIG(status) == SIGKILL);
    ++killed;
    MetricsRegistry metrics;
    auto buf = Buffer::open(buffer_config(dir), port, metrics);  // the DB opens every time
    REQUIRE(buf.ok());
    CHECK(metrics.sum("fleetpipe_buffer_quarantined_total") == 0);
    // A batch partly delivered (manifest lines kept for it) or a multipart upload under way: the
    // kill fell while more than one object, or part, of a batch was in flight.
    auto manifests = (*buf)->list_state("uploader/manifest/");
    auto mpus = (*buf)->list_state("uploader/mpu/");
    REQUIRE(manifests.ok());
    REQUIRE(mpus.ok());
    if (!manifests->empty()) ++mid_batch;
    if (!mpus->empty()) ++mid_multipart;
  }
  CHECK(killed == kills);

  // Drain: no capture, upload everything left.
  {
    MetricsRegistry metrics;
    StderrLogSink drain_log(LogLevel::warning);
    Port dport;
    dport.log = &drain_log;
    auto buf = Buffer::open(buffer_config(dir), dport, metrics);
    REQUIRE(buf.ok());
    // A kill between CreateMultipartUpload's reply and its saved state leaves an upload no state
    // names: the drain's bucket scan aborts those older than 1 s (a scan every second).
    auto cfg = uploader_config(env, bucket, prefix);
    cfg.abandon_multipart_after_s = 1;
    auto up = Uploader::create(cfg, **buf, dport, metrics);
    REQUIRE(up.ok());
    auto end = std::chrono::steady_clock::now() + 300s;
    while (std::chrono::steady_clock::now() < end &&
           ((*buf)->stats().records > 0 || !(*up)->idle())) {
      (*up)->flush();
      (*up)->run_for(20ms);
    }
    const double slowdown = std::max(1.0, fastest_ready_s / kNativeReadyS);
    auto settle = std::chrono::steady_clock::now() +  // pending manifests, two scans
                  std::chrono::duration_cast<std::chrono::nanoseconds>(2500ms * slowdown);
    while (std::chrono::steady_clock::now() < settle) (*up)->run_for(50ms);
    orphans_aborted = static_cast<int>(metrics.sum("fleetpipe_uploader_multipart_aborted_total"));
    INFO("last error: " << (*up)->status().last_error << "; records " << (*buf)->stats().records
                         << ", acked " << metrics.value("fleetpipe_uploader_records_acked_total"));
    REQUIRE((*buf)->stats().records == 0);
    CHECK((*buf)->stats().parked == 0);
  }

  std::set<std::string> accepted;
  {
    std::istringstream in(slurp((dir / "accepted.log").string()));
    std::string id;
    while (std::getline(in, id))
      if (!id.empty()) accepted.insert(id);
  }
  INFO(accepted.size() << " records accepted over " << kills << " kills");
  REQUIRE(accepted.size() >= static_cast<std::size_t>(kills) / 2);

  auto rb = readback(env, "dump " + bucket + " " + prefix + "/ '" + (dir / "rb").string() + "'");
  CHECK(rb["uploads"].get<int>() == 0);
  auto report = test::check_index(rb, accepted, [](const std::string& id, std::string_view bytes) {
    return id.rfind("blob-", 0) == 0 && bytes == blob_payload(id, blob_size_of(id));
  });
  INFO(report.summary());
  CHECK(report.undecodable_objects == 0);
  CHECK(report.missing == 0);
  CHECK(report.duplicated == 0);
  CHECK(report.bad_lines == 0);
  CHECK(report.unlisted_objects == 0);
  CHECK(report.unindexed == 0);
  // The matrix must have hit what it is for: kills between the objects of a batch.
  CHECK(mid_batch >= std::max(1, kills / 25));
  std::printf("crash matrix: %d kills (%d with a batch partly delivered, %d during a multipart "
              "upload, %d orphaned multipart uploads aborted by the drain; first record after "
              "%.3f s at the fastest, kill window x%.1f); %s\n", kills, mid_batch, mid_multipart,
              orphans_aborted, fastest_ready_s, std::max(1.0, fastest_ready_s / kNativeReadyS),
              report.summary().c_str());
  if (report.problems.empty()) fs::remove_all(dir);
}
