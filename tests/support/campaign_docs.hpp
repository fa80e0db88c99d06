// Test helpers for campaigns: a device, a valid document to vary, signing with fresh keys.
#pragma once

#include <nlohmann/json.hpp>

#include <string>

#include "fleetpipe/campaign.hpp"

namespace fleetpipe::test {

/// A device with a numeric stream "imu" (ax, speed), a blob stream "cam" and one local trigger.
inline CampaignDevice campaign_device(std::string id = "cart-0001") {
  CampaignDevice d;
  d.device_id = std::move(id);
  d.labels = {{"site", "store-01-north"}, {"model", "cart-v3"}};
  StreamConfig imu;
  imu.name = "imu";
  imu.channels = {"ax", "speed"};
  StreamConfig cam;
  cam.name = "cam";
  cam.kind = StreamKind::blob;
  d.streams = {imu, cam};
  d.local_triggers = {threshold_trigger("hard_brake", "imu", "ax", ThresholdOp::below, -4)};
  d.local_upload_bytes_per_second = 100000;
  d.local_buffer_max_bytes = 256ull << 20;
  return d;
}

/// A valid document: one threshold trigger on imu/speed, in force from an hour before `now`
/// for a day.
inline nlohmann::json campaign_doc(const std::string& id, std::uint64_t version, WallTime now) {
  using std::chrono::hours;
  return {{"format", "fleetpipe.campaign/1"},
          {"id", id},
          {"version", version},
          {"description", "speeding study"},
          {"start", format_campaign_time(now - hours(1))},
          {"expiry", format_campaign_time(now + hours(24))},
          {"targeting", {{"labels", {{"model", "cart-*"}}}, {"rollout_percent", 100}}},
          {"content",
           {{"triggers",
             {{{"name", "fast_" + std::to_string(version)},
               {"type", "threshold"},
               {"stream", "imu"},
               {"channel", "speed"},
               {"above", 3},
               {"priority", 4}}}}}}};
}

/// A key pair generated once per process, and its trusted-key entry.
struct TestKey {
  CampaignKeyPair pair;
  CampaignTrustedKey trusted;
};
inline const TestKey& test_key(int which = 0) {
  static TestKey keys[2] = {
      {*generate_campaign_key(), {}},
      {*generate_campaign_key(), {}},
  };
  keys[which].trusted = {which == 0 ? "ml-2026" : "ml-2027", keys[which].pair.public_key};
  return keys[which];
}

/// The signed envelope of `doc` with key `which`.
inline std::string signed_envelope(const nlohmann::json& doc, int which = 0) {
  const auto& k = test_key(which);
  auto env = sign_campaign(doc.dump(), k.trusted.id, k.pair.private_key_pem);
  return env ? *env : std::string("sign failed: ") + env.error().message;
}

}  // namespace fleetpipe::test
