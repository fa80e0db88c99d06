// The request sender: one S3 request through a client, retried as the injected policy decides.
#include "s3/request_sender.hpp"

#include <algorithm>

namespace fleetpipe::detail {

namespace net = boost::asio;

RequestSender::RequestSender(net::io_context& ioc, RetryPolicy& policy, Observer observer)
    : ioc_(ioc), policy_(policy), obs_(std::move(observer)) {}

RequestSender::~RequestSender() { cancel_retries(); }

void RequestSender::cancel_retries() {
  for (auto& w : timers_)
    if (auto t = w.lock()) t->cancel();
  timers_.clear();
}

void RequestSender::send(S3Client& client, S3Request req, Done done, Wanted wanted, std::uint32_t attempt) {
  auto req_copy = req;
  std::weak_ptr<char> alive = alive_;
  S3Client* c = &client;
  client.async_send(std::move(req), [this, alive, c, req = std::move(req_copy), done = std::move(done),
                                     wanted = std::move(wanted), attempt](S3Outcome o) mutable {
    if (alive.expired()) return;
    if (wanted && !wanted()) return;
    if (o.ok) return done(std::move(o));
    const auto cls = o.failure.cls;
    if (cls == FailureClass::cancelled && o.failure.status == 0 && o.failure.message.empty()) return;
    if (obs_.on_failure) obs_.on_failure(o.failure);
    if (cls == FailureClass::clock_skew && o.failure.server_time && obs_.on_clock_skew) obs_.on_clock_skew(o.failure);
    auto delay = policy_.next_delay(o.failure, attempt);
    if (!delay) return done(std::move(o));
    const double delay_s = std::chrono::duration<double>(*delay).count();
    if (obs_.on_retry) obs_.on_retry(o.failure, attempt, delay_s);
    if (delay->count() == 0) return send(*c, std::move(req), std::move(done), std::move(wanted), attempt + 1);
    if (obs_.on_waiting) obs_.on_waiting(true);
    auto timer = std::make_shared<net::steady_timer>(ioc_);
    timers_.push_back(timer);
    timer->expires_after(*delay);
    timer->async_wait([this, alive, c, timer, req = std::move(req), done = std::move(done),
                       wanted = std::move(wanted), attempt](boost::system::error_code ec) mutable {
      if (alive.expired()) return;
      timers_.erase(std::remove_if(timers_.begin(), timers_.end(),
                                   [](const std::weak_ptr<net::steady_timer>& w) { return w.expired(); }),
                    timers_.end());
      if (ec) return;
      if (obs_.on_waiting) obs_.on_waiting(false);
      if (wanted && !wanted()) return;
      send(*c, std::move(req), std::move(done), std::move(wanted), attempt + 1);
    });
  });
}

}  // namespace fleetpipe::detail
