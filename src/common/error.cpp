// Errors: the messages of errc and the Error type every public call returns.
#include "fleetpipe/error.hpp"

namespace fleetpipe {
namespace {

class Category final : public std::error_category {
 public:
  const char* name() const noexcept override { return "fleetpipe"; }
  std::string message(int ev) const override {
    switch (static_cast<errc>(ev)) {
      case errc::invalid_config: return "invalid configuration";
      case errc::invalid_argument: return "invalid argument";
      case errc::io_error: return "I/O error";
      case errc::storage_full: return "storage full";
      case errc::wear_budget_exhausted: return "flash wear budget exhausted";
      case errc::corrupt_database: return "corrupt database";
      case errc::not_found: return "not found";
      case errc::network_error: return "network error";
      case errc::tls_error: return "TLS error";
      case errc::timeout: return "timed out";
      case errc::http_error: return "HTTP protocol error";
      case errc::s3_throttled: return "S3 throttled (SlowDown)";
      case errc::s3_server_error: return "S3 server error";
      case errc::s3_clock_skew: return "S3 request time too skewed";
      case errc::s3_permanent: return "S3 permanent error";
      case errc::auth_error: return "authentication error";
      case errc::paused: return "paused";
      case errc::would_block: return "would block";
      case errc::cancelled: return "cancelled";
      case errc::decode_error: return "decode error";
      case errc::unsupported: return "unsupported";
      case errc::insecure_refused: return "plain HTTP refused (allow_insecure_http is off)";
      case errc::internal: return "internal error";
      case errc::out_of_memory: return "out of memory";
    }
    return "unknown fleetpipe error";
  }
};

}  // namespace

const std::error_category& error_category() noexcept {
  static const Category kCategory;
  return kCategory;
}

std::error_code make_error_code(errc e) noexcept {
  return {static_cast<int>(e), error_category()};
}

}  // namespace fleetpipe
