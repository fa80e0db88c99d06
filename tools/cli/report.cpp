// `fleetpipe report --out DIR`: the fleet report page (DIR/index.html) from the bucket.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <string>

#include "cli/bucket_options.hpp"
#include "cli/bucket_reader.hpp"
#include "cli/commands.hpp"
#include "cloud/report.hpp"

namespace fleetpipe::cli {
namespace {

struct ReportCliOptions {
  BucketOptions bucket;
  std::string out, device, now, title, link_base;
  double silent_after_s = 900, window_s = 86400;
  std::size_t events_per_trigger = 4, bins = 48;
};

int run(const ReportCliOptions& o) {
  UploaderConfig cfg;
  if (!o.bucket.resolve(cfg)) return 2;
  detail::ReportOptions r;
  r.status.device_glob = o.device;
  r.status.silent_after_s = o.silent_after_s;
  r.status.window_s = o.window_s;
  r.events_per_trigger = o.events_per_trigger;
  r.bins = o.bins;
  r.bucket = cfg.bucket;
  if (!o.title.empty()) r.title = o.title;
  r.object_url_base = o.link_base;
  if (!parse_time_flag("report", o.now, r.status.now)) return 2;
  auto reader = open_reader("report", cfg);
  if (!reader) return 1;
  auto written = detail::write_report(**reader, r, o.out);
  if (!written) {
    std::fprintf(stderr, "fleetpipe report: %s\n", written.error().message.c_str());
    return 1;
  }
  std::printf("%s\n", written->path.c_str());
  std::fprintf(stderr,
               "%zu device(s), %zu heartbeat(s) in the window (%zu read), %zu event(s), %zu in the "
               "gallery; %zu bytes\n",
               written->devices, written->heartbeats, written->heartbeats_read, written->events,
               written->gallery_events, written->bytes);
  return 0;
}

}  // namespace

void register_report(CLI::App& app) {
  auto opts = std::make_shared<ReportCliOptions>();
  auto* cmd = app.add_subcommand(
      "report", "write a self-contained HTML fleet report (DIR/index.html) from the bucket");
  opts->bucket.add_to(cmd);
  cmd->add_option("--out", opts->out, "directory to write index.html into")->required();
  cmd->add_option("--device", opts->device, "device glob, e.g. 'cart-0*'");
  cmd->add_option("--window", opts->window_s, "seconds of history to show (default 86400)");
  cmd->add_option("--silent-after", opts->silent_after_s,
                  "seconds without heartbeat before a device is SILENT (default 900)");
  cmd->add_option("--now", opts->now, "the window ends at this time (default: now)");
  cmd->add_option("--events-per-trigger", opts->events_per_trigger,
                  "gallery: latest events shown per trigger (default 4)");
  cmd->add_option("--bins", opts->bins, "points per time series (default 48)");
  cmd->add_option("--title", opts->title, "page title");
  cmd->add_option("--link-base", opts->link_base,
                  "event links are LINK_BASE/KEY (default s3://BUCKET/KEY)");
  cmd->callback([opts] { set_exit_code(run(*opts)); });
}

}  // namespace fleetpipe::cli
