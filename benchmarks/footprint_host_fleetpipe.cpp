// footprint_host_fleetpipe: footprint_host_base plus a Pipeline built from a JSON config, fed one
// stream and polled every tick — what a device's firmware links (bench_footprint's size figure).
#include <chrono>
#include <cmath>
#include <cstdio>
#include <string>
#include <thread>

#include <fleetpipe/fleetpipe.hpp>

int main(int argc, char** argv) {
  const int ticks = argc > 1 ? std::stoi(argv[1]) : 10;
  auto p = fleetpipe::Pipeline::create_from_file(argc > 2 ? argv[2] : "pipeline.json");
  if (!p) return std::fprintf(stderr, "%s\n", p.error().message.c_str()), 1;
  auto temp = (*p)->stream("temp");
  double acc = 0;
  for (int i = 0; i < ticks; ++i) {
    acc += std::sin(i * 0.1);  // the host's job
    (*p)->push(temp, i * 0.001, {acc});
    (*p)->poll();
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  std::printf("%f\n", acc);
  return (*p)->drain(std::chrono::seconds(10)) ? 0 : 1;
}
