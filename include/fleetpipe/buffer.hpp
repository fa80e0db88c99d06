// fleetpipe/buffer.hpp — the durable on-device buffer (LMDB on flash).
//
// Accepted data survives kill -9 and (per `durability`) power loss; the buffer never fills the
// filesystem past its headroom, never wears the flash past its daily budget for low-priority
// data, and never drops data silently: every eviction and rejection is counted
// (`fleetpipe_buffer_evicted_total` / `fleetpipe_buffer_rejected_total{reason,priority,stream}`)
// and logged. Design, durability trade-offs and the on-disk layout: docs/buffer.md.
//
// Caveats (read first)
//  - One Buffer per directory per process. A second writer process on the same directory is
//    refused (`io_error`); read-only inspection (`inspect_buffer`, `fleetpipe inspect`) is fine
//    while the writer runs.
//  - Not thread-safe: one thread (the host's loop) drives a Buffer and its Leases. Metrics it
//    updates may be read from any thread.
//  - A Lease pins an LMDB read snapshot: pages freed while it is open cannot be reused, and the
//    map cannot grow while any Lease is open (an append that would need it is then handled as
//    "storage full" per policy). Keep leases short (lease, upload, ack).
//  - A Lease must not outlive the Buffer that issued it.
//  - Lease state is in memory: records leased but not acked before a restart come back.
//  - When `Port::filesystem` cannot answer, the filesystem is treated as full: appends that
//    would grow data.mdb are refused (`storage_full`, reason `fs_stats`) and nothing is evicted
//    for it; acks and state writes go on. Logged at most once a minute.
//  - Parked records are not stuck: every open returns them to the upload queue once
//    (`unpark_on_open`), and `unpark()` does it on demand.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "fleetpipe/error.hpp"
#include "fleetpipe/metrics.hpp"
#include "fleetpipe/port.hpp"

namespace fleetpipe {

/// When a commit reaches the disk. See docs/buffer.md for what each option loses on power cut.
enum class Durability : std::uint8_t {
  sync = 0,      ///< fsync on every commit: an accepted append survives power loss.
  interval = 1,  ///< fsync at most every `sync_interval_ms` (checked on every call and poll();
                 ///< started in the background, see `async_sync`):
                 ///< a power cut loses the commits of the last interval (kill -9 loses nothing).
  none = 2,      ///< never fsync (tests only): a power cut may lose everything since the OS
                 ///< last flushed, and may corrupt the store (it is then quarantined).
};

/// What an append does when a quota or the filesystem headroom is reached.
enum class FullPolicy : std::uint8_t {
  evict = 0,   ///< drop the lowest-priority, oldest records (never a higher priority than the
               ///< incoming record); if that cannot make room, reject.
  reject = 1,  ///< back-pressure: the append is rejected with `storage_full`.
};

/// The "buffer" section of the config. Every key, its default and its unit: docs/buffer.md.
struct BufferConfig {
  /// Directory holding the LMDB files (data.mdb, lock.mdb), created if missing, plus
  /// `quarantine/` for stores that could not be opened.
  std::string path = "fleetpipe-db";
  Durability durability = Durability::sync;
  /// Only for `interval`: maximum time between fsyncs, in milliseconds.
  std::uint32_t sync_interval_ms = 1000;
  /// Only for `interval`: the periodic fsync is started with Linux kernel AIO and collected by
  /// a later call (usually poll()), so no call waits on the disk. Where kernel AIO is missing or
  /// refused, and when false, the fsync runs inline in the call that finds it due.
  bool async_sync = true;
  FullPolicy policy = FullPolicy::evict;

  /// Quota on stored bytes (record header + metadata + stored payload, after compression).
  std::uint64_t max_bytes = 256ull << 20;
  /// Quota on the number of records.
  std::uint64_t max_records = 1000000;
  /// reserved_share[p]: fraction of `max_bytes` that records of priority < p may not use while
  /// records of priority >= p do not fill it. Sum must be <= 1. Default: no reservation.
  std::array<double, 8> reserved_share{};
  /// Filesystem headroom (statvfs through Port::filesystem): the buffer never grows past the
  /// point where fewer bytes / inodes than these remain free. When the stats query fails, the
  /// filesystem counts as full (only space free inside data.mdb is used; nothing is evicted for
  /// it); failures are counted in `fleetpipe_buffer_fs_stats_errors_total` and logged at most
  /// once a minute of the port's monotonic clock.
  std::uint64_t min_free_bytes = 64ull << 20;
  std::uint64_t min_free_inodes = 64;

  /// Flash-wear budget: bytes written per UTC day (persisted across restarts); 0 = unlimited.
  /// Past it, appends with priority < `wear_exempt_priority` are rejected
  /// (`wear_budget_exhausted`), whatever the policy.
  std::uint64_t max_bytes_written_per_day = 0;
  std::uint8_t wear_exempt_priority = 6;

  /// Largest accepted payload; bigger appends are rejected with `invalid_argument`.
  std::uint64_t max_payload_bytes = 64ull << 20;
  /// Payloads longer than this are stored in chunks of `chunk_bytes` (each chunk fills whole
  /// LMDB overflow pages). Must be a multiple of 4096, >= 8192.
  std::uint32_t chunk_bytes = 256u << 10;
  /// Payloads of at least this size are zstd-compressed (kept raw if that does not shrink them).
  /// 0 disables compression.
  std::uint64_t compress_min_bytes = 4096;
  int compression_level = 1;

  /// Initial LMDB map size, capped at 2 x max_bytes + 8 MiB (past which appends are handled as
  /// storage full). 0 (default): the whole cap on a 64-bit host — address space only: the file
  /// and the RSS grow with the data — so the map never has to grow while a lease pins it; 16 MiB
  /// on a 32-bit host. A smaller map doubles on MDB_MAP_FULL, and ahead of need (at half full)
  /// when no lease is open.
  std::uint64_t initial_map_bytes = 0;
  /// Quarantined stores kept in `path/quarantine/` (oldest deleted first); 0 keeps none.
  std::uint32_t max_quarantined = 2;
  /// open() returns every parked record to the upload queue, once per open (as unpark() does):
  /// a restart retries what a fault of the destination or the credentials parked. A record
  /// parked for its own fault is parked again by the uploader after its next attempt.
  bool unpark_on_open = true;
};

using RecordId = std::uint64_t;  ///< monotonically increasing, never reused in one DB

/// What a record is. Copied into the store with the payload.
struct RecordMeta {
  std::string stream;                      ///< e.g. "imu", "camera" (<= 255 bytes)
  std::string event_id;                    ///< unique per event (capture makes it)
  std::vector<std::string> trigger_ids;    ///< names of the triggers that fired
  std::uint8_t priority = 0;               ///< 0..7, 7 most important
  std::int64_t start_ns = 0, end_ns = 0;   ///< wall-clock time range, unix epoch ns
  std::string content_type;                ///< e.g. "application/vnd.fleetpipe.event"
  std::map<std::string, std::string> metadata;  ///< small, user-defined (<= 1 KiB total)
};

/// Typed result of append(): accepted(id) or rejected(reason). A rejection is already counted
/// and logged by the buffer.
struct AppendOutcome {
  bool accepted = false;
  RecordId id = 0;              ///< when accepted
  errc reason{};                ///< when rejected: storage_full, wear_budget_exhausted,
                                ///< invalid_argument, io_error
  std::string message;          ///< when rejected: which limit, for people
  std::uint32_t evicted = 0;    ///< records evicted to admit this one
};

/// One record of a Lease (metadata decoded, payload not copied).
struct LeasedRecord {
  RecordId id = 0;
  RecordMeta meta;
  std::uint64_t payload_size = 0;   ///< original (uncompressed) payload size
  std::uint32_t attempts = 0;       ///< times this record was nacked before
  std::uint64_t stored_bytes = 0;   ///< bytes it occupies in the store (quota accounting)
  bool chunked = false;             ///< payload in chunks: read it with Buffer::read_payload
  bool compressed = false;          ///< payload stored zstd-compressed
};

/// Counts per priority.
struct PriorityStats {
  std::uint64_t records = 0;
  std::uint64_t bytes = 0;  ///< stored bytes
};

/// A snapshot of the buffer's state (cheap: kept up to date by the buffer).
struct BufferStats {
  std::array<PriorityStats, 8> by_priority{};
  std::uint64_t records = 0;
  std::uint64_t bytes = 0;                 ///< stored bytes, compared against max_bytes
  std::uint64_t leased = 0;                ///< records in open leases
  std::uint64_t parked = 0;                ///< records parked (permanent failure)
  std::uint64_t staged = 0;                ///< append_staged records not yet written (0 or 1)
  std::uint64_t map_bytes = 0;             ///< current LMDB map size
  std::uint64_t file_bytes = 0;            ///< size of data.mdb
  std::uint64_t written_today = 0;         ///< wear-budget use (bytes committed this UTC day)
  std::uint64_t evicted_total = 0;         ///< since open
  std::uint64_t rejected_total = 0;        ///< since open
  std::uint64_t quarantined_total = 0;     ///< since open
  double compression_ratio = 1.0;          ///< raw / stored over compressed payloads, since open
};

class Buffer;

/// Records handed out for upload, in upload order (priority desc, then oldest). Move-only.
/// Destroying a Lease returns the records it still holds (not acked / nacked / parked) to the
/// queue without counting an attempt. Must not outlive its Buffer.
class Lease {
 public:
  Lease() noexcept;
  Lease(Lease&&) noexcept;
  Lease& operator=(Lease&&) noexcept;
  Lease(const Lease&) = delete;
  Lease& operator=(const Lease&) = delete;
  ~Lease();

  const std::vector<LeasedRecord>& records() const noexcept;
  bool empty() const noexcept { return records().empty(); }
  /// Sum of payload_size over records().
  std::uint64_t payload_bytes() const noexcept;

  /// The payload of records()[index], valid until the Lease is destroyed (or moved from).
  /// Zero-copy (a view into the LMDB map) when stored raw; a compressed inline payload is
  /// decompressed once into memory owned by the Lease. Errors: invalid_argument (index out of
  /// range), unsupported (chunked payload: use Buffer::read_payload), decode_error.
  Result<std::string_view> payload(std::size_t index) const;

  /// Zero-copy view of payload bytes of records()[index] starting at `offset`: at most `max`
  /// bytes, fewer at the end of a stored chunk (call again for the rest); empty at or past the
  /// end. Valid until the Lease is destroyed (or moved from). Lets a reader walk a chunked
  /// record without copying it. Errors: invalid_argument (index out of range), unsupported
  /// (payload stored compressed: use payload() or Buffer::read_payload), decode_error.
  Result<std::string_view> payload_piece(std::size_t index, std::uint64_t offset, std::size_t max) const;

  /// Returns all records still held to the queue now (as the destructor does).
  void release() noexcept;

  struct Impl;  // internal

 private:
  friend class Buffer;
  explicit Lease(std::unique_ptr<Impl> impl) noexcept;
  std::unique_ptr<Impl> impl_;
};

/// The durable record store. Create with `open`; not copyable; one thread drives it.
class Buffer {
 public:
  /// Opens (or creates) the store in `config.path`. Clears stale reader slots left by crashed
  /// processes. A store that cannot be opened (corrupt, incompatible) is moved to
  /// `path/quarantine/` (counted, logged at error) and a fresh one is created.
  /// Errors: invalid_config (config out of range), io_error (directory not creatable, locked
  /// by another process, fresh store not creatable).
  /// Lifetime: the Port's pieces and `metrics` must outlive the Buffer.
  static Result<std::unique_ptr<Buffer>> open(const BufferConfig& config, const Port& port,
                                              MetricsRegistry& metrics);
  ~Buffer();
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;

  /// Stores one record in its own transaction (durable per `durability` when it returns
  /// accepted). At a limit, evicts or rejects per `policy`. Never throws, never aborts.
  AppendOutcome append(const RecordMeta& meta, std::string_view payload);
  /// Stores many records in one transaction (group commit: one fsync). Outcomes are in input
  /// order; each record is admitted or rejected on its own (a rejected record does not fail the
  /// others). If the commit itself fails, every record is rejected with io_error/storage_full.
  std::vector<AppendOutcome> append_batch(
      const std::vector<std::pair<RecordMeta, std::string_view>>& records);
  /// append() for a host's loop (the pipeline's events use it): under `interval` and `none`
  /// durability a payload larger than one chunk is copied and written one chunk per later
  /// poll() call, so that no call holds the loop for the whole record (~1 ms per 640 KiB, mostly
  /// the kernel's copy into the page cache). It returns accepted with the id the record will
  /// have; the record can be leased once its last chunk is written, which is also when quotas,
  /// eviction and headroom decide on it — a refusal then is counted in
  /// `fleetpipe_buffer_rejected_total` and logged like any other. One record is staged at a time
  /// (a second call first writes the rest of the first); flush() and the destructor write it
  /// out; a crash before its last chunk loses it and its chunks are deleted at the next open.
  /// Under `sync`, for small payloads and for invalid metadata: exactly append().
  AppendOutcome append_staged(const RecordMeta& meta, std::string_view payload);

  /// Up to `max_records` records in upload order, skipping leased and parked ones, whose
  /// payload sizes sum to at most `max_bytes` — except that the first record is always
  /// included even if larger (so a big record can be uploaded). Empty lease when nothing is
  /// queued. Errors: io_error.
  Result<Lease> lease(std::uint64_t max_bytes,
                      std::size_t max_records = std::numeric_limits<std::size_t>::max());
  /// Deletes the records (uploaded). Unknown ids (already evicted/acked) are ignored.
  /// Errors: io_error (nothing deleted).
  Result<void> ack(const std::vector<RecordId>& ids);
  /// Returns leased records to the queue with attempts+1. Unknown ids are ignored.
  Result<void> nack(const std::vector<RecordId>& ids);
  /// Permanent failure: the records are kept (count toward quotas, evictable) but not leased
  /// again until unparked (unpark(), or the next open with `unpark_on_open`); counted in
  /// `fleetpipe_buffer_parked_total{reason}` and logged. The reason is stored with the record.
  Result<void> park(const std::vector<RecordId>& ids, std::string_view reason);
  /// Returns parked records to the upload queue: all of them, or (non-empty `reason`) those
  /// parked with exactly that reason. Returns how many; they keep their place in upload order
  /// and their attempt count, and the uploader may park them again. Call it when what made the
  /// uploader park them has changed (credentials, bucket, config). One write transaction; it
  /// walks the upload order (O(records)) only when something is parked. Counted in
  /// `fleetpipe_buffer_unparked_total{reason}` and logged. Errors: io_error (nothing unparked).
  Result<std::uint64_t> unpark(std::string_view reason = {});

  /// Copies payload bytes [offset, offset + n) of record `id` into `out` (decompressing as
  /// needed); returns the number of bytes copied (0 when offset >= payload size).
  /// Errors: not_found, decode_error, io_error.
  Result<std::size_t> read_payload(RecordId id, std::uint64_t offset, char* out, std::size_t n);

  /// Small persistent key/value table (uploader resume state). put_state/erase_state are synced
  /// to disk on return under `sync` and `none`; under `interval` with `async_sync` their fsync is
  /// started at once in the background (the caller never waits on the disk) and commits stay
  /// ordered, so no later ack reaches the disk without them. Keys <= 400 bytes, values <= 1 MiB.
  /// Errors: invalid_argument, io_error, storage_full (filesystem headroom).
  Result<void> put_state(std::string_view key, std::string_view value);
  Result<std::optional<std::string>> get_state(std::string_view key);
  Result<void> erase_state(std::string_view key);
  /// All (key, value) pairs whose key starts with `prefix`, sorted by key.
  Result<std::vector<std::pair<std::string, std::string>>> list_state(std::string_view prefix);

  /// Periodic housekeeping for the host's loop: writes one chunk of a staged record (append_staged),
  /// fsyncs if an `interval` sync is due, clears
  /// stale reader slots (at most once a second), refreshes gauges. Cheap when nothing is due
  /// (no system call). Errors: io_error.
  Result<void> poll();
  /// Writes a staged record out, then forces all committed transactions to disk now (any
  /// durability). Errors: io_error.
  Result<void> flush();

  BufferStats stats() const;
  const BufferConfig& config() const noexcept;

  struct Impl;  // internal

 private:
  explicit Buffer(std::unique_ptr<Impl> impl) noexcept;
  std::unique_ptr<Impl> impl_;
};

// ---------------------------------------------------------------------------------------------
// Read-only inspection (the `fleetpipe inspect` command), safe while a writer has the store open
// ---------------------------------------------------------------------------------------------

struct StreamPriorityUsage {
  std::string stream;
  std::uint8_t priority = 0;
  std::uint64_t records = 0;
  std::uint64_t bytes = 0;          ///< stored bytes
  std::uint64_t payload_bytes = 0;  ///< original payload bytes
  std::uint64_t parked = 0;
  std::int64_t oldest_ns = 0;       ///< smallest start_ns
  std::int64_t newest_ns = 0;       ///< largest end_ns
};

struct BufferReport {
  std::vector<StreamPriorityUsage> usage;  ///< sorted by stream, then priority desc
  std::uint64_t records = 0;
  std::uint64_t bytes = 0;
  std::uint64_t next_id = 0;
  /// Quotas as the writer last opened the store with (persisted in the store).
  std::uint64_t max_bytes = 0, max_records = 0, max_bytes_written_per_day = 0;
  std::int64_t wear_day = 0;            ///< UTC day number (days since epoch)
  std::uint64_t written_on_wear_day = 0;
  std::uint64_t map_bytes = 0, file_bytes = 0;
  std::vector<std::string> quarantined;  ///< file names in path/quarantine/
  std::vector<std::pair<std::string, std::string>> state;  ///< the state table (key, size)
};

/// Opens the store at `dir` read-only (a read transaction; no writes, no locks taken from the
/// writer) and summarizes it. Errors: not_found (no store), corrupt_database, io_error.
Result<BufferReport> inspect_buffer(const std::string& dir);

}  // namespace fleetpipe
