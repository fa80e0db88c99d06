// put_once: one PUT of an in-memory body through the S3 client, blocking until it ends, with no
// retry (for tools: the operator sees the error and runs the command again).
#pragma once

#include <string>

#include "fleetpipe/error.hpp"
#include "fleetpipe/uploader.hpp"

namespace fleetpipe::detail {

/// PUTs `body` as s3://cfg.bucket/`key` with `content_type`, exactly as given. Runs an
/// io_context of its own on the calling thread. Errors: those of the client (the message names
/// the object).
Result<void> put_once(const UploaderConfig& cfg, const std::string& key, const std::string& body,
                      const std::string& content_type = "application/json");

}  // namespace fleetpipe::detail
