// fleetpipe/uploader.hpp — shaped, resumable S3 upload (skeleton: owned by the Uploader work).
#pragma once

#include <string>

#include "fleetpipe/error.hpp"

namespace fleetpipe {

struct UploaderConfig {
  std::string endpoint;
};

}  // namespace fleetpipe
