#include "fleetpipe/port.hpp"

#include <catch2/catch.hpp>

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
