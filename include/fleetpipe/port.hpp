// fleetpipe/port.hpp — the platform port: everything fleetpipe needs from the device.
//
// A vendor replaces any piece by implementing the small interface and putting a pointer to it in
// `Port`. POSIX defaults are provided for every piece; fakes for tests live beside them
// (FakeClock, FakeFilesystemStats). fleetpipe never starts a thread and never sleeps through the
// port: the host owns the loop.
//
// Lifetime: objects referenced by a `Port` must outlive every component built from it.
// Thread context: all port calls are made from the thread that drives the component
// (the host's loop), except `NetworkStatus::set`, which any thread may call.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include "fleetpipe/error.hpp"

namespace fleetpipe {

// ---------------------------------------------------------------------------------------------
// Clock
// ---------------------------------------------------------------------------------------------

using MonoTime = std::chrono::steady_clock::time_point;
using WallTime = std::chrono::system_clock::time_point;

/// Monotonic time drives windows, cooldowns and backoff; wall time names objects and budgets.
class Clock {
 public:
  virtual ~Clock() = default;
  /// Never goes backwards (except on a fake clock, where tests exercise that on purpose).
  virtual MonoTime monotonic() const noexcept = 0;
  /// Calendar time (UTC). May jump when the device syncs its RTC.
  virtual WallTime wall() const noexcept = 0;
};

/// std::chrono::steady_clock and system_clock.
class SystemClock final : public Clock {
 public:
  MonoTime monotonic() const noexcept override { return std::chrono::steady_clock::now(); }
  WallTime wall() const noexcept override { return std::chrono::system_clock::now(); }
};

/// A clock that moves only when told to. Not thread-safe.
class FakeClock final : public Clock {
 public:
  explicit FakeClock(WallTime wall_start = WallTime{std::chrono::hours(24 * 20000)})
      : wall_(wall_start) {}
  MonoTime monotonic() const noexcept override { return mono_; }
  WallTime wall() const noexcept override { return wall_; }
  /// Moves both clocks forward by `d`.
  void advance(std::chrono::nanoseconds d) noexcept {
    mono_ += d;
    wall_ += std::chrono::duration_cast<WallTime::duration>(d);
  }
  /// Sets wall time only (an RTC jump); monotonic time is unaffected.
  void set_wall(WallTime t) noexcept { wall_ = t; }
  void set_monotonic(MonoTime t) noexcept { mono_ = t; }

 private:
  MonoTime mono_{std::chrono::seconds(1000)};
  WallTime wall_;
};

// ---------------------------------------------------------------------------------------------
// Filesystem statistics (for headroom guards)
// ---------------------------------------------------------------------------------------------

struct FsStats {
  std::uint64_t total_bytes = 0;
  std::uint64_t free_bytes = 0;    ///< available to an unprivileged writer (f_bavail)
  std::uint64_t total_inodes = 0;
  std::uint64_t free_inodes = 0;   ///< available to an unprivileged writer (f_favail)
};

class FilesystemStats {
 public:
  virtual ~FilesystemStats() = default;
  /// Statistics of the filesystem holding `path`. Errors: io_error.
  virtual Result<FsStats> stats(const std::string& path) const = 0;
};

/// statvfs(3).
class PosixFilesystemStats final : public FilesystemStats {
 public:
  Result<FsStats> stats(const std::string& path) const override;
};

/// Returns whatever the test sets.
class FakeFilesystemStats final : public FilesystemStats {
 public:
  Result<FsStats> stats(const std::string&) const override { return value; }
  FsStats value{1ull << 40, 1ull << 40, 1ull << 20, 1ull << 20};
};

// ---------------------------------------------------------------------------------------------
// Network state (set by the host)
// ---------------------------------------------------------------------------------------------

enum class NetworkState : std::uint8_t {
  online = 0,   ///< unmetered link: upload at the configured rate
  metered = 1,  ///< cellular or customer-facing: upload only what the config allows when metered
  offline = 2,  ///< no link: do not try
};

/// "online", "metered", "offline".
std::string_view to_string(NetworkState s) noexcept;

/// A lock-free cell the host updates from any thread when its link changes.
class NetworkStatus {
 public:
  void set(NetworkState s) noexcept { state_.store(s, std::memory_order_relaxed); }
  NetworkState get() const noexcept { return state_.load(std::memory_order_relaxed); }

 private:
  std::atomic<NetworkState> state_{NetworkState::online};
};

// ---------------------------------------------------------------------------------------------
// Logging
// ---------------------------------------------------------------------------------------------

enum class LogLevel : std::uint8_t { trace = 0, debug, info, warning, error, off };

/// "trace" … "off".
std::string_view to_string(LogLevel l) noexcept;
/// Parses "trace" … "off". Errors: invalid_argument.
Result<LogLevel> parse_log_level(std::string_view s);

/// Where fleetpipe's log lines go. Called synchronously from the driving thread; must not call
/// back into fleetpipe. Messages never contain credentials.
class LogSink {
 public:
  virtual ~LogSink() = default;
  virtual void write(LogLevel level, std::string_view component,
                     std::string_view message) noexcept = 0;
  /// Whether a line at `level` would be written (like spdlog's should_log). fleetpipe asks
  /// before it builds a message, so a filtered level costs no formatting and no allocation.
  /// The default says yes to everything, leaving the filtering to write().
  virtual bool enabled(LogLevel level) const noexcept {
    (void)level;
    return true;
  }
};

/// "fleetpipe[buffer] warning: …" lines on stderr, at or above `min_level` (default warning).
class StderrLogSink final : public LogSink {
 public:
  explicit StderrLogSink(LogLevel min_level = LogLevel::warning) : min_level_(min_level) {}
  void write(LogLevel level, std::string_view component,
             std::string_view message) noexcept override;
  bool enabled(LogLevel level) const noexcept override {
    return level >= min_level_ && level != LogLevel::off;
  }
  void set_min_level(LogLevel l) noexcept { min_level_ = l; }

 private:
  LogLevel min_level_;
};

/// Forwards to a host callback (e.g. into the firmware's own logger).
class CallbackLogSink final : public LogSink {
 public:
  using Callback = std::function<void(LogLevel, std::string_view, std::string_view)>;
  explicit CallbackLogSink(Callback cb, LogLevel min_level = LogLevel::trace)
      : cb_(std::move(cb)), min_level_(min_level) {}
  void write(LogLevel level, std::string_view component,
             std::string_view message) noexcept override;
  bool enabled(LogLevel level) const noexcept override {
    return level >= min_level_ && level != LogLevel::off && cb_;
  }

 private:
  Callback cb_;
  LogLevel min_level_;
};

// ---------------------------------------------------------------------------------------------
// Credentials
// ---------------------------------------------------------------------------------------------

/// S3 credentials. Never logged, never put in errors or metrics.
struct Credentials {
  std::string access_key_id;
  std::string secret_access_key;
  std::string session_token;  ///< empty when not using temporary credentials
};

/// Supplies credentials when a request is signed; called on the driving thread, may rotate.
class CredentialsProvider {
 public:
  virtual ~CredentialsProvider() = default;
  /// Errors: auth_error when no credentials are available.
  virtual Result<Credentials> get() = 0;
};

// ---------------------------------------------------------------------------------------------
// The port bundle
// ---------------------------------------------------------------------------------------------

/// Non-owning pointers to the platform pieces. Null members are replaced by the process-wide
/// POSIX defaults (see `with_defaults`). `credentials` may stay null when the config carries them.
struct Port {
  Clock* clock = nullptr;
  FilesystemStats* filesystem = nullptr;
  NetworkStatus* network = nullptr;
  LogSink* log = nullptr;
  CredentialsProvider* credentials = nullptr;

  /// A copy with every null member (but `credentials`) set to a process-wide default
  /// (SystemClock, PosixFilesystemStats, an always-online NetworkStatus, StderrLogSink).
  Port with_defaults() const;
};

/// Writes a log line through `port.log` (no-op when unset). The sink filters by level.
void log(const Port& port, LogLevel level, std::string_view component, std::string_view message);
/// True when `port.log` is set and enabled at `level`: test it before building a message.
inline bool log_enabled(const Port& port, LogLevel level) noexcept {
  return port.log && port.log->enabled(level);
}

}  // namespace fleetpipe
