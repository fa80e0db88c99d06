// The port layer's POSIX defaults: clock, filesystem stats, network state, log sink.
#include "fleetpipe/port.hpp"

#include <sys/statvfs.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>

namespace fleetpipe {

Result<FsStats> PosixFilesystemStats::stats(const std::string& path) const {
  struct statvfs s {};
  if (::statvfs(path.c_str(), &s) != 0) {
    int e = errno;
    return Error(errc::io_error, "statvfs(" + path + "): " + std::strerror(e));
  }
  FsStats out;
  out.total_bytes = static_cast<std::uint64_t>(s.f_blocks) * s.f_frsize;
  out.free_bytes = static_cast<std::uint64_t>(s.f_bavail) * s.f_frsize;
  out.total_inodes = s.f_files;
  out.free_inodes = s.f_favail;
  return out;
}

std::string_view to_string(NetworkState s) noexcept {
  switch (s) {
    case NetworkState::online: return "online";
    case NetworkState::metered: return "metered";
    case NetworkState::offline: return "offline";
  }
  return "unknown";
}

std::string_view to_string(LogLevel l) noexcept {
  switch (l) {
    case LogLevel::trace: return "trace";
    case LogLevel::debug: return "debug";
    case LogLevel::info: return "info";
    case LogLevel::warning: return "warning";
    case LogLevel::error: return "error";
    case LogLevel::off: return "off";
  }
  return "unknown";
}

Result<LogLevel> parse_log_level(std::string_view s) {
  for (auto l : {LogLevel::trace, LogLevel::debug, LogLevel::info, LogLevel::warning,
                 LogLevel::error, LogLevel::off}) {
    if (to_string(l) == s) return l;
  }
  return Error(errc::invalid_argument, "unknown log level \"" + std::string(s) + "\"");
}

void StderrLogSink::write(LogLevel level, std::string_view component,
                          std::string_view message) noexcept {
  if (!enabled(level)) return;
  // One fprintf per line so concurrent writers do not interleave within a line.
  std::fprintf(stderr, "fleetpipe[%.*s] %.*s: %.*s\n", static_cast<int>(component.size()),
               component.data(), static_cast<int>(to_string(level).size()),
               to_string(level).data(), static_cast<int>(message.size()), message.data());
}

void CallbackLogSink::write(LogLevel level, std::string_view component,
                            std::string_view message) noexcept {
  if (!enabled(level)) return;
  try {
    cb_(level, component, message);
  } catch (...) {
    // A throwing host callback must not unwind through fleetpipe; the line is dropped.
  }
}

Port Port::with_defaults() const {
  static SystemClock default_clock;
  static PosixFilesystemStats default_fs;
  static NetworkStatus default_network;
  static StderrLogSink default_log;
  Port p = *this;
  if (!p.clock) p.clock = &default_clock;
  if (!p.filesystem) p.filesystem = &default_fs;
  if (!p.network) p.network = &default_network;
  if (!p.log) p.log = &default_log;
  return p;
}

void log(const Port& port, LogLevel level, std::string_view component,
         std::string_view message) {
  if (log_enabled(port, level)) port.log->write(level, component, message);
}

}  // namespace fleetpipe
