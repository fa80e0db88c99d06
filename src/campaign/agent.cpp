// The device-side campaign agent: polls, verifies, persists and applies campaigns from the
// owner's poll(), through injected hooks (fetch, apply, state table) and the Port clock.
#include <nlohmann/json.hpp>

#include <cmath>
#include <cstring>

#include "campaign/internal.hpp"
#include "campaign/settings.hpp"

namespace fleetpipe {
namespace {

constexpr const char* kComponent = "campaign";

// Every value of fleetpipe_campaign_updates_total{result}, registered at construction.
enum Outcome : std::size_t {
  kAccepted, kUnchanged, kNotFound, kFetchError, kApplyFailed, kPersistFailed,
  kRejectFirst  // + campaign_errc - 1
};
constexpr std::size_t kOutcomes = kRejectFirst + 7;
const char* outcome_name(std::size_t i) {
  static const char* const kFixed[] = {"accepted",     "unchanged",    "not_found",
                                       "fetch_error",  "apply_failed", "persist_failed"};
  if (i < kRejectFirst) return kFixed[i];
  return to_string(static_cast<campaign_errc>(i - kRejectFirst + 1));
}

std::string state_key(const std::string& id) { return "campaign/" + id; }

// splitmix64: a per-device sequence for the poll jitter (deterministic, no global state).
std::uint64_t next_random(std::uint64_t& s) {
  std::uint64_t z = (s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}
double unit_random(std::uint64_t& s) { return double(next_random(s) >> 11) * 0x1.0p-53; }

}  // namespace

const char* to_string(CampaignState s) noexcept {
  switch (s) {
    case CampaignState::none: return "none";
    case CampaignState::pending: return "pending";
    case CampaignState::active: return "active";
    case CampaignState::expired: return "expired";
    case CampaignState::suspended: return "suspended";
    case CampaignState::not_targeted: return "not_targeted";
    case CampaignState::rejected: return "rejected";
  }
  return "none";
}

struct CampaignAgent::Impl {
  struct Slot {
    std::string id, key;
    std::string seen_etag;  // last object processed, accepted or not: sent as If-None-Match
    std::optional<OpenedCampaign> accepted;  // the highest version accepted
    std::string accepted_digest;
    std::string accepted_envelope;  // the bytes fetched, persisted as they came
    bool targeted = false;
    std::optional<CampaignApplication> app;  // when targeted and runnable
    CampaignStatus status;
    MonoTime next_fetch{};
    bool in_flight = false;
    // The version that was active when a later-starting one was accepted: it stays in force
    // until the new start (in memory only; after a reboot the new one waits alone).
    std::optional<CampaignDocument> bridge_doc;
    std::optional<CampaignApplication> bridge_app;
    // A fetched document goes through one step per poll (verify, then take, then persist), so
    // the signature check, the trigger resolution and the state write never share one poll().
    enum class Step { none, verify, take, persist } step = Step::none;
    std::string received;                    // the body fetched (Step::verify)
    std::optional<OpenedCampaign> verified;  // its verified document (Step::take)
  };

  CampaignAgentConfig config;
  CampaignDevice device;
  Port port;
  CampaignAgentHooks hooks;
  std::vector<Slot> slots;
  std::array<Counter*, kOutcomes> counters{};
  Gauge* version_gauge = nullptr;
  std::uint64_t rng = 0;
  std::optional<CampaignApplication> current;  // a copy of what runs; empty = local triggers
  std::string failed_apply;  // "id@version" whose apply failed: not retried until it changes
  std::shared_ptr<int> alive = std::make_shared<int>(0);

  void count(std::size_t outcome) { counters[outcome]->inc(); }
  void log(LogLevel level, const std::string& message) {
    fleetpipe::log(port, level, kComponent, message);
  }

  std::chrono::nanoseconds interval_with_jitter() {
    const double j = config.settings.poll_jitter * (2 * unit_random(rng) - 1);
    return std::chrono::nanoseconds(
        static_cast<std::int64_t>(config.settings.poll_interval_s * (1 + j) * 1e9));
  }

  void reject(Slot& s, const Error& e) {
    const auto reason = static_cast<campaign_errc>(e.code.value());
    const bool ours = e.code.category() == campaign_error_category();
    s.status.last_rejection = ours ? to_string(reason) : "invalid";
    s.status.last_rejection_message = e.message;
    s.status.last_rejection_at = port.clock->wall();
    count(ours ? kRejectFirst + static_cast<std::size_t>(reason) - 1
               : kRejectFirst + static_cast<std::size_t>(campaign_errc::invalid) - 1);
    log(LogLevel::warning, "campaign \"" + s.id + "\" rejected (" + s.status.last_rejection +
                               "): " + e.message + "; the campaign in force stays");
  }

  // Takes a verified document as the slot's campaign (the caller checked version order).
  Result<void> take(Slot& s, OpenedCampaign opened, std::string envelope) {
    const CampaignDocument& doc = opened.document;
    const bool targeted = campaign_targets(doc, device.device_id, device.labels);
    std::optional<CampaignApplication> app;
    if (targeted && !doc.suspended) {
      auto r = resolve_campaign(doc, device);
      if (!r) return std::move(r).error();
      app = std::move(*r);
    }
    const WallTime now = port.clock->wall();
    if (s.app && state_of(s, now) == CampaignState::active && !doc.suspended && now < doc.start) {
      s.bridge_doc = s.accepted->document;
      s.bridge_app = std::move(s.app);
    } else if (!(now < doc.start)) {
      s.bridge_doc.reset();
      s.bridge_app.reset();
    }
    s.status.version = doc.version;
    s.accepted_digest = detail::campaign_sha256(opened.payload);
    s.accepted = std::move(opened);
    s.accepted_envelope = std::move(envelope);
    s.targeted = targeted;
    s.app = std::move(app);
    return {};
  }

  void on_reply(Slot& s, Result<CampaignFetchReply> reply) {
    s.in_flight = false;
    if (!reply) {
      count(kFetchError);
      log(LogLevel::info, "campaign \"" + s.id + "\" fetch failed: " + reply.error().message);
      return;
    }
    if (reply->status == 304) {
      count(kUnchanged);
      return;
    }
    if (reply->status == 404) {
      // Not a withdrawal: stopping a campaign takes a signed suspension or expiry.
      count(kNotFound);
      return;
    }
    if (reply->status != 200) {
      count(kFetchError);
      log(LogLevel::info, "campaign \"" + s.id + "\" fetch: HTTP " + std::to_string(reply->status));
      return;
    }
    s.seen_etag = reply->etag;
    s.received = std::move(reply->body);
    s.step = Slot::Step::verify;
  }

  // Runs the next step of a fetched document; true when there was one.
  bool advance(Slot& s) {
    switch (s.step) {
      case Slot::Step::none:
        return false;
      case Slot::Step::verify: {
        s.step = Slot::Step::none;
        auto opened = open_campaign_envelope(s.received, config.settings.trusted_keys);
        if (!opened) {
          s.received.clear();
          reject(s, opened.error());
          return true;
        }
        s.verified = std::move(*opened);
        s.step = Slot::Step::take;
        return true;
      }
      case Slot::Step::take: {
        s.step = Slot::Step::none;
        OpenedCampaign opened = std::move(*s.verified);
        s.verified.reset();
        std::string envelope = std::move(s.received);
        s.received.clear();
        if (take_checked(s, std::move(opened), std::move(envelope))) s.step = Slot::Step::persist;
        return true;
      }
      case Slot::Step::persist:
        s.step = Slot::Step::none;
        persist(s);
        return true;
    }
    return false;
  }

  // The checks on a verified document against the accepted one, then take(); true when the
  // slot's record must be persisted (accepted, or the same document under a new ETag).
  bool take_checked(Slot& s, OpenedCampaign opened, std::string envelope) {
    const CampaignDocument& doc = opened.document;
    if (doc.id != s.id) {
      reject(s, detail::campaign_error(campaign_errc::invalid,
                                       "/id: the object of campaign \"" + s.id +
                                           "\" holds campaign \"" + doc.id + "\"",
                                       "/id"));
      return false;
    }
    if (s.accepted) {
      const std::uint64_t have = s.accepted->document.version;
      if (doc.version == have && detail::campaign_sha256(opened.payload) == s.accepted_digest) {
        count(kUnchanged);
        return true;  // the new ETag saves a download after a reboot
      }
      if (doc.version <= have) {
        reject(s, detail::campaign_error(
                      campaign_errc::rollback,
                      "/version: " + std::to_string(doc.version) +
                          (doc.version == have ? " with other content than the accepted "
                                               : " is older than the accepted ") +
                          std::to_string(have),
                      "/version"));
        return false;
      }
    }
    if (port.clock->wall() >= doc.expiry) {
      reject(s, detail::campaign_error(campaign_errc::expired,
                                       "/expiry: " + format_campaign_time(doc.expiry) +
                                           " has passed",
                                       "/expiry"));
      return false;
    }
    if (auto t = take(s, std::move(opened), std::move(envelope)); !t) {
      reject(s, t.error());
      return false;
    }
    count(kAccepted);
    log(LogLevel::info, "campaign \"" + s.id + "\" version " +
                            std::to_string(s.accepted->document.version) + " accepted");
    return true;
  }

  void persist(Slot& s) {
    if (!s.accepted) return;
    // The envelope itself is stored, so a boot re-verifies it with the keys trusted then.
    nlohmann::json rec = {{"etag", s.seen_etag}, {"envelope", s.accepted_envelope}};
    if (auto r = hooks.store_put(state_key(s.id), rec.dump()); !r) {
      count(kPersistFailed);
      log(LogLevel::warning, "campaign \"" + s.id + "\" not persisted: " + r.error().message);
    }
  }

  CampaignState state_of(const Slot& s, WallTime now) const {
    if (!s.accepted) return s.status.last_rejection.empty() ? CampaignState::none
                                                           : CampaignState::rejected;
    const CampaignDocument& d = s.accepted->document;
    if (d.suspended) return CampaignState::suspended;
    if (!s.targeted) return CampaignState::not_targeted;
    if (now >= d.expiry) return CampaignState::expired;
    if (now < d.start) return CampaignState::pending;
    return s.app ? CampaignState::active : CampaignState::not_targeted;
  }

  // States from the clock, then the one campaign in force; applies when that changes.
  void evaluate() {
    const WallTime now = port.clock->wall();
    Slot* best = nullptr;
    const CampaignDocument* best_doc = nullptr;
    const CampaignApplication* want = nullptr;
    for (auto& s : slots) {
      CampaignState st = state_of(s, now);
      if (st != s.status.state) {
        s.status.state = st;
        s.status.since = now;
      }
      s.status.in_force = false;
      const CampaignDocument* doc = nullptr;
      const CampaignApplication* app = nullptr;
      if (st == CampaignState::active) {
        doc = &s.accepted->document;
        app = &*s.app;
        if (s.bridge_doc) {
          s.bridge_doc.reset();
          s.bridge_app.reset();
        }
      } else if (st == CampaignState::pending && s.bridge_doc && now < s.bridge_doc->expiry) {
        doc = &*s.bridge_doc;
        app = &*s.bridge_app;
      }
      if (!doc) continue;
      if (!best || doc->priority > best_doc->priority ||
          (doc->priority == best_doc->priority && doc->start > best_doc->start) ||
          (doc->priority == best_doc->priority && doc->start == best_doc->start &&
           doc->id < best_doc->id)) {
        best = &s;
        best_doc = doc;
        want = app;
      }
    }
    if (best) best->status.in_force = true;
    const bool same = want ? current && current->campaign_id == want->campaign_id &&
                                 current->campaign_version == want->campaign_version
                           : !current;
    if (same) return;
    if (best) best->status.in_force = false;
    const std::string tag =
        want ? want->campaign_id + "@" + std::to_string(want->campaign_version) : "local";
    if (tag == failed_apply) return;  // already failed: wait for another version
    if (auto r = hooks.apply(want); !r) {
      count(kApplyFailed);
      failed_apply = tag;
      log(LogLevel::warning, "campaign " + tag + " not applied: " + r.error().message);
      return;
    }
    failed_apply.clear();
    if (want) {
      current = *want;
      best->status.in_force = true;
    } else {
      current.reset();
    }
    version_gauge->set(want ? static_cast<double>(want->campaign_version) : 0);
    log(LogLevel::info, tag + " in force");
  }
};

CampaignAgent::CampaignAgent(std::unique_ptr<Impl> impl) noexcept : impl_(std::move(impl)) {}
CampaignAgent::~CampaignAgent() = default;

Result<std::unique_ptr<CampaignAgent>> CampaignAgent::create(CampaignAgentConfig config,
                                                             CampaignDevice device,
                                                             const Port& port,
                                                             MetricsRegistry& metrics,
                                                             CampaignAgentHooks hooks) {
  if (auto v = detail::validate_campaign_settings(config.settings); !v) return v.error();
  if (!hooks.fetch || !hooks.apply || !hooks.store_put || !hooks.store_get) {
    return Error(errc::invalid_argument, "CampaignAgent: every hook (fetch, apply, store_put, "
                                         "store_get) is required");
  }
  auto impl = std::make_unique<Impl>();
  impl->port = port.with_defaults();
  impl->config = std::move(config);
  impl->device = std::move(device);
  impl->device.limits = impl->config.settings.limits;
  impl->hooks = std::move(hooks);
  for (std::size_t i = 0; i < kOutcomes; ++i) {
    impl->counters[i] = &metrics.counter("fleetpipe_campaign_updates_total",
                                         "Campaign fetches by result", {{"result", outcome_name(i)}});
  }
  impl->version_gauge = &metrics.gauge("fleetpipe_campaign_version",
                                       "Version of the campaign in force (0: local triggers)");
  const std::string seed = detail::campaign_sha256("poll\n" + impl->device.device_id);
  std::memcpy(&impl->rng, seed.data(), sizeof impl->rng);
  // The first fetch waits a per-device share of the jitter, so a fleet powered up together
  // does not poll in step.
  const MonoTime now = impl->port.clock->monotonic();
  for (const auto& id : impl->config.settings.follow) {
    Impl::Slot s;
    s.id = id;
    s.key = campaign_object_key(impl->config.prefix, id);
    s.status.id = id;
    s.status.since = impl->port.clock->wall();
    const double phase = impl->config.settings.poll_jitter * impl->config.settings.poll_interval_s *
                         unit_random(impl->rng);
    s.next_fetch = now + std::chrono::nanoseconds(static_cast<std::int64_t>(phase * 1e9));
    impl->slots.push_back(std::move(s));
  }
  return std::unique_ptr<CampaignAgent>(new CampaignAgent(std::move(impl)));
}

Result<void> CampaignAgent::resume() {
  auto& d = *impl_;
  for (auto& s : d.slots) {
    auto stored = d.hooks.store_get(state_key(s.id));
    if (!stored) return std::move(stored).error();
    if (!*stored) continue;
    nlohmann::json rec = nlohmann::json::parse(**stored, nullptr, /*allow_exceptions=*/false);
    if (!rec.is_object() || !rec.contains("envelope") || !rec["envelope"].is_string() ||
        !rec.contains("etag") || !rec["etag"].is_string()) {
      d.reject(s, detail::campaign_error(campaign_errc::invalid, "persisted campaign unreadable"));
      continue;
    }
    std::string envelope = rec["envelope"].get<std::string>();
    auto opened = open_campaign_envelope(envelope, d.config.settings.trusted_keys);
    if (!opened) {
      d.reject(s, opened.error());
      continue;
    }
    if (opened->document.id != s.id) {
      d.reject(s, detail::campaign_error(campaign_errc::invalid, "persisted id differs"));
      continue;
    }
    if (auto t = d.take(s, std::move(*opened), std::move(envelope)); !t) {
      d.reject(s, t.error());
      continue;
    }
    s.seen_etag = rec["etag"].get<std::string>();
  }
  d.evaluate();
  return {};
}

void CampaignAgent::poll() {
  auto& d = *impl_;
  // One step of one fetched document per poll; the apply (evaluate) comes in a later poll.
  for (auto& s : d.slots) {
    if (d.advance(s)) return;
  }
  const MonoTime now = d.port.clock->monotonic();
  for (auto& s : d.slots) {
    if (s.in_flight || s.step != Impl::Slot::Step::none || now < s.next_fetch) continue;
    s.in_flight = true;
    s.next_fetch = now + d.interval_with_jitter();
    std::weak_ptr<int> alive = d.alive;
    Impl* impl = &d;
    Impl::Slot* slot = &s;
    d.hooks.fetch(s.key, s.seen_etag, [alive, impl, slot](Result<CampaignFetchReply> reply) {
      if (alive.expired()) return;  // the agent is gone
      impl->on_reply(*slot, std::move(reply));
    });
  }
  d.evaluate();
}

MonoTime CampaignAgent::next_fetch_due() const noexcept {
  MonoTime due = MonoTime::max();
  for (const auto& s : impl_->slots) {
    if (!s.in_flight && s.next_fetch < due) due = s.next_fetch;
  }
  return due;
}

std::vector<CampaignStatus> CampaignAgent::status() const {
  std::vector<CampaignStatus> out;
  for (const auto& s : impl_->slots) out.push_back(s.status);
  return out;
}

const CampaignApplication* CampaignAgent::in_force() const noexcept {
  return impl_->current ? &*impl_->current : nullptr;
}

}  // namespace fleetpipe
