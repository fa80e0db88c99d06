// The signed envelope `fleetpipe.campaign-envelope/1`: opening (checks in a fixed order, each
// failure a typed reason) and sealing.
#include <nlohmann/json.hpp>

#include "campaign/internal.hpp"

namespace fleetpipe {
namespace {

constexpr const char* kEnvelopeFormat = "fleetpipe.campaign-envelope/1";

Error reject(campaign_errc code, std::string message, std::string pointer = "/") {
  return detail::campaign_error(code, std::move(message), std::move(pointer));
}

// A string member, or nullptr when absent or not a string.
const std::string* member(const nlohmann::json& obj, const char* key) {
  auto it = obj.find(key);
  if (it == obj.end() || !it->is_string()) return nullptr;
  return it->get_ptr<const std::string*>();
}

}  // namespace

Result<OpenedCampaign> open_campaign_envelope(std::string_view body,
                                              const std::vector<CampaignTrustedKey>& trusted) {
  if (body.size() > kCampaignMaxEnvelopeBytes) {
    return reject(campaign_errc::oversize, "/: an envelope is at most " +
                                               std::to_string(kCampaignMaxEnvelopeBytes) +
                                               " bytes, got " + std::to_string(body.size()));
  }
  nlohmann::json env;
  try {
    env = nlohmann::json::parse(body.begin(), body.end());
  } catch (const nlohmann::json::exception& e) {
    return reject(campaign_errc::invalid, std::string("/: not valid JSON: ") + e.what());
  }
  if (!env.is_object()) return reject(campaign_errc::invalid, "/: an envelope is a JSON object");
  const std::string* format = member(env, "format");
  if (format && *format == "fleetpipe.campaign/1") {
    return reject(campaign_errc::unsigned_document,
                  "/: a bare campaign document; devices accept only signed envelopes", "/format");
  }
  if (!format || *format != kEnvelopeFormat) {
    return reject(campaign_errc::invalid,
                  std::string("/format: must be \"") + kEnvelopeFormat + "\"", "/format");
  }
  for (auto it = env.begin(); it != env.end(); ++it) {
    if (it.key() != "format" && it.key() != "key_id" && it.key() != "payload" &&
        it.key() != "signature") {
      std::string pointer = "/";
      for (char c : it.key()) pointer += c == '~' ? "~0" : c == '/' ? "~1" : std::string(1, c);
      return reject(campaign_errc::invalid, pointer + ": unknown key", pointer);
    }
  }
  const std::string* signature_b64 = member(env, "signature");
  if (!signature_b64 || signature_b64->empty()) {
    return reject(campaign_errc::unsigned_document, "/signature: is required", "/signature");
  }
  const std::string* key_id = member(env, "key_id");
  if (!key_id || key_id->empty()) {
    return reject(campaign_errc::invalid, "/key_id: must be a non-empty string", "/key_id");
  }
  const std::string* payload_b64 = member(env, "payload");
  if (!payload_b64) return reject(campaign_errc::invalid, "/payload: must be a string", "/payload");

  const CampaignTrustedKey* key = nullptr;
  for (const auto& k : trusted) {
    if (k.id == *key_id) key = &k;
  }
  if (!key) {
    std::string shown = detail::campaign_safe_name(*key_id, 64) ? *key_id : "(not a key id)";
    return reject(campaign_errc::unknown_key, "/key_id: key \"" + shown + "\" is not trusted",
                  "/key_id");
  }
  auto raw_key = detail::campaign_base64_decode(key->public_key);
  if (!raw_key || raw_key->size() != 32) {
    return reject(campaign_errc::invalid, "trusted key \"" + key->id + "\" is malformed", "");
  }
  if (payload_b64->size() > (kCampaignMaxDocumentBytes + 2) / 3 * 4) {
    return reject(campaign_errc::oversize, "/payload: the document is over " +
                                               std::to_string(kCampaignMaxDocumentBytes) + " bytes",
                  "/payload");
  }
  auto payload = detail::campaign_base64_decode(*payload_b64);
  if (!payload) return reject(campaign_errc::invalid, "/payload: not base64", "/payload");
  auto signature = detail::campaign_base64_decode(*signature_b64);
  if (!signature || signature->size() != 64 ||
      !detail::ed25519_verify(*raw_key, *payload, *signature)) {
    return reject(campaign_errc::bad_signature,
                  "/signature: does not verify with key \"" + key->id + "\"", "/signature");
  }
  auto doc = parse_campaign_document(*payload);
  if (!doc) return std::move(doc).error();
  OpenedCampaign out;
  out.key_id = *key_id;
  out.payload = std::move(*payload);
  out.document = std::move(*doc);
  return out;
}

Result<std::string> sign_campaign(std::string_view document, std::string_view key_id,
                                  std::string_view private_key_pem) {
  auto doc = parse_campaign_document(document);
  if (!doc) return std::move(doc).error();
  if (!detail::campaign_safe_name(key_id, 64)) {
    return Error(errc::invalid_argument, "a key id is 1-64 of letters, digits, '_', '-' and '.'");
  }
  auto sig = detail::ed25519_sign(private_key_pem, document);
  if (!sig) return std::move(sig).error();
  nlohmann::json env = {{"format", kEnvelopeFormat},
                        {"key_id", std::string(key_id)},
                        {"payload", detail::campaign_base64_encode(document)},
                        {"signature", detail::campaign_base64_encode(*sig)}};
  return env.dump() + "\n";
}

}  // namespace fleetpipe
