// Internal: PipelineThread::Impl, the state shared by the public calls and the thread's loop.
//
// Reading guide: the host's pushes go into `queue` (queue.cpp) and wake the thread through
// `waiter` (waiter.hpp); the thread's loop, the calls it runs for other threads and the drop
// logging are in worker.cpp; the public methods are in pipeline_thread.cpp.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "fleetpipe/metrics.hpp"
#include "fleetpipe/pipeline.hpp"
#include "fleetpipe/pipeline_thread.hpp"
#include "pipeline/queue.hpp"
#include "pipeline/waiter.hpp"

namespace fleetpipe {

namespace detail {
// A call() waiting for the pipeline thread; lives on the caller's stack.
struct Request {
  const std::function<void(Pipeline&)>* fn = nullptr;
  enum class State { queued, running, done } state = State::queued;
  std::string error;  // fn threw
  Request* next = nullptr;
};
}  // namespace detail

struct PipelineThread::Impl {
  using Request = detail::Request;

  std::unique_ptr<Pipeline> pipeline;
  PipelineThreadOptions opt;
  detail::SampleQueue queue;

  alignas(64) std::atomic<bool> sleeping{false};
  std::atomic<bool> stop_flag{false};
  std::atomic<bool> requests_pending{false};
  std::atomic<bool> released{false};
  std::atomic<bool> running_flag{false};
  detail::Waiter waiter;

  // Thread, requests, consumer role. `mu` guards running/worker_done/requests and serializes
  // consumers other than the running thread.
  std::mutex life_mu;  // start/stop/release
  std::mutex mu;
  std::condition_variable cv;
  bool running = false;      // a thread was started and not yet joined
  bool worker_done = false;  // the thread left its loop: consumers take `mu`
  Request* req_head = nullptr;
  Request* req_tail = nullptr;
  std::thread thread;
  std::atomic<std::thread::id> worker_id{};

  // Metrics (in the pipeline's registry) and plain totals.
  Counter* m_drop_full = nullptr;
  Counter* m_drop_large = nullptr;
  Counter* m_processed = nullptr;
  Counter* m_wakeups = nullptr;
  Gauge* m_high_water = nullptr;
  Gauge* m_running = nullptr;
  // Own totals too: stats() stays valid after release() hands the registry away.
  std::atomic<std::uint64_t> n_drop_full{0}, n_drop_large{0}, n_wakeups{0};
  std::uint64_t logged_full = 0, logged_large = 0;  // consumer-side: drop totals already logged

  // ---- producer ------------------------------------------------------------------------------

  // Counts a refused push, or wakes the thread when enough is waiting. Returns whether the
  // entry was queued.
  bool accept(detail::SampleQueue::Push r) noexcept {
    switch (r) {
      case detail::SampleQueue::Push::ok:
        // Dekker with the thread's sleep_idle(): it sets `sleeping` then re-checks the queue;
        // the push published (seq_cst) and now checks `sleeping`. Both sides use seq_cst
        // operations (not fences, which TSan does not model), so one of the two sees the
        // other; a missed wake costs at most idle_wait.
        if (sleeping.load(std::memory_order_seq_cst) && queue.wake_due()) wake();
        return true;
      case detail::SampleQueue::Push::full:
        n_drop_full.fetch_add(1, std::memory_order_relaxed);
        m_drop_full->inc();
        return false;
      case detail::SampleQueue::Push::too_large:
        n_drop_large.fetch_add(1, std::memory_order_relaxed);
        m_drop_large->inc();
        return false;
    }
    return false;
  }
  void wake() noexcept {
    if (sleeping.exchange(false, std::memory_order_acq_rel)) waiter.wake();
  }

  // ---- consumer (worker.cpp) -----------------------------------------------------------------

  // Hands every visible entry to the pipeline, in order. Returns how many.
  std::uint64_t drain_queue() noexcept;
  // Logs drops at the first one and at each power of two.
  void report_drops();
  // Runs fn and records a throw as an error.
  void run_request(Request& r);
  // The thread's share of the requests: one at a time, `mu` released while fn runs.
  void serve_requests();
  // With `mu` held: consume everything and serve every queued request on this thread.
  void consume_locked();
  bool has_work() const noexcept;
  void sleep_idle();
  void setup_thread();
  // The thread's body.
  void run() noexcept;

  bool on_worker() const noexcept {
    return running_flag.load(std::memory_order_relaxed) &&
           worker_id.load(std::memory_order_relaxed) == std::this_thread::get_id();
  }
};

}  // namespace fleetpipe
