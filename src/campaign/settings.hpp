// Internal: the "campaigns" section of the local config, for the config parser to call.
#pragma once

#include "common/json_reader.hpp"
#include "fleetpipe/campaign.hpp"

namespace fleetpipe::detail {

/// Parses "/campaigns" (throws ConfigError, calls finish()).
CampaignSettings parse_campaign_settings(JsonReader& section);
/// The checks parse_campaign_settings applies, for settings built in C++ (pointer-style errors).
Result<void> validate_campaign_settings(const CampaignSettings& s);

}  // namespace fleetpipe::detail
