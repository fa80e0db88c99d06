// Resolving a campaign for one device: references checked against the firmware's streams and
// the local triggers, requests clamped by the local hard limits.
#include <algorithm>
#include <cstdio>
#include <functional>

#include "campaign/internal.hpp"
#include "trigger/validate.hpp"

namespace fleetpipe {
namespace {

// validate_capture_config reports "/triggers/<i>..." over the combined list; point into the
// document for the campaign's own triggers.
std::string document_pointer(const std::string& pointer, std::size_t n_local) {
  const std::string head = "/triggers/";
  if (pointer.compare(0, head.size(), head) != 0) return pointer;
  std::size_t end = pointer.find('/', head.size());
  if (end == std::string::npos) end = pointer.size();
  std::size_t index = 0;
  try {
    index = std::stoul(pointer.substr(head.size(), end - head.size()));
  } catch (const std::exception&) {
    return pointer;
  }
  if (index < n_local) return pointer;  // a local trigger: the device's own config
  return "/content/triggers/" + std::to_string(index - n_local) + pointer.substr(end);
}

std::string number_text(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}

}  // namespace

Result<CampaignApplication> resolve_campaign(const CampaignDocument& doc,
                                             const CampaignDevice& device) {
  CampaignApplication app;
  app.campaign_id = doc.id;
  app.campaign_version = doc.version;
  const std::size_t n_local = doc.content.keep_local_triggers ? device.local_triggers.size() : 0;
  if (doc.content.keep_local_triggers) app.triggers = device.local_triggers;

  const auto& limits = device.limits;
  const std::size_t n = doc.content.triggers.size();
  const std::uint64_t share = (limits.max_bytes_per_day > 0 && n > 0)
                                  ? limits.max_bytes_per_day / n
                                  : 0;
  for (std::size_t i = 0; i < n; ++i) {
    TriggerConfig t = doc.content.triggers[i];
    const std::string p = "/content/triggers/" + std::to_string(i);
    if (t.priority > limits.max_priority) {
      app.clamped.push_back(p + "/priority: " + std::to_string(t.priority) + " clamped to " +
                            std::to_string(limits.max_priority));
      t.priority = limits.max_priority;
    }
    if (share > 0 && (t.budget.max_bytes_per_day == 0 || t.budget.max_bytes_per_day > share)) {
      app.clamped.push_back(p + "/budget/max_bytes_per_day: " +
                            (t.budget.max_bytes_per_day == 0
                                 ? std::string("unlimited")
                                 : std::to_string(t.budget.max_bytes_per_day)) +
                            " clamped to " + std::to_string(share));
      t.budget.max_bytes_per_day = share;
    }
    app.triggers.push_back(std::move(t));
  }

  // The same checks as the local config, with a stand-in for the host's custom triggers (a
  // campaign cannot define any; local ones get their code from the host).
  struct Placeholder final : CustomTrigger {
    bool evaluate(double, std::uint32_t, const double*, std::size_t, std::size_t) noexcept override {
      return false;
    }
  };
  auto placeholder = std::make_shared<Placeholder>();
  std::vector<TriggerConfig> check = app.triggers;
  std::function<void(TriggerConfig&)> fill = [&](TriggerConfig& c) {
    if (c.type == TriggerType::custom && !c.custom) c.custom = placeholder;
    for (auto& ch : c.children) fill(ch);
  };
  for (auto& c : check) fill(c);
  if (auto v = detail::validate_capture_config(device.streams, check); !v) {
    const auto& e = v.error();
    std::string reason = e.message.substr(std::min(e.message.size(), e.json_pointer.size() + 2));
    std::string pointer = document_pointer(e.json_pointer, n_local);
    if (pointer == e.json_pointer && pointer.rfind("/content/", 0) != 0) {
      reason += " (in the device's local config)";
    }
    return detail::campaign_error(campaign_errc::invalid, pointer + ": " + reason, pointer);
  }

  if (doc.content.upload.bytes_per_second) {
    double want = *doc.content.upload.bytes_per_second;
    double ceiling = limits.max_upload_bytes_per_second > 0 ? limits.max_upload_bytes_per_second
                                                            : device.local_upload_bytes_per_second;
    if (ceiling > 0 && want > ceiling) {
      app.clamped.push_back("/content/upload/bytes_per_second: " + number_text(want) +
                            " clamped to " + number_text(ceiling));
      want = ceiling;
    }
    app.upload_bytes_per_second = want;
  }
  if (doc.content.upload.buffer_max_bytes) {
    std::uint64_t want = *doc.content.upload.buffer_max_bytes;
    std::uint64_t ceiling =
        limits.max_buffer_bytes > 0 ? limits.max_buffer_bytes : device.local_buffer_max_bytes;
    if (ceiling > 0 && want > ceiling) {
      app.clamped.push_back("/content/upload/buffer_max_bytes: " + std::to_string(want) +
                            " clamped to " + std::to_string(ceiling));
      want = ceiling;
    }
    app.buffer_max_bytes = want;
  }
  return app;
}

}  // namespace fleetpipe
