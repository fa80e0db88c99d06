// `fleetpipe inspect DBDIR`: what the buffer holds, per stream and priority, quota and
// flash-wear use, quarantined stores. Read-only (one LMDB read transaction): safe while the
// device's writer has the store open.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <ctime>
#include <string>

#include "cli/commands.hpp"
#include "cli/format.hpp"
#include "fleetpipe/buffer.hpp"

namespace fleetpipe::cli {
namespace {

std::string iso_time(std::int64_t ns) {
  if (ns <= 0) return "-";
  std::time_t t = static_cast<std::time_t>(ns / 1000000000);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

std::string percent(std::uint64_t used, std::uint64_t limit) {
  if (limit == 0) return "unlimited";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f%%", 100.0 * static_cast<double>(used) / static_cast<double>(limit));
  return buf;
}

int run(const std::string& dir) {
  auto rep = inspect_buffer(dir);
  if (!rep) {
    std::fprintf(stderr, "fleetpipe inspect: %s\n", rep.error().message.c_str());
    return rep.error().is(errc::not_found) ? 3 : 1;
  }
  const BufferReport& r = *rep;
  std::printf("buffer %s\n", dir.c_str());
  std::printf("  records %llu, stored %s, next id %llu\n", static_cast<unsigned long long>(r.records),
              human_bytes(double(r.bytes)).c_str(), static_cast<unsigned long long>(r.next_id));
  std::printf("  quota: bytes %s of %s (%s), records %llu of %llu (%s)\n", human_bytes(double(r.bytes)).c_str(),
              human_bytes(double(r.max_bytes)).c_str(), percent(r.bytes, r.max_bytes).c_str(),
              static_cast<unsigned long long>(r.records), static_cast<unsigned long long>(r.max_records),
              percent(r.records, r.max_records).c_str());
  std::time_t now = std::time(nullptr);
  bool today = r.wear_day == static_cast<std::int64_t>(now / 86400);
  std::uint64_t written = today ? r.written_on_wear_day : 0;
  std::printf("  flash wear today: %s of %s (%s)\n", human_bytes(double(written)).c_str(),
              r.max_bytes_written_per_day ? human_bytes(double(r.max_bytes_written_per_day)).c_str() : "-",
              percent(written, r.max_bytes_written_per_day).c_str());
  std::printf("  file data.mdb %s, map %s\n", human_bytes(double(r.file_bytes)).c_str(),
              human_bytes(double(r.map_bytes)).c_str());
  std::printf("\n  %-20s %4s %9s %11s %11s %7s  %-20s  %-20s\n", "STREAM", "PRIO", "RECORDS", "STORED",
              "PAYLOAD", "PARKED", "OLDEST", "NEWEST");
  for (const auto& u : r.usage) {
    std::printf("  %-20s %4u %9llu %11s %11s %7llu  %-20s  %-20s\n", u.stream.c_str(), u.priority,
                static_cast<unsigned long long>(u.records), human_bytes(double(u.bytes)).c_str(),
                human_bytes(double(u.payload_bytes)).c_str(), static_cast<unsigned long long>(u.parked),
                iso_time(u.oldest_ns).c_str(), iso_time(u.newest_ns).c_str());
  }
  if (r.usage.empty()) std::printf("  (empty)\n");
  std::printf("\n  state entries: %zu\n", r.state.size());
  std::printf("  quarantined stores: %zu\n", r.quarantined.size());
  for (const auto& q : r.quarantined) std::printf("    quarantine/%s\n", q.c_str());
  return 0;
}

}  // namespace

void register_inspect(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "inspect", "Show a buffer's records and bytes per stream and priority, quota and "
                 "flash-wear use, quarantined stores (read-only; safe while the device runs)");
  auto dir = std::make_shared<std::string>();
  cmd->add_option("DBDIR", *dir, "the buffer directory (buffer.path in the config)")->required();
  cmd->callback([dir] { set_exit_code(run(*dir)); });
}

}  // namespace fleetpipe::cli
