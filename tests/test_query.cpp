#include "fleetpipe/query.hpp"

#include <catch2/catch.hpp>

// The pure helpers of the cloud-side reader (BucketReader itself runs against the real server in
// tests/s3/test_query_s3.cpp and bindings/python/tests/test_query.py).

using namespace fleetpipe;

namespace {
double unix_s(WallTime t) { return std::chrono::duration<double>(t.time_since_epoch()).count(); }
}  // namespace

TEST_CASE("query times parse in every documented form, as UTC", "[query]") {
  auto day = parse_query_time("2026-11-01");
  REQUIRE(day.ok());
  CHECK(unix_s(*day) == 1793491200.0);
  auto full = parse_query_time("2026-11-01T10:20:30Z");
  REQUIRE(full.ok());
  CHECK(unix_s(*full) == 1793491200.0 + 10 * 3600 + 20 * 60 + 30);
  auto frac = parse_query_time("2026-11-01T10:20:30.25Z");
  REQUIRE(frac.ok());
  CHECK(unix_s(*frac) == Approx(unix_s(*full) + 0.25));
  auto compact = parse_query_time("20261101T102030Z");
  REQUIRE(compact.ok());
  CHECK(*compact == *full);
  auto unix_seconds = parse_query_time("1793491200");
  REQUIRE(unix_seconds.ok());
  CHECK(*unix_seconds == *day);
  CHECK(parse_query_time("2026-11-01T10:20:30+00:00").ok());
}

TEST_CASE("malformed query times are invalid_argument naming the input", "[query]") {
  for (const char* bad : {"", "yesterday", "2026-13-45", "2026-11-01T10:20:30Zjunk", "2026/11/01"}) {
    auto r = parse_query_time(bad);
    INFO(bad);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().is(errc::invalid_argument));
    CHECK(r.error().message.find("not a time") != std::string::npos);
  }
}

TEST_CASE("format_query_time prints UTC with milliseconds and round-trips", "[query]") {
  auto t = parse_query_time("2026-11-01T10:20:30.125Z");
  REQUIRE(t.ok());
  CHECK(format_query_time(*t) == "2026-11-01T10:20:30.125Z");
  auto back = parse_query_time(format_query_time(*t));
  REQUIRE(back.ok());
  CHECK(*back == *t);
  CHECK(format_query_time(WallTime{}) == "1970-01-01T00:00:00.000Z");
}

TEST_CASE("device globs follow fnmatch", "[query]") {
  CHECK(glob_match("cart-0*", "cart-0042"));
  CHECK_FALSE(glob_match("cart-0*", "cart-1042"));
  CHECK(glob_match("cart-00[1-3]", "cart-002"));
  CHECK_FALSE(glob_match("cart-00[1-3]", "cart-004"));
  CHECK(glob_match("*", ""));
  CHECK(glob_match("c?rt", "cart"));
}
