// Multipart: CreateMultipartUpload, parts (several in flight, one per connection), ListParts
// after a restart, CompleteMultipartUpload, and the resume state in the Buffer's state table.
#include <algorithm>
#include <cstdlib>

#include <nlohmann/json.hpp>

#include "uploader/engine.hpp"

namespace fleetpipe::uploader_internal {

using nlohmann::json;

namespace {
constexpr std::uint64_t kMinPart = 5ull << 20;
}  // namespace

std::string mpu_to_json(const MultipartState& m, const std::string& key) {
  json parts = json::array();
  for (const auto& [n, e] : m.parts) parts.push_back({{"n", n}, {"etag", e}});
  json j = {{"key", key},        {"upload_id", m.upload_id}, {"size", m.size},
            {"part_size", m.part_size}, {"ids", m.ids}, {"created_unix", m.created_unix},
            {"parts", parts}};
  return j.dump();
}

std::optional<MultipartState> mpu_from_json(const std::string& text) {
  try {
    auto j = json::parse(text);
    MultipartState m;
    m.upload_id = j.at("upload_id").get<std::string>();
    m.size = j.at("size").get<std::uint64_t>();
    m.part_size = j.at("part_size").get<std::uint64_t>();
    m.ids = j.at("ids").get<std::vector<RecordId>>();
    m.created_unix = j.at("created_unix").get<std::int64_t>();
    for (const auto& p : j.at("parts")) m.parts[p.at("n").get<std::uint32_t>()] = p.at("etag").get<std::string>();
    if (m.part_size == 0) return std::nullopt;
    return m;
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

void Engine::start_multipart(ObjectPlan& p) {
  Batch& b = *batch_;
  auto saved = buffer_.get_state(kMpuPrefix + p.key);
  if (saved && *saved) {
    auto st = mpu_from_json(**saved);
    if (st && st->size == p.size && st->ids == p.ids() && st->part_size >= kMinPart) {
      mpu_ = *st;
      current_upload_id_ = mpu_.upload_id;  // the bucket scan keeps it
      return reconcile_parts(p, std::string());
    }
    if (st) {  // same key, different content: the old upload is useless
      S3Request r;
      r.method = "DELETE";
      r.key = p.key;
      r.query = {{"uploadId", st->upload_id}};
      send(std::move(r), b.gen, [this, pp = &p](S3Outcome) {
        (void)buffer_.erase_state(kMpuPrefix + pp->key);
        start_multipart(*pp);
      });
      return;
    }
    (void)buffer_.erase_state(kMpuPrefix + p.key);
  }
  S3Request r;
  r.method = "POST";
  r.key = p.key;
  r.query = {{"uploads", ""}};
  r.headers = object_headers(b, p);
  send(std::move(r), b.gen, [this, pp = &p](S3Outcome o) {
    if (!o.ok) return handle_object_failure(*pp, o.failure);
    auto id = detail::xml_text(o.response.body, "UploadId");
    if (!id || id->empty()) {
      detail::S3Failure f;
      f.cls = FailureClass::server_error;
      f.message = "CreateMultipartUpload reply has no UploadId";
      return handle_object_failure(*pp, f);
    }
    mpu_ = MultipartState{};
    mpu_.upload_id = *id;
    mpu_.size = pp->size;
    mpu_.part_size = cfg_.part_bytes;
    mpu_.ids = pp->ids();
    mpu_.created_unix = std::chrono::duration_cast<std::chrono::seconds>(port_.clock->wall().time_since_epoch()).count();
    current_upload_id_ = mpu_.upload_id;  // the bucket scan keeps it
    save_mpu(*pp);
    log(LogLevel::debug, "started multipart upload of " + pp->key);
    next_part(*pp);
  });
}

void Engine::save_mpu(const ObjectPlan& p) {
  auto r = buffer_.put_state(kMpuPrefix + p.key, mpu_to_json(mpu_, p.key));
  if (!r) log(LogLevel::warning, "cannot persist multipart progress of " + p.key + ": " + r.error().message);
}

// After a restart: ask the server which parts it has; keep those whose ETag equals our MD5.
void Engine::reconcile_parts(ObjectPlan& p, std::string marker) {
  S3Request r;
  r.method = "GET";
  r.key = p.key;
  r.query = {{"uploadId", mpu_.upload_id}};
  if (!marker.empty()) r.query.emplace_back("part-number-marker", marker);
  send(std::move(r), batch_->gen, [this, pp = &p, first = marker.empty()](S3Outcome o) {
    ObjectPlan& p = *pp;
    if (!o.ok) {
      if (o.failure.cls == FailureClass::upload_gone || o.failure.status == 404) {
        log(LogLevel::warning, "multipart upload of " + p.key + " is gone on the server; starting over");
        (void)buffer_.erase_state(kMpuPrefix + p.key);
        return start_multipart(p);
      }
      return handle_object_failure(p, o.failure);
    }
    if (first) {
      mpu_.parts.clear();
      resumed_->inc();
      with_status([](UploaderStatus& s) { s.multipart_resumed++; });
    }
    for (auto part : detail::xml_blocks(o.response.body, "Part")) {
      auto n = std::strtoul(detail::xml_text(part, "PartNumber").value_or("0").c_str(), nullptr, 10);
      std::string etag = strip_quotes(detail::xml_text(part, "ETag").value_or(""));
      std::uint64_t size = std::strtoull(detail::xml_text(part, "Size").value_or("0").c_str(), nullptr, 10);
      if (n == 0 || n > mpu_.part_count()) continue;
      std::uint64_t off = (n - 1) * mpu_.part_size;
      std::uint64_t want = std::min<std::uint64_t>(mpu_.part_size, p.size - off);
      if (size != want) continue;
      auto d = digest(*batch_, p, off, want);
      if (d && detail::to_hex(d->md5_raw) == etag) mpu_.parts[static_cast<std::uint32_t>(n)] = etag;
    }
    if (detail::xml_text(o.response.body, "IsTruncated").value_or("false") == "true") {
      return reconcile_parts(p, detail::xml_text(o.response.body, "NextPartNumberMarker").value_or(""));
    }
    save_mpu(p);
    log(LogLevel::info, "resumed multipart upload " + mpu_.upload_id + " of " + p.key + ": " +
                            std::to_string(mpu_.parts.size()) + " of " +
                            std::to_string(mpu_.part_count()) + " parts already stored");
    next_part(p);
  });
}

// Keeps up to max_concurrent_requests parts in flight, one per client slot; completes the
// upload when every part is stored.
void Engine::next_part(ObjectPlan& p) {
  const std::uint64_t gen = batch_->gen;
  for (std::size_t ci = 0; ci < clients_.size(); ++ci) {
    if (slot_part_[ci] != 0) continue;
    std::uint32_t n = 1;
    while (n <= mpu_.part_count() && (mpu_.parts.count(n) || inflight_parts_.count(n))) ++n;
    if (n > mpu_.part_count()) break;
    dispatch_part(p, n, ci);
    if (!batch_ || batch_->gen != gen) return;  // the object failed meanwhile
  }
  if (inflight_parts_.empty() && mpu_.parts.size() == mpu_.part_count()) return complete_multipart(p);
  // Hash the next parts ahead, several at once, while half a batch of digests is still ready.
  if (ahead_on(p) || (ready_on(p) && ready_.size() > kAheadLanes / 2)) return;
  const bool lanes = lanes_unusable_gen_ != batch_->gen && detail::Md5Lanes::available() != detail::Md5Lanes::Simd::none;
  const std::size_t want = lanes ? kAheadLanes : 1;
  std::vector<std::pair<std::uint64_t, std::uint64_t>> ranges;
  for (std::uint32_t n = 1; n <= mpu_.part_count() && ranges.size() < want; ++n) {
    std::uint64_t off = (n - 1) * mpu_.part_size;
    if (mpu_.parts.count(n) || inflight_parts_.count(n) || range_hashed_or_hashing(p, off)) continue;
    ranges.emplace_back(off, std::min<std::uint64_t>(mpu_.part_size, p.size - off));
  }
  start_digest_ahead(p, ranges);
}

void Engine::dispatch_part(ObjectPlan& p, std::uint32_t n, std::size_t ci) {
  std::uint64_t off = (n - 1) * mpu_.part_size;
  std::uint64_t len = std::min<std::uint64_t>(mpu_.part_size, p.size - off);
  auto d = part_digest(p, off, len);
  if (!d) return object_unreadable(p, d.error());
  S3Request r;
  r.method = "PUT";
  r.key = p.key;
  r.query = {{"partNumber", std::to_string(n)}, {"uploadId", mpu_.upload_id}};
  r.headers = {{"content-md5", detail::base64_encode(d->md5_raw)}};
  r.body_size = len;
  r.payload_sha256 = d->sha256_hex;
  Batch* bp = batch_.get();
  ObjectPlan* pp = &p;
  r.reader = [this, bp, pp, off](std::uint64_t o, char* out, std::size_t k) {
    return read_object(*bp, *pp, off + o, out, k);
  };
  std::string want = detail::to_hex(d->md5_raw);
  slot_part_[ci] = n;
  inflight_parts_.insert(n);
  send(std::move(r), batch_->gen, [this, pp, n, want, ci](S3Outcome o) {
    ObjectPlan& p = *pp;
    slot_part_[ci] = 0;
    inflight_parts_.erase(n);
    if (!o.ok) {
      if (o.failure.cls == FailureClass::upload_gone) {
        new_generation();
        (void)buffer_.erase_state(kMpuPrefix + p.key);
        return start_multipart(p);
      }
      return handle_object_failure(p, o.failure);
    }
    std::string etag = strip_quotes(o.response.header("ETag"));
    if (etag != want) {
      etag_mismatch_->inc();
      detail::S3Failure f;
      f.cls = FailureClass::bad_digest;
      f.message = "part " + std::to_string(n) + " ETag " + etag + " does not match its MD5 " + want;
      return handle_object_failure(p, f);
    }
    // Not persisted per part: after a restart ListParts is the authority (reconcile_parts), so
    // a synced write here would only cost an fsync per part on the event loop.
    mpu_.parts[n] = etag;
    log(LogLevel::debug, "stored part " + std::to_string(n) + "/" + std::to_string(mpu_.part_count()) +
                             " of multipart upload " + mpu_.upload_id + " (" + p.key + ")");
    next_part(p);
  }, 1, ci);
}

void Engine::complete_multipart(ObjectPlan& p) {
  std::string body = "<CompleteMultipartUpload>";
  std::string concat;
  for (const auto& [n, e] : mpu_.parts) {
    body += "<Part><PartNumber>" + std::to_string(n) + "</PartNumber><ETag>\"" + e + "\"</ETag></Part>";
    for (std::size_t i = 0; i + 1 < e.size(); i += 2) {
      concat.push_back(static_cast<char>(std::stoi(e.substr(i, 2), nullptr, 16)));
    }
  }
  body += "</CompleteMultipartUpload>";
  std::string want = detail::to_hex(detail::md5_raw(concat)) + "-" + std::to_string(mpu_.parts.size());
  S3Request r;
  r.method = "POST";
  r.key = p.key;
  r.query = {{"uploadId", mpu_.upload_id}};
  r.headers = {{"content-type", "application/xml"}};
  r.body_inline = body;
  send(std::move(r), batch_->gen, [this, pp = &p, want](S3Outcome o) {
    ObjectPlan& p = *pp;
    if (!o.ok) {
      if (o.failure.cls == FailureClass::upload_gone) {
        (void)buffer_.erase_state(kMpuPrefix + p.key);
        return start_multipart(p);
      }
      return handle_object_failure(p, o.failure);
    }
    std::string etag = strip_quotes(detail::xml_text(o.response.body, "ETag").value_or(""));
    if (!etag.empty() && etag != want) {
      etag_mismatch_->inc();
      log(LogLevel::warning, "multipart ETag of " + p.key + " is " + etag + ", expected " + want);
    }
    std::uint32_t parts = static_cast<std::uint32_t>(mpu_.parts.size());
    log(LogLevel::info, "completed multipart upload " + mpu_.upload_id + " of " + p.key);
    (void)buffer_.erase_state(kMpuPrefix + p.key);
    current_upload_id_.clear();
    object_done(p, etag.empty() ? want : etag, true, parts);
  });
}

}  // namespace fleetpipe::uploader_internal
