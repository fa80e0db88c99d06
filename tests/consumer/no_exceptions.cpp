// A firmware-like TU built with -fno-exceptions (and -fno-rtti) against the installed package:
// every public header compiles there, and Result is usable without value(). Exit 0 = ok.
#include <fleetpipe/fleetpipe.hpp>

#include <cstdio>

#if defined(__cpp_exceptions) || defined(__EXCEPTIONS)
#error "this translation unit must be built with -fno-exceptions"
#endif

namespace {

// Counts what Capture hands over instead of storing it (no Buffer needed here).
class CountingSink final : public fleetpipe::EventSink {
 public:
  fleetpipe::AppendOutcome deliver(const fleetpipe::RecordMeta& meta,
                                   std::string_view payload) override {
    ++events;
    bytes += payload.size();
    last_trigger = meta.trigger_ids.empty() ? "" : meta.trigger_ids.front();
    fleetpipe::AppendOutcome out;
    out.accepted = true;
    out.id = events;
    return out;
  }
  unsigned events = 0;
  std::size_t bytes = 0;
  std::string last_trigger;
};

int fail(const char* what) {
  std::fprintf(stderr, "no_exceptions: %s\n", what);
  return 1;
}

}  // namespace

int main() {
  auto config = fleetpipe::parse_config(R"({
    "device_id": "noexc-1",
    "labels": {"site": "lab"},
    "streams": [{"name": "imu", "channels": ["speed"], "ring_seconds": 2}],
    "triggers": [{"name": "fast", "type": "threshold", "stream": "imu", "channel": "speed",
                  "above": 10, "capture": {"pre": 0.5, "post": 0.5}}]})");
  if (!config.ok()) return fail(config.error().message.c_str());
  auto bad = fleetpipe::parse_config(R"({"device_id": "c", "uploader": {"io_chunk_size": 0}})");
  if (bad.ok() || bad.error().json_pointer != "/uploader/io_chunk_size") {
    return fail("a bad io_chunk_size was not rejected at its pointer");
  }
  if (fleetpipe::validate_config(config->uploader).ok() == false) return fail("defaults rejected");

  fleetpipe::FakeClock clock;
  fleetpipe::Port port;
  port.clock = &clock;
  fleetpipe::MetricsRegistry metrics;
  CountingSink sink;
  auto capture = fleetpipe::Capture::create(*config, sink, port, metrics);
  if (!capture) return fail(capture.error().message.c_str());
  fleetpipe::Capture& c = **capture;
  const auto imu = c.stream("imu");
  for (int i = 0; i < 200; ++i) c.push(imu, i * 0.01, {i == 100 ? 20.0 : 1.0});
  c.flush();
  const auto fired = c.fire("fast", 2.5);
  if (!fired.ok() || !fired.value_or(false)) return fail("fire() did not make an event");
  c.flush();
  if (sink.events != 2 || sink.last_trigger != "fast") return fail("events not delivered");
  std::printf("fleetpipe %s no-exceptions consumer ok: %u events, %zu bytes, labels %zu\n",
              fleetpipe::kVersion, sink.events, sink.bytes, config->labels.size());
  return 0;
}
