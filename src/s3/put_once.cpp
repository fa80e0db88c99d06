#include "s3/put_once.hpp"

#include <chrono>
#include <optional>

#include <boost/asio/io_context.hpp>

#include "s3/credentials.hpp"
#include "s3/s3_client.hpp"

namespace fleetpipe::detail {

Result<void> put_once(const UploaderConfig& cfg, const std::string& key, const std::string& body,
                      const std::string& content_type) {
  boost::asio::io_context ioc;
  CredentialResolver creds(cfg.credentials, nullptr);
  S3Client::Hooks hooks;
  hooks.credentials = [&creds] { return creds.get(); };
  hooks.wall = [] { return std::chrono::system_clock::now(); };
  hooks.mono = [] { return std::chrono::steady_clock::now(); };
  auto client = S3Client::create(ioc, cfg, std::move(hooks));
  if (!client) return std::move(client).error();
  S3Request req;
  req.method = "PUT";
  req.key = key;
  req.headers = {{"content-type", content_type}};
  req.body_inline = body;
  req.body_size = body.size();
  std::optional<S3Outcome> out;
  (*client)->async_send(std::move(req), [&](S3Outcome o) { out = std::move(o); });
  while (!out && ioc.run_one() > 0) {
  }
  const std::string where = "PUT s3://" + cfg.bucket + "/" + key;
  if (!out) return Error(errc::internal, where + " finished without an outcome");
  if (!out->ok) return Error(errc_of(out->failure.cls), where + ": " + out->failure.message);
  return {};
}

}  // namespace fleetpipe::detail
