// fleetpipe/sigv4.hpp — AWS Signature Version 4 for S3, in request headers.
//
// A pure function over plain std types: no I/O, no clock, no global state, safe from any thread.
// The uploader signs every request with it; hosts may call it directly (e.g. to presign their own
// requests or to cross-check against another SDK), and the Python bindings expose it as
// `fleetpipe.sign_s3_request(...)`.
//
// What is signed (the S3 flavour of SigV4, "AWS4-HMAC-SHA256", header authentication):
//   - the method, the URI path encoded once (S3 does not double-encode; '/' kept), the query
//     string sorted by name with keys and values URI-encoded (a key without '=' signs as "key="),
//   - every header the caller passes plus `host`, `x-amz-date`, `x-amz-content-sha256` and, with
//     temporary credentials, `x-amz-security-token` — names lower-cased, values trimmed and inner
//     runs of spaces collapsed, sorted by name,
//   - the payload: its hex SHA-256, or the literal "UNSIGNED-PAYLOAD" when asked (the body is
//     then protected by TLS and `Content-MD5` only).
// Credentials never appear in the result except as the access key id inside `Credential=`.
#pragma once

#include <chrono>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "fleetpipe/error.hpp"

namespace fleetpipe {

/// Ordered header list (name, value). Names are compared case-insensitively.
using HeaderList = std::vector<std::pair<std::string, std::string>>;

/// Everything needed to sign one request whose URL is already split.
struct SigV4Request {
  std::string method;      ///< "GET", "PUT", ... (upper case as sent)
  std::string host;        ///< Host header value as sent: "bucket.s3.amazonaws.com", "127.0.0.1:9000"
  std::string path;        ///< raw path, not yet encoded ("/bucket/a key+x"); "" means "/"
  /// Decoded query parameters (name, value); a parameter without value has value "".
  std::vector<std::pair<std::string, std::string>> query;
  HeaderList headers;      ///< extra headers to sign (host/x-amz-* are added; don't pass them)
  /// Hex SHA-256 of the body, or "UNSIGNED-PAYLOAD".
  std::string payload_sha256;
};

/// Who signs, where, and when.
struct SigV4Credentials {
  std::string access_key_id;
  std::string secret_access_key;
  std::string session_token;  ///< empty unless temporary credentials
  std::string region;         ///< any string, e.g. "us-east-1", "eu-central-2", "garage"
  std::string service = "s3";
};

/// The outcome of signing. `headers_to_add` are exactly the headers the caller must send in
/// addition to its own (and Host): x-amz-date, x-amz-content-sha256, [x-amz-security-token],
/// authorization — in that order, names lower-case.
struct SigV4Signature {
  HeaderList headers_to_add;
  std::string canonical_request;  ///< for debugging signature mismatches (holds no secret)
  std::string string_to_sign;
  std::string signature;          ///< 64 hex chars
  std::string signed_headers;     ///< "host;range;x-amz-content-sha256;x-amz-date"
};

/// Signs `req` at `amz_date` ("YYYYMMDDTHHMMSSZ"). Errors: invalid_argument (malformed
/// amz_date, empty method/host/access key/secret/region, or a payload hash that is neither 64 hex
/// chars nor "UNSIGNED-PAYLOAD"). Thread-safe, allocation only for the result.
Result<SigV4Signature> sign_v4(const SigV4Request& req, const SigV4Credentials& creds,
                               std::string_view amz_date);

/// Convenience form over a full URL ("https://host[:port]/path?query"; the path and query may
/// be percent-encoded or not — they are decoded once and re-encoded canonically) and a payload
/// held in memory. Returns the headers to add (see SigV4Signature::headers_to_add).
/// `headers` must not contain host / x-amz-date / x-amz-content-sha256 / authorization (a Host
/// header in `headers` is accepted only if it matches the URL's authority).
/// Errors: invalid_argument (as sign_v4, or an unparsable URL).
Result<HeaderList> sign_s3_request(std::string_view method, std::string_view url,
                                   const HeaderList& headers, std::string_view payload,
                                   std::string_view access_key, std::string_view secret_key,
                                   std::string_view region, std::string_view amz_date,
                                   std::string_view session_token = {},
                                   bool unsigned_payload = false);

/// "YYYYMMDDTHHMMSSZ" of a UTC time point.
std::string format_amz_date(std::chrono::system_clock::time_point t);

/// Lower-case hex SHA-256 of `data` (the empty string's is e3b0c442…b855).
std::string sha256_hex(std::string_view data);

/// S3's URI encoding: unreserved characters (A-Z a-z 0-9 - . _ ~) kept, everything else %XX
/// (upper-case hex); '/' kept when `keep_slash`.
std::string uri_encode(std::string_view s, bool keep_slash);

}  // namespace fleetpipe
