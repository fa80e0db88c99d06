// Test helper: one PUT through the SDK's own S3 client, bodies exactly as given (tampered
// campaign envelopes too). Blocks until the request ends.
#pragma once

#include <string>

#include "s3/put_once.hpp"

namespace fleetpipe::test {

/// Errors: those of the client (the message names the key).
inline Result<void> s3_put(const UploaderConfig& cfg, const std::string& key,
                           const std::string& body) {
  return detail::put_once(cfg, key, body);
}

}  // namespace fleetpipe::test
