#include "cloud/fleet_view.hpp"
#include "cloud/report.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <filesystem>
#include <map>
#include <regex>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "support/fleet_fill.hpp"

// The fleet report from a bucket real pipelines filled, rendered by headless Chromium: the
// numbers in the rendered DOM are checked against the heartbeats read back with boto3, and a
// screenshot is saved under the build tree (build/test-artifacts/fleet-report.png).

using namespace fleetpipe;
using json = nlohmann::json;

namespace {

const char* kBucket = "fleetpipe-report-test";

std::string tool(const std::string& args) {
  return test::run("/usr/bin/python3 " FLEETPIPE_SOURCE_DIR "/tests/python/s3_bucket_tool.py " + args);
}

/// Every heartbeat document (the devices' compact fleetpipe.heartbeat/2, read raw) of one
/// device, oldest first: by time ("t", unix ms), then "seq" for two in one millisecond.
std::vector<json> heartbeats(const test::FilledFleet& f, const std::string& device) {
  std::istringstream in(tool("list " + f.bucket + " " + f.prefix + "/_heartbeat/device=" + device + "/"));
  std::vector<json> out;
  std::uint64_t size;
  std::string key;
  while (in >> size >> key) out.push_back(json::parse(tool("get " + f.bucket + " " + key)));
  for (const auto& hb : out) REQUIRE(hb["schema"] == "fleetpipe.heartbeat/2");
  std::stable_sort(out.begin(), out.end(), [](const json& a, const json& b) {
    return std::make_pair(a["t"].get<std::int64_t>(), a["seq"].get<std::int64_t>()) <
           std::make_pair(b["t"].get<std::int64_t>(), b["seq"].get<std::int64_t>());
  });
  return out;
}

/// The opening tags of `dom` that match `tag_regex`.
std::vector<std::string> tags(const std::string& dom, const std::string& tag_regex) {
  std::vector<std::string> out;
  std::regex re(tag_regex);
  for (auto it = std::sregex_iterator(dom.begin(), dom.end(), re); it != std::sregex_iterator(); ++it)
    out.push_back(it->str());
  return out;
}

std::string attr(const std::string& tag, const std::string& name) {
  std::smatch m;
  if (std::regex_search(tag, m, std::regex(" " + name + "=\"([^\"]*)\""))) return m[1];
  return "<absent>";
}

double num_attr(const std::string& tag, const std::string& name) {
  std::string v = attr(tag, name);
  INFO(name << " in " << tag);
  REQUIRE(v != "<absent>");
  return std::stod(v);
}

double fires_total(const json& hb) {
  double n = 0;
  for (const auto& [name, fires] : hb["fires"].items()) n += fires.get<double>();
  return n;
}

}  // namespace

TEST_CASE("the fleet report renders in Chromium with the heartbeats' numbers", "[report][s3]") {
  REQUIRE(std::system("command -v chromium > /dev/null") == 0);
  const std::string work = test::scratch_dir("report-s3").string();
  const std::string frame = test::chromium_jpeg(work, "cam");
  REQUIRE(frame.compare(0, 2, "\xff\xd8") == 0);  // a JPEG
  test::FilledFleet f = test::fill_fleet(kBucket, "rep", frame);

  auto reader = BucketReader::open(f.reader_config);
  REQUIRE(reader.ok());
  detail::ReportOptions o;
  o.status.now = f.end + std::chrono::seconds(1);
  o.status.window_s = 3600;
  o.status.silent_after_s = 150;
  o.bucket = f.bucket;
  o.bins = 24;
  const std::string out_dir = work + "/report";
  auto written = detail::write_report(**reader, o, out_dir);
  INFO((written ? std::string() : written.error().message));
  REQUIRE(written.ok());
  CHECK(written->devices == f.devices.size());

  const std::string page = test::slurp(written->path);
  // Self-contained: no script, no external resource.
  CHECK(page.find("<script") == std::string::npos);
  CHECK(std::regex_search(page, std::regex("(src|href)=\"https?:")) == false);

  const std::string dom = test::run("chromium --headless --no-sandbox --disable-gpu --dump-dom file://" +
                                    written->path + " 2>/dev/null");
  REQUIRE(dom.find("id=\"fleet-devices\"") != std::string::npos);

  // Overview against the heartbeats.
  std::map<std::string, std::vector<json>> hbs;
  for (const auto& d : f.devices) hbs[d] = heartbeats(f, d);
  auto tile = tags(dom, "<div class=\"tile[^\"]*\" id=\"fleet-devices\"[^>]*>");
  REQUIRE(tile.size() == 1);
  CHECK(num_attr(tile[0], "data-value") == static_cast<double>(f.devices.size()));
  const double now_s =
      std::chrono::duration<double>(o.status.now->time_since_epoch()).count();
  const std::string all_devices = dom.substr(dom.find("<table id=\"devices\""));
  std::size_t silent = 0;
  double backlog = 0;
  std::map<std::string, double> fires_by_trigger;
  for (const auto& [d, beats] : hbs) {
    REQUIRE(beats.size() >= 2);
    const json& last = beats.back();
    const double last_s = last["t"].get<double>() / 1e3;
    silent += now_s - last_s > o.status.silent_after_s;
    backlog += last["backlog"][0].get<double>();
    for (const auto& [name, fires] : last["fires"].items())
      fires_by_trigger[name] += fires.get<double>() - beats.front()["fires"][name].get<double>();

    auto row = tags(all_devices, "<tr class=\"device[^\"]*\" data-device=\"" + d + "\"[^>]*>");
    INFO(d);
    REQUIRE(row.size() == 1);
    CHECK(num_attr(row[0], "data-backlog-records") == last["backlog"][0].get<double>());
    CHECK(num_attr(row[0], "data-bytes-sent") == last["tx"].get<double>());
    CHECK(num_attr(row[0], "data-fires") == fires_total(last) - fires_total(beats.front()));
    CHECK(attr(row[0], "data-silent") == (now_s - last_s > o.status.silent_after_s ? "1" : "0"));
  }
  CHECK(silent == 1);  // the device stopped early
  CHECK(num_attr(tags(dom, "<div class=\"tile[^\"]*\" id=\"fleet-silent\"[^>]*>").at(0), "data-value") ==
        static_cast<double>(silent));
  CHECK(num_attr(tags(dom, "<div class=\"tile[^\"]*\" id=\"fleet-backlog-records\"[^>]*>").at(0),
                 "data-value") == backlog);
  REQUIRE(fires_by_trigger.size() == 2);
  for (const auto& [t, n] : fires_by_trigger) {
    INFO(t);
    auto row = tags(dom, "<tr class=\"trigger-rate\" data-trigger=\"" + t + "\"[^>]*>");
    REQUIRE(row.size() == 1);
    CHECK(num_attr(row[0], "data-fires") == n);
    CHECK(n > 0);
  }
  // The window figures equal those of every heartbeat read (the report reads only some).
  {
    std::vector<detail::DeviceWindow> windows;
    for (const auto& [d, beats] : hbs) {
      detail::DeviceHistory h;
      h.device = d;
      for (const auto& b : beats) {
        const WallTime t{std::chrono::milliseconds(b["t"].get<std::int64_t>())};
        h.beats.push_back(detail::read_heartbeat_point(b, t));
      }
      windows.push_back(detail::summarise(h, *o.status.now, o.status));
    }
    const FleetGroup all = detail::aggregate(windows, "").at(0);
    auto value = [&](const char* id) {
      return num_attr(tags(dom, std::string("<div class=\"tile[^\"]*\" id=\"") + id + "\"[^>]*>").at(0),
                      "data-value");
    };
    CHECK(value("fleet-upload-bytes-per-s") == Approx(all.upload_bytes_per_s).epsilon(1e-4));
    CHECK(value("fleet-paused-share") == Approx(all.paused_share).epsilon(1e-4));
    CHECK(value("fleet-paused-share") > 0);  // the paused device
    CHECK(value("fleet-evictions-per-device-day") == Approx(all.evictions_per_device_day).epsilon(1e-4));
    CHECK(value("fleet-restarts") == static_cast<double>(all.restarts));
    std::size_t listed = 0;
    for (const auto& [d, beats] : hbs) listed += beats.size();
    CHECK(written->heartbeats == listed);
    CHECK(written->heartbeats_read <= written->heartbeats);
  }
  // Devices without labels (today's heartbeats) form one "(none)" group under no label table.
  CHECK(num_attr(tags(dom, "<span class=\"muted\" id=\"flagged-count\"[^>]*>").at(0), "data-value") >= 1);

  // Charts are inline SVG with data drawn.
  for (const char* id : {"chart-throughput", "chart-backlog", "chart-fires", "chart-paused"}) {
    INFO(id);
    CHECK(dom.find(std::string("id=\"") + id + "\"") != std::string::npos);
  }
  CHECK(tags(dom, "<polyline[^>]*points=\"[0-9]").size() >= 4);

  // The gallery: decoded events of both triggers, with JPEG thumbnails, linking to real objects.
  auto cards = tags(dom, "<figure class=\"event\"[^>]*>");
  REQUIRE(!cards.empty());
  std::set<std::string> triggers_shown;
  const std::string listing = tool("list " + f.bucket + " " + f.prefix + "/stream=");
  for (const auto& c : cards) {
    triggers_shown.insert(attr(c, "data-trigger"));
    CHECK(listing.find(attr(c, "data-object-key")) != std::string::npos);
  }
  CHECK(triggers_shown == std::set<std::string>{"brake", "bump"});
  CHECK(tags(dom, "<img class=\"thumb\"[^>]*src=\"data:image/jpeg;base64,").size() >= 1);
  CHECK(tags(dom, "<svg class=\"chart\" id=\"event-").size() >= 2);
  CHECK(dom.find("class=\"warn\"") == std::string::npos);  // every event decoded

  // A screenshot for people, under the build tree.
  std::filesystem::create_directories(FLEETPIPE_BINARY_DIR "/test-artifacts");
  const std::string png = FLEETPIPE_BINARY_DIR "/test-artifacts/fleet-report.png";
  std::filesystem::remove(png);
  test::run("chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1400,2400 "
            "--screenshot=" + png + " file://" + written->path + " > /dev/null 2>&1");
  CHECK(test::slurp(png).compare(0, 4, "\x89PNG") == 0);
  std::filesystem::copy_file(written->path, FLEETPIPE_BINARY_DIR "/test-artifacts/fleet-report.html",
                             std::filesystem::copy_options::overwrite_existing);
}
