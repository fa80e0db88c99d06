// Where campaigns live in the bucket: the one function that renders their key.
#include "fleetpipe/campaign.hpp"

namespace fleetpipe {

std::string campaign_object_key(std::string_view prefix, std::string_view campaign_id) {
  std::string key(prefix);
  if (!key.empty() && key.back() != '/') key += '/';
  key.append("_campaigns/").append(campaign_id).append(".json");
  return key;
}

}  // namespace fleetpipe
