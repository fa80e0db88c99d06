// The campaign document `fleetpipe.campaign/1`: strict parsing, with JSON pointers in errors.
#include <cctype>
#include <cstdio>
#include <ctime>

#include "campaign/internal.hpp"
#include "common/json_reader.hpp"
#include "fleetpipe/campaign.hpp"
#include "trigger/parse.hpp"

namespace fleetpipe {
namespace {

constexpr std::int64_t kMaxVersion = (std::int64_t{1} << 53) - 1;  // exact in every JSON reader

// "YYYY-MM-DDTHH:MM:SSZ" only: a document means one instant, whatever the device's zone.
std::optional<WallTime> parse_utc(const std::string& s) {
  if (s.size() != 20 || s[4] != '-' || s[7] != '-' || s[10] != 'T' || s[13] != ':' ||
      s[16] != ':' || s[19] != 'Z') {
    return std::nullopt;
  }
  for (std::size_t i : {0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18}) {
    if (!std::isdigit(static_cast<unsigned char>(s[i]))) return std::nullopt;
  }
  // WallTime counts nanoseconds in 64 bits (years 1678-2262): keep well inside.
  const int year = std::stoi(s.substr(0, 4));
  if (year < 1970 || year > 2200) return std::nullopt;
  std::tm tm{};
  tm.tm_year = year - 1900;
  tm.tm_mon = std::stoi(s.substr(5, 2)) - 1;
  tm.tm_mday = std::stoi(s.substr(8, 2));
  tm.tm_hour = std::stoi(s.substr(11, 2));
  tm.tm_min = std::stoi(s.substr(14, 2));
  tm.tm_sec = std::stoi(s.substr(17, 2));
  if (tm.tm_mon > 11 || tm.tm_mday < 1 || tm.tm_hour > 23 || tm.tm_min > 59 || tm.tm_sec > 59) {
    return std::nullopt;
  }
  const int wanted_mday = tm.tm_mday;
  std::time_t t = timegm(&tm);
  if (t == static_cast<std::time_t>(-1) || tm.tm_mday != wanted_mday) return std::nullopt;  // Feb 30
  return std::chrono::time_point_cast<WallTime::duration>(
      std::chrono::system_clock::from_time_t(t));
}

WallTime required_time(detail::JsonReader& r, std::string_view key) {
  std::string text = r.required_string(key);
  auto t = parse_utc(text);
  if (!t) {
    r.fail(key, "must be a UTC time \"YYYY-MM-DDTHH:MM:SSZ\" (years 1970-2200), got \"" + text +
                    "\"");
  }
  return *t;
}

// Inline conditions too: a custom trigger's code is in the firmware, not in a document.
void refuse_custom(const TriggerConfig& t, const std::string& pointer) {
  if (t.type == TriggerType::custom) {
    throw detail::ConfigError(pointer + "/type",
                              "a campaign cannot define a custom trigger (its code is firmware)");
  }
  for (std::size_t j = 0; j < t.children.size(); ++j) {
    refuse_custom(t.children[j], pointer + "/of/" + std::to_string(j));
  }
}

CampaignTargeting parse_targeting(detail::JsonReader& r) {
  CampaignTargeting t;
  t.labels = r.string_map("labels");
  if (t.labels.size() > 16) r.fail("labels", "at most 16 labels, got " + std::to_string(t.labels.size()));
  for (const auto& [k, v] : t.labels) {
    if (!detail::campaign_safe_name(k, 64)) {
      r.fail("labels", "label names are 1-64 of letters, digits, '_', '-' and '.', got \"" + k +
                           "\"");
    }
    if (v.empty() || v.size() > 128) {
      throw detail::ConfigError(r.pointer_of("labels") + "/" + k,
                                "a pattern is 1-128 characters, got " + std::to_string(v.size()));
    }
  }
  t.rollout_percent = r.number("rollout_percent", 100, 0, 100);
  double hundredths = t.rollout_percent * 100;
  if (hundredths != static_cast<double>(static_cast<std::int64_t>(hundredths))) {
    r.fail("rollout_percent", "steps of 0.01 only, got " + std::to_string(t.rollout_percent));
  }
  r.finish();
  return t;
}

CampaignContent parse_content(detail::JsonReader& r) {
  CampaignContent c;
  c.keep_local_triggers = r.one_of("local_triggers", "keep", {"keep", "replace"}) == "keep";
  if (!r.has("triggers")) r.fail("triggers", "is required (a campaign runs triggers)");
  for (auto& t : r.objects("triggers")) {
    c.triggers.push_back(detail::parse_trigger_config(t, false));
    refuse_custom(c.triggers.back(), t.pointer());
  }
  if (c.triggers.empty()) r.fail("triggers", "must not be empty");
  if (c.triggers.size() > 256) r.fail("triggers", "at most 256 triggers");
  if (auto up = r.optional_object("upload")) {
    if (up->has("bytes_per_second")) {
      c.upload.bytes_per_second = up->number("bytes_per_second", 0, 0, detail::JsonReader::kInf,
                                             /*min_exclusive=*/true);
    }
    if (up->has("buffer_max_bytes")) c.upload.buffer_max_bytes = up->bytes("buffer_max_bytes", 0, 1);
    up->finish();
  }
  r.finish();
  return c;
}

}  // namespace

namespace detail {

bool campaign_safe_name(std::string_view s, std::size_t max) noexcept {
  if (s.empty() || s.size() > max) return false;
  for (unsigned char ch : s) {
    if (!(std::isalnum(ch) || ch == '-' || ch == '_' || ch == '.')) return false;
  }
  return s != "." && s != "..";
}

Error campaign_error(campaign_errc code, std::string message, std::string pointer) {
  Error e(make_error_code(code), std::move(message));
  e.json_pointer = std::move(pointer);
  return e;
}

}  // namespace detail

std::string format_campaign_time(WallTime t) {
  std::time_t secs = std::chrono::system_clock::to_time_t(t);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

Result<CampaignDocument> parse_campaign_document(std::string_view json_text) {
  using detail::campaign_error;
  if (json_text.size() > kCampaignMaxDocumentBytes) {
    return campaign_error(campaign_errc::oversize,
                          "/: a campaign document is at most " +
                              std::to_string(kCampaignMaxDocumentBytes) + " bytes, got " +
                              std::to_string(json_text.size()),
                          "/");
  }
  nlohmann::json doc;
  try {
    doc = nlohmann::json::parse(json_text.begin(), json_text.end());
  } catch (const nlohmann::json::exception& e) {
    return campaign_error(campaign_errc::invalid, std::string("/: not valid JSON: ") + e.what(), "/");
  }
  try {
    detail::JsonReader root(doc, "");
    CampaignDocument d;
    std::string format = root.required_string("format");
    if (format != "fleetpipe.campaign/1") {
      root.fail("format", "must be \"fleetpipe.campaign/1\", got \"" + format + "\"");
    }
    d.id = root.required_string("id");
    if (!detail::campaign_safe_name(d.id, 64)) {
      root.fail("id", "must be 1-64 of letters, digits, '_', '-' and '.', got \"" + d.id + "\"");
    }
    if (!root.has("version")) root.fail("version", "is required");
    d.version = static_cast<std::uint64_t>(root.integer("version", 0, 1, kMaxVersion));
    d.description = root.string("description", "");
    if (d.description.size() > 4096) root.fail("description", "at most 4096 characters");
    d.priority = static_cast<std::int32_t>(root.integer("priority", 0, -1000, 1000));
    d.start = required_time(root, "start");
    d.expiry = required_time(root, "expiry");
    if (d.expiry <= d.start) root.fail("expiry", "must be after start");
    d.suspended = root.boolean("suspended", false);
    {
      auto t = root.object("targeting");
      d.targeting = parse_targeting(t);
    }
    if (!root.has("content")) root.fail("content", "is required");
    {
      auto c = root.object("content");
      d.content = parse_content(c);
    }
    root.finish();
    return d;
  } catch (const detail::ConfigError& e) {
    return campaign_error(campaign_errc::invalid, e.what(), e.pointer());
  } catch (const nlohmann::json::exception& e) {
    return campaign_error(campaign_errc::invalid, std::string("/: ") + e.what(), "/");
  } catch (const std::exception& e) {  // std::bad_alloc on a hostile document
    return campaign_error(campaign_errc::invalid, std::string("/: ") + e.what(), "/");
  }
}

}  // namespace fleetpipe
