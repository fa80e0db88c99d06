// `fleetpipe unpark --db DBDIR [--reason R]`: returns a buffer's parked records to its upload
// queue. It writes, so it takes the store's writer lock: run it while the device's process is
// stopped (a running device unparks at its next start, or through Buffer::unpark()).
#include <CLI/CLI.hpp>
#include <cstdio>
#include <string>

#include "cli/commands.hpp"
#include "fleetpipe/buffer.hpp"

namespace fleetpipe::cli {
namespace {

int run(const std::string& dir, const std::string& reason) {
  // Read-only first: a missing or damaged store is reported, never created or quarantined here.
  auto rep = inspect_buffer(dir);
  if (!rep) {
    std::fprintf(stderr, "fleetpipe unpark: %s\n", rep.error().message.c_str());
    return rep.error().is(errc::not_found) ? 3 : 1;
  }
  BufferConfig cfg;
  cfg.path = dir;
  cfg.durability = Durability::sync;  // the change is on disk when this returns
  cfg.unpark_on_open = false;         // unpark only what --reason names
  // Keep the quotas the device last opened the store with (open records them for inspect).
  if (rep->max_bytes) cfg.max_bytes = rep->max_bytes;
  if (rep->max_records) cfg.max_records = rep->max_records;
  cfg.max_bytes_written_per_day = rep->max_bytes_written_per_day;
  StderrLogSink log(LogLevel::warning);
  Port port;
  port.log = &log;
  MetricsRegistry metrics;
  auto buffer = Buffer::open(cfg, port, metrics);
  if (!buffer) {
    std::fprintf(stderr, "fleetpipe unpark: %s (stop the device's process first: it unparks at start)\n",
                 buffer.error().message.c_str());
    return 1;
  }
  auto n = (*buffer)->unpark(reason);
  if (!n) {
    std::fprintf(stderr, "fleetpipe unpark: %s\n", n.error().message.c_str());
    return 1;
  }
  std::printf("unparked %llu record(s)%s%s; %llu still parked\n", static_cast<unsigned long long>(*n),
              reason.empty() ? "" : " parked with reason ", reason.c_str(),
              static_cast<unsigned long long>((*buffer)->stats().parked));
  return 0;
}

}  // namespace

void register_unpark(CLI::App& app) {
  auto* cmd = app.add_subcommand("unpark",
                                 "Return a buffer's parked records to its upload queue (all, or those parked "
                                 "with --reason); the device's process must be stopped");
  auto dir = std::make_shared<std::string>();
  auto reason = std::make_shared<std::string>();
  cmd->add_option("--db", *dir, "the buffer directory (buffer.path in the config)")->required();
  cmd->add_option("--reason", *reason, "only records parked with this reason (e.g. NoSuchBucket)");
  cmd->callback([dir, reason] { set_exit_code(run(*dir, *reason)); });
}

}  // namespace fleetpipe::cli
