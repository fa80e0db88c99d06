// The pipeline's heartbeat: its key, its document and its sending through the uploader on the
// heartbeat schedule.
//
// The document is compact by default (`fleetpipe.heartbeat/2`, short keys, what the fleet view
// reads; docs/pipeline.md lists the schema). The full metrics export rides along only every
// `heartbeat_metrics_every`-th heartbeat or after request_metrics_heartbeat().
#include "pipeline/pipeline_impl.hpp"

#include "fleetpipe/campaign.hpp"

namespace fleetpipe {

using namespace pipeline_internal;

namespace {

constexpr double kDaySeconds = 86400;
constexpr double kCheckpointEvery = 3600;

/// Trims a double to an integer when it is one (counters, whole seconds): "12" not "12.0".
nlohmann::json num(double v) {
  if (v >= 0 && v < 9e15 && v == static_cast<double>(static_cast<std::int64_t>(v))) {
    return static_cast<std::int64_t>(v);
  }
  return std::round(v * 1000) / 1000;  // ms / mB resolution is plenty for the fleet view
}

}  // namespace

std::string Pipeline::Impl::heartbeat_key(WallTime wall) const {
  return detail::BucketLayout(config.uploader.prefix).heartbeat_key(config.device_id, wall, hb_seq);
}

void Pipeline::Impl::heartbeat_checkpoint(MonoTime now) {
  double tx = 0;
  if (uploader) tx = static_cast<double>(uploader->status().bytes_sent);
  const double ev = static_cast<double>(buffer->stats().evicted_total);
  if (hb_ring_n == 0) {  // the start: every counter was zero then
    hb_ring[0] = {created, 0, 0};
    hb_ring_n = 1;
  }
  const HbCheckpoint& newest = hb_ring[(hb_ring_head + hb_ring_n - 1) % hb_ring.size()];
  if (seconds_between(newest.t, now) < kCheckpointEvery) return;
  if (hb_ring_n < hb_ring.size()) {
    hb_ring[(hb_ring_head + hb_ring_n++) % hb_ring.size()] = {now, tx, ev};
  } else {
    hb_ring[hb_ring_head] = {now, tx, ev};
    hb_ring_head = (hb_ring_head + 1) % hb_ring.size();
  }
}

nlohmann::json Pipeline::Impl::heartbeat_doc(bool with_metrics) const {
  using nlohmann::json;
  MonoTime now = port.clock->monotonic();
  WallTime wall = port.clock->wall();
  json j;
  j["schema"] = "fleetpipe.heartbeat/2";
  j["device"] = config.device_id;
  j["t"] = unix_ns(wall) / 1000000;
  j["seq"] = hb_seq;
  j["up"] = num(std::floor(seconds_between(created, now)));
  j["sdk"] = kVersion;
  j["net"] = std::string(to_string(port.network->get()));
  if (!config.labels.empty()) j["labels"] = config.labels;

  BufferStats st = buffer->stats();
  j["backlog"] = {st.records, st.bytes, st.leased, st.parked};
  j["buf"] = {st.evicted_total, st.rejected_total, st.quarantined_total};

  json fires = json::object();
  const auto& tcs = capture->triggers();
  for (std::size_t i = 0; i < tcs.size(); ++i) {
    fires[tcs[i].name] = capture->trigger_stats(TriggerHandle{static_cast<std::uint32_t>(i)}).fires;
  }
  j["fires"] = std::move(fires);

  std::string last_error = log_sink.last_error();
  const char* state = "local";  // no uploader
  double tx = 0;
  if (uploader) {
    UploaderStatus us = uploader->status();
    tx = static_cast<double>(us.bytes_sent);
    state = !us.destination_fault.empty() ? "fault" : us.paused ? "paused" : "ok";
    j["tx"] = us.bytes_sent;
    j["obj"] = us.objects_uploaded;
    json pause = json::object();
    for (const char* reason : {"host", "network", "schedule"}) {
      const double n = metrics.value("fleetpipe_uploader_pauses_total", {{"reason", reason}});
      const double s = metrics.value("fleetpipe_uploader_paused_reason_seconds", {{"reason", reason}});
      if (n > 0 || s > 0) pause[reason] = {num(std::max(n, 0.0)), num(std::max(s, 0.0))};
    }
    if (!pause.empty()) j["pause"] = std::move(pause);
    if (!us.destination_fault.empty()) j["fault"] = us.destination_fault;
    if (last_error.empty()) last_error = us.last_error;
  }
  j["state"] = state;
  // Trailing day (docs/pipeline.md): bytes sent and evictions since the newest hourly checkpoint
  // at most a day old, so `fleetpipe status` needs no older heartbeat for its default window.
  {
    const HbCheckpoint start{created, 0, 0};  // before the first checkpoint: the start
    const HbCheckpoint* base = hb_ring_n == 0 ? &start : nullptr;
    for (std::size_t i = 0; i < hb_ring_n; ++i) {
      const HbCheckpoint& c = hb_ring[(hb_ring_head + i) % hb_ring.size()];
      if (seconds_between(c.t, now) <= kDaySeconds) {
        base = &c;
        break;
      }
    }
    if (base) {
      j["day"] = {num(std::floor(seconds_between(base->t, now))), num(tx - base->tx),
                  num(static_cast<double>(st.evicted_total) - base->ev)};
    }
  }
  j["err"] = log_sink.errors();
  if (!last_error.empty()) j["last_error"] = last_error;
  j["hb"] = {hb_sent, hb_failed, hb_skipped};
  if (campaigns) {  // docs/campaigns.md "Heartbeat state"
    j["campaigns"] = json::parse(campaign_status_json(campaigns->status()), nullptr, false);
  }
  // The full registry export: every counter of every component, by name and labels.
  if (with_metrics) j["metrics"] = json::parse(metrics.to_json(), nullptr, /*allow_exceptions=*/false);
  return j;
}

bool Pipeline::Impl::next_heartbeat_has_metrics() const {
  const std::uint64_t every = config.pipeline.heartbeat_metrics_every;
  return hb_metrics_requested.load(std::memory_order_relaxed) || (every > 0 && hb_seq % every == 0);
}

void Pipeline::Impl::maybe_start_heartbeat(MonoTime now) {
  if (!hb_enabled || hb_in_flight) return;
  bool requested = hb_requested.exchange(false, std::memory_order_relaxed);
  if (!requested && now < next_heartbeat) return;
  next_heartbeat = now + std::chrono::duration_cast<MonoTime::duration>(
                             std::chrono::duration<double>(config.pipeline.heartbeat_interval_s));
  hb_in_flight = true;  // done() runs at once for a skip
  uploader->send_heartbeat(
      config.device_id,
      [this, now]() -> Result<std::string> {
        refresh_gauges(now);
        heartbeat_checkpoint(now);
        try {
          const bool with_metrics = next_heartbeat_has_metrics();
          std::string body = heartbeat_doc(with_metrics).dump();
          if (with_metrics) hb_metrics_requested.store(false, std::memory_order_relaxed);
          ++hb_seq;
          return body;
        } catch (const std::exception& e) {  // nlohmann: invalid UTF-8 in a user string
          std::string msg = std::string("heartbeat not built: ") + e.what();
          note_error("pipeline", msg);
          return Error(errc::internal, msg);
        }
      },
      [this](const HeartbeatOutcome& o) { heartbeat_done(o); });
}

void Pipeline::Impl::heartbeat_done(const HeartbeatOutcome& o) {
  hb_in_flight = false;
  switch (o.kind) {
    case HeartbeatOutcome::Kind::skipped_offline:
      ++hb_skipped;
      hb_skip->inc();
      log(port, LogLevel::debug, "pipeline", "heartbeat skipped: network offline");
      return;
    case HeartbeatOutcome::Kind::skipped_paused:  // a paused link carries nothing, heartbeats included
      ++hb_skipped;
      hb_skip_paused->inc();
      log(port, LogLevel::debug, "pipeline", "heartbeat skipped: uploads paused");
      return;
    case HeartbeatOutcome::Kind::sent:
      ++hb_sent;
      hb_ok->inc();
      last_heartbeat = o.time;
      last_heartbeat_key = o.key;
      log(port, LogLevel::debug, "pipeline", "heartbeat stored: " + o.key);
      return;
    case HeartbeatOutcome::Kind::failed:
      ++hb_failed;
      hb_fail->inc();
      if (!o.key.empty()) log(port, LogLevel::warning, "pipeline", "heartbeat failed: " + o.error);
      return;  // (not built: logged as an error by the builder)
  }
}

}  // namespace fleetpipe
