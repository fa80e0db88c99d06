#include "s3/bucket_layout.hpp"

#include <catch2/catch.hpp>

#include <string>
#include <vector>

#include "common/utc_time.hpp"

// Every key kind rendered by BucketLayout parses back to what it was rendered from, hostile
// stream and device ids included; the reader's view (kind, partitions, time, seq) is the
// writer's.

using namespace fleetpipe;
using detail::BucketLayout;
using detail::KeyKind;

namespace {

WallTime at_ms(std::int64_t ms) { return WallTime(std::chrono::milliseconds(ms)); }
std::int64_t ns_of(WallTime t) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
}

const std::vector<std::string> kHostileIds = {
    "cart-01",          "../../etc/passwd", "a/b/c",         "dev=x/stream=evil", "..",
    ".",                "",                 "sp ace\ttab\n", "back\\slash",       "\xff\xfe utf8 \xc3\xa9",
    "_manifests",       "device=other",     std::string(300, 'd'), "a..b...c",    "%2e%2e%2f",
};

std::size_t segments(std::string_view key) { return static_cast<std::size_t>(std::count(key.begin(), key.end(), '/')) + 1; }

}  // namespace

TEST_CASE("key_segment makes any value one safe path segment", "[bucket_layout]") {
  for (const auto& id : kHostileIds) {
    INFO(id);
    std::string s = detail::key_segment(id);
    CHECK_FALSE(s.empty());
    CHECK(s.size() <= 200);
    CHECK(s.find('/') == std::string::npos);
    CHECK(s.find('\\') == std::string::npos);
    CHECK(s.find("..") == std::string::npos);
    CHECK(s != ".");
    for (unsigned char c : s) CHECK((c > 0x20 && c < 0x7f));
    CHECK(detail::key_segment(s) == s);  // idempotent: what a reader sees renders the same key
  }
  CHECK(detail::key_segment("cart-01.v2_x") == "cart-01.v2_x");  // ordinary ids are untouched
}

TEST_CASE("data keys round-trip stream, device, date, time and seq", "[bucket_layout]") {
  const WallTime t = at_ms(1793528430123);  // 2026-11-01T10:20:30.123Z
  for (const std::string prefix : {"fleetpipe", "a/b", ""}) {
    BucketLayout layout(prefix);
    for (const auto& id : kHostileIds) {
      detail::DataKeyFields f;
      f.stream = id;
      f.device = id;
      f.start_ns = ns_of(t);
      f.seq = 4242;
      f.ext = BucketLayout::extension_for("application/vnd.fleetpipe.event");
      std::string key = layout.data_key(f);
      INFO(prefix << " | " << id << " -> " << key);
      CHECK(key.rfind(layout.root_prefix(), 0) == 0);
      CHECK(key.find("//") == std::string::npos);
      CHECK(key.front() != '/');
      // prefix segments + stream= + date= + device= + file name: no id adds or removes one
      CHECK(segments(key) == (prefix.empty() ? 0 : segments(prefix)) + 4);
      auto k = layout.parse(key);
      CHECK(k.kind == KeyKind::data);
      CHECK(k.stream == (id.empty() ? "default" : detail::key_segment(id)));
      CHECK(k.device == detail::key_segment(id));
      CHECK(k.date == "2026-11-01");
      REQUIRE(k.time.has_value());
      CHECK(*k.time == t);
      REQUIRE(k.seq.has_value());
      CHECK(*k.seq == 4242);
      CHECK(key.substr(key.size() - 5) == ".fpev");
    }
  }
}

TEST_CASE("a custom key template renders its placeholders and keeps partitions parseable",
          "[bucket_layout]") {
  BucketLayout layout("p", "{prefix}/{YYYY}/{MM}/{DD}/{HH}/device={device}/date={YYYY-MM-DD}/{event_id}-{seq}.{ext}");
  detail::DataKeyFields f;
  f.device = "dev/1";
  f.start_ns = ns_of(at_ms(1793528430123));
  f.seq = 7;
  f.ext = BucketLayout::extension_for("application/json");
  f.event_id = "ev/../1";
  std::string key = layout.data_key(f);
  CHECK(key == "p/2026/11/01/10/device=dev_1/date=2026-11-01/ev_.__1-0000000000000007.json");
  auto k = layout.parse(key);
  CHECK(k.kind == KeyKind::data);
  CHECK(k.device == "dev_1");
  CHECK(k.date == "2026-11-01");
  f.event_id.clear();  // no event id: the seq stands in
  CHECK(layout.data_key(f) == "p/2026/11/01/10/device=dev_1/date=2026-11-01/0000000000000007-0000000000000007.json");
}

TEST_CASE("manifest keys round-trip device, date, start time and first record id", "[bucket_layout]") {
  const WallTime t = at_ms(1793491200999);  // 2026-11-01T00:00:00.999Z
  for (const std::string prefix : {"fleetpipe", "fleetpipe/", ""}) {
    BucketLayout layout(prefix);
    for (const auto& id : kHostileIds) {
      std::string key = layout.manifest_key(id, ns_of(t), 197);
      INFO(prefix << " | " << id << " -> " << key);
      CHECK(key.rfind(layout.manifests_prefix(), 0) == 0);
      CHECK(key.find("//") == std::string::npos);
      auto k = layout.parse(key);
      CHECK(k.kind == KeyKind::manifest);
      CHECK(k.device == detail::key_segment(id));
      CHECK(k.date == "2026-11-01");
      REQUIRE(k.time.has_value());
      CHECK(*k.time == t);
      REQUIRE(k.seq.has_value());
      CHECK(*k.seq == 197);
    }
  }
  CHECK(BucketLayout("fp").manifest_key("cart-01", ns_of(t), 197) ==
        "fp/_manifests/device=cart-01/date=2026-11-01/20261101T000000.999Z-0000000000000197.jsonl");
}

TEST_CASE("heartbeat keys round-trip device and time", "[bucket_layout]") {
  const WallTime t = at_ms(1795608000000);  // 2026-11-25T12:00:00Z
  for (const std::string prefix : {"fleet-a", ""}) {
    BucketLayout layout(prefix);
    for (const auto& id : kHostileIds) {
      std::string key = layout.heartbeat_key(id, t, 7);
      INFO(prefix << " | " << id << " -> " << key);
      CHECK(key.rfind(layout.heartbeats_prefix(), 0) == 0);
      CHECK(segments(key) == (prefix.empty() ? 0 : 1) + 3);
      auto k = layout.parse(key);
      CHECK(k.kind == KeyKind::heartbeat);
      CHECK(k.device == detail::key_segment(id));
      REQUIRE(k.time.has_value());
      CHECK(*k.time == t);
      CHECK(k.seq == std::optional<std::uint64_t>(7));
    }
  }
  CHECK(BucketLayout("fleet-a").heartbeat_key("dev-1", t, 0) ==
        "fleet-a/_heartbeat/device=dev-1/20261125T120000.000Z-0.json");
}

TEST_CASE("heartbeat keys are unique within a second and a millisecond", "[bucket_layout]") {
  BucketLayout layout("fp");
  const WallTime t = at_ms(1795608000123);
  CHECK(layout.heartbeat_key("d", t, 1) != layout.heartbeat_key("d", t, 2));
  CHECK(layout.heartbeat_key("d", t, 1) != layout.heartbeat_key("d", at_ms(1795608000124), 1));
  auto k = layout.parse(layout.heartbeat_key("d", t, 12));
  REQUIRE(k.kind == KeyKind::heartbeat);
  CHECK(*k.time == t);
  CHECK(*k.seq == 12);
  // Keys written before the millisecond form still parse (no seq).
  auto old = layout.parse("fp/_heartbeat/device=d/20261125T120000Z.json");
  REQUIRE(old.kind == KeyKind::heartbeat);
  CHECK(*old.time == at_ms(1795608000000));
  CHECK_FALSE(old.seq.has_value());
  CHECK(layout.parse("fp/_heartbeat/device=d/20261125T120000.000Z-x1.json").kind == KeyKind::other);
}

TEST_CASE("keys outside the layout parse as other, campaign keys as campaign", "[bucket_layout]") {
  BucketLayout layout("fleetpipe");
  CHECK(layout.parse("other/stream=s/date=2026-11-01/device=d/x.fpev").kind == KeyKind::other);
  CHECK(layout.parse("fleetpipe/stream=s/x.fpev").kind == KeyKind::other);  // no device/date
  CHECK(layout.parse("fleetpipe/_heartbeat/device=d/not-a-time.json").kind == KeyKind::other);
  CHECK(layout.parse("fleetpipe/_manifests/device=d/date=2026-11-01/junk.jsonl").kind == KeyKind::other);
  CHECK(layout.parse("fleetpipe/_campaigns/c1/document.json").kind == KeyKind::campaign);
  CHECK(layout.campaigns_prefix() == "fleetpipe/_campaigns/");
  CHECK(layout.uploads_scan_prefix() == "fleetpipe/");
  CHECK(BucketLayout("").uploads_scan_prefix().empty());  // the whole bucket is never scanned
}

TEST_CASE("key templates are checked as the config parser reports them", "[bucket_layout]") {
  CHECK(BucketLayout::check_template(BucketLayout::kDefaultTemplate).empty());
  CHECK(BucketLayout::check_template("{prefix}/x").find("{seq}") != std::string::npos);
  CHECK(BucketLayout::check_template("{prefix}/{seq}/{stream").find("unbalanced") != std::string::npos);
  CHECK(BucketLayout::check_template("{prefix}/{seq}/{nope}") == "unknown placeholder {nope}");
  CHECK(BucketLayout::check_template("/{seq}").find("must not start with '/'") != std::string::npos);
}

TEST_CASE("UTC formats parse back to the same time", "[bucket_layout][utc_time]") {
  const WallTime t = at_ms(1793528430123);
  CHECK(detail::utc_iso8601_ms(t) == "2026-11-01T10:20:30.123Z");
  CHECK(detail::utc_compact(t) == "20261101T102030Z");
  CHECK(detail::utc_date(t) == "2026-11-01");
  CHECK(detail::utc_compact_ms(ns_of(t)) == "20261101T102030.123Z");
  CHECK(detail::parse_utc(detail::utc_iso8601_ms(t)) == t);
  CHECK(detail::parse_utc_compact(detail::utc_compact_ms(ns_of(t))) == t);
  CHECK(detail::parse_utc_compact(detail::utc_compact(t)) == at_ms(1793528430000));
  auto secs = detail::parse_iso8601("2026-11-01T11:20:30.123+01:00");
  REQUIRE(secs.has_value());
  CHECK(*secs == Approx(1793528430.123));
  CHECK_FALSE(detail::parse_utc("2026-11-01T11:20:30+01:00").has_value());  // UTC only
  CHECK(detail::utc_iso8601_ms(at_ms(-1)) == "1969-12-31T23:59:59.999Z");    // floors
  auto http = detail::parse_http_date("Sun, 01 Nov 2026 10:20:30 GMT");
  REQUIRE(http.has_value());
  CHECK(*http == at_ms(1793528430000));
  CHECK_FALSE(detail::parse_http_date("Sat, 01 Jan 4048 00:00:00 GMT").has_value());
}
