// Internal: Buffer::Impl, the state behind one Buffer, and which file implements each part.
//
// Reading guide: Impl holds the environment and the in-memory mirror of the persistent
// counters; every mutation runs through write_txn() (below; commit effects in durability.cpp), which retries after
// growing the map on MDB_MAP_FULL and rolls the mirror back when a transaction aborts.
// Admission (quotas, headroom, wear, eviction, admission.cpp) runs inside the append
// transaction so that evictions and the insert commit together.
#pragma once

#include <lmdb.h>
#include <zstd.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <tuple>
#include <unordered_map>
#include <utility>
#include <vector>

#include "buffer/async_fdatasync.hpp"
#include "buffer/buffer_format.hpp"
#include "buffer/lmdb.hpp"
#include "buffer/sync_checkpoint.hpp"
#include "fleetpipe/buffer.hpp"

namespace fleetpipe {

namespace detail {

inline constexpr std::string_view kBufferComponent = "buffer";
inline constexpr std::size_t kPageHeader = 16;  // LMDB PAGEHDRSZ: overflow values start after it
inline constexpr std::size_t kMaxMetadataBytes = 1024;
inline constexpr std::size_t kMaxStateKey = 400;
inline constexpr std::size_t kMaxStateValue = 1u << 20;

inline std::int64_t wall_ns(const Port& port) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(port.clock->wall().time_since_epoch())
      .count();
}
inline std::int64_t utc_day(std::int64_t ns) {
  constexpr std::int64_t kDay = 86400LL * 1000000000LL;
  return ns >= 0 ? ns / kDay : (ns - kDay + 1) / kDay;
}
inline std::uint64_t file_size_of(const std::filesystem::path& p) {
  std::error_code ec;
  auto n = std::filesystem::file_size(p, ec);
  return ec ? 0 : n;
}

/// Validation of a BufferConfig built in C++ (config.cpp; the JSON parser applies the same
/// limits). Empty when valid, else "key: why".
std::string validate(const BufferConfig& c);

}  // namespace detail

struct Buffer::Impl {
  using PersistentCounters = detail::PersistentCounters;
  using RecordHeader = detail::RecordHeader;

  BufferConfig cfg;
  Port port;
  MetricsRegistry& metrics;

  std::filesystem::path dir;
  int dir_fd = -1;  // flock()ed: one writer process per directory
  detail::lmdb::Env env;
  MDB_dbi db_records = 0, db_order = 0, db_chunks = 0, db_state = 0, db_meta = 0, db_parked = 0,
          db_main = 0;
  std::uint64_t map_size = 0, map_cap = 0;
  mutable std::uint64_t file_bytes = 0;  // data.mdb's size at the last fstat (note_file_size)
  mutable std::uint64_t file_bytes_checked_at = 0;  // file_bytes_bound() at exact_file_bytes()' last fstat
  std::size_t chunk_raw = 0;     // payload bytes per chunk (a chunk value fills whole pages), the store's

  PersistentCounters pc;      // mirror of the stored counters as of the last commit
  bool env_broken = false;    // MDB_PANIC / corruption seen: reopen when no lease is open
  bool fs_pressure = false;   // a write failed for lack of space: admit only what eviction frees
  bool broken_is_corrupt = false;

  // Leases (in memory only): id -> serial of the lease holding it.
  std::unordered_map<RecordId, std::uint64_t> leased;
  std::uint64_t lease_serial = 0;
  std::size_t open_leases = 0;

  // Durability `interval`.
  MonoTime last_sync{};
  MonoTime last_reader_check{};  // mdb_reader_check probes every reader's pid: once a second
  bool unsynced = false;         // commits since the last fsync was started
  bool sync_soon = false;        // a state write asked for the next fsync without waiting the interval
  detail::AsyncFdatasync background_sync;  // the fsync in flight (async_sync)
  bool told_inline = false;                // logged once: kernel AIO unavailable
  // The last synced state kept restorable (sync_checkpoint.hpp): an fsync of the data file,
  // then one of the checkpoint file; `pin_synced` holds the state the checkpoint names,
  // `pin_candidate` the one being synced.
  enum class SyncPhase : std::uint8_t { idle, data, checkpoint };
  SyncPhase sync_phase = SyncPhase::idle;
  bool checkpoints = false;  // `interval`, and LMDB's meta page is the format we know
  detail::CheckpointFile checkpoint_file;
  detail::CheckpointRecord candidate;
  detail::lmdb::Txn pin_synced, pin_candidate;
  std::string meta_page;  // pin_candidate_state()'s read of the meta page
  Counter* m_checkpoints = nullptr;
  Counter* m_rollbacks = nullptr;
  bool rolled_back_at_open = false;  // counted once the metrics exist (start_checkpoints)

  ZSTD_CCtx* cctx = nullptr;
  ZSTD_DCtx* dctx = nullptr;
  std::unique_ptr<char[]> probe_out;  // looks_incompressible()'s output

  // The compressed chunk (or small compressed payload) read_payload decompressed last. The
  // uploader reads a record in io_chunk_size pieces — 4 KiB under a slow cap — and without this
  // decompressed the whole 256 KiB chunk again for every piece. Record ids are not reused within
  // a store; open_env() forgets it (a quarantined store's successor counts ids from 1 again).
  struct Unpacked {
    std::unique_ptr<char[]> data;
    std::size_t cap = 0, len = 0;
    RecordId id = 0;
    std::uint32_t index = 0;  // chunk index; kWhole: an unchunked payload
    bool valid = false;
    static constexpr std::uint32_t kWhole = UINT32_MAX;
  } unpacked;

  // A large record on the host's loop, written one chunk per poll() (staging.cpp).
  struct Staged {
    bool active = false;
    RecordMeta meta;
    std::string payload;  // capacity kept between records: no fresh pages in steady state
    RecordId id = 0;
    std::size_t next_chunk = 0;
    std::uint64_t chunk_total = 0;  // stored bytes of the chunks written
    std::int64_t append_ns = 0;
  } staged;
  std::string chunk_out;  // a compressed chunk before it is copied into the store

  // Metrics (registered once; the labelled families below lazily, on the rare limit path).
  Counter& m_appended;
  Counter& m_appended_bytes;
  Counter& m_staged;
  Counter& m_acked;
  Counter& m_nacked;
  Counter& m_quarantined;
  Counter& m_map_resizes;
  Counter& m_stale_readers;
  Counter& m_commit_errors;
  Counter& m_reopens;
  Counter& m_syncs_background;
  Counter& m_syncs_inline;
  Counter& m_sync_errors;
  Gauge& g_records;
  Gauge& g_bytes;
  Gauge& g_map;
  Gauge& g_written_today;
  Gauge& g_ratio;
  Gauge& g_leased;
  std::map<std::tuple<std::string, int, std::string>, Counter*> m_evicted, m_rejected;
  std::map<std::string, Counter*> m_parked, m_unparked;
  Counter& m_fs_stats_errors;
  // Failed filesystem stats queries (admission.cpp): warned at most once a minute.
  bool fs_stats_failing = false;       // the last query failed
  bool fs_stats_warned_ever = false;
  bool fs_stats_recovery_due = false;  // a warning was logged: log the recovery once
  MonoTime fs_stats_warned_at{};
  std::uint64_t fs_stats_unlogged = 0;  // failures since the last warning
  std::uint64_t fs_stats_refused = 0;   // appends refused for it since the last warning (counted,
                                        // logged in that warning rather than one line each)
  // The last filesystem stats, reused by the headroom guards while far from them (admission.cpp;
  // the bound is in docs/buffer.md, Admission).
  struct FsStatsCache {
    bool valid = false;
    FsStats stats;
    MonoTime at{};
    std::uint64_t file_bytes = 0;  // data.mdb's size (fstat) when they were queried
  } fs_cache;
  std::string dir_string;  // dir.string(): the path every stats query is asked for
  std::uint64_t evicted_total = 0, rejected_total = 0, quarantined_total = 0;
  double raw_compressed = 0, stored_compressed = 0;

  // ---- buffer.cpp: construction, log, gauges, labelled counters -------------------------
  Impl(const BufferConfig& c, const Port& p, MetricsRegistry& m);
  ~Impl();
  void log(LogLevel l, const std::string& msg) const;
  void refresh_gauges();
  Counter& labelled(std::map<std::tuple<std::string, int, std::string>, Counter*>& cache,
                    const char* name, const char* help, const std::string& reason, int prio,
                    const std::string& stream);
  void count_eviction(const std::string& reason, int prio, const std::string& stream, std::uint64_t n);
  void count_rejection(const std::string& reason, int prio, const std::string& stream);

  // ---- open.cpp: environment, format, recount, quarantine, repair -----------------------
  Result<void> lock_dir();
  void close_env();
  int open_env(std::string& why);
  int recount(MDB_txn* txn);
  int put_counters(MDB_txn* txn);
  int use_stored_chunk_size(MDB_txn* txn);
  void quarantine(const std::string& why);
  Result<void> open_or_recover();
  void note_failure(int rc);
  void try_repair();
  bool usable();
  void check_readers();

  // ---- durability.cpp: write transactions, map growth, fsync ----------------------------
  template <class Body>
  int write_txn(Body&& body, bool force_sync = false);
  void grow_ahead();
  bool grow_map();
  void note_file_size() const;
  std::uint64_t file_bytes_bound() const;
  std::uint64_t exact_file_bytes() const;
  void after_commit(bool force_sync);
  int sync_if_due(MonoTime now);
  void note_sync_result(int err);
  int do_sync(bool at_open = false);
  void sync_step_done(int err);
  void start_checkpoints();
  bool pin_candidate_state();
  void write_checkpoint(bool in_background);
  void finish_checkpoint(int err);
  void stop_checkpoints();

  // ---- records.cpp: a record's encoding, compression, reading back, deletion ------------
  /// A record ready to be written (compressed outside the transaction).
  struct Prepared {
    std::size_t index = 0;
    std::string value;                // header + meta (+ compressed inline payload)
    std::string_view inline_payload;  // raw inline payload, the caller's (stored after `value`)
    std::vector<std::string> chunks;  // chunk values (kind byte + data)
    RecordHeader header;
    std::string stream;
    RecordId fixed_id = 0;            // staged record: the id it reserved (else the next one)
  };
  /// Chunk `idx` of a record as stored: its bytes after the tag, raw or zstd, and the payload
  /// bytes it holds. Valid while the transaction it was read in is.
  struct StoredChunk {
    std::string_view bytes;
    bool raw = true;
    std::size_t len = 0;
  };
  bool looks_incompressible(std::string_view in);
  bool maybe_compress(std::string_view in, std::string& out);
  Prepared prepare(std::size_t index, const RecordMeta& m, std::string_view payload, std::int64_t now_ns);
  int insert_record(MDB_txn* txn, Prepared& p, AppendOutcome& out);
  int delete_record(MDB_txn* txn, RecordId id, RecordHeader* h_out = nullptr,
                    std::string* stream_out = nullptr);
  std::optional<std::string_view> unpack(RecordId id, std::uint32_t index, std::string_view compressed,
                                         std::size_t len);
  Result<StoredChunk> chunk_value(MDB_txn* txn, RecordId id, std::uint32_t idx,
                                  std::uint64_t payload_size) const;
  Result<std::size_t> read_payload(RecordId id, std::uint64_t offset, char* out, std::size_t n);

  // ---- admission.cpp: validation, wear budget, quotas, headroom, eviction ---------------
  struct Eviction {
    RecordId id;
    int priority;
    std::string stream;
    std::string reason;
  };
  /// Filesystem headroom as a cap on stored bytes; `reason` names the binding guard.
  struct FsCap {
    std::uint64_t cap = UINT64_MAX;
    std::string reason;
    bool may_evict = true;  // false: the free space is unknown, evicting for it could cost data
  };
  std::string check_meta(const RecordMeta& m, std::size_t payload_size) const;
  void roll_wear_day();
  FsCap fs_cap(MDB_txn* txn);
  std::uint64_t free_in_file(MDB_txn* txn);
  std::uint64_t quota_cap(int p) const;
  Result<FsStats> fs_stats();
  Result<FsStats> headroom_stats();
  int admit(MDB_txn* txn, Prepared& p, const FsCap& fsc, AppendOutcome& out,
            std::vector<Eviction>& evictions, std::string& reject_reason);

  // ---- append.cpp: append / append_batch, commit failures, eviction reports -------------
  std::vector<AppendOutcome> append_many(const std::vector<std::pair<RecordMeta, std::string_view>>& in);
  // One record to append, not copied: append() and append_batch() share append_core().
  struct AppendItem {
    const RecordMeta* meta;
    std::string_view payload;
  };
  AppendOutcome append_one(const RecordMeta& m, std::string_view payload);
  void append_core(const AppendItem* in, std::size_t n, AppendOutcome* out, std::string* reasons);
  std::string commit_failure(int rc, AppendOutcome& out);
  void report_evictions(const std::vector<Eviction>& evictions) noexcept;

  // ---- staging.cpp: append_staged, one chunk per poll() ---------------------------------
  AppendOutcome stage(const RecordMeta& m, std::string_view payload);
  int put_staged_chunk(MDB_txn* txn, std::size_t index, std::uint64_t& stored);
  int put_staging_key(MDB_txn* txn, bool present);
  int delete_chunks(MDB_txn* txn, RecordId id);
  Prepared prepare_staged_head(std::uint64_t chunk_total);
  bool step_staged();
  void abandon_staged(int rc);
  void refuse_staged(const std::string& reason, const std::string& message);
  int drop_interrupted_staging(MDB_txn* txn);

  // ---- lease.cpp: the upload queue (lease, ack, nack, park, unpark) ---------------------
  Result<std::unique_ptr<Lease::Impl>> lease(std::uint64_t max_bytes, std::size_t max_records);
  void release(const std::vector<LeasedRecord>& recs, std::uint64_t serial);
  Result<void> ack(const std::vector<RecordId>& ids);
  Result<void> nack(const std::vector<RecordId>& ids);
  Result<void> park(const std::vector<RecordId>& ids, std::string_view reason);
  Result<std::uint64_t> unpark(std::string_view reason, const char* when);

  // ---- state.cpp: the uploader's key/value table ----------------------------------------
  Result<void> put_state(std::string_view key, std::string_view value);
  Result<std::optional<std::string>> get_state(std::string_view key);
  Result<void> erase_state(std::string_view key);
  Result<std::vector<std::pair<std::string, std::string>>> list_state(std::string_view prefix);
};

/// Runs `body(txn)` in a write transaction and commits it with the counters. On MAP_FULL the
/// map grows and the body runs again from scratch. On any failure the mirror is rolled back.
/// `force_sync`: fsync this commit whatever the durability setting.
template <class Body>
int Buffer::Impl::write_txn(Body&& body, bool force_sync) {
  if (!usable()) return MDB_PANIC;
  for (int attempt = 0;; ++attempt) {
    PersistentCounters saved = pc;
    detail::lmdb::Txn txn;
    int rc = txn.begin(env.get(), 0);
    if (rc == 0) {
      rc = body(txn.get());
      if (rc == 0) rc = put_counters(txn.get());
      if (rc == 0) {
        rc = txn.commit();
      } else {
        txn.abort();
      }
    }
    if (rc == 0) {
      after_commit(force_sync);
      return 0;
    }
    pc = saved;
    if (rc == MDB_MAP_FULL && attempt < 16 && grow_map()) continue;
    m_commit_errors.inc();
    note_failure(rc);
    return rc;
  }
}

/// What a Lease holds: its read snapshot, its records and their inline payloads.
struct Lease::Impl {
  Buffer::Impl* owner = nullptr;
  std::uint64_t serial = 0;
  detail::lmdb::Txn rtxn;
  std::vector<LeasedRecord> records;
  std::vector<std::string_view> stored;  // inline stored payload (view into the map)
  mutable std::vector<std::unique_ptr<std::string>> decoded;

  ~Impl() { end(); }
  void end() noexcept;
};

}  // namespace fleetpipe
