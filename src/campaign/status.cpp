// The campaign state a heartbeat carries: one small JSON object per followed campaign.
#include <nlohmann/json.hpp>

#include "fleetpipe/campaign.hpp"

namespace fleetpipe {

std::string campaign_status_json(const std::vector<CampaignStatus>& statuses) {
  nlohmann::json out = nlohmann::json::array();
  for (const auto& s : statuses) {
    nlohmann::json o = {{"id", s.id},
                        {"version", s.version},
                        {"state", to_string(s.state)},
                        {"since", format_campaign_time(s.since)},
                        {"in_force", s.in_force}};
    // The reason code only: the message (parser text, pointers) stays in the device log.
    if (!s.last_rejection.empty()) {
      o["last_rejection"] = s.last_rejection;
      o["last_rejection_at"] = format_campaign_time(s.last_rejection_at);
    }
    out.push_back(std::move(o));
  }
  return out.dump();
}

}  // namespace fleetpipe
