// AsyncFdatasync: an fdatasync that does not block the caller, for the Buffer's `interval`
// durability. Linux kernel AIO (IOCB_CMD_FDSYNC, any filesystem since Linux 4.18) runs the sync
// on a kernel worker: start() is one syscall, reap() a non-blocking one, so a host that drives
// the Buffer from its real-time loop never waits on the disk. No thread of ours is involved.
// Where kernel AIO is missing or refused (old kernel, seccomp, aio-max-nr exhausted) start()
// returns false and the caller syncs inline as before.
#pragma once

#include <cerrno>
#include <cstdint>
#include <ctime>
#include <optional>

#if defined(__linux__)
#include <linux/aio_abi.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace fleetpipe::detail {

class AsyncFdatasync {
 public:
  AsyncFdatasync() = default;
  AsyncFdatasync(const AsyncFdatasync&) = delete;
  AsyncFdatasync& operator=(const AsyncFdatasync&) = delete;
  /// Waits for a sync still running: the fd it syncs must stay open until then.
  ~AsyncFdatasync() { shutdown(); }

  /// Starts fdatasync(fd). False when nothing was started: kernel AIO unavailable, or a sync is
  /// already running (in_flight()).
  bool start(int fd) {
#if defined(__linux__) && defined(SYS_io_submit)
    if (in_flight_ || unavailable_) return false;
    if (ctx_ == 0 && syscall(SYS_io_setup, 1, &ctx_) != 0) {
      ctx_ = 0;
      unavailable_ = true;
      return false;
    }
    iocb cb{};
    cb.aio_lio_opcode = IOCB_CMD_FDSYNC;
    cb.aio_fildes = static_cast<std::uint32_t>(fd);
    iocb* list[1] = {&cb};
    if (syscall(SYS_io_submit, ctx_, 1, list) != 1) {
      // EINVAL: this filesystem or kernel cannot; anything else: treat the same and stop trying.
      unavailable_ = true;
      return false;
    }
    in_flight_ = true;
    return true;
#else
    (void)fd;
    return false;
#endif
  }

  /// When the running sync has finished: its result (0 or a positive errno). Never blocks.
  std::optional<int> reap() { return collect(false); }
  /// Blocks until the running sync has finished; its result (0 when none was running).
  int wait() {
    auto r = collect(true);
    return r ? *r : 0;
  }
  bool in_flight() const { return in_flight_; }
  bool unavailable() const { return unavailable_; }

 private:
  std::optional<int> collect(bool block) {
#if defined(__linux__) && defined(SYS_io_getevents)
    if (!in_flight_) return 0;
    io_event ev{};
    timespec zero{0, 0};
    long n;
    do {
      n = syscall(SYS_io_getevents, ctx_, 1, 1, &ev, block ? nullptr : &zero);
    } while (n < 0 && errno == EINTR);
    if (n < 0) {
      // The context is unusable: the sync's outcome is unknown, so report it as failed.
      in_flight_ = false;
      unavailable_ = true;
      return EIO;
    }
    if (n == 0) return std::nullopt;
    in_flight_ = false;
    return ev.res < 0 ? static_cast<int>(-ev.res) : 0;
#else
    (void)block;
    return 0;
#endif
  }
  void shutdown() {
#if defined(__linux__) && defined(SYS_io_destroy)
    if (in_flight_) (void)wait();
    if (ctx_ != 0) syscall(SYS_io_destroy, ctx_);
    ctx_ = 0;
#endif
  }

#if defined(__linux__)
  aio_context_t ctx_ = 0;
#endif
  bool in_flight_ = false;
  bool unavailable_ = false;
};

}  // namespace fleetpipe::detail
