// Manifests: the JSONL index of delivered objects, one manifest object per batch.
//
// Every delivered object adds one line to its batch's manifest; the lines are persisted in the
// state table ("uploader/manifest/<key>", synced) before the records are acked, so a crash
// leaves the manifest to be written by the next run (pending_manifests_, written before any new
// batch). The manifest is named after the batch's smallest record id plus a random writer tag
// (manifest_key_for): a later batch starting with the same record (its object not acked before a
// crash) gets a key of its own and never replaces these lines. A manifest that fails to go out
// stays pending (and in the state table) and is tried again after a backoff.
#include <algorithm>
#include <cstdio>
#include <cstring>

#include <nlohmann/json.hpp>

#include "uploader/engine.hpp"
#include "fleetpipe/sigv4.hpp"
#include "fleetpipe/version.hpp"

namespace fleetpipe::uploader_internal {

using nlohmann::json;

std::string manifest_key_for(const Batch& b, const detail::BucketLayout& layout, std::uint64_t writer) {
  if (b.objects.empty()) return std::string();
  const auto& recs = b.lease.records();
  std::size_t first_index = b.objects.front().segs.front().index;
  for (const auto& p : b.objects)
    if (p.segs.front().id < recs[first_index].id) first_index = p.segs.front().index;
  const auto& first = recs[first_index];
  return layout.manifest_key(b.objects.front().device, first.meta.start_ns, first.id, writer);
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
  if (!cfg_.labels.empty()) line["labels"] = cfg_.labels;
  if (auto camps = object_campaigns(b, p); !camps.empty()) line["campaigns"] = std::move(camps);
  b.manifest_lines += line.dump() + "\n";
  // Manifest lines first (synced), then the ack: a crash in between leaves the lines, and the
  // next run acks their records (adopt_pending_manifests) instead of uploading them again.
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
  put_manifest(key, b.manifest_lines, [this, key, g = b.gen](bool ok) {
    if (ok) (void)buffer_.erase_state(kManifestPrefix + key);
    if (batch_ && batch_->gen == g) {
      // Written: nothing pending. Not written: drop_batch keeps the lines pending.
      if (ok) batch_->manifest_lines.clear();
      drop_batch(false);
    }
    if (!ok) manifest_backoff();
    poke();
  });
}

void Engine::write_pending_manifest() {
  auto [key, body] = pending_manifests_.front();
  waiting_ = true;
  put_manifest(key, body, [this, key = key, body = body](bool ok) {
    waiting_ = false;
    pending_manifests_.erase(pending_manifests_.begin());
    if (ok) {
      (void)buffer_.erase_state(kManifestPrefix + key);
    } else {
      pending_manifests_.emplace_back(key, body);  // the others get their turn first
      manifest_backoff();
    }
    poke();
  });
}

// A manifest not written waits at least the retry cap (longer while a destination fault holds).
void Engine::manifest_backoff() {
  auto at = port_.clock->monotonic() +
            std::chrono::nanoseconds(static_cast<std::int64_t>(cfg_.retry_max_delay_s * 1e9));
  backoff_until_ = std::max(backoff_until_, at);
}

// At start: manifests an earlier run saved but did not write. Their objects are on the server
// (a line is saved only after its object was stored), so records they list that are still in
// the Buffer (the ack did not reach the disk) are acked now rather than packed and uploaded
// again under a key that already holds other bytes.
void Engine::adopt_pending_manifests() {
  auto ms = buffer_.list_state(kManifestPrefix);
  if (!ms) return;
  std::vector<RecordId> delivered;
  for (auto& [k, v] : *ms) {
    pending_manifests_.emplace_back(k.substr(std::strlen(kManifestPrefix)), v);
    std::size_t pos = 0;
    while (pos < v.size()) {
      auto nl = v.find('\n', pos);
      if (nl == std::string::npos) nl = v.size();
      json line = json::parse(v.begin() + static_cast<std::ptrdiff_t>(pos), v.begin() + static_cast<std::ptrdiff_t>(nl),
                              nullptr, false);
      pos = nl + 1;
      if (!line.is_object() || !line.contains("records") || !line["records"].is_array()) continue;
      for (const auto& r : line["records"])
        if (r.contains("id") && r["id"].is_number_unsigned()) delivered.push_back(r["id"].get<RecordId>());
    }
  }
  if (delivered.empty()) return;
  auto before = buffer_.stats().records;
  if (auto a = buffer_.ack(delivered); !a) {
    log(LogLevel::error, "acking records of saved manifest lines failed: " + a.error().message);
    return;
  }
  auto now_held = buffer_.stats().records;
  if (before > now_held) {
    records_acked_->inc(before - now_held);
    log(LogLevel::info, std::to_string(before - now_held) + " records an earlier run stored but did not ack "
                        "(listed by its saved manifest lines) acked without a new upload");
  }
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
      clear_destination_fault();
    } else {
      if (is_destination_fault(o.failure)) note_destination_fault(o.failure);
      manifests_failed_->inc();
      set_last_error("manifest " + key + " not written: " + o.failure.message);
      log(LogLevel::error, "manifest " + key + " not written: " + o.failure.message);
    }
    done(o.ok);
  });
}

}  // namespace fleetpipe::uploader_internal
