// Campaign targeting: label selectors with `*` globs and the stable rollout hash.
#include <boost/endian/conversion.hpp>

#include <cstring>

#include "campaign/internal.hpp"
#include "fleetpipe/campaign.hpp"

namespace fleetpipe {

std::uint32_t campaign_rollout_bucket(std::string_view campaign_id, std::string_view device_id) {
  std::string input;
  input.reserve(campaign_id.size() + 1 + device_id.size());
  input.append(campaign_id).append("\n").append(device_id);
  const std::string digest = detail::campaign_sha256(input);
  std::uint64_t first = 0;
  std::memcpy(&first, digest.data(), sizeof first);
  return static_cast<std::uint32_t>(boost::endian::big_to_native(first) % 10000u);
}

bool campaign_glob_match(std::string_view pattern, std::string_view value) noexcept {
  // Greedy with one backtrack point: linear in practice, no recursion on hostile patterns.
  std::size_t p = 0, v = 0, star = std::string_view::npos, mark = 0;
  while (v < value.size()) {
    if (p < pattern.size() && pattern[p] == '*') {
      star = p++;
      mark = v;
    } else if (p < pattern.size() && pattern[p] == value[v]) {
      ++p;
      ++v;
    } else if (star != std::string_view::npos) {
      p = star + 1;
      v = ++mark;
    } else {
      return false;
    }
  }
  while (p < pattern.size() && pattern[p] == '*') ++p;
  return p == pattern.size();
}

bool campaign_targets(const CampaignDocument& doc, std::string_view device_id,
                      const std::map<std::string, std::string>& device_labels) {
  for (const auto& [name, pattern] : doc.targeting.labels) {
    auto it = device_labels.find(name);
    if (it == device_labels.end() || !campaign_glob_match(pattern, it->second)) return false;
  }
  // Percent in hundredths against the bucket: 10 % -> buckets 0..999, 50 % -> 0..4999.
  const auto threshold = static_cast<std::uint32_t>(doc.targeting.rollout_percent * 100 + 0.5);
  return campaign_rollout_bucket(doc.id, device_id) < threshold;
}

}  // namespace fleetpipe
