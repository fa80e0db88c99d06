// bench_upload: 1 GiB in 8 MiB parts to the local S3 server over HTTPS, against `rclone copy`
// and `aws s3 cp` (Debian's rclone and awscli) uploading the same bytes to the same server in the
// same run, three rounds (FLEETPIPE_BENCH_UPLOAD_ROUNDS) in rotating order; then the rate cap's
// accuracy at 100 kB/s, 1 MB/s and 10 MB/s over 12 s each.
//
// Figures (bench-results/upload.json):
//   throughput_vs_rclone, throughput_vs_awscli  our MB/s divided by theirs in the same round, at
//                                               the peer's concurrency; median of the rounds
//                                               (goal >= 1.2)
//   throughput_vs_awscli_default_concurrency    ours at the default 4 against aws-cli's 10
//   cpu_s_per_gib                               user+sys CPU of the uploading process per GiB
//   peak_rss_anon_mb                            peak RssAnon of the uploading process (goal <= 12)
//   peak_rss_file_mb                            peak RssFile (LMDB pages mapped from the file)
//   cap_error_pct_100k / _1m / _10m             |achieved - configured| / configured (goal <= 3)
//   throughput_vs_curl_single_put               the leanest client: `curl -T` of the same 1 GiB as
//                                               one PUT (UNSIGNED-PAYLOAD, signed here with the
//                                               project's SigV4), against the uploader doing the
//                                               same work (one PutObject, unsigned_payload and
//                                               content_md5 off, so neither hashes the body, one
//                                               request in flight): curl's time / ours, median of
//                                               same-round ratios (goal >= 0.9)
//   cpu_vs_curl_single_put                      our CPU seconds / curl's for that PUT (goal <= 1.5)
// The hashing floors of the same run (SHA-256, one MD5 stream, eight MD5 lanes, AES-256-GCM, each
// over 64 MiB in memory, per second of one thread's CPU time) are printed and named next to
// cpu_s_per_gib and cpu_vs_curl_single_put.
//
// The uploading process is a fresh exec of this program (`--worker`), so its RSS is only the
// uploader's; the 1 GiB is written into the Buffer by a separate filler process beforehand.
// Needs FLEETPIPE_S3_STATE (scripts/bench starts the server); without it a server is started in
// a temporary state dir and stopped at the end.
//
// Fairness: all three upload the same 1 GiB (page-cached file / LMDB pages) in 8 MiB parts to the
// same HTTPS endpoint (the server picks TLS 1.3 TLS_AES_256_GCM_SHA384 for every client); each
// timed run starts after sync(2), so no one pays for another's (or the filler's) page writeback.
// Peers keep their default concurrency: rclone --s3-upload-concurrency 4 (and its default MD5 of
// the whole file, sent as X-Amz-Meta-Md5chksum), aws-cli max_concurrent_requests 10; each is
// compared with the uploader keeping as many requests in flight (4 is its default, 10 is set;
// io_chunk_size at its default). The server runs one proxy and object-server worker per core
// (S3_WORKERS, as scripts/bench starts it): client and server share this machine's cores, so the
// throughput ratios weigh each client's CPU per byte as well as its pipelining. The server's CPU
// seconds (all its processes) are printed for each run. Knobs for experiments only (not used by
// scripts/bench): FLEETPIPE_BENCH_UPLOAD_CONCURRENCY, FLEETPIPE_BENCH_UPLOAD_CHUNK (bytes),
// FLEETPIPE_BENCH_UPLOAD_TRACE=1 (the worker prints when its first body byte went out and when it
// was done), FLEETPIPE_BENCH_UPLOAD_NO_CAP=1 (skip the rate-cap figures), FLEETPIPE_BENCH_UPLOAD_ONLY_OURS=1
// (time only the uploader, write no figures), FLEETPIPE_BENCH_UPLOAD_MIB (the object's size while
// developing; figures are written only at the full 1 GiB), FLEETPIPE_BENCH_UPLOAD_ONLY_SINGLE=1
// (only curl and our single PutObject, with the hashing floors; writes no figures).
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <iterator>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <openssl/evp.h>

#include "bench_report.hpp"
#include "fleetpipe/buffer.hpp"
#include "fleetpipe/metrics.hpp"
#include "fleetpipe/sigv4.hpp"
#include "fleetpipe/uploader.hpp"
#include "s3/digest.hpp"
#include "s3/md5_lanes.hpp"
#include "support/s3_env.hpp"

using namespace fleetpipe;
using namespace std::chrono_literals;
namespace fs = std::filesystem;

namespace {

constexpr std::uint64_t kGiB = 1ull << 30;
constexpr std::uint64_t kPart = 8ull << 20;
// The object's size: 1 GiB, less with FLEETPIPE_BENCH_UPLOAD_MIB while developing.
std::uint64_t g_bytes = kGiB;
const char* kClean = "env -u AWS_CA_BUNDLE -u SSL_CERT_FILE -u SSL_CERT_DIR -u REQUESTS_CA_BUNDLE "
                     "-u CURL_CA_BUNDLE -u http_proxy -u https_proxy -u HTTP_PROXY -u HTTPS_PROXY ";

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

int sh(const std::string& cmd) {
  int rc = std::system(cmd.c_str());
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : 128;
}

void fill_random(char* p, std::size_t n, std::uint64_t seed) {
  std::uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
  for (std::size_t i = 0; i < n; i += 8) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    std::memcpy(p + i, &x, std::min<std::size_t>(8, n - i));
  }
}

BufferConfig buffer_config(const std::string& dir) {
  BufferConfig b;
  b.path = dir;
  b.durability = Durability::none;
  b.max_bytes = 3 * kGiB;
  b.max_payload_bytes = 2 * kGiB;
  b.min_free_bytes = 0;
  b.compress_min_bytes = 0;
  b.initial_map_bytes = 64ull << 20;
  return b;
}

UploaderConfig uploader_config(const test::S3Env& env, const std::string& bucket, const std::string& prefix) {
  UploaderConfig c;
  c.endpoint = env.endpoint_https;
  c.bucket = bucket;
  c.region = env.region;
  c.ca_file = env.ca_file;
  c.credentials.source = CredentialsSource::static_keys;
  c.credentials.access_key_id = env.access_key;
  c.credentials.secret_access_key = env.secret_key;
  c.prefix = prefix;
  c.part_bytes = kPart;
  c.multipart_threshold_bytes = kPart;
  c.large_record_bytes = 1ull << 20;
  c.unsigned_payload = true;  // as aws-cli and rclone do over HTTPS; Content-MD5 is still sent
  c.max_object_age_s = 0;
  c.write_manifest = true;
  c.idle_poll_interval_s = 0.01;
  c.request_timeout_s = 300;
  if (const char* v = std::getenv("FLEETPIPE_BENCH_UPLOAD_CONCURRENCY")) c.max_concurrent_requests = std::atoi(v);
  if (const char* v = std::getenv("FLEETPIPE_BENCH_UPLOAD_CHUNK")) c.io_chunk_bytes = std::atoi(v);
  return c;
}

RecordMeta meta(std::uint64_t i) {
  RecordMeta m;
  m.stream = "bench";
  m.event_id = "bench-" + std::to_string(i);
  m.start_ns = 1767225600000000000LL + static_cast<std::int64_t>(i) * 1000000000LL;
  m.end_ns = m.start_ns + 1;
  m.content_type = "application/octet-stream";
  return m;
}

// Child process: one record of `size` bytes into a fresh buffer (and the same bytes to a file).
bool fill(const std::string& db, std::uint64_t size, std::size_t records, const std::string& file) {
  pid_t pid = fork();
  if (pid == 0) {
    MetricsRegistry metrics;
    StderrLogSink quiet(LogLevel::error);
    Port port;
    port.log = &quiet;
    auto buf = Buffer::open(buffer_config(db), port, metrics);
    if (!buf) {
      std::fprintf(stderr, "filler: %s\n", buf.error().message.c_str());
      _exit(2);
    }
    std::string data(size, '\0');
    std::ofstream out;
    if (!file.empty()) out.open(file, std::ios::binary);
    for (std::size_t i = 0; i < records; ++i) {
      fill_random(data.data(), data.size(), i + 1);
      auto o = (*buf)->append(meta(i), data);
      if (!o.accepted) {
        std::fprintf(stderr, "filler: append rejected: %s\n", o.message.c_str());
        _exit(3);
      }
      if (out) out.write(data.data(), static_cast<std::streamsize>(data.size()));
    }
    (void)(*buf)->flush();
    _exit(0);
  }
  int st = 0;
  waitpid(pid, &st, 0);
  return WIFEXITED(st) && WEXITSTATUS(st) == 0;
}

// --worker DB BUCKET CONCURRENCY [single]: uploads everything in DB with max_concurrent_requests
// = CONCURRENCY, exits 0 when the buffer is empty. `single`: the object goes as one PutObject
// (multipart threshold above its size), as curl sends it.
int worker(const std::string& db, const std::string& bucket, std::uint32_t concurrency, bool single) {
  const double t_start = now_s();
  const bool trace = std::getenv("FLEETPIPE_BENCH_UPLOAD_TRACE") != nullptr;
  auto env = test::load_s3_env();
  MetricsRegistry metrics;
  StderrLogSink log(LogLevel::warning);
  Port port;
  port.log = &log;
  auto buf = Buffer::open(buffer_config(db), port, metrics);
  if (!buf) return 2;
  auto cfg = uploader_config(env, bucket, "fleetpipe");
  cfg.max_concurrent_requests = concurrency;
  if (single) {
    cfg.multipart_threshold_bytes = 5 * kGiB;
    cfg.target_object_bytes = 5 * kGiB;
    cfg.write_manifest = false;  // curl writes none
    cfg.content_md5 = false;     // nor hashes the body: with unsigned_payload, ours does not either
  }
  auto up = Uploader::create(cfg, **buf, port, metrics);
  if (!up) {
    std::fprintf(stderr, "worker: %s\n", up.error().message.c_str());
    return 3;
  }
  if (trace) std::fprintf(stderr, "worker: uploader created after %.3f s\n", now_s() - t_start);
  double end = now_s() + 600;
  double first_sent = 0;
  while (now_s() < end) {
    (*up)->run_for(50ms);
    if (trace && first_sent == 0 && metrics.value("fleetpipe_uploader_bytes_sent_total") > 0) {
      first_sent = now_s();
      std::fprintf(stderr, "worker: first bytes sent after %.3f s\n", first_sent - t_start);
    }
    if ((*buf)->stats().records == 0 && (*up)->idle()) {
      if (trace) std::fprintf(stderr, "worker: done after %.3f s\n", now_s() - t_start);
      return 0;
    }
    if ((*buf)->stats().parked > 0) return 4;
  }
  return 5;
}

// ---- hashing floors: what one core does per second here, in memory ---------------------------

struct Floors {
  double sha256_gb_s = 0, md5_gb_s = 0, md5_lanes_gb_s = 0, aes_gcm_gb_s = 0;
};

double thread_cpu_s() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
}

/// Bytes per second of this thread's CPU time (not wall time: the machine may be shared), best
/// of three passes.
template <class F>
double best_gb_s(std::size_t bytes, F&& pass) {
  double best = 0;
  for (int r = 0; r < 3; ++r) {
    double t0 = thread_cpu_s();
    pass();
    best = std::max(best, static_cast<double>(bytes) / 1e9 / (thread_cpu_s() - t0));
  }
  return best;
}

Floors hashing_floors() {
  const std::size_t n = 64u << 20;
  std::string data(n, '\0');
  fill_random(data.data(), n, 7);
  Floors f;
  volatile char sink = 0;
  f.sha256_gb_s = best_gb_s(n, [&] {
    detail::Digest d(detail::Digest::Kind::sha256);
    d.update(data.data(), n);
    sink = d.finish()[0];
  });
  f.md5_gb_s = best_gb_s(n, [&] {
    detail::Digest d(detail::Digest::Kind::md5);
    d.update(data.data(), n);
    sink = d.finish()[0];
  });
  f.md5_lanes_gb_s = best_gb_s(n, [&] {  // eight streams of n/8 bytes each, in lockstep
    detail::Md5Lanes lanes;
    const std::size_t lane = n / detail::Md5Lanes::kLanes, step = 1u << 20;
    for (std::size_t off = 0; off < lane; off += step) {
      std::array<detail::Md5Lanes::Span, detail::Md5Lanes::kLanes> spans;
      for (std::size_t l = 0; l < spans.size(); ++l) spans[l] = {data.data() + l * lane + off, step};
      lanes.update(spans);
    }
    sink = lanes.finish(0)[0];
  });
  f.aes_gcm_gb_s = best_gb_s(n, [&] {  // TLS 1.3's TLS_AES_256_GCM_SHA384 record cipher
    unsigned char key[32] = {1}, iv[12] = {2}, tag[16];
    std::string out(16u << 10, '\0');
    EVP_CIPHER_CTX* ctx = EVP_CIPHER_CTX_new();
    EVP_EncryptInit_ex(ctx, EVP_aes_256_gcm(), nullptr, key, iv);
    int len = 0;
    for (std::size_t off = 0; off < n; off += out.size())
      EVP_EncryptUpdate(ctx, reinterpret_cast<unsigned char*>(out.data()), &len,
                        reinterpret_cast<const unsigned char*>(data.data() + off), static_cast<int>(out.size()));
    EVP_EncryptFinal_ex(ctx, tag, &len);
    EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, 16, tag);
    EVP_CIPHER_CTX_free(ctx);
    sink = static_cast<char>(tag[0]);
  });
  (void)sink;
  return f;
}

// ---- curl: one PUT of the file, UNSIGNED-PAYLOAD, signed with the project's SigV4 -------------

std::string amz_now() {
  std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char b[32];
  std::strftime(b, sizeof b, "%Y%m%dT%H%M%SZ", &tm);
  return b;
}

/// The shell command for curl's PUT of `file` to BUCKET/KEY, or "" when it cannot be signed.
std::string curl_put_command(const test::S3Env& env, const std::string& bucket, const std::string& key,
                             const std::string& file) {
  const std::string url = env.endpoint_https + "/" + bucket + "/" + key;
  auto h = sign_s3_request("PUT", url, {}, {}, env.access_key, env.secret_key, env.region, amz_now(), {}, true);
  if (!h) {
    std::fprintf(stderr, "curl: cannot sign: %s\n", h.error().message.c_str());
    return {};
  }
  // "Expect:": no 100-continue round trip (the signature does not cover it either way).
  std::string cmd = std::string(kClean) + "curl -sS --fail -o /dev/null --cacert '" + env.ca_file +
                    "' -H 'Expect:' -T '" + file + "'";
  for (const auto& [name, value] : *h) cmd += " -H '" + name + ": " + value + "'";
  return cmd + " '" + url + "'";
}

/// Runs `cmd` under /bin/sh; wall time and the user+sys CPU of it and its children.
struct CmdResult {
  bool ok = false;
  double wall_s = 0, cpu_s = 0;
};
CmdResult run_timed(const std::string& cmd) {
  CmdResult r;
  double t0 = now_s();
  pid_t pid = fork();
  if (pid == 0) {
    execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  int st = 0;
  struct rusage ru {};
  wait4(pid, &st, 0, &ru);
  r.wall_s = now_s() - t0;
  r.cpu_s = static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
            static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
  r.ok = WIFEXITED(st) && WEXITSTATUS(st) == 0;
  return r;
}

// CPU seconds (user+sys) of one process from /proc/PID/stat (0 when it is gone).
double proc_cpu_s(const std::string& pid) {
  std::ifstream st("/proc/" + pid + "/stat");
  std::string all((std::istreambuf_iterator<char>(st)), std::istreambuf_iterator<char>());
  auto close = all.rfind(')');
  if (close == std::string::npos) return 0;
  std::istringstream f(all.substr(close + 2));
  std::string tok;
  double ut = 0, stt = 0;
  for (int i = 3; f >> tok; ++i) {  // field 14 = utime, 15 = stime
    if (i == 14) ut = std::atof(tok.c_str());
    if (i == 15) { stt = std::atof(tok.c_str()); break; }
  }
  return (ut + stt) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

// CPU seconds used so far by the server: the processes in S3_PIDS (the state's env file) and
// the workers they forked (scripts/bench runs the proxy and object server with S3_WORKERS).
double server_cpu_s(const std::string& state_dir) {
  std::ifstream env(state_dir + "/env");
  std::string line, pids;
  while (std::getline(env, line))
    if (line.rfind("export S3_PIDS=", 0) == 0) pids = line.substr(15);
  pids.erase(std::remove(pids.begin(), pids.end(), '"'), pids.end());
  std::vector<std::string> parents;
  std::istringstream in(pids);
  for (std::string pid; in >> pid;) parents.push_back(pid);
  double total = 0;
  for (const auto& pid : parents) total += proc_cpu_s(pid);
  std::error_code ec;
  for (const auto& e : fs::directory_iterator("/proc", ec)) {
    std::string pid = e.path().filename().string();
    if (pid.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream st(e.path() / "stat");
    std::string all((std::istreambuf_iterator<char>(st)), std::istreambuf_iterator<char>());
    auto close = all.rfind(')');
    if (close == std::string::npos) continue;
    std::istringstream f(all.substr(close + 2));
    std::string state, ppid;
    f >> state >> ppid;
    if (std::find(parents.begin(), parents.end(), ppid) != parents.end()) total += proc_cpu_s(pid);
  }
  return total;
}

struct ProcResult {
  bool ok = false;
  double wall_s = 0, cpu_s = 0, peak_anon_mb = 0, peak_file_mb = 0;
};

ProcResult run_worker(const std::string& self, const std::string& db, const std::string& bucket,
                      std::uint32_t concurrency, bool single = false) {
  ProcResult r;
  std::string conc = std::to_string(concurrency);
  double t0 = now_s();
  pid_t pid = fork();
  if (pid == 0) {
    execl(self.c_str(), self.c_str(), "--worker", db.c_str(), bucket.c_str(), conc.c_str(),
          single ? "single" : "multipart", static_cast<char*>(nullptr));
    _exit(127);
  }
  std::string status_path = "/proc/" + std::to_string(pid) + "/status";
  int st = 0;
  struct rusage ru {};
  while (true) {
    pid_t w = wait4(pid, &st, WNOHANG, &ru);
    if (w == pid) break;
    std::ifstream in(status_path);
    std::string line;
    while (std::getline(in, line)) {
      double kb = 0;
      if (std::sscanf(line.c_str(), "RssAnon: %lf", &kb) == 1) r.peak_anon_mb = std::max(r.peak_anon_mb, kb / 1024);
      if (std::sscanf(line.c_str(), "RssFile: %lf", &kb) == 1) r.peak_file_mb = std::max(r.peak_file_mb, kb / 1024);
    }
    std::this_thread::sleep_for(5ms);
  }
  r.wall_s = now_s() - t0;
  r.cpu_s = static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
            static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
  r.ok = WIFEXITED(st) && WEXITSTATUS(st) == 0;
  if (!r.ok) std::fprintf(stderr, "worker failed (status %d)\n", st);
  return r;
}

// Achieved socket rate over `seconds` (after a 2 s warm-up) with the cap at `rate`.
double measure_cap(const test::S3Env& env, const std::string& db, const std::string& bucket, double rate,
                   double seconds) {
  MetricsRegistry metrics;
  StderrLogSink log(LogLevel::error);
  Port port;
  port.log = &log;
  auto buf = Buffer::open(buffer_config(db), port, metrics);
  if (!buf) return 0;
  auto cfg = uploader_config(env, bucket, "cap");
  cfg.bytes_per_second = rate;
  auto up = Uploader::create(cfg, **buf, port, metrics);
  if (!up) return 0;
  double t_start = now_s();
  while (now_s() < t_start + 2) (*up)->run_for(10ms);
  double b0 = metrics.value("fleetpipe_uploader_bytes_sent_total"), t0 = now_s();
  while (now_s() < t0 + seconds) (*up)->run_for(10ms);
  double b1 = metrics.value("fleetpipe_uploader_bytes_sent_total"), t1 = now_s();
  return (b1 - b0) / (t1 - t0);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc >= 6 && std::string(argv[1]) == "--worker")
    return worker(argv[2], argv[3], static_cast<std::uint32_t>(std::atoi(argv[4])), std::string(argv[5]) == "single");
  if (const char* v = std::getenv("FLEETPIPE_BENCH_UPLOAD_MIB")) g_bytes = std::strtoull(v, nullptr, 10) << 20;

  std::string own_state;
  if (!std::getenv("FLEETPIPE_S3_STATE")) {
    own_state = (fs::temp_directory_path() / ("fleetpipe-bench-s3-" + std::to_string(getpid()))).string();
    // As scripts/bench starts it: one proxy and object-server worker per core.
    if (sh(std::string(kClean) + "S3_WORKERS=${S3_WORKERS:-$(nproc)} " FLEETPIPE_SOURCE_DIR "/tests/s3server/start '" +
           own_state + "' >/dev/null") != 0) {
      std::fprintf(stderr, "cannot start the S3 server\n");
      return 1;
    }
    setenv("FLEETPIPE_S3_STATE", own_state.c_str(), 1);
  }
  auto env = test::load_s3_env();
  std::string self = fs::read_symlink("/proc/self/exe").string();
  fs::path work = fs::temp_directory_path() / ("fleetpipe-bench-upload-" + std::to_string(getpid()));
  fs::create_directories(work);
  std::string bucket = "fp-bench-upload";
  std::string py = std::string(kClean) + "/usr/bin/python3 " FLEETPIPE_SOURCE_DIR "/tests/s3/uploader_readback.py '" +
                   env.state_dir + "' ";
  if (sh(py + "mkbucket " + bucket + " >/dev/null") != 0) return 1;
  // Each client's 1 GiB is deleted after its run (and leftovers of an earlier run before the
  // first): a bench run leaves the server's disk as it found it, and no client writes to a
  // fuller disk than another.
  const std::string empty_bucket = std::string(kClean) + "FLEETPIPE_S3_STATE='" + env.state_dir +
                                   "' /usr/bin/python3 " FLEETPIPE_SOURCE_DIR "/tests/python/s3_bucket_tool.py empty " +
                                   bucket + " >/dev/null";
  if (sh(empty_bucket) != 0) return 1;

  bench::Report report("upload");
  std::string data_file = (work / "data.bin").string();
  std::string db = (work / "db").string();
  std::string db_filled = (work / "db-filled").string();  // copied to `db` before each of our runs
  std::printf("filling the buffer with %.0f MiB (and %s)...\n", g_bytes / 1048576.0, data_file.c_str());
  if (!fill(db_filled, g_bytes, 1, data_file)) return 1;
  const Floors floors = hashing_floors();
  char floors_text[256];
  std::snprintf(floors_text, sizeof floors_text,
                "hashing floors, same run, per CPU-second of one core: SHA-256 %.2f GB/s, MD5 one stream %.2f GB/s, eight MD5 "
                "lanes %.2f GB/s, AES-256-GCM %.2f GB/s",
                floors.sha256_gb_s, floors.md5_gb_s, floors.md5_lanes_gb_s, floors.aes_gcm_gb_s);
  std::printf("%s\n", floors_text);
  const bool only_single = [] {
    const char* v = std::getenv("FLEETPIPE_BENCH_UPLOAD_ONLY_SINGLE");
    return v && *v == '1';
  }();

  const bool only_ours = [] {
    const char* v = std::getenv("FLEETPIPE_BENCH_UPLOAD_ONLY_OURS");
    return v && *v == '1';
  }();
  int rounds = only_ours ? 1 : 3;
  if (const char* v = std::getenv("FLEETPIPE_BENCH_UPLOAD_ROUNDS")) rounds = std::max(1, std::atoi(v));

  // rclone: same bytes, same server, 8 MiB chunks (its default concurrency of 4).
  std::string rclone = std::string(kClean) + "rclone copyto --s3-provider Other --s3-endpoint " + env.endpoint_https +
                       " --s3-access-key-id '" + env.access_key + "' --s3-secret-access-key '" + env.secret_key +
                       "' --s3-region " + env.region + " --s3-force-path-style --ca-cert '" + env.ca_file +
                       "' --s3-chunk-size 8M --s3-upload-cutoff 8M --s3-no-check-bucket '" + data_file + "' :s3:" +
                       bucket + "/rclone/data.bin";
  // aws s3 cp (Debian's /usr/bin/aws 2.9), 8 MiB parts, path style, explicit CA.
  std::string aws_cfg = (work / "aws-config").string();
  std::ofstream(aws_cfg) << "[default]\nregion = " << env.region
                         << "\ns3 =\n  multipart_chunksize = 8MB\n  multipart_threshold = 8MB\n"
                            "  addressing_style = path\n";
  std::string aws = std::string(kClean) + "AWS_CONFIG_FILE='" + aws_cfg + "' AWS_SHARED_CREDENTIALS_FILE=/dev/null " +
                    "AWS_ACCESS_KEY_ID='" + env.access_key + "' AWS_SECRET_ACCESS_KEY='" + env.secret_key +
                    "' /usr/bin/aws --endpoint-url " + env.endpoint_https + " --ca-bundle '" + env.ca_file +
                    "' s3 cp --only-show-errors '" + data_file + "' s3://" + bucket + "/awscli/data.bin";

  // Each peer is compared with fleetpipe keeping as many parts in flight as it does: rclone's
  // 4 is the uploader's default (max_concurrent_requests), aws-cli keeps 10. On this server more
  // connections are cheaper per byte (its CPU per GiB for our uploads: ~8.6 s at 4, ~7.2 at 10),
  // so the ratio at our default against aws-cli's 10 is reported too, without a goal.
  // FLEETPIPE_BENCH_UPLOAD_CONCURRENCY (experiments) sets both runs of ours.
  const UploaderConfig knobs = uploader_config(env, bucket, "fleetpipe");
  const bool knob = std::getenv("FLEETPIPE_BENCH_UPLOAD_CONCURRENCY") != nullptr;
  const std::uint32_t kDefaultConcurrency = knobs.max_concurrent_requests;
  const std::uint32_t kAwsCliConcurrency = knob ? knobs.max_concurrent_requests : 10;  // aws-cli's default
  // Each round times every client, the one going first rotating from round to round; the
  // figures are medians of same-round ratios (one pass each swung +-0.1 between runs here).
  struct Ours {
    std::uint32_t concurrency;
    std::vector<double> mbs, cpu;
  };
  Ours ours_default{kDefaultConcurrency, {}, {}}, ours_matched{kAwsCliConcurrency, {}, {}};
  std::vector<double> rclone_mbs, aws_mbs;
  double peak_anon = 0, peak_file = 0;
  auto run_ours = [&](Ours& o) {
    fs::remove_all(db);
    if (sh("cp -a --sparse=always '" + db_filled + "' '" + db + "'") != 0) return false;
    std::printf("fleetpipe uploader, %u requests in flight...\n", o.concurrency);
    sync();
    double srv0 = server_cpu_s(env.state_dir);
    auto run = run_worker(self, db, bucket, o.concurrency);
    if (!run.ok) return false;
    o.mbs.push_back(g_bytes / 1e6 / run.wall_s);
    o.cpu.push_back(run.cpu_s);
    peak_anon = std::max(peak_anon, run.peak_anon_mb);
    peak_file = std::max(peak_file, run.peak_file_mb);
    std::printf("  %.2f s, %.1f MB/s, cpu %.2f s, RssAnon %.1f MB, RssFile %.1f MB, server cpu %.2f s\n",
                run.wall_s, o.mbs.back(), run.cpu_s, run.peak_anon_mb, run.peak_file_mb,
                server_cpu_s(env.state_dir) - srv0);
    return sh(empty_bucket) == 0;
  };
  auto run_peer = [&](const char* name, const std::string& cmd, std::vector<double>& mbs) {
    std::printf("%s...\n", name);
    sync();
    double srv0 = server_cpu_s(env.state_dir);
    double t0 = now_s();
    if (sh(cmd) != 0) return false;
    double wall = now_s() - t0;
    mbs.push_back(g_bytes / 1e6 / wall);
    std::printf("  %.2f s, %.1f MB/s, server cpu %.2f s\n", wall, mbs.back(), server_cpu_s(env.state_dir) - srv0);
    return sh(empty_bucket) == 0;
  };
  // The leanest client: curl, one PUT; and the uploader doing the same (one PutObject, one
  // request in flight). Wall and CPU (ours: the worker process; curl: its process) per round.
  struct Single {
    std::vector<double> wall, cpu, server_cpu;
  } curl_single, ours_single;
  double peak_anon_single = 0;
  auto run_curl = [&] {
    std::printf("curl, one PUT...\n");
    std::string cmd = curl_put_command(env, bucket, "curl/data.bin", data_file);
    if (cmd.empty()) return false;
    sync();
    double srv0 = server_cpu_s(env.state_dir);
    auto run = run_timed(cmd);
    if (!run.ok) {
      std::fprintf(stderr, "curl PUT failed\n");
      return false;
    }
    curl_single.wall.push_back(run.wall_s);
    curl_single.cpu.push_back(run.cpu_s);
    curl_single.server_cpu.push_back(server_cpu_s(env.state_dir) - srv0);
    std::printf("  %.2f s, %.1f MB/s, cpu %.2f s, server cpu %.2f s\n", run.wall_s, g_bytes / 1e6 / run.wall_s,
                run.cpu_s, curl_single.server_cpu.back());
    return sh(empty_bucket) == 0;
  };
  auto run_ours_single = [&] {
    fs::remove_all(db);
    if (sh("cp -a --sparse=always '" + db_filled + "' '" + db + "'") != 0) return false;
    std::printf("fleetpipe uploader, one PutObject...\n");
    sync();
    double srv0 = server_cpu_s(env.state_dir);
    auto run = run_worker(self, db, bucket, 1, true);
    if (!run.ok) return false;
    ours_single.wall.push_back(run.wall_s);
    ours_single.cpu.push_back(run.cpu_s);
    ours_single.server_cpu.push_back(server_cpu_s(env.state_dir) - srv0);
    peak_anon_single = std::max(peak_anon_single, run.peak_anon_mb);
    std::printf("  %.2f s, %.1f MB/s, cpu %.2f s, RssAnon %.1f MB, server cpu %.2f s\n", run.wall_s,
                g_bytes / 1e6 / run.wall_s, run.cpu_s, run.peak_anon_mb, ours_single.server_cpu.back());
    return sh(empty_bucket) == 0;
  };
  const int clients = only_single ? 2 : only_ours ? 2 : 6;
  for (int r = 0; r < rounds; ++r) {
    std::printf("round %d of %d\n", r + 1, rounds);
    for (int k = 0; k < clients; ++k) {
      bool ok = true;
      int which = (r + k) % clients + (only_single ? 4 : 0);
      switch (which) {
        case 0: ok = run_ours(ours_default); break;
        case 1: ok = run_ours(ours_matched); break;
        case 2: ok = run_peer("rclone copy", rclone, rclone_mbs); break;
        case 3: ok = run_peer("aws s3 cp", aws, aws_mbs); break;
        case 4: ok = run_curl(); break;
        default: ok = run_ours_single(); break;
      }
      if (!ok) return 1;
    }
  }
  if (only_ours || only_single || g_bytes != kGiB) {
    fs::remove_all(work);
    return 0;
  }

  auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    std::size_t n = v.size();
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
  };
  auto ratios = [&](const std::vector<double>& ours, const std::vector<double>& peer) {
    std::vector<double> out;
    for (std::size_t i = 0; i < peer.size(); ++i) out.push_back(ours[i] / peer[i]);
    return out;
  };
  auto list = [](const std::vector<double>& v) {
    std::string out;
    char one[32];
    for (double x : v) {
      std::snprintf(one, sizeof one, "%s%.1f", out.empty() ? "" : " ", x);
      out += one;
    }
    return out;
  };
  char base[1024];
  std::snprintf(base, sizeof base,
                "rclone copy of the same 1 GiB, 4 parts in flight (fleetpipe %u), median of %d same-round ratios: "
                "rclone MB/s %s, fleetpipe %s",
                kDefaultConcurrency, rounds, list(rclone_mbs).c_str(), list(ours_default.mbs).c_str());
  report.add("throughput_vs_rclone", median(ratios(ours_default.mbs, rclone_mbs)), "ratio", base, ">= 1.2");
  std::snprintf(base, sizeof base,
                "aws s3 cp of the same 1 GiB, 10 requests in flight (fleetpipe %u), median of %d same-round ratios: "
                "aws MB/s %s, fleetpipe %s",
                kAwsCliConcurrency, rounds, list(aws_mbs).c_str(), list(ours_matched.mbs).c_str());
  report.add("throughput_vs_awscli", median(ratios(ours_matched.mbs, aws_mbs)), "ratio", base, ">= 1.2");
  std::snprintf(base, sizeof base,
                "aws s3 cp (10 in flight) against fleetpipe at its default %u: fleetpipe MB/s %s (median of %d "
                "same-round ratios)",
                kDefaultConcurrency, list(ours_default.mbs).c_str(), rounds);
  report.add("throughput_vs_awscli_default_concurrency", median(ratios(ours_default.mbs, aws_mbs)), "ratio", base);
  std::snprintf(base, sizeof base,
                "user+sys CPU of the uploading process for 1 GiB, %u in flight (median of rounds; at %u: %.2f s)",
                kDefaultConcurrency, kAwsCliConcurrency, median(ours_matched.cpu));
  report.add("cpu_s_per_gib", median(ours_default.cpu), "s", std::string(base) + "; " + floors_text);
  {
    std::vector<double> speed, cpu;
    for (std::size_t i = 0; i < curl_single.wall.size(); ++i) {
      speed.push_back(curl_single.wall[i] / ours_single.wall[i]);
      cpu.push_back(ours_single.cpu[i] / curl_single.cpu[i]);
    }
    std::vector<double> curl_mbs, ours_mbs;
    for (double w : curl_single.wall) curl_mbs.push_back(g_bytes / 1e6 / w);
    for (double w : ours_single.wall) ours_mbs.push_back(g_bytes / 1e6 / w);
    std::snprintf(base, sizeof base,
                  "curl -T of the same 1 GiB as one PUT (UNSIGNED-PAYLOAD), fleetpipe one PutObject with "
                  "unsigned_payload, content_md5 off (neither hashes the body), median of %d same-round ratios: curl MB/s %s, fleetpipe %s; "
                  "server CPU-s curl %s, fleetpipe %s",
                  rounds, list(curl_mbs).c_str(), list(ours_mbs).c_str(), list(curl_single.server_cpu).c_str(),
                  list(ours_single.server_cpu).c_str());
    report.add("throughput_vs_curl_single_put", median(speed), "ratio", base, ">= 0.9");
    std::snprintf(base, sizeof base,
                  "user+sys CPU for that PUT, median of %d same-round ratios: curl s %s, fleetpipe s %s; %s", rounds,
                  list(curl_single.cpu).c_str(), list(ours_single.cpu).c_str(), floors_text);
    report.add("cpu_vs_curl_single_put", median(cpu), "ratio", base, "<= 1.5");
    peak_anon = std::max(peak_anon, peak_anon_single);
  }
  report.add("peak_rss_anon_mb", peak_anon, "MB",
             "RssAnon of the uploading process, sampled every 5 ms (max of all runs of ours)", "<= 12");
  report.add("peak_rss_file_mb", peak_file, "MB", "RssFile (LMDB map pages) of the uploading process");

  const char* no_cap = std::getenv("FLEETPIPE_BENCH_UPLOAD_NO_CAP");
  if (no_cap && *no_cap == '1') {
    report.write();
    fs::remove_all(work);
    if (!own_state.empty()) sh(FLEETPIPE_SOURCE_DIR "/tests/s3server/stop '" + own_state + "' >/dev/null");
    return 0;
  }
  // Rate caps: one 200 MiB record (a multipart upload whose parts go out in parallel), 12 s per
  // rate after a 2 s warm-up; each run continues the same upload (resume), so the window is a
  // steady stream of part bodies — what the shaper controls.
  fs::remove_all(db);
  if (!fill(db, 200ull << 20, 1, "")) return 1;
  struct Cap {
    const char* id;
    double rate;
  };
  for (Cap c : {Cap{"cap_error_pct_100k", 100e3}, Cap{"cap_error_pct_1m", 1e6}, Cap{"cap_error_pct_10m", 10e6}}) {
    double achieved = measure_cap(env, db, bucket, c.rate, 12);
    double err = std::abs(achieved - c.rate) / c.rate * 100;
    std::snprintf(base, sizeof base, "configured %.0f B/s, achieved %.0f B/s over 12 s (socket bytes)", c.rate, achieved);
    report.add(c.id, err, "%", base, "<= 3");
  }
  report.write();

  sh(empty_bucket);
  fs::remove_all(work);
  if (!own_state.empty()) sh(FLEETPIPE_SOURCE_DIR "/tests/s3server/stop '" + own_state + "' >/dev/null");
  return 0;
}
