// Fuzzes the campaign document and envelope parsers: any byte string must give a campaign or a
// typed campaign_errc error (a document error naming a JSON pointer) — never a crash, an
// exception or a hang. The first byte picks the target, so one corpus covers both.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "fleetpipe/campaign.hpp"

namespace {

// A fixed trusted key: random envelopes reach the signature check only with its id.
const std::vector<fleetpipe::CampaignTrustedKey>& trusted() {
  static const std::vector<fleetpipe::CampaignTrustedKey> keys = {
      {"ml-2026", "+DSV4Qkv+IcbB8o2BM8VI+ZIuKoxrVUXloxyZdotLbQ="}};
  return keys;
}

void check(const fleetpipe::Error& e) {
  if (e.code.category() != fleetpipe::campaign_error_category()) __builtin_trap();
  if (e.message.empty()) __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  std::string_view text(reinterpret_cast<const char*>(data) + 1, size - 1);
  if (data[0] & 1) {
    auto r = fleetpipe::open_campaign_envelope(text, trusted());
    if (!r) check(r.error());
  } else {
    auto r = fleetpipe::parse_campaign_document(text);
    if (!r) {
      check(r.error());
      if (r.error().json_pointer.empty() || r.error().json_pointer[0] != '/') __builtin_trap();
    } else {
      // What parses also resolves or fails cleanly against a small device.
      fleetpipe::CampaignDevice dev;
      dev.device_id = "cart-1";
      fleetpipe::StreamConfig imu;
      imu.name = "imu";
      imu.channels = {"ax", "speed"};
      dev.streams = {imu};
      auto app = fleetpipe::resolve_campaign(*r, dev);
      if (!app) check(app.error());
      (void)fleetpipe::campaign_targets(*r, dev.device_id, {{"site", "store-01"}});
    }
  }
  return 0;
}
