// `fleetpipe status`: fleet health from the heartbeat objects — last seen, backlog, evictions,
// upload rate per device; flags devices that are silent or evicting.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <string>

#include <nlohmann/json.hpp>

#include "cli/bucket_options.hpp"
#include "cli/bucket_reader.hpp"
#include "cli/commands.hpp"
#include "cli/status_fleet.hpp"
#include "cli/format.hpp"
#include "fleetpipe/query.hpp"

namespace fleetpipe::cli {
namespace {

struct StatusOptions {
  BucketOptions bucket;
  std::string device, now, by;
  double silent_after_s = 900, window_s = 86400;
  bool json = false, flagged_only = false, prometheus = false;
};

std::string human_age(double s) {
  char buf[32];
  if (s < 120) std::snprintf(buf, sizeof buf, "%.0fs ago", s);
  else if (s < 7200) std::snprintf(buf, sizeof buf, "%.0fm ago", s / 60);
  else if (s < 172800) std::snprintf(buf, sizeof buf, "%.1fh ago", s / 3600);
  else std::snprintf(buf, sizeof buf, "%.1fd ago", s / 86400);
  return buf;
}

int run(const StatusOptions& o) {
  UploaderConfig cfg;
  if (!o.bucket.resolve(cfg)) return 2;
  StatusQuery q;
  q.device_glob = o.device;
  q.silent_after_s = o.silent_after_s;
  q.window_s = o.window_s;
  if (!parse_time_flag("status", o.now, q.now)) return 2;
  auto reader = open_reader("status", cfg);
  if (!reader) return 1;
  if (!o.by.empty() || o.prometheus) return run_fleet(**reader, q, o.by, o.json, o.prometheus);
  auto devices = (*reader)->status(q);
  if (!devices) {
    std::fprintf(stderr, "fleetpipe status: %s\n", devices.error().message.c_str());
    return 1;
  }
  std::size_t flagged = 0;
  if (!o.json) {
    std::printf("%-16s %-26s %-12s %10s %12s %10s %12s  %s\n", "DEVICE", "LAST SEEN", "", "BACKLOG",
                "BACKLOG B", "EVICTED", "UPLOAD/s", "FLAGS");
  }
  for (const auto& d : *devices) {
    std::string flags;
    if (d.silent) flags += "SILENT ";
    if (d.evicting) flags += "EVICTING ";
    if (!flags.empty()) ++flagged;
    if (o.flagged_only && flags.empty()) continue;
    std::string last = d.last_seen ? format_query_time(*d.last_seen) : "-";
    if (o.json) {
      nlohmann::json j = {{"device", d.device}, {"last_seen", last},
                          {"seconds_since_last", d.seconds_since_last},
                          {"heartbeats", d.heartbeats}, {"sdk_version", d.sdk_version},
                          {"network", d.network}, {"backlog_records", d.backlog_records},
                          {"backlog_bytes", d.backlog_bytes}, {"evicted_total", d.evicted_total},
                          {"evicted_in_window", d.evicted_in_window},
                          {"uploaded_bytes_total", d.uploaded_bytes_total},
                          {"upload_bytes_per_s", d.upload_bytes_per_s},
                          {"last_error", d.last_error}, {"silent", d.silent},
                          {"evicting", d.evicting}, {"last_key", d.last_key}};
      std::printf("%s\n", j.dump().c_str());
    } else {
      std::printf("%-16s %-26s %-12s %10.0f %12s %10.0f %12s  %s\n", d.device.c_str(),
                  last.c_str(), human_age(d.seconds_since_last).c_str(), d.backlog_records,
                  human_bytes(d.backlog_bytes).c_str(), d.evicted_in_window,
                  (human_bytes(d.upload_bytes_per_s)).c_str(), flags.c_str());
      if (!d.last_error.empty()) std::printf("    last error: %s\n", d.last_error.c_str());
    }
  }
  if (!o.json) {
    std::fprintf(stderr, "%zu device(s), %zu flagged (silent > %.0f s or evicting in the last %.0f s)\n",
                 devices->size(), flagged, o.silent_after_s, o.window_s);
  }
  return 0;
}

}  // namespace

void register_status(CLI::App& app) {
  auto opts = std::make_shared<StatusOptions>();
  auto* cmd = app.add_subcommand(
      "status", "fleet health from heartbeats: last seen, backlog, evictions, upload rate");
  opts->bucket.add_to(cmd);
  cmd->add_option("--device", opts->device, "device glob, e.g. 'cart-0*'");
  cmd->add_option("--silent-after", opts->silent_after_s,
                  "seconds without heartbeat before a device is SILENT (default 900)");
  cmd->add_option("--window", opts->window_s,
                  "seconds over which evictions and upload rate are measured (default 86400)");
  cmd->add_option("--now", opts->now, "evaluate as of this time (default: now)");
  cmd->add_flag("--json", opts->json, "one JSON object per device");
  cmd->add_flag("--flagged", opts->flagged_only, "print only silent or evicting devices");
  cmd->add_option("--by", opts->by, "aggregate per value of this device label, e.g. site");
  cmd->add_flag("--prometheus", opts->prometheus,
                "print the aggregates in Prometheus text format (node-exporter textfile)");
  cmd->callback([opts] { set_exit_code(run(*opts)); });
}

}  // namespace fleetpipe::cli
