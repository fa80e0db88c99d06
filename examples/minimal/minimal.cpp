// minimal: one stream, one threshold trigger, upload. The whole SDK in one screen.
//   tests/s3server/start /tmp/s3 && FLEETPIPE_S3_STATE=/tmp/s3 build/examples/minimal/minimal
#include <chrono>
#include <cmath>
#include <cstdio>
#include <thread>

#include <fleetpipe/fleetpipe.hpp>

#include "../common/example_args.hpp"

int main(int argc, char** argv) {
  using namespace std::chrono;
  example::Args args(argc, argv);
  fleetpipe::Config config;  // or fleetpipe::load_config_file("pipeline.json")
  config.device_id = "minimal-1";
  config.buffer.path = args.get("--db", "minimal-db");
  fleetpipe::StreamConfig temp_stream;
  temp_stream.name = "temp";
  temp_stream.channels = {"celsius"};
  config.streams.push_back(temp_stream);
  auto hot = fleetpipe::threshold_trigger("overheat", "temp", "celsius",
                                          fleetpipe::ThresholdOp::above, 80.0);
  hot.capture.pre_s = hot.capture.post_s = 0.5;  // keep 0.5 s before and after the fire
  config.triggers.push_back(hot);
  config.uploader.enabled = example::apply_s3(args, config.uploader, "fleetpipe-examples");

  auto created = fleetpipe::Pipeline::create(config);
  if (!created) return std::fprintf(stderr, "%s\n", created.error().message.c_str()), 1;
  fleetpipe::Pipeline& p = **created;
  auto temp = p.stream("temp");  // resolve names once, outside the loop

  const auto t0 = steady_clock::now();
  for (int i = 0; i < 400; ++i) {  // 2 s at 200 Hz, with a heat spike at 1 s
    double t = duration<double>(steady_clock::now() - t0).count();
    p.push(temp, t, {(i >= 200 && i < 220) ? 90.0 : 60.0 + std::sin(i * 0.1)});
    p.poll(microseconds(500));  // bounded slice: finish events, upload, heartbeat
    std::this_thread::sleep_for(milliseconds(5));  // the host's real job
  }
  if (!p.has_uploader()) return std::puts("no S3 server given: events kept in the buffer"), 0;
  auto drained = p.drain(seconds(60));  // upload what is left before exiting
  auto s = p.status();
  std::printf("events %llu, objects uploaded %llu, left in buffer %llu: %s\n",
              (unsigned long long)s.capture.events, (unsigned long long)s.uploader.objects_uploaded,
              (unsigned long long)s.buffer.records, drained ? "ok" : drained.error().message.c_str());
  return drained && s.capture.events > 0 ? 0 : 1;
}
