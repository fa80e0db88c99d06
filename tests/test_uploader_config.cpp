// The "uploader" config section (strict JSON, every key) and the credential sources.
#include "fleetpipe/uploader.hpp"

#include <catch2/catch.hpp>
#include <cstdlib>
#include <fstream>

#include "s3/credentials.hpp"
#include "fleetpipe/config.hpp"
#include "support/test_paths.hpp"

using namespace fleetpipe;

namespace {

Result<Config> parse_uploader(const std::string& section) {
  return parse_config(R"({"device_id": "d1", "uploader": )" + section + "}");
}

std::string error_of(const std::string& section) {
  auto r = parse_uploader(section);
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().is(errc::invalid_config));
  return r.error().message;
}

struct EnvGuard {
  std::vector<std::pair<std::string, std::optional<std::string>>> saved;
  void set(const char* k, const char* v) {
    const char* old = std::getenv(k);
    saved.emplace_back(k, old ? std::optional<std::string>(old) : std::nullopt);
    if (v) setenv(k, v, 1);
    else unsetenv(k);
  }
  ~EnvGuard() {
    for (auto it = saved.rbegin(); it != saved.rend(); ++it) {
      if (it->second) setenv(it->first.c_str(), it->second->c_str(), 1);
      else unsetenv(it->first.c_str());
    }
  }
};

}  // namespace

TEST_CASE("defaults when the uploader section is absent", "[uploader_config]") {
  auto r = parse_config(R"({"device_id": "d1"})");
  REQUIRE(r.ok());
  const UploaderConfig& c = r->uploader;
  CHECK(c.enabled);
  CHECK(c.region == "us-east-1");
  CHECK_FALSE(c.virtual_host_style);
  CHECK(c.tls_verify);
  CHECK(c.part_bytes == 8ull << 20);
  CHECK(c.multipart_threshold_bytes == 16ull << 20);
  CHECK(c.bytes_per_second == 0);
  CHECK(c.key_template ==
        "{prefix}/stream={stream}/date={YYYY-MM-DD}/device={device}/{start_time}-{seq}.{ext}");
  CHECK(c.credentials.source == CredentialsSource::auto_detect);
}

TEST_CASE("the example uploader config parses with every key", "[uploader_config]") {
  auto r = load_config_file(FLEETPIPE_SOURCE_DIR "/examples/config/uploader.json");
  REQUIRE(r.ok());
  const UploaderConfig& c = r->uploader;
  CHECK(c.bucket == "fleet-data-eu");
  CHECK(c.virtual_host_style);
  CHECK(c.connect_timeout_s == 10);
  CHECK(c.credentials.profile == "fleet-uploader");
  CHECK(c.content_md5);
  CHECK(c.target_object_bytes == 8ull << 20);
  CHECK(c.max_object_age_s == 60);
  CHECK(c.abandon_multipart_after_s == 7 * 86400);
  CHECK(c.retry_base_delay_s == Approx(0.2));
  CHECK(c.bytes_per_second == 500000);
  CHECK(c.burst_bytes == 64 * 1024);
  CHECK_FALSE(c.pause_when_metered);
  CHECK(c.metered_bytes_per_second == 50000);
  REQUIRE(c.schedule.windows.size() == 2);
  CHECK(c.schedule.windows[0].start_minute == 60);
  CHECK(c.schedule.windows[0].end_minute == 300);
  CHECK(c.schedule.windows[0].bytes_per_second == 5000000);
  CHECK(c.schedule.windows[1].pause);
  CHECK(c.schedule.utc_offset_minutes == 60);
}

TEST_CASE("content_md5 can be turned off", "[uploader_config]") {
  auto r = parse_uploader(R"({"unsigned_payload": true, "content_md5": false})");
  REQUIRE(r.ok());
  CHECK_FALSE(r->uploader.content_md5);
  CHECK(r->uploader.unsigned_payload);
  CHECK(error_of(R"({"content_md5": "no"})").rfind("/uploader/content_md5:", 0) == 0);
}

TEST_CASE("out-of-range values name the key and the value", "[uploader_config]") {
  CHECK(error_of(R"({"bandwidth": {"bytes_per_second": -5}})") ==
        "/uploader/bandwidth/bytes_per_second: must be > 0, got -5");
  CHECK(error_of(R"({"objects": {"part_size": "4MiB"}})").rfind("/uploader/objects/part_size:", 0) == 0);
  CHECK(error_of(R"({"objects": {"key_template": "{prefix}/{stream}.bin"}})") ==
        "/uploader/objects/key_template: must contain {seq} (keys must be unique and deterministic)");
  CHECK(error_of(R"({"objects": {"key_template": "{prefix}/{sequence}-{seq}"}})") ==
        "/uploader/objects/key_template: unknown placeholder {sequence}");
  CHECK(error_of(R"({"schedule": {"windows": [{"start": "1:00"}]}})") ==
        "/uploader/schedule/windows/0/start: must be \"HH:MM\" (00:00 to 24:00), got \"1:00\"");
  CHECK(error_of(R"({"addressing": "dns"})").rfind("/uploader/addressing:", 0) == 0);
  CHECK(error_of(R"({"credentials": {"access_key_id": "AK"}})").rfind(
            "/uploader/credentials/secret_access_key:", 0) == 0);
  CHECK(error_of(R"({"retry": {"base_delay": "10s", "max_delay": "1s"}})") ==
        "/uploader/retry/max_delay: must be >= base_delay");
  CHECK(error_of(R"({"bucket": "b1"})").rfind("/uploader/bucket:", 0) == 0);
}

TEST_CASE("unknown keys are rejected, also in sub-objects", "[uploader_config]") {
  CHECK(error_of(R"({"endpont": "https://x"})").rfind("/uploader/endpont:", 0) == 0);
  CHECK(error_of(R"({"tls": {"verfy": false}})").rfind("/uploader/tls/verfy:", 0) == 0);
}

TEST_CASE("credentials come from the environment", "[uploader_config][credentials]") {
  EnvGuard env;
  env.set("AWS_ACCESS_KEY_ID", "AKIAENV");
  env.set("AWS_SECRET_ACCESS_KEY", "envsecret");
  env.set("AWS_SESSION_TOKEN", "tok");
  UploaderCredentialsConfig c;
  c.source = CredentialsSource::environment;
  auto r = detail::CredentialResolver(c, nullptr).get();
  REQUIRE(r.ok());
  CHECK(r->access_key_id == "AKIAENV");
  CHECK(r->session_token == "tok");
  env.set("AWS_SECRET_ACCESS_KEY", nullptr);
  auto missing = detail::CredentialResolver(c, nullptr).get();
  REQUIRE_FALSE(missing.ok());
  CHECK(missing.error().is(errc::auth_error));
}

TEST_CASE("credentials come from a shared-credentials-file profile", "[uploader_config][credentials]") {
  auto dir = test::scratch_dir("creds");
  auto path = (dir / "credentials").string();
  std::ofstream(path) << "[default]\naws_access_key_id = AKDEF\naws_secret_access_key = s1\n\n"
                         "# comment\n[fleet]\naws_access_key_id=AKFLEET\naws_secret_access_key= s2 \n"
                         "aws_session_token = t2\n";
  UploaderCredentialsConfig c;
  c.source = CredentialsSource::profile;
  c.shared_credentials_file = path;
  c.profile = "fleet";
  auto r = detail::CredentialResolver(c, nullptr).get();
  REQUIRE(r.ok());
  CHECK(r->access_key_id == "AKFLEET");
  CHECK(r->secret_access_key == "s2");
  CHECK(r->session_token == "t2");
  c.profile = "nope";
  auto e = detail::CredentialResolver(c, nullptr).get();
  REQUIRE_FALSE(e.ok());
  CHECK(e.error().message.find("[nope]") != std::string::npos);
  CHECK(e.error().message.find("s1") == std::string::npos);
}

TEST_CASE("a host callback supplies (rotating) credentials and wins in auto mode",
          "[uploader_config][credentials]") {
  struct Rotating : CredentialsProvider {
    int n = 0;
    Result<Credentials> get() override { return Credentials{"AK" + std::to_string(++n), "sec", ""}; }
  } host;
  UploaderCredentialsConfig c;
  c.access_key_id = "AKSTATIC";
  c.secret_access_key = "x";
  detail::CredentialResolver res(c, &host);
  CHECK(res.get()->access_key_id == "AK1");
  CHECK(res.get()->access_key_id == "AK2");
  detail::CredentialResolver static_only(c, nullptr);
  CHECK(static_only.get()->access_key_id == "AKSTATIC");
}
