// `fleetpipe campaign`: keygen, sign and validate campaign documents (docs/campaigns.md);
// the bucket subcommands are in campaign_publish.cpp.
#include <CLI/CLI.hpp>
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>

#include <nlohmann/json.hpp>

#include "cli/campaign_device.hpp"
#include "cli/commands.hpp"
#include "fleetpipe/campaign.hpp"
#include "fleetpipe/config.hpp"
#include "fleetpipe/query.hpp"

namespace fleetpipe::cli {

bool read_file(const std::string& path, std::string& out) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    std::fprintf(stderr, "fleetpipe campaign: cannot open %s\n", path.c_str());
    return false;
  }
  std::ostringstream ss;
  ss << in.rdbuf();
  out = ss.str();
  return true;
}

namespace {

void print_error(const char* what, const Error& e) {
  std::fprintf(stderr, "fleetpipe campaign %s: %s\n", what, e.message.c_str());
}

// A file only its owner can read, created new (never over an existing key).
bool write_private(const std::string& path, const std::string& data) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) {
    std::fprintf(stderr, "fleetpipe campaign keygen: cannot create %s: %s\n", path.c_str(),
                 std::strerror(errno));
    return false;
  }
  bool ok = ::write(fd, data.data(), data.size()) == static_cast<ssize_t>(data.size());
  ok = ::fsync(fd) == 0 && ok;
  ok = ::close(fd) == 0 && ok;
  if (!ok) std::fprintf(stderr, "fleetpipe campaign keygen: cannot write %s\n", path.c_str());
  return ok;
}

// ---- keygen ---------------------------------------------------------------------------------

struct KeygenOptions {
  std::string out, id;
};

int run_keygen(const KeygenOptions& o) {
  auto pair = generate_campaign_key();
  if (!pair) return print_error("keygen", pair.error()), 1;
  if (!write_private(o.out, pair->private_key_pem)) return 1;
  // What goes into each device's config: the public half only.
  nlohmann::json entry = {{"id", o.id}, {"ed25519", pair->public_key}};
  std::printf("%s\n", entry.dump().c_str());
  std::fprintf(stderr, "private key written to %s (mode 0600); add the line above to "
                       "\"campaigns\": {\"trusted_keys\": [...]} of the device config\n",
               o.out.c_str());
  return 0;
}

// ---- sign -----------------------------------------------------------------------------------

struct SignOptions {
  std::string document, key_file, key_id, out;
};

int run_sign(const SignOptions& o) {
  std::string doc;
  if (!read_file(o.document, doc)) return 2;
  auto pem = load_campaign_private_key(o.key_file);
  if (!pem) return print_error("sign", pem.error()), 2;
  auto env = sign_campaign(doc, o.key_id, *pem);
  if (!env) return print_error("sign", env.error()), 1;
  if (o.out.empty()) {
    std::fwrite(env->data(), 1, env->size(), stdout);
    return 0;
  }
  std::ofstream out(o.out, std::ios::binary | std::ios::trunc);
  out << *env;
  if (!out.flush()) {
    std::fprintf(stderr, "fleetpipe campaign sign: cannot write %s\n", o.out.c_str());
    return 1;
  }
  return 0;
}

// ---- validate -------------------------------------------------------------------------------

}  // namespace

Result<DeviceFile> load_device(const std::string& path) {
  std::string text;
  std::ifstream in(path, std::ios::binary);
  if (!in) return Error(errc::io_error, "cannot open device config " + path);
  std::ostringstream ss;
  ss << in.rdbuf();
  nlohmann::json doc = nlohmann::json::parse(ss.str(), nullptr, false, /*ignore_comments=*/true);
  if (doc.is_discarded() || !doc.is_object()) {
    return Error(errc::invalid_config, path + ": /: not a JSON object", "/");
  }
  DeviceFile d;
  if (doc.contains("campaigns")) {
    auto s = parse_campaign_settings(doc["campaigns"].dump());
    if (!s) return Error(errc::invalid_config, path + ": " + s.error().message, s.error().json_pointer);
    d.settings = *s;
    doc.erase("campaigns");
  }
  if (doc.contains("labels")) {
    if (!doc["labels"].is_object()) return Error(errc::invalid_config, path + ": /labels: must be an object", "/labels");
    for (auto it = doc["labels"].begin(); it != doc["labels"].end(); ++it) {
      if (!it->is_string()) {
        return Error(errc::invalid_config, path + ": /labels/" + it.key() + ": must be a string",
                     "/labels/" + it.key());
      }
      d.labels[it.key()] = it->get<std::string>();
    }
    doc.erase("labels");
  }
  auto c = parse_config(doc.dump());
  if (!c) return Error(errc::invalid_config, path + ": " + c.error().message, c.error().json_pointer);
  d.config = std::move(*c);
  return d;
}

namespace {

struct ValidateOptions {
  std::string input, device_config, now;
  bool json = false;
};

int run_validate(const ValidateOptions& o) {
  std::string body;
  if (!read_file(o.input, body)) return 2;
  auto device = load_device(o.device_config);
  if (!device) return print_error("validate", device.error()), 2;
  WallTime now = std::chrono::system_clock::now();
  if (!o.now.empty()) {
    auto t = parse_query_time(o.now);
    if (!t) return print_error("validate", t.error()), 2;
    now = *t;
  }
  // An envelope is checked with the device's trusted keys; a bare document on its own (what a
  // device would refuse as unsigned, but what an author validates before signing).
  std::string key_id = "(unsigned)";
  Result<CampaignDocument> doc = parse_campaign_document(body);
  auto probe = nlohmann::json::parse(body, nullptr, false);
  if (probe.is_object() && probe.value("format", "") == "fleetpipe.campaign-envelope/1") {
    auto opened = open_campaign_envelope(body, device->settings.trusted_keys);
    if (!opened) {
      std::fprintf(stderr, "fleetpipe campaign validate: rejected (%s): %s\n",
                   opened.error().code.category() == campaign_error_category()
                       ? to_string(static_cast<campaign_errc>(opened.error().code.value()))
                       : "invalid",
                   opened.error().message.c_str());
      return 1;
    }
    key_id = opened->key_id;
    doc = std::move(opened->document);
  }
  if (!doc) {
    std::fprintf(stderr, "fleetpipe campaign validate: invalid: %s\n", doc.error().message.c_str());
    return 1;
  }
  const CampaignDevice dev =
      campaign_device_of(device->config, device->labels, device->settings.limits);
  auto app = resolve_campaign(*doc, dev);
  if (!app) {
    std::fprintf(stderr, "fleetpipe campaign validate: invalid for device %s: %s\n",
                 dev.device_id.c_str(), app.error().message.c_str());
    return 1;
  }
  const bool targeted = campaign_targets(*doc, dev.device_id, dev.labels);
  const char* when = now >= doc->expiry ? "expired" : now < doc->start ? "pending" : "in its window";
  if (o.json) {
    nlohmann::json out = {{"id", doc->id},
                          {"version", doc->version},
                          {"key_id", key_id},
                          {"device", dev.device_id},
                          {"targeted", targeted},
                          {"rollout_bucket", campaign_rollout_bucket(doc->id, dev.device_id)},
                          {"time", when},
                          {"suspended", doc->suspended},
                          {"triggers", app->triggers.size()},
                          {"clamped", app->clamped}};
    std::printf("%s\n", out.dump().c_str());
    return 0;
  }
  std::printf("campaign %s version %llu (key %s): valid for device %s\n", doc->id.c_str(),
              static_cast<unsigned long long>(doc->version), key_id.c_str(), dev.device_id.c_str());
  std::printf("  window    %s .. %s (%s)%s\n", format_campaign_time(doc->start).c_str(),
              format_campaign_time(doc->expiry).c_str(), when, doc->suspended ? ", suspended" : "");
  std::printf("  targeted  %s (rollout bucket %u, below %.2f %% = %u)\n", targeted ? "yes" : "no",
              campaign_rollout_bucket(doc->id, dev.device_id), doc->targeting.rollout_percent,
              static_cast<unsigned>(doc->targeting.rollout_percent * 100 + 0.5));
  std::printf("  triggers  %zu to run (%s local)\n", app->triggers.size(),
              doc->content.keep_local_triggers ? "with" : "without");
  for (const auto& c : app->clamped) std::printf("  clamped   %s\n", c.c_str());
  return 0;
}

}  // namespace

void register_campaign(CLI::App& app) {
  auto* cmd = app.add_subcommand("campaign", "signed collection campaigns: keygen, sign, validate, forecast, publish, rollout, suspend, resume, status");
  cmd->require_subcommand(1);

  auto keygen = std::make_shared<KeygenOptions>();
  auto* kg = cmd->add_subcommand("keygen", "new Ed25519 key pair: private PEM file (0600), "
                                           "public key line for device configs");
  kg->add_option("--out", keygen->out, "private key file to create (never overwritten)")->required();
  kg->add_option("--id", keygen->id, "key id devices will know it by")->required();
  kg->callback([keygen] { set_exit_code(run_keygen(*keygen)); });

  auto sign = std::make_shared<SignOptions>();
  auto* sg = cmd->add_subcommand("sign", "wrap a campaign document in a signed envelope");
  sg->add_option("document", sign->document, "campaign document (JSON)")->required();
  sg->add_option("--key", sign->key_file, "private key PEM (mode 0600)")->required();
  sg->add_option("--key-id", sign->key_id, "the key's id in device configs")->required();
  sg->add_option("--out", sign->out, "envelope file (default: stdout)");
  sg->callback([sign] { set_exit_code(run_sign(*sign)); });

  auto val = std::make_shared<ValidateOptions>();
  auto* vd = cmd->add_subcommand("validate", "check a document or envelope against a device config");
  vd->add_option("input", val->input, "campaign document or signed envelope")->required();
  vd->add_option("--device-config", val->device_config, "the device's fleetpipe config")->required();
  vd->add_option("--now", val->now, "evaluate the time window as of this time");
  vd->add_flag("--json", val->json, "one JSON object");
  vd->callback([val] { set_exit_code(run_validate(*val)); });

  register_campaign_bucket(*cmd);
  register_campaign_report(*cmd);
}

}  // namespace fleetpipe::cli
