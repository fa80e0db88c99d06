// The byte token bucket that shapes socket writes, in integer nano-bytes.
#include "s3/token_bucket.hpp"

#include <algorithm>

namespace fleetpipe::detail {

namespace {
constexpr std::int64_t kNano = 1'000'000'000;  // nano-bytes per byte
// Debt floor: an absurd oversized write saturates here instead of overflowing. With it and
// kMaxBurst, burst - tokens stays below 2^62 + 2^32 * 1e9 < 2^63.
constexpr std::int64_t kMinTokens = -(std::int64_t{1} << 62);

std::uint64_t whole_rate(double rate) {
  if (!(rate > 0)) return 0;  // also NaN
  if (rate >= static_cast<double>(TokenBucket::kMaxRate)) return TokenBucket::kMaxRate;
  // One IEEE conversion: the same result on every platform.
  return std::max<std::uint64_t>(1, static_cast<std::uint64_t>(rate + 0.5));
}

std::uint64_t effective_burst(std::uint64_t rate, std::uint64_t burst) {
  if (burst > 0) return std::min(burst, TokenBucket::kMaxBurst);
  if (rate == 0) return 0;
  return std::max<std::uint64_t>(4096, rate / 50);
}

std::int64_t nano(std::uint64_t bytes) {
  return static_cast<std::int64_t>(std::min(bytes, TokenBucket::kMaxBurst)) * kNano;
}
}  // namespace

TokenBucket::TokenBucket(double rate, std::uint64_t burst, MonoTime now) noexcept
    : rate_set_(rate > 0 ? rate : 0),
      rate_(whole_rate(rate)),
      burst_(effective_burst(rate_, burst)),
      last_(now) {}

void TokenBucket::set_rate(double rate, std::uint64_t burst, MonoTime now) noexcept {
  refill(now);
  // Leaving unlimited mode starts from an empty bucket, as a new bucket does: the first
  // interval after a (re)start or a cap being set must not carry a burst on top of the rate.
  if (unlimited()) tokens_ = 0;
  rate_set_ = rate > 0 ? rate : 0;
  rate_ = whole_rate(rate);
  burst_ = effective_burst(rate_, burst);
  tokens_ = std::min(tokens_, nano(burst_));
  last_ = now;
}

void TokenBucket::refill(MonoTime now) noexcept {
  if (now <= last_) return;  // a clock that does not move (or a fake one set back) adds nothing
  const auto dt = static_cast<std::uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(now - last_).count());
  last_ = now;
  if (unlimited()) return;
  const std::int64_t full = nano(burst_);
  if (tokens_ >= full) return;
  const auto room = static_cast<std::uint64_t>(full - tokens_);
  // dt * rate would overflow for long idle spells: past the time to fill, the bucket is full.
  if (dt > room / rate_) {
    tokens_ = full;
  } else {
    tokens_ += static_cast<std::int64_t>(dt * rate_);  // <= room
  }
}

std::uint64_t TokenBucket::available(MonoTime now) noexcept {
  if (unlimited()) return kUnlimited;
  refill(now);
  return tokens_ <= 0 ? 0 : static_cast<std::uint64_t>(tokens_ / kNano);
}

void TokenBucket::consume(std::uint64_t n, MonoTime now) noexcept {
  if (unlimited()) return;
  refill(now);
  const std::int64_t cost = nano(n);
  tokens_ = tokens_ - kMinTokens > cost ? tokens_ - cost : kMinTokens;
}

std::chrono::nanoseconds TokenBucket::wait_for(std::uint64_t n, MonoTime now) noexcept {
  if (unlimited()) return std::chrono::nanoseconds(0);
  refill(now);
  const std::int64_t want = nano(std::min(n, burst_));
  if (tokens_ >= want) return std::chrono::nanoseconds(0);
  const auto missing = static_cast<std::uint64_t>(want - tokens_);
  const std::uint64_t ns = missing / rate_ + (missing % rate_ != 0 ? 1 : 0);  // rounded up
  return std::chrono::nanoseconds(static_cast<std::int64_t>(ns));
}

std::size_t TokenBucket::chunk_size(std::size_t max_chunk) const noexcept {
  if (unlimited()) return max_chunk;
  return static_cast<std::size_t>(std::max<std::uint64_t>(1, std::min<std::uint64_t>(burst_, max_chunk)));
}

std::size_t TokenBucket::wait_target(std::size_t want) const noexcept {
  if (unlimited()) return want;
  // Bytes that accrue during the lateness, doubled; a new bucket assumes burst/4 of them.
  const std::uint64_t late_bytes =
      late_ns_ < 0 ? burst_ / 4
                   : static_cast<std::uint64_t>(std::min<std::int64_t>(late_ns_, 1'000'000'000)) * rate_ /
                         1'000'000'000u;
  const std::uint64_t slack = 2 * late_bytes + burst_ / 16;
  const std::uint64_t fits = burst_ > slack ? burst_ - slack : 0;
  const std::uint64_t target = std::max<std::uint64_t>(fits, burst_ / 2);
  return static_cast<std::size_t>(std::max<std::uint64_t>(1, std::min<std::uint64_t>(want, target)));
}

void TokenBucket::note_wake_lateness(std::chrono::nanoseconds late) noexcept {
  const std::int64_t l = std::max<std::int64_t>(0, late.count());
  if (late_ns_ < 0) {
    late_ns_ = l;
    return;
  }
  late_ns_ = std::max(l, late_ns_ - late_ns_ / 8);  // halves over ~5 on-time wakes
}

}  // namespace fleetpipe::detail
