// Internal: Waiter, the pipeline thread's sleep and wake.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>

#if defined(__linux__)
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <ctime>
#else
#include <condition_variable>
#include <mutex>
#endif

namespace fleetpipe::detail {

// Linux: a futex on a sequence word (the waker does one syscall and takes no lock). Elsewhere: a
// condition variable (the waker takes a mutex briefly).
class Waiter {
 public:
  // Reads the sequence to wait on; call before re-checking for work.
  std::uint32_t prepare() const noexcept { return seq_.load(std::memory_order_acquire); }
  void wait(std::uint32_t seen, std::chrono::nanoseconds d) noexcept {
#if defined(__linux__)
    timespec ts{static_cast<time_t>(d.count() / 1000000000),
                static_cast<long>(d.count() % 1000000000)};
    // A 32-bit ABI built with a 64-bit time_t (armhf, docs/porting.md) needs the time64 call:
    // the classic one reads a 32-bit timespec.
#if defined(SYS_futex_time64)
    constexpr long kFutexWait = sizeof(ts.tv_sec) > sizeof(long) ? SYS_futex_time64 : SYS_futex;
#else
    constexpr long kFutexWait = SYS_futex;
#endif
    // Returns at once if seq_ changed since `seen` (EAGAIN), on a wake, or after d.
    syscall(kFutexWait, reinterpret_cast<std::uint32_t*>(&seq_), FUTEX_WAIT_PRIVATE, seen, &ts,
            nullptr, 0);
#else
    std::unique_lock<std::mutex> lk(mu_);
    cv_.wait_for(lk, d, [&] { return seq_.load(std::memory_order_acquire) != seen; });
#endif
  }
  void wake() noexcept {
    seq_.fetch_add(1, std::memory_order_release);
#if defined(__linux__)
    syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&seq_), FUTEX_WAKE_PRIVATE, 1, nullptr,
            nullptr, 0);
#else
    std::lock_guard<std::mutex> g(mu_);
    cv_.notify_one();
#endif
  }

 private:
  static_assert(sizeof(std::atomic<std::uint32_t>) == sizeof(std::uint32_t),
                "the futex word must be a plain 32-bit integer");
  std::atomic<std::uint32_t> seq_{0};
#if !defined(__linux__)
  std::mutex mu_;
  std::condition_variable cv_;
#endif
};

}  // namespace fleetpipe::detail
