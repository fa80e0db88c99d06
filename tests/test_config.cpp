#include "fleetpipe/config.hpp"

#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>

#include "common/json_reader.hpp"

using fleetpipe::errc;
using fleetpipe::parse_config;

TEST_CASE("config: a minimal document parses with defaults", "[config]") {
  auto c = parse_config(R"({"device_id": "cart-0042"})");
  REQUIRE(c.ok());
  CHECK(c->device_id == "cart-0042");
  CHECK(c->log_level == fleetpipe::LogLevel::warning);
  CHECK(c->pipeline.heartbeat_interval_s == 300);
}

TEST_CASE("config: comments are allowed", "[config]") {
  auto c = parse_config("{\n // the cart\n \"device_id\": \"c1\"}");
  REQUIRE(c.ok());
}

TEST_CASE("config: missing device_id names its pointer", "[config]") {
  auto c = parse_config("{}");
  REQUIRE_FALSE(c.ok());
  CHECK(c.error().is(errc::invalid_config));
  CHECK(c.error().message == "/device_id: is required");
  CHECK(c.error().json_pointer == "/device_id");
}

TEST_CASE("config: an unknown top-level key is an error with a suggestion", "[config]") {
  auto c = parse_config(R"({"device_id": "c1", "bufer": {}})");
  REQUIRE_FALSE(c.ok());
  CHECK(c.error().message == "/bufer: unknown key (did you mean \"buffer\"?)");
}

TEST_CASE("config: an unknown nested key is an error", "[config]") {
  auto c = parse_config(R"({"device_id": "c1", "pipeline": {"heartbeat_intervall": 5}})");
  REQUIRE_FALSE(c.ok());
  CHECK(c.error().message ==
        "/pipeline/heartbeat_intervall: unknown key (did you mean \"heartbeat_interval\"?)");
  CHECK(c.error().json_pointer == "/pipeline/heartbeat_intervall");
}

TEST_CASE("config: wrong types and bad enums are named exactly", "[config]") {
  auto c = parse_config(R"({"device_id": 5})");
  REQUIRE_FALSE(c.ok());
  CHECK(c.error().message == "/device_id: must be a string, got 5");

  c = parse_config(R"({"device_id": "c1", "log_level": "loud"})");
  REQUIRE_FALSE(c.ok());
  CHECK(c.error().message ==
        "/log_level: must be one of trace, debug, info, warning, error, off, got \"loud\"");

  c = parse_config(R"({"device_id": "c/1"})");
  REQUIRE_FALSE(c.ok());
  CHECK(c.error().message ==
        "/device_id: may contain only letters, digits, '-', '_' and '.', got \"c/1\"");
}

TEST_CASE("config: invalid JSON is a typed error, not an exception", "[config]") {
  auto c = parse_config(R"({"device_id": )");
  REQUIRE_FALSE(c.ok());
  CHECK(c.error().is(errc::invalid_config));
  CHECK(c.error().message.rfind("/: not valid JSON", 0) == 0);
}

TEST_CASE("config: a root that is not an object", "[config]") {
  auto c = parse_config("[1,2]");
  REQUIRE_FALSE(c.ok());
  CHECK(c.error().message == "/: must be an object, got [1,2]");
}

TEST_CASE("config: load_config_file reports an unreadable path", "[config]") {
  auto c = fleetpipe::load_config_file("/nonexistent/fleetpipe.json");
  REQUIRE_FALSE(c.ok());
  CHECK(c.error().is(errc::io_error));
  CHECK(c.error().message == "cannot open config file /nonexistent/fleetpipe.json");
}

TEST_CASE("config: every shipped example config parses", "[config]") {
  namespace fs = std::filesystem;
  fs::path dir = fs::path(FLEETPIPE_SOURCE_DIR) / "examples" / "config";
  int parsed = 0;
  if (fs::exists(dir)) {
    for (const auto& e : fs::directory_iterator(dir)) {
      if (e.path().extension() != ".json") continue;
      auto c = fleetpipe::load_config_file(e.path().string());
      INFO(e.path().string() << ": " << (c.ok() ? "" : c.error().message));
      CHECK(c.ok());
      ++parsed;
    }
  }
  CHECK(parsed >= 1);
}

namespace {
using fleetpipe::detail::ConfigError;
using fleetpipe::detail::JsonReader;

std::string error_of(const std::string& json, void (*fn)(JsonReader&)) {
  auto doc = nlohmann::json::parse(json);
  try {
    JsonReader r(doc, "/section");
    fn(r);
    r.finish();
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "";
}
}  // namespace

TEST_CASE("json reader: numeric bounds produce the documented messages", "[config]") {
  CHECK(error_of(R"({"bytes_per_second": -5})", [](JsonReader& r) {
          r.number("bytes_per_second", 1, 0, JsonReader::kInf, true);
        }) == "/section/bytes_per_second: must be > 0, got -5");
  CHECK(error_of(R"({"level": 30})", [](JsonReader& r) { r.integer("level", 1, 1, 22); }) ==
        "/section/level: must be <= 22, got 30");
  CHECK(error_of(R"({"level": 1.5})", [](JsonReader& r) { r.integer("level", 1, 1, 22); }) ==
        "/section/level: must be an integer, got 1.5");
  CHECK(error_of(R"({"p": "x"})", [](JsonReader& r) { r.number("p", 0, 0, 1); }) ==
        "/section/p: must be a number, got \"x\"");
}

TEST_CASE("json reader: byte sizes and durations accept units", "[config]") {
  auto doc = nlohmann::json::parse(
      R"({"a": "64MiB", "b": 1000, "c": "1.5GB", "d": "500ms", "e": 2, "f": "1h", "bad": "5 parsecs"})");
  JsonReader r(doc, "");
  CHECK(r.bytes("a", 0) == 64ull * 1024 * 1024);
  CHECK(r.bytes("b", 0) == 1000);
  CHECK(r.bytes("c", 0) == 1500000000ull);
  CHECK(r.seconds("d", 0) == Approx(0.5));
  CHECK(r.seconds("e", 0) == Approx(2));
  CHECK(r.seconds("f", 0) == Approx(3600));
  CHECK_THROWS_WITH(r.bytes("bad", 0),
                    "/bad: must be a byte size like 1048576 or \"64MiB\", got \"5 parsecs\"");
  CHECK(r.bytes("absent", 77) == 77);
}

TEST_CASE("json reader: pointer tokens are escaped", "[config]") {
  auto doc = nlohmann::json::parse(R"({"a/b~c": 1})");
  JsonReader r(doc, "/m");
  CHECK_THROWS_WITH(r.finish(), "/m/a~1b~0c: unknown key");
}
