#include "s3/retry_policy.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>

// The one retry policy the uploader and the cloud reader share: which failures are retried, how
// many times, after how long.

using namespace fleetpipe;
using detail::ExponentialBackoff;
using detail::FailureClass;
using detail::S3Failure;

namespace {
S3Failure failure(FailureClass c) {
  S3Failure f;
  f.cls = c;
  return f;
}
double seconds(std::chrono::nanoseconds d) { return std::chrono::duration<double>(d).count(); }
}  // namespace

TEST_CASE("retryable failures are retried up to max_attempts, the others never", "[retry_policy]") {
  ExponentialBackoff p({4, 0.2, 0.8, /*full_jitter=*/false});
  for (auto c : {FailureClass::network, FailureClass::timeout, FailureClass::throttled, FailureClass::server_error,
                 FailureClass::credentials_expired, FailureClass::bad_digest}) {
    INFO(detail::class_name(c));
    CHECK(p.next_delay(failure(c), 1).has_value());
    CHECK(p.next_delay(failure(c), 3).has_value());
    CHECK_FALSE(p.next_delay(failure(c), 4).has_value());  // the fourth attempt was the last
  }
  for (auto c : {FailureClass::tls, FailureClass::auth, FailureClass::permanent, FailureClass::upload_gone,
                 FailureClass::cancelled}) {
    INFO(detail::class_name(c));
    CHECK_FALSE(p.next_delay(failure(c), 1).has_value());
  }
}

TEST_CASE("without jitter the delays double up to max_delay", "[retry_policy]") {
  ExponentialBackoff p({6, 0.2, 0.8, /*full_jitter=*/false});
  const S3Failure f = failure(FailureClass::network);
  CHECK(seconds(*p.next_delay(f, 1)) == Approx(0.2));
  CHECK(seconds(*p.next_delay(f, 2)) == Approx(0.4));
  CHECK(seconds(*p.next_delay(f, 3)) == Approx(0.8));
  CHECK(seconds(*p.next_delay(f, 4)) == Approx(0.8));
}

TEST_CASE("full jitter draws each delay below its cap", "[retry_policy]") {
  ExponentialBackoff p({100, 0.5, 4.0, /*full_jitter=*/true}, /*seed=*/42);
  const S3Failure f = failure(FailureClass::throttled);
  double sum = 0;
  for (std::uint32_t attempt = 1; attempt < 100; ++attempt) {
    double cap = std::min(4.0, 0.5 * std::pow(2.0, attempt - 1));
    double d = seconds(*p.next_delay(f, attempt));
    INFO("attempt " << attempt);
    CHECK(d >= 0);
    CHECK(d <= cap);
    sum += d;
  }
  CHECK(sum > 0);  // not all zero: the draw is uniform below the cap
}

TEST_CASE("clock skew with the server's time is retried at once, without it with backoff", "[retry_policy]") {
  ExponentialBackoff p({3, 1.0, 1.0, /*full_jitter=*/false});
  S3Failure skew = failure(FailureClass::clock_skew);
  CHECK(seconds(*p.next_delay(skew, 1)) == Approx(1.0));
  skew.server_time = WallTime(std::chrono::seconds(1793491200));
  CHECK(p.next_delay(skew, 1)->count() == 0);
  CHECK_FALSE(p.next_delay(skew, 3).has_value());
}
