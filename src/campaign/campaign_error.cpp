// The campaign error category: why a campaign document was refused.
#include "fleetpipe/campaign.hpp"

namespace fleetpipe {
namespace {

class CampaignCategory final : public std::error_category {
 public:
  const char* name() const noexcept override { return "fleetpipe.campaign"; }
  std::string message(int ev) const override {
    switch (static_cast<campaign_errc>(ev)) {
      case campaign_errc::unsigned_document: return "campaign is not signed";
      case campaign_errc::bad_signature: return "campaign signature does not verify";
      case campaign_errc::unknown_key: return "campaign signed by an untrusted key";
      case campaign_errc::rollback: return "campaign version is not newer (rollback)";
      case campaign_errc::expired: return "campaign has expired";
      case campaign_errc::oversize: return "campaign is too large";
      case campaign_errc::invalid: return "campaign is invalid";
    }
    return "unknown campaign error";
  }
};

}  // namespace

const std::error_category& campaign_error_category() noexcept {
  static const CampaignCategory kCategory;
  return kCategory;
}

std::error_code make_error_code(campaign_errc e) noexcept {
  return {static_cast<int>(e), campaign_error_category()};
}

const char* to_string(campaign_errc e) noexcept {
  switch (e) {
    case campaign_errc::unsigned_document: return "unsigned";
    case campaign_errc::bad_signature: return "bad_signature";
    case campaign_errc::unknown_key: return "unknown_key";
    case campaign_errc::rollback: return "rollback";
    case campaign_errc::expired: return "expired";
    case campaign_errc::oversize: return "oversize";
    case campaign_errc::invalid: return "invalid";
  }
  return "invalid";
}

}  // namespace fleetpipe
