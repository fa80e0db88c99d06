#include "s3/token_bucket.hpp"

#include <algorithm>
#include <cmath>

namespace fleetpipe::detail {

namespace {
std::uint64_t effective_burst(double rate, std::uint64_t burst) {
  if (burst > 0) return burst;
  if (rate <= 0) return 0;
  return std::max<std::uint64_t>(4096, static_cast<std::uint64_t>(rate / 50));
}
}  // namespace

TokenBucket::TokenBucket(double rate, std::uint64_t burst, MonoTime now) noexcept
    : rate_(rate > 0 ? rate : 0), burst_(effective_burst(rate, burst)), last_(now) {}

void TokenBucket::set_rate(double rate, std::uint64_t burst, MonoTime now) noexcept {
  refill(now);
  // Leaving unlimited mode starts from an empty bucket, as a new bucket does: the first
  // interval after a (re)start or a cap being set must not carry a burst on top of the rate.
  if (unlimited()) tokens_ = 0;
  rate_ = rate > 0 ? rate : 0;
  burst_ = effective_burst(rate_, burst);
  tokens_ = std::min(tokens_, static_cast<double>(burst_));
  last_ = now;
}

void TokenBucket::refill(MonoTime now) noexcept {
  if (now <= last_) return;  // a clock that does not move (or a fake one set back) adds nothing
  double dt = std::chrono::duration<double>(now - last_).count();
  last_ = now;
  if (unlimited()) return;
  tokens_ = std::min(static_cast<double>(burst_), tokens_ + dt * rate_);
}

std::uint64_t TokenBucket::available(MonoTime now) noexcept {
  if (unlimited()) return kUnlimited;
  refill(now);
  return tokens_ <= 0 ? 0 : static_cast<std::uint64_t>(std::floor(tokens_));
}

void TokenBucket::consume(std::uint64_t n, MonoTime now) noexcept {
  if (unlimited()) return;
  refill(now);
  tokens_ -= static_cast<double>(n);
}

std::chrono::nanoseconds TokenBucket::wait_for(std::uint64_t n, MonoTime now) noexcept {
  if (unlimited()) return std::chrono::nanoseconds(0);
  refill(now);
  double want = static_cast<double>(std::min<std::uint64_t>(n, burst_));
  if (tokens_ >= want) return std::chrono::nanoseconds(0);
  double secs = (want - tokens_) / rate_;
  return std::chrono::nanoseconds(static_cast<std::int64_t>(std::ceil(secs * 1e9)));
}

std::size_t TokenBucket::chunk_size(std::size_t max_chunk) const noexcept {
  if (unlimited()) return max_chunk;
  auto c = static_cast<std::size_t>(rate_ / 100);
  c = std::max<std::size_t>(c, 1024);
  c = std::min<std::size_t>(c, static_cast<std::size_t>(burst_ / 2));
  return std::max<std::size_t>(1, std::min(c, max_chunk));
}

}  // namespace fleetpipe::detail
