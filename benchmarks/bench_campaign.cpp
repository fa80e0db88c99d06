// bench campaign: what following a campaign costs a device.
//   campaign_poll_bytes_per_day  bytes both ways on the socket for one device whose campaign does
//                                not change, at the default poll interval (10 min); each poll
//                                after the server closed the idle connection (as after 10 idle
//                                minutes), so it reconnects with a resumed TLS session, through
//                                a byte-counting TCP proxy; a restarted pipeline's first poll
//                                (full handshake) is printed beside it
//   campaign_apply_max_poll_us   the longest Pipeline::poll() while a 32-trigger campaign is
//                                fetched, verified and applied (baseline: the longest poll of the
//                                same device while its campaign is unchanged, same run)
// Needs the S3 server (FLEETPIPE_S3_STATE, scripts/bench starts it).
#include <arpa/inet.h>
#include <mutex>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <optional>
#include <random>
#include <thread>
#include <vector>

#include "bench_report.hpp"
#include "fleetpipe/campaign.hpp"
#include "fleetpipe/pipeline.hpp"
#include "support/campaign_docs.hpp"
#include "support/s3_env.hpp"
#include "support/s3_put.hpp"

using namespace fleetpipe;
using namespace std::chrono_literals;
using Steady = std::chrono::steady_clock;

namespace {

// Listens on 127.0.0.2:port and relays to 127.0.0.1:port, counting every byte both ways.
class CountingProxy {
 public:
  explicit CountingProxy(std::uint16_t port) : port_(port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    ::setsockopt(fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    ::inet_pton(AF_INET, "127.0.0.2", &a.sin_addr);
    if (::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(fd_, 16) != 0) {
      std::perror("proxy bind 127.0.0.2");
      std::exit(1);
    }
    accept_ = std::thread([this] { accept_loop(); });
  }
  ~CountingProxy() {
    ::shutdown(fd_, SHUT_RDWR);
    ::close(fd_);
    accept_.join();
    for (auto& t : relays_) t.join();
  }
  std::uint64_t bytes() const { return bytes_.load(); }
  /// Closes every relayed connection, as a server closes idle ones (Swift after 60 s).
  void drop_connections() {
    std::lock_guard<std::mutex> l(mu_);
    for (int c : clients_) ::shutdown(c, SHUT_RDWR);
    clients_.clear();
  }

 private:
  void accept_loop() {
    for (;;) {
      int c = ::accept(fd_, nullptr, nullptr);
      if (c < 0) return;
      int s = ::socket(AF_INET, SOCK_STREAM, 0);
      sockaddr_in a{};
      a.sin_family = AF_INET;
      a.sin_port = htons(port_);
      ::inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
      if (::connect(s, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
        ::close(c);
        ::close(s);
        continue;
      }
      {
        std::lock_guard<std::mutex> l(mu_);
        clients_.push_back(c);
      }
      relays_.emplace_back([this, c, s] { relay(c, s); });
      relays_.emplace_back([this, c, s] { relay(s, c); });
    }
  }
  void relay(int from, int to) {
    char buf[16384];
    for (;;) {
      ssize_t n = ::recv(from, buf, sizeof buf, 0);
      if (n <= 0) break;
      bytes_ += static_cast<std::uint64_t>(n);
      if (::send(to, buf, static_cast<std::size_t>(n), MSG_NOSIGNAL) != n) break;
    }
    ::shutdown(to, SHUT_WR);
    ::shutdown(from, SHUT_RD);
  }
  std::uint16_t port_;
  int fd_ = -1;
  std::atomic<std::uint64_t> bytes_{0};
  std::thread accept_;
  std::vector<std::thread> relays_;
  std::mutex mu_;
  std::vector<int> clients_;
};

void put_raw(const UploaderConfig& cfg, const std::string& key, const std::string& body) {
  if (auto r = test::s3_put(cfg, key, body); !r) {
    std::fprintf(stderr, "%s\n", r.error().message.c_str());
    std::exit(1);
  }
}

// A campaign with `n` threshold triggers on imu/speed.
nlohmann::json big_doc(std::uint64_t version, WallTime now, int n) {
  auto d = test::campaign_doc("fleet", version, now);
  auto& trig = d["content"]["triggers"];
  trig = nlohmann::json::array();
  for (int i = 0; i < n; ++i) {
    trig.push_back({{"name", "t" + std::to_string(i)}, {"type", "threshold"}, {"stream", "imu"},
                    {"channel", "speed"}, {"above", 3 + i}, {"cooldown", "5s"},
                    {"capture", {{"streams", {"imu"}}, {"pre", 2}, {"post", 2}}}});
  }
  return d;
}

double updates(Pipeline& p) { return p.metrics().sum("fleetpipe_campaign_updates_total"); }

}  // namespace

int main() {
  auto env = test::load_s3_env();
  static std::mt19937_64 rng{std::random_device{}()};
  const std::string prefix = "bc-" + std::to_string(rng() % 1000000000);
  const std::string bucket = "fleetpipe-bench-campaign";
  UploaderConfig ucfg = test::s3_uploader_config(env, bucket, prefix);
  {
    // The bucket (idempotent create through the bucket tool used by the tests).
    std::string cmd = "/usr/bin/python3 " FLEETPIPE_SOURCE_DIR "/tests/python/s3_bucket_tool.py make " + bucket;
    if (std::system(cmd.c_str()) != 0) return 1;
  }
  const auto port = static_cast<std::uint16_t>(std::stoi(env.endpoint_https.substr(env.endpoint_https.rfind(':') + 1)));
  CountingProxy proxy(port);

  FakeClock clock{std::chrono::system_clock::now()};
  StderrLogSink log{LogLevel::error};
  Port p;
  p.clock = &clock;
  p.log = &log;
  const std::string dir = "/tmp/fleetpipe-bench-campaign-" + std::to_string(::getpid());
  auto config = [&] {
    auto d = test::campaign_device("bench-cart");
    Config c;
    c.device_id = d.device_id;
    c.labels = d.labels;
    c.streams = d.streams;
    c.triggers = d.local_triggers;
    c.buffer.path = dir;
    c.buffer.durability = Durability::none;
    c.uploader = ucfg;
    c.uploader.connect_address = "127.0.0.2";  // through the proxy
    c.pipeline.heartbeat_interval_s = 0;        // campaign traffic only
    c.campaigns.enabled = true;
    c.campaigns.trusted_keys = {test::test_key(0).trusted};
    return c;
  };
  const std::string key = campaign_object_key(prefix, "fleet");
  put_raw(ucfg, key, test::signed_envelope(big_doc(1, clock.wall(), 32)));

  // Drives one fetch to its end; returns the longest poll() meanwhile (µs).
  auto one_fetch = [&](Pipeline& pl) {
    clock.set_monotonic(clock.monotonic() + 11min);  // wall time stays (the server checks it)
    const double before = updates(pl);
    double max_us = 0;
    const auto deadline = Steady::now() + 30s;
    int after = 20;  // polls after the reply: the trigger switch comes at the next clean point
    while ((updates(pl) == before || after-- > 0) && Steady::now() < deadline) {
      auto t = Steady::now();
      pl.poll(std::chrono::microseconds(500));
      const double us = std::chrono::duration<double, std::micro>(Steady::now() - t).count();
      if (std::getenv("BENCH_CAMPAIGN_TRACE") && us > 1000) {
        const PollProfile& pp = pl.last_poll();
        auto u = [](std::chrono::nanoseconds d) { return d.count() / 1000.0; };
        std::fprintf(stderr,
                     "poll %.0f us (%s the reply): gauges+campaign %.0f, uploader_io %.0f us in "
                     "%u handlers, handshakes so far %.0f\n",
                     us, updates(pl) == before ? "before" : "after", u(pp.gauges), u(pp.uploader_io),
                     pp.io_handlers, pl.metrics().sum("fleetpipe_uploader_tls_handshakes_total"));
      }
      max_us = std::max(max_us, us);
      std::this_thread::sleep_for(200us);
    }
    return max_us;
  };

  // Accept v1 once (persisted), then: the longest poll while v2 is fetched, verified, applied,
  // and while it stays unchanged (the same-run baseline).
  double apply_max = 0, unchanged_max = 0, kept_alive_per_poll = 0, resumed = 0;
  std::uint64_t running_bytes = 0;
  {
    auto pl = Pipeline::create(config(), p);
    if (!pl) return std::fprintf(stderr, "%s\n", pl.error().message.c_str()), 1;
    one_fetch(**pl);
    put_raw(ucfg, key, test::signed_envelope(big_doc(2, clock.wall(), 32)));
    // As on a running device, half of these fetches come after the server closed the idle
    // connection: they reconnect (resuming the TLS session) inside the measured polls.
    for (int i = 0; i < 6; ++i) {
      if (i > 0) put_raw(ucfg, key, test::signed_envelope(big_doc(3 + i, clock.wall(), 32)));
      if (i % 2 == 1) {
        proxy.drop_connections();
        std::this_thread::sleep_for(20ms);
      }
      apply_max = std::max(apply_max, one_fetch(**pl));
    }
    const std::uint64_t b0 = proxy.bytes();
    for (int i = 0; i < 5; ++i) unchanged_max = std::max(unchanged_max, one_fetch(**pl));
    kept_alive_per_poll = double(proxy.bytes() - b0) / 5;
    // The running device: the server closed the idle connection before each poll (10 idle
    // minutes), so each poll reconnects, resuming the TLS session of the one before.
    for (int i = 0; i < 5; ++i) {
      proxy.drop_connections();
      std::this_thread::sleep_for(20ms);
      const std::uint64_t c0 = proxy.bytes();
      one_fetch(**pl);
      std::this_thread::sleep_for(20ms);
      running_bytes += proxy.bytes() - c0;
    }
    resumed = (*pl)->metrics().value("fleetpipe_uploader_tls_handshakes_total", {{"resumed", "true"}});
    if ((*pl)->metrics().value("fleetpipe_campaign_version", {}) < 2) {
      std::fprintf(stderr, "campaign not applied\n");
      return 1;
    }
  }
  {
    // Where the apply time goes, outside the pipeline (printed, not a figure).
    const std::string env3 = test::signed_envelope(big_doc(9, clock.wall(), 32));
    auto cfg = config();
    auto dev = campaign_device_of(cfg, cfg.labels, cfg.campaigns.limits);
    auto t0 = Steady::now();
    auto opened = open_campaign_envelope(env3, cfg.campaigns.trusted_keys);
    auto t1 = Steady::now();
    auto app = resolve_campaign(opened->document, dev);
    auto t2 = Steady::now();
    std::fprintf(stderr, "open+verify %.0f us, resolve %.0f us (%zu triggers)\n",
                 std::chrono::duration<double, std::micro>(t1 - t0).count(),
                 std::chrono::duration<double, std::micro>(t2 - t1).count(), app->triggers.size());
  }
  // Unchanged campaign, each poll on a fresh connection: a restarted pipeline resumes its ETag.
  const int polls = 5;
  std::uint64_t bytes = 0;
  for (int i = 0; i < polls; ++i) {
    auto pl = Pipeline::create(config(), p);
    if (!pl) return 1;
    const std::uint64_t b0 = proxy.bytes();
    one_fetch(**pl);
    if ((*pl)->metrics().value("fleetpipe_campaign_updates_total", {{"result", "unchanged"}}) != 1) {
      std::fprintf(stderr, "expected a 304\n");
      return 1;
    }
    pl->reset();
    std::this_thread::sleep_for(20ms);  // the proxy sees the close
    bytes += proxy.bytes() - b0;
  }
  const double per_poll = double(bytes) / polls;
  const double running_per_poll = double(running_bytes) / 5;
  const double per_day = running_per_poll * 86400.0 / 600.0;
  bench::Report r("campaign");
  r.add("campaign_poll_bytes_per_day", per_day, "bytes",
        "one 304 poll of a running device after the server closed its idle connection = " +
            std::to_string(static_cast<long>(running_per_poll)) +
            " bytes both ways (TLS session resumed: " + std::to_string(static_cast<long>(resumed)) +
            " of 5), x 144 polls/day (10 min); first poll of a restarted pipeline (full handshake) " +
            std::to_string(static_cast<long>(per_poll)) + " bytes; on a kept-alive connection " +
            std::to_string(static_cast<long>(kept_alive_per_poll)) + " bytes/poll",
        "<= 51200");
  r.add("campaign_apply_max_poll_us", apply_max, "us",
        "longest poll() while the campaign is unchanged (304) = " +
            std::to_string(static_cast<long>(unchanged_max)) +
            " us, same run; 6 new versions, 3 of them after the server closed the idle "
            "connection (reconnect with a resumed TLS session inside the measured polls)",
        "<= 1000");
  std::string rm = "rm -rf " + dir;
  (void)!std::system(rm.c_str());
  return r.write() ? 0 : 1;
}
