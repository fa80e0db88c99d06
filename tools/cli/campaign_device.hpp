// Internal: a device config as the campaign subcommands read it (campaign.cpp).
#pragma once

#include <map>
#include <string>

#include "fleetpipe/campaign.hpp"
#include "fleetpipe/config.hpp"

namespace fleetpipe::cli {

struct DeviceFile {
  Config config;
  CampaignSettings settings;
  std::map<std::string, std::string> labels;
};

/// The device config, with its "campaigns" and "labels" sections. Errors: io_error,
/// invalid_config (the message names the file and the JSON pointer).
Result<DeviceFile> load_device(const std::string& path);

/// The whole file; prints "fleetpipe campaign: cannot open PATH" and returns false otherwise.
bool read_file(const std::string& path, std::string& out);

}  // namespace fleetpipe::cli
