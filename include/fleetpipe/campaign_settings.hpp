// fleetpipe/campaign_settings.hpp — the "campaigns" section of the device config: which
// campaigns a device follows, how often it polls them, the keys it trusts and the hard limits a
// campaign cannot exceed. Plain data, shared by config.hpp (Config::campaigns) and campaign.hpp.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace fleetpipe {

/// Hard limits from the local config. A campaign's requests are clamped to them.
struct CampaignLimits {
  /// Event bytes per day for all of a campaign's triggers together: split evenly, each trigger's
  /// `budget.max_bytes_per_day` becomes min(its own or unlimited, this / number of triggers).
  std::uint64_t max_bytes_per_day = 256ull << 20;
  /// Ceiling on a campaign's upload rate; 0 = the local uploader rate is the ceiling
  /// (and a campaign can then only lower the rate when that rate is set).
  double max_upload_bytes_per_second = 0;
  /// Ceiling on a campaign's buffer quota; 0 = the local buffer quota.
  std::uint64_t max_buffer_bytes = 0;
  /// Highest event priority a campaign trigger may give (0..7); local critical events keep theirs.
  std::uint8_t max_priority = 5;
};

/// A public key the device trusts.
struct CampaignTrustedKey {
  std::string id;          ///< the envelope's `key_id`
  std::string public_key;  ///< base64 of the 32 raw Ed25519 public key bytes
};

/// The "campaigns" section of the local config (docs/campaigns.md).
struct CampaignSettings {
  bool enabled = false;  ///< the owner creates a CampaignAgent only when true
  std::vector<std::string> follow{"fleet"};  ///< campaign ids this device polls
  double poll_interval_s = 600;              ///< per id; jittered by +-`poll_jitter` per device
  double poll_jitter = 0.1;                  ///< 0..0.5, a share of the interval
  std::vector<CampaignTrustedKey> trusted_keys;  ///< several for rotation; required when enabled
  CampaignLimits limits;
};

}  // namespace fleetpipe
