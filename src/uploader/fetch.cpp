// Conditional GETs for the pipeline (campaign objects), through the uploader's request path.
//
// Same token bucket, clock correction and credentials as every upload, on a connection of its
// own (a fetch never waits behind a part), one attempt: the next poll interval is the retry.
// 304 and 404 are answers, not failures. Nothing goes while offline or paused.
#include "uploader/engine.hpp"

namespace fleetpipe::uploader_internal {

Result<void> Engine::prepare_fetch() {
  if (fetch_client_) return {};
  auto c = detail::S3Client::create(ioc_, cfg_, client_hooks(false));
  if (!c) return std::move(c).error();
  fetch_client_ = std::move(*c);
  return {};
}

void Engine::fetch_object(std::string key, std::string if_none_match,
                          std::function<void(Result<FetchReply>)> done) {
  if (port_.network->get() == NetworkState::offline) {
    return done(Error(errc::network_error, "offline"));
  }
  if (shaper_.paused_now()) {  // a paused link carries nothing (as for heartbeats)
    return done(Error(errc::paused, "uploads are paused"));
  }
  if (auto r = prepare_fetch(); !r) return done(std::move(r).error());
  if (fetch_client_->busy()) {
    return done(Error(errc::would_block, "the previous fetch is still in flight"));
  }
  S3Request req;
  req.method = "GET";
  req.key = std::move(key);
  if (!if_none_match.empty()) req.headers.emplace_back("if-none-match", std::move(if_none_match));
  hb_sender_.send(*fetch_client_, std::move(req), weak([done = std::move(done)](S3Outcome o) {
    const unsigned status = o.response.status;
    if (o.ok || status == 304 || status == 404) {
      FetchReply r;
      r.status = o.ok ? 200 : static_cast<int>(status);
      r.etag = o.response.header("etag");
      if (o.ok) r.body = std::move(o.response.body);
      return done(std::move(r));
    }
    done(Error(detail::errc_of(o.failure.cls),
               std::string(detail::class_name(o.failure.cls)) + ": " + o.failure.message));
  }));
}

}  // namespace fleetpipe::uploader_internal
