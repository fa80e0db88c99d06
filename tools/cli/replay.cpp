// `fleetpipe replay` — dry-run the configured triggers and capture over recorded samples and
// forecast the data volume per device and per fleet. Nothing is stored or uploaded.
//
//   fleetpipe replay --config cfg.json SAMPLES.jsonl [--fleet N] [--json] [--dump-events DIR]
//
// Input: one JSON object per line, either numeric
//   {"t": 12.5, "stream": "imu", "v": {"accel_x": -5.1, "speed": 14.2}}
// or a synthetic blob of the given size
//   {"t": 12.5, "stream": "camera", "blob_bytes": 48000}
// Blank lines and lines starting with '#' are skipped. A bad line stops the run with
// "SAMPLES.jsonl:LINE: reason" and exit status 2.
// --dump-events DIR (hidden, for tests and format work) writes every encoded event to
// DIR/events.fpev (concatenated, as the uploader packs them).
#include <CLI/CLI.hpp>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <string>

#include <nlohmann/json.hpp>

#include "cli/commands.hpp"
#include "cli/replay.hpp"
#include "cli/format.hpp"
#include "fleetpipe/capture.hpp"
#include "fleetpipe/config.hpp"

namespace fleetpipe::cli {
namespace {

struct Options {
  std::string config;
  std::string samples;
  std::uint64_t fleet = 1;
  bool json = false;
  std::string dump_dir;
};

struct ReplaySink final : EventSink {
  std::ofstream dump;
  AppendOutcome deliver(const RecordMeta&, std::string_view payload) override {
    if (dump.is_open()) dump.write(payload.data(), static_cast<std::streamsize>(payload.size()));
    AppendOutcome o;
    o.accepted = true;
    return o;
  }
};

class QuietLog final : public LogSink {
 public:
  void write(LogLevel, std::string_view, std::string_view) noexcept override {}
};

int fail(const std::string& msg) {
  std::fprintf(stderr, "fleetpipe replay: %s\n", msg.c_str());
  return 2;
}

bool has_custom(const TriggerConfig& t) {
  if (t.type == TriggerType::custom) return true;
  for (const auto& c : t.children) {
    if (has_custom(c)) return true;
  }
  return false;
}

}  // namespace

int replay_config(const Config& config, const std::string& samples_path, std::uint64_t fleet,
                  const std::string& dump_dir, nlohmann::json& out, std::string& error) {
  const Config* cfg = &config;
  auto fail = [&error](const std::string& msg) {
    error = msg;
    return 2;
  };
  for (std::size_t i = 0; i < cfg->triggers.size(); ++i) {
    if (has_custom(cfg->triggers[i])) {
      return fail("/triggers/" + std::to_string(i) +
                  ": custom triggers run host code and cannot be replayed");
    }
  }
  struct {
    const std::string& samples;
    const std::string& dump_dir;
    std::uint64_t fleet;
  } o{samples_path, dump_dir, fleet};
  std::ifstream in(o.samples);
  if (!in) return fail("cannot open " + o.samples);

  ReplaySink sink;
  if (!o.dump_dir.empty()) {
    sink.dump.open(o.dump_dir + "/events.fpev", std::ios::binary | std::ios::trunc);
    if (!sink.dump) return fail("cannot write " + o.dump_dir + "/events.fpev");
  }
  // Deterministic wall times that follow the samples: wall = 2024-10-04T00:00:00Z + t.
  FakeClock clock;
  const WallTime wall_base = clock.wall();
  QuietLog quiet;
  Port port;
  port.clock = &clock;
  port.log = &quiet;
  MetricsRegistry metrics;
  auto cap = Capture::create(*cfg, sink, port, metrics);
  if (!cap) return fail(cap.error().message);
  Capture& c = **cap;

  std::vector<double> row;
  std::string blob;
  std::string line;
  std::size_t lineno = 0;
  double t_first = NAN, t_last = NAN;
  std::uint64_t samples = 0;
  auto bad = [&](const std::string& why) {
    return fail(o.samples + ":" + std::to_string(lineno) + ": " + why);
  };
  while (std::getline(in, line)) {
    ++lineno;
    std::size_t p = line.find_first_not_of(" \t\r");
    if (p == std::string::npos || line[p] == '#') continue;
    nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_discarded()) return bad("not valid JSON");
    if (!j.is_object()) return bad("must be a JSON object");
    for (auto it = j.begin(); it != j.end(); ++it) {
      if (it.key() != "t" && it.key() != "stream" && it.key() != "v" &&
          it.key() != "blob_bytes") {
        return bad("unknown key \"" + it.key() + "\" (expected t, stream, v or blob_bytes)");
      }
    }
    if (!j.contains("t") || !j["t"].is_number()) return bad("\"t\" must be a number (seconds)");
    double t = j["t"].get<double>();
    if (!std::isfinite(t)) return bad("\"t\" must be finite");
    if (!j.contains("stream") || !j["stream"].is_string()) return bad("\"stream\" must be a string");
    std::string sname = j["stream"].get<std::string>();
    StreamHandle h = c.stream(sname);
    if (!h.valid()) return bad("unknown stream \"" + sname + "\"");
    clock.set_wall(wall_base + std::chrono::duration_cast<WallTime::duration>(
                                   std::chrono::duration<double>(t)));
    const StreamConfig& sc = c.streams()[h.index];
    const bool has_v = j.contains("v"), has_b = j.contains("blob_bytes");
    if (has_v == has_b) return bad("needs exactly one of \"v\" (numeric) or \"blob_bytes\"");
    if (has_v) {
      if (sc.kind != StreamKind::numeric) {
        return bad("stream \"" + sname + "\" is a blob stream: use \"blob_bytes\"");
      }
      const auto& v = j["v"];
      if (!v.is_object()) return bad("\"v\" must be an object of channel: number");
      row.assign(sc.channels.size(), NAN);
      for (auto it = v.begin(); it != v.end(); ++it) {
        int ch = c.channel(h, it.key());
        if (ch < 0) return bad("stream \"" + sname + "\" has no channel \"" + it.key() + "\"");
        if (it.value().is_null()) continue;  // explicit missing value
        if (!it.value().is_number()) return bad("channel \"" + it.key() + "\" must be a number");
        row[static_cast<std::size_t>(ch)] = it.value().get<double>();
      }
      c.push(h, t, row.data(), row.size());
    } else {
      if (sc.kind != StreamKind::blob) {
        return bad("stream \"" + sname + "\" is a numeric stream: use \"v\"");
      }
      const auto& b = j["blob_bytes"];
      if (!b.is_number_integer() || b.get<std::int64_t>() < 0 ||
          b.get<std::int64_t>() > (std::int64_t{1} << 31)) {
        return bad("\"blob_bytes\" must be an integer in [0, 2^31]");
      }
      std::size_t n = b.get<std::size_t>();
      if (blob.size() < n) blob.resize(n, '\0');
      c.push_blob(h, t, std::string_view(blob.data(), n));
    }
    if (std::isnan(t_first) || t < t_first) t_first = t;
    if (std::isnan(t_last) || t > t_last) t_last = t;
    ++samples;
    if (samples % 1024 == 0) c.tick(t_last);
  }
  if (in.bad()) return fail("cannot read " + o.samples);
  c.flush();  // events still recording at the end of the file are finished as they are

  const double duration = samples ? t_last - t_first : 0;
  const double per_day = duration > 0 ? 86400.0 / duration : 0;
  auto st = c.stats();
  out = nlohmann::json::object();
  out["trigger_order"] = nlohmann::json::array();
  for (const auto& t : c.triggers()) out["trigger_order"].push_back(t.name);
  out["triggers"] = nlohmann::json::object();
  for (std::uint32_t i = 0; i < c.triggers().size(); ++i) {
    auto ts = c.trigger_stats(TriggerHandle{i});
    out["triggers"][c.triggers()[i].name] = {{"fires", ts.fires},
                                             {"events", ts.events},
                                             {"bytes", ts.bytes},
                                             {"budget_hits", ts.budget_hits},
                                             {"suppressed_cooldown", ts.suppressed_cooldown},
                                             {"sampled_out", ts.sampled_out}};
  }
  out["events"] = st.events;
  out["bytes"] = st.event_bytes;
  out["samples"] = samples;
  out["dropped"] = {{"time_backwards", st.time_backwards},
                    {"ring_overflow", st.ring_overflow},
                    {"nan_values", st.nan_samples}};
  out["duration_s"] = duration;
  const double epd = double(st.events) * per_day, bpd = double(st.event_bytes) * per_day;
  out["forecast"] = {{"events_per_day", epd},
                     {"bytes_per_day", bpd},
                     {"fleet",
                      {{"devices", o.fleet},
                       {"events_per_day", epd * double(o.fleet)},
                       {"bytes_per_day", bpd * double(o.fleet)}}}};
  return 0;
}

namespace {

int run(const Options& o) {
  auto cfg = load_config_file(o.config);
  if (!cfg) return fail(cfg.error().message);
  nlohmann::json out;
  std::string error;
  if (int rc = replay_config(*cfg, o.samples, o.fleet, o.dump_dir, out, error); rc != 0) {
    return fail(error);
  }
  const double duration = out["duration_s"].get<double>();
  const double epd = out["forecast"]["events_per_day"].get<double>();
  const double bpd = out["forecast"]["bytes_per_day"].get<double>();
  const std::uint64_t samples = out["samples"].get<std::uint64_t>();
  struct {
    std::uint64_t events, event_bytes, time_backwards, ring_overflow;
  } st{out["events"].get<std::uint64_t>(), out["bytes"].get<std::uint64_t>(),
       out["dropped"]["time_backwards"].get<std::uint64_t>(),
       out["dropped"]["ring_overflow"].get<std::uint64_t>()};
  if (o.json) {
    nlohmann::json shown = out;
    shown.erase("trigger_order");
    std::printf("%s\n", shown.dump().c_str());
    return 0;
  }
  std::printf("replayed %llu samples over %.3f s (%s)\n\n",
              static_cast<unsigned long long>(samples), duration, o.samples.c_str());
  std::printf("%-24s %8s %8s %14s %12s %10s %10s\n", "trigger", "fires", "events", "bytes",
              "budget_hits", "cooldown", "sampled");
  for (const auto& name : out["trigger_order"]) {
    const auto& ts = out["triggers"][name.get<std::string>()];
    auto n = [&](const char* k) { return static_cast<unsigned long long>(ts[k].get<std::uint64_t>()); };
    std::printf("%-24s %8llu %8llu %14s %12llu %10llu %10llu\n", name.get<std::string>().c_str(),
                n("fires"), n("events"), human_bytes(double(n("bytes")), 2).c_str(), n("budget_hits"),
                n("suppressed_cooldown"), n("sampled_out"));
  }
  std::printf("\nevents: %llu, bytes: %s (a merged event counts once here, once per trigger above)\n",
              static_cast<unsigned long long>(st.events), human_bytes(double(st.event_bytes), 2).c_str());
  if (st.time_backwards || st.ring_overflow) {
    std::printf("dropped: %llu samples with time going backwards, %llu ring overflows\n",
                static_cast<unsigned long long>(st.time_backwards),
                static_cast<unsigned long long>(st.ring_overflow));
  }
  if (duration > 0) {
    std::printf("forecast per device: %.1f events/day, %s/day\n", epd, human_bytes(bpd, 2).c_str());
    std::printf("forecast for %llu devices: %.1f events/day, %s/day\n",
                static_cast<unsigned long long>(o.fleet), epd * double(o.fleet),
                human_bytes(bpd * double(o.fleet), 2).c_str());
  } else {
    std::printf("forecast: the recording spans no time; no per-day forecast\n");
  }
  return 0;
}

}  // namespace

void register_replay(CLI::App& app) {
  auto opts = std::make_shared<Options>();
  auto* cmd = app.add_subcommand(
      "replay", "dry-run the configured triggers and capture over recorded samples (JSONL) and "
                "forecast events and bytes per day, per device and for a fleet");
  cmd->add_option("--config", opts->config, "fleetpipe JSON config (streams and triggers)")
      ->required();
  cmd->add_option("samples", opts->samples,
                  "JSONL samples: {\"t\": s, \"stream\": name, \"v\": {channel: value}} or "
                  "{\"t\": s, \"stream\": name, \"blob_bytes\": n}")
      ->required();
  cmd->add_option("--fleet", opts->fleet, "number of devices for the fleet forecast")
      ->default_val(1)
      ->check(CLI::Range(std::uint64_t{1}, std::uint64_t{1000000000}));
  cmd->add_flag("--json", opts->json, "print one JSON object");
  cmd->add_option("--dump-events", opts->dump_dir)->group("");  // hidden: tests, format work
  cmd->callback([opts] { set_exit_code(run(*opts)); });
}

}  // namespace fleetpipe::cli
