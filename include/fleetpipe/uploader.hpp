// fleetpipe/uploader.hpp — shaped, resumable delivery of buffered records to an S3 bucket.
//
// The Uploader leases records from the Buffer, packs small ones into one object (up to a target
// size or age), sends large ones as their own object (PutObject below the multipart threshold,
// multipart above it, parts streamed from LMDB in small chunks), writes a JSONL manifest per
// batch, and acks the records only after the object is stored. Everything runs on an Asio
// io_context that the host drives: `poll()` / `run_for()` on the uploader's own context, or the
// host's own context (opt-in header fleetpipe/asio.hpp). fleetpipe starts no thread.
//
// Caveats (read first)
//  - Delivery is at-least-once with deterministic object keys: a record whose upload succeeded
//    but whose ack was lost (crash) is uploaded again under the same key, overwriting the same
//    object, so the bucket holds no duplicate object. (A record packed with different neighbours
//    after a restart lands in an object keyed by the smallest record id of its pack; see
//    docs/uploader.md "Delivery guarantee" for the one corner where an old pack can survive.)
//  - The Buffer and the Uploader are driven by the same thread (neither is thread-safe), except
//    `pause()`, `resume()`, `set_rate()`, `flush()`, which any thread may call: they take effect
//    on the driving thread's next poll.
//  - Pausing (host, schedule window, metered/offline network) aborts the request in flight at
//    once and returns the leased records to the Buffer without counting an attempt; multipart
//    progress is kept (parts already stored are not sent again).
//  - Credentials are never logged, never put in errors, metrics or status.
//
// Durability of the resume state: the multipart upload id is written with Buffer::put_state
// (always synced) right after CreateMultipartUpload; after a restart ListParts tells which parts
// the server holds (each checked against the MD5 of its bytes in LMDB), so a kill -9 or power cut
// loses at most the parts in flight.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "fleetpipe/buffer.hpp"
#include "fleetpipe/error.hpp"
#include "fleetpipe/metrics.hpp"
#include "fleetpipe/port.hpp"

namespace fleetpipe {

/// Where credentials come from. `auto_detect`: the host's CredentialsProvider in the Port if
/// set, else the static keys in the config if set, else AWS_ACCESS_KEY_ID /
/// AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN, else the shared-credentials-file profile.
enum class CredentialsSource : std::uint8_t { auto_detect = 0, static_keys, environment, profile, host };

struct UploaderCredentialsConfig {
  CredentialsSource source = CredentialsSource::auto_detect;
  std::string access_key_id;       ///< static keys (source static_keys / auto_detect)
  std::string secret_access_key;
  std::string session_token;
  std::string profile = "default";  ///< section of the shared credentials file
  /// "" = $AWS_SHARED_CREDENTIALS_FILE, else ~/.aws/credentials.
  std::string shared_credentials_file;
};

/// One schedule window, in local time of `UploaderScheduleConfig::utc_offset_minutes`.
/// A window may wrap midnight (start "22:00", end "06:00").
struct ScheduleWindow {
  int start_minute = 0;  ///< minutes after midnight, 0..1439 ("HH:MM" in JSON)
  int end_minute = 0;    ///< exclusive; == start means the whole day
  bool pause = false;    ///< uploads are paused inside the window
  double bytes_per_second = 0;  ///< rate inside the window; 0 = the base rate
};

struct UploaderScheduleConfig {
  std::vector<ScheduleWindow> windows;  ///< first matching window wins
  bool pause_outside_windows = false;   ///< true: upload only inside a (non-pause) window
  int utc_offset_minutes = 0;           ///< local time = UTC + offset
};

/// The "uploader" section of the config. Every key, its default and unit: docs/uploader.md.
struct UploaderConfig {
  bool enabled = true;
  // --- where -------------------------------------------------------------------------------
  /// "https://host[:port]" (or "http://..." with allow_insecure_http). "" = AWS:
  /// https://s3.<region>.amazonaws.com.
  std::string endpoint;
  std::string bucket;
  std::string region = "us-east-1";
  bool virtual_host_style = false;  ///< true: https://<bucket>.<endpoint host>/<key>
  /// Connect to this address instead of resolving the endpoint host (Host header, SNI and
  /// certificate name checks still use the endpoint host). "" = resolve normally.
  std::string connect_address;
  bool allow_insecure_http = false;
  bool tls_verify = true;           ///< certificate chain + host name; off only for lab setups
  std::string ca_file;              ///< "" = the system store (OpenSSL's built-in default paths)
  double connect_timeout_s = 10;
  double request_timeout_s = 60;    ///< inactivity limit per read/write of one request
  // --- who -------------------------------------------------------------------------------
  UploaderCredentialsConfig credentials;
  bool unsigned_payload = false;    ///< sign UNSIGNED-PAYLOAD (Content-MD5 still sent)
  /// Send Content-MD5 with each PutObject (the server checks the body, the ETag is compared).
  /// false with unsigned_payload: an object's body is not hashed at all, as `curl -T` sends it;
  /// TLS still protects it in transit. Multipart parts keep theirs (resume checks their ETags).
  bool content_md5 = true;
  // --- what ------------------------------------------------------------------------------
  std::string prefix = "fleetpipe";
  std::string key_template =
      "{prefix}/stream={stream}/date={YYYY-MM-DD}/device={device}/{start_time}-{seq}.{ext}";
  /// Device name for keys when a record has no metadata "device". Not a JSON key: the pipeline
  /// sets it from the top-level "device_id".
  std::string device_id = "unknown-device";
  /// Device labels written into every object's metadata (`x-amz-meta-fleetpipe-label-<name>`)
  /// and manifest line (`"labels"`). Not a JSON key: the pipeline sets it from "labels".
  std::map<std::string, std::string> labels;
  std::uint64_t target_object_bytes = 8ull << 20;  ///< pack small records up to this size
  double max_object_age_s = 60;   ///< ... or until the oldest queued record is this old
  /// Records at least this large become their own object.
  std::uint64_t large_record_bytes = 4ull << 20;
  std::uint64_t multipart_threshold_bytes = 16ull << 20;
  std::uint64_t part_bytes = 8ull << 20;           ///< >= 5 MiB
  std::uint64_t batch_max_bytes = 32ull << 20;     ///< one lease (one manifest) at most this
  std::uint64_t batch_max_records = 10000;
  bool write_manifest = true;
  std::uint32_t io_chunk_bytes = 256u << 10;        ///< read-from-LMDB / write-to-socket chunk
  /// Connections (each with one request in flight): parts of one multipart upload go out in
  /// parallel over them, sharing the rate limit. Memory: about io_chunk_bytes + 50 KiB each (over
  /// HTTPS twice io_chunk_bytes: a body piece and its TLS records, sent in one socket write).
  std::uint32_t max_concurrent_requests = 4;
  /// Multipart uploads older than this are aborted: our own resume state, and any upload under
  /// `prefix` found by the periodic bucket scan (docs/uploader.md "Resume").
  double abandon_multipart_after_s = 7 * 86400.0;
  // --- retries ---------------------------------------------------------------------------
  std::uint32_t max_attempts = 6;    ///< per request, then the batch is nacked and retried later
  double retry_base_delay_s = 0.2;
  double retry_max_delay_s = 30;
  /// Destination and credentials faults (NoSuchBucket, AccessDenied, InvalidAccessKeyId,
  /// SignatureDoesNotMatch, ExpiredToken, ...) keep the records queued; the uploader re-probes
  /// after a backoff doubling from retry_max_delay_s up to this cap (docs/uploader.md "Faults").
  double fault_max_delay_s = 900;
  // --- shaping ---------------------------------------------------------------------------
  double bytes_per_second = 0;       ///< 0 = unlimited
  std::uint64_t burst_bytes = 0;     ///< 0 = max(4 KiB, rate / 50): 20 ms of traffic
  bool pause_when_metered = true;    ///< NetworkState::metered pauses (else metered rate)
  double metered_bytes_per_second = 0;  ///< 0 = the base rate
  UploaderScheduleConfig schedule;
  double idle_poll_interval_s = 0.25;  ///< how often an idle uploader looks for new records
};

/// A point-in-time view for hosts and the `fleetpipe status` command. No secrets.
struct UploaderStatus {
  bool paused = false;              ///< any reason below
  bool paused_by_host = false;
  bool paused_by_schedule = false;
  bool paused_by_network = false;
  bool busy = false;                ///< a batch is leased
  double rate_bytes_per_s = 0;      ///< effective rate now (0 = unlimited)
  std::uint64_t burst_bytes = 0;
  std::uint64_t objects_uploaded = 0;
  std::uint64_t records_acked = 0;
  std::uint64_t records_parked = 0;
  std::uint64_t bytes_sent = 0;     ///< request bytes handed to the socket (headers + bodies)
  std::uint64_t retries = 0;
  std::uint64_t multipart_resumed = 0;
  double clock_offset_s = 0;        ///< correction learned from RequestTimeTooSkewed
  std::string last_error;           ///< last failure, for people ("" if none)
  /// The S3 code (or class) of the destination/credentials fault holding uploads, "" if none;
  /// how many probes in a row it refused.
  std::string destination_fault;
  std::uint64_t destination_fault_probes = 0;
};

/// How one heartbeat went (Uploader::send_heartbeat).
struct HeartbeatOutcome {
  enum class Kind { sent, failed, skipped_offline, skipped_paused };
  Kind kind = Kind::failed;
  std::string key;    ///< the object key; "" when skipped or the document was not built
  WallTime time{};    ///< the Port's wall time the key was named after
  std::string error;  ///< why it failed, for people ("" otherwise); never holds credentials
};

/// A conditional GET's reply (Uploader::fetch_object): 200 with the body, 304 (unchanged) or
/// 404 (no such object).
struct FetchReply {
  int status = 0;
  std::string etag;  ///< the object's ETag as the server sent it (quotes kept)
  std::string body;
};

/// The uploader. Create with `create`; not copyable; one thread drives it (see Caveats).
class Uploader {
 public:
  /// Validates the config (errors: invalid_config naming the key), resolves credentials lazily
  /// (a missing credential shows up as a counted auth error, not here), prepares TLS
  /// (errors: tls_error when the CA file cannot be loaded) and arms the first poll on its own
  /// io_context. Lifetime: `buffer`, the Port's pieces and `metrics` must outlive the Uploader.
  static Result<std::unique_ptr<Uploader>> create(const UploaderConfig& config, Buffer& buffer,
                                                  const Port& port, MetricsRegistry& metrics);
  ~Uploader();  ///< cancels the request in flight; leased records go back to the Buffer
  Uploader(const Uploader&) = delete;
  Uploader& operator=(const Uploader&) = delete;

  /// Runs the handlers that are ready now (never blocks). Returns how many ran.
  /// Only for uploaders on their own io_context (with the host's context, run that instead).
  std::size_t poll();
  /// Runs handlers for up to `d` (blocks at most `d`, returns early after shutdown()).
  std::size_t run_for(std::chrono::nanoseconds d);

  /// Changes the base rate (bytes/s, 0 = unlimited) and burst (0 = auto) at run time. The
  /// schedule and metered rates still apply on top. Thread-safe.
  void set_rate(double bytes_per_second, std::uint64_t burst_bytes = 0);
  /// Host pause (metered link, customer-facing traffic). Aborts the request in flight, counted
  /// in fleetpipe_uploader_pauses_total{reason="host"}. Thread-safe. Idempotent.
  void pause();
  void resume();
  /// Uploads what is queued now without waiting for the target size or age. Thread-safe.
  void flush();
  /// Cancels the request in flight and stops; poll/run_for return promptly afterwards.
  void shutdown();

  /// Sends a heartbeat document (the Pipeline's) as `{prefix}/_heartbeat/device=<device>/<time>.json`
  /// through the uploader's own request path: its token bucket (caps count every byte),
  /// credentials, clock correction, on a connection of its own so uploads are not held up. One
  /// attempt, no retry (the next heartbeat is the retry). Skipped without calling `build` while
  /// the network is offline or uploads are paused. `build` returns the document's bytes, or an
  /// error (the heartbeat then fails with it). `done` runs once on the driving thread: at once for
  /// a skip or a build error, else when the request ends; a shutdown() or the Uploader's
  /// destruction while it is in flight drops it. Driving thread only.
  void send_heartbeat(std::string_view device, const std::function<fleetpipe::Result<std::string>()>& build,
                      std::function<void(const HeartbeatOutcome&)> done);

  /// GETs `key` (a full object key, e.g. `{prefix}/_campaigns/<id>.json`) with `If-None-Match:
  /// if_none_match` (omitted when empty) through the uploader's request path (token bucket,
  /// credentials, clock correction) on a connection of its own; one attempt. `done` runs once on
  /// the driving thread with 200, 304 or 404, or an error: network_error while offline (at
  /// once), would_block while the previous fetch is in flight, the request's class otherwise
  /// (bodies above 4 MiB are refused). A shutdown() drops it. Driving thread only.
  void fetch_object(std::string key, std::string if_none_match,
                    std::function<void(fleetpipe::Result<FetchReply>)> done);
  /// Sets up fetch_object's connection state now (TLS context, CA file) instead of in the first
  /// fetch, so that work stays out of the owner's poll(). Errors: tls_error (CA file). Optional.
  fleetpipe::Result<void> prepare_fetch();

  /// True when no batch is leased and nothing is in flight.
  bool idle() const;
  UploaderStatus status() const;

  struct Impl;  // internal

 private:
  explicit Uploader(std::unique_ptr<Impl> impl) noexcept;
  friend struct UploaderFactory;
  std::unique_ptr<Impl> impl_;
};

}  // namespace fleetpipe
