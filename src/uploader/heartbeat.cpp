// Heartbeats: the pipeline's status document, sent through the uploader's own request path.
//
// The pipeline builds the document (it knows the capture, buffer and trigger counters); the
// uploader names it (BucketLayout), decides whether it may go now (network, pauses: a paused
// link carries nothing, heartbeats included) and sends it under the same token bucket, clock
// correction and credentials as every upload, on a connection of its own so a heartbeat never
// waits behind a part, and with one attempt (the next heartbeat is the retry).
#include "uploader/engine.hpp"
#include "fleetpipe/sigv4.hpp"

namespace fleetpipe::uploader_internal {

void Engine::send_heartbeat(std::string_view device, const std::function<Result<std::string>()>& build,
                            std::function<void(const HeartbeatOutcome&)> done) {
  HeartbeatOutcome out;
  if (port_.network->get() == NetworkState::offline) {
    out.kind = HeartbeatOutcome::Kind::skipped_offline;
    return done(out);
  }
  if (shaper_.paused_now()) {
    out.kind = HeartbeatOutcome::Kind::skipped_paused;
    return done(out);
  }
  auto body = build();
  if (!body) {
    out.error = body.error().message;
    return done(out);
  }
  out.time = port_.clock->wall();
  out.key = layout_.heartbeat_key(device, out.time, hb_keys_++);
  if (!hb_client_) {
    auto c = detail::S3Client::create(ioc_, cfg_, client_hooks(false));
    if (!c) {
      out.error = c.error().message;
      return done(out);
    }
    hb_client_ = std::move(*c);
  }
  if (hb_client_->busy()) {
    out.error = "the previous heartbeat is still in flight";
    return done(out);
  }
  S3Request req;
  req.method = "PUT";
  req.key = out.key;
  // No metadata headers: the key names the device and the kind, and every header byte is paid
  // on each heartbeat.
  req.headers = {{"content-type", "application/json"},
                 {"content-md5", detail::base64_encode(detail::md5_raw(*body))}};
  req.body_size = body->size();
  req.body_inline = std::move(*body);
  hb_sender_.send(*hb_client_, std::move(req), weak([out, done = std::move(done)](S3Outcome o) mutable {
    if (o.ok) {
      out.kind = HeartbeatOutcome::Kind::sent;
    } else {
      out.error = std::string(detail::class_name(o.failure.cls)) + ": " + o.failure.message;
    }
    done(out);
  }));
}

}  // namespace fleetpipe::uploader_internal
