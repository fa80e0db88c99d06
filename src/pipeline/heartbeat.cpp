// The pipeline's heartbeat: its key, its document (state, counters, metrics) and its sending
// through the uploader on the heartbeat schedule.
#include "pipeline/pipeline_impl.hpp"

namespace fleetpipe {

using namespace pipeline_internal;

std::string Pipeline::Impl::heartbeat_key(WallTime wall) const {
  return detail::BucketLayout(config.uploader.prefix).heartbeat_key(config.device_id, wall);
}

nlohmann::json Pipeline::Impl::heartbeat_doc() const {
  using nlohmann::json;
  MonoTime now = port.clock->monotonic();
  WallTime wall = port.clock->wall();
  json j;
  j["schema"] = "fleetpipe.heartbeat/1";
  j["device"] = config.device_id;
  j["time"] = detail::utc_iso8601_ms(wall);
  j["time_unix_ns"] = unix_ns(wall);
  j["sdk_version"] = kVersion;
  j["uptime_s"] = seconds_between(created, now);
  j["seq"] = hb_seq;
  j["network"] = std::string(to_string(port.network->get()));

  BufferStats st = buffer->stats();
  json prio = json::array();
  for (int p = 7; p >= 0; --p) {
    prio.push_back({{"priority", p},
                    {"records", st.by_priority[p].records},
                    {"bytes", st.by_priority[p].bytes}});
  }
  j["backlog"] = {{"records", st.records}, {"bytes", st.bytes},     {"leased", st.leased},
                  {"parked", st.parked},   {"by_priority", prio}};
  auto budget = buffer->config().max_bytes_written_per_day;
  j["wear"] = {{"written_today_bytes", st.written_today},
               {"budget_bytes_per_day", budget},
               {"used_ratio", budget ? static_cast<double>(st.written_today) /
                                           static_cast<double>(budget)
                                     : 0.0}};
  j["buffer"] = {{"evicted_total", st.evicted_total},
                 {"rejected_total", st.rejected_total},
                 {"quarantined_total", st.quarantined_total},
                 {"max_bytes", buffer->config().max_bytes},
                 {"file_bytes", st.file_bytes},
                 {"compression_ratio", st.compression_ratio}};

  CaptureStats cs = capture->stats();
  j["capture"] = {{"samples", cs.samples},
                  {"events", cs.events},
                  {"event_bytes", cs.event_bytes},
                  {"events_rejected", cs.events_rejected},
                  {"merged_fires", cs.merged_fires},
                  {"time_backwards", cs.time_backwards},
                  {"ring_overflow", cs.ring_overflow},
                  {"invalid_samples", cs.invalid_samples},
                  {"open_events", cs.open_events}};
  json trig = json::object();
  const auto& tcs = capture->triggers();
  for (std::size_t i = 0; i < tcs.size(); ++i) {
    TriggerStats ts = capture->trigger_stats(TriggerHandle{static_cast<std::uint32_t>(i)});
    trig[tcs[i].name] = {{"fires", ts.fires},
                         {"events", ts.events},
                         {"bytes", ts.bytes},
                         {"budget_hits", ts.budget_hits},
                         {"suppressed_cooldown", ts.suppressed_cooldown},
                         {"sampled_out", ts.sampled_out}};
  }
  j["triggers"] = trig;

  std::string last_error = log_sink.last_error();
  if (uploader) {
    UploaderStatus us = uploader->status();
    j["uploads"] = {{"paused", us.paused},
                    {"paused_by_host", us.paused_by_host},
                    {"paused_by_schedule", us.paused_by_schedule},
                    {"paused_by_network", us.paused_by_network},
                    {"busy", us.busy},
                    {"rate_bytes_per_s", us.rate_bytes_per_s},
                    {"objects_uploaded", us.objects_uploaded},
                    {"records_acked", us.records_acked},
                    {"records_parked", us.records_parked},
                    {"bytes_sent", us.bytes_sent},
                    {"retries", us.retries},
                    {"multipart_resumed", us.multipart_resumed},
                    {"pauses", metrics.sum("fleetpipe_uploader_pauses_total")},
                    {"paused_seconds", metrics.sum("fleetpipe_uploader_paused_seconds")},
                    {"destination_fault", us.destination_fault},
                    {"destination_fault_probes", us.destination_fault_probes},
                    {"last_error", us.last_error}};
    if (last_error.empty()) last_error = us.last_error;
  } else {
    j["uploads"] = {{"enabled", false}};
  }
  if (campaigns) {  // docs/campaigns.md "Heartbeat state"
    j["campaigns"] = json::parse(campaign_status_json(campaigns->status()), nullptr, false);
  }
  j["heartbeats"] = {{"sent", hb_sent}, {"failed", hb_failed}, {"skipped", hb_skipped}};
  j["last_error"] = last_error;
  // The full registry export: every counter of every component, by name and labels.
  j["metrics"] = json::parse(metrics.to_json(), nullptr, /*allow_exceptions=*/false);
  return j;
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
        try {
          std::string body = heartbeat_doc().dump();
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
