// Test helper: a Port over a FakeClock and a fake filesystem, with a log sink on stderr.
#pragma once

#include "fleetpipe/port.hpp"

namespace fleetpipe::test {

/// The clock starts at `wall_start` (the real time for tests that talk to the S3 server, which
/// checks request times); `port.log` may be pointed at another sink.
struct FakePort {
  FakeClock clock;
  FakeFilesystemStats fs;
  StderrLogSink log;
  Port port;
  explicit FakePort(WallTime wall_start, LogLevel stderr_level = LogLevel::warning)
      : clock(wall_start), log(stderr_level) {
    port.clock = &clock;
    port.filesystem = &fs;
    port.log = &log;
  }
  FakePort(const FakePort&) = delete;
  FakePort& operator=(const FakePort&) = delete;
};

}  // namespace fleetpipe::test
