// The pipeline thread's loop: drain the queue, serve calls, poll, sleep.
#include <algorithm>
#include <chrono>
#include <cstring>
#include <exception>

#include "pipeline/pipeline_thread_impl.hpp"

#if defined(__linux__)
#include <pthread.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#endif

namespace fleetpipe {

namespace {

constexpr const char* kComponent = "pipeline_thread";

bool crossed_power_of_two(std::uint64_t before, std::uint64_t now) {
  // True when some power of two p satisfies before < p <= now (1 is the first drop).
  if (now <= before) return false;
  std::uint64_t p = 1;
  while (p <= before && p < (1ull << 63)) p <<= 1;
  return p <= now;
}

}  // namespace

std::uint64_t PipelineThread::Impl::drain_queue() noexcept {
  const std::uint64_t n = queue.drain(*pipeline, *m_high_water);
  if (n) m_processed->inc(n);
  return n;
}

// On the consuming thread: the log sink is called where the pipeline is driven, and the
// producer must not allocate.
void PipelineThread::Impl::report_drops() {
  auto report = [&](const std::atomic<std::uint64_t>& c, std::uint64_t& logged, const char* what) {
    const std::uint64_t now = c.load(std::memory_order_relaxed);
    if (!crossed_power_of_two(logged, now)) {
      logged = std::max(logged, now);
      return;
    }
    logged = now;
    log(pipeline->port(), LogLevel::warning, kComponent,
        std::to_string(now) + " samples dropped so far (" + what + ")");
  };
  report(n_drop_full, logged_full, "queue_full: the pipeline thread is behind; raise queue_capacity/blob_slots");
  report(n_drop_large, logged_large, "blob_too_large: a blob exceeds blob_slot_bytes");
}

void PipelineThread::Impl::run_request(Request& r) {
  try {
    (*r.fn)(*pipeline);
  } catch (const std::exception& e) {
    r.error = std::string("call threw: ") + e.what();
  } catch (...) {
    r.error = "call threw a non-standard exception";
  }
}

void PipelineThread::Impl::serve_requests() {
  for (;;) {
    Request* r = nullptr;
    {
      std::lock_guard<std::mutex> g(mu);
      r = req_head;
      if (!r) {
        requests_pending.store(false, std::memory_order_relaxed);
        return;
      }
      req_head = r->next;
      if (!req_head) req_tail = nullptr;
      r->state = Request::State::running;
    }
    drain_queue();  // the caller's earlier pushes come first
    run_request(*r);
    {
      std::lock_guard<std::mutex> g(mu);
      r->state = Request::State::done;  // r may be gone once mu is released
    }
    cv.notify_all();
  }
}

void PipelineThread::Impl::consume_locked() {
  drain_queue();
  while (Request* r = req_head) {
    req_head = r->next;
    r->state = Request::State::running;
    drain_queue();
    run_request(*r);
    r->state = Request::State::done;
  }
  req_tail = nullptr;
  requests_pending.store(false, std::memory_order_relaxed);
  report_drops();
}

bool PipelineThread::Impl::has_work() const noexcept {
  return !queue.empty() || stop_flag.load(std::memory_order_relaxed) ||
         requests_pending.load(std::memory_order_relaxed);
}

void PipelineThread::Impl::sleep_idle() {
  const std::uint32_t seen = waiter.prepare();
  sleeping.store(true, std::memory_order_seq_cst);
  if (!queue.empty(std::memory_order_seq_cst) || stop_flag.load(std::memory_order_seq_cst) ||
      requests_pending.load(std::memory_order_seq_cst)) {
    sleeping.store(false, std::memory_order_relaxed);
    return;
  }
  waiter.wait(seen, opt.idle_wait);
  sleeping.store(false, std::memory_order_relaxed);
}

void PipelineThread::Impl::setup_thread() {
#if defined(__linux__)
  if (!opt.thread_name.empty()) pthread_setname_np(pthread_self(), opt.thread_name.c_str());
  if (opt.nice) {
    const auto tid = static_cast<id_t>(syscall(SYS_gettid));
    if (setpriority(PRIO_PROCESS, tid, *opt.nice) != 0) {
      const int err = errno;
      log(pipeline->port(), LogLevel::warning, kComponent,
          "could not set the pipeline thread's niceness to " + std::to_string(*opt.nice) +
              ": " + std::strerror(err));
    }
  }
#endif
  if (opt.on_thread_start) {
    try {
      opt.on_thread_start();
    } catch (const std::exception& e) {
      log(pipeline->port(), LogLevel::error, kComponent,
          std::string("on_thread_start threw: ") + e.what());
    } catch (...) {
      log(pipeline->port(), LogLevel::error, kComponent, "on_thread_start threw");
    }
  }
}

void PipelineThread::Impl::run() noexcept {
  worker_id.store(std::this_thread::get_id(), std::memory_order_relaxed);
  try {
    setup_thread();
    log(pipeline->port(), LogLevel::info, kComponent, "pipeline thread started");
  } catch (...) {  // a log line that could not be built
  }
  Pipeline& p = *pipeline;
  std::uint64_t failures = 0;
  for (;;) {
    m_wakeups->inc();
    n_wakeups.fetch_add(1, std::memory_order_relaxed);
    try {
      drain_queue();
      if (requests_pending.load(std::memory_order_acquire)) serve_requests();
      report_drops();
      if (stop_flag.load(std::memory_order_acquire)) break;
      const bool busy = p.poll();
      if (has_work()) continue;
      // A request on the network: wait for its I/O (bounded slice; the host cannot wake a
      // wait inside the io_context, so keep it short). Otherwise (idle, paused, waiting for a
      // batch's age, a backoff or a timer) sleep until woken or idle_wait.
      if (busy && p.has_uploader() && !p.uploader().idle()) {
        p.run_for(std::min<std::chrono::microseconds>(
            std::chrono::milliseconds(2),
            std::chrono::duration_cast<std::chrono::microseconds>(opt.idle_wait)));
      } else {
        sleep_idle();
      }
    } catch (const std::exception& e) {
      // Out of memory in the pipeline's work: never let it end the process. Logged at the
      // first failure and each power of two; the loop goes on after a pause.
      ++failures;
      if ((failures & (failures - 1)) == 0) {
        try {
          log(p.port(), LogLevel::error, kComponent,
              std::string("pipeline work failed (") + std::to_string(failures) +
                  " so far): " + e.what());
        } catch (...) {
        }
      }
      sleep_idle();
    }
  }
  std::unique_lock<std::mutex> lk(mu);
  try {
    consume_locked();  // entries and calls that raced with stop
  } catch (...) {
  }
  worker_done = true;
  lk.unlock();
  cv.notify_all();
  try {
    log(pipeline->port(), LogLevel::info, kComponent, "pipeline thread stopped");
  } catch (...) {
  }
}

}  // namespace fleetpipe
