// Internal: the request sender — one S3 request through a client, retried as the injected
// RetryPolicy decides.
//
// Used by the uploader (asynchronously, on the host's loop) and the cloud reader (which runs
// its own io_context until the outcome arrives). Between attempts it waits on a steady_timer of
// the io_context (no thread, no sleep). The observer hears of every failed attempt, every retry
// and every RequestTimeTooSkewed that carries the server's time (so its owner can correct the
// signing clock before the retry goes out).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>

#include "s3/retry_policy.hpp"
#include "s3/s3_client.hpp"

namespace fleetpipe::detail {

class RequestSender {
 public:
  struct Observer {
    std::function<void(const S3Failure&)> on_failure;   ///< every failed attempt (not cancellations)
    std::function<void(const S3Failure&)> on_clock_skew;  ///< RequestTimeTooSkewed with a server time
    /// A retry is scheduled: attempt `attempt` failed with `f`, the next goes out in `delay_s`.
    std::function<void(const S3Failure& f, std::uint32_t attempt, double delay_s)> on_retry;
    std::function<void(bool)> on_waiting;  ///< a retry timer was armed (true) / fired (false)
  };
  using Done = std::function<void(S3Outcome)>;
  /// Asked before every completion and retry: false drops the request silently (its owner has
  /// moved on, e.g. the batch it belonged to was dropped).
  using Wanted = std::function<bool()>;

  /// `policy` must outlive the sender.
  RequestSender(boost::asio::io_context& ioc, RetryPolicy& policy, Observer observer);
  ~RequestSender();
  RequestSender(const RequestSender&) = delete;
  RequestSender& operator=(const RequestSender&) = delete;

  /// Sends `req` on `client` (which must outlive the request and be idle); `done` runs once on
  /// the io_context with the first success or the failure the policy gave up on, unless the
  /// request is cancelled first (a client cancel, cancel_retries()) or no longer wanted.
  void send(S3Client& client, S3Request req, Done done, Wanted wanted = {}, std::uint32_t attempt = 1);
  /// Pending retries never run (their requests are dropped).
  void cancel_retries();

 private:
  boost::asio::io_context& ioc_;
  RetryPolicy& policy_;
  Observer obs_;
  std::vector<std::weak_ptr<boost::asio::steady_timer>> timers_;
  std::shared_ptr<char> alive_ = std::make_shared<char>(0);  // handlers outliving the sender do nothing
};

}  // namespace fleetpipe::detail
