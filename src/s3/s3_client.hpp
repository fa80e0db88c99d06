// Internal: a minimal asynchronous S3 client on Boost.Beast + OpenSSL.
//
// One request at a time per client, over one kept-alive connection (HTTPS, or plain HTTP when
// configured). Request bodies are pulled from a reader in small chunks and written through the
// shared byte token bucket, so memory stays at one chunk whatever the object size. Responses
// are small XML documents (bodies above 4 MiB are refused). Name resolution is synchronous
// (Asio's async resolver would start a hidden thread); with an IP endpoint or `connect_address`
// it does not block.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <boost/asio/io_context.hpp>

#include "s3/token_bucket.hpp"
#include "fleetpipe/port.hpp"
#include "fleetpipe/sigv4.hpp"
#include "fleetpipe/uploader.hpp"

namespace fleetpipe::detail {

/// Where requests go, derived from UploaderConfig.
struct S3Endpoint {
  bool https = true;
  std::string host;          ///< endpoint host, no port
  std::uint16_t port = 443;
  std::string connect_host;  ///< what to connect to (connect_address or host)
  std::string bucket;
  bool virtual_host = false;

  /// Host header / SNI / certificate name: "<bucket>.<host>" (virtual) or "<host>", plus
  /// ":<port>" in the Host header when the port is not the scheme's default.
  std::string host_header() const;
  std::string tls_name() const;
  /// The path as sent (encoded once): "/bucket/key" (path style) or "/key".
  std::string path_for(std::string_view key) const;
  std::string raw_path_for(std::string_view key) const;  ///< unencoded, for the signer
};

/// Errors: invalid_config (bad endpoint URL), insecure_refused (http:// without
/// allow_insecure_http).
Result<S3Endpoint> parse_endpoint(const UploaderConfig& config);

struct S3Response {
  unsigned status = 0;
  HeaderList headers;
  std::string body;
  /// Value of the first header `name` (case-insensitive), "" when absent.
  std::string header(std::string_view name) const;
};

/// Retry classes (docs/uploader.md "Retries"). Metric label = class_name().
enum class FailureClass : std::uint8_t {
  network,       ///< connect/reset/short read: retry with backoff
  timeout,       ///< inactivity timeout: retry with backoff
  tls,           ///< handshake / certificate: permanent for this config
  throttled,     ///< 503 SlowDown, 429: retry with backoff
  server_error,  ///< other 5xx: retry with backoff
  clock_skew,    ///< RequestTimeTooSkewed: correct the offset, retry at once
  auth,          ///< 401/403, InvalidAccessKeyId, SignatureDoesNotMatch, AccessDenied: permanent
  credentials_expired,  ///< ExpiredToken: retry (the host may rotate)
  permanent,     ///< other 4xx (NoSuchBucket, InvalidBucketName, ...): permanent
  upload_gone,   ///< NoSuchUpload / InvalidPart: restart the multipart upload
  bad_digest,    ///< BadDigest, RequestTimeout, ETag mismatch: retry
  cancelled,     ///< aborted by pause/shutdown: not an error
};

const char* class_name(FailureClass c) noexcept;
bool is_retryable(FailureClass c) noexcept;
errc errc_of(FailureClass c) noexcept;

struct S3Failure {
  FailureClass cls = FailureClass::network;
  unsigned status = 0;       ///< HTTP status when there was a response
  std::string s3_code;       ///< <Code> of the error document
  std::string message;       ///< for people; never holds credentials
  std::optional<WallTime> server_time;  ///< from the Date header (clock skew correction)
};

/// Classifies a non-2xx response (or a 200 carrying an <Error> document).
S3Failure classify_response(const S3Response& r);
/// True when `r` is a 2xx without an <Error> document in the body.
bool response_ok(const S3Response& r);

/// Reads body bytes [offset, offset+n) into out; returns the count (must be n until the end).
using BodyReader = std::function<Result<std::size_t>(std::uint64_t offset, char* out, std::size_t n)>;

struct S3Request {
  std::string method;
  std::string key;           ///< object key; "" addresses the bucket
  std::vector<std::pair<std::string, std::string>> query;  ///< decoded
  HeaderList headers;        ///< e.g. content-md5, content-type, x-amz-meta-*
  std::uint64_t body_size = 0;
  std::string body_inline;   ///< used when `reader` is empty (body_size = its size)
  BodyReader reader;
  std::string payload_sha256;  ///< hex or "UNSIGNED-PAYLOAD"; "" = sha256 of body_inline
};

struct S3Outcome {
  bool ok = false;
  S3Response response;       ///< when a response arrived
  S3Failure failure;         ///< when !ok
};

class S3Client {
 public:
  struct Hooks {
    std::function<Result<Credentials>()> credentials;
    std::function<WallTime()> wall;       ///< signing time (already clock-corrected)
    std::function<MonoTime()> mono;       ///< token bucket time
    TokenBucket* bucket = nullptr;        ///< shaping; null = unlimited
    std::function<void(std::uint64_t)> on_bytes_sent;
    std::function<void(bool resumed)> on_tls_handshake;  ///< each completed TLS handshake
  };
  using Handler = std::function<void(S3Outcome)>;

  /// Errors: invalid_config / insecure_refused (endpoint), tls_error (CA file unloadable).
  static Result<std::unique_ptr<S3Client>> create(boost::asio::io_context& ioc,
                                                  const UploaderConfig& config, Hooks hooks);
  ~S3Client();

  /// Sends one request; `done` runs on the io_context exactly once (unless cancel() comes
  /// first, after which it never runs). Precondition: !busy().
  void async_send(S3Request req, Handler done);
  /// Aborts the request in flight (its handler is dropped) and closes the connection.
  void cancel();
  bool busy() const;
  const S3Endpoint& endpoint() const;

  struct Core;

 private:
  explicit S3Client(std::shared_ptr<Core> core) : core_(std::move(core)) {}
  std::shared_ptr<Core> core_;
};

// ---- minimal XML extraction (S3 replies are flat and machine-made) -------------------------

/// Text of the first <tag>…</tag> in `xml`, entity-decoded; nullopt when absent.
std::optional<std::string> xml_text(std::string_view xml, std::string_view tag);
/// The inner text of every <tag>…</tag> block, raw.
std::vector<std::string_view> xml_blocks(std::string_view xml, std::string_view tag);
/// &amp; &lt; &gt; &quot; &apos; and numeric references.
std::string xml_unescape(std::string_view s);
std::string xml_escape(std::string_view s);

}  // namespace fleetpipe::detail
