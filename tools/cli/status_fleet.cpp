// `fleetpipe status --by LABEL` and `--prometheus`: the fleet aggregated per label value.
#include "cli/status_fleet.hpp"

#include <cstdio>

#include <nlohmann/json.hpp>

#include "cli/format.hpp"

namespace fleetpipe::cli {
namespace {

std::string rates(const std::map<std::string, double>& m, const char* fmt) {
  std::string out;
  char buf[96];
  for (const auto& [k, v] : m) {
    std::snprintf(buf, sizeof buf, fmt, k.c_str(), v);
    out += (out.empty() ? "" : " ") + std::string(buf);
  }
  return out.empty() ? "-" : out;
}

nlohmann::json to_json(const FleetGroup& g) {
  return {{"label", g.label}, {"value", g.has_value ? nlohmann::json(g.value) : nlohmann::json()},
          {"devices", g.devices}, {"silent", g.silent}, {"evicting", g.evicting},
          {"paused_now", g.paused_now}, {"restarts", g.restarts},
          {"observed_device_s", g.observed_device_s}, {"upload_bytes", g.upload_bytes},
          {"upload_bytes_per_s", g.upload_bytes_per_s}, {"paused_share", g.paused_share},
          {"paused_share_by_reason", g.paused_share_by_reason},
          {"pauses_per_device_hour", g.pauses_per_device_hour}, {"evictions", g.evictions},
          {"evictions_per_device_day", g.evictions_per_device_day}, {"fires", g.fires},
          {"fires_per_device_hour", g.fires_per_device_hour},
          {"backlog_records", g.backlog_records}, {"backlog_bytes", g.backlog_bytes},
          {"campaign_versions", g.campaign_versions}};
}

}  // namespace

int run_fleet(BucketReader& reader, const StatusQuery& q, const std::string& by, bool json,
              bool prometheus) {
  auto groups = fleet_status(reader, q, by);
  if (!groups) {
    std::fprintf(stderr, "fleetpipe status: %s\n", groups.error().message.c_str());
    return 1;
  }
  if (prometheus) {
    std::fputs(fleet_status_prometheus(*groups).c_str(), stdout);
    return 0;
  }
  if (json) {
    for (const auto& g : *groups) std::printf("%s\n", to_json(g).dump().c_str());
    return 0;
  }
  std::printf("%-20s %7s %6s %8s %11s %7s %10s %9s  %s\n", by.empty() ? "FLEET" : by.c_str(),
              "DEVICES", "SILENT", "EVICTING", "UPLOAD/s", "PAUSED", "EVICT/d-d", "BACKLOG",
              "FIRES/device-hour");
  for (const auto& g : *groups) {
    std::string name = by.empty() ? "all" : g.has_value ? g.value : "(no label)";
    std::printf("%-20s %7zu %6zu %8zu %11s %6.1f%% %10.2f %9.0f  %s\n", name.c_str(),
                g.devices.size(), g.silent, g.evicting, human_bytes(g.upload_bytes_per_s).c_str(),
                100 * g.paused_share, g.evictions_per_device_day, g.backlog_records,
                rates(g.fires_per_device_hour, "%s=%.2f").c_str());
    if (!g.pauses_per_device_hour.empty())
      std::printf("    pauses/device-hour: %s\n", rates(g.pauses_per_device_hour, "%s=%.2f").c_str());
    if (!g.paused_share_by_reason.empty())
      std::printf("    paused share: %s\n", rates(g.paused_share_by_reason, "%s=%.3f").c_str());
    if (!g.campaign_versions.empty()) {
      std::string c;
      for (const auto& [v, n] : g.campaign_versions) c += " " + v + "=" + std::to_string(n);
      std::printf("    campaign versions:%s\n", c.c_str());
    }
  }
  return 0;
}

}  // namespace fleetpipe::cli
