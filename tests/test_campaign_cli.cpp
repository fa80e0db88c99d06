// The `fleetpipe campaign` command (keygen, sign, validate) run as a user would.
#include "fleetpipe/campaign.hpp"

#include <catch2/catch.hpp>
#include <sys/stat.h>
#include <sys/wait.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "support/campaign_docs.hpp"
#include "support/shell.hpp"
#include "support/test_paths.hpp"

using namespace fleetpipe;
using nlohmann::json;

namespace {

struct Ran {
  int status = -1;
  std::string out;  // stdout and stderr
};

Ran cli(const std::string& args) {
  const std::string bin = std::string(FLEETPIPE_BINARY_DIR) + "/fleetpipe";
  REQUIRE(std::filesystem::exists(bin));  // built with FLEETPIPE_BUILD_CLI (target fleetpipe_cli)
  Ran r;
  FILE* p = popen((bin + " " + args + " 2>&1").c_str(), "r");
  REQUIRE(p);
  char buf[4096];
  std::size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) r.out.append(buf, n);
  int rc = pclose(p);
  r.status = WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
  return r;
}

void write(const std::filesystem::path& p, const std::string& text) { std::ofstream(p) << text; }

}  // namespace

TEST_CASE("campaign keygen, sign and validate from the command line", "[campaign]") {
  if (!std::filesystem::exists(std::string(FLEETPIPE_BINARY_DIR) + "/fleetpipe")) {
    WARN("the fleetpipe command is not built (FLEETPIPE_BUILD_CLI=OFF, e.g. scripts/cross): skipped");
    return;
  }
  auto dir = fleetpipe::test::scratch_dir("campaign-cli");
  const auto key = (dir / "ml.pem").string();
  auto gen = cli("campaign keygen --out " + key + " --id ml-cli");
  REQUIRE(gen.status == 0);
  struct stat st {};
  REQUIRE(::stat(key.c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);
  CHECK(gen.out.find("PRIVATE KEY") == std::string::npos);
  const auto brace = gen.out.find("{\"ed25519\"");  // the stdout line, beside stderr's note
  REQUIRE(brace != std::string::npos);
  const json entry = json::parse(gen.out.substr(brace, gen.out.find('\n', brace) - brace));
  CHECK(entry["id"] == "ml-cli");
  const std::string before = fleetpipe::test::slurp(key);
  auto again = cli("campaign keygen --out " + key + " --id other");
  CHECK(again.status == 1);
  CHECK(fleetpipe::test::slurp(key) == before);  // never overwritten

  // A device config with labels and a "campaigns" section trusting that key.
  const WallTime now = std::chrono::system_clock::now();
  json device = {{"device_id", "cart-0001"},
                 {"labels", {{"model", "cart-v3"}}},
                 {"streams", {{{"name", "imu"}, {"channels", {"ax", "speed"}}}}},
                 {"triggers", json::array()},
                 {"uploader", {{"enabled", false}}},
                 {"campaigns", {{"enabled", true}, {"trusted_keys", {entry}}}}};
  write(dir / "device.json", device.dump());
  json doc = fleetpipe::test::campaign_doc("fleet", 3, now);
  doc["content"]["triggers"][0]["priority"] = 7;
  write(dir / "doc.json", doc.dump());
  json bad = doc;
  bad["content"]["triggers"][0]["channel"] = "rpm";
  write(dir / "bad.json", bad.dump());

  auto ok = cli("campaign validate " + (dir / "doc.json").string() + " --device-config " +
                (dir / "device.json").string() + " --json");
  REQUIRE(ok.status == 0);
  json report = json::parse(ok.out);
  CHECK(report["targeted"] == true);
  CHECK(report["version"] == 3);
  CHECK(report["rollout_bucket"] == campaign_rollout_bucket("fleet", "cart-0001"));
  CHECK(report["clamped"].size() == 2);  // priority 7 -> 5, bytes/day -> the share
  auto refused = cli("campaign validate " + (dir / "bad.json").string() + " --device-config " +
                     (dir / "device.json").string());
  CHECK(refused.status == 1);
  CHECK(refused.out.find("/content/triggers/0/channel") != std::string::npos);

  const auto env_path = (dir / "fleet.json").string();
  auto signed_ = cli("campaign sign " + (dir / "doc.json").string() + " --key " + key +
                     " --key-id ml-cli --out " + env_path);
  REQUIRE(signed_.status == 0);
  auto opened = open_campaign_envelope(fleetpipe::test::slurp(env_path),
                                       {{"ml-cli", entry["ed25519"].get<std::string>()}});
  REQUIRE(opened);
  CHECK(opened->payload == doc.dump());
  auto checked = cli("campaign validate " + env_path + " --device-config " +
                     (dir / "device.json").string());
  CHECK(checked.status == 0);
  CHECK(checked.out.find("(key ml-cli)") != std::string::npos);

  // A key others can read is refused, and the refusal does not show it.
  ::chmod(key.c_str(), 0640);
  auto exposed = cli("campaign sign " + (dir / "doc.json").string() + " --key " + key +
                     " --key-id ml-cli");
  CHECK(exposed.status == 2);
  CHECK(exposed.out.find("0640") != std::string::npos);
  CHECK(exposed.out.find("PRIVATE") == std::string::npos);
}

TEST_CASE("campaign forecast replays the campaign's triggers over recorded samples", "[campaign]") {
  if (!std::filesystem::exists(std::string(FLEETPIPE_BINARY_DIR) + "/fleetpipe")) {
    WARN("the fleetpipe command is not built: skipped");
    return;
  }
  auto dir = fleetpipe::test::scratch_dir("campaign-cli-forecast");
  // The device of campaign_docs.hpp as a config file; the campaign adds "fast_1" (speed > 3).
  write(dir / "device.json", R"({"device_id": "cart-0001", "labels": {"model": "cart-v3"},
    "streams": [{"name": "imu", "channels": ["ax", "speed"]}],
    "triggers": [{"name": "hard_brake", "type": "threshold", "stream": "imu", "channel": "ax",
                  "below": -4}]})");
  json doc = fleetpipe::test::campaign_doc("fleet", 1, std::chrono::system_clock::now());
  doc["targeting"]["rollout_percent"] = 25;
  doc["content"]["triggers"][0]["cooldown"] = "1s";
  write(dir / "doc.json", doc.dump());
  // 100 s at 10 Hz: speed above 3 for one sample every 10 s (10 fires), ax never below -4.
  std::ofstream s(dir / "samples.jsonl");
  for (int i = 0; i < 1000; ++i) {
    s << json{{"t", i * 0.1}, {"stream", "imu"}, {"v", {{"ax", 0.0}, {"speed", i % 100 == 50 ? 5.0 : 0.0}}}}.dump() << "\n";
  }
  s.close();
  auto r = cli("campaign forecast " + (dir / "doc.json").string() + " --device-config " +
               (dir / "device.json").string() + " --samples " + (dir / "samples.jsonl").string() +
               " --fleet 400 --json");
  INFO(r.out);
  REQUIRE(r.status == 0);
  json out = json::parse(r.out);
  CHECK(out["triggers"]["fast_1"]["events"] == 10);
  CHECK(out["triggers"]["hard_brake"]["events"] == 0);
  CHECK(out["campaign"]["targeted_devices"] == 100);  // 25 % of 400
  const double per_day = out["forecast"]["events_per_day"].get<double>();
  CHECK(per_day == Approx(10 * 86400.0 / 99.9).epsilon(0.01));
  CHECK(out["forecast"]["fleet"]["events_per_day"].get<double>() == Approx(per_day * 100));

  // A document naming a stream the device lacks is refused with its pointer.
  doc["content"]["triggers"][0]["stream"] = "gps";
  write(dir / "bad.json", doc.dump());
  auto bad = cli("campaign forecast " + (dir / "bad.json").string() + " --device-config " +
                 (dir / "device.json").string() + " --samples " + (dir / "samples.jsonl").string());
  CHECK(bad.status == 1);
  CHECK(bad.out.find("/content/triggers/0/stream") != std::string::npos);
}
