// The coordinator: the uploader's main loop — startup, batches one at a time, acks, and the
// requests with retries every concept sends through.
#include <algorithm>
#include <limits>

#include <boost/asio/post.hpp>

#include "uploader/engine.hpp"

namespace fleetpipe::uploader_internal {

namespace {
constexpr double kMinScanInterval_s = 1.0;          // bucket scan period bounds (docs/uploader.md)
constexpr double kMaxScanInterval_s = 6 * 3600.0;
}  // namespace

Engine::Engine(net::io_context& ioc, const UploaderConfig& cfg, Buffer& buffer, const Port& port,
       MetricsRegistry& m)
    : ioc_(ioc),
      cfg_(cfg),
      layout_(cfg.prefix, cfg.key_template),
      buffer_(buffer),
      port_(port.with_defaults()),
      creds_(cfg.credentials, port.credentials),
      bucket_(cfg.bytes_per_second, cfg.burst_bytes, port_.clock->monotonic()),
      shaper_(cfg_, port_, bucket_, m),
      wake_(ioc),
      retry_policy_({cfg.max_attempts, cfg.retry_base_delay_s, cfg.retry_max_delay_s, /*full_jitter=*/true}),
      sender_(ioc, retry_policy_, sender_observer(true)),
      hb_policy_({1, 0, 0, false}),
      hb_sender_(ioc, hb_policy_, sender_observer(false)) {
  auto cls_labels = [](FailureClass c) { return Labels{{"class", detail::class_name(c)}}; };
  for (int i = 0; i <= static_cast<int>(FailureClass::cancelled); ++i) {
    auto c = static_cast<FailureClass>(i);
    failed_by_class_[i] = &m.counter("fleetpipe_uploader_request_failures_total",
                                     "Failed S3 requests by retry class", cls_labels(c));
    retried_by_class_[i] = &m.counter("fleetpipe_uploader_retries_total",
                                      "S3 requests retried, by retry class", cls_labels(c));
  }
  uploads_ok_ = &m.counter("fleetpipe_uploader_uploads_total", "Objects uploaded (PutObject or "
                           "completed multipart)", {{"result", "ok"}});
  uploads_failed_ = &m.counter("fleetpipe_uploader_uploads_total", "Objects uploaded (PutObject "
                               "or completed multipart)", {{"result", "failed"}});
  bytes_sent_ = &m.counter("fleetpipe_uploader_bytes_sent_total",
                           "Request bytes (headers and bodies) handed to the socket");
  for (int resumed = 0; resumed < 2; ++resumed)
    tls_handshakes_[resumed] = &m.counter("fleetpipe_uploader_tls_handshakes_total",
                                          "TLS handshakes completed (resumed: an earlier session reused)",
                                          {{"resumed", resumed ? "true" : "false"}});
  records_acked_ = &m.counter("fleetpipe_uploader_records_acked_total",
                              "Records acked after their object was stored");
  records_nacked_ = &m.counter("fleetpipe_uploader_records_nacked_total",
                               "Records returned to the buffer after retries ran out");
  resumed_ = &m.counter("fleetpipe_uploader_multipart_resumed_total",
                        "Multipart uploads continued from persisted state (after a restart or a pause)");
  // reason="own_state": found in our resume state; "orphan": found by the bucket scan only.
  aborted_own_ = &m.counter("fleetpipe_uploader_multipart_aborted_total",
                            "Abandoned multipart uploads aborted, by how they were found",
                            {{"reason", "own_state"}});
  aborted_orphan_ = &m.counter("fleetpipe_uploader_multipart_aborted_total",
                               "Abandoned multipart uploads aborted, by how they were found",
                               {{"reason", "orphan"}});
  scans_ok_ = &m.counter("fleetpipe_uploader_multipart_scans_total",
                         "Bucket scans for abandoned multipart uploads", {{"result", "ok"}});
  scans_failed_ = &m.counter("fleetpipe_uploader_multipart_scans_total",
                             "Bucket scans for abandoned multipart uploads", {{"result", "failed"}});
  // The scan runs every abandon_after (at most every 6 h, at least every second).
  scan_interval_ = std::chrono::nanoseconds(static_cast<std::int64_t>(
      std::min(std::max(cfg.abandon_multipart_after_s, kMinScanInterval_s), kMaxScanInterval_s) * 1e9));
  manifests_ok_ = &m.counter("fleetpipe_uploader_manifests_total", "Manifest objects written",
                             {{"result", "ok"}});
  manifests_failed_ = &m.counter("fleetpipe_uploader_manifests_total",
                                 "Manifest objects written", {{"result", "failed"}});
  etag_mismatch_ = &m.counter("fleetpipe_uploader_etag_mismatch_total",
                              "Responses whose ETag did not match the MD5 sent");
  clock_offset_gauge_ = &m.gauge("fleetpipe_uploader_clock_offset_seconds",
                                 "Clock correction learned from RequestTimeTooSkewed");
  destination_fault_gauge_ = &m.gauge("fleetpipe_uploader_destination_fault",
                                      "1 while a destination or credentials fault holds uploads");
  metrics_ = &m;
}

// What every client of this uploader signs and shapes with: its credentials, the corrected
// clock, the one token bucket. `count_bytes`: its bytes count in bytes_sent (uploads do,
// heartbeats do not).
detail::S3Client::Hooks Engine::client_hooks(bool count_bytes) {
  detail::S3Client::Hooks h;
  std::weak_ptr<Engine> w = weak_from_this();
  h.credentials = [w]() -> Result<Credentials> {
    auto s = w.lock();
    if (!s) return Error(errc::cancelled, "uploader gone");
    auto c = s->creds_.get();
    if (c) s->note_credentials(*c);
    return c;
  };
  h.wall = [w]() {
    auto s = w.lock();
    return s ? s->corrected_wall() : std::chrono::system_clock::now();
  };
  h.mono = [w]() {
    auto s = w.lock();
    return s ? s->port_.clock->monotonic() : std::chrono::steady_clock::now();
  };
  h.bucket = &bucket_;
  h.on_tls_handshake = [w](bool resumed) {
    if (auto s = w.lock()) s->tls_handshakes_[resumed ? 1 : 0]->inc();
  };
  if (count_bytes) {
    h.on_bytes_sent = [w](std::uint64_t n) {
      if (auto s = w.lock()) {
        s->bytes_sent_->inc(n);
        s->bytes_sent_total_ += n;
      }
    };
  }
  return h;
}

Result<void> Engine::init() {
  const detail::S3Client::Hooks h = client_hooks(true);
  std::size_t n = std::max<std::uint32_t>(1, cfg_.max_concurrent_requests);
  for (std::size_t i = 0; i < n; ++i) {
    auto c = detail::S3Client::create(ioc_, cfg_, h);
    if (!c) return std::move(c).error();
    clients_.push_back(std::move(*c));
  }
  slot_part_.assign(n, 0);
  shaper_.start(port_.clock->monotonic());
  if (auto w = detail::credentials_file_warning(cfg_.credentials); !w.empty()) log(LogLevel::warning, w);
  startup_pending_ = true;
  next_scan_ = port_.clock->monotonic();  // first scan once nothing is ready to upload
  arm_wake(std::chrono::nanoseconds(0));
  return {};
}

void Engine::shutdown() {
  stopped_ = true;
  if (hb_client_ && hb_client_->busy()) hb_client_->cancel();
  if (fetch_client_ && fetch_client_->busy()) fetch_client_->cancel();
  drop_batch(false);
  wake_.cancel();
}

UploaderStatus Engine::status() const {
  std::lock_guard<std::mutex> g(status_mu_);
  UploaderStatus s = status_;
  s.paused_by_host = shaper_.host_paused();
  s.paused = s.paused_by_host || s.paused_by_network || s.paused_by_schedule;
  return s;
}

bool Engine::any_busy() const {
  for (const auto& c : clients_)
    if (c->busy()) return true;
  return false;
}

// Aborts every request in flight and every pending retry; their callbacks never run.
void Engine::cancel_all() {
  for (auto& c : clients_)
    if (c->busy()) c->cancel();  // idle kept-alive connections stay open
  sender_.cancel_retries();
  std::fill(slot_part_.begin(), slot_part_.end(), 0);
  inflight_parts_.clear();
}

// Invalidates the callbacks of the current batch's requests (after cancel_all) while the
// batch itself goes on (an object failed; the next one starts).
void Engine::new_generation() {
  cancel_all();
  if (batch_) batch_->gen = ++batch_gen_;
}

// New keys from the provider (a rotation, a fix): what the old ones got parked may go now, and
// is back in the queue before this request's batch ends (so drain() waits for it). Only a
// fingerprint is kept, never the secret.
void Engine::note_credentials(const Credentials& c) {
  std::size_t f = std::hash<std::string>{}(c.access_key_id + '\n' + c.secret_access_key + '\n' + c.session_token);
  bool changed = credentials_fingerprint_ != 0 && f != credentials_fingerprint_;
  credentials_fingerprint_ = f;
  if (changed) unpark_after_credentials_change();
}

void Engine::unpark_after_credentials_change() {
  auto n = buffer_.unpark();
  if (!n) {
    log(LogLevel::error, "unpark after a credentials change failed: " + n.error().message);
  } else if (*n > 0) {
    log(LogLevel::warning, "credentials changed: " + std::to_string(*n) + " parked records back in the upload queue");
  }
  poke();
}

void Engine::poke() {
  net::post(ioc_, weak([this]() { tick(); }));
}

void Engine::arm_wake(std::chrono::nanoseconds d) {
  if (stopped_) return;
  wake_.expires_after(d);
  wake_.async_wait(weak([this](boost::system::error_code ec) {
    if (ec == net::error::operation_aborted) return;
    tick();
    arm_wake(std::chrono::nanoseconds(static_cast<std::int64_t>(cfg_.idle_poll_interval_s * 1e9)));
  }));
}

WallTime Engine::corrected_wall() const {
  return port_.clock->wall() +
         std::chrono::duration_cast<WallTime::duration>(std::chrono::duration<double>(clock_offset_s_));
}

void Engine::set_last_error(const std::string& e) {
  std::lock_guard<std::mutex> g(status_mu_);
  status_.last_error = e;
}

void Engine::update_status() {
  std::lock_guard<std::mutex> g(status_mu_);
  status_.paused_by_network = shaper_.paused_by_network();
  status_.paused_by_schedule = shaper_.paused_by_schedule();
  status_.busy = static_cast<bool>(batch_);
  status_.rate_bytes_per_s = bucket_.unlimited() ? 0 : bucket_.rate();
  status_.burst_bytes = bucket_.unlimited() ? 0 : bucket_.burst();
  status_.bytes_sent = bytes_sent_total_;
  status_.clock_offset_s = clock_offset_s_;
}

void Engine::tick() {
  if (stopped_) return;
  shaper_.evaluate();
  update_status();
  if (shaper_.paused()) {
    // waiting_: a request between retries (its timer would fire during the pause).
    if (batch_ || any_busy() || waiting_) {
      log(LogLevel::info, "pausing: aborting the request in flight, records go back to the buffer");
      drop_batch(false);
    }
    if (scan_active_) {
      scan_active_ = false;  // next_scan_ is unchanged: it runs again after the pause
      log(LogLevel::info, "pausing: bucket scan for abandoned multipart uploads interrupted");
    }
    return;
  }
  if (any_busy() || waiting_ || batch_) return;
  if (port_.clock->monotonic() < backoff_until_) return;
  if (startup_pending_) return startup();
  if (!pending_manifests_.empty()) return write_pending_manifest();
  if (!abandoned_.empty()) return abort_next_abandoned();
  // A scan step always has a request in flight or a retry timer (waiting_); if a handler was
  // dropped without running, start over instead of stalling.
  scan_active_ = false;
  // Uploads go first; the scan runs when nothing is ready (start_batch), or before the next
  // batch once it is a whole interval late (a backlog that never drains).
  if (scan_due() && port_.clock->monotonic() >= next_scan_ + scan_interval_) return start_scan();
  start_batch();
}

// Nothing to upload now: the time for a due bucket scan.
void Engine::idle_scan() {
  if (scan_due()) start_scan();
}

void Engine::start_batch() {
  BufferStats st = buffer_.stats();
  if (st.records <= st.parked + st.leased) {
    first_seen_.reset();
    flush_requested_.store(false);
    return idle_scan();
  }
  auto lease = buffer_.lease(cfg_.batch_max_bytes, static_cast<std::size_t>(cfg_.batch_max_records));
  if (!lease) {
    set_last_error("lease failed: " + lease.error().message);
    log(LogLevel::error, "lease failed: " + lease.error().message);
    return idle_scan();
  }
  if (lease->empty()) {
    first_seen_.reset();
    flush_requested_.store(false);
    return idle_scan();
  }
  MonoTime now = port_.clock->monotonic();
  if (!first_seen_) first_seen_ = now;
  bool flush = flush_requested_.exchange(false);
  bool large = false;
  std::int64_t oldest = std::numeric_limits<std::int64_t>::max();
  for (const auto& r : lease->records()) {
    large = large || r.payload_size >= cfg_.large_record_bytes;
    oldest = std::min(oldest, r.meta.end_ns > 0 ? r.meta.end_ns : r.meta.start_ns);
  }
  std::int64_t wall_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(port_.clock->wall().time_since_epoch()).count();
  double age = static_cast<double>(wall_ns - oldest) / 1e9;
  double waited = std::chrono::duration<double>(now - *first_seen_).count();
  bool full = lease->payload_bytes() >= cfg_.target_object_bytes;
  if (!flush && !large && !full && age < cfg_.max_object_age_s && waited < cfg_.max_object_age_s) {
    lease->release();
    return idle_scan();  // not enough yet: wait for size or age
  }
  first_seen_.reset();
  batch_ = std::make_unique<Batch>();
  batch_->lease = std::move(*lease);
  batch_->gen = ++batch_gen_;
  plan_objects(*batch_, cfg_, layout_);
  batch_->manifest_key = manifest_key_for(*batch_, layout_, rng_());
  update_status();
  next_object();
}

void Engine::next_object() {
  if (!batch_) return;
  Batch& b = *batch_;
  if (b.next >= b.objects.size()) return finish_batch();
  ObjectPlan& p = b.objects[b.next];
  if (p.size >= cfg_.multipart_threshold_bytes) return start_multipart(p);
  put_object(p);
}

void Engine::object_done(ObjectPlan& p, const std::string& etag, bool multipart, std::uint32_t parts) {
  Batch& b = *batch_;
  p.done = true;
  p.etag = etag;
  p.parts = parts;
  uploads_ok_->inc();
  clear_destination_fault();
  record_manifest_line(b, p, etag, multipart, parts);
  auto ids = p.ids();
  auto ack = buffer_.ack(ids);
  if (!ack) {
    log(LogLevel::error, "ack failed after uploading " + p.key + ": " + ack.error().message);
  } else {
    records_acked_->inc(ids.size());
  }
  with_status([&](UploaderStatus& s) {
    s.objects_uploaded++;
    s.records_acked += ids.size();
  });
  log(LogLevel::debug, "uploaded " + p.key + " (" + std::to_string(p.size) + " bytes, " +
                           std::to_string(ids.size()) + " records)");
  b.next++;
  poke_next();
}

void Engine::poke_next() {
  net::post(ioc_, weak([this, g = batch_ ? batch_->gen : 0]() {
    if (batch_ && batch_->gen == g) next_object();
  }));
}

void Engine::drop_batch(bool nack) {
  cancel_all();
  waiting_ = false;
  if (!batch_) return;
  if (cfg_.write_manifest && !batch_->manifest_lines.empty()) {
    // Objects already delivered keep their manifest: it is written before the next batch.
    pending_manifests_.emplace_back(batch_->manifest_key, batch_->manifest_lines);
  }
  if (nack) {
    std::vector<RecordId> ids;
    for (const auto& p : batch_->objects)
      if (!p.done && !p.failed)
        for (auto id : p.ids()) ids.push_back(id);
    if (!ids.empty()) {
      (void)buffer_.nack(ids);
      records_nacked_->inc(ids.size());
    }
  }
  batch_->lease.release();
  batch_.reset();
  ++batch_gen_;
  update_status();
}


void Engine::send(S3Request req, std::uint64_t gen, std::function<void(S3Outcome)> done, std::size_t ci) {
  sender_.send(*clients_[ci], std::move(req), std::move(done),
               [this, gen] { return gen == 0 || (batch_ && batch_->gen == gen); });
}

// The uploader's requests are counted by class and retried; heartbeats (count = false) only
// correct the clock.
detail::RequestSender::Observer Engine::sender_observer(bool count) {
  detail::RequestSender::Observer o;
  o.on_clock_skew = [this](const detail::S3Failure& f) { correct_clock(f); };
  if (!count) return o;
  o.on_failure = [this](const detail::S3Failure& f) { failed_by_class_[static_cast<int>(f.cls)]->inc(); };
  o.on_retry = [this](const detail::S3Failure& f, std::uint32_t attempt, double delay_s) {
    retried_by_class_[static_cast<int>(f.cls)]->inc();
    with_status([](UploaderStatus& s) { s.retries++; });
    if (f.cls == FailureClass::clock_skew && f.server_time) return;  // logged by correct_clock
    log(LogLevel::warning, "request failed (" + std::string(detail::class_name(f.cls)) + ": " + f.message +
                               "); retry " + std::to_string(attempt) + " in " + std::to_string(delay_s) + " s");
  };
  o.on_waiting = [this](bool w) { waiting_ = w; };
  return o;
}

// RequestTimeTooSkewed: sign with the server's time from now on (one correction for every
// request fleetpipe sends, heartbeats included).
void Engine::correct_clock(const detail::S3Failure& f) {
  double offset = std::chrono::duration<double>(*f.server_time - port_.clock->wall()).count();
  clock_offset_s_ = offset;
  clock_offset_gauge_->set(offset);
  log(LogLevel::warning, "server clock differs by " + std::to_string(static_cast<long long>(offset)) +
                             " s (RequestTimeTooSkewed); signing with the corrected time");
}

}  // namespace fleetpipe::uploader_internal
