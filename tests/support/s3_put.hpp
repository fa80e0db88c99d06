// Test helper: one PUT through the SDK's own S3 client, bodies exactly as given (tampered
// campaign envelopes too). Blocks until the request ends.
#pragma once

#include <chrono>
#include <optional>
#include <string>

#include <boost/asio/io_context.hpp>

#include "s3/credentials.hpp"
#include "s3/s3_client.hpp"

namespace fleetpipe::test {

/// Errors: those of the client (the message names the key).
inline Result<void> s3_put(const UploaderConfig& cfg, const std::string& key,
                           const std::string& body) {
  boost::asio::io_context ioc;
  detail::CredentialResolver creds(cfg.credentials, nullptr);
  detail::S3Client::Hooks hooks;
  hooks.credentials = [&creds] { return creds.get(); };
  hooks.wall = [] { return std::chrono::system_clock::now(); };
  hooks.mono = [] { return std::chrono::steady_clock::now(); };
  auto client = detail::S3Client::create(ioc, cfg, std::move(hooks));
  if (!client) return std::move(client).error();
  detail::S3Request req;
  req.method = "PUT";
  req.key = key;
  req.headers = {{"content-type", "application/json"}};
  req.body_inline = body;
  req.body_size = body.size();
  std::optional<detail::S3Outcome> out;
  (*client)->async_send(std::move(req), [&](detail::S3Outcome o) { out = std::move(o); });
  while (!out && ioc.run_one() > 0) {
  }
  if (!out) return Error(errc::internal, "PUT " + key + ": no outcome");
  if (!out->ok) return Error(detail::errc_of(out->failure.cls), "PUT " + key + ": " + out->failure.message);
  return {};
}

}  // namespace fleetpipe::test
