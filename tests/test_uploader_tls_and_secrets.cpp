// The uploader's security promises: TLS verification on by default; expired, self-signed and wrong-host
// certificates rejected with clear errors; plain HTTP refused without allow_insecure_http;
// secrets never in logs, errors or metrics; object keys sanitised; a warning for a
// world-readable credentials file. The HTTPS peer is tests/security/tls_server.py on loopback
// (certificates made with Python's `cryptography`, incl. one that expired in 2020).
#include "fleetpipe/uploader.hpp"

#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "fleetpipe/buffer.hpp"
#include "fleetpipe/config.hpp"
#include "fleetpipe/metrics.hpp"
#include "support/test_paths.hpp"

using namespace fleetpipe;
using namespace std::chrono_literals;
namespace fs = std::filesystem;

namespace {

const char* kSecret = "SeCrEt/Key+Do-Not-Leak-7f3a9c2e";
const char* kToken = "SessionToken-Do-Not-Leak-0b1d55";

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// tests/security/tls_server.py in one mode; stopped (SIGTERM) at scope exit.
struct TlsServer {
  pid_t pid = -1;
  int port = 0;
  fs::path dir;
  TlsServer(const fs::path& d, const std::string& mode) : dir(d) {
    auto port_file = (d / "port.json").string();
    pid = fork();
    if (pid == 0) {
      execl("/usr/bin/python3", "python3", FLEETPIPE_SOURCE_DIR "/tests/security/tls_server.py",
            "--dir", d.c_str(), "--mode", mode.c_str(), "--port-file", port_file.c_str(),
            "--exit-with-parent", static_cast<char*>(nullptr));
      _exit(127);
    }
    for (int i = 0; i < 300 && !fs::exists(port_file); ++i) std::this_thread::sleep_for(50ms);
    REQUIRE(fs::exists(port_file));
    port = nlohmann::json::parse(slurp(port_file))["port"].get<int>();
  }
  ~TlsServer() {
    if (pid > 0) {
      kill(pid, SIGTERM);
      waitpid(pid, nullptr, 0);
    }
  }
  std::string ca() const { return (dir / "ca.pem").string(); }
  std::string requests() const { return slurp(dir / "requests.log"); }
};

struct LogCapture {
  std::vector<std::string> lines;
  CallbackLogSink sink{[this](LogLevel, std::string_view c, std::string_view m) {
    lines.push_back(std::string(c) + ": " + std::string(m));
  }};
  std::string all() const {
    std::string out;
    for (const auto& l : lines) out += l + "\n";
    return out;
  }
};

UploaderConfig tls_config(const TlsServer& s) {
  UploaderConfig c;
  c.endpoint = "https://localhost:" + std::to_string(s.port);
  c.connect_address = "127.0.0.1";
  c.bucket = "sec";
  c.ca_file = s.ca();
  c.credentials.source = CredentialsSource::static_keys;
  c.credentials.access_key_id = "AKIDSECURITYTEST";
  c.credentials.secret_access_key = kSecret;
  c.credentials.session_token = kToken;
  c.device_id = "dev-sec";
  c.prefix = "fp";
  c.max_object_age_s = 3600;
  c.retry_base_delay_s = 0.02;
  c.retry_max_delay_s = 0.1;
  c.max_attempts = 2;
  c.idle_poll_interval_s = 0.02;
  c.connect_timeout_s = 5;
  c.request_timeout_s = 5;
  return c;
}

RecordMeta meta(std::string stream, std::string event, std::string device = "cart-7") {
  RecordMeta m;
  m.stream = std::move(stream);
  m.event_id = std::move(event);
  m.trigger_ids = {"t"};
  m.priority = 3;
  m.start_ns = 1767225600000000000;
  m.end_ns = m.start_ns + 1000;
  m.content_type = "application/vnd.fleetpipe.event";
  m.metadata = {{"device", std::move(device)}};
  return m;
}

struct Rig {
  MetricsRegistry metrics;
  LogCapture logs;
  Port port;
  std::unique_ptr<Buffer> buffer;
  std::unique_ptr<Uploader> up;
  explicit Rig(const fs::path& dir) {
    port.log = &logs.sink;
    BufferConfig b;
    b.path = (dir / "db").string();
    b.durability = Durability::none;
    b.min_free_bytes = 0;
    b.max_bytes = 64ull << 20;
    auto r = Buffer::open(b, port, metrics);
    REQUIRE(r.ok());
    buffer = std::move(*r);
  }
  void start(const UploaderConfig& c) {
    auto u = Uploader::create(c, *buffer, port, metrics);
    REQUIRE(u.ok());
    up = std::move(*u);
    up->flush();
  }
  bool run_until(const std::function<bool()>& done, std::chrono::seconds limit = 30s) {
    auto end = std::chrono::steady_clock::now() + limit;
    while (std::chrono::steady_clock::now() < end) {
      up->run_for(20ms);
      if (done()) return true;
    }
    return false;
  }
  double tls_failures() const {
    return metrics.value("fleetpipe_uploader_request_failures_total", {{"class", "tls"}});
  }
  double acked() const { return metrics.value("fleetpipe_uploader_records_acked_total"); }
};

std::string url_decode(const std::string& s) {
  std::string out;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size()) {
      out.push_back(static_cast<char>(std::stoi(s.substr(i + 1, 2), nullptr, 16)));
      i += 2;
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

}  // namespace

TEST_CASE("TLS verification is on by default, in the struct and in a parsed config", "[security]") {
  CHECK(UploaderConfig{}.tls_verify);
  auto c = parse_config(R"({"device_id":"d","uploader":{"bucket":"bkt"}})");
  REQUIRE(c.ok());
  CHECK(c->uploader.tls_verify);
}

TEST_CASE("a server with a trusted, valid certificate is accepted (control for the rejections)",
          "[security][tls]") {
  auto dir = test::scratch_dir("sec-valid");
  TlsServer srv(dir, "valid");
  Rig rig(dir);
  REQUIRE(rig.buffer->append(meta("imu", "e1"), "payload").accepted);
  rig.start(tls_config(srv));
  REQUIRE(rig.run_until([&] { return rig.acked() >= 1; }));
  CHECK(rig.tls_failures() == 0);
  CHECK(srv.requests().find("PUT /sec/fp/") != std::string::npos);
}

TEST_CASE("expired, self-signed and wrong-host certificates are rejected with clear errors, "
          "nothing is sent, nothing lost",
          "[security][tls]") {
  struct Case {
    const char* mode;
    const char* why;
  };
  for (Case k : {Case{"expired", "certificate has expired"},
                 Case{"selfsigned", "self-signed certificate"},
                 Case{"wronghost", "hostname mismatch"}}) {
    DYNAMIC_SECTION(k.mode) {
      auto dir = test::scratch_dir(std::string("sec-") + k.mode);
      TlsServer srv(dir, k.mode);
      Rig rig(dir);
      REQUIRE(rig.buffer->append(meta("imu", "e1"), "payload").accepted);
      rig.start(tls_config(srv));
      REQUIRE(rig.run_until([&] { return rig.tls_failures() >= 1; }));
      auto err = rig.up->status().last_error;
      INFO(err);
      CHECK(err.find("TLS handshake") != std::string::npos);
      CHECK(err.find("certificate verification failed") != std::string::npos);
      CHECK(err.find(k.why) != std::string::npos);
      CHECK(rig.acked() == 0);
      CHECK(srv.requests().empty());  // no request ever reached the server
      CHECK(rig.buffer->stats().records == 1);
      CHECK(rig.buffer->stats().parked == 0);
    }
  }
}

TEST_CASE("a connection reset mid-handshake is a network failure, retried at once, not a TLS one",
          "[security][tls]") {
  // A restarting server worker resets the connections it had accepted. Classed as `tls` (a
  // certificate problem, which does not mend by itself) it held uploads back for retry_max_delay.
  auto dir = test::scratch_dir("sec-reset");
  TlsServer srv(dir, "reset2");
  Rig rig(dir);
  REQUIRE(rig.buffer->append(meta("imu", "e1"), "payload").accepted);
  auto c = tls_config(srv);
  c.max_attempts = 4;
  c.retry_max_delay_s = 60;  // a `tls` failure would now wait a minute
  rig.start(c);
  REQUIRE(rig.run_until([&] { return rig.acked() >= 1; }, 20s));
  CHECK(rig.tls_failures() == 0);
  CHECK(rig.metrics.value("fleetpipe_uploader_request_failures_total", {{"class", "network"}}) >= 1);
  CHECK(srv.requests().find("PUT /sec/fp/") != std::string::npos);
}

TEST_CASE("plain http:// is refused unless allow_insecure_http is set", "[security]") {
  auto dir = test::scratch_dir("sec-http");
  Rig rig(dir);
  UploaderConfig c;
  c.endpoint = "http://127.0.0.1:9";
  c.bucket = "bkt";
  auto u = Uploader::create(c, *rig.buffer, rig.port, rig.metrics);
  REQUIRE_FALSE(u.ok());
  CHECK(u.error().is(errc::insecure_refused));
  CHECK(u.error().message.find("allow_insecure_http") != std::string::npos);
  c.allow_insecure_http = true;
  CHECK(Uploader::create(c, *rig.buffer, rig.port, rig.metrics).ok());
  // The same through a whole config file.
  auto cfg = parse_config(R"({"device_id":"d","uploader":{"bucket":"bkt","endpoint":"http://127.0.0.1:9"}})");
  if (cfg.ok()) {
    auto u2 = Uploader::create(cfg->uploader, *rig.buffer, rig.port, rig.metrics);
    REQUIRE_FALSE(u2.ok());
    CHECK(u2.error().is(errc::insecure_refused));
  } else {
    CHECK(cfg.error().message.find("allow_insecure_http") != std::string::npos);
  }
}

TEST_CASE("the secret key and session token never appear in logs, errors, status or metrics",
          "[security][secrets]") {
  std::string everything;
  // 1. An auth failure (403 SignatureDoesNotMatch, as AWS words it), 2. a TLS failure,
  // 3. a success — all with trace logging.
  for (const char* mode : {"deny", "expired", "valid"}) {
    auto dir = test::scratch_dir(std::string("sec-secret-") + mode);
    TlsServer srv(dir, mode);
    Rig rig(dir);
    REQUIRE(rig.buffer->append(meta("imu", "e1"), "payload").accepted);
    rig.start(tls_config(srv));
    bool done = rig.run_until([&] {
      return rig.acked() >= 1 || rig.tls_failures() >= 1 ||
             rig.metrics.value("fleetpipe_uploader_request_failures_total", {{"class", "auth"}}) >= 1;
    });
    REQUIRE(done);
    rig.run_until([] { return false; }, 1s);  // let retries/parking happen and be logged
    everything += rig.logs.all();
    everything += rig.up->status().last_error + "\n";
    everything += rig.metrics.to_prometheus();
    everything += rig.metrics.to_json();
    if (std::string(mode) == "deny") {
      CHECK(rig.metrics.value("fleetpipe_uploader_request_failures_total", {{"class", "auth"}}) >= 1);
      CHECK(rig.up->status().last_error.find("SignatureDoesNotMatch") != std::string::npos);
    }
  }
  // 4. Config errors around the credentials.
  for (const char* bad : {
           R"({"device_id":"d","uploader":{"bucket":"bkt","credentials":{"secret_access_key":"SeCrEt/Key+Do-Not-Leak-7f3a9c2e"}}})",
           R"({"device_id":"d","uploader":{"bucket":"bkt","credentials":{"access_key_id":"A","secret_access_key":"SeCrEt/Key+Do-Not-Leak-7f3a9c2e","session_token":"SessionToken-Do-Not-Leak-0b1d55","bogus":1}}})",
       }) {
    auto c = parse_config(bad);
    REQUIRE_FALSE(c.ok());
    everything += c.error().message + "\n";
  }
  INFO(everything.substr(0, 4000));
  CHECK(everything.find("SignatureDoesNotMatch") != std::string::npos);  // the capture saw real output
  CHECK(everything.find("fleetpipe_uploader_request_failures_total") != std::string::npos);
  CHECK(everything.find(kSecret) == std::string::npos);
  CHECK(everything.find(kToken) == std::string::npos);
}

TEST_CASE("object keys are sanitised: no '..', no control characters, at most 1024 bytes",
          "[security][keys]") {
  auto dir = test::scratch_dir("sec-keys");
  TlsServer srv(dir, "valid");
  Rig rig(dir);
  REQUIRE(rig.buffer->append(meta("../../etc", "..", "a/../../b"), "one").accepted);
  REQUIRE(rig.buffer->append(meta("imu\r\nX-Evil: 1", std::string("ev\x01\x7f\x00id", 7), "d\\..\\x"), "two").accepted);
  REQUIRE(rig.buffer->append(meta(std::string(255, 's'), std::string(5000, 'e'), std::string(900, 'd')), "three").accepted);
  auto c = tls_config(srv);
  c.key_template = "{prefix}/stream={stream}/device={device}/{event_id}/{seq}.{ext}";
  c.target_object_bytes = 1;  // each record its own object
  c.large_record_bytes = 1;
  rig.start(c);
  REQUIRE(rig.run_until([&] { return rig.acked() >= 3; }));
  std::istringstream lines(srv.requests());
  std::string line;
  int puts = 0;
  while (std::getline(lines, line)) {
    if (line.rfind("PUT ", 0) != 0) continue;
    auto path = line.substr(4, line.rfind(" HTTP/") - 4);
    auto q = path.find('?');
    if (q != std::string::npos) path = path.substr(0, q);
    std::string key = url_decode(path.substr(std::string("/sec/").size()));
    INFO(key);
    ++puts;
    CHECK(key.find("..") == std::string::npos);
    CHECK(key.size() <= 1024);
    for (unsigned char ch : key) CHECK((ch >= 0x20 && ch < 0x7f));
    CHECK(key.rfind("fp/", 0) == 0);
  }
  CHECK(puts >= 3);
}

TEST_CASE("a world-readable shared credentials file is warned about (path and mode, no secret)",
          "[security][credentials]") {
  auto dir = test::scratch_dir("sec-creds");
  auto file = dir / "credentials";
  {
    std::ofstream out(file);
    out << "[default]\naws_access_key_id = AKIDFILE\naws_secret_access_key = " << kSecret << "\n";
  }
  UploaderConfig c;
  c.endpoint = "https://127.0.0.1:9";
  c.bucket = "bkt";
  c.credentials.source = CredentialsSource::profile;
  c.credentials.shared_credentials_file = file.string();
  auto warned = [&](mode_t mode) {
    REQUIRE(chmod(file.c_str(), mode) == 0);
    Rig rig(dir / std::to_string(mode));
    auto u = Uploader::create(c, *rig.buffer, rig.port, rig.metrics);
    REQUIRE(u.ok());
    auto all = rig.logs.all();
    CHECK(all.find(kSecret) == std::string::npos);
    return all.find("world-readable") != std::string::npos &&
           all.find(file.string()) != std::string::npos && all.find("0644") != std::string::npos;
  };
  CHECK(warned(0644));
  CHECK_FALSE(warned(0600));
}
