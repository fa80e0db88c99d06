// fleetpipe/campaign.hpp — campaigns: signed, targeted collection config pushed from the bucket.
//
// A campaign is a JSON document (`fleetpipe.campaign/1`, docs/campaigns.md) that the ML team
// signs with an Ed25519 key and publishes to `{prefix}/_campaigns/<id>.json`; devices poll it,
// check it and, when it targets them, run its triggers instead of (or beside) their local ones.
//
// Caveats, up front:
//   - One campaign is in force on a device at a time. A device follows the campaign ids listed in
//     its local config (`campaigns.follow`, default ["fleet"]); of those in force and targeting
//     it, the highest `priority` wins (then the later `start`, then the smaller id).
//   - Trust comes only from the public keys in the device's local config. A rejected document
//     (unsigned, bad signature, unknown key, rollback, expired, oversize, invalid) never replaces
//     the campaign in force; each rejection is counted by reason.
//   - Streams and channels belong to the firmware: a campaign may only reference those the device
//     has; hard limits from the local config (bytes per day, upload rate, buffer quota, priority)
//     clamp what a campaign asks for.
//
// Thread context: everything here runs on the host's thread; nothing starts a thread. Nothing
// throws across this header: errors are `Result` with codes of `campaign_errc` (category
// "fleetpipe.campaign") or `fleetpipe::errc`.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "fleetpipe/campaign_settings.hpp"
#include "fleetpipe/capture.hpp"
#include "fleetpipe/config.hpp"
#include "fleetpipe/error.hpp"
#include "fleetpipe/metrics.hpp"
#include "fleetpipe/port.hpp"
#include "fleetpipe/trigger.hpp"

namespace fleetpipe {

/// Why a campaign document was refused. Stable values (metrics label `result`, heartbeat).
enum class campaign_errc {
  unsigned_document = 1,  ///< a bare document, or an envelope without a signature
  bad_signature = 2,      ///< the signature does not verify with the named key
  unknown_key = 3,        ///< the envelope names a key the device does not trust
  rollback = 4,           ///< version below the highest accepted, or equal with other content
  expired = 5,            ///< its expiry has passed
  oversize = 6,           ///< envelope or document larger than the limits below
  invalid = 7,            ///< malformed envelope or document, or content the device cannot run
};

}  // namespace fleetpipe

namespace std {
template <>
struct is_error_code_enum<fleetpipe::campaign_errc> : true_type {};
}  // namespace std

namespace fleetpipe {

/// Category "fleetpipe.campaign".
const std::error_category& campaign_error_category() noexcept;
std::error_code make_error_code(campaign_errc e) noexcept;
/// "unsigned", "bad_signature", "unknown_key", "rollback", "expired", "oversize", "invalid".
const char* to_string(campaign_errc e) noexcept;

/// Largest accepted document (the signed payload) and envelope, in bytes.
inline constexpr std::size_t kCampaignMaxDocumentBytes = 256u << 10;
inline constexpr std::size_t kCampaignMaxEnvelopeBytes = 352u << 10;  // base64 + framing

// ---------------------------------------------------------------------------------------------
// The document
// ---------------------------------------------------------------------------------------------

/// Who a campaign is for. A device is targeted when every selector label exists on the device
/// and matches its glob (`*` matches any run of characters, everything else is literal), and
/// its rollout bucket is below `rollout_percent` (see `campaign_rollout_bucket`).
struct CampaignTargeting {
  std::map<std::string, std::string> labels;  ///< empty: every device
  double rollout_percent = 100;               ///< 0..100, steps of 0.01
};

/// Upload overrides; each is clamped by the device's hard limits (CampaignLimits).
struct CampaignUpload {
  std::optional<double> bytes_per_second;         ///< the uploader's base rate
  std::optional<std::uint64_t> buffer_max_bytes;  ///< the buffer's byte quota
};

/// What a campaign runs.
struct CampaignContent {
  /// true ("local_triggers": "keep", the default): campaign triggers run beside the local ones
  /// (names must differ; composites may reference local triggers). false ("replace"): only the
  /// campaign's triggers run.
  bool keep_local_triggers = true;
  /// Every trigger type but `custom` (its code lives in the firmware), with cooldowns, budgets,
  /// sampling, priority and capture windows, parsed exactly as in the local config.
  std::vector<TriggerConfig> triggers;
  CampaignUpload upload;
};

/// A parsed `fleetpipe.campaign/1` document. Plain data.
struct CampaignDocument {
  std::string id;           ///< 1-64 of [A-Za-z0-9._-]; names the object and the attribution
  std::uint64_t version = 0;  ///< >= 1; only increases
  std::string description;
  std::int32_t priority = 0;  ///< among several campaigns followed by one device; higher wins
  WallTime start{};           ///< UTC; pending before
  WallTime expiry{};          ///< UTC; > start; local triggers again from then on
  bool suspended = false;     ///< a signed suspension: local triggers until a resuming version
  CampaignTargeting targeting;
  CampaignContent content;
};

/// Strict parse (unknown keys are errors; every error names its JSON pointer in
/// `Error::json_pointer` and the message "<pointer>: <reason>"). Checks the document on its own;
/// references to the device's streams are checked by `resolve_campaign`.
/// Errors: campaign_errc::invalid, campaign_errc::oversize. Never throws.
Result<CampaignDocument> parse_campaign_document(std::string_view json_text);

/// "2026-12-03T10:00:00Z" (the only form documents use).
std::string format_campaign_time(WallTime t);

// ---------------------------------------------------------------------------------------------
// Targeting
// ---------------------------------------------------------------------------------------------

/// The device's rollout bucket for a campaign, 0..9999: the first 8 bytes of
/// SHA-256(campaign_id "\n" device_id), big-endian, mod 10000. Stable across versions, so
/// raising the percentage only ever adds devices.
std::uint32_t campaign_rollout_bucket(std::string_view campaign_id, std::string_view device_id);

/// `*` globs; every other character is literal. Whole-string match.
bool campaign_glob_match(std::string_view pattern, std::string_view value) noexcept;

/// Selector and rollout together (see CampaignTargeting).
bool campaign_targets(const CampaignDocument& doc, std::string_view device_id,
                      const std::map<std::string, std::string>& device_labels);

// ---------------------------------------------------------------------------------------------
// The device: what a campaign may use, and the hard limits it cannot exceed
// ---------------------------------------------------------------------------------------------

/// Parses a "campaigns" section (the object alone; pointers are prefixed "/campaigns").
/// Errors: invalid_config with json_pointer.
Result<CampaignSettings> parse_campaign_settings(std::string_view json_section);

/// What the device is, as far as a campaign is concerned.
struct CampaignDevice {
  std::string device_id;
  std::map<std::string, std::string> labels;
  std::vector<StreamConfig> streams;          ///< the firmware's streams (local config)
  std::vector<TriggerConfig> local_triggers;  ///< the local config's triggers
  double local_upload_bytes_per_second = 0;   ///< uploader.bytes_per_second (0 = unlimited)
  std::uint64_t local_buffer_max_bytes = 0;   ///< buffer.max_bytes
  CampaignLimits limits;
};

/// The device as its local config describes it (streams, local triggers, the local upload rate
/// and buffer quota), with its labels and the hard limits of its "campaigns" section.
CampaignDevice campaign_device_of(const Config& config,
                                  std::map<std::string, std::string> labels,
                                  const CampaignLimits& limits);

/// A campaign made ready for one device: the full trigger set to run and the clamped overrides.
struct CampaignApplication {
  std::string campaign_id;            ///< events record it as metadata "campaign_id"
  std::uint64_t campaign_version = 0;  ///< ... and "campaign_version"
  std::vector<TriggerConfig> triggers;  ///< local (when kept) followed by the campaign's
  std::optional<double> upload_bytes_per_second;
  std::optional<std::uint64_t> buffer_max_bytes;
  /// One line per clamped value, e.g. "/content/triggers/0/priority: 7 clamped to 5".
  std::vector<std::string> clamped;
};

/// Checks a document's content against the device (streams, channels, trigger names and
/// references, as the local config is checked, with pointers into the document) and applies
/// the hard limits. Does not look at targeting or time. Errors: campaign_errc::invalid.
Result<CampaignApplication> resolve_campaign(const CampaignDocument& doc,
                                             const CampaignDevice& device);

// ---------------------------------------------------------------------------------------------
// Integrity: the envelope
// ---------------------------------------------------------------------------------------------
//
// {"format": "fleetpipe.campaign-envelope/1", "key_id": "ml-2026",
//  "payload": base64(document bytes), "signature": base64(Ed25519(document bytes))}
// The signature covers exactly the decoded payload bytes: no canonical JSON needed.

/// A verified envelope: the document bytes and the key that signed them.
struct OpenedCampaign {
  std::string key_id;
  std::string payload;  ///< the document bytes exactly as signed
  CampaignDocument document;
};

/// Size check, envelope parse, key lookup, signature check, strict document parse — in that
/// order. Errors (campaign_errc): oversize, unsigned_document, unknown_key, bad_signature,
/// invalid (a malformed key in `trusted` is also `invalid`). Never throws.
Result<OpenedCampaign> open_campaign_envelope(std::string_view body,
                                              const std::vector<CampaignTrustedKey>& trusted);

/// A new key pair: PKCS#8 PEM of the private key, base64 of the raw public key.
struct CampaignKeyPair {
  std::string private_key_pem;
  std::string public_key;
};
/// Errors: internal (OpenSSL failed).
Result<CampaignKeyPair> generate_campaign_key();

/// Reads a private key PEM file. Refuses (errc::insecure_refused) a file that group or others
/// can read; io_error when unreadable; invalid_argument when not an Ed25519 private key.
/// Errors never contain key material.
Result<std::string> load_campaign_private_key(const std::string& path);

/// Wraps `document` (checked with parse_campaign_document first) in a signed envelope.
/// Errors: those of parse_campaign_document; invalid_argument for a bad key.
Result<std::string> sign_campaign(std::string_view document, std::string_view key_id,
                                  std::string_view private_key_pem);

/// The public key (base64, raw 32 bytes) of a private key PEM. Errors: invalid_argument.
Result<std::string> campaign_public_key_of(std::string_view private_key_pem);

/// `{prefix}/_campaigns/<id>.json` — the one place this key is rendered.
std::string campaign_object_key(std::string_view prefix, std::string_view campaign_id);

// ---------------------------------------------------------------------------------------------
// The device-side agent
// ---------------------------------------------------------------------------------------------

/// Where a followed campaign stands on this device.
enum class CampaignState : std::uint8_t {
  none,          ///< nothing accepted yet (local triggers)
  pending,       ///< accepted, targets the device, start time not reached
  active,        ///< in force
  expired,       ///< its expiry passed (local triggers)
  suspended,     ///< a signed suspension is in force (local triggers)
  not_targeted,  ///< accepted, but the selector or rollout leaves this device out
  rejected,      ///< nothing in force and the last document was rejected
};
/// "none", "pending", "active", "expired", "suspended", "not_targeted", "rejected".
const char* to_string(CampaignState s) noexcept;

/// Campaign state for the heartbeat (one per followed id).
struct CampaignStatus {
  std::string id;
  std::uint64_t version = 0;  ///< the accepted version (0 = none)
  CampaignState state = CampaignState::none;
  WallTime since{};           ///< when `state` was entered (device wall clock)
  bool in_force = false;      ///< this is the campaign whose triggers run
  std::string last_rejection;  ///< to_string(campaign_errc) of the last rejection, or ""
  std::string last_rejection_message;  ///< for people; never key material
  WallTime last_rejection_at{};
};

/// The heartbeat's "campaigns" value: [{"id", "version", "state", "since", "in_force",
/// "last_rejection", "last_rejection_at"}] (the last two only after a rejection; times UTC
/// "YYYY-MM-DDTHH:MM:SSZ"). The rejection message stays in the device log.
std::string campaign_status_json(const std::vector<CampaignStatus>& statuses);

/// A conditional GET's reply: 200 with a body, 304 (not modified), 404 (no such campaign).
struct CampaignFetchReply {
  int status = 0;
  std::string etag;
  std::string body;
};

/// What the agent needs from its owner (the pipeline). All are called on the driving thread.
struct CampaignAgentHooks {
  using FetchDone = std::function<void(Result<CampaignFetchReply>)>;
  /// Starts a GET of `key` with `If-None-Match: if_none_match` (omitted when empty) and calls
  /// `done` once, now or from a later poll of its owner. Must not block.
  std::function<void(const std::string& key, const std::string& if_none_match, FetchDone done)>
      fetch;
  /// Switches the triggers at a clean point (the owner lets open events finish under the old
  /// triggers and keeps the pre-trigger rings). nullptr: back to the local config. An error keeps
  /// what runs now (counted as result "apply_failed").
  std::function<Result<void>(const CampaignApplication* app)> apply;
  /// The Buffer's state table (persisted across reboots).
  std::function<Result<void>(std::string_view key, std::string_view value)> store_put;
  std::function<Result<std::optional<std::string>>(std::string_view key)> store_get;
};

/// Settings of one agent.
struct CampaignAgentConfig {
  CampaignSettings settings;
  std::string prefix = "fleetpipe";  ///< the uploader's key prefix
};

/// Polls, verifies, persists and applies campaigns. Driven from the owner's poll(); no threads.
///
/// Call order: create → resume() once at boot (before the network: re-applies the persisted
/// campaign, re-verified with today's trusted keys and clock) → poll() from every loop turn.
/// Metrics: fleetpipe_campaign_updates_total{result} (accepted, unchanged, not_found,
/// fetch_error, apply_failed, and each campaign_errc reason), fleetpipe_campaign_version
/// (the version in force, 0 for local triggers).
class CampaignAgent {
 public:
  /// `port.clock` and `metrics` must outlive the agent; `device.limits` is taken from
  /// `config.settings.limits`. Errors: invalid_config (settings:
  /// a malformed trusted key, an empty follow list, a bad interval), invalid_argument (a hook
  /// missing).
  static Result<std::unique_ptr<CampaignAgent>> create(CampaignAgentConfig config,
                                                       CampaignDevice device, const Port& port,
                                                       MetricsRegistry& metrics,
                                                       CampaignAgentHooks hooks);
  ~CampaignAgent();
  CampaignAgent(const CampaignAgent&) = delete;
  CampaignAgent& operator=(const CampaignAgent&) = delete;

  /// Loads and applies the persisted campaigns (no network). Errors: io_error from store_get
  /// (the agent then starts from the local triggers); a persisted document that no longer
  /// verifies is dropped, counted and logged, not an error.
  Result<void> resume();
  /// Starts the fetches that are due and applies start/expiry transitions. Cheap when nothing
  /// is due (clock reads and comparisons). A fetched document takes one step per call (verify
  /// the signature, then check and resolve it, then persist it), and it is applied at the call
  /// after that, so no single call does more than one of them.
  void poll();
  /// Monotonic time of the next fetch that is due (for an owner that sleeps).
  MonoTime next_fetch_due() const noexcept;
  /// One status per followed id, in `follow` order.
  std::vector<CampaignStatus> status() const;
  /// The application in force, or nullptr for the local triggers.
  const CampaignApplication* in_force() const noexcept;

 private:
  struct Impl;
  explicit CampaignAgent(std::unique_ptr<Impl> impl) noexcept;
  std::unique_ptr<Impl> impl_;
};

}  // namespace fleetpipe
