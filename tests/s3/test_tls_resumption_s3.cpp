// TLS session resumption in the S3 client (src/s3/s3_client.cpp) against the real server: after
// the connection closes (as an idle server closes it between two heartbeats), the next request
// resumes the earlier session instead of a full handshake (no certificate chain on the wire).
#include <catch2/catch.hpp>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include <boost/asio/io_context.hpp>

#include "fleetpipe/metrics.hpp"
#include "fleetpipe/uploader.hpp"
#include "s3/credentials.hpp"
#include "s3/s3_client.hpp"
#include "support/readback.hpp"
#include "support/s3_env.hpp"

using namespace fleetpipe;

namespace {

struct Client {
  boost::asio::io_context ioc;
  detail::CredentialResolver creds;
  std::vector<bool> handshakes;  // resumed?
  std::unique_ptr<detail::S3Client> client;

  explicit Client(const UploaderConfig& cfg) : creds(cfg.credentials, nullptr) {
    detail::S3Client::Hooks hooks;
    hooks.credentials = [this] { return creds.get(); };
    hooks.wall = [] { return std::chrono::system_clock::now(); };
    hooks.mono = [] { return std::chrono::steady_clock::now(); };
    hooks.on_tls_handshake = [this](bool resumed) { handshakes.push_back(resumed); };
    auto c = detail::S3Client::create(ioc, cfg, std::move(hooks));
    REQUIRE(c);
    client = std::move(*c);
  }

  detail::S3Outcome put(const std::string& key, const std::string& body) {
    detail::S3Request req;
    req.method = "PUT";
    req.key = key;
    req.body_inline = body;
    req.body_size = body.size();
    std::optional<detail::S3Outcome> out;
    client->async_send(std::move(req), [&](detail::S3Outcome o) { out = std::move(o); });
    while (!out && ioc.run_one() > 0) {
    }
    REQUIRE(out);
    return std::move(*out);
  }
};

}  // namespace

TEST_CASE("a reconnect resumes the earlier TLS session: no second full handshake", "[s3][tls]") {
  auto env = test::load_s3_env();
  const std::string bucket = "fp-tls-resume-" + std::to_string(std::random_device{}() % 1000000000u);
  test::readback(env, "mkbucket " + bucket);
  auto cfg = test::s3_uploader_config(env, bucket, "resume");
  Client c(cfg);

  REQUIRE(c.put("resume/a.txt", "first").ok);
  REQUIRE(c.handshakes.size() == 1);
  CHECK_FALSE(c.handshakes[0]);

  for (int i = 0; i < 3; ++i) {
    c.client->cancel();  // closes the connection, as an idle server does
    auto o = c.put("resume/b" + std::to_string(i) + ".txt", "again");
    INFO(o.failure.message);
    REQUIRE(o.ok);
  }
  REQUIRE(c.handshakes.size() == 4);
  CHECK(c.handshakes[1]);
  CHECK(c.handshakes[2]);
  CHECK(c.handshakes[3]);
}
