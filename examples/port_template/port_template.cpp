// port_template: copy me. Every piece of the platform port (fleetpipe/port.hpp) a vendor
// implements, as a documented skeleton that compiles and runs (on POSIX stand-ins), wired into a
// Pipeline. Replace each TODO with your platform's call; keep the contracts written above each.
//
// Rules that hold for every piece:
//  - fleetpipe calls them from the thread that drives the Pipeline (your main loop), except
//    NetworkStatus::set, which any thread may call. They must not call back into fleetpipe.
//  - They must not block for long: poll(budget) is only as bounded as they are.
//  - They must outlive the Pipeline (own them next to it, as main() does below).
#include <sys/statvfs.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>

#include <fleetpipe/fleetpipe.hpp>

#include "../common/example_args.hpp"

namespace vendor {

// ---- Clock -------------------------------------------------------------------------------------
// monotonic(): never goes backwards, keeps counting through RTC changes (windows, cooldowns,
//   backoff, shaping). On an MCU: a 64-bit tick counter since boot.
// wall(): UTC calendar time; names objects, dates partitions, signs S3 requests (the server
//   refuses requests more than 15 minutes off) and resets the daily wear budget. May jump when
//   the RTC syncs; fleetpipe copes.
class Clock final : public fleetpipe::Clock {
 public:
  fleetpipe::MonoTime monotonic() const noexcept override {
    return std::chrono::steady_clock::now();  // TODO: your tick counter, converted to ns
  }
  fleetpipe::WallTime wall() const noexcept override {
    return std::chrono::system_clock::now();  // TODO: your RTC / NTP-disciplined time
  }
};

// ---- Filesystem statistics --------------------------------------------------------------------
// stats(path): size and free space/inodes of the filesystem holding the buffer directory. The
//   buffer never grows past min_free_bytes / min_free_inodes of headroom. Return io_error when the
//   filesystem cannot be queried: the buffer then treats it as full (safe side). Appends that would
//   grow the store are refused (storage_full, reason fs_stats) and nothing is evicted for it; acks
//   and the uploader's state writes go on; each failure is counted
//   (fleetpipe_buffer_fs_stats_errors_total) and a warning logged at most once a minute.
//   Never report made-up free space instead of an error.
class FilesystemStats final : public fleetpipe::FilesystemStats {
 public:
  fleetpipe::Result<fleetpipe::FsStats> stats(const std::string& path) const override {
    struct statvfs s {};
    if (::statvfs(path.c_str(), &s) != 0) {  // TODO: your flash driver's free-space query
      return fleetpipe::Error(fleetpipe::errc::io_error, "statvfs failed for " + path);
    }
    fleetpipe::FsStats out;
    out.total_bytes = static_cast<std::uint64_t>(s.f_blocks) * s.f_frsize;
    out.free_bytes = static_cast<std::uint64_t>(s.f_bavail) * s.f_frsize;
    out.total_inodes = s.f_files;
    out.free_inodes = s.f_favail;
    return out;
  }
};

// ---- Network state ------------------------------------------------------------------------------
// Not an interface: fleetpipe::NetworkStatus is a lock-free cell. Your connectivity manager sets
// it from any thread: online (unmetered), metered (cellular, customer Wi-Fi: uploads pause or use
// the metered rate, per config), offline (no attempts). Pipeline::set_network_state does the same.
void on_link_change(fleetpipe::NetworkStatus& cell, bool up, bool metered) {
  cell.set(!up ? fleetpipe::NetworkState::offline
               : metered ? fleetpipe::NetworkState::metered : fleetpipe::NetworkState::online);
}

// ---- Log sink -----------------------------------------------------------------------------------
// write(): one line per call (component = "buffer", "uploader", ...). Synchronous, on the driving
//   thread, never holds credentials. Filter by level here; keep it cheap (drops and evictions
//   are logged, rate-limited by fleetpipe).
class LogSink final : public fleetpipe::LogSink {
 public:
  void write(fleetpipe::LogLevel level, std::string_view component,
             std::string_view message) noexcept override {
    if (level < fleetpipe::LogLevel::warning) return;
    // TODO: your logger
    std::fprintf(stderr, "[fleetpipe/%.*s] %.*s: %.*s\n", int(component.size()), component.data(),
                 int(fleetpipe::to_string(level).size()), fleetpipe::to_string(level).data(),
                 int(message.size()), message.data());
  }
};

// ---- Credentials --------------------------------------------------------------------------------
// get(): S3 keys, called when a request is signed (so rotation is picked up at once). Return
//   auth_error when none are available: the upload is counted as failed and retried later.
//   Used when the config says "credentials": {"source": "host"} (or "auto" with this set).
class Credentials final : public fleetpipe::CredentialsProvider {
 public:
  Credentials(std::string key, std::string secret) : key_(std::move(key)), secret_(std::move(secret)) {}
  fleetpipe::Result<fleetpipe::Credentials> get() override {
    if (key_.empty()) return fleetpipe::Error(fleetpipe::errc::auth_error, "no device keys");
    return fleetpipe::Credentials{key_, secret_, ""};  // TODO: your secure element / token service
  }

 private:
  std::string key_, secret_;
};

}  // namespace vendor

int main(int argc, char** argv) {
  example::Args args(argc, argv);
  fleetpipe::Config config;
  config.device_id = "port-template-1";
  config.buffer.path = args.get("--db", "port_template-db");
  fleetpipe::StreamConfig s;
  s.name = "sensor";
  s.channels = {"value"};
  config.streams.push_back(s);
  config.triggers.push_back(fleetpipe::manual_trigger("button"));
  bool upload = example::apply_s3(args, config.uploader, "fleetpipe-examples");
  config.uploader.enabled = upload;
  // The keys go through the port's CredentialsProvider, not the config.
  vendor::Credentials credentials(config.uploader.credentials.access_key_id,
                                  config.uploader.credentials.secret_access_key);
  config.uploader.credentials = {};
  config.uploader.credentials.source = fleetpipe::CredentialsSource::host;

  vendor::Clock clock;  // the port pieces outlive the pipeline
  vendor::FilesystemStats fs;
  fleetpipe::NetworkStatus network;
  vendor::LogSink log;
  fleetpipe::Port port{&clock, &fs, &network, &log, &credentials};
  vendor::on_link_change(network, /*up=*/true, /*metered=*/false);

  auto created = fleetpipe::Pipeline::create(config, port);
  if (!created) return std::fprintf(stderr, "%s\n", created.error().message.c_str()), 1;
  fleetpipe::Pipeline& p = **created;
  auto h = p.stream("sensor");
  for (int i = 0; i < 100; ++i) {
    p.push(h, i * 0.01, {double(i)});
    if (i == 50) (void)p.fire("button", i * 0.01);
    p.poll(std::chrono::microseconds(500));
  }
  if (!upload) return std::puts("no S3 server given: events kept in the buffer"), 0;
  auto drained = p.drain(std::chrono::seconds(60));
  std::printf("events %llu, objects uploaded %llu: %s\n",
              (unsigned long long)p.status().capture.events,
              (unsigned long long)p.status().uploader.objects_uploaded,
              drained ? "ok" : drained.error().message.c_str());
  return drained && p.status().uploader.objects_uploaded > 0 ? 0 : 1;
}
