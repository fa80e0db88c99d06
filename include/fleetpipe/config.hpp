// fleetpipe/config.hpp — one JSON document configures the whole pipeline.
//
//   {
//     "device_id": "cart-0042",          // required: names objects and metrics
//     "labels": {"site": "store-01"},    // optional: up to 16 device labels (below)
//     "log_level": "warning",            // trace|debug|info|warning|error|off
//     "streams":  [ ... ],               // see capture.hpp / docs/config.md
//     "triggers": [ ... ],               // see trigger.hpp
//     "buffer":   { ... },               // see buffer.hpp
//     "uploader": { ... },               // see uploader.hpp
//     "pipeline": { ... },               // heartbeat and poll settings (below)
//     "campaigns": { ... }               // signed campaigns from the bucket (docs/campaigns.md)
//   }
//
// Parsing is strict: an unknown key is an error (typos must not pass silently), and every error
// names the JSON pointer and the reason, e.g.
//   "/uploader/bandwidth/bytes_per_second: must be > 0, got -5".
// Every key and its default is listed in docs/config.md.
//
// Configs built in C++ go through the same checks: `validate_config()` below, one per
// component config, returns the message the JSON path gives for the same value.
// Capture::create and Pipeline::create call them.
#pragma once

#include <cstddef>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "fleetpipe/buffer.hpp"
#include "fleetpipe/campaign_settings.hpp"
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
  /// The heartbeat is compact (`fleetpipe.heartbeat/2`); every Nth one (the first included) also
  /// carries the full metrics export. 0: only after Pipeline::request_metrics_heartbeat().
  std::uint32_t heartbeat_metrics_every = 0;
  /// poll() advances Capture's time from the Port clock when streams go quiet (pipeline.hpp).
  bool auto_tick = true;
};

/// Labels of a device ("site", "store", "model", "firmware", "region", ...), for fleet views.
/// At most kMaxLabels; names 1-64 and values 1-128 characters of [A-Za-z0-9._-] (they end up
/// in object metadata, manifests and heartbeat keys, so nothing there needs escaping).
using DeviceLabels = std::map<std::string, std::string>;
inline constexpr std::size_t kMaxLabels = 16;
inline constexpr std::size_t kMaxLabelKeyLength = 64;
inline constexpr std::size_t kMaxLabelValueLength = 128;

/// The whole pipeline's configuration. Plain data: build it in C++ or parse it from JSON.
struct Config {
  std::string device_id;  ///< 1-128 characters of [A-Za-z0-9._-]
  DeviceLabels labels;    ///< "/labels"; validated as above
  LogLevel log_level = LogLevel::warning;
  std::vector<StreamConfig> streams;
  std::vector<TriggerConfig> triggers;
  BufferConfig buffer;
  UploaderConfig uploader;
  PipelineOptions pipeline;
  /// "/campaigns" (docs/campaigns.md); the Pipeline runs a CampaignAgent when `enabled`.
  CampaignSettings campaigns;
};

/// Parses a config document. Errors: invalid_config, with `Error::json_pointer` set and
/// `Error::message` = "<pointer>: <reason>". Never throws.
Result<Config> parse_config(std::string_view json_text);

/// One check per component config, with the JSON path's messages and pointers
/// ("/uploader/io_chunk_size: must be >= 4096, got 0"). Errors: invalid_config with
/// `Error::json_pointer` set. A config that passes is accepted by the component's create()
/// (which runs the same check), except for what only create() can see (files, the network).
Result<void> validate_config(const BufferConfig& config);  ///< "/buffer/..."
/// "/uploader/..."; an empty bucket passes here (Uploader::create requires one).
Result<void> validate_config(const UploaderConfig& config);
Result<void> validate_config(const PipelineOptions& options);  ///< "/pipeline/..."
/// Streams and triggers together ("/streams/N/...", "/triggers/N/..."): cross references,
/// cycles, custom implementations.
Result<void> validate_config(const std::vector<StreamConfig>& streams,
                             const std::vector<TriggerConfig>& triggers);
Result<void> validate_device_id(const std::string& device_id);  ///< "/device_id"
Result<void> validate_labels(const DeviceLabels& labels);       ///< "/labels/<name>"
/// All of the above, in document order; the first failure is returned.
Result<void> validate_config(const Config& config);

/// Reads and parses a file. Errors: io_error (file unreadable; message names the path),
/// invalid_config (as parse_config).
Result<Config> load_config_file(const std::string& path);

}  // namespace fleetpipe
