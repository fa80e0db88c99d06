// The retry policy: exponential backoff with full jitter over the retryable failure classes.
#include "s3/retry_policy.hpp"

#include <algorithm>
#include <cmath>

namespace fleetpipe::detail {

ExponentialBackoff::ExponentialBackoff(Options o, std::uint64_t seed) : o_(o), rng_(seed) {}

std::optional<std::chrono::nanoseconds> ExponentialBackoff::next_delay(const S3Failure& f, std::uint32_t attempt) {
  if (attempt >= o_.max_attempts) return std::nullopt;
  if (f.cls == FailureClass::clock_skew && f.server_time) return std::chrono::nanoseconds(0);
  if (!is_retryable(f.cls) || f.cls == FailureClass::upload_gone) return std::nullopt;
  double cap = std::min(o_.max_delay_s, o_.base_delay_s * std::pow(2.0, attempt - 1));
  double delay = o_.full_jitter ? std::uniform_real_distribution<double>(0, cap)(rng_) : cap;
  return std::chrono::nanoseconds(static_cast<std::int64_t>(delay * 1e9));
}

}  // namespace fleetpipe::detail
