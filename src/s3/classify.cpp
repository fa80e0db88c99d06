// Error classification: what a failed S3 response means (retry class, errc), in one place.
//
// The classes and what each one makes the uploader do are in docs/uploader.md "Retries"; the
// retry decision itself is the RetryPolicy's (retry_policy.hpp), the park decision the
// uploader's (src/uploader/failure.cpp).
#include <algorithm>

#include "common/utc_time.hpp"
#include "s3/s3_client.hpp"

namespace fleetpipe::detail {

const char* class_name(FailureClass c) noexcept {
  switch (c) {
    case FailureClass::network: return "network";
    case FailureClass::timeout: return "timeout";
    case FailureClass::tls: return "tls";
    case FailureClass::throttled: return "throttled";
    case FailureClass::server_error: return "server_error";
    case FailureClass::clock_skew: return "clock_skew";
    case FailureClass::auth: return "auth";
    case FailureClass::credentials_expired: return "credentials_expired";
    case FailureClass::permanent: return "permanent";
    case FailureClass::upload_gone: return "upload_gone";
    case FailureClass::bad_digest: return "bad_digest";
    case FailureClass::cancelled: return "cancelled";
  }
  return "unknown";
}

bool is_retryable(FailureClass c) noexcept {
  switch (c) {
    case FailureClass::network:
    case FailureClass::timeout:
    case FailureClass::throttled:
    case FailureClass::server_error:
    case FailureClass::clock_skew:
    case FailureClass::credentials_expired:
    case FailureClass::bad_digest:
    case FailureClass::upload_gone:
      return true;
    default:
      return false;
  }
}

errc errc_of(FailureClass c) noexcept {
  switch (c) {
    case FailureClass::network: return errc::network_error;
    case FailureClass::timeout: return errc::timeout;
    case FailureClass::tls: return errc::tls_error;
    case FailureClass::throttled: return errc::s3_throttled;
    case FailureClass::server_error: return errc::s3_server_error;
    case FailureClass::clock_skew: return errc::s3_clock_skew;
    case FailureClass::auth: return errc::auth_error;
    case FailureClass::credentials_expired: return errc::auth_error;
    case FailureClass::permanent: return errc::s3_permanent;
    case FailureClass::upload_gone: return errc::not_found;
    case FailureClass::bad_digest: return errc::http_error;
    case FailureClass::cancelled: return errc::cancelled;
  }
  return errc::internal;
}

bool response_ok(const S3Response& r) {
  if (r.status < 200 || r.status >= 300) return false;
  // CompleteMultipartUpload (and CopyObject) may answer 200 and put the error in the body.
  auto p = r.body.find_first_not_of(" \t\r\n");
  if (p == std::string::npos) return true;
  std::string_view head(r.body.data() + p, std::min<std::size_t>(r.body.size() - p, 200));
  return head.find("<Error>") == std::string_view::npos;
}

S3Failure classify_response(const S3Response& r) {
  S3Failure f;
  f.status = r.status;
  f.s3_code = xml_text(r.body, "Code").value_or("");
  std::string msg = xml_text(r.body, "Message").value_or("");
  f.message = "HTTP " + std::to_string(r.status) + (f.s3_code.empty() ? "" : " " + f.s3_code) +
              (msg.empty() ? "" : ": " + msg);
  const std::string& c = f.s3_code;
  if (c == "RequestTimeTooSkewed") {
    f.cls = FailureClass::clock_skew;
    f.server_time = parse_http_date(r.header("Date"));
  } else if (r.status == 503 || r.status == 429 || c == "SlowDown" || c == "Throttling") {
    f.cls = FailureClass::throttled;
  } else if (r.status >= 500) {
    f.cls = FailureClass::server_error;
  } else if (c == "ExpiredToken" || c == "TokenRefreshRequired") {
    f.cls = FailureClass::credentials_expired;
  } else if (c == "NoSuchUpload" || c == "InvalidPart" || c == "InvalidPartOrder") {
    f.cls = FailureClass::upload_gone;
  } else if (c == "BadDigest" || c == "InvalidDigest" || c == "XAmzContentSHA256Mismatch" ||
             c == "IncompleteBody" || c == "RequestTimeout" || r.status == 408) {
    f.cls = FailureClass::bad_digest;
  } else if (r.status == 401 || r.status == 403 || c == "InvalidAccessKeyId" ||
             c == "SignatureDoesNotMatch" || c == "AccessDenied") {
    f.cls = FailureClass::auth;
  } else {
    f.cls = FailureClass::permanent;
  }
  return f;
}

}  // namespace fleetpipe::detail
