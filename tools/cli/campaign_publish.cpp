// `fleetpipe campaign publish|rollout|suspend|resume`: a new signed version of a campaign,
// uploaded to `{prefix}/_campaigns/<id>.json` (docs/campaigns.md).
#include <CLI/CLI.hpp>

#include <cstdio>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>

#include <nlohmann/json.hpp>

#include "cli/bucket_options.hpp"
#include "campaign/internal.hpp"
#include "cli/campaign_report.hpp"
#include "cli/commands.hpp"
#include "fleetpipe/campaign.hpp"
#include "fleetpipe/query.hpp"
#include "s3/put_once.hpp"

namespace fleetpipe::cli {
namespace {

struct PublishOptions {
  BucketOptions bucket;
  std::string document;  // publish: the document file; others: the campaign id
  std::string key_file, key_id;
  double percent = -1;
  bool force = false;
  // publish: the cost ceiling and what the forecast runs over.
  double max_bytes_per_day = 0;
  std::string samples, device_config;
  std::uint64_t fleet = 1;
};

int fail(const char* what, const std::string& message) {
  std::fprintf(stderr, "fleetpipe campaign %s: %s\n", what, message.c_str());
  return 1;
}

// The document of the envelope now in the bucket (nullopt when there is none).
Result<std::optional<nlohmann::json>> current_document(const UploaderConfig& cfg,
                                                       const std::string& key) {
  auto reader = BucketReader::open(cfg);
  if (!reader) return std::move(reader).error();
  auto body = (*reader)->get(key);
  if (!body) {
    if (body.error().is(errc::not_found)) return std::optional<nlohmann::json>();
    return std::move(body).error();
  }
  // Read for its content only: the operator re-signs it, and devices verify what they get.
  auto env = nlohmann::json::parse(*body, nullptr, false);
  if (!env.is_object() || !env.contains("payload") || !env["payload"].is_string()) {
    return Error(errc::decode_error, key + " is not a campaign envelope");
  }
  auto payload = detail::campaign_base64_decode(env["payload"].get<std::string>());
  if (!payload) return Error(errc::decode_error, key + ": the payload is not base64");
  auto doc = nlohmann::json::parse(*payload, nullptr, false);
  if (!doc.is_object()) return Error(errc::decode_error, key + ": the payload is not JSON");
  return std::optional<nlohmann::json>(std::move(doc));
}

int sign_and_put(const char* what, const PublishOptions& o, const UploaderConfig& cfg,
                 const nlohmann::json& doc) {
  auto pem = load_campaign_private_key(o.key_file);
  if (!pem) return fail(what, pem.error().message);
  auto env = sign_campaign(doc.dump(2) + "\n", o.key_id, *pem);
  if (!env) return fail(what, env.error().message);
  const std::string id = doc.value("id", "");
  const std::string key = campaign_object_key(cfg.prefix, id);
  if (auto r = detail::put_once(cfg, key, *env); !r) return fail(what, r.error().message);
  std::printf("%s: campaign %s version %llu -> s3://%s/%s\n", what, id.c_str(),
              static_cast<unsigned long long>(doc.value("version", 0ull)), cfg.bucket.c_str(),
              key.c_str());
  return 0;
}

int run_publish(const PublishOptions& o) {
  UploaderConfig cfg;
  if (!o.bucket.resolve(cfg)) return 2;
  std::ifstream in(o.document, std::ios::binary);
  if (!in) return fail("publish", "cannot open " + o.document);
  std::ostringstream ss;
  ss << in.rdbuf();
  auto parsed = parse_campaign_document(ss.str());
  if (!parsed) return fail("publish", parsed.error().message);
  auto now = current_document(cfg, campaign_object_key(cfg.prefix, parsed->id));
  if (!now) return fail("publish", now.error().message);
  if (*now && (**now).value("version", 0ull) >= parsed->version && !o.force) {
    return fail("publish", "the bucket holds version " +
                               std::to_string((**now).value("version", 0ull)) +
                               ", devices refuse version " + std::to_string(parsed->version) +
                               " (rollback); raise \"version\" (or --force)");
  }
  if (o.max_bytes_per_day > 0) {
    if (o.samples.empty() || o.device_config.empty()) {
      return fail("publish", "--max-bytes-per-day needs --samples and --device-config (the forecast)");
    }
    nlohmann::json f;
    std::string error;
    if (int rc = campaign_forecast(ss.str(), o.device_config, o.samples, o.fleet, f, error); rc) {
      return fail("publish", "forecast: " + error);
    }
    const double bpd = f["forecast"]["fleet"]["bytes_per_day"].get<double>();
    std::printf("publish: forecast %.0f bytes/day for %llu targeted devices (ceiling %.0f)\n", bpd,
                static_cast<unsigned long long>(f["forecast"]["fleet"]["devices"].get<std::uint64_t>()),
                o.max_bytes_per_day);
    if (bpd > o.max_bytes_per_day && !o.force) {
      return fail("publish", "the forecast (" + std::to_string(static_cast<long long>(bpd)) +
                                 " bytes/day) exceeds --max-bytes-per-day; not published (--force "
                                 "to publish anyway)");
    }
  }
  return sign_and_put("publish", o, cfg, nlohmann::json::parse(ss.str()));
}

// rollout / suspend / resume: the current document, changed, as the next version.
int run_change(const char* what, const PublishOptions& o) {
  UploaderConfig cfg;
  if (!o.bucket.resolve(cfg)) return 2;
  auto now = current_document(cfg, campaign_object_key(cfg.prefix, o.document));
  if (!now) return fail(what, now.error().message);
  if (!*now) return fail(what, "no campaign \"" + o.document + "\" in the bucket");
  nlohmann::json doc = std::move(**now);
  doc["version"] = doc.value("version", 0ull) + 1;
  if (std::string(what) == "rollout") {
    const double before = doc["targeting"].value("rollout_percent", 100.0);
    if (o.percent < before && !o.force) {
      return fail(what, "lowering the rollout (" + std::to_string(before) + " -> " +
                            std::to_string(o.percent) + " %) removes devices; use --force");
    }
    doc["targeting"]["rollout_percent"] = o.percent;
  } else {
    doc["suspended"] = std::string(what) == "suspend";
  }
  return sign_and_put(what, o, cfg, doc);
}

void add_signing(CLI::App* cmd, PublishOptions& o) {
  o.bucket.add_to(cmd);
  cmd->add_option("--key", o.key_file, "private key PEM (mode 0600)")->required();
  cmd->add_option("--key-id", o.key_id, "the key's id in device configs")->required();
}

}  // namespace

void register_campaign_bucket(CLI::App& campaign) {
  auto pub = std::make_shared<PublishOptions>();
  auto* p = campaign.add_subcommand("publish", "sign a document and upload it to the bucket");
  p->add_option("document", pub->document, "campaign document (JSON)")->required();
  add_signing(p, *pub);
  p->add_flag("--force", pub->force,
              "upload even when the bucket holds a version as high, or the forecast is too high");
  p->add_option("--max-bytes-per-day", pub->max_bytes_per_day,
                "refuse when the forecast for the targeted fleet is above this (bytes/day)")
      ->check(CLI::PositiveNumber);
  p->add_option("--samples", pub->samples, "recorded samples (JSONL) for the forecast");
  p->add_option("--device-config", pub->device_config, "a device config for the forecast");
  p->add_option("--fleet", pub->fleet, "devices matching the selector, for the forecast")
      ->default_val(1);
  p->callback([pub] { set_exit_code(run_publish(*pub)); });

  auto roll = std::make_shared<PublishOptions>();
  auto* r = campaign.add_subcommand("rollout", "the next version with another rollout percentage");
  r->add_option("id", roll->document, "campaign id")->required();
  r->add_option("--percent", roll->percent, "0..100 (steps of 0.01)")->required()
      ->check(CLI::Range(0.0, 100.0));
  add_signing(r, *roll);
  r->add_flag("--force", roll->force, "allow lowering the percentage");
  r->callback([roll] { set_exit_code(run_change("rollout", *roll)); });

  for (const char* name : {"suspend", "resume"}) {
    auto o = std::make_shared<PublishOptions>();
    auto* c = campaign.add_subcommand(
        name, std::string(name) == "suspend" ? "the next version, suspended (local triggers)"
                                             : "the next version, no longer suspended");
    c->add_option("id", o->document, "campaign id")->required();
    add_signing(c, *o);
    const std::string what = name;
    c->callback([o, what] { set_exit_code(run_change(what.c_str(), *o)); });
  }
}

}  // namespace fleetpipe::cli
