// A tiny firmware-like program built against the installed package: parse a config, count a
// metric, print the SDK version. Exit status 0 proves headers, library and dependencies resolve.
#include <fleetpipe/fleetpipe.hpp>

#include <cstdio>

int main() {
  auto config = fleetpipe::parse_config(R"({"device_id": "consumer-1"})");
  if (!config) {
    std::fprintf(stderr, "config: %s\n", config.error().message.c_str());
    return 1;
  }
  fleetpipe::MetricsRegistry metrics;
  metrics.counter("fleetpipe_consumer_runs_total", "Runs of the consumer check").inc();
  auto bad = fleetpipe::parse_config(R"({"device_id": "c", "typo": 1})");
  if (bad || bad.error().json_pointer != "/typo") return 1;
  std::printf("fleetpipe %s consumer ok: device %s\n%s", fleetpipe::kVersion,
              config->device_id.c_str(), metrics.to_prometheus().c_str());
  return 0;
}
