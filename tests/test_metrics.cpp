#include "fleetpipe/metrics.hpp"

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <atomic>
#include <cstdint>
#include <thread>
#include <vector>

using fleetpipe::MetricsRegistry;

TEST_CASE("metrics: the same name and labels return the same series", "[metrics]") {
  MetricsRegistry reg;
  auto& a = reg.counter("fleetpipe_x_total", "x", {{"reason", "quota"}});
  auto& b = reg.counter("fleetpipe_x_total", "ignored", {{"reason", "quota"}});
  auto& c = reg.counter("fleetpipe_x_total", "x", {{"reason", "full"}});
  CHECK(&a == &b);
  CHECK(&a != &c);
  a.inc();
  b.inc(2);
  CHECK(reg.value("fleetpipe_x_total", {{"reason", "quota"}}) == 3);
  CHECK(reg.value("fleetpipe_x_total", {{"reason", "full"}}) == 0);
  CHECK(reg.value("fleetpipe_absent") == -1);
  CHECK(reg.sum("fleetpipe_x_total") == 3);
}

TEST_CASE("metrics: Prometheus text exposition", "[metrics]") {
  MetricsRegistry reg;
  reg.counter("fleetpipe_buffer_evictions_total", "Records evicted",
              {{"reason", "quota"}, {"priority", "1"}})
      .inc(4);
  reg.gauge("fleetpipe_uploader_rate_bytes_per_second", "Current rate").set(1250.5);
  auto& h = reg.histogram("fleetpipe_poll_seconds", "Poll duration", {0.001, 0.01});
  h.observe(0.0005);
  h.observe(0.005);
  h.observe(1);
  reg.counter("fleetpipe_label_escape_total", "Quotes \"and\" backslashes",
              {{"stream", "a\"b\\c\nd"}})
      .inc();

  const std::string expected =
      "# HELP fleetpipe_buffer_evictions_total Records evicted\n"
      "# TYPE fleetpipe_buffer_evictions_total counter\n"
      "fleetpipe_buffer_evictions_total{reason=\"quota\",priority=\"1\"} 4\n"
      "# HELP fleetpipe_label_escape_total Quotes \"and\" backslashes\n"
      "# TYPE fleetpipe_label_escape_total counter\n"
      "fleetpipe_label_escape_total{stream=\"a\\\"b\\\\c\\nd\"} 1\n"
      "# HELP fleetpipe_poll_seconds Poll duration\n"
      "# TYPE fleetpipe_poll_seconds histogram\n"
      "fleetpipe_poll_seconds_bucket{le=\"0.001\"} 1\n"
      "fleetpipe_poll_seconds_bucket{le=\"0.01\"} 2\n"
      "fleetpipe_poll_seconds_bucket{le=\"+Inf\"} 3\n"
      "fleetpipe_poll_seconds_sum 1.0055\n"
      "fleetpipe_poll_seconds_count 3\n"
      "# HELP fleetpipe_uploader_rate_bytes_per_second Current rate\n"
      "# TYPE fleetpipe_uploader_rate_bytes_per_second gauge\n"
      "fleetpipe_uploader_rate_bytes_per_second 1250.5\n";
  CHECK(reg.to_prometheus() == expected);
}

TEST_CASE("metrics: JSON export", "[metrics]") {
  MetricsRegistry reg;
  reg.counter("fleetpipe_trigger_fires_total", "Fires", {{"trigger", "hard_brake"}}).inc(7);
  reg.gauge("fleetpipe_buffer_bytes", "Bytes").set(-2);
  reg.histogram("fleetpipe_h", "H", {1.0}).observe(3);
  auto j = nlohmann::json::parse(reg.to_json());
  CHECK(j["fleetpipe_trigger_fires_total"]["type"] == "counter");
  CHECK(j["fleetpipe_trigger_fires_total"]["series"][0]["labels"]["trigger"] == "hard_brake");
  CHECK(j["fleetpipe_trigger_fires_total"]["series"][0]["value"] == 7);
  CHECK(j["fleetpipe_buffer_bytes"]["series"][0]["value"] == -2.0);
  auto hs = j["fleetpipe_h"]["series"][0];
  CHECK(hs["count"] == 1);
  CHECK(hs["buckets"][0]["le"] == 1.0);
  CHECK(hs["buckets"][0]["count"] == 0);
  CHECK(hs["buckets"][1]["le"] == "+Inf");
  CHECK(hs["buckets"][1]["count"] == 1);
}

TEST_CASE("metrics: a type clash is counted, not fatal, and not exported", "[metrics]") {
  MetricsRegistry reg;
  reg.counter("fleetpipe_dup", "d").inc();
  auto& g = reg.gauge("fleetpipe_dup", "d");
  g.set(5);
  CHECK(reg.value("fleetpipe_dup") == 1);
  CHECK(reg.value("fleetpipe_metrics_registration_errors_total") == 1);
}

TEST_CASE("metrics: concurrent increments are not lost", "[metrics]") {
  MetricsRegistry reg;
  auto& c = reg.counter("fleetpipe_c_total", "c");
  auto& g = reg.gauge("fleetpipe_g", "g");
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 100000; ++i) {
        c.inc();
        g.add(1);
      }
    });
  }
  for (auto& t : threads) t.join();
  CHECK(c.value() == 400000);
  CHECK(g.value() == 400000.0);
}

TEST_CASE("metrics: counters and gauges update lock-free on this target", "[metrics]") {
  // "Update lock-free" is a promise to the host's loop; on a 32-bit target (armhf) 64-bit
  // atomics are lock-free only where the ISA has a double-word exclusive (ARMv7-A: LDREXD).
  STATIC_REQUIRE(std::atomic<std::uint64_t>::is_always_lock_free);
  STATIC_REQUIRE(std::atomic<double>::is_always_lock_free);
  MetricsRegistry reg;
  auto& c = reg.counter("fleetpipe_lf_total", "c");
  c.inc(std::uint64_t{1} << 40);  // past 32 bits: the whole 64-bit value moves at once
  c.inc();
  CHECK(c.value() == (std::uint64_t{1} << 40) + 1);
}
