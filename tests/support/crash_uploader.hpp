// Test helper: the Uploader config the crash and power-cut matrices share — the ctest S3 server
// over HTTPS with its static keys, tuned to keep batches small and retries quick.
#pragma once

#include <string>

#include "fleetpipe/uploader.hpp"
#include "support/s3_env.hpp"

namespace fleetpipe::test {

/// Batches close after 50 ms, retries wait at most 0.2 s, an idle uploader looks every 10 ms.
inline UploaderConfig crash_uploader_config(const S3Env& env, const std::string& bucket,
                                            const std::string& prefix, const std::string& device) {
  UploaderConfig c = s3_uploader_config(env, bucket, prefix);
  c.device_id = device;
  c.max_object_age_s = 0.05;
  c.retry_base_delay_s = 0.02;
  c.retry_max_delay_s = 0.2;
  c.idle_poll_interval_s = 0.01;
  return c;
}

}  // namespace fleetpipe::test
