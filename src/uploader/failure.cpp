// Failures: what a failed object means — give the batch back and back off, or park its records.
//
// The one place that decides whether a failure is the records' own fault (parked, with the
// S3 error code as the reason) or the uploader's (the records go back to the buffer and the
// uploader backs off). Request-level retries happen before this, in Engine::send.
#include <boost/asio/post.hpp>

#include "uploader/engine.hpp"

namespace fleetpipe::uploader_internal {

void Engine::object_failed_permanently(ObjectPlan& p, const detail::S3Failure& f) {
  new_generation();  // sibling parts of a multipart upload stop here
  Batch& b = *batch_;
  p.failed = true;
  uploads_failed_->inc();
  if (p.size >= cfg_.multipart_threshold_bytes) current_upload_id_.clear();  // parked: its state ages out
  std::string reason = f.s3_code.empty() ? detail::class_name(f.cls) : f.s3_code;
  auto ids = p.ids();
  auto r = buffer_.park(ids, reason);
  metrics_->counter("fleetpipe_uploader_records_parked_total",
                    "Records parked after a permanent upload error, by reason",
                    {{"reason", reason}}).inc(ids.size());
  with_status([&](UploaderStatus& s) { s.records_parked += ids.size(); });
  std::string msg = "permanent error uploading " + p.key + ": " + f.message + "; " +
                    std::to_string(ids.size()) + " records parked (reason " + reason + ")";
  if (!r) msg += "; park failed: " + r.error().message;
  set_last_error(msg);
  log(LogLevel::error, msg);
  b.next++;
  poke_next();
}

// Retries ran out or a non-record-specific failure (TLS): give the records back, back off.
void Engine::batch_failed(const detail::S3Failure& f, bool nack) {
  std::string msg = "upload failed (" + std::string(detail::class_name(f.cls)) + "): " + f.message +
                    (nack ? "; records returned to the buffer" : "");
  set_last_error(msg);
  log(LogLevel::error, msg);
  drop_batch(nack);
  backoff_until_ = port_.clock->monotonic() +
                   std::chrono::nanoseconds(static_cast<std::int64_t>(cfg_.retry_max_delay_s * 1e9));
}

// A record of the object could not be read back from the buffer: retrying cannot help.
void Engine::object_unreadable(ObjectPlan& p, const Error& e) {
  detail::S3Failure f;
  f.cls = FailureClass::permanent;
  f.s3_code = "unreadable_record";
  f.message = e.message;
  object_failed_permanently(p, f);
}

void Engine::handle_object_failure(ObjectPlan& p, const detail::S3Failure& f) {
  if (f.cls == FailureClass::tls) return batch_failed(f, false);
  if (detail::is_retryable(f.cls)) return batch_failed(f, true);
  object_failed_permanently(p, f);
}

}  // namespace fleetpipe::uploader_internal
