// Internal: the campaign forecast, shared by `campaign forecast` and `campaign publish
// --max-bytes-per-day` (campaign_report.cpp).
#pragma once

#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

namespace fleetpipe::cli {

/// Resolves the document against the device config, replays its trigger set over `samples`
/// and fills `out` (`fleetpipe replay --json` plus "campaign": id, version, rollout, targeted
/// devices of `fleet`). Returns 0; 1 for a refused document, 2 for a bad file, with `error`.
int campaign_forecast(const std::string& document_text, const std::string& device_config,
                      const std::string& samples, std::uint64_t fleet, nlohmann::json& out,
                      std::string& error);

}  // namespace fleetpipe::cli
