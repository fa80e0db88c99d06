// Test helper: the pipeline most end-to-end tests start from: one imu stream, one threshold
// trigger, the buffer in a fresh scratch directory.
#pragma once

#include <string>
#include <vector>

#include "fleetpipe/pipeline.hpp"
#include "support/test_paths.hpp"

namespace fleetpipe::test {

/// Device `device`; stream "imu" with `channels` (the first is "accel"); trigger "bump"
/// (accel > 5) recording `pre_post_s` before and after; buffer under scratch_dir(tag) without
/// fsync. The uploader section is left at its defaults.
inline Config bump_pipeline_config(const std::string& device, const std::string& tag,
                                   std::vector<std::string> channels = {"accel"},
                                   double pre_post_s = 1) {
  Config c;
  c.device_id = device;
  c.buffer.path = scratch_dir(tag).string();
  c.buffer.durability = Durability::none;
  StreamConfig s;
  s.name = "imu";
  s.channels = std::move(channels);
  c.streams.push_back(s);
  auto t = threshold_trigger("bump", "imu", "accel", ThresholdOp::above, 5.0);
  t.capture.pre_s = pre_post_s;
  t.capture.post_s = pre_post_s;
  c.triggers.push_back(t);
  return c;
}

}  // namespace fleetpipe::test
