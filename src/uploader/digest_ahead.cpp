// Digest-ahead: MD5 (in SIMD lanes) and SHA-256 of the next parts, one slice per handler, while
// other parts are on the wire (see Engine::DigestAhead).
#include <algorithm>

#include <boost/asio/post.hpp>

#include "uploader/engine.hpp"

namespace fleetpipe::uploader_internal {

void Engine::start_digest_ahead(const ObjectPlan& p, const std::vector<std::pair<std::uint64_t, std::uint64_t>>& ranges) {
  if (!batch_ || ranges.empty()) return;
  ahead_ = DigestAhead{};
  ahead_.gen = batch_->gen;
  ahead_.plan = &p;
  ahead_.lanes = std::min(ranges.size(), kAheadLanes);
  for (std::size_t i = 0; i < ahead_.lanes; ++i) {
    ahead_.off[i] = ranges[i].first;
    ahead_.len[i] = ranges[i].second;
    ahead_.longest = std::max(ahead_.longest, ranges[i].second);
    if (!cfg_.unsigned_payload) ahead_.sha[i].emplace(detail::Digest::Kind::sha256);
  }
  if (ahead_.lanes == 1) {
    ahead_.md5.emplace(detail::Digest::Kind::md5);
  } else {
    if (!md5_lanes_) md5_lanes_ = std::make_unique<detail::Md5Lanes>();
    md5_lanes_->clear();
  }
  std::uint64_t token = ++ahead_token_;
  net::post(ioc_, weak([this, token]() { digest_ahead_step(token); }));
}

// Hashes up to `max` more bytes of each range ahead; when all are done their digests move to
// ready_. False when it cannot go on (dropped; the part's own pass reports the error).
bool Engine::digest_ahead_advance(std::uint64_t max) {
  const std::uint64_t end = std::min(ahead_.longest, ahead_.pos + max);
  Result<void> r;
  if (ahead_.lanes == 1) {
    r = visit_object(*batch_, *ahead_.plan, ahead_.off[0] + ahead_.pos, end - ahead_.pos,
                     [&](const char* d, std::size_t k) {
                       ahead_.md5->update(d, k);
                       if (ahead_.sha[0]) ahead_.sha[0]->update(d, k);
                     });
    if (r) ahead_.pos = end;
  }
  while (r && ahead_.lanes > 1 && ahead_.pos < end) {
    // Each lane's next contiguous piece; all lanes advance by the shortest.
    std::array<detail::Md5Lanes::Span, kAheadLanes> spans{};
    std::uint64_t step = end - ahead_.pos;
    for (std::size_t i = 0; i < ahead_.lanes && r; ++i) {
      if (ahead_.pos >= ahead_.len[i]) continue;
      std::uint64_t want = std::min(end, ahead_.len[i]) - ahead_.pos;
      auto piece = object_piece(*batch_, *ahead_.plan, ahead_.off[i] + ahead_.pos, want, /*may_copy=*/false);
      if (!piece) {
        r = std::move(piece).error();
        break;
      }
      spans[i] = {piece->data(), piece->size()};
      step = std::min<std::uint64_t>(step, piece->size());
    }
    if (!r) break;
    for (std::size_t i = 0; i < ahead_.lanes; ++i) {
      if (!spans[i].data) continue;
      spans[i].size = static_cast<std::size_t>(step);
      if (ahead_.sha[i]) ahead_.sha[i]->update(spans[i].data, spans[i].size);
    }
    md5_lanes_->update(spans);
    ahead_.pos += step;
  }
  if (!r) {
    if (r.error().is(errc::unsupported)) lanes_unusable_gen_ = ahead_.gen;
    ahead_ = DigestAhead{};
    return false;
  }
  if (ahead_.pos < ahead_.longest) return true;
  if (!ready_on(*ahead_.plan)) {
    ready_.clear();
    ready_gen_ = ahead_.gen;
    ready_plan_ = ahead_.plan;
  }
  for (std::size_t i = 0; i < ahead_.lanes; ++i) {
    Digests d;
    d.md5_raw = ahead_.lanes == 1 ? ahead_.md5->finish() : md5_lanes_->finish(i);
    d.sha256_hex = ahead_.sha[i] ? detail::to_hex(ahead_.sha[i]->finish()) : "UNSIGNED-PAYLOAD";
    ready_[ahead_.off[i]] = std::move(d);
  }
  auto waiting = std::move(ahead_.on_done);
  ahead_ = DigestAhead{};
  ahead_.on_done = std::move(waiting);
  return true;
}

void Engine::digest_ahead_step(std::uint64_t token) {
  if (token != ahead_token_ || !ahead_.plan || !batch_ || batch_->gen != ahead_.gen) return;
  std::function<void()> waiting = ahead_.on_done;  // survives the reset a read error does
  if (!digest_ahead_advance(kDigestSliceBytes)) {
    if (waiting) waiting();  // the waiter hashes again and reports the error
    return;
  }
  if (ahead_.plan) {
    net::post(ioc_, weak([this, token]() { digest_ahead_step(token); }));
    return;
  }
  if (ahead_.on_done) {
    auto done = std::move(ahead_.on_done);
    ahead_.on_done = nullptr;
    done();
  }
}

// The range's digests: ready from the digest-ahead, or finished now when the digest-ahead is
// on it, else a full pass.
Result<Digests> Engine::part_digest(const ObjectPlan& p, std::uint64_t off, std::uint64_t len) {
  if (ahead_on(p)) {
    bool covers = false;
    for (std::size_t i = 0; i < ahead_.lanes; ++i) covers |= ahead_.off[i] == off && ahead_.len[i] == len;
    if (covers) {
      ++ahead_token_;  // the posted step is stale now
      while (ahead_.plan && digest_ahead_advance(ahead_.longest)) {
      }
    }
  }
  if (ready_on(p)) {
    auto it = ready_.find(off);
    if (it != ready_.end()) {
      Digests d = std::move(it->second);
      ready_.erase(it);
      return d;
    }
  }
  return digest(*batch_, p, off, len);
}

bool Engine::range_hashed_or_hashing(const ObjectPlan& p, std::uint64_t off) const {
  if (ready_on(p) && ready_.count(off)) return true;
  if (ahead_on(p))
    for (std::size_t i = 0; i < ahead_.lanes; ++i)
      if (ahead_.off[i] == off) return true;
  return false;
}

}  // namespace fleetpipe::uploader_internal
