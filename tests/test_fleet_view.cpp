#include "cloud/fleet_view.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <chrono>
#include <random>
#include <set>
#include <string>

// The fleet view's aggregation over synthetic heartbeat documents shaped like the pipeline's
// (schema fleetpipe.heartbeat/1, and the compact /2), with restarts, silent devices and missing
// labels.

using namespace fleetpipe;
using namespace fleetpipe::detail;
using json = nlohmann::json;

namespace {

const WallTime kNow = WallTime(std::chrono::seconds(1793500000));

WallTime at(double seconds_before_now) {
  return kNow - std::chrono::duration_cast<WallTime::duration>(
                    std::chrono::duration<double>(seconds_before_now));
}

struct Beat {
  double before_now, uptime, bytes, evicted = 0, paused_s = 0, backlog = 0;
  double fires_bump = 0, fires_door = 0, pauses_network = 0;
};

json heartbeat(const Beat& b, const json& labels) {
  json j;
  j["schema"] = "fleetpipe.heartbeat/1";
  j["time"] = format_query_time(at(b.before_now));
  j["uptime_s"] = b.uptime;
  j["backlog"] = {{"records", b.backlog}, {"bytes", b.backlog * 100}};
  j["buffer"] = {{"evicted_total", b.evicted}, {"rejected_total", 0}};
  j["triggers"] = {{"bump", {{"fires", b.fires_bump}}}, {"door", {{"fires", b.fires_door}}}};
  j["uploads"] = {{"paused", false}, {"bytes_sent", b.bytes}, {"paused_seconds", b.paused_s}};
  j["metrics"] = {{"fleetpipe_uploader_pauses_total",
                   {{"series", json::array({{{"labels", {{"reason", "network"}}},
                                             {"value", b.pauses_network}},
                                            {{"labels", {{"reason", "host"}}}, {"value", 0}}})}}}};
  if (!labels.is_null()) j["labels"] = labels;
  return j;
}

DeviceHistory history(const std::string& device, const std::vector<Beat>& beats,
                      const json& labels = json()) {
  DeviceHistory h;
  h.device = device;
  for (const auto& b : beats) h.beats.push_back(read_heartbeat_point(heartbeat(b, labels), kNow));
  return h;
}

StatusQuery query() {
  StatusQuery q;
  q.now = kNow;
  q.window_s = 3600;
  q.silent_after_s = 900;
  return q;
}

}  // namespace

TEST_CASE("a heartbeat document reads into the fields the fleet view uses") {
  Beat b{100, 50, 1234, 7, 3.5, 9, 2, 1, 4};
  json doc = heartbeat(b, {{"site", "store-01"}});
  doc["campaign"] = {{"version", "v7"}};
  HeartbeatPoint p = read_heartbeat_point(doc, kNow);
  CHECK(p.time == at(b.before_now));
  CHECK(p.uptime_s == b.uptime);
  CHECK(p.bytes_sent == b.bytes);
  CHECK(p.evicted == b.evicted);
  CHECK(p.paused_s == b.paused_s);
  CHECK(p.backlog_records == b.backlog);
  CHECK(p.fires.at("bump") == b.fires_bump);
  CHECK(p.fires.at("door") == b.fires_door);
  CHECK(p.pauses_by_reason.at("network") == b.pauses_network);
  CHECK(p.labels.at("site") == "store-01");
  CHECK(p.campaign_version == "v7");

  SECTION("paused seconds given by reason add up to the total") {
    doc["uploads"]["paused_seconds"] = {{"network", 2.0}, {"schedule", 5.0}};
    HeartbeatPoint q = read_heartbeat_point(doc, kNow);
    CHECK(q.paused_s == 7.0);
    CHECK(q.paused_s_by_reason.at("schedule") == 5.0);
  }
  SECTION("a document without time, labels or counters reads as zeros at the key's time") {
    HeartbeatPoint e = read_heartbeat_point(json::object(), at(42));
    CHECK(e.time == at(42));
    CHECK(e.labels.empty());
    CHECK(e.bytes_sent == 0);
    CHECK(e.fires.empty());
  }
}

/// The compact /2 document (docs/pipeline.md) of the same beat.
json heartbeat_v2(const Beat& b, const json& labels) {
  json j;
  j["schema"] = "fleetpipe.heartbeat/2";
  j["device"] = "d";
  j["t"] = std::chrono::duration_cast<std::chrono::milliseconds>(at(b.before_now).time_since_epoch()).count();
  j["seq"] = 3;
  j["up"] = b.uptime;
  j["state"] = "ok";
  j["backlog"] = {b.backlog, b.backlog * 100, 0, 0};
  j["buf"] = {b.evicted, 0, 0};
  j["fires"] = {{"bump", b.fires_bump}, {"door", b.fires_door}};
  j["tx"] = b.bytes;
  j["pause"] = {{"network", {b.pauses_network, b.paused_s}}};
  if (!labels.is_null()) j["labels"] = labels;
  return j;
}

TEST_CASE("a compact /2 heartbeat reads into the same fields as the /1 document") {
  Beat b{100, 50, 1234, 7, 3.5, 9, 2, 1, 4};
  json v2 = heartbeat_v2(b, {{"site", "store-01"}});
  v2["campaigns"] = json::array({{{"id", "old"}, {"version", 2}, {"state", "expired"}, {"since", "x"}},
                                 {{"id", "fleet"}, {"version", 7}, {"state", "active"}, {"since", "x"}}});
  HeartbeatPoint p = read_heartbeat_point(v2, at(999));
  HeartbeatPoint q = read_heartbeat_point(heartbeat(b, {{"site", "store-01"}}), at(999));
  CHECK(p.time == q.time);
  CHECK(p.uptime_s == q.uptime_s);
  CHECK(p.bytes_sent == q.bytes_sent);
  CHECK(p.evicted == q.evicted);
  CHECK(p.paused_s == q.paused_s);
  CHECK(p.paused_s_by_reason.at("network") == b.paused_s);
  CHECK(p.backlog_records == q.backlog_records);
  CHECK(p.backlog_bytes == q.backlog_bytes);
  CHECK(p.fires == q.fires);
  CHECK(p.pauses_by_reason.at("network") == b.pauses_network);
  CHECK(p.labels == q.labels);
  CHECK(p.campaign_version == "fleet@7");  // the active one
}

TEST_CASE("window figures are sums of heartbeat deltas") {
  std::vector<Beat> beats = {{900, 1000, 5000, 1, 10, 0, 3, 0, 1},
                             {600, 1300, 8000, 1, 40, 2, 5, 1, 1},
                             {300, 1600, 11000, 4, 70, 6, 9, 1, 2}};
  DeviceWindow d = summarise(history("a", beats), kNow, query());
  const double span = beats.front().before_now - beats.back().before_now;
  CHECK(d.span_s == Approx(span));
  CHECK(d.bytes == beats.back().bytes - beats.front().bytes);
  CHECK(d.upload_bytes_per_s() == Approx((beats.back().bytes - beats.front().bytes) / span));
  CHECK(d.evicted == beats.back().evicted - beats.front().evicted);
  CHECK(d.evicting);
  CHECK(d.fires.at("bump") == beats.back().fires_bump - beats.front().fires_bump);
  CHECK(d.pauses_by_reason.at("network") == beats.back().pauses_network - beats.front().pauses_network);
  CHECK(d.restarts == 0);
  CHECK_FALSE(d.silent);
  CHECK(d.seconds_since_last == Approx(beats.back().before_now));
}

TEST_CASE("a counter that goes down is a restart: the later value is the delta") {
  // The device restarted between the 2nd and 3rd heartbeat (uptime 200 s).
  std::vector<Beat> beats = {{900, 1000, 5000, 2, 0, 0, 3},
                             {600, 1300, 8000, 2, 0, 0, 5},
                             {300, 200, 1500, 1, 0, 0, 2}};
  DeviceWindow d = summarise(history("r", beats), kNow, query());
  CHECK(d.restarts == 1);
  CHECK(d.bytes == (beats[1].bytes - beats[0].bytes) + beats[2].bytes);
  CHECK(d.evicted == beats[2].evicted);  // 0 growth before, then 1 since the restart
  CHECK(d.fires.at("bump") == (beats[1].fires_bump - beats[0].fires_bump) + beats[2].fires_bump);
  // Covered: the first interval and the new run's uptime (not the time the device was down).
  CHECK(d.span_s == Approx((beats[0].before_now - beats[1].before_now) + beats[2].uptime));
}

TEST_CASE("a device with one heartbeat counts since its start, and goes silent") {
  std::vector<Beat> beats = {{2000, 400, 800, 0, 0, 0, 4}};
  DeviceWindow d = summarise(history("s", beats), kNow, query());
  CHECK(d.silent);  // 2000 s > silent_after 900 s
  CHECK(d.span_s == beats[0].uptime);
  CHECK(d.upload_bytes_per_s() == Approx(beats[0].bytes / beats[0].uptime));
  CHECK(d.fires.at("bump") == beats[0].fires_bump);
}

TEST_CASE("devices group by label value, those without the label last") {
  auto q = query();
  std::vector<Beat> a1 = {{600, 1000, 0, 0, 0, 5, 0}, {0, 1600, 6000, 0, 60, 5, 6}};
  std::vector<Beat> a2 = {{600, 1000, 0, 0, 0, 1, 0}, {0, 1600, 1200, 3, 0, 2, 0}};
  std::vector<Beat> b1 = {{600, 1000, 0, 0, 0, 0, 0}, {0, 1600, 600, 0, 0, 0, 1}};
  std::vector<Beat> none = {{3000, 100, 10, 0, 0, 0, 0}, {2400, 700, 70, 0, 0, 7, 0}};
  std::vector<DeviceWindow> windows = {
      summarise(history("a1", a1, {{"site", "a"}}), kNow, q),
      summarise(history("a2", a2, {{"site", "a"}, {"model", "m2"}}), kNow, q),
      summarise(history("b1", b1, {{"site", "b"}}), kNow, q),
      summarise(history("n1", none), kNow, q)};
  auto groups = aggregate(windows, "site");
  REQUIRE(groups.size() == 3);
  const FleetGroup& a = groups[0];
  CHECK(a.value == "a");
  CHECK(a.has_value);
  CHECK(a.devices == std::vector<std::string>{"a1", "a2"});
  const double span_a = 2 * (a1[0].before_now - a1[1].before_now);
  CHECK(a.observed_device_s == Approx(span_a));
  CHECK(a.upload_bytes_per_s == Approx((a1[1].bytes + a2[1].bytes) / 600.0));
  CHECK(a.paused_share == Approx(a1[1].paused_s / span_a));
  CHECK(a.evicting == 1);
  CHECK(a.evictions_per_device_day == Approx(a2[1].evicted * 86400 / span_a));
  CHECK(a.fires_per_device_hour.at("bump") == Approx(a1[1].fires_bump * 3600 / span_a));
  CHECK(a.backlog_records == a1[1].backlog + a2[1].backlog);
  CHECK(groups[1].value == "b");
  CHECK(groups[1].devices.size() == 1);
  const FleetGroup& n = groups[2];
  CHECK_FALSE(n.has_value);
  CHECK(n.devices == std::vector<std::string>{"n1"});
  CHECK(n.silent == 1);

  SECTION("no label: one group for the whole fleet") {
    auto all = aggregate(windows, "");
    REQUIRE(all.size() == 1);
    CHECK(all[0].devices.size() == windows.size());
    CHECK(all[0].silent == 1);
  }
  SECTION("Prometheus text carries each group's figures under the label") {
    std::string text = fleet_status_prometheus(groups);
    CHECK(text.find("# TYPE fleetpipe_fleet_devices gauge") != std::string::npos);
    CHECK(text.find("fleetpipe_fleet_devices{site=\"a\"} " + std::to_string(a.devices.size())) !=
          std::string::npos);
    CHECK(text.find("fleetpipe_fleet_devices{site=\"\"} 1") != std::string::npos);
    CHECK(text.find("fleetpipe_fleet_trigger_fires_per_device_hour{site=\"a\",trigger=\"bump\"}") !=
          std::string::npos);
    CHECK(text.find("fleetpipe_fleet_devices_silent{site=\"\"} 1") != std::string::npos);
  }
}

TEST_CASE("campaign versions are counted per group") {
  auto q = query();
  std::vector<DeviceWindow> windows;
  for (const char* v : {"v1", "v2", "v2"}) {
    json doc = heartbeat({10, 100, 0}, json());
    doc["campaign"] = {{"version", v}, {"state", "applied"}};
    DeviceHistory h;
    h.device = std::string("d-") + v + std::to_string(windows.size());
    h.beats.push_back(read_heartbeat_point(doc, kNow));
    windows.push_back(summarise(h, kNow, q));
  }
  auto groups = aggregate(windows, "");
  REQUIRE(groups.size() == 1);
  CHECK(groups[0].campaign_versions.at("v1") == 1);
  CHECK(groups[0].campaign_versions.at("v2") == 2);
}

TEST_CASE("time bins share out the same deltas as the window totals") {
  auto q = query();
  std::vector<DeviceHistory> hs = {
      history("a", {{3500, 100, 0, 0, 0, 1, 0}, {2000, 1600, 3000, 0, 0, 4, 2},
                    {100, 3500, 9000, 0, 0, 2, 7}}),
      history("b", {{3000, 50, 100, 0, 0, 0, 0}, {1000, 30, 40, 0, 0, 3, 1}})};  // restarted
  const std::size_t n = 12;
  auto bins = fleet_bins(hs, kNow, q.window_s, n);
  REQUIRE(bins.size() == n);
  double bytes = 0, fires = 0;
  for (const auto& b : bins) {
    bytes += b.upload_bytes_per_s * q.window_s / n;
    fires += b.fires;
  }
  double want_bytes = 0, want_fires = 0;
  for (const auto& h : hs) {
    DeviceWindow d = summarise(h, kNow, q);
    want_bytes += d.bytes;
    want_fires += d.fires.at("bump");
  }
  CHECK(bytes == Approx(want_bytes));
  CHECK(fires == Approx(want_fires));
  // The last bin's backlog is the sum of the newest heartbeats.
  CHECK(bins.back().backlog_records == hs[0].beats.back().backlog_records +
                                           hs[1].beats.back().backlog_records);
}

// ---- reading few heartbeats: read_history gives the figures of reading them all -------------

namespace {

/// A day of /2 heartbeats every 300 s (and one before the window), with restarts (counters,
/// uptime and seq from zero) and campaign changes (trigger counters from zero) where asked.
struct Sim {
  std::vector<json> docs;
  std::vector<HeartbeatKey> keys;
};

Sim simulate_device(unsigned seed, const std::vector<int>& restarts_at,
                    const std::vector<int>& campaigns_at, int beats = 290) {
  std::mt19937 rng(seed);
  Sim s;
  double up = 5000, tx = 1e6, ev = 3, bump = 10, pauses = 1, paused = 20;
  std::uint64_t seq = 40;
  int campaign = 1;
  for (int i = 0; i < beats; ++i) {
    const double before_now = 86400 + 300 - 300.0 * i - 7;
    if (i > 0) {
      up += 300, tx += rng() % 5000, ev += rng() % 3 == 0, bump += rng() % 4, paused += rng() % 30;
      pauses += rng() % 5 == 0;
      ++seq;
    }
    if (std::find(restarts_at.begin(), restarts_at.end(), i) != restarts_at.end()) {
      up = 100, tx = rng() % 3000, ev = 0, bump = rng() % 2, paused = 0, pauses = 0, seq = 0;
    }
    if (std::find(campaigns_at.begin(), campaigns_at.end(), i) != campaigns_at.end()) {
      ++campaign, bump = 0;
    }
    json j;
    j["schema"] = "fleetpipe.heartbeat/2";
    j["t"] = std::chrono::duration_cast<std::chrono::milliseconds>(at(before_now).time_since_epoch()).count();
    j["seq"] = seq;
    j["up"] = up;
    j["state"] = "ok";
    j["backlog"] = {rng() % 50, rng() % 5000, 0, 0};
    j["buf"] = {ev, 0, 0};
    j["fires"] = {{"bump", bump}};
    j["tx"] = tx;
    j["pause"] = {{"network", {pauses, paused}}};
    j["campaigns"] = json::array({{{"id", "fleet"}, {"version", campaign}, {"state", "active"},
                                   {"since", std::to_string(campaign)}}});
    j["labels"] = {{"site", "s1"}};
    s.docs.push_back(j);
    HeartbeatKey k;
    k.time = at(before_now) + std::chrono::milliseconds(1);  // a key is named just after
    k.seq = seq;
    k.has_seq = true;
    k.key = "k" + std::to_string(i);
    s.keys.push_back(k);
  }
  return s;
}

struct Compared {
  std::size_t fetched = 0;
};

/// Checks read_history's points against every heartbeat (less those `skip` names): the window
/// figures and, with `bins`, the time bins.
Compared compare(const Sim& s, std::size_t bins, const std::set<std::size_t>& skip = {}) {
  auto q = query();
  q.window_s = 86400;
  DeviceHistory full;
  full.device = "d";
  for (std::size_t i = 0; i < s.docs.size(); ++i) {
    if (!skip.count(i)) full.beats.push_back(read_heartbeat_point(s.docs[i], s.keys[i].time));
  }
  WindowKeys w;
  w.device = "d";
  w.keys = s.keys;
  Compared c;
  FetchPoint fetch = [&](const HeartbeatKey& k) -> Result<std::optional<HeartbeatPoint>> {
    ++c.fetched;
    const std::size_t i = std::stoul(k.key.substr(1));
    if (skip.count(i)) return std::optional<HeartbeatPoint>();
    return std::optional<HeartbeatPoint>(read_heartbeat_point(s.docs[i], k.time));
  };
  auto edges = bins ? bin_edges(kNow, q.window_s, bins) : std::vector<WallTime>();
  auto sparse = read_history(w, edges, fetch);
  REQUIRE(sparse.ok());
  const DeviceWindow a = summarise(full, kNow, q), b = summarise(*sparse, kNow, q);
  CHECK(b.restarts == a.restarts);
  CHECK(b.span_s == Approx(a.span_s));
  CHECK(b.bytes == Approx(a.bytes));
  CHECK(b.evicted == Approx(a.evicted));
  CHECK(b.paused_s == Approx(a.paused_s));
  CHECK(b.fires.at("bump") == Approx(a.fires.at("bump")));
  CHECK(b.pauses_by_reason.at("network") == Approx(a.pauses_by_reason.at("network")));
  CHECK(b.paused_s_by_reason.at("network") == Approx(a.paused_s_by_reason.at("network")));
  CHECK(b.last.backlog_records == a.last.backlog_records);
  if (bins) {
    auto fa = fleet_bins({full}, kNow, q.window_s, bins);
    auto fb = fleet_bins({*sparse}, kNow, q.window_s, bins);
    for (std::size_t k = 0; k < bins; ++k) {
      INFO("bin " << k);
      CHECK(fb[k].upload_bytes_per_s == Approx(fa[k].upload_bytes_per_s));
      CHECK(fb[k].backlog_records == fa[k].backlog_records);
      CHECK(fb[k].fires == Approx(fa[k].fires));
      CHECK(fb[k].paused_share == Approx(fa[k].paused_share));
      CHECK(fb[k].evictions == Approx(fa[k].evictions));
    }
  }
  return c;
}

}  // namespace

TEST_CASE("read_history: two reads give a steady device's window figures") {
  const Sim s = simulate_device(1, {}, {});
  CHECK(compare(s, 0).fetched == 2);
}

TEST_CASE("read_history: a restart or a campaign change is found and summed as all reads would") {
  SECTION("one restart") { CHECK(compare(simulate_device(2, {137}, {}), 0).fetched <= 2 + 2); }
  SECTION("restarts, one right after the baseline and one at the newest") {
    compare(simulate_device(3, {1, 60, 61, 289}, {}), 0);
  }
  SECTION("a campaign resets the trigger counters without a restart") {
    CHECK(compare(simulate_device(4, {}, {100}), 0).fetched <= 2 + 2 * 9);
  }
  SECTION("a restart whose seq does not go down (its first heartbeats failed)") {
    Sim s = simulate_device(5, {150}, {});
    for (std::size_t i = 150; i < s.keys.size(); ++i) s.keys[i].seq += 1000, s.docs[i]["seq"] = s.keys[i].seq;
    CHECK(compare(s, 0).fetched <= 2 + 2 * 9);
  }
  SECTION("heartbeats that are gone or do not parse are skipped, as all reads skip them") {
    compare(simulate_device(6, {80}, {}), 0, {0, 79, 80, 200, 289});
  }
}

TEST_CASE("read_history: the report's bins need the last heartbeat before each edge") {
  const std::size_t bins = 48;
  const Compared steady = compare(simulate_device(7, {}, {}), bins);
  // One per bin edge (49) and the first and newest; those within 2 s of an edge are few.
  CHECK(steady.fetched <= bins + 1 + 2 + 4);
  CHECK(steady.fetched < 290 / 4);
  compare(simulate_device(8, {33, 170}, {90}), bins);
  compare(simulate_device(9, {}, {}), 12, {10, 11, 12});
}
