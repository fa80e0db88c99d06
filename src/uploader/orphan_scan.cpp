// Orphan scan: abandoned multipart uploads — from our own resume state at startup, and from a
// scan of the bucket for uploads nobody has state for.
//
// Resume state covers only uploads whose id we persisted. A crash between the
// CreateMultipartUpload reply and put_state, a quarantined or recreated DB, or a device whose
// storage was wiped leaves uploads in the bucket that no state names; they hold storage until
// aborted. Every uploader sharing the prefix applies the same rule to the uploads it starts (it
// completes or aborts them within resume.abandon_after), so any upload under "<prefix>/" older
// than that is abandoned by definition, whoever started it: ListMultipartUploads (paginated),
// AbortMultipartUpload for each one initiated more than abandon_after ago by the (corrected)
// wall clock, except the upload this uploader is working on. One request at a time, between
// batches, with the usual retries; a failed list or abort is logged, counted, and tried again at
// the next scan.
#include <algorithm>
#include <cstring>

#include <boost/asio/post.hpp>

#include "common/utc_time.hpp"
#include "uploader/engine.hpp"

namespace fleetpipe::uploader_internal {

// At start: pending manifests and abandoned multipart uploads from an earlier run.
void Engine::startup() {
  startup_pending_ = false;
  adopt_pending_manifests();
  auto mp = buffer_.list_state(kMpuPrefix);
  if (mp) {
    auto now = std::chrono::duration_cast<std::chrono::seconds>(port_.clock->wall().time_since_epoch()).count();
    for (auto& [k, v] : *mp) {
      auto st = mpu_from_json(v);
      std::string key = k.substr(std::strlen(kMpuPrefix));
      if (!st) {
        log(LogLevel::warning, "dropping unreadable multipart resume state for " + key);
        (void)buffer_.erase_state(k);
        continue;
      }
      if (static_cast<double>(now - st->created_unix) > cfg_.abandon_multipart_after_s) {
        abandoned_.emplace_back(key, st->upload_id);
      }
    }
  }
  poke();
}

void Engine::abort_next_abandoned() {
  auto [key, upload_id] = abandoned_.front();
  S3Request r;
  r.method = "DELETE";
  r.key = key;
  r.query = {{"uploadId", upload_id}};
  waiting_ = true;
  send(std::move(r), 0, [this, key = key](S3Outcome o) {
    waiting_ = false;
    abandoned_.erase(abandoned_.begin());
    if (o.ok || o.failure.cls == FailureClass::upload_gone || o.failure.status == 404) {
      aborted_own_->inc();
      log(LogLevel::warning, "aborted abandoned multipart upload of " + key + " (reason own_state: resume "
                             "state older than resume.abandon_after)");
      (void)buffer_.erase_state(kMpuPrefix + key);
    } else {
      log(LogLevel::warning, "could not abort abandoned multipart upload of " + key + ": " + o.failure.message +
                                 " (the bucket scan retries it)");
    }
    poke();
  });
}

std::string Engine::scan_prefix() const { return layout_.uploads_scan_prefix(); }

// An empty prefix would claim the whole bucket: no scan then (uploads_scan_prefix is "").
bool Engine::scan_due() const { return !scan_prefix().empty() && port_.clock->monotonic() >= next_scan_; }

void Engine::start_scan() {
  scan_active_ = true;
  scan_key_marker_.clear();
  scan_upload_id_marker_.clear();
  scan_todo_.clear();
  scan_next_ = 0;
  scan_aborted_ = 0;
  scan_pages_ = 0;
  log(LogLevel::debug, "scanning " + scan_prefix() + " for multipart uploads older than " +
                           std::to_string(cfg_.abandon_multipart_after_s) + " s");
  list_uploads_page();
}

void Engine::list_uploads_page() {
  S3Request r;
  r.method = "GET";
  r.key = "";
  r.query = {{"uploads", ""}, {"prefix", scan_prefix()}};
  if (!scan_key_marker_.empty()) {
    r.query.emplace_back("key-marker", scan_key_marker_);
    r.query.emplace_back("upload-id-marker", scan_upload_id_marker_);
  }
  waiting_ = true;
  send(std::move(r), 0, [this](S3Outcome o) {
    waiting_ = false;
    if (!scan_active_) return;
    if (!o.ok) return finish_scan(false, "listing multipart uploads failed: " + o.failure.message);
    ++scan_pages_;
    const std::string& body = o.response.body;
    const std::string prefix = scan_prefix();
    const double now = std::chrono::duration<double>(corrected_wall().time_since_epoch()).count();
    scan_todo_.clear();
    scan_next_ = 0;
    for (auto block : detail::xml_blocks(body, "Upload")) {
      std::string key = detail::xml_text(block, "Key").value_or("");
      std::string id = detail::xml_text(block, "UploadId").value_or("");
      std::string initiated = detail::xml_text(block, "Initiated").value_or("");
      if (key.empty() || id.empty() || key.compare(0, prefix.size(), prefix) != 0) continue;
      auto t = detail::parse_iso8601(initiated);
      if (!t) {
        log(LogLevel::warning, "multipart upload " + id + " of " + key + " has an unreadable Initiated time \"" +
                                   header_safe(initiated, 64) + "\"; left alone");
        continue;
      }
      double age = now - *t;
      if (age > cfg_.abandon_multipart_after_s) scan_todo_.push_back(ScanCandidate{key, id, age});
    }
    bool truncated = detail::xml_text(body, "IsTruncated").value_or("false") == "true";
    if (truncated) {
      std::string nk = detail::xml_text(body, "NextKeyMarker").value_or("");
      std::string nu = detail::xml_text(body, "NextUploadIdMarker").value_or("");
      if (nk.empty() || (nk == scan_key_marker_ && nu == scan_upload_id_marker_)) {
        log(LogLevel::warning, "ListMultipartUploads is truncated but gives no new marker; the scan stops at "
                               "page " + std::to_string(scan_pages_));
        truncated = false;
      } else {
        scan_key_marker_ = nk;
        scan_upload_id_marker_ = nu;
      }
    }
    scan_truncated_ = truncated;
    abort_next_orphan();
  });
}

void Engine::abort_next_orphan() {
  while (scan_next_ < scan_todo_.size() && scan_todo_[scan_next_].upload_id == current_upload_id_) {
    const auto& c = scan_todo_[scan_next_];
    log(LogLevel::debug, "bucket scan: keeping multipart upload " + c.upload_id + " of " + c.key +
                             " (in progress here, initiated " + std::to_string(static_cast<long long>(c.age_s)) +
                             " s ago)");
    ++scan_next_;
  }
  if (scan_next_ >= scan_todo_.size()) {
    if (scan_truncated_) return list_uploads_page();
    return finish_scan(true, "");
  }
  const ScanCandidate c = scan_todo_[scan_next_];
  S3Request r;
  r.method = "DELETE";
  r.key = c.key;
  r.query = {{"uploadId", c.upload_id}};
  waiting_ = true;
  send(std::move(r), 0, [this, c](S3Outcome o) {
    waiting_ = false;
    if (!scan_active_) return;
    ++scan_next_;
    bool gone = !o.ok && (o.failure.cls == FailureClass::upload_gone || o.failure.status == 404);
    if (o.ok || gone) {
      bool own = erase_own_state(c.key, c.upload_id);
      if (o.ok) {
        ++scan_aborted_;
        (own ? aborted_own_ : aborted_orphan_)->inc();
        log(LogLevel::warning, "aborted abandoned multipart upload " + c.upload_id + " of " + c.key +
                                   " (initiated " + std::to_string(static_cast<long long>(c.age_s)) +
                                   " s ago, resume.abandon_after is " +
                                   std::to_string(static_cast<long long>(cfg_.abandon_multipart_after_s)) +
                                   " s; reason " + (own ? "own_state" : "orphan") + ")");
      } else {
        log(LogLevel::info, "multipart upload " + c.upload_id + " of " + c.key + " is already gone");
      }
    } else {
      log(LogLevel::warning, "could not abort abandoned multipart upload " + c.upload_id + " of " + c.key + ": " +
                                 o.failure.message + " (tried again at the next scan)");
      // A refusal for this one upload (403, other 4xx) does not stop the others; a network or
      // server failure ends the scan (the next one retries).
      if (o.failure.cls != FailureClass::auth && o.failure.cls != FailureClass::permanent) {
        return finish_scan(false, "aborting multipart uploads failed: " + o.failure.message);
      }
    }
    abort_next_orphan();
  });
}

// Our resume state for `key` names this upload: it is gone now, so is the state.
bool Engine::erase_own_state(const std::string& key, const std::string& upload_id) {
  auto saved = buffer_.get_state(kMpuPrefix + key);
  if (!saved || !*saved) return false;
  auto st = mpu_from_json(**saved);
  if (!st || st->upload_id != upload_id) return false;
  (void)buffer_.erase_state(kMpuPrefix + key);
  abandoned_.erase(std::remove(abandoned_.begin(), abandoned_.end(), std::make_pair(key, upload_id)),
                   abandoned_.end());
  return true;
}

void Engine::finish_scan(bool ok, const std::string& why) {
  scan_active_ = false;
  scan_todo_.clear();
  next_scan_ = port_.clock->monotonic() + scan_interval_;
  std::string next = std::to_string(static_cast<long long>(std::chrono::duration<double>(scan_interval_).count()));
  if (ok) {
    scans_ok_->inc();
    log(LogLevel::debug, "bucket scan of " + scan_prefix() + " done (" + std::to_string(scan_pages_) +
                             " pages, " + std::to_string(scan_aborted_) + " uploads aborted); next in " + next + " s");
  } else {
    scans_failed_->inc();
    log(LogLevel::warning, "bucket scan for abandoned multipart uploads failed: " + why + "; next scan in " +
                               next + " s");
  }
  poke();
}

}  // namespace fleetpipe::uploader_internal
