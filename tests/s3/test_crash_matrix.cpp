// Crash matrix (issues #9, #24): a forked child runs capture + buffer + upload (Capture and
// mixed-size records of random priority -> Buffer -> Uploader to the real S3 server) and is
// killed with SIGKILL at a random point, again and again; after each kill the DB must open. Then
// a drain uploads the rest, and an independent boto3 read-back (tests/s3/uploader_readback.py)
// checks the bucket and its index: every accepted record is in exactly one data object and in a
// manifest line with the right key, offset, size and event id; no line names a missing object.
//
// Kill count: $FLEETPIPE_CRASH_KILLS, default 100 (20 in sanitizer builds, which run ~5x slower).
#include "fleetpipe/capture.hpp"

#include <fcntl.h>
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
#include "support/crash_uploader.hpp"
#include "support/index_check.hpp"
#include "support/readback.hpp"
#include "support/s3_env.hpp"
#include "support/shell.hpp"
#include "support/test_paths.hpp"

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

BufferConfig buffer_config(const fs::path& dir) {
  BufferConfig b;
  b.path = (dir / "db").string();
  b.durability = Durability::none;  // kill -9 keeps committed transactions (page cache)
  b.min_free_bytes = 0;
  b.max_bytes = 256ull << 20;
  return b;
}

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
  std::uint64_t x = std::hash<std::string>{}(event_id);
  std::string out(size, '\0');
  for (std::size_t i = 0; i < size; i += 8) {
    x += 0x9e3779b97f4a7c15ull;  // splitmix64
    std::uint64_t z = x;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    std::memcpy(&out[i], &z, std::min<std::size_t>(8, size - i));
  }
  return out;
}

// "blob-<run>-<n>-<size>": the size travels in the id, so the parent can rebuild the payload.
std::size_t blob_size_of(const std::string& event_id) {
  return static_cast<std::size_t>(std::stoull(event_id.substr(event_id.rfind('-') + 1)));
}

// Appends each finished event to the Buffer; logs its id once the Buffer has accepted it.
struct LoggingSink final : EventSink {
  Buffer* buffer = nullptr;
  int log_fd = -1;
  AppendOutcome deliver(const RecordMeta& meta, std::string_view payload) override {
    auto o = buffer->append(meta, payload);
    if (o.accepted) {
      std::string line = meta.event_id + "\n";
      if (write(log_fd, line.data(), line.size()) < 0) _exit(5);
    }
    return o;
  }
};

// The child: capture + buffer + upload until killed.
[[noreturn]] void child_main(const fs::path& dir, const test::S3Env& env, const std::string& bucket,
                             const std::string& prefix, std::uint64_t seed, int run) {
  StderrLogSink quiet(LogLevel::off);
  Port port;
  port.log = &quiet;
  MetricsRegistry metrics;
  auto buf = Buffer::open(buffer_config(dir), port, metrics);
  if (!buf) _exit(3);
  LoggingSink sink;
  sink.buffer = buf->get();
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
  if (const char* k = std::getenv("FLEETPIPE_CRASH_KILLS")) kills = std::max(1, std::atoi(k));
  std::string bucket = "fp-crash-" + std::to_string(std::random_device{}() % 1000000000u);
  std::string prefix = "c" + std::to_string(std::random_device{}() % 100000u);
  readback(env, "mkbucket " + bucket);
  auto dir = test::scratch_dir("crash-matrix");
  std::mt19937_64 rng(std::random_device{}());
  StderrLogSink quiet(LogLevel::off);
  Port port;
  port.log = &quiet;

  int killed = 0, mid_batch = 0, mid_multipart = 0, orphans_aborted = 0;
  for (int i = 0; i < kills; ++i) {
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) child_main(dir, env, bucket, prefix, rng(), i);
    std::this_thread::sleep_for(std::chrono::milliseconds(20 + rng() % 300));
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
    auto settle = std::chrono::steady_clock::now() + 2500ms;  // pending manifests, two scans
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
              "upload, %d orphaned multipart uploads aborted by the drain); %s\n", kills, mid_batch,
              mid_multipart, orphans_aborted, report.summary().c_str());
  if (report.problems.empty()) fs::remove_all(dir);
}
