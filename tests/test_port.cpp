#include "fleetpipe/port.hpp"

#include <catch2/catch.hpp>

#include <string>
#include <vector>

#include "support/test_paths.hpp"

using namespace fleetpipe;

TEST_CASE("port: POSIX filesystem stats of a real directory", "[port]") {
  PosixFilesystemStats fs;
  auto dir = test::scratch_dir("port");
  auto s = fs.stats(dir.string());
  REQUIRE(s.ok());
  CHECK(s->total_bytes > 0);
  CHECK(s->free_bytes <= s->total_bytes);
  CHECK(s->free_inodes <= s->total_inodes);
}

TEST_CASE("port: filesystem stats of a missing path is an io_error", "[port]") {
  PosixFilesystemStats fs;
  auto s = fs.stats("/nonexistent/fleetpipe");
  REQUIRE_FALSE(s.ok());
  CHECK(s.error().is(errc::io_error));
  CHECK(s.error().message.find("/nonexistent/fleetpipe") != std::string::npos);
}

TEST_CASE("port: fake clock advances both clocks and can jump wall time", "[port]") {
  FakeClock clock;
  auto m0 = clock.monotonic();
  auto w0 = clock.wall();
  clock.advance(std::chrono::milliseconds(1500));
  CHECK(clock.monotonic() - m0 == std::chrono::milliseconds(1500));
  CHECK(clock.wall() - w0 == std::chrono::milliseconds(1500));
  clock.set_wall(w0 - std::chrono::hours(1));
  CHECK(clock.monotonic() - m0 == std::chrono::milliseconds(1500));
  CHECK(clock.wall() < w0);
}

TEST_CASE("port: callback log sink filters by level and survives a throwing callback",
          "[port]") {
  std::vector<std::string> lines;
  CallbackLogSink sink(
      [&](LogLevel l, std::string_view c, std::string_view m) {
        if (m == "boom") throw std::runtime_error("host bug");
        lines.push_back(std::string(to_string(l)) + " " + std::string(c) + " " + std::string(m));
      },
      LogLevel::info);
  Port port;
  port.log = &sink;
  log(port, LogLevel::debug, "buffer", "hidden");
  log(port, LogLevel::warning, "buffer", "shown");
  log(port, LogLevel::error, "buffer", "boom");
  REQUIRE(lines.size() == 1);
  CHECK(lines[0] == "warning buffer shown");
}

TEST_CASE("port: defaults fill only the missing pieces", "[port]") {
  FakeClock clock;
  Port p;
  p.clock = &clock;
  Port d = p.with_defaults();
  CHECK(d.clock == &clock);
  CHECK(d.filesystem != nullptr);
  CHECK(d.network != nullptr);
  CHECK(d.log != nullptr);
  CHECK(d.credentials == nullptr);
  NetworkStatus net;
  net.set(NetworkState::metered);
  CHECK(net.get() == NetworkState::metered);
  CHECK(to_string(NetworkState::offline) == "offline");
}

TEST_CASE("port: log levels round-trip", "[port]") {
  for (auto l : {LogLevel::trace, LogLevel::debug, LogLevel::info, LogLevel::warning,
                 LogLevel::error, LogLevel::off}) {
    auto parsed = parse_log_level(to_string(l));
    REQUIRE(parsed.ok());
    CHECK(*parsed == l);
  }
  CHECK_FALSE(parse_log_level("verbose").ok());
}

TEST_CASE("port: a sink says which levels it wants, and log() asks before writing", "[port]") {
  StderrLogSink stderr_sink(LogLevel::warning);
  CHECK_FALSE(stderr_sink.enabled(LogLevel::debug));
  CHECK(stderr_sink.enabled(LogLevel::warning));
  CHECK(stderr_sink.enabled(LogLevel::error));
  CHECK_FALSE(stderr_sink.enabled(LogLevel::off));
  stderr_sink.set_min_level(LogLevel::trace);
  CHECK(stderr_sink.enabled(LogLevel::trace));

  std::vector<std::string> got;
  CallbackLogSink cb([&](LogLevel, std::string_view, std::string_view m) { got.emplace_back(m); },
                     LogLevel::info);
  CHECK_FALSE(cb.enabled(LogLevel::debug));
  CHECK(cb.enabled(LogLevel::info));
  CHECK_FALSE(CallbackLogSink(nullptr).enabled(LogLevel::error));  // nowhere to write

  // A sink that keeps the default enabled() gets every line (today's behaviour); one that says
  // no is not called at all.
  struct Counting final : LogSink {
    void write(LogLevel, std::string_view, std::string_view) noexcept override { ++writes; }
    int writes = 0;
  } all;
  struct Refusing final : LogSink {
    void write(LogLevel, std::string_view, std::string_view) noexcept override { ++writes; }
    bool enabled(LogLevel) const noexcept override { return false; }
    int writes = 0;
  } none;
  Port port;
  port.log = &all;
  CHECK(log_enabled(port, LogLevel::trace));
  log(port, LogLevel::trace, "test", "line");
  CHECK(all.writes == 1);
  port.log = &none;
  CHECK_FALSE(log_enabled(port, LogLevel::error));
  log(port, LogLevel::error, "test", "line");
  CHECK(none.writes == 0);
  port.log = &cb;
  log(port, LogLevel::debug, "test", "filtered");
  log(port, LogLevel::warning, "test", "kept");
  CHECK(got == std::vector<std::string>{"kept"});
  port.log = nullptr;
  CHECK_FALSE(log_enabled(port, LogLevel::error));
}
