// bench_fleet: what the fleet view costs the network and the bucket (issue "Fleet observability").
//
//  1. heartbeat_wire_bytes, idle_device_bytes_per_day: one idle Pipeline (default settings but a
//     shorter heartbeat interval) talks to the real S3 server over HTTPS through a byte-counting
//     TCP proxy (both directions: TCP payload = HTTP headers, bodies and TLS). The interval
//     (default 65 s) is longer than the server's keep-alive (Swift's client_timeout, 60 s), so
//     each heartbeat opens a new connection as it would at the default 300 s; the bench checks
//     connections == heartbeats. An idle device sends nothing else (no campaigns configured), so
//     bytes per day = wire bytes per heartbeat x 86400 / 300 + the other traffic counted (none
//     expected; any is extrapolated at its own measured rate).
//  2. status_requests_per_device: a generated history (bench_fleet_gen.py) of 1,000 devices at
//     5-minute heartbeats, first H1 then H2 hours, and BucketReader::status over each, counting
//     requests; the wall time of `fleetpipe status` (the CLI) over the longer one.
//  3. bytes_per_event_ratio_1000_vs_10: examples/fleet_sim at 10, 100 and 1,000 devices, bucket
//     bytes (data, manifests, heartbeats) per event, 1,000 against 10. Every size runs the same
//     per-device settings (_SIM_ARGS), scaled so 1,000 pipelines keep up in one process on 2
//     cores and the local server takes their requests: IMU at 5 Hz, a 6 KB frame every 4 s,
//     heartbeats every 300 s (the default: a start and a final one in each 3-minute run),
//     objects of up to 30 s (fleet_sim's defaults: 20 Hz, 1 s, 20 s, 5 s),
//     and --steady-mix: every size has the same mix of devices (quota, cap, outage by index mod
//     10) and of events (scheduled shocks and fan failures), else 10 devices' 20 random events
//     would make the ratio a draw of the event mix.
//
// Environment: FLEETPIPE_S3_STATE (scripts/bench), FLEETPIPE_BUILD_DIR (the CLI, fleet_sim);
// FLEETPIPE_BENCH_FLEET_IDLE_S (600), _HB_S (65), _HOURS ("1,4"), _SIM ("10,100,1000"),
// _SIM_MINUTES (3), _SIM_ARGS (above), _PARTS ("idle,status,sim").
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "bench_report.hpp"
#include "fleetpipe/fleetpipe.hpp"
#include "fleetpipe/query.hpp"
#include "support/s3_env.hpp"

using namespace fleetpipe;
using namespace std::chrono;

namespace {

const char* kBucket = "fleetpipe-bench";

std::string env_or(const char* name, const char* dflt) {
  const char* v = std::getenv(name);
  return v && *v ? v : dflt;
}

std::vector<int> int_list(const std::string& s) {
  std::vector<int> out;
  std::stringstream in(s);
  for (std::string x; std::getline(in, x, ',');) out.push_back(std::atoi(x.c_str()));
  return out;
}

// A TCP forwarder on 127.0.0.1 that counts the bytes each way and the connections.
class ByteProxy {
 public:
  explicit ByteProxy(int target_port) : target_(target_port) {
    lfd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::bind(lfd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(lfd_, 64) != 0) {
      throw std::runtime_error("proxy: bind/listen failed");
    }
    socklen_t len = sizeof a;
    ::getsockname(lfd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    acceptor_ = std::thread([this] { accept_loop(); });
  }
  ~ByteProxy() {
    stop_ = true;
    acceptor_.join();
    for (auto& t : pumps_) t.join();
    ::close(lfd_);
  }
  int port() const { return port_; }
  std::uint64_t up() const { return up_; }
  std::uint64_t down() const { return down_; }
  std::uint64_t connections() const { return conns_; }

 private:
  void accept_loop() {
    while (!stop_) {
      pollfd p{lfd_, POLLIN, 0};
      if (::poll(&p, 1, 100) <= 0) continue;
      int c = ::accept(lfd_, nullptr, nullptr);
      if (c < 0) continue;
      int s = ::socket(AF_INET, SOCK_STREAM, 0);
      sockaddr_in a{};
      a.sin_family = AF_INET;
      a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      a.sin_port = htons(static_cast<std::uint16_t>(target_));
      if (::connect(s, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
        ::close(c), ::close(s);
        continue;
      }
      ++conns_;
      std::lock_guard<std::mutex> g(mu_);
      pumps_.emplace_back([this, c, s] { pump(c, s); });
    }
  }
  void pump(int c, int s) {
    char buf[16384];
    pollfd p[2] = {{c, POLLIN, 0}, {s, POLLIN, 0}};
    while (!stop_) {
      if (::poll(p, 2, 100) <= 0) continue;
      bool done = false;
      for (int i = 0; i < 2 && !done; ++i) {
        if (!(p[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
        ssize_t n = ::read(p[i].fd, buf, sizeof buf);
        if (n <= 0) {
          done = true;
          break;
        }
        (i == 0 ? up_ : down_) += static_cast<std::uint64_t>(n);
        for (ssize_t off = 0; off < n;) {
          ssize_t w = ::write(p[1 - i].fd, buf + off, static_cast<std::size_t>(n - off));
          if (w <= 0) {
            done = true;
            break;
          }
          off += w;
        }
      }
      if (done) break;
    }
    ::close(c);
    ::close(s);
  }

  int target_, lfd_ = -1, port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<std::uint64_t> up_{0}, down_{0}, conns_{0};
  std::thread acceptor_;
  std::mutex mu_;
  std::vector<std::thread> pumps_;
};

int port_of(const std::string& endpoint) {
  return std::atoi(endpoint.substr(endpoint.rfind(':') + 1).c_str());
}

Config idle_config(const test::S3Env& env, const std::string& endpoint, const std::string& prefix,
                   const std::string& dir) {
  Config c;
  c.device_id = "idle-01";
  c.labels = {{"site", "store-01"}, {"model", "cart-v2"}, {"firmware", "4.2.1"}, {"region", "eu-west"}};
  c.buffer.path = dir;
  StreamConfig s;
  s.name = "imu";
  s.channels = {"accel_x", "accel_y", "temp_c"};
  c.streams.push_back(s);
  auto shock = threshold_trigger("shock", "imu", "accel_x", ThresholdOp::above, 2.5);
  auto heat = threshold_trigger("overheat", "imu", "temp_c", ThresholdOp::above, 70);
  c.triggers = {shock, heat};
  c.uploader = test::s3_uploader_config(env, kBucket, prefix);
  c.uploader.endpoint = endpoint;
  c.uploader.enabled = true;
  return c;
}

std::string cli() { return env_or("FLEETPIPE_BUILD_DIR", "build") + "/fleetpipe"; }

std::string reader_flags(const test::S3Env& env, const std::string& prefix) {
  return " --endpoint " + env.endpoint_https + " --ca-file " + env.ca_file + " --region " +
         env.region + " --bucket " + kBucket + " --prefix " + prefix + " --access-key " +
         env.access_key + " --secret-key " + env.secret_key;
}

}  // namespace

int main() {
  test::S3Env env;
  try {
    env = test::load_s3_env();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_fleet: %s\n", e.what());
    return 1;
  }
  std::string mk = std::string("/usr/bin/python3 ") + FLEETPIPE_SOURCE_DIR +
                   "/tests/python/s3_bucket_tool.py make " + kBucket;
  if (std::system(mk.c_str()) != 0) return std::fprintf(stderr, "cannot create bucket\n"), 1;
  const std::string parts = env_or("FLEETPIPE_BENCH_FLEET_PARTS", "idle,status,sim");
  const auto tmp = std::filesystem::temp_directory_path() / ("bench_fleet-" + std::to_string(::getpid()));
  std::filesystem::create_directories(tmp);
  const std::string run = std::to_string(duration_cast<seconds>(system_clock::now().time_since_epoch()).count());
  bench::Report report("fleet");
  int status = 0;

  // ---- 1. the idle device through the byte-counting proxy ----------------------------------
  std::string template_doc;
  {
    ByteProxy proxy(port_of(env.endpoint_https));
    const double hb_s = std::atof(env_or("FLEETPIPE_BENCH_FLEET_HB_S", "65").c_str());
    const double idle_s = parts.find("idle") != std::string::npos
                              ? std::atof(env_or("FLEETPIPE_BENCH_FLEET_IDLE_S", "600").c_str())
                              : 0;
    Config c = idle_config(env, "https://127.0.0.1:" + std::to_string(proxy.port()),
                           "bench-fleet-idle-" + run, (tmp / "idle").string());
    c.pipeline.heartbeat_interval_s = hb_s;
    auto created = Pipeline::create(c);
    if (!created) return std::fprintf(stderr, "idle: %s\n", created.error().message.c_str()), 1;
    Pipeline& p = **created;
    template_doc = p.heartbeat_json();
    const auto t0 = steady_clock::now();
    std::printf("idle device: %.0f s at one heartbeat per %.0f s ...\n", idle_s, hb_s);
    std::fflush(stdout);
    while (duration<double>(steady_clock::now() - t0).count() < idle_s) p.run_for(200ms);
    // Let the last heartbeat finish before counting.
    const auto t1 = steady_clock::now();
    while (p.poll() && steady_clock::now() - t1 < 10s) p.run_for(50ms);
    const double elapsed = duration<double>(steady_clock::now() - t0).count();
    const auto st = p.status();
    const double total = static_cast<double>(proxy.up() + proxy.down());
    const double beats = static_cast<double>(st.heartbeats_sent);
    if (idle_s > 0 && beats > 0) {
      const double per_hb = total / beats;
      std::printf("  %.0f heartbeats, %llu connections, %llu B up, %llu B down in %.0f s\n", beats,
                  (unsigned long long)proxy.connections(), (unsigned long long)proxy.up(),
                  (unsigned long long)proxy.down(), elapsed);
      if (proxy.connections() < st.heartbeats_sent) {
        std::printf("  note: fewer connections than heartbeats (a connection was reused)\n");
      }
      // The same heartbeat on a warm connection (5 s apart, within the server's keep-alive):
      // what the document and its request cost without the TLS handshake.
      const std::uint64_t warm0 = proxy.up() + proxy.down(), conns0 = proxy.connections();
      const std::uint64_t sent0 = p.status().heartbeats_sent;
      const int kWarm = 6;
      for (int k = 0; k < kWarm; ++k) {
        const auto tk = steady_clock::now();
        p.request_heartbeat();
        while (steady_clock::now() - tk < 5s) p.run_for(50ms);
      }
      const double warm_beats = static_cast<double>(p.status().heartbeats_sent - sent0);
      const double warm = warm_beats > 0 ? static_cast<double>(proxy.up() + proxy.down() - warm0) / warm_beats : 0;
      const double stored = static_cast<double>(nlohmann::json::parse(p.heartbeat_json()).dump().size());
      // Full-export heartbeat on the same device, for the baseline.
      const std::uint64_t before = proxy.up() + proxy.down();
      const std::uint64_t sent1 = p.status().heartbeats_sent;
      p.request_metrics_heartbeat();
      const auto t2 = steady_clock::now();
      while (p.status().heartbeats_sent == sent1 && steady_clock::now() - t2 < 20s) p.run_for(50ms);
      const double full = static_cast<double>(proxy.up() + proxy.down() - before);
      report.add("heartbeat_wire_bytes", per_hb, "B",
                 "TCP payload both ways per heartbeat, a new TLS connection each (" +
                     std::to_string(proxy.connections()) + " connections for " +
                     std::to_string(st.heartbeats_sent) + " heartbeats over " +
                     std::to_string(static_cast<int>(elapsed)) + " s); with the full metrics export: " +
                     std::to_string(static_cast<long long>(full)) + " B",
                 "<= 1500");
      report.add("heartbeat_wire_bytes_warm", warm, "B",
                 "per heartbeat on a kept-alive connection (" + std::to_string(static_cast<int>(warm_beats)) +
                     " heartbeats 5 s apart, " + std::to_string(proxy.connections() - conns0) +
                     " new connections): the request and document without the TLS handshake",
                 "<= 1500");
      report.add("idle_device_bytes_per_day", per_hb * 86400.0 / 300.0, "B",
                 "wire bytes per heartbeat x 288 heartbeats a day (default 300 s interval); the idle "
                 "device sent nothing but heartbeats (no campaigns configured)",
                 "<= 500000");
      report.add("idle_device_bucket_bytes_per_day", stored * 288, "B",
                 "stored heartbeat object size (" + std::to_string(static_cast<int>(stored)) + " B) x 288", "");
    } else if (idle_s > 0) {
      std::fprintf(stderr, "idle: no heartbeat was sent\n");
      status = 1;
    }
  }

  // ---- 2. status over a generated history ----------------------------------------------------
  if (parts.find("status") != std::string::npos) {
    // _STATUS_PREFIX / _STATUS_HAVE_H: go on with a history an earlier run generated.
    const std::string prefix = env_or("FLEETPIPE_BENCH_FLEET_STATUS_PREFIX", ("bench-fleet-status-" + run).c_str());
    const std::string tpl = (tmp / "template.json").string();
    std::ofstream(tpl) << template_doc;
    const auto hours = int_list(env_or("FLEETPIPE_BENCH_FLEET_HOURS", "1,4"));
    long long end_s = duration_cast<seconds>(system_clock::now().time_since_epoch()).count();
    int have_h = std::atoi(env_or("FLEETPIPE_BENCH_FLEET_STATUS_HAVE_H", "0").c_str());
    if (have_h > 0) end_s = std::atoll(env_or("FLEETPIPE_BENCH_FLEET_STATUS_END_S", "0").c_str());
    std::printf("history %s, newest heartbeats at unix %lld\n", prefix.c_str(), end_s);
    double objects = 0, secs = 0;
    UploaderConfig rc = test::s3_uploader_config(env, kBucket, prefix);
    auto reader = BucketReader::open(rc);
    if (!reader) return std::fprintf(stderr, "reader: %s\n", reader.error().message.c_str()), 1;
    for (int h : hours) {
      std::string gen = "/usr/bin/python3 " + std::string(FLEETPIPE_SOURCE_DIR) +
                        "/benchmarks/bench_fleet_gen.py " + kBucket + " " + prefix + " 1000 " +
                        std::to_string(have_h) + " " + std::to_string(h) + " " + std::to_string(end_s) +
                        " " + tpl + " 16";
      if (h > have_h) {
        std::printf("generating 1000 devices x hours %d..%d ...\n", have_h, h);
        std::fflush(stdout);
        FILE* f = ::popen(gen.c_str(), "r");
        if (!f || std::fscanf(f, "%lf %lf", &objects, &secs) != 2) {
          std::fprintf(stderr, "generator failed\n");
          return 1;
        }
        ::pclose(f);
        std::printf("  %.0f objects in %.0f s (%.0f PUT/s, 16 threads, HTTP)\n", objects, secs, objects / secs);
        have_h = h;
      }
      (*reader)->reset_stats();
      StatusQuery q;
      q.now = WallTime(std::chrono::seconds(end_s + 1));
      const auto s0 = steady_clock::now();
      auto devices = (*reader)->status(q);
      const double took = duration<double>(steady_clock::now() - s0).count();
      if (!devices) return std::fprintf(stderr, "status: %s\n", devices.error().message.c_str()), 1;
      const QueryStats qs = (*reader)->stats();
      const double requests = static_cast<double>(qs.list_requests + qs.gets + qs.heads);
      const double per_device = requests / static_cast<double>(devices->size());
      std::printf("  status: %zu devices, %llu lists + %llu gets in %.1f s\n", devices->size(),
                  (unsigned long long)qs.list_requests, (unsigned long long)qs.gets, took);
      const std::string hist = std::to_string(h) + " h x 12 heartbeats/h x 1000 devices";
      report.add("status_requests_per_device_" + std::to_string(h) + "h", per_device, "req",
                 "BucketReader::status over " + hist, "<= 2");
      if (h == hours.back()) {
        report.add("status_requests_per_device", per_device, "req",
                   "BucketReader::status over " + hist + " (the same with " +
                       std::to_string(hours.front()) + " h: see above)",
                   "<= 2");
        const auto c0 = steady_clock::now();
        std::string cmd = cli() + " status" + reader_flags(env, prefix) + " --now " +
                          std::to_string(end_s + 1) + " > /dev/null";
        int rc2 = std::system(cmd.c_str());
        const double cli_s = duration<double>(steady_clock::now() - c0).count();
        if (rc2 != 0) std::fprintf(stderr, "fleetpipe status exited %d\n", rc2);
        report.add("status_wall_s", cli_s, "s", "`fleetpipe status` (CLI) over " + hist, "");
        if (secs > 0) {
          report.add("status_generate_objects_per_s", objects / secs, "obj/s",
                     "bench_fleet_gen.py, 16 boto3 threads over HTTP to the local Swift (" +
                         std::to_string(static_cast<long long>(objects)) + " objects)", "");
        }
      }
    }
  }

  // ---- 3. fleet_sim at several sizes -----------------------------------------------------------
  if (parts.find("sim") != std::string::npos) {
    const auto sizes = int_list(env_or("FLEETPIPE_BENCH_FLEET_SIM", "10,100,1000"));
    const std::string minutes = env_or("FLEETPIPE_BENCH_FLEET_SIM_MINUTES", "3");
    const std::string sim_args = env_or("FLEETPIPE_BENCH_FLEET_SIM_ARGS",
                                        "--imu-hz 5 --frame-every 4 --heartbeat 300 --object-age 30 --steady-mix 1");
    std::vector<double> per_event;
    for (int n : sizes) {
      const std::string prefix = "bench-fleet-sim" + std::to_string(n) + "-" + run;
      const std::string out = (tmp / ("sim" + std::to_string(n) + ".txt")).string();
      std::string cmd = env_or("FLEETPIPE_BUILD_DIR", "build") + "/examples/fleet_sim/fleet_sim --devices " +
                        std::to_string(n) + " --sim-minutes " + minutes + " --speed 1 --db-root " +
                        (tmp / ("sim" + std::to_string(n))).string() + " --bucket " + kBucket +
                        " --prefix " + prefix + " " + sim_args + " > " + out + " 2>&1";
      std::printf("fleet_sim %d devices, %s simulated minutes ...\n", n, minutes.c_str());
      std::fflush(stdout);
      const auto s0 = steady_clock::now();
      int rc3 = std::system(cmd.c_str());
      const double took = duration<double>(steady_clock::now() - s0).count();
      if (rc3 != 0) std::fprintf(stderr, "fleet_sim %d exited %d (see %s)\n", n, rc3, out.c_str());
      // Events from its summary line; bytes from the bucket.
      std::ifstream in(out);
      double shock = 0, heat = 0, base = 0, up_mb = 0, up_objects = 0, evictions = 0, pauses = 0,
             left = -1, sim_real = 0, drain_real = 0;
      for (std::string line; std::getline(in, line);) {
        std::sscanf(line.c_str(), "events per trigger: shock %lf, overheat %lf, baseline %lf", &shock,
                    &heat, &base);
        std::sscanf(line.c_str(), "uploaded %lf MB in %lf objects; evictions %lf; pauses %lf; left in buffers %lf",
                    &up_mb, &up_objects, &evictions, &pauses, &left);
        std::sscanf(line.c_str(), "throughput %*f KB/s (fleet, real time); %*f simulated minutes took %lfs + %lfs",
                    &sim_real, &drain_real);
      }
      std::printf("  simulated minutes took %.1f s real (+ %.1f s draining); %.0f records left in buffers\n",
                  sim_real, drain_real, left);
      auto reader = BucketReader::open(test::s3_uploader_config(env, kBucket, prefix));
      if (!reader) return 1;
      auto listed = (*reader)->list(prefix + "/");
      if (!listed) return std::fprintf(stderr, "list: %s\n", listed.error().message.c_str()), 1;
      double bytes = 0, hb_bytes = 0;
      for (const auto& o : *listed) {
        bytes += static_cast<double>(o.size);
        if (o.key.find("/_heartbeat/") != std::string::npos) hb_bytes += static_cast<double>(o.size);
      }
      const double events = shock + heat + base;
      std::printf("  %.0f events, %.0f bucket bytes (%.0f heartbeats) in %.0f s\n", events, bytes,
                  hb_bytes, took);
      per_event.push_back(events > 0 ? bytes / events : 0);
      report.add("bytes_per_event_" + std::to_string(n), per_event.back(), "B",
                 "bucket bytes (data, manifests, heartbeats) / events, " + std::to_string(n) +
                     " devices, " + minutes + " simulated min at 1x (" + sim_args + "; took " +
                     std::to_string(static_cast<int>(sim_real)) + " s real, " +
                     std::to_string(static_cast<long long>(left)) + " records left in buffers)",
                 "");
    }
    if (sizes.size() >= 2 && per_event.front() > 0) {
      report.add("bytes_per_event_ratio_" + std::to_string(sizes.back()) + "_vs_" + std::to_string(sizes.front()),
                 per_event.back() / per_event.front(), "ratio",
                 "bytes per event at " + std::to_string(sizes.front()) + " devices: " +
                     std::to_string(static_cast<long long>(per_event.front())) + " B",
                 "<= 1.05");
    }
  }
  std::filesystem::remove_all(tmp);
  if (!report.write()) status = 1;
  return status;
}
