// Internal: the retry policy — which failed S3 requests are sent again, and after how long.
//
// Injected into the request sender (request_sender.hpp), in the spirit of aws-c-s3's retry
// strategy: the sender asks after every failed attempt, the policy decides, and a test (or a
// caller with other needs) can inject its own. The uploader and the cloud reader each build an
// ExponentialBackoff from their options; the heartbeat uses one with a single attempt.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <random>

#include "s3/s3_client.hpp"

namespace fleetpipe::detail {

class RetryPolicy {
 public:
  virtual ~RetryPolicy() = default;
  /// After attempt `attempt` (1-based) failed with `f`: the wait before the next attempt
  /// (zero: at once), or nullopt to give up and hand `f` to the caller.
  virtual std::optional<std::chrono::nanoseconds> next_delay(const S3Failure& f, std::uint32_t attempt) = 0;
};

/// Exponential backoff over the retryable classes (is_retryable), except upload_gone (the
/// multipart state machine restarts the upload itself): after attempt n it waits
/// min(max_delay, base_delay * 2^(n-1)), or with full jitter a uniform draw below that (AWS's
/// "full jitter": clients that failed together do not retry together). RequestTimeTooSkewed with
/// a server time is retried at once: the sender corrects the clock first.
class ExponentialBackoff final : public RetryPolicy {
 public:
  struct Options {
    std::uint32_t max_attempts = 4;  ///< including the first
    double base_delay_s = 0.2;
    double max_delay_s = 0.8;
    bool full_jitter = true;
  };
  explicit ExponentialBackoff(Options o, std::uint64_t seed = std::random_device{}());
  std::optional<std::chrono::nanoseconds> next_delay(const S3Failure& f, std::uint32_t attempt) override;

 private:
  Options o_;
  std::mt19937_64 rng_;
};

}  // namespace fleetpipe::detail
