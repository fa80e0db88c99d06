// fleetpipe/config.hpp — one JSON document configures the whole pipeline.
//
//   {
//     "device_id": "cart-0042",          // required: names objects and metrics
//     "log_level": "warning",            // trace|debug|info|warning|error|off
//     "streams":  [ ... ],               // see capture.hpp / docs/config.md
//     "triggers": [ ... ],               // see trigger.hpp
//     "buffer":   { ... },               // see buffer.hpp
//     "uploader": { ... },               // see uploader.hpp
//     "pipeline": { ... }                // heartbeat and poll settings (below)
//   }
//
// Parsing is strict: an unknown key is an error (typos must not pass silently), and every error
// names the JSON pointer and the reason, e.g.
//   "/uploader/bandwidth/bytes_per_second: must be > 0, got -5".
// Every key and its default is listed in docs/config.md.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "fleetpipe/buffer.hpp"
#include "fleetpipe/capture.hpp"
#include "fleetpipe/error.hpp"
#include "fleetpipe/port.hpp"
#include "fleetpipe/trigger.hpp"
#include "fleetpipe/uploader.hpp"

namespace fleetpipe {

/// Settings of the Pipeline facade itself.
struct PipelineOptions {
  /// Period of the heartbeat object (`{prefix}/_heartbeat/device={id}/{time}.json`); 0 disables.
  double heartbeat_interval_s = 300;
  /// Default budget of `Pipeline::poll()` when the host passes none.
  double poll_budget_s = 0.0005;
  /// Send a heartbeat at the first poll (the device announces itself), then every interval.
  bool heartbeat_on_start = true;
  /// poll() advances Capture's time from the Port clock when streams go quiet (pipeline.hpp).
  bool auto_tick = true;
};

/// The whole pipeline's configuration. Plain data: build it in C++ or parse it from JSON.
struct Config {
  std::string device_id;
  LogLevel log_level = LogLevel::warning;
  std::vector<StreamConfig> streams;
  std::vector<TriggerConfig> triggers;
  BufferConfig buffer;
  UploaderConfig uploader;
  PipelineOptions pipeline;
};

/// Parses a config document. Errors: invalid_config, with `Error::json_pointer` set and
/// `Error::message` = "<pointer>: <reason>". Never throws.
Result<Config> parse_config(std::string_view json_text);

/// Reads and parses a file. Errors: io_error (file unreadable; message names the path),
/// invalid_config (as parse_config).
Result<Config> load_config_file(const std::string& path);

}  // namespace fleetpipe
