// The pipeline's campaign agent: its hooks (fetch through the uploader, trigger switch in the
// Capture, persistence in the Buffer's state table) and its turn in poll().
#include "pipeline/pipeline_impl.hpp"

namespace fleetpipe {

namespace {

// An agent's wish waits for a poll with no event open; past this, open events are finished
// early ("closed": "flush") so a trigger that keeps firing cannot hold a campaign off forever.
constexpr auto kMaxSwitchWait = std::chrono::seconds(60);

}  // namespace

Result<void> Pipeline::Impl::start_campaigns() {
  const char* help = "Trigger set switches for campaigns (result: applied, forced, failed)";
  campaign_switches =
      &metrics.counter("fleetpipe_campaign_switches_total", help, {{"result", "applied"}});
  campaign_forced =
      &metrics.counter("fleetpipe_campaign_switches_total", help, {{"result", "forced"}});
  campaign_switch_failed =
      &metrics.counter("fleetpipe_campaign_switches_total", help, {{"result", "failed"}});

  CampaignAgentConfig ac;
  ac.settings = config.campaigns;
  ac.prefix = config.uploader.prefix;
  CampaignDevice device = campaign_device_of(config, config.labels, config.campaigns.limits);

  CampaignAgentHooks hooks;
  hooks.fetch = [this](const std::string& key, const std::string& if_none_match,
                       CampaignAgentHooks::FetchDone done) {
    if (!uploader) return done(Error(errc::unsupported, "the uploader is disabled"));
    uploader->fetch_object(key, if_none_match, [done = std::move(done)](Result<FetchReply> r) {
      if (!r) return done(std::move(r).error());
      done(CampaignFetchReply{r->status, std::move(r->etag), std::move(r->body)});
    });
  };
  hooks.apply = [this](const CampaignApplication* app) -> Result<void> {
    if (app) {
      campaign_want = *app;
    } else {
      campaign_want.reset();
    }
    campaign_switch_due = true;
    campaign_due_since = port.clock->monotonic();
    // At boot the switch is made now (before the first sample); later from the next poll, so
    // the fetch, the signature check and the trigger switch do not share one poll().
    if (!campaign_booting) return {};
    return switch_triggers(campaign_due_since);
  };
  hooks.store_put = [this](std::string_view key, std::string_view value) {
    return buffer->put_state(key, value);
  };
  hooks.store_get = [this](std::string_view key) { return buffer->get_state(key); };

  // The fetch connection's TLS context (CA file) is loaded here, not in the first poll that
  // fetches; a failure is left to that fetch, which reports it through the agent's counters.
  if (uploader) (void)uploader->prepare_fetch();

  auto agent = CampaignAgent::create(std::move(ac), std::move(device), port, metrics,
                                     std::move(hooks));
  if (!agent) return std::move(agent).error();
  campaigns = std::move(*agent);
  // Before the network: the accepted campaign is in force from the first sample.
  campaign_booting = true;
  auto resumed = campaigns->resume();
  campaign_booting = false;
  if (auto& r = resumed; !r) {
    note_error("campaign", "persisted campaigns not read: " + r.error().message);
  }
  return {};
}

// Switches the Capture to campaign_want (or the local triggers) when no event is open.
// would_block: an event is open, try again later.
Result<void> Pipeline::Impl::switch_triggers(MonoTime now) {
  if (capture->has_open_events()) {
    if (now - campaign_due_since < kMaxSwitchWait) {
      return Error(errc::would_block, "an event is open");
    }
    capture->flush();
    capture->deliver();  // the finished events, under the triggers (and campaign) that recorded them
    campaign_forced->inc();
  }
  std::map<std::string, std::string> meta;
  std::vector<TriggerConfig> triggers;
  if (campaign_want) {
    meta = {{"campaign_id", campaign_want->campaign_id},
            {"campaign_version", std::to_string(campaign_want->campaign_version)}};
    triggers = campaign_want->triggers;
  } else {
    triggers = config.triggers;
  }
  campaign_switch_due = false;
  if (auto r = capture->set_triggers(std::move(triggers), std::move(meta)); !r) {
    campaign_switch_failed->inc();
    note_error("campaign", "trigger switch failed: " + r.error().message);
    return r;
  }
  campaign_switches->inc();
  // The rate is touched only when a campaign sets it, or set it before (the host's own
  // set_upload_rate stays otherwise).
  const bool sets_rate = campaign_want && campaign_want->upload_bytes_per_second;
  if (uploader && (sets_rate || campaign_rate_set)) {
    uploader->set_rate(sets_rate ? *campaign_want->upload_bytes_per_second
                                 : config.uploader.bytes_per_second);
  }
  campaign_rate_set = sets_rate;
  return {};
}

void Pipeline::Impl::poll_campaigns(MonoTime now) {
  if (campaign_switch_due) (void)switch_triggers(now);
  campaigns->poll();
}

}  // namespace fleetpipe
