// Failures: what a failed object means — give the batch back and back off, or park its records.
//
// The one place that decides whether a failure is the records' own fault (parked, with the
// S3 error code as the reason) or the uploader's (the records go back to the buffer and the
// uploader backs off). Destination and credentials faults are the uploader's: the records stay
// queued, untouched, and the next batch re-probes after a backoff that doubles up to
// fault_max_delay_s; the first success clears the fault. Request-level retries happen before
// this, in Engine::send.
#include <algorithm>
#include <boost/asio/post.hpp>
#include <cmath>
#include <set>

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
  backoff_until_ = std::max(backoff_until_, port_.clock->monotonic() +
                   std::chrono::nanoseconds(static_cast<std::int64_t>(cfg_.retry_max_delay_s * 1e9)));
}

// A record of the object could not be read back from the buffer: retrying cannot help.
void Engine::object_unreadable(ObjectPlan& p, const Error& e) {
  detail::S3Failure f;
  f.cls = FailureClass::permanent;
  f.s3_code = "unreadable_record";
  f.message = e.message;
  object_failed_permanently(p, f);
}

bool is_destination_fault(const detail::S3Failure& f) {
  static const std::set<std::string> codes = {
      "NoSuchBucket",         "AccessDenied",          "AllAccessDisabled", "AccountProblem",
      "InvalidAccessKeyId",   "SignatureDoesNotMatch", "ExpiredToken",      "TokenRefreshRequired",
      "InvalidToken",         "InvalidBucketName",     "PermanentRedirect", "AuthorizationHeaderMalformed",
      "InvalidBucketState",   "NotSignedUp"};
  return f.cls == FailureClass::auth || f.cls == FailureClass::credentials_expired ||
         codes.count(f.s3_code) > 0;
}

void Engine::note_destination_fault(const detail::S3Failure& f) {
  std::string code = f.s3_code.empty() ? detail::class_name(f.cls) : f.s3_code;
  ++fault_probes_;
  metrics_->counter("fleetpipe_uploader_destination_faults_total",
                    "Requests refused for a destination or credentials fault (records kept queued), by code",
                    {{"code", code}}).inc();
  destination_fault_gauge_->set(1);
  const double base = std::max(cfg_.retry_max_delay_s, 0.001);
  double cap = std::min(cfg_.fault_max_delay_s, base * std::pow(2.0, std::min<double>(fault_probes_ - 1, 40)));
  double delay = std::uniform_real_distribution<double>(cap / 2, cap)(rng_);
  bool changed = code != fault_code_;
  fault_code_ = code;
  with_status([&](UploaderStatus& s) {
    s.destination_fault = code;
    s.destination_fault_probes = fault_probes_;
  });
  std::string msg = "destination fault " + code + " (" + f.message + "): records stay queued; probe " +
                    std::to_string(fault_probes_) + ", next in " + std::to_string(delay) + " s";
  set_last_error(msg);
  log(changed ? LogLevel::error : LogLevel::warning, msg);
  backoff_until_ = std::max(backoff_until_, port_.clock->monotonic() +
                                                std::chrono::nanoseconds(static_cast<std::int64_t>(delay * 1e9)));
}

void Engine::clear_destination_fault() {
  if (fault_probes_ == 0) return;
  log(LogLevel::warning, "destination fault " + fault_code_ + " cleared after " + std::to_string(fault_probes_) +
                             " probes; uploads resume");
  fault_probes_ = 0;
  fault_code_.clear();
  destination_fault_gauge_->set(0);
  with_status([](UploaderStatus& s) {
    s.destination_fault.clear();
    s.destination_fault_probes = 0;
  });
}

void Engine::handle_object_failure(ObjectPlan& p, const detail::S3Failure& f) {
  if (is_destination_fault(f)) {
    new_generation();  // sibling parts of a multipart upload stop here
    drop_batch(false);
    return note_destination_fault(f);
  }
  if (f.cls == FailureClass::tls) return batch_failed(f, false);
  if (detail::is_retryable(f.cls)) return batch_failed(f, true);
  object_failed_permanently(p, f);
}

}  // namespace fleetpipe::uploader_internal
