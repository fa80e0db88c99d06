// Internal: the uploader's engine — the state its concept files share, and where each part lives.
//
// One batch (one Buffer lease) at a time. The engine is a chain of callbacks on the io_context;
// every callback holds only a weak reference to the engine and the batch generation it belongs
// to, so a pause (which drops the batch) or destruction turns stale callbacks into no-ops.
// Multipart progress lives in the Buffer's state table ("uploader/mpu/<key>"), pending manifest
// lines in "uploader/manifest/<key>". Between batches the engine also scans the bucket
// (ListMultipartUploads under "<prefix>/") and aborts multipart uploads older than
// resume.abandon_after, whoever started them (docs/uploader.md "Resume").
//
// Member functions are defined in the file of their concept:
//   uploader_config.cpp  "/uploader" parsed from JSON
//   coordinator.cpp   init, the main loop (tick), batches, acks, requests with retries
//   failure.cpp       what a failed object means: give the batch back and back off, or park
//   shaping.cpp       host pause, network state, schedule windows, the rate (class Shaper)
//   planner.cpp       records -> objects and their keys (free functions)
//   digest_ahead.cpp  MD5/SHA-256 of the next parts while others are on the wire
//   put_object.cpp    object bytes, metadata headers, PutObject
//   multipart.cpp     the multipart state machine and its resume state
//   manifest.cpp      the manifest writer (lines, key, pending manifests)
//   orphan_scan.cpp   abandoned multipart uploads: own resume state and the bucket scan
//   heartbeat.cpp     the pipeline's heartbeat, sent through the uploader's request path
//   fetch.cpp         conditional GETs for the pipeline (campaign objects)
#pragma once

#include <array>
#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>

#include "s3/bucket_layout.hpp"
#include "s3/credentials.hpp"
#include "s3/digest.hpp"
#include "s3/md5_lanes.hpp"
#include "s3/request_sender.hpp"
#include "s3/retry_policy.hpp"
#include "s3/s3_client.hpp"
#include "s3/token_bucket.hpp"
#include "uploader/multipart_state.hpp"
#include "uploader/planner.hpp"
#include "uploader/shaping.hpp"
#include "fleetpipe/uploader.hpp"

namespace fleetpipe::uploader_internal {

namespace net = boost::asio;
using detail::FailureClass;
using detail::S3Outcome;
using detail::S3Request;

inline constexpr const char* kMpuPrefix = "uploader/mpu/";
inline constexpr const char* kManifestPrefix = "uploader/manifest/";
inline constexpr const char* kComponent = "uploader";

/// Metadata values go into HTTP headers: printable ASCII only, bounded (put_object.cpp).
std::string header_safe(std::string_view s, std::size_t max = 512);
/// An ETag without its surrounding quotes (put_object.cpp).
std::string strip_quotes(std::string s);

/// Destination and credentials faults (no bucket, access denied, rejected or expired keys):
/// every object would fail alike, so they hold the uploader, not the records (failure.cpp).
bool is_destination_fault(const detail::S3Failure& f);

/// The manifest key of a planned batch: named after its smallest record id and `writer`, a
/// random tag that makes each batch's key its own (manifest.cpp).
std::string manifest_key_for(const Batch& b, const detail::BucketLayout& layout, std::uint64_t writer);

struct Digests {
  std::string md5_raw;
  std::string sha256_hex;
};

class Engine : public std::enable_shared_from_this<Engine> {
 public:
  Engine(net::io_context& ioc, const UploaderConfig& cfg, Buffer& buffer, const Port& port,
         MetricsRegistry& m);
  Result<void> init();
  detail::S3Client::Hooks client_hooks(bool count_bytes);
  ~Engine() {
    cancel_all();
    if (hb_client_ && hb_client_->busy()) hb_client_->cancel();
  }

  // ---- host controls (any thread) ---------------------------------------------------------
  void set_rate(double rate, std::uint64_t burst) {
    shaper_.set_pending_rate(rate, burst);
    poke();
  }
  void pause() {
    shaper_.set_host_paused(true);
    poke();
  }
  void resume() {
    shaper_.set_host_paused(false);
    poke();
  }
  void flush() {
    flush_requested_.store(true);
    poke();
  }
  void shutdown();

  bool idle() const { return !batch_ && !any_busy(); }
  UploaderStatus status() const;

  // ---- conditional GETs (fetch.cpp): campaigns, driving thread only -----------------------
  void fetch_object(std::string key, std::string if_none_match,
                    std::function<void(Result<FetchReply>)> done);
  Result<void> prepare_fetch();

  // ---- heartbeats (heartbeat.cpp), driving thread only ------------------------------------
  void send_heartbeat(std::string_view device, const std::function<Result<std::string>()>& build,
                      std::function<void(const HeartbeatOutcome&)> done);

 private:
  std::uint64_t hb_keys_ = 0;  ///< heartbeats named so far: the key's sequence number
  // ---- plumbing (coordinator.cpp) ----------------------------------------------------------
  template <class F>
  auto weak(F f) {
    return [w = weak_from_this(), f = std::move(f)](auto&&... a) mutable {
      if (auto s = w.lock()) f(std::forward<decltype(a)>(a)...);
    };
  }
  bool any_busy() const;
  void cancel_all();
  void new_generation();
  void poke();
  void arm_wake(std::chrono::nanoseconds d);
  WallTime corrected_wall() const;
  void log(LogLevel l, const std::string& msg) { fleetpipe::log(port_, l, kComponent, msg); }
  void set_last_error(const std::string& e);
  void update_status();
  void note_credentials(const Credentials& c);
  void unpark_after_credentials_change();
  template <class F>
  void with_status(F f) {
    std::lock_guard<std::mutex> g(status_mu_);
    f(status_);
  }
  // Every request goes through sender_ (retry policy, failure/retry counters, clock correction);
  // `gen` != 0 ties it to a batch generation (dropped with it), `ci` picks the connection.
  void send(S3Request req, std::uint64_t gen, std::function<void(S3Outcome)> done, std::size_t ci = 0);
  detail::RequestSender::Observer sender_observer(bool count);
  void correct_clock(const detail::S3Failure& f);

  // ---- the main loop and batches (coordinator.cpp) -----------------------------------------
  void tick();
  void idle_scan();
  void start_batch();
  void next_object();
  void object_done(ObjectPlan& p, const std::string& etag, bool multipart, std::uint32_t parts);
  void poke_next();
  void drop_batch(bool nack);
  void finish_batch();

  // ---- failures (failure.cpp) --------------------------------------------------------------
  void handle_object_failure(ObjectPlan& p, const detail::S3Failure& f);
  void object_unreadable(ObjectPlan& p, const Error& e);
  void object_failed_permanently(ObjectPlan& p, const detail::S3Failure& f);
  void batch_failed(const detail::S3Failure& f, bool nack);
  void note_destination_fault(const detail::S3Failure& f);
  void clear_destination_fault();

  // ---- manifests (manifest.cpp) ------------------------------------------------------------
  void record_manifest_line(Batch& b, const ObjectPlan& p, const std::string& etag, bool multipart,
                            std::uint32_t parts);
  void write_pending_manifest();
  void put_manifest(const std::string& key, const std::string& body, std::function<void(bool)> done);
  void manifest_backoff();
  void adopt_pending_manifests();

  // ---- abandoned multipart uploads (orphan_scan.cpp) ---------------------------------------
  void startup();
  void abort_next_abandoned();
  std::string scan_prefix() const;
  bool scan_due() const;
  void start_scan();
  void list_uploads_page();
  void abort_next_orphan();
  bool erase_own_state(const std::string& key, const std::string& upload_id);
  void finish_scan(bool ok, const std::string& why);

  // ---- object bytes and PutObject (put_object.cpp) -----------------------------------------
  Result<std::size_t> read_object(const Batch& b, const ObjectPlan& p, std::uint64_t off, char* out,
                                  std::size_t n);
  // Calls f(data, n) over object bytes [off, off+len), one object_piece at a time.
  template <class F>
  Result<void> visit_object(const Batch& b, const ObjectPlan& p, std::uint64_t off, std::uint64_t len,
                            F&& f) {
    for (std::uint64_t done = 0; done < len;) {
      auto piece = object_piece(b, p, off + done, len - done, /*may_copy=*/true);
      if (!piece) return std::move(piece).error();
      f(piece->data(), piece->size());
      done += piece->size();
    }
    return {};
  }
  // The range's MD5 (unless !with_md5) and SHA-256 (unless unsigned_payload), one pass.
  Result<Digests> digest(const Batch& b, const ObjectPlan& p, std::uint64_t off, std::uint64_t len,
                         bool with_md5 = true);
  Result<std::string_view> object_piece(const Batch& b, const ObjectPlan& p, std::uint64_t off,
                                        std::uint64_t max, bool may_copy);
  std::string object_campaigns(const Batch& b, const ObjectPlan& p);
  HeaderList object_headers(const Batch& b, const ObjectPlan& p);
  void put_object(ObjectPlan& p, bool hashed_ahead = false);

  // ---- digest-ahead (digest_ahead.cpp) -----------------------------------------------------
  // MD5 + SHA-256 of 64 KiB take ~0.25 ms here: a handler of that length keeps the host's poll()
  // within its budget; the old io_chunk_size (256 KiB) slices took ~1 ms and overran it. With
  // several parts hashed in SIMD lanes a slice is this much of each part (~0.15 ms for eight).
  static constexpr std::uint64_t kDigestSliceBytes = 64u << 10;
  static constexpr std::size_t kAheadLanes = detail::Md5Lanes::kLanes;

  // Digest-ahead: while parts are on the wire, the digests of the next parts to send are
  // computed one kDigestSliceBytes slice per posted handler (interleaved with the I/O
  // completions), so a connection that frees up starts its next part at once instead of after
  // a whole-part hash pass that also stalls every other connection's writes. Up to eight parts
  // of a multipart upload are hashed together, one per SIMD lane (Md5Lanes: MD5 is most of the
  // uploader's CPU, and eight lanes cost about what one does); a single range (a PutObject, or
  // an object of small records) uses OpenSSL's MD5.
  struct DigestAhead {
    std::uint64_t gen = 0;
    const ObjectPlan* plan = nullptr;
    std::size_t lanes = 0;
    std::array<std::uint64_t, kAheadLanes> off{}, len{};
    std::uint64_t pos = 0, longest = 0;  ///< bytes hashed of every range (lockstep)
    std::optional<detail::Digest> md5;   ///< lanes == 1
    std::array<std::optional<detail::Digest>, kAheadLanes> sha;
    std::function<void()> on_done;  ///< a PutObject waiting for its digests (see put_object)
  };
  bool ahead_on(const ObjectPlan& p) const { return ahead_.plan == &p && batch_ && ahead_.gen == batch_->gen; }
  bool ready_on(const ObjectPlan& p) const { return ready_plan_ == &p && batch_ && ready_gen_ == batch_->gen; }
  void start_digest_ahead(const ObjectPlan& p, const std::vector<std::pair<std::uint64_t, std::uint64_t>>& ranges);
  bool digest_ahead_advance(std::uint64_t max);
  void digest_ahead_step(std::uint64_t token);
  Result<Digests> part_digest(const ObjectPlan& p, std::uint64_t off, std::uint64_t len);
  bool range_hashed_or_hashing(const ObjectPlan& p, std::uint64_t off) const;

  // ---- multipart (multipart.cpp) -----------------------------------------------------------
  void start_multipart(ObjectPlan& p);
  void save_mpu(const ObjectPlan& p);
  void reconcile_parts(ObjectPlan& p, std::string marker);
  void next_part(ObjectPlan& p);
  void dispatch_part(ObjectPlan& p, std::uint32_t n, std::size_t ci);
  void complete_multipart(ObjectPlan& p);

  // ---- state -------------------------------------------------------------------------------
  net::io_context& ioc_;
  UploaderConfig cfg_;
  detail::BucketLayout layout_;
  Buffer& buffer_;
  Port port_;
  detail::CredentialResolver creds_;
  detail::TokenBucket bucket_;
  Shaper shaper_;
  net::steady_timer wake_;
  std::vector<std::unique_ptr<detail::S3Client>> clients_;
  detail::ExponentialBackoff retry_policy_;
  std::mt19937_64 rng_{std::random_device{}()};  ///< manifest writer tags, fault-backoff jitter
  detail::RequestSender sender_;
  // Heartbeats (heartbeat.cpp): one attempt, their own connection, not counted as uploads.
  detail::ExponentialBackoff hb_policy_;
  detail::RequestSender hb_sender_;
  std::unique_ptr<detail::S3Client> hb_client_;
  std::unique_ptr<detail::S3Client> fetch_client_;  // fetch.cpp: its own connection
  MetricsRegistry* metrics_ = nullptr;

  std::unique_ptr<Batch> batch_;
  std::uint64_t batch_gen_ = 0;
  std::unique_ptr<char[]> scratch_;
  bool waiting_ = false;
  bool stopped_ = false;
  bool startup_pending_ = false;
  std::optional<MonoTime> first_seen_;
  MonoTime backoff_until_{};
  std::uint64_t fault_probes_ = 0;  // consecutive destination/credentials faults (failure.cpp)
  std::size_t credentials_fingerprint_ = 0;  // hash of the keys last signed with
  std::string fault_code_;
  double clock_offset_s_ = 0;
  std::uint64_t bytes_sent_total_ = 0;
  std::atomic<bool> flush_requested_{false};
  mutable std::mutex status_mu_;
  UploaderStatus status_;

  // Digest-ahead.
  DigestAhead ahead_;
  std::uint64_t ahead_token_ = 0;
  std::unique_ptr<detail::Md5Lanes> md5_lanes_;  // reused: lane states live here while hashing
  // Finished digests of ranges not sent yet (multipart), by object offset.
  std::map<std::uint64_t, Digests> ready_;
  std::uint64_t ready_gen_ = 0;
  const ObjectPlan* ready_plan_ = nullptr;
  std::uint64_t lanes_unusable_gen_ = ~std::uint64_t{0};  // a compressed chunk: this batch hashes part by part

  // Multipart.
  MultipartState mpu_;
  std::vector<std::uint32_t> slot_part_;  // part number per client slot, 0 = free
  std::set<std::uint32_t> inflight_parts_;
  std::string current_upload_id_;  // the multipart upload this uploader is working on

  // Manifests of earlier batches or runs, not written yet: (key, body).
  std::vector<std::pair<std::string, std::string>> pending_manifests_;

  // Abandoned multipart uploads: from our resume state, and the bucket scan (orphan_scan.cpp).
  std::vector<std::pair<std::string, std::string>> abandoned_;
  struct ScanCandidate {
    std::string key, upload_id;
    double age_s = 0;
  };
  bool scan_active_ = false;
  bool scan_truncated_ = false;
  std::string scan_key_marker_, scan_upload_id_marker_;
  std::vector<ScanCandidate> scan_todo_;  // one page's uploads older than abandon_after
  std::size_t scan_next_ = 0, scan_aborted_ = 0, scan_pages_ = 0;
  MonoTime next_scan_{};
  std::chrono::nanoseconds scan_interval_{};

  Counter* failed_by_class_[16] = {};
  Counter* retried_by_class_[16] = {};
  Counter *uploads_ok_, *uploads_failed_, *bytes_sent_, *records_acked_, *records_nacked_;
  Counter* tls_handshakes_[2] = {};  // [resumed]
  Counter *resumed_, *aborted_own_, *aborted_orphan_, *scans_ok_, *scans_failed_;
  Counter *manifests_ok_, *manifests_failed_, *etag_mismatch_;
  Gauge* clock_offset_gauge_;
  Gauge* destination_fault_gauge_;
};

}  // namespace fleetpipe::uploader_internal
