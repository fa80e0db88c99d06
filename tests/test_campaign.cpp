#include "fleetpipe/campaign.hpp"

#include <catch2/catch.hpp>
#include <openssl/sha.h>
#include <sys/stat.h>

#include <fstream>
#include <set>

#include "support/campaign_docs.hpp"
#include "support/test_paths.hpp"

using namespace fleetpipe;
using fleetpipe::test::campaign_device;
using fleetpipe::test::campaign_doc;
using fleetpipe::test::signed_envelope;
using fleetpipe::test::test_key;
using nlohmann::json;

namespace {

const WallTime kNow = WallTime{std::chrono::hours(24 * 20000)};

Result<CampaignDocument> parse(const json& doc) { return parse_campaign_document(doc.dump()); }

std::string pointer_of(const Result<CampaignDocument>& r) {
  return r ? std::string("(accepted)") : r.error().json_pointer;
}

}  // namespace

// ---- the document ---------------------------------------------------------------------------

TEST_CASE("a valid campaign document parses with every field", "[campaign]") {
  json doc = campaign_doc("speed", 7, kNow);
  doc["priority"] = 3;
  doc["content"]["local_triggers"] = "replace";
  doc["content"]["upload"] = {{"bytes_per_second", 5000}, {"buffer_max_bytes", "64MiB"}};
  doc["content"]["triggers"][0]["cooldown"] = "30s";
  doc["content"]["triggers"][0]["budget"] = {{"max_events_per_hour", 10}};
  doc["content"]["triggers"][0]["sample_probability"] = 0.5;
  doc["content"]["triggers"][0]["capture"] = {{"streams", {"imu", "cam"}}, {"pre", 2}, {"post", 3}};
  auto r = parse(doc);
  REQUIRE(r);
  CHECK(r->id == "speed");
  CHECK(r->version == 7);
  CHECK(r->priority == 3);
  CHECK(r->start == kNow - std::chrono::hours(1));
  CHECK(r->expiry == kNow + std::chrono::hours(24));
  CHECK_FALSE(r->content.keep_local_triggers);
  REQUIRE(r->content.triggers.size() == 1);
  const auto& t = r->content.triggers[0];
  CHECK(t.cooldown_s == 30);
  CHECK(t.budget.max_events_per_hour == 10);
  CHECK(t.sample_probability == 0.5);
  CHECK(t.capture.streams == std::vector<std::string>{"imu", "cam"});
  CHECK(*r->content.upload.bytes_per_second == 5000);
  CHECK(*r->content.upload.buffer_max_bytes == (64u << 20));
  CHECK(format_campaign_time(r->start) == doc["start"].get<std::string>());
}

TEST_CASE("campaign parsing is strict and names the JSON pointer", "[campaign]") {
  const json base = campaign_doc("speed", 1, kNow);
  struct Case {
    const char* what;
    std::function<void(json&)> edit;
    const char* pointer;
  };
  const std::vector<Case> cases = {
      {"unknown top-level key", [](json& d) { d["colour"] = "red"; }, "/colour"},
      {"unknown targeting key", [](json& d) { d["targeting"]["percent"] = 5; }, "/targeting/percent"},
      {"unknown trigger key",
       [](json& d) { d["content"]["triggers"][0]["abvoe"] = 1; }, "/content/triggers/0/abvoe"},
      {"wrong format", [](json& d) { d["format"] = "fleetpipe.campaign/2"; }, "/format"},
      {"version 0", [](json& d) { d["version"] = 0; }, "/version"},
      {"no version", [](json& d) { d.erase("version"); }, "/version"},
      {"id with a slash", [](json& d) { d["id"] = "a/b"; }, "/id"},
      {"local time", [](json& d) { d["start"] = "2026-12-03T10:00:00+01:00"; }, "/start"},
      {"30 February", [](json& d) { d["start"] = "2026-02-30T10:00:00Z"; }, "/start"},
      {"year 1013 (out of WallTime's range, found by fuzzing)",
       [](json& d) { d["expiry"] = "1013-01-01T00:00:00Z"; }, "/expiry"},
      {"year 9999", [](json& d) { d["expiry"] = "9999-01-01T00:00:00Z"; }, "/expiry"},
      {"expiry before start",
       [](json& d) { d["expiry"] = format_campaign_time(kNow - std::chrono::hours(2)); }, "/expiry"},
      {"rollout over 100", [](json& d) { d["targeting"]["rollout_percent"] = 101; },
       "/targeting/rollout_percent"},
      {"rollout finer than 0.01", [](json& d) { d["targeting"]["rollout_percent"] = 12.345; },
       "/targeting/rollout_percent"},
      {"label pattern not a string", [](json& d) { d["targeting"]["labels"]["site"] = 3; },
       "/targeting/labels/site"},
      {"no triggers", [](json& d) { d["content"]["triggers"] = json::array(); },
       "/content/triggers"},
      {"no content", [](json& d) { d.erase("content"); }, "/content"},
      {"custom trigger",
       [](json& d) { d["content"]["triggers"][0] = {{"name", "c"}, {"type", "custom"}}; },
       "/content/triggers/0/type"},
      {"custom inside a composite",
       [](json& d) {
         d["content"]["triggers"][0] = {
             {"name", "c"}, {"type", "any"}, {"of", {{{"type", "custom"}}}}};
       },
       "/content/triggers/0/of/0/type"},
      {"negative upload rate", [](json& d) { d["content"]["upload"] = {{"bytes_per_second", -1}}; },
       "/content/upload/bytes_per_second"},
      {"priority 9", [](json& d) { d["content"]["triggers"][0]["priority"] = 9; },
       "/content/triggers/0/priority"},
  };
  for (const auto& c : cases) {
    INFO(c.what);
    json doc = base;
    c.edit(doc);
    auto r = parse(doc);
    REQUIRE_FALSE(r);
    CHECK(r.error().code == campaign_errc::invalid);
    CHECK(pointer_of(r) == c.pointer);
    CHECK(r.error().message.rfind(std::string(c.pointer) + ": ", 0) == 0);
  }
}

TEST_CASE("malformed and oversize documents are refused with their reason", "[campaign]") {
  auto bad = parse_campaign_document("{\"format\": ");
  REQUIRE_FALSE(bad);
  CHECK(bad.error().code == campaign_errc::invalid);
  auto arr = parse_campaign_document("[1, 2]");
  REQUIRE_FALSE(arr);
  CHECK(arr.error().code == campaign_errc::invalid);
  json doc = campaign_doc("speed", 1, kNow);
  doc["description"] = "";
  std::string big = doc.dump();
  big.insert(big.size() - 1, std::string(kCampaignMaxDocumentBytes, ' '));
  auto over = parse_campaign_document(big);
  REQUIRE_FALSE(over);
  CHECK(over.error().code == campaign_errc::oversize);
}

// ---- targeting ------------------------------------------------------------------------------

TEST_CASE("label globs match whole values with star only", "[campaign]") {
  CHECK(campaign_glob_match("store-01*", "store-01-north"));
  CHECK(campaign_glob_match("store-01*", "store-01"));
  CHECK_FALSE(campaign_glob_match("store-01*", "store-02"));
  CHECK(campaign_glob_match("*-north", "store-01-north"));
  CHECK(campaign_glob_match("s*e*h", "store-01-north"));
  CHECK_FALSE(campaign_glob_match("s*e*x", "store-01-north"));
  CHECK(campaign_glob_match("*", ""));
  CHECK_FALSE(campaign_glob_match("cart", "cart-v3"));
  CHECK_FALSE(campaign_glob_match("cart?v3", "cart-v3"));  // '?' is literal
  CHECK(campaign_glob_match("cart?v3", "cart?v3"));
  CHECK(campaign_glob_match("**a**", "bab"));
}

TEST_CASE("label selectors need every label present and matching", "[campaign]") {
  auto doc = *parse(campaign_doc("speed", 1, kNow));
  std::map<std::string, std::string> labels = {{"site", "store-01-north"}, {"model", "cart-v3"}};
  doc.targeting.labels = {{"site", "store-01*"}, {"model", "cart-v3"}};
  CHECK(campaign_targets(doc, "cart-1", labels));
  doc.targeting.labels = {{"site", "store-02*"}};
  CHECK_FALSE(campaign_targets(doc, "cart-1", labels));
  doc.targeting.labels = {{"region", "*"}};  // a label the device lacks never matches
  CHECK_FALSE(campaign_targets(doc, "cart-1", labels));
  doc.targeting.labels = {};
  CHECK(campaign_targets(doc, "cart-1", {}));
}

TEST_CASE("the rollout bucket is SHA-256 of id and device, first 8 bytes mod 10000", "[campaign]") {
  for (const std::string dev : {"cart-0001", "cart-0002", "x"}) {
    const std::string input = "speed\n" + dev;
    unsigned char md[SHA256_DIGEST_LENGTH];
    SHA256(reinterpret_cast<const unsigned char*>(input.data()), input.size(), md);
    std::uint64_t v = 0;
    for (int i = 0; i < 8; ++i) v = (v << 8) | md[i];
    CHECK(campaign_rollout_bucket("speed", dev) == v % 10000);
    CHECK(campaign_rollout_bucket("speed", dev) == campaign_rollout_bucket("speed", dev));
  }
  CHECK(campaign_rollout_bucket("speed", "cart-0001") != campaign_rollout_bucket("other", "cart-0001"));
}

TEST_CASE("raising the rollout 10 to 50 to 100 percent only adds devices", "[campaign]") {
  auto doc = *parse(campaign_doc("speed", 1, kNow));
  doc.targeting.labels.clear();
  auto selected = [&](double percent) {
    doc.targeting.rollout_percent = percent;
    std::set<std::string> out;
    for (int i = 0; i < 2000; ++i) {
      std::string dev = "cart-" + std::to_string(i);
      if (campaign_targets(doc, dev, {})) out.insert(dev);
    }
    return out;
  };
  auto p0 = selected(0), p10 = selected(10), p50 = selected(50), p100 = selected(100);
  CHECK(p0.empty());
  CHECK(p100.size() == 2000);
  CHECK(std::includes(p50.begin(), p50.end(), p10.begin(), p10.end()));
  CHECK(std::includes(p100.begin(), p100.end(), p50.begin(), p50.end()));
  // A hash, not the first N names: about the share asked for (binomial, 6 sigma here).
  CHECK(p10.size() > 120);
  CHECK(p10.size() < 280);
  CHECK(p50.size() > 860);
  CHECK(p50.size() < 1140);
  // A new version (the document changes, the id does not) selects the same devices.
  doc.version = 2;
  doc.description = "changed";
  CHECK(selected(50) == p50);
}

// ---- resolution against the device -----------------------------------------------------------

TEST_CASE("a campaign may reference only the device's streams and channels", "[campaign]") {
  const auto dev = campaign_device();
  struct Case {
    const char* what;
    std::function<void(json&)> edit;
    const char* pointer;
  };
  const std::vector<Case> cases = {
      {"unknown stream", [](json& d) { d["content"]["triggers"][0]["stream"] = "gps"; },
       "/content/triggers/0/stream"},
      {"unknown channel", [](json& d) { d["content"]["triggers"][0]["channel"] = "rpm"; },
       "/content/triggers/0/channel"},
      {"unknown capture stream",
       [](json& d) { d["content"]["triggers"][0]["capture"] = {{"streams", {"imu", "lidar"}}}; },
       "/content/triggers/0/capture/streams/1"},
      {"name of a kept local trigger",
       [](json& d) { d["content"]["triggers"][0]["name"] = "hard_brake"; },
       "/content/triggers/0/name"},
  };
  for (const auto& c : cases) {
    INFO(c.what);
    json doc = campaign_doc("speed", 1, kNow);
    c.edit(doc);
    auto parsed = parse(doc);
    REQUIRE(parsed);
    auto r = resolve_campaign(*parsed, dev);
    REQUIRE_FALSE(r);
    CHECK(r.error().code == campaign_errc::invalid);
    CHECK(r.error().json_pointer == c.pointer);
  }
  // Replacing the local triggers frees their names, and composites may read kept ones.
  json doc = campaign_doc("speed", 1, kNow);
  doc["content"]["triggers"][0]["name"] = "hard_brake";
  doc["content"]["local_triggers"] = "replace";
  auto replaced = resolve_campaign(*parse(doc), dev);
  REQUIRE(replaced);
  REQUIRE(replaced->triggers.size() == 1);
  CHECK(replaced->triggers[0].name == "hard_brake");
  json both = campaign_doc("speed", 1, kNow);
  both["content"]["triggers"][1] = {{"name", "brake_fast"}, {"type", "all"},
                                    {"of", {"hard_brake", "fast_1"}}, {"tolerance", 0.5}};
  auto kept = resolve_campaign(*parse(both), dev);
  REQUIRE(kept);
  REQUIRE(kept->triggers.size() == 3);
  CHECK(kept->triggers[0].name == "hard_brake");
  CHECK(kept->campaign_id == "speed");
  CHECK(kept->campaign_version == 1);
}

TEST_CASE("hard limits of the device clamp what a campaign asks for", "[campaign]") {
  auto dev = campaign_device();
  dev.limits.max_priority = 5;
  dev.limits.max_bytes_per_day = 3000000;
  dev.limits.max_upload_bytes_per_second = 0;  // the local rate is the ceiling
  json doc = campaign_doc("speed", 1, kNow);
  doc["content"]["triggers"][0]["priority"] = 7;
  doc["content"]["triggers"][1] = doc["content"]["triggers"][0];
  doc["content"]["triggers"][1]["name"] = "fast_b";
  doc["content"]["triggers"][1]["budget"] = {{"max_bytes_per_day", 1000}};
  doc["content"]["upload"] = {{"bytes_per_second", dev.local_upload_bytes_per_second * 10},
                              {"buffer_max_bytes", dev.local_buffer_max_bytes * 2}};
  auto r = resolve_campaign(*parse(doc), dev);
  REQUIRE(r);
  REQUIRE(r->triggers.size() == 3);
  const auto& a = r->triggers[1];
  const auto& b = r->triggers[2];
  CHECK(a.priority == 5);
  CHECK(a.budget.max_bytes_per_day == dev.limits.max_bytes_per_day / 2);  // unlimited -> share
  CHECK(b.budget.max_bytes_per_day == 1000);  // below the share: kept
  CHECK(a.budget.max_bytes_per_day + b.budget.max_bytes_per_day <= dev.limits.max_bytes_per_day);
  CHECK(*r->upload_bytes_per_second == dev.local_upload_bytes_per_second);
  CHECK(*r->buffer_max_bytes == dev.local_buffer_max_bytes);
  CHECK(r->clamped.size() == 5);  // two priorities, one budget, rate, quota
  CHECK(r->triggers[0].priority == dev.local_triggers[0].priority);  // local ones untouched
  // An explicit ceiling replaces the local value; a lower request passes unchanged.
  dev.limits.max_upload_bytes_per_second = 40000;
  doc["content"]["upload"] = {{"bytes_per_second", 30000}};
  auto lower = resolve_campaign(*parse(doc), dev);
  REQUIRE(lower);
  CHECK(*lower->upload_bytes_per_second == 30000);
  CHECK_FALSE(lower->buffer_max_bytes);
}

// ---- the envelope ---------------------------------------------------------------------------

TEST_CASE("a signed envelope opens with the trusted key and keeps the exact bytes", "[campaign]") {
  const json doc = campaign_doc("speed", 3, kNow);
  const std::string env = signed_envelope(doc);
  auto r = open_campaign_envelope(env, {test_key(1).trusted, test_key(0).trusted});
  REQUIRE(r);
  CHECK(r->key_id == test_key(0).trusted.id);
  CHECK(r->payload == doc.dump());
  CHECK(r->document.version == 3);
}

TEST_CASE("tampered, unsigned, untrusted, malformed and oversize envelopes are refused", "[campaign]") {
  const std::vector<CampaignTrustedKey> trusted = {test_key(0).trusted};
  const std::string good = signed_envelope(campaign_doc("speed", 3, kNow));
  auto reason = [&](const std::string& body) -> std::string {
    auto r = open_campaign_envelope(body, trusted);
    return r ? "accepted" : to_string(static_cast<campaign_errc>(r.error().code.value()));
  };
  REQUIRE(reason(good) == "accepted");

  json env = json::parse(good);
  {  // one flipped byte of the signature
    json e = env;
    std::string sig = e["signature"];
    sig[10] = sig[10] == 'A' ? 'B' : 'A';
    e["signature"] = sig;
    CHECK(reason(e.dump()) == "bad_signature");
  }
  {  // the payload changed after signing (version bumped by an attacker)
    json doc = campaign_doc("speed", 99, kNow);
    json e = env;
    e["payload"] = json::parse(signed_envelope(doc))["payload"];
    CHECK(reason(e.dump()) == "bad_signature");
  }
  CHECK(reason(signed_envelope(campaign_doc("speed", 3, kNow), 1)) == "unknown_key");
  CHECK(reason(campaign_doc("speed", 3, kNow).dump()) == "unsigned");
  {
    json e = env;
    e.erase("signature");
    CHECK(reason(e.dump()) == "unsigned");
    e["signature"] = "";
    CHECK(reason(e.dump()) == "unsigned");
  }
  {
    json e = env;
    e["extra"] = 1;
    CHECK(reason(e.dump()) == "invalid");
    json f = env;
    f["payload"] = "not base64!";
    CHECK(reason(f.dump()) == "invalid");
  }
  CHECK(reason(good.substr(0, good.size() / 2)) == "invalid");
  CHECK(reason("") == "invalid");
  CHECK(reason(std::string(kCampaignMaxEnvelopeBytes + 1, ' ')) == "oversize");
  {  // signed but invalid inside: still refused, with the document's pointer
    json doc = campaign_doc("speed", 3, kNow);
    doc["content"]["triggers"][0]["typo"] = 1;
    const auto& k = test_key(0);
    json e = json::parse(good);
    std::string text = doc.dump();
    auto sealed = sign_campaign(text, k.trusted.id, k.pair.private_key_pem);
    REQUIRE_FALSE(sealed);  // the signer refuses it first
    CHECK(sealed.error().json_pointer == "/content/triggers/0/typo");
  }
}

// ---- keys ------------------------------------------------------------------------------------

TEST_CASE("a private key file readable by others is refused and never echoed", "[campaign]") {
  auto dir = fleetpipe::test::scratch_dir("campaign-key");
  const auto key = test_key(0).pair;
  const std::string path = (dir / "key.pem").string();
  { std::ofstream(path) << key.private_key_pem; }
  ::chmod(path.c_str(), 0644);
  auto open = load_campaign_private_key(path);
  REQUIRE_FALSE(open);
  CHECK(open.error().is(errc::insecure_refused));
  CHECK(open.error().message.find("0644") != std::string::npos);
  CHECK(open.error().message.find("PRIVATE KEY") == std::string::npos);
  ::chmod(path.c_str(), 0600);
  auto ok = load_campaign_private_key(path);
  REQUIRE(ok);
  CHECK(*campaign_public_key_of(*ok) == key.public_key);
  // Not a key: refused without quoting the file.
  { std::ofstream(path) << "-----BEGIN PRIVATE KEY-----\nc2VjcmV0\n-----END PRIVATE KEY-----\n"; }
  auto junk = load_campaign_private_key(path);
  REQUIRE_FALSE(junk);
  CHECK(junk.error().is(errc::invalid_argument));
  CHECK(junk.error().message.find("c2VjcmV0") == std::string::npos);
}

TEST_CASE("campaign settings are parsed strictly with pointers", "[campaign]") {
  const std::string key = test_key(0).pair.public_key;
  auto ok = parse_campaign_settings(R"({"enabled": true, "follow": ["fleet", "speed"],
      "poll_interval": "5m", "trusted_keys": [{"id": "ml-2026", "ed25519": ")" + key + R"("}],
      "limits": {"max_bytes_per_day": "1GiB", "max_priority": 4}})");
  REQUIRE(ok);
  CHECK(ok->poll_interval_s == 300);
  CHECK(ok->follow.size() == 2);
  CHECK(ok->limits.max_bytes_per_day == (1ull << 30));
  CHECK(ok->limits.max_priority == 4);
  auto pointer = [](const std::string& text) {
    auto r = parse_campaign_settings(text);
    return r ? std::string("(accepted)") : r.error().json_pointer;
  };
  CHECK(pointer(R"({"enabled": true})") == "/campaigns/trusted_keys");
  CHECK(pointer(R"({"trusted_keys": [{"id": "k", "ed25519": "AAAA"}]})") ==
        "/campaigns/trusted_keys/0/ed25519");
  CHECK(pointer(R"({"follow": []})") == "/campaigns/follow");
  CHECK(pointer(R"({"follow": ["a/b"]})") == "/campaigns/follow/0");
  CHECK(pointer(R"({"poll_interval": "1s"})") == "/campaigns/poll_interval");
  CHECK(pointer(R"({"poll_interval": "30d"})") == "/campaigns/poll_interval");
  CHECK(pointer(R"({"limits": {"max_prio": 1}})") == "/campaigns/limits/max_prio");
  CHECK(campaign_object_key("fleetpipe", "speed") == "fleetpipe/_campaigns/speed.json");
  CHECK(campaign_object_key("", "speed") == "_campaigns/speed.json");
}
