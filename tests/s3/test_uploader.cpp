// The Uploader against the real S3 server (Swift s3api) over HTTPS. Every object is read back
// with an independent client (boto3, tests/s3/uploader_readback.py).
#include "fleetpipe/uploader.hpp"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdio>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <thread>

#include "fleetpipe/buffer.hpp"
#include "fleetpipe/metrics.hpp"
#include "support/buffer_config.hpp"
#include "support/log_capture.hpp"
#include "support/payload.hpp"
#include "support/readback.hpp"
#include "support/s3_env.hpp"
#include "support/shell.hpp"
#include "support/test_paths.hpp"
#include "support/unique_name.hpp"

using namespace fleetpipe;
using test::readback;
using test::run;
using namespace std::chrono_literals;
using nlohmann::json;

namespace {

// ---- helpers ---------------------------------------------------------------------------------

using test::LogCapture;
using test::pseudo_random;

std::string unique_bucket(const std::string& tag) { return test::unique_name("fp-" + tag); }

UploaderConfig base_config(const test::S3Env& env, const std::string& bucket) {
  UploaderConfig c = test::s3_uploader_config(env, bucket, "fp");
  c.device_id = "dev-1";
  c.part_bytes = 5ull << 20;
  c.multipart_threshold_bytes = 5ull << 20;
  c.large_record_bytes = 4ull << 20;
  c.max_object_age_s = 3600;
  c.retry_base_delay_s = 0.05;
  c.retry_max_delay_s = 0.5;
  c.idle_poll_interval_s = 0.02;
  return c;
}

BufferConfig buffer_config(const std::string& dir) { return test::scratch_buffer_config(dir); }

RecordMeta meta(const std::string& stream, const std::string& event, std::int64_t start_ns) {
  RecordMeta m;
  m.stream = stream;
  m.event_id = event;
  m.trigger_ids = {"hard_brake"};
  m.priority = 3;
  m.start_ns = start_ns;
  m.end_ns = start_ns + 1000000000;
  m.content_type = "application/vnd.fleetpipe.event";
  m.metadata = {{"device", "cart-7"}};
  return m;
}

// The one object under `prefix` in `bucket` (there must be exactly one): its listing entry, and
// its bytes downloaded into `dir`.
std::pair<json, std::string> only_object(const test::S3Env& env, const std::string& bucket,
                                         const std::filesystem::path& dir, const std::string& prefix) {
  auto objs = readback(env, "list " + bucket + " " + prefix);
  REQUIRE(objs.size() == 1);
  auto out = (dir / "readback.bin").string();
  readback(env, "get " + bucket + " '" + objs[0]["key"].get<std::string>() + "' " + out);
  return {objs[0], test::slurp(out)};
}

// What most tests start from: a new bucket on the server, a scratch directory, and a Buffer in
// it whose Port logs into `logs` (and reads `clock` / `network` when given).
struct Rig {
  test::S3Env env = test::load_s3_env();
  std::string bucket;
  std::filesystem::path dir;
  MetricsRegistry metrics;
  test::LogCapture logs;
  Port port;
  Result<std::unique_ptr<Buffer>> buf;
  explicit Rig(const std::string& tag, Clock* clock = nullptr, NetworkStatus* network = nullptr)
      : bucket(unique_bucket(tag)),
        dir(test::scratch_dir("uploader-" + tag)),
        port(with_log(logs.sink, clock, network)),
        buf(Buffer::open(buffer_config(dir.string()), port, metrics)) {
    readback(env, "mkbucket " + bucket);
    REQUIRE(buf.ok());
  }
  static Port with_log(LogSink& log, Clock* clock, NetworkStatus* network) {
    Port p;
    p.log = &log;
    p.clock = clock;
    p.network = network;
    return p;
  }
  /// only_object() in this rig's bucket, downloaded into its scratch directory.
  std::pair<json, std::string> only_object(const std::string& prefix) {
    return ::only_object(env, bucket, dir, prefix);
  }
};

// The system clocks, the wall clock `offset` away from the server's.
struct OffsetClock final : Clock {
  explicit OffsetClock(std::chrono::seconds o) : offset(o) {}
  std::chrono::seconds offset;
  MonoTime monotonic() const noexcept override { return std::chrono::steady_clock::now(); }
  WallTime wall() const noexcept override { return std::chrono::system_clock::now() + offset; }
};

bool run_until(Uploader& u, const std::function<bool()>& done, std::chrono::seconds limit = 60s) {
  auto end = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < end) {
    u.run_for(20ms);
    if (done()) return true;
  }
  return false;
}

}  // namespace

TEST_CASE("small records are packed into one object, read back byte-exact with metadata and "
          "a manifest", "[uploader][s3]") {
  Rig r("pack");
  std::int64_t t0 = 1767225600000000000;  // 2026-01-01T00:00:00Z
  std::vector<std::string> payloads;
  std::vector<RecordId> ids;
  for (int i = 0; i < 5; ++i) {
    payloads.push_back(pseudo_random(1000 + i * 777, i));
    auto o = (*r.buf)->append(meta("imu", "ev-" + std::to_string(i), t0 + i * 1000000000LL), payloads.back());
    REQUIRE(o.accepted);
    ids.push_back(o.id);
  }
  auto cfg = base_config(r.env, r.bucket);
  auto up = Uploader::create(cfg, **r.buf, r.port, r.metrics);
  REQUIRE(up.ok());
  (*up)->flush();
  REQUIRE(run_until(**up, [&] { return (*r.buf)->stats().records == 0 && (*up)->idle(); }));

  auto objs = readback(r.env, "list " + r.bucket + " fp/stream=imu/");
  REQUIRE(objs.size() == 1);
  std::string key = objs[0]["key"];
  char seq[32];
  std::snprintf(seq, sizeof seq, "%016llu", static_cast<unsigned long long>(ids[0]));
  CHECK(key == "fp/stream=imu/date=2026-01-01/device=cart-7/20260101T000000.000Z-" + std::string(seq) + ".fpev");
  auto out = (r.dir / "readback.bin").string();
  auto info = readback(r.env, "get " + r.bucket + " '" + key + "' " + out);
  std::string expected;
  for (const auto& p : payloads) expected += p;
  CHECK(test::slurp(out) == expected);
  CHECK(info["content_type"] == "application/vnd.fleetpipe.event");
  CHECK(info["metadata"]["fleetpipe-record-count"] == "5");
  CHECK(info["metadata"]["fleetpipe-trigger-ids"] == "hard_brake");
  CHECK(info["metadata"]["fleetpipe-start-ns"] == std::to_string(t0));
  CHECK(info["metadata"]["fleetpipe-sdk-version"].get<std::string>().size() > 0);

  auto manifests = readback(r.env, "list " + r.bucket + " fp/_manifests/");
  REQUIRE(manifests.size() == 1);
  readback(r.env, "get " + r.bucket + " '" + manifests[0]["key"].get<std::string>() + "' " + out);
  std::istringstream lines(test::slurp(out));
  std::string line;
  std::vector<json> entries;
  while (std::getline(lines, line)) entries.push_back(json::parse(line));
  REQUIRE(entries.size() == 1);
  CHECK(entries[0]["key"] == key);
  CHECK(entries[0]["record_count"] == 5);
  CHECK(entries[0]["records"][2]["event_id"] == "ev-2");
  CHECK(entries[0]["records"][2]["offset"] == payloads[0].size() + payloads[1].size());
  CHECK(r.metrics.value("fleetpipe_uploader_uploads_total", {{"result", "ok"}}) == 1);
  CHECK(r.metrics.value("fleetpipe_uploader_records_acked_total") == 5);
}

TEST_CASE("a large record is uploaded multipart and reads back byte-exact", "[uploader][s3]") {
  Rig r("mpu");
  std::string big = pseudo_random((12u << 20) + 12345, 99);
  auto o = (*r.buf)->append(meta("camera", "ev-big", 1767225600000000000), big);
  REQUIRE(o.accepted);
  auto cfg = base_config(r.env, r.bucket);
  cfg.unsigned_payload = true;  // exercised here; the other tests sign the payload
  auto up = Uploader::create(cfg, **r.buf, r.port, r.metrics);
  REQUIRE(up.ok());
  REQUIRE(run_until(**up, [&] { return (*r.buf)->stats().records == 0 && (*up)->idle(); }));
  auto [obj, bytes] = r.only_object("fp/stream=camera/");
  CHECK(obj["etag"].get<std::string>().find("-3") != std::string::npos);  // 3 parts
  CHECK(bytes == big);
  CHECK(readback(r.env, "uploads " + r.bucket).empty());
  auto st = (*r.buf)->list_state("uploader/mpu/");
  REQUIRE(st.ok());
  CHECK(st->empty());
}

TEST_CASE("a multipart record with compressed chunks is hashed part by part and reads back byte-exact",
          "[uploader][s3]") {
  Rig r("mpz");
  // Text-like chunks are stored zstd-compressed, random ones raw: the eight-lane digest pass
  // cannot view compressed chunks in place, so the uploader falls back to hashing each part
  // through its copy buffer. ETags and the bytes must still match.
  std::string big;
  for (int i = 0; big.size() < (7u << 20); ++i) big += "frame " + std::to_string(i) + " ts=" + std::to_string(i * 33) + ";";
  big += pseudo_random((6u << 20) + 4321, 5);
  REQUIRE((*r.buf)->append(meta("camera", "ev-mpz", 1767225600000000000), big).accepted);
  CHECK((*r.buf)->stats().compression_ratio > 1.5);  // some chunks really are stored compressed
  auto cfg = base_config(r.env, r.bucket);  // 5 MiB parts
  auto up = Uploader::create(cfg, **r.buf, r.port, r.metrics);
  REQUIRE(up.ok());
  REQUIRE(run_until(**up, [&] { return (*r.buf)->stats().records == 0 && (*up)->idle(); }));
  auto [obj, bytes] = r.only_object("fp/stream=camera/");
  CHECK(obj["etag"].get<std::string>().find("-3") != std::string::npos);  // 3 parts
  CHECK(bytes == big);
}

namespace {

// Uploads one 3 MiB record (below the multipart threshold) with `cfg`, checks it went as one
// PutObject and reads back byte-exact.
void check_single_put(Rig& r, UploaderConfig cfg, unsigned seed) {
  std::string payload = pseudo_random((3u << 20) + 777 * seed, seed);
  REQUIRE((*r.buf)->append(meta("camera", "ev-single", 1767225600000000000), payload).accepted);
  cfg.multipart_threshold_bytes = 16ull << 20;
  cfg.large_record_bytes = 8ull << 20;
  auto up = Uploader::create(cfg, **r.buf, r.port, r.metrics);
  REQUIRE(up.ok());
  REQUIRE(run_until(**up, [&] { return (*r.buf)->stats().records == 0 && (*up)->idle(); }));
  auto [obj, bytes] = r.only_object("fp/stream=camera/");
  CHECK(obj["etag"].get<std::string>().find('-') == std::string::npos);  // a single PUT
  CHECK(bytes == payload);
  CHECK(r.metrics.value("fleetpipe_uploader_uploads_total", {{"result", "ok"}}) >= 1);
  CHECK(r.metrics.value("fleetpipe_uploader_etag_mismatch_total") == 0);
}

}  // namespace

TEST_CASE("a PutObject larger than the I/O chunk is hashed in slices and reads back byte-exact",
          "[uploader][s3]") {
  Rig r("slice");
  // 64 KiB chunks: its MD5/SHA-256 pass runs as ~48 posted steps (so poll() budgets hold), then
  // the signed PutObject must still match exactly.
  auto cfg = base_config(r.env, r.bucket);
  cfg.io_chunk_bytes = 64u << 10;
  check_single_put(r, cfg, 7);
}

TEST_CASE("without Content-MD5 and with UNSIGNED-PAYLOAD a PutObject goes unhashed and reads back "
          "byte-exact",
          "[uploader][s3]") {
  Rig r("nomd5");
  auto cfg = base_config(r.env, r.bucket);
  cfg.unsigned_payload = true;
  cfg.content_md5 = false;
  check_single_put(r, cfg, 11);
}

TEST_CASE("a wrong secret holds the uploader, not the records: counted, reported, nothing parked "
          "or lost",
          "[uploader][s3]") {
  Rig r("auth");
  for (int i = 0; i < 3; ++i) REQUIRE((*r.buf)->append(meta("imu", "e" + std::to_string(i), 1767225600000000000), "abc").accepted);
  auto cfg = base_config(r.env, r.bucket);
  cfg.credentials.secret_access_key = "definitely-wrong-secret";
  auto up = Uploader::create(cfg, **r.buf, r.port, r.metrics);
  REQUIRE(up.ok());
  (*up)->flush();
  REQUIRE(run_until(**up, [&] { return (*up)->status().destination_fault == "SignatureDoesNotMatch" && (*up)->idle(); }));
  CHECK((*r.buf)->stats().records == 3);  // kept, not lost
  CHECK((*r.buf)->stats().parked == 0);   // the uploader's fault, not the records'
  CHECK(r.metrics.value("fleetpipe_uploader_request_failures_total", {{"class", "auth"}}) >= 1);
  CHECK(r.metrics.value("fleetpipe_uploader_destination_faults_total", {{"code", "SignatureDoesNotMatch"}}) >= 1);
  CHECK(r.metrics.value("fleetpipe_uploader_destination_fault") == 1);
  CHECK(r.metrics.sum("fleetpipe_uploader_records_parked_total") == 0);
  CHECK((*up)->status().records_parked == 0);
  CHECK(readback(r.env, "list " + r.bucket).empty());
  // The secret never reaches the logs or the status.
  CHECK_FALSE(r.logs.contains("definitely-wrong-secret"));
  CHECK((*up)->status().last_error.find("definitely-wrong-secret") == std::string::npos);
  CHECK((*up)->status().last_error.find("SignatureDoesNotMatch") != std::string::npos);
}

TEST_CASE("virtual-host addressing with a connect_address override", "[uploader][s3]") {
  Rig r("vhost");
  REQUIRE((*r.buf)->append(meta("gps", "g1", 1767225600000000000), "hello vhost").accepted);
  auto cfg = base_config(r.env, r.bucket);
  auto port_pos = r.env.endpoint_https.rfind(':');
  cfg.endpoint = "https://s3.localhost" + r.env.endpoint_https.substr(port_pos);
  cfg.virtual_host_style = true;
  cfg.connect_address = "127.0.0.1";  // *.s3.localhost does not resolve here
  auto up = Uploader::create(cfg, **r.buf, r.port, r.metrics);
  REQUIRE(up.ok());
  (*up)->flush();
  REQUIRE(run_until(**up, [&] { return (*r.buf)->stats().records == 0 && (*up)->idle(); }));
  auto objs = readback(r.env, "list " + r.bucket + " fp/stream=gps/");
  REQUIRE(objs.size() == 1);
  CHECK(objs[0]["size"] == 11);
}


TEST_CASE("RequestTimeTooSkewed corrects the clock offset and the upload succeeds",
          "[uploader][s3]") {
  OffsetClock clock(-1h);  // the server answers RequestTimeTooSkewed until corrected
  Rig r("skew", &clock);
  REQUIRE((*r.buf)->append(meta("imu", "s1", 1767225600000000000), "skewed").accepted);
  auto up = Uploader::create(base_config(r.env, r.bucket), **r.buf, r.port, r.metrics);
  REQUIRE(up.ok());
  (*up)->flush();
  REQUIRE(run_until(**up, [&] { return (*r.buf)->stats().records == 0 && (*up)->idle(); }));
  CHECK(r.metrics.value("fleetpipe_uploader_retries_total", {{"class", "clock_skew"}}) >= 1);
  CHECK((*up)->status().clock_offset_s > 3000);
  CHECK(readback(r.env, "list " + r.bucket + " fp/stream=imu/").size() == 1);
}

TEST_CASE("kill -9 during a multipart upload: the restart completes the same upload id, one "
          "object", "[uploader][s3]") {
  auto env = test::load_s3_env();
  auto bucket = unique_bucket("kill");
  readback(env, "mkbucket " + bucket);
  auto dir = test::scratch_dir("uploader-kill");
  std::string big = pseudo_random(16u << 20, 7);
  {
    MetricsRegistry metrics;
    Port port;
    auto buf = Buffer::open(buffer_config(dir.string()), port, metrics);
    REQUIRE(buf.ok());
    REQUIRE((*buf)->append(meta("camera", "ev-kill", 1767225600000000000), big).accepted);
    REQUIRE((*buf)->flush().ok());
  }
  int fds[2];
  REQUIRE(pipe(fds) == 0);
  pid_t child = fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    // Child: upload slowly; report each stored part on the pipe; the parent kills us.
    close(fds[0]);
    MetricsRegistry metrics;
    int wfd = fds[1];
    CallbackLogSink sink([wfd](LogLevel, std::string_view, std::string_view m) {
      if (m.find("stored part") != std::string_view::npos) (void)!write(wfd, "p", 1);
    });
    Port port;
    port.log = &sink;
    auto buf = Buffer::open(buffer_config(dir.string()), port, metrics);
    if (!buf) _exit(2);
    auto cfg = base_config(env, bucket);
    cfg.bytes_per_second = 3 << 20;  // ~1.7 s per 5 MiB part
    auto up = Uploader::create(cfg, **buf, port, metrics);
    if (!up) _exit(3);
    auto end = std::chrono::steady_clock::now() + 60s;
    while (std::chrono::steady_clock::now() < end) (*up)->run_for(20ms);
    _exit(4);
  }
  close(fds[1]);
  char c = 0;
  REQUIRE(read(fds[0], &c, 1) == 1);  // part 1 stored
  kill(child, SIGKILL);
  int status = 0;
  waitpid(child, &status, 0);
  close(fds[0]);
  REQUIRE(WIFSIGNALED(status));

  MetricsRegistry metrics;
  LogCapture logs;
  StderrLogSink quiet(LogLevel::off);
  Port port;
  port.log = &logs.sink;
  auto buf = Buffer::open(buffer_config(dir.string()), port, metrics);
  REQUIRE(buf.ok());
  auto st = (*buf)->list_state("uploader/mpu/");
  REQUIRE(st.ok());
  REQUIRE(st->size() == 1);
  std::string upload_id = json::parse((*st)[0].second)["upload_id"];
  REQUIRE(!upload_id.empty());
  CHECK(readback(env, "uploads " + bucket).size() == 1);
  auto up = Uploader::create(base_config(env, bucket), **buf, port, metrics);
  REQUIRE(up.ok());
  REQUIRE(run_until(**up, [&] { return (*buf)->stats().records == 0 && (*up)->idle(); }));
  CHECK(metrics.value("fleetpipe_uploader_multipart_resumed_total") == 1);
  INFO(logs.all());
  CHECK(logs.contains("resumed multipart upload " + upload_id));
  CHECK(logs.contains("completed multipart upload " + upload_id));
  auto [obj, bytes] = only_object(env, bucket, dir, "fp/stream=camera/");
  CHECK(bytes == big);
  CHECK(readback(env, "uploads " + bucket).empty());
}

namespace {
// Uploads one record with `cfg`, whose TLS handshake must fail, until a TLS failure is counted:
// the uploader's last error then. The record is neither lost nor parked.
std::string tls_error(const UploaderConfig& cfg, Buffer& buf, const Port& port, MetricsRegistry& metrics) {
  REQUIRE(buf.append(meta("imu", "t1", 1767225600000000000), "x").accepted);
  auto up = Uploader::create(cfg, buf, port, metrics);
  REQUIRE(up.ok());
  (*up)->flush();
  REQUIRE(run_until(**up, [&] {
    return metrics.value("fleetpipe_uploader_request_failures_total", {{"class", "tls"}}) >= 1;
  }));
  CHECK(buf.stats().records == 1);
  CHECK(buf.stats().parked == 0);
  return (*up)->status().last_error;
}
}  // namespace

TEST_CASE("a server certificate not signed by the configured CA is rejected with a clear error",
          "[uploader][s3][tls]") {
  auto env = test::load_s3_env();
  auto dir = test::scratch_dir("uploader-tls");
  // A self-signed certificate that has nothing to do with the server's CA.
  std::string other_ca = (dir / "other-ca.pem").string();
  run("openssl req -x509 -newkey rsa:2048 -nodes -keyout '" + (dir / "k.pem").string() +
      "' -out '" + other_ca + "' -days 1 -subj /CN=other-ca 2>&1");
  MetricsRegistry metrics;
  LogCapture logs;
  Port port;
  port.log = &logs.sink;
  auto buf = Buffer::open(buffer_config(dir.string() + "/db"), port, metrics);
  REQUIRE(buf.ok());
  auto cfg = base_config(env, "fp-tls-none");
  cfg.ca_file = other_ca;
  auto err = tls_error(cfg, **buf, port, metrics);
  INFO(err);
  CHECK(err.find("TLS handshake") != std::string::npos);
  CHECK(err.find("certificate verification failed") != std::string::npos);
  CHECK(err.find(other_ca) != std::string::npos);
}

TEST_CASE("a certificate for another host name is rejected", "[uploader][s3][tls]") {
  auto env = test::load_s3_env();
  auto dir = test::scratch_dir("uploader-tlsname");
  MetricsRegistry metrics;
  Port port;
  auto buf = Buffer::open(buffer_config(dir.string()), port, metrics);
  REQUIRE(buf.ok());
  auto cfg = base_config(env, "fp-tls-name");
  auto port_pos = env.endpoint_https.rfind(':');
  cfg.endpoint = "https://wrong-name.example" + env.endpoint_https.substr(port_pos);
  cfg.connect_address = "127.0.0.1";
  auto err = tls_error(cfg, **buf, port, metrics);
  INFO(err);
  CHECK(err.find("hostname mismatch") != std::string::npos);
}

TEST_CASE("host pause holds uploads and is counted, resume delivers, a pause mid-multipart keeps "
          "the stored parts", "[uploader][s3][shaping]") {
  Rig r("pause");
  std::string big = pseudo_random(11u << 20, 5);
  REQUIRE((*r.buf)->append(meta("camera", "p1", 1767225600000000000), big).accepted);
  auto cfg = base_config(r.env, r.bucket);
  cfg.bytes_per_second = 4 << 20;
  auto up = Uploader::create(cfg, **r.buf, r.port, r.metrics);
  REQUIRE(up.ok());
  (*up)->pause();
  (*up)->run_for(300ms);
  CHECK((*up)->status().paused_by_host);
  CHECK((*up)->idle());
  CHECK(r.metrics.value("fleetpipe_uploader_pauses_total", {{"reason", "host"}}) == 1);
  (*up)->resume();
  REQUIRE(run_until(**up, [&] { return r.logs.contains("stored part 1/"); }));
  (*up)->pause();
  (*up)->run_for(100ms);
  CHECK((*up)->idle());                  // the lease went back to the buffer
  CHECK((*r.buf)->stats().records == 1);
  CHECK((*r.buf)->stats().leased == 0);
  CHECK(r.metrics.value("fleetpipe_uploader_pauses_total", {{"reason", "host"}}) == 2);
  CHECK(r.metrics.value("fleetpipe_uploader_paused_seconds") > 0.2);
  (*up)->set_rate(0);  // unlimited from now on
  (*up)->resume();
  REQUIRE(run_until(**up, [&] { return (*r.buf)->stats().records == 0 && (*up)->idle(); }));
  CHECK(r.metrics.value("fleetpipe_uploader_multipart_resumed_total") == 1);
  auto [obj, bytes] = r.only_object("fp/stream=camera/");
  CHECK(bytes == big);
}

TEST_CASE("schedule windows and the network state pause uploads", "[uploader][s3][shaping]") {
  NetworkStatus net;
  Rig r("sched", nullptr, &net);
  REQUIRE((*r.buf)->append(meta("imu", "s1", 1767225600000000000), "scheduled").accepted);
  auto cfg = base_config(r.env, r.bucket);
  // The only window starts two hours from now: outside it, uploads pause.
  auto now_min = static_cast<int>(std::chrono::duration_cast<std::chrono::minutes>(
                                      std::chrono::system_clock::now().time_since_epoch()).count() % 1440);
  ScheduleWindow w;
  w.start_minute = (now_min + 120) % 1440;
  w.end_minute = (now_min + 180) % 1440;
  cfg.schedule.windows = {w};
  cfg.schedule.pause_outside_windows = true;
  {
    auto up = Uploader::create(cfg, **r.buf, r.port, r.metrics);
    REQUIRE(up.ok());
    (*up)->flush();
    (*up)->run_for(300ms);
    CHECK((*up)->status().paused_by_schedule);
    CHECK((*r.buf)->stats().records == 1);
    CHECK(r.metrics.value("fleetpipe_uploader_pauses_total", {{"reason", "schedule"}}) == 1);
  }
  cfg.schedule.pause_outside_windows = false;
  cfg.schedule.windows.clear();
  net.set(NetworkState::metered);  // pause_when_metered is the default
  auto up = Uploader::create(cfg, **r.buf, r.port, r.metrics);
  REQUIRE(up.ok());
  (*up)->flush();
  (*up)->run_for(300ms);
  CHECK((*up)->status().paused_by_network);
  CHECK((*r.buf)->stats().records == 1);
  net.set(NetworkState::online);
  (*up)->flush();
  REQUIRE(run_until(**up, [&] { return (*r.buf)->stats().records == 0 && (*up)->idle(); }));
  CHECK(r.metrics.value("fleetpipe_uploader_pauses_total", {{"reason", "network"}}) == 1);
}

// ---- abandoned multipart uploads (issues #6, #9) ----------------------------------------------

namespace {
std::set<std::string> upload_keys(const json& uploads) {
  std::set<std::string> keys;
  for (const auto& u : uploads) keys.insert(u["key"].get<std::string>());
  return keys;
}

double aborted(const MetricsRegistry& m) { return m.sum("fleetpipe_uploader_multipart_aborted_total"); }
}  // namespace

TEST_CASE("the bucket scan aborts multipart uploads under the prefix older than abandon_after, "
          "whoever started them, and keeps the rest", "[uploader][s3][orphans]") {
  Rig r("orphans");
  const std::string stranger = "fp/stream=camera/date=2026-01-01/device=wiped-dev/20260101T000000.000Z-0000000000000007.bin";
  const std::string own = "fp/stream=camera/date=2026-01-01/device=cart-7/20260101T000000.000Z-0000000000000042.fpev";
  const std::string outside = "other/stream=camera/keep.bin";
  const std::string lookalike = "fpx/stream=camera/keep.bin";  // starts with "fp" but is not under "fp/"
  auto made = readback(r.env, "mkorphans " + r.bucket + " '" + stranger + "' '" + own + "' '" + outside + "' '" +
                                lookalike + "'");
  REQUIRE(made.size() == 4);
  const std::string own_id = made[1]["upload_id"];
  // Resume state of ours for `own`, written just now (the start-up rule, which trusts the state's
  // own creation time, keeps it): only the server's Initiated time shows it is abandoned.
  auto now_s = std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
  json st = {{"key", own}, {"upload_id", own_id}, {"size", 6u << 20}, {"part_size", 5u << 20},
             {"ids", {424242}}, {"created_unix", now_s}, {"parts", json::array()}};
  REQUIRE((*r.buf)->put_state("uploader/mpu/" + own, st.dump()).ok());

  {  // Younger than abandon_after: the scan runs and keeps everything.
    auto cfg = base_config(r.env, r.bucket);
    cfg.abandon_multipart_after_s = 3600;
    auto up = Uploader::create(cfg, **r.buf, r.port, r.metrics);
    REQUIRE(up.ok());
    REQUIRE(run_until(**up, [&] {
      return r.metrics.value("fleetpipe_uploader_multipart_scans_total", {{"result", "ok"}}) >= 1;
    }, 30s));
    CHECK(aborted(r.metrics) == 0);
    CHECK(upload_keys(readback(r.env, "uploads " + r.bucket)).size() == 4);
  }
  std::this_thread::sleep_for(1100ms);  // every upload is now older than the 1 s below
  auto cfg = base_config(r.env, r.bucket);
  cfg.abandon_multipart_after_s = 1;
  auto up = Uploader::create(cfg, **r.buf, r.port, r.metrics);
  REQUIRE(up.ok());
  auto t0 = std::chrono::steady_clock::now();
  REQUIRE(run_until(**up, [&] { return aborted(r.metrics) >= 2; }, 30s));
  INFO(r.logs.all());
  INFO("aborted after " << std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() << " s");
  CHECK(r.metrics.value("fleetpipe_uploader_multipart_aborted_total", {{"reason", "orphan"}}) == 1);
  CHECK(r.metrics.value("fleetpipe_uploader_multipart_aborted_total", {{"reason", "own_state"}}) == 1);
  CHECK(r.logs.contains("aborted abandoned multipart upload " + made[0]["upload_id"].get<std::string>() + " of " + stranger));
  CHECK(r.logs.contains("reason orphan"));
  auto state = (*r.buf)->list_state("uploader/mpu/");
  REQUIRE(state.ok());
  CHECK(state->empty());  // the aborted upload's resume state is gone too
  CHECK(upload_keys(readback(r.env, "uploads " + r.bucket)) == std::set<std::string>{outside, lookalike});
  // Later scans find nothing more to abort under the prefix; the others stay.
  double scans = r.metrics.value("fleetpipe_uploader_multipart_scans_total", {{"result", "ok"}});
  REQUIRE(run_until(**up, [&] {
    return r.metrics.value("fleetpipe_uploader_multipart_scans_total", {{"result", "ok"}}) >= scans + 2;
  }, 30s));
  CHECK(aborted(r.metrics) == 2);
  CHECK(r.metrics.value("fleetpipe_uploader_multipart_scans_total", {{"result", "failed"}}) == 0);
  CHECK(upload_keys(readback(r.env, "uploads " + r.bucket)).size() == 2);
}

TEST_CASE("the bucket scan keeps the multipart upload in progress here, which completes under the same "
          "upload id", "[uploader][s3][orphans]") {
  Rig r("inprog");
  std::string big = pseudo_random(11u << 20, 11);
  REQUIRE((*r.buf)->append(meta("camera", "ip1", 1767225600000000000), big).accepted);
  auto cfg = base_config(r.env, r.bucket);
  cfg.abandon_multipart_after_s = 1;
  cfg.max_concurrent_requests = 1;  // parts in order: the pause lands while part 2 is on the wire
  cfg.bytes_per_second = 4 << 20;
  auto up = Uploader::create(cfg, **r.buf, r.port, r.metrics);
  REQUIRE(up.ok());
  REQUIRE(run_until(**up, [&] { return r.logs.contains("stored part 1/"); }));
  auto st = (*r.buf)->list_state("uploader/mpu/");
  REQUIRE(st.ok());
  REQUIRE(st->size() == 1);
  std::string upload_id = json::parse((*st)[0].second)["upload_id"];
  // Paused (no scan while paused) until the upload is older than abandon_after; on resume the
  // overdue scan runs before the batch and must leave this upload alone.
  (*up)->pause();
  (*up)->run_for(1500ms);
  (*up)->set_rate(0);
  (*up)->resume();
  REQUIRE(run_until(**up, [&] { return (*r.buf)->stats().records == 0 && (*up)->idle(); }));
  INFO(r.logs.all());
  CHECK(r.logs.contains("keeping multipart upload " + upload_id));
  CHECK(r.logs.contains("completed multipart upload " + upload_id));
  CHECK(r.metrics.value("fleetpipe_uploader_multipart_scans_total", {{"result", "ok"}}) >= 1);
  CHECK(aborted(r.metrics) == 0);
  CHECK(r.metrics.value("fleetpipe_uploader_multipart_resumed_total") == 1);
  auto [obj, bytes] = r.only_object("fp/stream=camera/");
  CHECK(bytes == big);
  CHECK(readback(r.env, "uploads " + r.bucket).empty());
}

TEST_CASE("the bucket scan judges an upload's age by the server-corrected clock",
          "[uploader][s3][orphans]") {
  OffsetClock clock(1h);
  Rig r("orphskew", &clock);
  // The device clock runs 1 h ahead: uncorrected, a fresh upload would look 1 h old (older than
  // the 30 min abandon_after) and be aborted.
  readback(r.env, "mkorphans " + r.bucket + " fp/stream=imu/fresh.bin");
  auto cfg = base_config(r.env, r.bucket);
  cfg.abandon_multipart_after_s = 1800;
  auto up = Uploader::create(cfg, **r.buf, r.port, r.metrics);
  REQUIRE(up.ok());
  REQUIRE(run_until(**up, [&] {
    return r.metrics.value("fleetpipe_uploader_multipart_scans_total", {{"result", "ok"}}) >= 1;
  }, 30s));
  CHECK(r.metrics.value("fleetpipe_uploader_retries_total", {{"class", "clock_skew"}}) >= 1);
  CHECK((*up)->status().clock_offset_s < -3000);
  CHECK(aborted(r.metrics) == 0);
  CHECK(readback(r.env, "uploads " + r.bucket).size() == 1);
}
