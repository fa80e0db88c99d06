#include "fleetpipe/query.hpp"

#include <catch2/catch.hpp>

#include <filesystem>
#include <map>

#include <nlohmann/json.hpp>

#include "support/fleet_fill.hpp"

// The SQL of docs/fleet-view.md (tests/sql/fleet_view.sql) run in DuckDB (npm @duckdb/node-api,
// installed into the build tree) with read_json(..., hive_partitioning = true) over a local copy
// of a bucket real pipelines filled, giving the same numbers as `fleetpipe query` (events per
// trigger per site) and `fleetpipe status` (last heartbeat per device).

using namespace fleetpipe;
using json = nlohmann::json;

namespace {

const char* kBucket = "fleetpipe-sql-test";
const std::string kNode = FLEETPIPE_BINARY_DIR "/node";

/// Installs @duckdb/node-api into BUILD/node once (npm), with the runner script beside it.
void install_duckdb() {
  if (!std::filesystem::exists(kNode + "/node_modules/@duckdb/node-api/package.json")) {
    std::filesystem::create_directories(kNode);
    test::run("npm install --silent --no-audit --no-fund --prefix " + kNode +
              " @duckdb/node-api 2>&1");
  }
  // ES modules resolve packages from the script's own folder: the runner runs from BUILD/node.
  std::filesystem::copy_file(FLEETPIPE_SOURCE_DIR "/tests/sql/run_duckdb.mjs",
                             kNode + "/run_duckdb.mjs",
                             std::filesystem::copy_options::overwrite_existing);
}

/// A DuckDB number as JSON: BIGINTs come as strings (beyond a double's exact range).
long long integer(const json& v) {
  return v.is_string() ? std::stoll(v.get<std::string>()) : v.get<long long>();
}

std::string site_of(const std::string& heartbeat_json) {
  json doc = json::parse(heartbeat_json, nullptr, false);
  if (doc.is_object() && doc.contains("labels") && doc["labels"].is_object() &&
      doc["labels"].contains("site") && doc["labels"]["site"].is_string())
    return doc["labels"]["site"].get<std::string>();
  return "";
}

}  // namespace

TEST_CASE("DuckDB over a local copy of the bucket gives the numbers of query and status",
          "[sql][s3]") {
  REQUIRE(std::system("command -v node > /dev/null && command -v npm > /dev/null") == 0);
  install_duckdb();
  test::FilledFleet f = test::fill_fleet(kBucket, "sql", std::string(3000, '\x5a'));
  const std::string copy = test::scratch_dir("fleet-sql").string();
  CHECK(std::stoi(test::run("/usr/bin/python3 " FLEETPIPE_SOURCE_DIR "/tests/sql/download_bucket.py " +
                            f.bucket + " " + f.prefix + " " + copy)) > 0);
  const json sql = json::parse(test::run("node " + kNode + "/run_duckdb.mjs " FLEETPIPE_SOURCE_DIR
                                         "/tests/sql/fleet_view.sql " + copy));

  auto reader = BucketReader::open(f.reader_config);
  REQUIRE(reader.ok());
  StatusQuery sq;
  sq.now = f.end + std::chrono::seconds(1);
  sq.window_s = 86400;
  auto devices = (*reader)->status(sq);
  REQUIRE(devices.ok());
  REQUIRE(devices->size() == f.devices.size());

  SECTION("last heartbeat per device") {
    const json& rows = sql.at("last_heartbeat_per_device");
    REQUIRE(rows.size() == devices->size());
    for (std::size_t i = 0; i < rows.size(); ++i) {
      const DeviceStatus& d = (*devices)[i];
      INFO(d.device);
      CHECK(rows[i]["device"].get<std::string>() == d.device);
      const auto last_ns = integer(rows[i]["last_time_unix_ns"]);
      const auto seen_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                               d.last_seen->time_since_epoch()).count();
      CHECK(std::llabs(last_ns - seen_ns) < 1000000);  // status reads the ms-precision "time"
      CHECK(static_cast<double>(integer(rows[i]["backlog_records"])) == d.backlog_records);
      CHECK(static_cast<std::size_t>(integer(rows[i]["heartbeats"])) == d.heartbeats);
      CHECK(rows[i]["site"].get<std::string>() == site_of(d.heartbeat_json));
    }
  }

  SECTION("events per trigger per site") {
    std::map<std::string, std::string> site;
    for (const auto& d : *devices) site[d.device] = site_of(d.heartbeat_json);
    auto events = (*reader)->query(EventQuery{});
    REQUIRE(events.ok());
    REQUIRE(!events->empty());
    std::map<std::pair<std::string, std::string>, long long> want;
    for (const auto& e : *events) {
      CHECK(!e.manifest_key.empty());  // every event came with a manifest line
      for (const auto& t : e.trigger_ids) ++want[{site[e.device], t}];
    }
    std::map<std::pair<std::string, std::string>, long long> got;
    for (const auto& row : sql.at("events_per_trigger_per_site")) {
      got[{row["site"].get<std::string>(), row["trigger"].get<std::string>()}] =
          integer(row["events"]);
    }
    CHECK(got == want);
    CHECK(got.size() == 2);  // both triggers fired

    // The label filter (`fleetpipe query --label site=...`) sees the same labels as the SQL.
    std::size_t unlabeled = 0;
    for (const auto& [device, s] : site) unlabeled += s.empty();
    auto any_site = query_labeled(**reader, EventQuery{}, {{"site", "*"}});
    REQUIRE(any_site.ok());
    CHECK(any_site->size() == (unlabeled == site.size() ? 0 : any_site->size()));
    auto none = query_labeled(**reader, EventQuery{}, {});
    REQUIRE(none.ok());
    CHECK(none->size() == events->size());
    EventQuery two;
    two.limit = 2;
    CHECK(query_labeled(**reader, two, {})->size() == 2);
    CHECK(!parse_label_selector("site").ok());
    CHECK(parse_label_selector("site=store-0*")->second == "store-0*");
  }
}
