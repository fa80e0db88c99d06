// PutObject: an object's bytes read back from the lease, its digests and metadata headers, and the
// single-request upload.
#include <algorithm>
#include <cstring>
#include <set>

#include "uploader/engine.hpp"
#include "fleetpipe/version.hpp"

namespace fleetpipe::uploader_internal {

std::string header_safe(std::string_view s, std::size_t max) {
  std::string out;
  for (unsigned char c : s) {
    if (out.size() >= max) {
      out += "...";
      break;
    }
    out.push_back(c >= 0x20 && c < 0x7f ? static_cast<char>(c) : '_');
  }
  return out;
}

std::string strip_quotes(std::string s) {
  if (s.size() >= 2 && s.front() == '"' && s.back() == '"') s = s.substr(1, s.size() - 2);
  return s;
}

// Reads object bytes [off, off+n) from the lease / buffer.
Result<std::size_t> Engine::read_object(const Batch& b, const ObjectPlan& p, std::uint64_t off, char* out,
                                std::size_t n) {
  std::size_t done = 0;
  auto r = visit_object(b, p, off, n, [&](const char* d, std::size_t k) {
    std::memcpy(out + done, d, k);
    done += k;
  });
  if (!r) return std::move(r).error();
  return done;
}

// First pass over LMDB: MD5 (always) and SHA-256 (when the payload is signed).
Result<Digests> Engine::digest(const Batch& b, const ObjectPlan& p, std::uint64_t off, std::uint64_t len,
                               bool with_md5) {
  std::optional<detail::Digest> md5, sha;
  if (with_md5) md5.emplace(detail::Digest::Kind::md5);
  if (!cfg_.unsigned_payload) sha.emplace(detail::Digest::Kind::sha256);
  auto r = visit_object(b, p, off, len, [&](const char* d, std::size_t n) {
    if (md5) md5->update(d, n);
    if (sha) sha->update(d, n);
  });
  if (!r) return std::move(r).error();
  Digests d;
  if (md5) d.md5_raw = md5->finish();
  d.sha256_hex = sha ? detail::to_hex(sha->finish()) : "UNSIGNED-PAYLOAD";
  return d;
}

// One contiguous view of object bytes at `off` (at most `max`, never empty): straight from the
// lease's mapped pages where it can (a chunked record one stored chunk at a time). Bytes stored
// compressed in chunks are copied into scratch_ (io_chunk_bytes at most; the view lasts until
// the next call) when `may_copy`, else `unsupported`: the lanes hold several views at once.
Result<std::string_view> Engine::object_piece(const Batch& b, const ObjectPlan& p, std::uint64_t off, std::uint64_t max,
                                      bool may_copy) {
  auto it = std::upper_bound(p.segs.begin(), p.segs.end(), off,
                             [](std::uint64_t o, const Segment& s) { return o < s.offset; });
  if (it == p.segs.begin()) return Error(errc::decode_error, "object " + p.key + ": offset before its start");
  --it;
  while (it != p.segs.end() && off >= it->offset + it->size) ++it;  // skip empty records
  if (it == p.segs.end()) return Error(errc::decode_error, "object " + p.key + " is shorter than its plan");
  std::uint64_t local = off - it->offset;
  auto n = static_cast<std::size_t>(std::min<std::uint64_t>(max, it->size - local));
  auto piece = b.lease.payload_piece(it->index, local, n);
  if (!piece && piece.error().is(errc::unsupported)) {
    if (!it->chunked) {
      piece = b.lease.payload(it->index);  // compressed inline: unpacked once by the lease
      if (piece) piece = piece->substr(static_cast<std::size_t>(local), n);
    } else if (may_copy) {
      if (!scratch_) scratch_.reset(new char[cfg_.io_chunk_bytes]);
      n = std::min<std::size_t>(n, cfg_.io_chunk_bytes);
      auto r = buffer_.read_payload(it->id, local, scratch_.get(), n);
      if (!r) return std::move(r).error();
      if (*r != n) return Error(errc::decode_error, "record " + std::to_string(it->id) + " is shorter than its size");
      return std::string_view(scratch_.get(), n);
    }
  }
  if (piece && piece->empty()) return Error(errc::decode_error, "object " + p.key + " is shorter than its plan");
  return piece;
}

// "id@version" of every campaign that captured a record of the object, comma-separated, sorted.
std::string Engine::object_campaigns(const Batch& b, const ObjectPlan& p) {
  const auto& recs = b.lease.records();
  std::set<std::string> tags;
  for (const auto& s : p.segs) {
    const auto& md = recs[s.index].meta.metadata;
    auto id = md.find("campaign_id");
    if (id == md.end()) continue;
    auto v = md.find("campaign_version");
    tags.insert(id->second + "@" + (v == md.end() ? std::string("0") : v->second));
  }
  std::string out;
  for (const auto& t : tags) out += (out.empty() ? "" : ",") + t;
  return out;
}

HeaderList Engine::object_headers(const Batch& b, const ObjectPlan& p) {
  const auto& recs = b.lease.records();
  std::set<std::string> triggers;
  std::string events;
  for (const auto& s : p.segs) {
    for (const auto& t : recs[s.index].meta.trigger_ids) triggers.insert(t);
    if (!recs[s.index].meta.event_id.empty()) {
      if (!events.empty()) events += ",";
      events += recs[s.index].meta.event_id;
    }
  }
  std::string trig;
  for (const auto& t : triggers) trig += (trig.empty() ? "" : ",") + t;
  std::string camps = object_campaigns(b, p);
  HeaderList h = {
      {"content-type", p.content_type},
      {"x-amz-meta-fleetpipe-sdk-version", kVersion},
      {"x-amz-meta-fleetpipe-stream", header_safe(p.stream, 128)},
      {"x-amz-meta-fleetpipe-device", header_safe(p.device, 128)},
      {"x-amz-meta-fleetpipe-record-count", std::to_string(p.segs.size())},
      {"x-amz-meta-fleetpipe-start-ns", std::to_string(p.start_ns)},
      {"x-amz-meta-fleetpipe-end-ns", std::to_string(p.end_ns)},
      {"x-amz-meta-fleetpipe-first-record-id", std::to_string(p.segs.front().id)},
      {"x-amz-meta-fleetpipe-last-record-id", std::to_string(p.segs.back().id)},
      {"x-amz-meta-fleetpipe-trigger-ids", header_safe(trig, 512)},
  };
  if (!events.empty()) h.emplace_back("x-amz-meta-fleetpipe-event-ids", header_safe(events, 512));
  if (!camps.empty()) h.emplace_back("x-amz-meta-fleetpipe-campaigns", header_safe(camps, 512));
  // Label names and values are [A-Za-z0-9._-] (validate_labels): header-safe as they are. S3
  // caps user metadata at 2 KiB, so labels past 1 KiB are left to the manifest line.
  std::size_t label_bytes = 0;
  for (const auto& [k, v] : cfg_.labels) {
    label_bytes += k.size() + v.size() + 20;
    if (label_bytes > 1024) break;
    h.emplace_back("x-amz-meta-fleetpipe-label-" + k, v);
  }
  return h;
}

void Engine::put_object(ObjectPlan& p, bool hashed_ahead) {
  Batch& b = *batch_;
  const bool hash = cfg_.content_md5 || !cfg_.unsigned_payload;  // else nothing reads the body twice
  if (hash && !hashed_ahead && p.size > cfg_.io_chunk_bytes) {
    // Hash in kDigestSliceBytes slices between handlers, as for multipart parts, so one large
    // object cannot hold the host's poll() for a whole MD5 pass (tens of ms for 8 MiB).
    start_digest_ahead(p, {{0, p.size}});
    const std::uint64_t gen = b.gen;
    ObjectPlan* pp = &p;
    ahead_.on_done = [this, gen, pp] {
      if (batch_ && batch_->gen == gen) put_object(*pp, true);
    };
    return;
  }
  Result<Digests> d = Digests{{}, "UNSIGNED-PAYLOAD"};
  if (hash) d = hashed_ahead ? part_digest(p, 0, p.size) : digest(b, p, 0, p.size, cfg_.content_md5);
  if (!d) return object_unreadable(p, d.error());
  S3Request r;
  r.method = "PUT";
  r.key = p.key;
  r.headers = object_headers(b, p);
  if (cfg_.content_md5) r.headers.emplace_back("content-md5", detail::base64_encode(d->md5_raw));
  r.body_size = p.size;
  r.payload_sha256 = d->sha256_hex;
  Batch* bp = &b;
  ObjectPlan* pp = &p;
  r.reader = [this, bp, pp](std::uint64_t off, char* out, std::size_t n) { return read_object(*bp, *pp, off, out, n); };
  std::string want = cfg_.content_md5 ? detail::to_hex(d->md5_raw) : std::string();
  send(std::move(r), b.gen, [this, pp, want](S3Outcome o) {
    if (!o.ok) return handle_object_failure(*pp, o.failure);
    std::string etag = strip_quotes(o.response.header("ETag"));
    if (!want.empty() && !etag.empty() && etag.find('-') == std::string::npos && etag != want) {
      etag_mismatch_->inc();
      detail::S3Failure f;
      f.cls = FailureClass::bad_digest;
      f.message = "ETag " + etag + " does not match the MD5 sent (" + want + ")";
      return handle_object_failure(*pp, f);
    }
    object_done(*pp, etag, false, 0);
  });
}

}  // namespace fleetpipe::uploader_internal
