// `fleetpipe campaign forecast|status`: what a campaign will cost before it goes live (its
// triggers replayed over recorded samples) and where it stands in the fleet (from heartbeats).
#include <CLI/CLI.hpp>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <map>
#include <sstream>
#include <string>

#include <nlohmann/json.hpp>

#include "campaign/internal.hpp"
#include "cli/bucket_options.hpp"
#include "cli/campaign_device.hpp"
#include "cli/campaign_report.hpp"
#include "cli/commands.hpp"
#include "cli/format.hpp"
#include "cli/replay.hpp"
#include "fleetpipe/campaign.hpp"
#include "fleetpipe/query.hpp"

namespace fleetpipe::cli {

using nlohmann::json;

int campaign_forecast(const std::string& document_text, const std::string& device_config,
                      const std::string& samples, std::uint64_t fleet, json& out,
                      std::string& error) {
  auto doc = parse_campaign_document(document_text);
  if (!doc) return error = doc.error().message, 1;
  auto dev = load_device(device_config);
  if (!dev) return error = dev.error().message, 2;
  auto app = resolve_campaign(
      *doc, campaign_device_of(dev->config, dev->labels, dev->settings.limits));
  if (!app) return error = app.error().message, 1;
  Config cfg = dev->config;
  cfg.triggers = app->triggers;
  // The targeted share of a fleet whose devices all match the selector.
  const double share = doc->targeting.rollout_percent / 100.0;
  const auto targeted = static_cast<std::uint64_t>(double(fleet) * share + 0.5);
  if (int rc = replay_config(cfg, samples, targeted, "", out, error); rc != 0) return rc;
  out.erase("trigger_order");
  out["campaign"] = {{"id", doc->id},
                     {"version", doc->version},
                     {"rollout_percent", doc->targeting.rollout_percent},
                     {"fleet_devices", fleet},
                     {"targeted_devices", targeted},
                     {"clamped", app->clamped}};
  return 0;
}

namespace {

// ---- forecast -------------------------------------------------------------------------------

struct ForecastOptions {
  std::string document, device_config, samples;
  std::uint64_t fleet = 1;
  bool json = false;
};

int run_forecast(const ForecastOptions& o) {
  std::string text;
  if (!read_file(o.document, text)) return 2;
  json out;
  std::string error;
  if (int rc = campaign_forecast(text, o.device_config, o.samples, o.fleet, out, error); rc) {
    std::fprintf(stderr, "fleetpipe campaign forecast: %s\n", error.c_str());
    return rc;
  }
  if (o.json) {
    std::printf("%s\n", out.dump().c_str());
    return 0;
  }
  const auto& f = out["forecast"];
  std::printf("campaign %s version %llu over %s (%.0f s of samples)\n",
              out["campaign"]["id"].get<std::string>().c_str(),
              static_cast<unsigned long long>(out["campaign"]["version"].get<std::uint64_t>()),
              o.samples.c_str(), out["duration_s"].get<double>());
  for (const auto& [name, ts] : out["triggers"].items()) {
    std::printf("  %-24s %8llu events %12s\n", name.c_str(),
                static_cast<unsigned long long>(ts["events"].get<std::uint64_t>()),
                human_bytes(double(ts["bytes"].get<std::uint64_t>()), 2).c_str());
  }
  std::printf("per device:   %.1f events/day, %s/day\n", f["events_per_day"].get<double>(),
              human_bytes(f["bytes_per_day"].get<double>(), 2).c_str());
  std::printf("fleet:        %llu of %llu devices targeted (%.2f %%): %.1f events/day, %s/day\n",
              static_cast<unsigned long long>(f["fleet"]["devices"].get<std::uint64_t>()),
              static_cast<unsigned long long>(o.fleet),
              out["campaign"]["rollout_percent"].get<double>(),
              f["fleet"]["events_per_day"].get<double>(),
              human_bytes(f["fleet"]["bytes_per_day"].get<double>(), 2).c_str());
  for (const auto& c : out["campaign"]["clamped"]) {
    std::printf("clamped:      %s\n", c.get<std::string>().c_str());
  }
  return 0;
}

// ---- status ---------------------------------------------------------------------------------

struct StatusOptions {
  BucketOptions bucket;
  std::vector<std::string> ids;
  bool json = false;
};

// The document's version and rollout in the bucket (null when absent or unreadable).
json bucket_document(BucketReader& reader, const std::string& prefix, const std::string& id) {
  auto body = reader.get(campaign_object_key(prefix, id));
  if (!body) return nullptr;
  auto env = json::parse(*body, nullptr, false);
  if (!env.is_object() || !env.contains("payload") || !env["payload"].is_string()) return nullptr;
  // Shown for orientation only; devices verify what they fetch.
  auto payload = detail::campaign_base64_decode(env["payload"].get<std::string>());
  if (!payload) return nullptr;
  auto doc = parse_campaign_document(*payload);
  if (!doc) return nullptr;
  return {{"version", doc->version},
          {"rollout_percent", doc->targeting.rollout_percent},
          {"suspended", doc->suspended},
          {"expiry", format_campaign_time(doc->expiry)}};
}

int run_status(const StatusOptions& o) {
  UploaderConfig cfg;
  if (!o.bucket.resolve(cfg)) return 2;
  auto reader = BucketReader::open(cfg);
  if (!reader) {
    std::fprintf(stderr, "fleetpipe campaign status: %s\n", reader.error().message.c_str());
    return 1;
  }
  auto devices = (*reader)->status(StatusQuery{});
  if (!devices) {
    std::fprintf(stderr, "fleetpipe campaign status: %s\n", devices.error().message.c_str());
    return 1;
  }
  // campaign id -> summary, from each device's newest heartbeat ("campaigns" array; a
  // heartbeat without it is a device that follows no campaign).
  std::map<std::string, json> by_id;
  std::uint64_t without = 0;
  for (const auto& d : *devices) {
    auto hb = json::parse(d.heartbeat_json, nullptr, false);
    if (!hb.is_object() || !hb.contains("campaigns") || !hb["campaigns"].is_array()) {
      ++without;
      continue;
    }
    for (const auto& c : hb["campaigns"]) {
      if (!c.is_object() || !c.contains("id") || !c["id"].is_string()) continue;
      const std::string id = c["id"].get<std::string>();
      if (!o.ids.empty() && std::find(o.ids.begin(), o.ids.end(), id) == o.ids.end()) continue;
      json& s = by_id[id];
      if (s.is_null()) {
        s = {{"id", id},          {"devices", 0},  {"targeted", 0},     {"states", json::object()},
             {"versions", json::object()}, {"rejections", json::object()},
             {"rejected_devices", json::array()}, {"active_devices", json::array()}};
      }
      const std::string state = c.value("state", "none");
      s["devices"] = s["devices"].get<int>() + 1;
      s["states"][state] = s["states"].value(state, 0) + 1;
      if (state == "active" || state == "pending" || state == "expired") {
        s["targeted"] = s["targeted"].get<int>() + 1;
      }
      if (state == "active") s["active_devices"].push_back(d.device);
      const std::string v = std::to_string(c.value("version", 0ull));
      s["versions"][v] = s["versions"].value(v, 0) + 1;
      if (c.contains("last_rejection") && c["last_rejection"].is_string()) {
        const std::string r = c["last_rejection"].get<std::string>();
        s["rejections"][r] = s["rejections"].value(r, 0) + 1;
        s["rejected_devices"].push_back({{"device", d.device}, {"reason", r},
                                         {"at", c.value("last_rejection_at", "")}});
      }
    }
  }
  for (auto& [id, s] : by_id) s["bucket"] = bucket_document(**reader, cfg.prefix, id);
  if (o.json) {
    json out = {{"campaigns", json::array()}, {"devices_without_campaigns", without}};
    for (auto& [id, s] : by_id) out["campaigns"].push_back(s);
    std::printf("%s\n", out.dump().c_str());
    return 0;
  }
  if (by_id.empty()) std::printf("no device reports a campaign (%llu heartbeating devices)\n",
                                 static_cast<unsigned long long>(without));
  for (const auto& [id, s] : by_id) {
    std::printf("campaign %s", id.c_str());
    if (!s["bucket"].is_null()) {
      std::printf(" (bucket: version %llu, rollout %.2f %%%s, expiry %s)",
                  static_cast<unsigned long long>(s["bucket"]["version"].get<std::uint64_t>()),
                  s["bucket"]["rollout_percent"].get<double>(),
                  s["bucket"]["suspended"].get<bool>() ? ", suspended" : "",
                  s["bucket"]["expiry"].get<std::string>().c_str());
    }
    std::printf("\n  devices %d, targeted %d:", s["devices"].get<int>(), s["targeted"].get<int>());
    for (const auto& [st, n] : s["states"].items()) std::printf(" %s %d", st.c_str(), n.get<int>());
    std::printf("\n  versions:");
    for (const auto& [v, n] : s["versions"].items()) std::printf(" v%s ×%d", v.c_str(), n.get<int>());
    std::printf("\n");
    if (!s["rejections"].empty()) {
      std::printf("  last rejections:");
      for (const auto& [r, n] : s["rejections"].items()) std::printf(" %s ×%d", r.c_str(), n.get<int>());
      std::printf("\n");
      for (const auto& r : s["rejected_devices"]) {
        std::printf("    %-20s %-14s %s\n", r["device"].get<std::string>().c_str(),
                    r["reason"].get<std::string>().c_str(), r["at"].get<std::string>().c_str());
      }
    }
  }
  return 0;
}

}  // namespace

void register_campaign_report(CLI::App& cmd) {
  auto fc = std::make_shared<ForecastOptions>();
  auto* f = cmd.add_subcommand("forecast", "replay a campaign's triggers over recorded samples: "
                                           "events and bytes per day, per device and fleet");
  f->add_option("document", fc->document, "campaign document (JSON)")->required();
  f->add_option("--device-config", fc->device_config, "the device's fleetpipe config")->required();
  f->add_option("--samples", fc->samples, "recorded samples (JSONL, as `fleetpipe replay`)")
      ->required();
  f->add_option("--fleet", fc->fleet, "devices matching the label selector")
      ->default_val(1)
      ->check(CLI::Range(std::uint64_t{1}, std::uint64_t{1000000000}));
  f->add_flag("--json", fc->json, "one JSON object");
  f->callback([fc] { set_exit_code(run_forecast(*fc)); });

  auto so = std::make_shared<StatusOptions>();
  auto* s = cmd.add_subcommand("status", "per campaign, from the devices' newest heartbeats: "
                                         "devices targeted, active, pending, rejected and why");
  so->bucket.add_to(s);
  s->add_option("id", so->ids, "campaign ids (default: every campaign a device reports)");
  s->add_flag("--json", so->json, "one JSON object");
  s->callback([so] { set_exit_code(run_status(*so)); });
}

}  // namespace fleetpipe::cli
