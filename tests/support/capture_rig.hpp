// Shared helpers for the trigger/capture/event-format tests: a sink that keeps every event.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "fleetpipe/capture.hpp"
#include "fleetpipe/config.hpp"
#include "fleetpipe/metrics.hpp"
#include "fleetpipe/port.hpp"

namespace fleetpipe::test {

struct RecordingSink final : EventSink {
  struct Item {
    RecordMeta meta;
    std::string payload;
  };
  std::vector<Item> items;
  bool reject = false;
  AppendOutcome deliver(const RecordMeta& meta, std::string_view payload) override {
    items.push_back({meta, std::string(payload)});
    AppendOutcome o;
    o.accepted = !reject;
    if (reject) {
      o.reason = errc::storage_full;
      o.message = "test sink rejects";
    }
    return o;
  }
};

/// A Capture over a FakeClock, a RecordingSink and its own registry.
struct Rig {
  FakeClock clock;
  MetricsRegistry metrics;
  RecordingSink sink;
  Port port;
  std::unique_ptr<Capture> cap;

  Rig(std::vector<StreamConfig> streams, std::vector<TriggerConfig> triggers) {
    port.clock = &clock;
    static StderrLogSink quiet(LogLevel::off);
    port.log = &quiet;
    auto r = Capture::create("dev-1", std::move(streams), std::move(triggers), sink, port,
                             metrics);
    if (!r) throw std::runtime_error(r.error().message);
    cap = std::move(*r);
  }
  std::uint64_t fires(const char* trigger) const {
    return cap->trigger_stats(cap->trigger(trigger)).fires;
  }
};

inline StreamConfig numeric_stream(std::string name, std::vector<std::string> channels,
                                   double ring_seconds = 10, std::uint64_t ring_bytes = 1 << 20) {
  StreamConfig s;
  s.name = std::move(name);
  s.channels = std::move(channels);
  s.ring_seconds = ring_seconds;
  s.ring_bytes = ring_bytes;
  return s;
}

inline StreamConfig blob_stream(std::string name, std::uint64_t ring_bytes = 1 << 20,
                                double ring_seconds = 10) {
  StreamConfig s;
  s.name = std::move(name);
  s.kind = StreamKind::blob;
  s.ring_bytes = ring_bytes;
  s.ring_seconds = ring_seconds;
  return s;
}

}  // namespace fleetpipe::test
