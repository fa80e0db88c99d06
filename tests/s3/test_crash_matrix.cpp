// Crash matrix (issue #9): a forked child runs capture + buffer + upload (Capture -> Buffer ->
// Uploader to the real S3 server) and is killed with SIGKILL at a random point, again and again;
// after each kill the DB must open. Then a drain uploads the rest, and an independent boto3
// read-back (tests/s3/uploader_readback.py) plus the C++ event decoder check that every event the
// Buffer accepted is in the bucket exactly once.
//
// Kill count: $FLEETPIPE_CRASH_KILLS, default 100 (20 in sanitizer builds, which run ~5x slower).
#include "fleetpipe/capture.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <cstdio>
#include <fstream>
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
  UploaderConfig c;
  c.endpoint = env.endpoint_https;
  c.ca_file = env.ca_file;
  c.region = env.region;
  c.bucket = bucket;
  c.prefix = prefix;
  c.credentials.source = CredentialsSource::static_keys;
  c.credentials.access_key_id = env.access_key;
  c.credentials.secret_access_key = env.secret_key;
  c.device_id = "crash-dev";
  c.target_object_bytes = 64 << 10;
  c.max_object_age_s = 0.05;
  c.retry_base_delay_s = 0.02;
  c.retry_max_delay_s = 0.2;
  c.idle_poll_interval_s = 0.01;
  return c;
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
                             const std::string& prefix, std::uint64_t seed) {
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
  double t = 0;
  for (std::uint64_t i = 0;; ++i) {
    t += 0.01;
    (*cap)->push(imu, t, {static_cast<double>(rng() % 1000)});
    if (i % 20 == 0) (void)(*cap)->fire(m, t);
    (*cap)->tick(t);
    (*up)->poll();
    if (i % 5 == 0) (*up)->run_for(1ms);
  }
}

}  // namespace

TEST_CASE("kill -9 of capture+buffer+upload at random points: the DB opens every time and every "
          "accepted event is in the bucket exactly once",
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

  int killed = 0;
  for (int i = 0; i < kills; ++i) {
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) child_main(dir, env, bucket, prefix, rng());
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
    auto up = Uploader::create(uploader_config(env, bucket, prefix), **buf, dport, metrics);
    REQUIRE(up.ok());
    auto end = std::chrono::steady_clock::now() + 120s;
    while (std::chrono::steady_clock::now() < end &&
           ((*buf)->stats().records > 0 || !(*up)->idle())) {
      (*up)->flush();
      (*up)->run_for(20ms);
    }
    (*up)->run_for(500ms);  // pending manifests
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
  INFO(accepted.size() << " events accepted over " << kills << " kills");
  REQUIRE(accepted.size() >= static_cast<std::size_t>(kills) / 2);

  auto rb = readback(env, "dump " + bucket + " " + prefix + "/ '" + (dir / "rb").string() + "'");
  CHECK(rb["uploads"].get<int>() == 0);
  std::map<std::string, int> seen;
  for (const auto& o : rb["objects"]) {
    auto key = o["key"].get<std::string>();
    if (key.find("/_manifests/") != std::string::npos) continue;
    auto events = detail::decode_events(slurp(o["file"].get<std::string>()));
    INFO(key);
    REQUIRE(events.ok());  // every object is whole, byte-exact FPEV
    for (const auto& e : *events) ++seen[e.event_id];
  }
  int missing = 0, duplicated = 0;
  for (const auto& id : accepted)
    if (seen.find(id) == seen.end()) ++missing;
  for (const auto& [id, n] : seen)
    if (n != 1) ++duplicated;
  CHECK(missing == 0);
  CHECK(duplicated == 0);
  std::printf("crash matrix: %d kills, %zu events accepted, %zu in the bucket, %d missing, %d "
              "duplicated\n", kills, accepted.size(), seen.size(), missing, duplicated);
}
