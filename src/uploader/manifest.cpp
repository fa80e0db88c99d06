// Manifests: the JSONL index of delivered objects, one manifest object per batch.
//
// Every delivered object adds one line to its batch's manifest; the lines are persisted in the
// state table ("uploader/manifest/<key>", synced) before the records are acked, so a crash
// leaves the manifest to be written by the next run (pending_manifests_, written before any new
// batch). The manifest is named after the batch's smallest record id (manifest_key_for).
#include <cstdio>

#include <nlohmann/json.hpp>

#include "common/utc_time.hpp"
#include "uploader/engine.hpp"
#include "fleetpipe/sigv4.hpp"
#include "fleetpipe/version.hpp"

namespace fleetpipe::uploader_internal {

using detail::utc_compact_ms;
using detail::utc_format;
using nlohmann::json;

std::string manifest_key_for(const Batch& b, const UploaderConfig& cfg) {
  if (b.objects.empty()) return std::string();
  const auto& recs = b.lease.records();
  std::size_t first_index = b.objects.front().segs.front().index;
  for (const auto& p : b.objects)
    if (p.segs.front().id < recs[first_index].id) first_index = p.segs.front().index;
  const auto& first = recs[first_index];
  char seq[32];
  std::snprintf(seq, sizeof seq, "%016llu", static_cast<unsigned long long>(first.id));
  return (cfg.prefix.empty() ? "" : cfg.prefix + "/") + "_manifests/device=" +
         key_segment(b.objects.front().device) + "/date=" + utc_format(first.meta.start_ns, "%Y-%m-%d") +
         "/" + utc_compact_ms(first.meta.start_ns) + "-" + seq + ".jsonl";
}

void Engine::record_manifest_line(Batch& b, const ObjectPlan& p, const std::string& etag, bool multipart,
                                  std::uint32_t parts) {
  const auto& recs = b.lease.records();
  json line = {{"key", p.key},
               {"bucket", cfg_.bucket},
               {"size", p.size},
               {"etag", etag},
               {"content_type", p.content_type},
               {"stream", p.stream},
               {"device", p.device},
               {"record_count", p.segs.size()},
               {"start_ns", p.start_ns},
               {"end_ns", p.end_ns},
               {"multipart", multipart},
               {"parts", parts},
               {"sdk_version", kVersion}};
  json rs = json::array();
  for (const auto& s : p.segs) {
    const auto& m = recs[s.index].meta;
    rs.push_back({{"id", s.id},
                  {"event_id", m.event_id},
                  {"offset", s.offset},
                  {"size", s.size},
                  {"start_ns", m.start_ns},
                  {"end_ns", m.end_ns},
                  {"priority", m.priority},
                  {"trigger_ids", m.trigger_ids},
                  {"content_type", m.content_type},
                  {"metadata", m.metadata}});
  }
  line["records"] = std::move(rs);
  b.manifest_lines += line.dump() + "\n";
  // Manifest lines first (synced), then the ack: a crash in between re-uploads the object
  // under the same key; a crash after the ack still leaves the manifest to be written.
  if (cfg_.write_manifest) (void)buffer_.put_state(kManifestPrefix + b.manifest_key, b.manifest_lines);
  // Manifest lines first (synced), then the ack: a crash in between re-uploads the object
  // under the same key; a crash after the ack still leaves the manifest to be written.
  if (cfg_.write_manifest) (void)buffer_.put_state(kManifestPrefix + b.manifest_key, b.manifest_lines);
}

void Engine::finish_batch() {
  Batch& b = *batch_;
  if (!cfg_.write_manifest || b.manifest_lines.empty()) {
    if (cfg_.write_manifest) (void)buffer_.erase_state(kManifestPrefix + b.manifest_key);
    drop_batch(false);
    poke();
    return;
  }
  auto key = b.manifest_key;
  put_manifest(key, b.manifest_lines, [this, key, g = b.gen](bool) {
    (void)buffer_.erase_state(kManifestPrefix + key);
    if (batch_ && batch_->gen == g) {
      batch_->manifest_lines.clear();  // written (or counted as failed): not pending
      drop_batch(false);
    }
    poke();
  });
}

void Engine::write_pending_manifest() {
  auto [key, body] = pending_manifests_.front();
  waiting_ = true;
  put_manifest(key, body, [this, key = key](bool ok) {
    waiting_ = false;
    pending_manifests_.erase(pending_manifests_.begin());
    (void)buffer_.erase_state(kManifestPrefix + key);
    (void)ok;
    poke();
  });
}

void Engine::put_manifest(const std::string& key, const std::string& body, std::function<void(bool)> done) {
  S3Request r;
  r.method = "PUT";
  r.key = key;
  r.body_inline = body;
  r.headers = {{"content-type", "application/x-ndjson"},
               {"content-md5", detail::base64_encode(detail::md5_raw(body))},
               {"x-amz-meta-fleetpipe-sdk-version", kVersion}};
  r.payload_sha256 = cfg_.unsigned_payload ? "UNSIGNED-PAYLOAD" : sha256_hex(body);
  send(std::move(r), batch_ ? batch_->gen : 0, [this, key, done](S3Outcome o) {
    if (o.ok) {
      manifests_ok_->inc();
    } else {
      manifests_failed_->inc();
      set_last_error("manifest " + key + " not written: " + o.failure.message);
      log(LogLevel::error, "manifest " + key + " not written: " + o.failure.message);
    }
    done(o.ok);
  });
}

}  // namespace fleetpipe::uploader_internal
