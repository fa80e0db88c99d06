// bench_footprint: what fleetpipe costs a device in binary size, wakeups and memory.
//
// Figures (bench-results/footprint.json):
//   lib_stripped_kb        stripped footprint_host_fleetpipe minus stripped footprint_host_base
//                          (the same tiny host program without / with a Pipeline; system libs
//                          OpenSSL, LMDB, zstd, libstdc++ are shared objects on Debian), built
//                          as firmware is (MinSizeRel, function/data sections, --gc-sections) —
//                          goal <= 1500 KB; the static library's size and the Release (-O3)
//                          growth are given in the baseline text
//   idle_wakeups_per_s     voluntary context switches per second of a host polling at 100 Hz with
//                          an idle pipeline (uploader connected, streams fed below their trigger,
//                          nothing to upload) minus the same host without a pipeline — goal 0
//   rss_anon_idle_mb       RssAnon of that idle host minus the pipeline-less host's
//   rss_anon_uploading_mb  peak RssAnon while capturing 100 Hz IMU + 10 Hz 64 KiB frames and
//                          uploading at the cap, minus the pipeline-less host's
//   lib_stripped_kb_arm64  lib_stripped_kb of the hosts cross-built for aarch64 / armhf
//   lib_stripped_kb_armhf  (scripts/bench makes them with cmake/toolchains/, stripped with the
//                          target's strip) — goal <= 1000 KB each
//   rss_anon_idle_mb_arm64 rss_anon_idle_mb of this program cross-built for aarch64, run under
//                          qemu-user: the difference cancels most of qemu's own memory, not the
//                          translated code of fleetpipe's calls, so it is an upper bound
// Each measure runs in a fresh exec of this program, so RSS and context switches are its own.
// The uploading run also logs the achieved upload rate every 100 ms under a cap with a pause and
// resume in the middle and a set_rate() change (Uploader API), to
// bench-results/upload_rate_timeline.csv (plotted by scripts/bench-plots).
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cctype>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <utility>

#include <nlohmann/json.hpp>

#include "bench_report.hpp"
#include "fleetpipe/fleetpipe.hpp"
#include "support/s3_env.hpp"

using namespace fleetpipe;
namespace fs = std::filesystem;
using SteadyClock = std::chrono::steady_clock;

namespace {

const char* kClean = "env -u AWS_CA_BUNDLE -u SSL_CERT_FILE -u SSL_CERT_DIR -u REQUESTS_CA_BUNDLE ";
const std::string kBucket = "fp-bench-footprint";

int sh(const std::string& cmd) {
  int rc = std::system(cmd.c_str());
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : 128;
}

long status_kb(const char* field) {  // a "Field:  N kB" line of /proc/self/status
  std::ifstream in("/proc/self/status");
  std::string line;
  const std::size_t n = std::strlen(field);
  while (std::getline(in, line)) {
    if (line.compare(0, n, field) == 0 && line.size() > n && line[n] == ':') {
      return std::atol(line.c_str() + n + 1);
    }
  }
  return -1;
}

int thread_count() {
  int n = 0;
  for ([[maybe_unused]] auto& e : fs::directory_iterator("/proc/self/task")) ++n;
  return n;
}

Config config(const test::S3Env& env, const std::string& db, bool capture_all) {
  Config c;
  c.device_id = "footprint-host";
  StreamConfig imu;
  imu.name = "imu";
  imu.channels = {"ax", "ay", "az", "gx", "gy", "gz"};
  imu.ring_seconds = 2;
  StreamConfig cam;
  cam.name = "camera";
  cam.kind = StreamKind::blob;
  cam.ring_seconds = 2;
  cam.ring_bytes = 4ull << 20;
  cam.ring_max_blobs = 64;
  c.streams = {imu, cam};
  if (capture_all) {
    auto every = periodic_trigger("every_second", 1.0);
    every.capture.streams = {"imu", "camera"};
    every.capture.pre_s = 1.0;
    every.capture.post_s = 0.0;
    c.triggers = {every};
  } else {
    auto hard = threshold_trigger("hard_brake", "imu", "ax", ThresholdOp::below, -8.0);
    hard.capture.streams = {"imu", "camera"};
    c.triggers = {hard};
  }
  c.buffer.path = db;
  c.buffer.max_bytes = 256ull << 20;
  c.buffer.min_free_bytes = 0;
  c.uploader.endpoint = env.endpoint_https;
  c.uploader.bucket = kBucket;
  c.uploader.region = env.region;
  c.uploader.ca_file = env.ca_file;
  c.uploader.credentials.source = CredentialsSource::static_keys;
  c.uploader.credentials.access_key_id = env.access_key;
  c.uploader.credentials.secret_access_key = env.secret_key;
  c.uploader.prefix = "footprint";
  c.uploader.target_object_bytes = 2ull << 20;
  c.uploader.max_object_age_s = 1;
  c.pipeline.heartbeat_on_start = false;  // idle: nothing to upload
  return c;
}

std::unique_ptr<Pipeline> make(const Config& c) {
  static StderrLogSink log(LogLevel::error);
  Port port;
  port.log = &log;
  auto p = Pipeline::create(c, port);
  if (!p) {
    std::fprintf(stderr, "bench_footprint: %s\n", p.error().message.c_str());
    std::exit(2);
  }
  return std::move(*p);
}

// --idle OUT SECONDS [DB]: a host polling at 100 Hz (sleep 10 ms), with a pipeline when DB is
// given. Counts voluntary context switches over the measured window (after 1 s of warm-up).
int idle_child(const std::string& out, double seconds, const std::string& db) {
  std::unique_ptr<Pipeline> p;
  StreamHandle imu;
  if (!db.empty()) {
    p = make(config(test::load_s3_env(), db, false));
    imu = p->stream("imu");
  }
  // Voluntary switches that happen inside fleetpipe's calls (blocking I/O, a wait) are counted
  // apart from the host's own sleeps; any other thread's switches would show in the process
  // total (RUSAGE_SELF covers every thread) and in the thread count.
  long inside = 0;
  double t = 0;
  auto run = [&](double s) {
    const auto end = SteadyClock::now() + std::chrono::duration_cast<SteadyClock::duration>(std::chrono::duration<double>(s));
    auto next = SteadyClock::now();
    while (SteadyClock::now() < end) {
      next += std::chrono::milliseconds(10);
      std::this_thread::sleep_until(next);
      t += 0.01;
      if (p) {
        rusage a{}, b{};
        getrusage(RUSAGE_SELF, &a);
        p->push(imu, t, {0.1, 0.0, 9.81, 0.0, 0.0, 0.0});  // below the trigger: nothing to upload
        p->poll();
        getrusage(RUSAGE_SELF, &b);
        inside += b.ru_nvcsw - a.ru_nvcsw;
      }
    }
  };
  run(1.0);
  inside = 0;
  rusage r0{}, r1{};
  getrusage(RUSAGE_SELF, &r0);
  const auto t0 = SteadyClock::now();
  run(seconds);
  getrusage(RUSAGE_SELF, &r1);
  const double d = std::chrono::duration<double>(SteadyClock::now() - t0).count();
  nlohmann::json j;
  j["vcsw_per_s"] = (r1.ru_nvcsw - r0.ru_nvcsw) / d;
  j["ivcsw_per_s"] = (r1.ru_nivcsw - r0.ru_nivcsw) / d;
  j["inside_per_s"] = inside / d;
  j["threads"] = thread_count();
  j["rss_anon_kb"] = status_kb("RssAnon");
  j["objects"] = p ? p->status().uploader.objects_uploaded : 0;
  std::ofstream(out) << j.dump() << "\n";
  return 0;
}

// --uploading OUT SECONDS DB TIMELINE: capture everything, upload under a cap; pause at 35 % of
// the run, resume at 55 %, halve the rate at 75 %. Samples RssAnon and bytes sent every 100 ms.
int uploading_child(const std::string& out, double seconds, const std::string& db, const std::string& tl) {
  const double cap = 400e3;
  auto p = make(config(test::load_s3_env(), db, true));
  Uploader& up = p->uploader();
  up.set_rate(cap);
  auto imu = p->stream("imu");
  auto cam = p->stream("camera");
  std::string frame(64 * 1024, '\0');
  std::uint64_t x = 88172645463325252ull;
  for (std::size_t i = 0; i + 8 <= frame.size(); i += 8) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    std::memcpy(&frame[i], &x, 8);
  }
  const auto t0 = SteadyClock::now();
  long peak = 0;
  int max_threads = 1;
  std::ofstream csv(tl);
  csv << "t_s,bytes_per_s,cap_bytes_per_s,paused,rss_anon_kb\n";
  // The metric is updated on every socket write (status() is refreshed on the uploader's ticks).
  auto sent_now = [&] { return p->metrics().sum("fleetpipe_uploader_bytes_sent_total"); };
  double last_sent = sent_now();
  double last_sample = 0, cur_cap = cap;
  bool paused = false, resumed = false, halved = false;
  auto next = SteadyClock::now();
  for (long k = 0;; ++k) {
    next += std::chrono::milliseconds(1);
    std::this_thread::sleep_until(next);
    const double t = std::chrono::duration<double>(SteadyClock::now() - t0).count();
    if (t >= seconds) break;
    if (k % 10 == 0) p->push(imu, t, {0.1 * std::sin(t), 0.0, 9.81, 0.0, 0.0, 0.0});
    if (k % 100 == 0) {
      frame[0] = static_cast<char>(k);
      p->push_blob(cam, t, frame);
    }
    p->poll();
    if (!paused && t >= 0.35 * seconds) {
      up.pause();
      paused = true;
    }
    if (!resumed && t >= 0.55 * seconds) {
      up.resume();
      resumed = true;
    }
    if (!halved && t >= 0.75 * seconds) {
      cur_cap = cap / 2;
      up.set_rate(cur_cap);
      halved = true;
    }
    if (t - last_sample >= 0.1) {
      const double sent = sent_now();
      const long rss = status_kb("RssAnon");
      peak = std::max(peak, rss);
      max_threads = std::max(max_threads, thread_count());
      csv << t << "," << (sent - last_sent) / (t - last_sample) << "," << ((paused && !resumed) ? 0 : cur_cap)
          << "," << ((paused && !resumed) ? 1 : 0) << "," << rss << "\n";
      last_sent = sent;
      last_sample = t;
    }
  }
  auto st = p->status();
  nlohmann::json j;
  j["peak_rss_anon_kb"] = peak;
  j["threads"] = max_threads;
  j["bytes_sent"] = st.uploader.bytes_sent;
  j["objects"] = st.uploader.objects_uploaded;
  j["seconds"] = seconds;
  std::ofstream(out) << j.dump() << "\n";
  return 0;
}

// Runs `self args...` (under `emulator` when given: a cross-built self) and reads its JSON.
nlohmann::json run_child(const std::string& self, std::vector<std::string> args, const std::string& out,
                         const std::string& emulator = {}) {
  if (!emulator.empty()) args.insert(args.begin(), self);
  const std::string& prog = emulator.empty() ? self : emulator;
  pid_t pid = fork();
  if (pid == 0) {
    std::vector<char*> argv{const_cast<char*>(prog.c_str())};
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    execv(prog.c_str(), argv.data());
    _exit(127);
  }
  int st = 0;
  waitpid(pid, &st, 0);
  if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
    std::fprintf(stderr, "bench_footprint: child %s %s failed\n", prog.c_str(), args[0].c_str());
    std::exit(1);
  }
  std::ifstream in(out);
  return nlohmann::json::parse(in);
}

// `strip` is the target's (aarch64-linux-gnu-strip for a cross build).
std::uintmax_t stripped_size(const fs::path& bin, const fs::path& work, const std::string& strip = "strip") {
  std::error_code ec;
  if (!fs::exists(bin, ec)) return 0;
  fs::path copy = work / (bin.filename().string() + ".stripped");
  fs::copy_file(bin, copy, fs::copy_options::overwrite_existing);
  if (sh(strip + " --strip-all '" + copy.string() + "'") != 0) return 0;
  return fs::file_size(copy);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc >= 4 && std::string(argv[1]) == "--idle")
    return idle_child(argv[2], std::atof(argv[3]), argc > 4 ? argv[4] : "");
  if (argc == 6 && std::string(argv[1]) == "--uploading")
    return uploading_child(argv[2], std::atof(argv[3]), argv[4], argv[5]);

  auto env = test::load_s3_env();
  const fs::path self = fs::read_symlink("/proc/self/exe");
  const fs::path bindir = self.parent_path();
  fs::path work = fs::temp_directory_path() / ("fleetpipe-bench-footprint-" + std::to_string(getpid()));
  fs::create_directories(work);
  if (sh(std::string(kClean) + "/usr/bin/python3 " FLEETPIPE_SOURCE_DIR "/tests/s3/uploader_readback.py '" +
         env.state_dir + "' mkbucket " + kBucket + " >/dev/null") != 0) {
    return 1;
  }
  const char* outdir_env = std::getenv("FLEETPIPE_BENCH_OUT");
  const std::string outdir = outdir_env ? outdir_env : "bench-results";
  bench::Report report("footprint");

  // ---- size ----
  // The figure is the device build: MinSizeRel (-Os) with -ffunction-sections -fdata-sections and
  // --gc-sections (scripts/bench makes it in $FLEETPIPE_SIZE_BUILD_DIR); the Release (-O3) growth
  // of the hosts next to this program is given alongside.
  auto growth = [&](const fs::path& dir, std::uintmax_t& base, std::uintmax_t& with, std::uintmax_t& lib_kb,
                    const std::string& strip = "strip") {
    base = stripped_size(dir / "benchmarks" / "footprint_host_base", work, strip);
    with = stripped_size(dir / "benchmarks" / "footprint_host_fleetpipe", work, strip);
    lib_kb = 0;
    if (fs::exists(dir / "libfleetpipe.a")) {
      fs::copy_file(dir / "libfleetpipe.a", work / "lib.a", fs::copy_options::overwrite_existing);
      sh(strip + " --strip-debug '" + (work / "lib.a").string() + "'");
      lib_kb = fs::file_size(work / "lib.a") / 1024;
    }
    return base != 0 && with != 0;
  };
  std::uintmax_t rb = 0, rw = 0, rl = 0, sb = 0, sw = 0, sl = 0;
  const char* size_dir = std::getenv("FLEETPIPE_SIZE_BUILD_DIR");
  if (!growth(bindir.parent_path(), rb, rw, rl)) {
    std::fprintf(stderr, "bench_footprint: footprint_host_* not built next to %s\n", self.c_str());
    return 1;
  }
  const bool have_size = size_dir && growth(size_dir, sb, sw, sl);
  if (!have_size) {
    std::fprintf(stderr, "bench_footprint: no MinSizeRel build (FLEETPIPE_SIZE_BUILD_DIR); using Release\n");
    sb = rb, sw = rw, sl = rl;
  }
  char text[400];
  std::snprintf(text, sizeof text,
                "%s: stripped host without fleetpipe %.0f KB, with %.0f KB, libfleetpipe.a %ju KB (debug-stripped); "
                "Release -O3 build: growth %.0f KB, libfleetpipe.a %ju KB",
                have_size ? "MinSizeRel + gc-sections" : "Release", sb / 1024.0, sw / 1024.0, sl,
                (double(rw) - double(rb)) / 1024.0, rl);
  report.add("lib_stripped_kb", (double(sw) - double(sb)) / 1024.0, "KB", text, "<= 1500");
  // The same device build for the ARM targets (FLEETPIPE_SIZE_BUILD_DIR_<ARCH>, from scripts/bench).
  for (const auto& [arch, triplet] : {std::pair<std::string, std::string>{"arm64", "aarch64-linux-gnu"},
                                      std::pair<std::string, std::string>{"armhf", "arm-linux-gnueabihf"}}) {
    std::string var = "FLEETPIPE_SIZE_BUILD_DIR_" + arch;
    for (auto& ch : var) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
    const char* dir = std::getenv(var.c_str());
    std::uintmax_t ab = 0, aw = 0, al = 0;
    if (!dir || !growth(dir, ab, aw, al, triplet + "-strip")) {
      std::fprintf(stderr, "bench_footprint: no %s size build (%s): lib_stripped_kb_%s not measured\n",
                   arch.c_str(), var.c_str(), arch.c_str());
      continue;
    }
    std::snprintf(text, sizeof text,
                  "%s, MinSizeRel + gc-sections (cmake/toolchains/%s.cmake): stripped host without fleetpipe "
                  "%.0f KB, with %.0f KB, libfleetpipe.a %ju KB (debug-stripped)",
                  triplet.c_str(), triplet.c_str(), ab / 1024.0, aw / 1024.0, al);
    report.add("lib_stripped_kb_" + arch, (double(aw) - double(ab)) / 1024.0, "KB", text, "<= 1000");
  }

  // ---- idle ----
  const double idle_s = 10;
  auto b = run_child(self, {"--idle", (work / "idle-base.json").string(), std::to_string(idle_s)},
                     (work / "idle-base.json").string());
  auto i = run_child(self,
                     {"--idle", (work / "idle-fp.json").string(), std::to_string(idle_s), (work / "idle-db").string()},
                     (work / "idle-fp.json").string());
  // Wakeups the pipeline adds: switches inside its calls, plus, should it have a thread of its
  // own, whatever the process total shows beyond the pipeline-less host's.
  const double total_diff = i["vcsw_per_s"].get<double>() - b["vcsw_per_s"].get<double>();
  double wake = i["inside_per_s"].get<double>();
  if (i["threads"].get<int>() > b["threads"].get<int>()) wake = std::max(wake, total_diff);
  std::snprintf(text, sizeof text,
                "host polling at 100 Hz without a pipeline: %.1f voluntary switches/s, %d thread; with: %.1f/s "
                "(%.2f/s inside push/poll), %d thread(s)",
                b["vcsw_per_s"].get<double>(), b["threads"].get<int>(), i["vcsw_per_s"].get<double>(),
                i["inside_per_s"].get<double>(), i["threads"].get<int>());
  report.add("idle_wakeups_per_s", wake, "1/s", text, "<= 0");
  const double base_rss = b["rss_anon_kb"].get<double>();
  std::snprintf(text, sizeof text, "same host without a pipeline: RssAnon %.2f MB (with: %.2f MB)",
                base_rss / 1024, i["rss_anon_kb"].get<double>() / 1024);
  report.add("rss_anon_idle_mb", (i["rss_anon_kb"].get<double>() - base_rss) / 1024, "MB", text);
  // The same idle pair, this program cross-built for aarch64, under qemu-user.
  const char* arm_self = std::getenv("FLEETPIPE_ARM64_BENCH_FOOTPRINT");
  const char* qemu = std::getenv("FLEETPIPE_QEMU_AARCH64");
  if (arm_self && qemu) {
    auto ab = run_child(arm_self, {"--idle", (work / "idle-arm-base.json").string(), std::to_string(idle_s)},
                        (work / "idle-arm-base.json").string(), qemu);
    auto ai = run_child(arm_self,
                        {"--idle", (work / "idle-arm-fp.json").string(), std::to_string(idle_s),
                         (work / "idle-arm-db").string()},
                        (work / "idle-arm-fp.json").string(), qemu);
    const double arm_base = ab["rss_anon_kb"].get<double>();
    std::snprintf(text, sizeof text,
                  "aarch64 MinSizeRel build under %s: host without a pipeline RssAnon %.2f MB (qemu's own memory "
                  "included), with: %.2f MB; %d thread(s) with, %d without",
                  qemu, arm_base / 1024, ai["rss_anon_kb"].get<double>() / 1024, ai["threads"].get<int>(),
                  ab["threads"].get<int>());
    report.add("rss_anon_idle_mb_arm64", (ai["rss_anon_kb"].get<double>() - arm_base) / 1024, "MB", text);
  } else {
    std::fprintf(stderr, "bench_footprint: no aarch64 build (FLEETPIPE_ARM64_BENCH_FOOTPRINT, "
                         "FLEETPIPE_QEMU_AARCH64): rss_anon_idle_mb_arm64 not measured\n");
  }

  // ---- uploading ----
  const std::string timeline = outdir + "/upload_rate_timeline.csv";
  auto u = run_child(self,
                     {"--uploading", (work / "up.json").string(), "20", (work / "up-db").string(), timeline},
                     (work / "up.json").string());
  std::snprintf(text, sizeof text,
                "host without a pipeline: RssAnon %.2f MB (uploading: peak %.2f MB, %.1f MB sent, %d thread(s))",
                base_rss / 1024, u["peak_rss_anon_kb"].get<double>() / 1024, u["bytes_sent"].get<double>() / 1e6,
                u["threads"].get<int>());
  report.add("rss_anon_uploading_mb", (u["peak_rss_anon_kb"].get<double>() - base_rss) / 1024, "MB", text);

  bool ok = report.write();
  std::error_code ec;
  fs::remove_all(work, ec);
  return ok ? 0 : 1;
}
