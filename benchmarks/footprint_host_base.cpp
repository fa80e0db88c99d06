// footprint_host_base: a tiny host program WITHOUT fleetpipe (bench_footprint's size baseline).
// footprint_host_fleetpipe.cpp is the same program embedding a Pipeline; the difference of their
// stripped sizes is what fleetpipe adds to a device's binary.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <string>
#include <thread>

int main(int argc, char** argv) {
  const int ticks = argc > 1 ? std::stoi(argv[1]) : 10;
  double acc = 0;
  for (int i = 0; i < ticks; ++i) {
    acc += std::sin(i * 0.1);  // the host's job
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  std::printf("%f\n", acc);
  return 0;
}
