#include "fleetpipe/error.hpp"

#include <catch2/catch.hpp>

using namespace fleetpipe;

TEST_CASE("error: codes belong to the fleetpipe category with readable messages", "[error]") {
  std::error_code ec = errc::storage_full;
  CHECK(ec.category().name() == std::string("fleetpipe"));
  CHECK(ec.message() == "storage full");
  CHECK(make_error_code(errc::insecure_refused).message().find("allow_insecure_http") !=
        std::string::npos);
}

TEST_CASE("error: Result holds a value or an error", "[error]") {
  Result<int> good = 5;
  REQUIRE(good.ok());
  CHECK(*good == 5);
  CHECK(good.value() == 5);

  Result<int> bad = Error(errc::not_found, "no such record 7");
  REQUIRE_FALSE(bad.ok());
  CHECK(bad.error().is(errc::not_found));
  CHECK_THROWS_AS(bad.value(), Exception);
  try {
    (void)bad.value();
  } catch (const Exception& e) {
    CHECK(e.error().message == "no such record 7");
  }

  Result<void> v;
  CHECK(v.ok());
  Result<void> verr(errc::paused, "paused by host");
  CHECK_FALSE(verr.ok());
  CHECK(verr.error().message == "paused by host");
}
