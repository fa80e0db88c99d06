// The device's campaign settings ("campaigns" in the local config): keys, polling, hard limits.
#include "campaign/settings.hpp"

#include <set>

#include "campaign/internal.hpp"

namespace fleetpipe::detail {

Result<void> validate_campaign_settings(const CampaignSettings& s) {
  auto bad = [](const std::string& pointer, const std::string& reason) {
    return Error(errc::invalid_config, pointer + ": " + reason, pointer);
  };
  if (s.follow.empty()) return bad("/campaigns/follow", "must name at least one campaign id");
  std::set<std::string> ids;
  for (std::size_t i = 0; i < s.follow.size(); ++i) {
    if (!campaign_safe_name(s.follow[i], 64)) {
      return bad("/campaigns/follow/" + std::to_string(i),
                 "must be 1-64 of letters, digits, '_', '-' and '.', got \"" + s.follow[i] + "\"");
    }
    if (!ids.insert(s.follow[i]).second) {
      return bad("/campaigns/follow/" + std::to_string(i), "duplicate id \"" + s.follow[i] + "\"");
    }
  }
  if (!(s.poll_interval_s >= 10 && s.poll_interval_s <= 7 * 86400)) {
    return bad("/campaigns/poll_interval",
               "must be within [10 s, 7 d], got " + std::to_string(s.poll_interval_s) + " s");
  }
  if (!(s.poll_jitter >= 0 && s.poll_jitter <= 0.5)) {
    return bad("/campaigns/poll_jitter", "must be within [0, 0.5], got " + std::to_string(s.poll_jitter));
  }
  if (s.enabled && s.trusted_keys.empty()) {
    return bad("/campaigns/trusted_keys", "at least one key is required when campaigns are enabled");
  }
  std::set<std::string> key_ids;
  for (std::size_t i = 0; i < s.trusted_keys.size(); ++i) {
    const std::string p = "/campaigns/trusted_keys/" + std::to_string(i);
    const auto& k = s.trusted_keys[i];
    if (!campaign_safe_name(k.id, 64)) {
      return bad(p + "/id", "must be 1-64 of letters, digits, '_', '-' and '.', got \"" + k.id + "\"");
    }
    if (!key_ids.insert(k.id).second) return bad(p + "/id", "duplicate key id \"" + k.id + "\"");
    auto raw = campaign_base64_decode(k.public_key);
    if (!raw || raw->size() != 32) {
      return bad(p + "/ed25519", "must be the base64 of a 32-byte Ed25519 public key");
    }
  }
  if (s.limits.max_priority > 7) {
    return bad("/campaigns/limits/max_priority",
               "must be within [0, 7], got " + std::to_string(s.limits.max_priority));
  }
  if (!(s.limits.max_upload_bytes_per_second >= 0)) {
    return bad("/campaigns/limits/max_upload_bytes_per_second", "must be >= 0");
  }
  return {};
}

CampaignSettings parse_campaign_settings(JsonReader& r) {
  CampaignSettings s;
  s.enabled = r.boolean("enabled", s.enabled);
  if (r.has("follow")) s.follow = r.string_array("follow");
  s.poll_interval_s = r.seconds("poll_interval", s.poll_interval_s, 10, 7 * 86400);
  s.poll_jitter = r.number("poll_jitter", s.poll_jitter, 0, 0.5);
  for (auto& k : r.objects("trusted_keys")) {
    CampaignTrustedKey key;
    key.id = k.required_string("id");
    key.public_key = k.required_string("ed25519");
    k.finish();
    s.trusted_keys.push_back(std::move(key));
  }
  {
    auto l = r.object("limits");
    s.limits.max_bytes_per_day = l.bytes("max_bytes_per_day", s.limits.max_bytes_per_day);
    s.limits.max_upload_bytes_per_second =
        l.number("max_upload_bytes_per_second", s.limits.max_upload_bytes_per_second, 0);
    s.limits.max_buffer_bytes = l.bytes("max_buffer_bytes", s.limits.max_buffer_bytes);
    s.limits.max_priority =
        static_cast<std::uint8_t>(l.integer("max_priority", s.limits.max_priority, 0, 7));
    l.finish();
  }
  r.finish();
  if (auto v = validate_campaign_settings(s); !v) {
    throw ConfigError(v.error().json_pointer,
                      v.error().message.substr(v.error().json_pointer.size() + 2));
  }
  return s;
}

}  // namespace fleetpipe::detail

namespace fleetpipe {

CampaignDevice campaign_device_of(const Config& config,
                                  std::map<std::string, std::string> labels,
                                  const CampaignLimits& limits) {
  CampaignDevice d;
  d.device_id = config.device_id;
  d.labels = std::move(labels);
  d.streams = config.streams;
  d.local_triggers = config.triggers;
  d.local_upload_bytes_per_second = config.uploader.bytes_per_second;
  d.local_buffer_max_bytes = config.buffer.max_bytes;
  d.limits = limits;
  return d;
}

Result<CampaignSettings> parse_campaign_settings(std::string_view json_section) {
  nlohmann::json doc;
  try {
    doc = nlohmann::json::parse(json_section.begin(), json_section.end(), nullptr, true, true);
  } catch (const nlohmann::json::exception& e) {
    return Error(errc::invalid_config, std::string("/campaigns: not valid JSON: ") + e.what(),
                 "/campaigns");
  }
  try {
    detail::JsonReader r(doc, "/campaigns");
    return detail::parse_campaign_settings(r);
  } catch (const detail::ConfigError& e) {
    return Error(errc::invalid_config, e.what(), e.pointer());
  } catch (const nlohmann::json::exception& e) {
    return Error(errc::invalid_config, std::string("/campaigns: ") + e.what(), "/campaigns");
  }
}

}  // namespace fleetpipe
