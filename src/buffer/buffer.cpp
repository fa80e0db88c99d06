// Buffer: the durable record store on flash, on LMDB. Design and layout: docs/buffer.md.
//
// Reading guide: Impl holds the environment and the in-memory mirror of the persistent
// counters; every mutation runs through Impl::write_txn(), which retries after growing the map
// on MDB_MAP_FULL and rolls the mirror back when a transaction aborts. Admission (quotas,
// headroom, wear, eviction) is Impl::admit(); it runs inside the append transaction so that
// evictions and the insert commit together.
#include "fleetpipe/buffer.hpp"

#include <fcntl.h>
#include <lmdb.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zstd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <tuple>
#include <unordered_map>

#include "buffer/async_fdatasync.hpp"
#include "buffer/buffer_format.hpp"
#include "common/config_parsers.hpp"

namespace fleetpipe {

namespace fs = std::filesystem;
using namespace detail;

namespace {

constexpr std::string_view kComponent = "buffer";
constexpr std::size_t kPageHeader = 16;   // LMDB PAGEHDRSZ: overflow values start after it
constexpr std::size_t kMaxMetadataBytes = 1024;
constexpr std::size_t kMaxStateKey = 400;
constexpr std::size_t kMaxStateValue = 1u << 20;

MDB_val val(const void* p, std::size_t n) { return MDB_val{n, const_cast<void*>(p)}; }
std::string_view sv(const MDB_val& v) { return {static_cast<const char*>(v.mv_data), v.mv_size}; }

/// LMDB errors that mean "this store is damaged": quarantine it.
bool is_corruption(int rc) {
  return rc == MDB_INVALID || rc == MDB_VERSION_MISMATCH || rc == MDB_CORRUPTED ||
         rc == MDB_PAGE_NOTFOUND || rc == MDB_INCOMPATIBLE;
}

std::string mdb_text(int rc) { return std::string(mdb_strerror(rc)); }

std::int64_t wall_ns(const Port& port) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             port.clock->wall().time_since_epoch())
      .count();
}
std::int64_t utc_day(std::int64_t ns) {
  constexpr std::int64_t kDay = 86400LL * 1000000000LL;
  return ns >= 0 ? ns / kDay : (ns - kDay + 1) / kDay;
}

std::uint64_t file_size_of(const fs::path& p) {
  std::error_code ec;
  auto n = fs::file_size(p, ec);
  return ec ? 0 : n;
}

/// Validation of a BufferConfig built in C++ (the JSON parser applies the same limits).
std::string validate(const BufferConfig& c) {
  if (c.path.empty()) return "path: must not be empty";
  if (c.max_bytes == 0) return "max_bytes: must be > 0";
  // 32-bit targets: the LMDB map (up to 2 x max_bytes + 8 MiB) is one mmap in a ~3 GiB address
  // space and its size a 32-bit size_t: cap it at 1 GiB (docs/porting.md).
  constexpr std::uint64_t kMaxMap32 = 1ull << 30, kMaxBytes32 = (kMaxMap32 - (8ull << 20)) / 2;
  if (sizeof(std::size_t) < 8 && c.max_bytes > kMaxBytes32)
    return "max_bytes: at most " + std::to_string(kMaxBytes32) + " (508MiB) on a 32-bit target";
  if (sizeof(std::size_t) < 8 && c.initial_map_bytes > kMaxMap32)
    return "initial_map_bytes: at most " + std::to_string(kMaxMap32) + " (1GiB) on a 32-bit target";
  if (c.max_records == 0) return "max_records: must be > 0";
  double sum = 0;
  for (double s : c.reserved_share) {
    if (!(s >= 0 && s <= 1)) return "reserved_share: each share must be within [0, 1]";
    sum += s;
  }
  if (sum > 1.0 + 1e-9) return "reserved_share: shares must sum to <= 1";
  if (c.wear_exempt_priority > 8) return "wear_exempt_priority: must be within [0, 8]";
  if (c.chunk_bytes < 8192 || c.chunk_bytes % 4096 != 0)
    return "chunk_bytes: must be a multiple of 4096, >= 8192";
  if (c.compression_level < -7 || c.compression_level > 22)
    return "compression_level: must be within [-7, 22]";
  if (c.max_payload_bytes == 0) return "max_payload_bytes: must be > 0";
  if (c.durability == Durability::interval && c.sync_interval_ms == 0)
    return "sync_interval_ms: must be > 0";
  return {};
}

}  // namespace

// =============================================================================================
// Impl
// =============================================================================================

struct Buffer::Impl {
  BufferConfig cfg;
  Port port;
  MetricsRegistry& metrics;

  fs::path dir;
  int dir_fd = -1;  // flock()ed: one writer process per directory
  MDB_env* env = nullptr;
  MDB_dbi db_records = 0, db_order = 0, db_chunks = 0, db_state = 0, db_meta = 0, db_main = 0;
  std::uint64_t map_size = 0, map_cap = 0;
  std::uint64_t file_bytes = 0;  // data.mdb's size as of the last commit (note_file_size)
  std::size_t chunk_raw = 0;  // payload bytes per chunk (a chunk value fills whole pages)

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

  /// `compressed` (zstd) of record `id`, chunk `index`, decompressed to exactly `len` bytes —
  /// from the cache when it was the last one asked for. Empty optional: damaged.
  std::optional<std::string_view> unpack(RecordId id, std::uint32_t index, std::string_view compressed,
                                         std::size_t len) {
    Unpacked& u = unpacked;
    if (u.valid && u.id == id && u.index == index && u.len == len) return std::string_view(u.data.get(), len);
    if (!dctx) dctx = ZSTD_createDCtx();
    if (u.cap < len) {
      u.data.reset(new char[len]);  // no zero-fill: zstd writes every byte it reports
      u.cap = len;
    }
    u.valid = false;
    std::size_t d = ZSTD_decompressDCtx(dctx, u.data.get(), len, compressed.data(), compressed.size());
    if (ZSTD_isError(d) || d != len) return std::nullopt;
    u.id = id;
    u.index = index;
    u.len = len;
    u.valid = true;
    return std::string_view(u.data.get(), len);
  }

  /// Chunk `idx` of record `id` (whose payload is `payload_size` bytes) as stored: its bytes after
  /// the tag, raw or zstd, and the payload bytes it holds. A missing, empty or (raw) wrongly
  /// sized chunk is decode_error. Valid while `txn` is.
  struct StoredChunk {
    std::string_view bytes;
    bool raw = true;
    std::size_t len = 0;
  };
  Result<StoredChunk> chunk_value(MDB_txn* txn, RecordId id, std::uint32_t idx, std::uint64_t payload_size) const {
    ChunkKey ck(id, idx);
    MDB_val k = val(ck.b, 12), v;
    int rc = mdb_get(txn, db_chunks, &k, &v);
    if (rc)
      return Error(errc::decode_error, "record " + std::to_string(id) + ": chunk " + std::to_string(idx) +
                                           " missing: " + mdb_text(rc));
    std::string_view c = sv(v);
    if (c.empty()) return Error(errc::decode_error, "record " + std::to_string(id) + ": empty chunk");
    StoredChunk out;
    out.bytes = c.substr(1);
    out.raw = c[0] == char(kChunkRaw);
    out.len = static_cast<std::size_t>(std::min<std::uint64_t>(chunk_raw, payload_size - std::uint64_t(idx) * chunk_raw));
    if (out.raw && out.bytes.size() != out.len)
      return Error(errc::decode_error, "record " + std::to_string(id) + ": chunk has the wrong size");
    return out;
  }

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
  std::map<std::string, Counter*> m_parked;
  std::uint64_t evicted_total = 0, rejected_total = 0, quarantined_total = 0;
  double raw_compressed = 0, stored_compressed = 0;

  Impl(const BufferConfig& c, const Port& p, MetricsRegistry& m)
      : cfg(c),
        port(p.with_defaults()),
        metrics(m),
        m_appended(m.counter("fleetpipe_buffer_appended_total", "Records accepted")),
        m_appended_bytes(m.counter("fleetpipe_buffer_appended_bytes_total",
                                   "Stored bytes of accepted records (after compression)")),
        m_staged(m.counter("fleetpipe_buffer_staged_total",
                           "Large records queued by append_staged, written one chunk per poll()")),
        m_acked(m.counter("fleetpipe_buffer_acked_total", "Records deleted after upload")),
        m_nacked(m.counter("fleetpipe_buffer_nacked_total", "Records returned to the queue")),
        m_quarantined(m.counter("fleetpipe_buffer_quarantined_total",
                                "Stores moved aside because they could not be opened")),
        m_map_resizes(m.counter("fleetpipe_buffer_map_resizes_total", "LMDB map growths")),
        m_stale_readers(m.counter("fleetpipe_buffer_stale_readers_cleared_total",
                                  "Reader slots of dead processes cleared")),
        m_commit_errors(m.counter("fleetpipe_buffer_commit_errors_total",
                                  "Write transactions that failed (I/O, full filesystem)")),
        m_reopens(m.counter("fleetpipe_buffer_reopens_total",
                            "Environment reopened after an LMDB panic")),
        m_syncs_background(m.counter("fleetpipe_buffer_syncs_total",
                                     "fsyncs of the store outside commits (interval durability, flush())",
                                     {{"mode", "background"}})),
        m_syncs_inline(m.counter("fleetpipe_buffer_syncs_total",
                                 "fsyncs of the store outside commits (interval durability, flush())",
                                 {{"mode", "inline"}})),
        m_sync_errors(m.counter("fleetpipe_buffer_sync_errors_total",
                                "fsyncs of the store that failed (retried at the next interval)")),
        g_records(m.gauge("fleetpipe_buffer_records", "Records stored")),
        g_bytes(m.gauge("fleetpipe_buffer_bytes", "Stored bytes (quota accounting)")),
        g_map(m.gauge("fleetpipe_buffer_map_bytes", "LMDB map size")),
        g_written_today(m.gauge("fleetpipe_buffer_written_today_bytes",
                                "Bytes written this UTC day (flash-wear budget use)")),
        g_ratio(m.gauge("fleetpipe_buffer_compression_ratio",
                        "Raw / stored bytes over compressed payloads since open")),
        g_leased(m.gauge("fleetpipe_buffer_leased_records", "Records in open leases")) {
    g_ratio.set(1.0);
  }

  ~Impl() {
    while (staged.active) step_staged();  // accepted: written before the store closes
    close_env();
    if (dir_fd >= 0) ::close(dir_fd);
    ZSTD_freeCCtx(cctx);
    ZSTD_freeDCtx(dctx);
  }

  void log(LogLevel l, const std::string& msg) const { fleetpipe::log(port, l, kComponent, msg); }

  void refresh_gauges() {
    g_records.set(static_cast<double>(pc.total_records()));
    g_bytes.set(static_cast<double>(pc.total_bytes()));
    g_map.set(static_cast<double>(map_size));
    g_written_today.set(static_cast<double>(pc.wear_bytes));
    g_leased.set(static_cast<double>(leased.size()));
    if (stored_compressed > 0) g_ratio.set(raw_compressed / stored_compressed);
  }

  // ---- counters with labels -------------------------------------------------------------

  Counter& labelled(std::map<std::tuple<std::string, int, std::string>, Counter*>& cache,
                    const char* name, const char* help, const std::string& reason, int prio,
                    const std::string& stream) {
    auto key = std::make_tuple(reason, prio, stream);
    auto it = cache.find(key);
    if (it != cache.end()) return *it->second;
    Counter& c = metrics.counter(
        name, help,
        {{"reason", reason}, {"priority", std::to_string(prio)}, {"stream", stream}});
    cache.emplace(key, &c);
    return c;
  }
  void count_eviction(const std::string& reason, int prio, const std::string& stream,
                      std::uint64_t n) {
    labelled(m_evicted, "fleetpipe_buffer_evicted_total",
             "Records evicted to admit others (policy evict)", reason, prio, stream)
        .inc(n);
    evicted_total += n;
  }
  void count_rejection(const std::string& reason, int prio, const std::string& stream) {
    labelled(m_rejected, "fleetpipe_buffer_rejected_total", "Appends rejected", reason, prio,
             stream)
        .inc();
    ++rejected_total;
  }

  // ---- environment ----------------------------------------------------------------------

  void close_env() {
    if (background_sync.in_flight()) note_sync_result(background_sync.wait());  // it uses env's fd
    if (env) mdb_env_close(env);
    env = nullptr;
  }

  /// Opens the environment in `dir`. Returns 0, an LMDB/errno code, or MDB_CORRUPTED /
  /// MDB_INCOMPATIBLE for content we do not accept; `why` says what.
  int open_env(std::string& why) {
    close_env();
    int rc = mdb_env_create(&env);
    if (rc) return why = "mdb_env_create: " + mdb_text(rc), rc;
    mdb_env_set_maxdbs(env, 8);
    std::uint64_t file = file_size_of(dir / "data.mdb");
    const std::uint64_t initial =
        cfg.initial_map_bytes ? cfg.initial_map_bytes : sizeof(void*) >= 8 ? map_cap : std::uint64_t{16} << 20;
    map_size = std::max<std::uint64_t>(initial, file + file / 4);
    map_size = std::max<std::uint64_t>(map_size, 1u << 20);
    map_size = (map_size + 65535) / 65536 * 65536;
    mdb_env_set_mapsize(env, map_size);
    unsigned flags = MDB_NOTLS | MDB_NORDAHEAD;
    if (cfg.durability != Durability::sync) flags |= MDB_NOSYNC;
    rc = mdb_env_open(env, dir.c_str(), flags, 0644);
    if (rc) {
      why = "mdb_env_open: " + mdb_text(rc);
      close_env();
      return rc;
    }
    int dead = 0;
    mdb_reader_check(env, &dead);
    if (dead > 0) {
      m_stale_readers.inc(static_cast<std::uint64_t>(dead));
      log(LogLevel::info, "cleared " + std::to_string(dead) + " stale reader slot(s)");
    }
    MDB_envinfo info;
    MDB_stat st;
    mdb_env_info(env, &info);
    mdb_env_stat(env, &st);
    map_size = info.me_mapsize;
    // A truncated file would make LMDB fault on access through the map: refuse it.
    std::uint64_t need = (static_cast<std::uint64_t>(info.me_last_pgno) + 1) * st.ms_psize;
    if (file_size_of(dir / "data.mdb") < need) {
      why = "data.mdb is shorter than its last used page (truncated)";
      close_env();
      return MDB_CORRUPTED;
    }
    chunk_raw = cfg.chunk_bytes - kPageHeader - 1;
    unpacked.valid = false;

    MDB_txn* txn = nullptr;
    rc = mdb_txn_begin(env, nullptr, 0, &txn);
    if (rc) return why = "mdb_txn_begin: " + mdb_text(rc), close_env(), rc;
    auto fail = [&](int code, std::string w) {
      mdb_txn_abort(txn);
      close_env();
      why = std::move(w);
      return code;
    };
    for (auto [name, dbi] : {std::pair{kDbRecords, &db_records}, std::pair{kDbOrder, &db_order},
                             std::pair{kDbChunks, &db_chunks}, std::pair{kDbState, &db_state},
                             std::pair{kDbMeta, &db_meta}}) {
      rc = mdb_dbi_open(txn, name, MDB_CREATE, dbi);
      if (rc) return fail(rc, std::string("mdb_dbi_open(") + name + "): " + mdb_text(rc));
    }
    if ((rc = mdb_dbi_open(txn, nullptr, 0, &db_main))) return fail(rc, "mdb_dbi_open(main): " + mdb_text(rc));
    MDB_val k = val("format", 6), v;
    rc = mdb_get(txn, db_meta, &k, &v);
    if (rc == MDB_NOTFOUND) {
      MDB_stat rs;
      mdb_stat(txn, db_records, &rs);
      if (rs.ms_entries != 0) return fail(MDB_CORRUPTED, "records present but no format marker");
      std::string f;
      put_le(f, kBufferFormat, 4);
      MDB_val fv = val(f.data(), f.size());
      rc = mdb_put(txn, db_meta, &k, &fv, 0);
      if (rc) return fail(rc, "writing format marker: " + mdb_text(rc));
      pc = PersistentCounters{};
    } else if (rc) {
      return fail(rc, "reading format marker: " + mdb_text(rc));
    } else {
      if (v.mv_size != 4 || get_le(static_cast<const char*>(v.mv_data), 4) != kBufferFormat)
        return fail(MDB_INCOMPATIBLE, "unknown buffer format");
      MDB_val ck = val(kCountersKey, std::strlen(kCountersKey)), cv;
      MDB_val lk = val(kLegacyCountersKey, std::strlen(kLegacyCountersKey));
      rc = mdb_get(txn, db_main, &ck, &cv);
      if (rc == MDB_NOTFOUND) rc = mdb_get(txn, db_meta, &lk, &cv);  // an older store
      if (rc == MDB_NOTFOUND) {
        pc = PersistentCounters{};
      } else if (rc) {
        return fail(rc, "reading counters: " + mdb_text(rc));
      } else {
        auto d = PersistentCounters::decode(sv(cv));
        if (!d) return fail(MDB_CORRUPTED, "counters record has a bad size");
        pc = *d;
      }
      rc = mdb_del(txn, db_meta, &lk, nullptr);  // moved to the main DB by put_counters below
      if (rc && rc != MDB_NOTFOUND) return fail(rc, "moving counters: " + mdb_text(rc));
    }
    // The mirror must match the data; if not (should not happen), recount rather than trust it.
    MDB_stat rs, os;
    mdb_stat(txn, db_records, &rs);
    mdb_stat(txn, db_order, &os);
    if (rs.ms_entries != pc.total_records() || os.ms_entries != rs.ms_entries) {
      log(LogLevel::warning, "record counters disagree with the store: recounting");
      rc = recount(txn);
      if (rc) return fail(rc, "recount: " + mdb_text(rc));
    }
    if ((rc = drop_interrupted_staging(txn))) return fail(rc, "staged chunks: " + mdb_text(rc));
    // Quotas as last opened with, for `fleetpipe inspect`.
    std::string q;
    put_le(q, cfg.max_bytes, 8);
    put_le(q, cfg.max_records, 8);
    put_le(q, cfg.max_bytes_written_per_day, 8);
    MDB_val qk = val("quota", 5), qv = val(q.data(), q.size());
    if ((rc = mdb_put(txn, db_meta, &qk, &qv, 0))) return fail(rc, "writing quota: " + mdb_text(rc));
    if ((rc = put_counters(txn))) return fail(rc, "writing counters: " + mdb_text(rc));
    rc = mdb_txn_commit(txn);
    if (rc) return close_env(), why = "commit: " + mdb_text(rc), rc;
    env_broken = false;
    note_file_size();
    refresh_gauges();
    return 0;
  }

  /// Rebuilds the per-priority counters and the order index from the records table.
  int recount(MDB_txn* txn) {
    PersistentCounters fresh;
    fresh.next_id = pc.next_id;
    fresh.wear_day = pc.wear_day;
    fresh.wear_bytes = pc.wear_bytes;
    int rc = mdb_drop(txn, db_order, 0);
    if (rc) return rc;
    MDB_cursor* cur = nullptr;
    if ((rc = mdb_cursor_open(txn, db_records, &cur))) return rc;
    MDB_val k, v;
    std::vector<RecordId> bad;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
      auto h = RecordHeader::decode(sv(v));
      RecordId id = k.mv_size == 8 ? get_be(static_cast<const char*>(k.mv_data), 8) : 0;
      if (!h || id == 0) {
        bad.push_back(id);
        continue;
      }
      fresh.records[h->priority]++;
      fresh.bytes[h->priority] += h->stored_bytes;
      fresh.next_id = std::max(fresh.next_id, id + 1);
      OrderKey ok(h->priority, id);
      OrderValue ov;
      ov.stored_bytes = h->stored_bytes;
      char ob[OrderValue::kSize];
      ov.encode(ob);
      MDB_val okv = val(ok.b, sizeof ok.b), ovv = val(ob, sizeof ob);
      int prc = mdb_put(txn, db_order, &okv, &ovv, 0);
      if (prc) {
        mdb_cursor_close(cur);
        return prc;
      }
    }
    mdb_cursor_close(cur);
    if (rc != MDB_NOTFOUND) return rc;
    if (!bad.empty()) return MDB_CORRUPTED;
    pc = fresh;
    return 0;
  }

  int put_counters(MDB_txn* txn) {
    std::string c = pc.encode();
    MDB_val k = val(kCountersKey, std::strlen(kCountersKey)), v = val(c.data(), c.size());
    return mdb_put(txn, db_main, &k, &v, 0);
  }

  /// Moves data.mdb into quarantine/ (and drops lock.mdb); prunes old quarantined files.
  void quarantine(const std::string& why) {
    close_env();
    std::error_code ec;
    fs::path qdir = dir / "quarantine";
    fs::create_directories(qdir, ec);
    std::string name = "data-" + std::to_string(wall_ns(port)) + ".mdb";
    fs::path target = qdir / name;
    if (cfg.max_quarantined == 0) {
      fs::remove(dir / "data.mdb", ec);
    } else {
      fs::rename(dir / "data.mdb", target, ec);
      if (ec) fs::remove(dir / "data.mdb", ec);
    }
    fs::remove(dir / "lock.mdb", ec);
    m_quarantined.inc();
    ++quarantined_total;
    log(LogLevel::error, "store in " + dir.string() + " could not be used (" + why +
                             "): moved to " + (cfg.max_quarantined ? target.string() : "(deleted)") +
                             "; starting a fresh store (its records are lost)");
    // Keep at most max_quarantined files, newest by name (names embed the time).
    std::vector<fs::path> files;
    for (auto it = fs::directory_iterator(qdir, ec); !ec && it != fs::directory_iterator();
         it.increment(ec))
      files.push_back(it->path());
    std::sort(files.begin(), files.end());
    while (files.size() > cfg.max_quarantined) {
      fs::remove(files.front(), ec);
      log(LogLevel::warning, "deleted old quarantined store " + files.front().string());
      files.erase(files.begin());
    }
    pc = PersistentCounters{};
    leased.clear();
  }

  /// Opens the store, quarantining it once if it is damaged.
  Result<void> open_or_recover() {
    std::string why;
    int rc = open_env(why);
    if (rc && is_corruption(rc)) {
      quarantine(why);
      rc = open_env(why);
    }
    if (rc) return Error(errc::io_error, "cannot open buffer store in " + dir.string() + ": " + why);
    return {};
  }

  /// After an LMDB panic or corruption found at run time: reopen (or quarantine + fresh store).
  /// Deferred while leases hold read transactions of the old environment.
  void note_failure(int rc) {
    if (rc == MDB_PANIC || is_corruption(rc)) {
      env_broken = true;
      broken_is_corrupt = broken_is_corrupt || is_corruption(rc);
    }
    if (env_broken) try_repair();
  }
  void try_repair() {
    if (!env_broken || open_leases > 0) return;
    if (broken_is_corrupt) {
      quarantine("corruption detected at run time");
    } else {
      m_reopens.inc();
      log(LogLevel::error, "LMDB environment panicked: reopening");
    }
    broken_is_corrupt = false;
    std::string why;
    int rc = open_env(why);
    if (rc && is_corruption(rc)) {
      quarantine(why);
      rc = open_env(why);
    }
    if (rc) log(LogLevel::error, "reopening the store failed: " + why);
  }
  bool usable() {
    if (env_broken) try_repair();
    return env && !env_broken;
  }

  // ---- transactions ---------------------------------------------------------------------

  /// Grows the map ahead of need (at half full) while no lease pins it: once the uploader holds
  /// a lease the map cannot grow, and appends and acks that need pages fail as "map full" until
  /// the lease ends. Called when the last lease ends and from poll().
  void grow_ahead() {
    if (!env || env_broken || open_leases > 0 || map_size >= map_cap) return;
    MDB_envinfo info;
    MDB_stat st;
    if (mdb_env_info(env, &info) != 0 || mdb_env_stat(env, &st) != 0) return;
    if ((static_cast<std::uint64_t>(info.me_last_pgno) + 1) * st.ms_psize * 2 > map_size) grow_map();
  }

  bool grow_map() {
    if (open_leases > 0 || map_size >= map_cap) return false;
    std::uint64_t next = std::min<std::uint64_t>(map_cap, map_size * 2);
    if (mdb_env_set_mapsize(env, next) != 0) return false;
    MDB_envinfo info;
    mdb_env_info(env, &info);
    map_size = info.me_mapsize;
    m_map_resizes.inc();
    log(LogLevel::info, "grew the LMDB map to " + std::to_string(map_size) + " bytes");
    g_map.set(static_cast<double>(map_size));
    return true;
  }

  /// Runs `body(txn)` in a write transaction and commits it with the counters. On MAP_FULL the
  /// map grows and the body runs again from scratch. On any failure the mirror is rolled back.
  /// `force_sync`: fsync this commit whatever the durability setting.
  template <class Body>
  int write_txn(Body&& body, bool force_sync = false) {
    if (!usable()) return MDB_PANIC;
    for (int attempt = 0;; ++attempt) {
      PersistentCounters saved = pc;
      MDB_txn* txn = nullptr;
      int rc = mdb_txn_begin(env, nullptr, 0, &txn);
      if (rc == 0) {
        rc = body(txn);
        if (rc == 0) rc = put_counters(txn);
        if (rc == 0) {
          rc = mdb_txn_commit(txn);
        } else {
          mdb_txn_abort(txn);
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

  // fstat of the open data file after each commit: LMDB (no MDB_WRITEMAP) writes data.mdb only
  // when a transaction commits, so stats() and free_in_file() read this instead of a stat(2) by
  // path on every call.
  void note_file_size() {
    mdb_filehandle_t fd;
    struct stat st {};
    if (env && mdb_env_get_fd(env, &fd) == 0 && ::fstat(fd, &st) == 0) file_bytes = static_cast<std::uint64_t>(st.st_size);
  }

  void after_commit(bool force_sync) {
    note_file_size();
    if (cfg.durability == Durability::sync) return;
    unsynced = true;
    if (force_sync && cfg.durability == Durability::interval && cfg.async_sync) {
      // A state write under `interval`: its fsync starts now, in the background (or as soon as
      // the one in flight, which may predate this commit, is collected), never on the caller.
      // LMDB commits in order, so a later ack cannot reach the disk without this state.
      sync_soon = true;
      sync_if_due(port.clock->monotonic());
    } else if (force_sync) {
      do_sync();
    } else {
      sync_if_due(port.clock->monotonic());
    }
  }

  /// Durability `interval`: collects a finished background fsync, and when one is due starts
  /// the next — in the background (async_sync), else inline. Returns 0 or the inline fsync's error.
  int sync_if_due(MonoTime now) {
    if (cfg.durability != Durability::interval) return 0;
    if (background_sync.in_flight()) {
      auto done = background_sync.reap();
      if (!done) return 0;  // still running: the next one starts after it
      note_sync_result(*done);
    }
    if (!unsynced ||
        (!sync_soon && now - last_sync < std::chrono::milliseconds(cfg.sync_interval_ms)))
      return 0;
    sync_soon = false;
    int fd = -1;
    if (cfg.async_sync && mdb_env_get_fd(env, &fd) == 0 && background_sync.start(fd)) {
      unsynced = false;  // commits from now on set it again; a failure sets it back
      last_sync = now;
      m_syncs_background.inc();
      return 0;
    }
    if (cfg.async_sync && !told_inline) {
      told_inline = true;
      log(LogLevel::warning, "kernel AIO unavailable: interval fsyncs run inline (they block the caller)");
    }
    return do_sync();
  }
  void note_sync_result(int err) {
    if (err == 0) return;
    m_sync_errors.inc();
    unsynced = true;
    log(LogLevel::error, std::string("background fsync of the store failed: ") + std::strerror(err));
  }

  int do_sync() {
    if (background_sync.in_flight()) note_sync_result(background_sync.wait());
    int rc = mdb_env_sync(env, 1);
    if (rc == 0) {
      unsynced = false;
      last_sync = port.clock->monotonic();
      m_syncs_inline.inc();
    } else {
      m_sync_errors.inc();
      log(LogLevel::error, "fsync of the store failed: " + mdb_text(rc));
    }
    return rc;
  }

  void roll_wear_day() {
    std::int64_t day = utc_day(wall_ns(port));
    if (day != pc.wear_day) {
      pc.wear_day = day;
      pc.wear_bytes = 0;
    }
  }

  /// Deletes record `id` (record, order entry, chunks). Sets `h`/`stream` for the caller.
  /// MDB_NOTFOUND when absent.
  int delete_record(MDB_txn* txn, RecordId id, RecordHeader* h_out = nullptr,
                    std::string* stream_out = nullptr) {
    IdKey ik(id);
    MDB_val k = val(ik.b, 8), v;
    int rc = mdb_get(txn, db_records, &k, &v);
    if (rc) return rc;
    auto h = RecordHeader::decode(sv(v));
    if (!h) return MDB_CORRUPTED;
    if (stream_out) {
      RecordMeta m;
      if (decode_meta(sv(v).substr(RecordHeader::kSize, h->meta_len), h->priority, m))
        *stream_out = m.stream;
    }
    OrderKey okey(h->priority, id);
    MDB_val ok = val(okey.b, 9), ov;
    rc = mdb_get(txn, db_order, &ok, &ov);
    if (rc == 0) {
      auto o = OrderValue::decode(sv(ov));
      if (o && (o->flags & kParked) && pc.parked > 0) pc.parked--;
      if ((rc = mdb_del(txn, db_order, &ok, nullptr))) return rc;
    } else if (rc != MDB_NOTFOUND) {
      return rc;
    }
    if (h->flags & kChunked) {
      std::uint64_t n = (h->payload_size + chunk_raw - 1) / chunk_raw;
      for (std::uint64_t i = 0; i < n; ++i) {
        ChunkKey ck(id, static_cast<std::uint32_t>(i));
        MDB_val ckv = val(ck.b, 12);
        rc = mdb_del(txn, db_chunks, &ckv, nullptr);
        if (rc && rc != MDB_NOTFOUND) return rc;
      }
    }
    if ((rc = mdb_del(txn, db_records, &k, nullptr))) return rc;
    pc.records[h->priority] -= std::min(pc.records[h->priority], std::uint64_t{1});
    pc.bytes[h->priority] -= std::min(pc.bytes[h->priority], h->stored_bytes);
    if (h_out) *h_out = *h;
    return 0;
  }

  // ---- append ---------------------------------------------------------------------------

  /// A record ready to be written (compressed outside the transaction).
  struct Prepared {
    std::size_t index = 0;
    std::string value;                // header + meta (+ inline payload)
    std::vector<std::string> chunks;  // chunk values (kind byte + data)
    RecordHeader header;
    std::string stream;
    RecordId fixed_id = 0;            // staged record: the id it reserved (else the next one)
  };

  struct Eviction {
    RecordId id;
    int priority;
    std::string stream;
    std::string reason;
  };

  std::string check_meta(const RecordMeta& m, std::size_t payload_size) const {
    if (m.priority > 7) return "priority must be 0..7, got " + std::to_string(m.priority);
    if (m.stream.size() > 255) return "stream name longer than 255 bytes";
    std::size_t md = 0;
    for (const auto& [k, v] : m.metadata) md += k.size() + v.size();
    if (md > kMaxMetadataBytes)
      return "metadata is " + std::to_string(md) + " bytes, limit " +
             std::to_string(kMaxMetadataBytes);
    if (payload_size > cfg.max_payload_bytes)
      return "payload of " + std::to_string(payload_size) + " bytes exceeds max_payload_bytes " +
             std::to_string(cfg.max_payload_bytes);
    return {};
  }

  /// Whether zstd would find nothing to gain in `in`, judged from a 16 KiB sample from its
  /// middle: camera frames and other encoded media inside an event are not worth a full pass
  /// (256 KiB of them cost ~0.15 ms of zstd each, on the host's loop when an event closes).
  bool looks_incompressible(std::string_view in) {
    constexpr std::size_t kSample = 16u << 10;
    if (in.size() < 4 * kSample) return false;  // small payloads: just try
    constexpr std::size_t kBound = ZSTD_COMPRESSBOUND(kSample);
    if (!probe_out) probe_out.reset(new char[kBound]);
    std::size_t n = ZSTD_compressCCtx(cctx, probe_out.get(), kBound, in.data() + (in.size() - kSample) / 2, kSample, 1);
    return ZSTD_isError(n) || n > kSample - kSample / 16;  // saves under 6 %
  }

  /// Compresses `in` into `out` when configured and worthwhile; returns true when compressed.
  bool maybe_compress(std::string_view in, std::string& out) {
    if (cfg.compress_min_bytes == 0 || in.size() < cfg.compress_min_bytes) return false;
    if (!cctx) cctx = ZSTD_createCCtx();
    if (looks_incompressible(in)) return false;
    std::size_t bound = ZSTD_compressBound(in.size());
    std::size_t base = out.size();
    out.resize(base + bound);
    std::size_t n = ZSTD_compressCCtx(cctx, out.data() + base, bound, in.data(), in.size(),
                                      cfg.compression_level);
    if (ZSTD_isError(n) || n >= in.size()) {
      out.resize(base);
      return false;
    }
    out.resize(base + n);
    raw_compressed += static_cast<double>(in.size());
    stored_compressed += static_cast<double>(n);
    return true;
  }

  Prepared prepare(std::size_t index, const RecordMeta& m, std::string_view payload,
                   std::int64_t now_ns) {
    Prepared p;
    p.index = index;
    p.stream = m.stream;
    std::string meta;
    encode_meta(m, meta);
    RecordHeader& h = p.header;
    h.priority = m.priority;
    h.meta_len = static_cast<std::uint32_t>(meta.size());
    h.payload_size = payload.size();
    h.append_ns = now_ns;
    std::string body;
    std::uint64_t chunk_total = 0;
    if (payload.size() > chunk_raw) {
      h.flags |= kChunked;
      for (std::size_t off = 0; off < payload.size(); off += chunk_raw) {
        std::string_view part = payload.substr(off, chunk_raw);
        std::string c(1, static_cast<char>(kChunkZstd));
        if (!maybe_compress(part, c)) {
          c[0] = static_cast<char>(kChunkRaw);
          c.append(part);
        }
        chunk_total += c.size();
        p.chunks.push_back(std::move(c));
      }
    } else if (maybe_compress(payload, body)) {
      h.flags |= kCompressed;
    } else {
      body.assign(payload);
    }
    h.stored_bytes = RecordHeader::kSize + meta.size() + body.size() + chunk_total;
    p.value.reserve(h.stored_bytes - chunk_total);
    h.encode(p.value);
    p.value += meta;
    p.value += body;
    return p;
  }

  /// The record entry of a staged record whose chunks (`chunk_total` stored bytes) are written.
  Prepared prepare_staged_head(std::uint64_t chunk_total) {
    Prepared p;
    p.stream = staged.meta.stream;
    p.fixed_id = staged.id;
    std::string meta;
    encode_meta(staged.meta, meta);
    RecordHeader& h = p.header;
    h.priority = staged.meta.priority;
    h.meta_len = static_cast<std::uint32_t>(meta.size());
    h.payload_size = staged.payload.size();
    h.append_ns = staged.append_ns;
    h.flags |= kChunked;
    h.stored_bytes = RecordHeader::kSize + meta.size() + chunk_total;
    h.encode(p.value);
    p.value += meta;
    return p;
  }

  /// Filesystem headroom as a cap on stored bytes; `reason` names the binding guard.
  struct FsCap {
    std::uint64_t cap = UINT64_MAX;
    std::string reason;
  };
  FsCap fs_cap(MDB_txn* txn) {
    FsCap c;
    auto st = port.filesystem->stats(dir.string());
    if (!st) {
      log(LogLevel::warning, "filesystem stats unavailable: " + st.error().message);
      return c;
    }
    // After a write failed for lack of space, trust nothing but eviction until space is back.
    if (fs_pressure && st->free_bytes > cfg.min_free_bytes + (256u << 10)) fs_pressure = false;
    std::uint64_t headroom = st->free_bytes > cfg.min_free_bytes ? st->free_bytes - cfg.min_free_bytes : 0;
    if (!fs_pressure && st->free_inodes >= cfg.min_free_inodes &&
        pc.total_bytes() + headroom >= cfg.max_bytes) {
      // The quota binds before the filesystem does: the space reusable inside data.mdb cannot
      // change the outcome, and counting it takes ~10 LMDB stat calls and a stat(2) per append.
      c.cap = pc.total_bytes() + headroom;
      c.reason = "min_free_bytes";
      return c;
    }
    // Space already inside data.mdb (free pages left by acks and evictions) is reused without
    // growing the file, so it does not count against the filesystem headroom.
    std::uint64_t reusable = fs_pressure ? 0 : free_in_file(txn);
    std::uint64_t now = pc.total_bytes() + reusable;
    if (fs_pressure) {
      c.cap = now;
      c.reason = "fs_full";
      return c;
    }
    if (st->free_inodes < cfg.min_free_inodes) {
      c.cap = now;  // the file must not grow: only eviction / reuse can make room
      c.reason = "min_free_inodes";
      return c;
    }
    c.cap = now + headroom;
    c.reason = "min_free_bytes";
    return c;
  }

  /// Bytes of data.mdb not referenced by any tree (free pages, and the file tail).
  std::uint64_t free_in_file(MDB_txn* txn) {
    MDB_envinfo info;
    MDB_stat st;
    if (mdb_env_info(env, &info) || mdb_env_stat(env, &st)) return 0;
    std::uint64_t used = 2;  // meta pages
    for (MDB_dbi d : {MDB_dbi(0), MDB_dbi(1), db_records, db_order, db_chunks, db_state, db_meta}) {
      MDB_stat ds;
      if (mdb_stat(txn, d, &ds) == 0) used += ds.ms_branch_pages + ds.ms_leaf_pages + ds.ms_overflow_pages;
    }
    std::uint64_t file = file_bytes / st.ms_psize;  // unchanged since the last commit
    std::uint64_t high = static_cast<std::uint64_t>(info.me_last_pgno) + 1;
    std::uint64_t pages = std::max(file, high);
    // Pages freed by the last transactions (copy-on-write of the trees) are not reusable yet
    // and are replaced by as many in steady state: keep a margin of 64 pages and 1/8.
    std::uint64_t free_pages = pages > used + 64 ? (pages - used - 64) * 7 / 8 : 0;
    return free_pages * st.ms_psize;
  }

  /// Byte cap for priority `p`: max_bytes minus the unused reserved shares of higher priorities.
  std::uint64_t quota_cap(int p) const {
    std::uint64_t cap = cfg.max_bytes;
    for (int q = p + 1; q < 8; ++q) {
      auto reserve = static_cast<std::uint64_t>(cfg.reserved_share[q] * double(cfg.max_bytes));
      std::uint64_t unused = reserve > pc.bytes[q] ? reserve - pc.bytes[q] : 0;
      cap = cap > unused ? cap - unused : 0;
    }
    return cap;
  }

  /// Admission of one prepared record inside the append transaction: wear budget, quotas,
  /// headroom, eviction. Returns an LMDB error, or 0 with `out` filled.
  int admit(MDB_txn* txn, Prepared& p, const FsCap& fsc, AppendOutcome& out,
            std::vector<Eviction>& evictions, std::string& reject_reason) {
    const int prio = p.header.priority;
    const std::uint64_t s = p.header.stored_bytes;
    if (cfg.max_bytes_written_per_day > 0 && prio < cfg.wear_exempt_priority &&
        pc.wear_bytes + s > cfg.max_bytes_written_per_day) {
      out.reason = errc::wear_budget_exhausted;
      out.message = "flash-wear budget of " + std::to_string(cfg.max_bytes_written_per_day) +
                    " bytes/day reached (" + std::to_string(pc.wear_bytes) +
                    " written today); priority " + std::to_string(prio) + " < " +
                    std::to_string(cfg.wear_exempt_priority) + " refused";
      reject_reason = "wear_budget";
      return 0;
    }
    std::uint64_t qcap = quota_cap(prio);
    std::uint64_t cap = std::min(qcap, fsc.cap);
    std::string reason = fsc.cap < qcap ? fsc.reason
                         : qcap < cfg.max_bytes ? "reserved_share"
                                                : "max_bytes";
    std::uint64_t bytes = pc.total_bytes(), records = pc.total_records();
    std::uint64_t need_bytes = bytes + s > cap ? bytes + s - cap : 0;
    std::uint64_t need_records = records + 1 > cfg.max_records ? records + 1 - cfg.max_records : 0;
    if (need_records > 0 && need_bytes == 0) reason = "max_records";
    if (need_bytes > 0 || need_records > 0) {
      auto reject = [&](const std::string& why) {
        out.reason = errc::storage_full;
        out.message = "buffer full (" + reason + "): " + why;
        reject_reason = reason;
        return 0;
      };
      if (s > cap) return reject("record of " + std::to_string(s) + " bytes exceeds the cap of " +
                                 std::to_string(cap) + " bytes for priority " + std::to_string(prio));
      if (cfg.policy == FullPolicy::reject)
        return reject("policy reject; " + std::to_string(bytes) + " bytes, " +
                      std::to_string(records) + " records stored");
      // Candidates: lowest priority first, oldest first, never above the incoming priority.
      std::vector<std::pair<RecordId, int>> victims;
      std::uint64_t freed_b = 0, freed_r = 0;
      MDB_cursor* cur = nullptr;
      int rc = mdb_cursor_open(txn, db_order, &cur);
      if (rc) return rc;
      for (int q = 0; q <= prio && (freed_b < need_bytes || freed_r < need_records); ++q) {
        OrderKey start(static_cast<std::uint8_t>(q), 0);
        MDB_val k = val(start.b, 9), v;
        for (rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
             rc == 0 && (freed_b < need_bytes || freed_r < need_records);
             rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
          if (k.mv_size != 9 || static_cast<const char*>(k.mv_data)[0] != char(7 - q)) break;
          auto o = OrderValue::decode(sv(v));
          if (!o) {
            mdb_cursor_close(cur);
            return MDB_CORRUPTED;
          }
          victims.emplace_back(get_be(static_cast<const char*>(k.mv_data) + 1, 8), q);
          freed_b += o->stored_bytes;
          freed_r += 1;
        }
        if (rc != 0 && rc != MDB_NOTFOUND) {
          mdb_cursor_close(cur);
          return rc;
        }
      }
      mdb_cursor_close(cur);
      if (freed_b < need_bytes || freed_r < need_records)
        return reject("only higher-priority data could make room (never evicted for priority " +
                      std::to_string(prio) + ")");
      for (auto [id, q] : victims) {
        std::string stream;
        rc = delete_record(txn, id, nullptr, &stream);
        if (rc) return rc;
        evictions.push_back({id, q, std::move(stream), reason});
        out.evicted++;
      }
    }
    // Insert. A staged record's id was reserved before later appends took theirs: no MDB_APPEND.
    RecordId id = p.fixed_id ? p.fixed_id : pc.next_id++;
    IdKey ik(id);
    MDB_val k = val(ik.b, 8), v = val(p.value.data(), p.value.size());
    int rc = mdb_put(txn, db_records, &k, &v, p.fixed_id ? 0u : unsigned{MDB_APPEND});
    if (rc) return rc;
    for (std::size_t i = 0; i < p.chunks.size(); ++i) {
      ChunkKey ck(id, static_cast<std::uint32_t>(i));
      MDB_val ckv = val(ck.b, 12), cv = val(p.chunks[i].data(), p.chunks[i].size());
      if ((rc = mdb_put(txn, db_chunks, &ckv, &cv, MDB_APPEND))) return rc;
    }
    OrderKey okey(static_cast<std::uint8_t>(prio), id);
    OrderValue ov;
    ov.stored_bytes = s;
    char ob[OrderValue::kSize];
    ov.encode(ob);
    MDB_val ok = val(okey.b, 9), ovv = val(ob, sizeof ob);
    if ((rc = mdb_put(txn, db_order, &ok, &ovv, 0))) return rc;
    pc.records[prio]++;
    pc.bytes[prio] += s;
    pc.wear_bytes += s;
    out.accepted = true;
    out.id = id;
    return 0;
  }

  std::vector<AppendOutcome> append_many(
      const std::vector<std::pair<RecordMeta, std::string_view>>& in) {
    std::vector<AppendOutcome> out(in.size());
    std::vector<std::string> reasons(in.size());
    std::vector<Prepared> prepared;
    prepared.reserve(in.size());
    std::int64_t now = wall_ns(port);
    for (std::size_t i = 0; i < in.size(); ++i) {
      std::string bad = check_meta(in[i].first, in[i].second.size());
      if (!bad.empty()) {
        out[i].reason = errc::invalid_argument;
        out[i].message = bad;
        reasons[i] = "invalid";
        continue;
      }
      prepared.push_back(prepare(i, in[i].first, in[i].second, now));
    }
    std::vector<Eviction> evictions;
    if (!prepared.empty()) {
      int rc = write_txn([&](MDB_txn* txn) {
        evictions.clear();
        roll_wear_day();
        FsCap fsc = fs_cap(txn);
        for (auto& p : prepared) {
          out[p.index] = AppendOutcome{};
          reasons[p.index].clear();
          int r = admit(txn, p, fsc, out[p.index], evictions, reasons[p.index]);
          if (r) return r;
        }
        return 0;
      });
      if (rc) {
        evictions.clear();
        for (auto& p : prepared) reasons[p.index] = commit_failure(rc, out[p.index]);
      }
    }
    // Count and log (after the outcome is final: a failed commit evicted nothing).
    report_evictions(evictions);
    std::map<std::tuple<std::string, int, std::string>, std::pair<std::uint64_t, std::string>> rj;
    for (std::size_t i = 0; i < in.size(); ++i) {
      if (out[i].accepted) {
        m_appended.inc();
        continue;
      }
      int prio = std::min<int>(in[i].first.priority, 255);
      count_rejection(reasons[i], prio, in[i].first.stream);
      auto& g = rj[{reasons[i], prio, in[i].first.stream}];
      if (g.first++ == 0) g.second = out[i].message;
    }
    for (auto& [key, g] : rj)
      log(LogLevel::warning, "rejected " + std::to_string(g.first) + " append(s) of priority " +
                                 std::to_string(std::get<1>(key)) + ", stream \"" +
                                 std::get<2>(key) + "\": " + g.second);
    for (auto& p : prepared)
      if (out[p.index].accepted) m_appended_bytes.inc(p.header.stored_bytes);
    refresh_gauges();
    return out;
  }

  /// Fills `out` for a commit that failed with `rc`; returns the rejection reason label.
  std::string commit_failure(int rc, AppendOutcome& out) {
    // LMDB reports a short write on a full filesystem as EIO: look at the filesystem.
    bool space = rc == ENOSPC || rc == EDQUOT;
    if (rc == EIO) {
      auto st = port.filesystem->stats(dir.string());
      space = st && st->free_bytes < (1u << 20);
    }
    if (space) fs_pressure = true;
    bool full = space || rc == MDB_MAP_FULL;
    out = AppendOutcome{};
    out.reason = full ? errc::storage_full : errc::io_error;
    out.message = "commit failed: " + mdb_text(rc);
    return rc == MDB_MAP_FULL ? "map_full" : full ? "fs_full" : "io_error";
  }

  void report_evictions(const std::vector<Eviction>& evictions) {
    std::map<std::tuple<std::string, int, std::string>, std::uint64_t> ev_groups;
    for (auto& e : evictions) {
      ev_groups[{e.reason, e.priority, e.stream}]++;
      auto it = leased.find(e.id);
      if (it != leased.end()) leased.erase(it);
    }
    for (auto& [key, n] : ev_groups) {
      count_eviction(std::get<0>(key), std::get<1>(key), std::get<2>(key), n);
      log(LogLevel::warning, "evicted " + std::to_string(n) + " record(s) of priority " +
                                 std::to_string(std::get<1>(key)) + ", stream \"" +
                                 std::get<2>(key) + "\" (" + std::get<0>(key) + ")");
    }
  }

  // ---- staged appends (append_staged) ---------------------------------------------------
  //
  // A large record on the host's loop: its payload is copied here and written one chunk per
  // poll(), under the id it reserved, so that no call spends the ~1 ms a 640 KiB commit takes
  // (mostly the kernel copying it into the page cache). The "staging" meta key names the id
  // while its chunks are written: a crash leaves nothing behind (open_env deletes them). The
  // record entry and its admission (quotas, eviction, headroom) come with the last chunk.

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

  AppendOutcome stage(const RecordMeta& m, std::string_view payload) {
    if (cfg.durability == Durability::sync || payload.size() <= chunk_raw || !usable() ||
        !check_meta(m, payload.size()).empty()) {
      std::vector<std::pair<RecordMeta, std::string_view>> one;
      one.emplace_back(m, payload);
      return std::move(append_many(one).front());
    }
    while (staged.active) step_staged();  // one at a time: the previous one is finished first
    staged.meta = m;
    staged.payload.assign(payload.data(), payload.size());
    staged.id = pc.next_id++;  // persisted with the counters of the first chunk's commit
    staged.next_chunk = 0;
    staged.chunk_total = 0;
    staged.append_ns = wall_ns(port);
    staged.active = true;
    m_staged.inc();
    AppendOutcome out;
    out.accepted = true;
    out.id = staged.id;
    return out;
  }

  /// Puts chunk `index` of `part` for record `id` (compressed when worthwhile, copied straight
  /// into the page LMDB reserves); adds its stored size to `stored`.
  int put_staged_chunk(MDB_txn* txn, std::size_t index, std::uint64_t& stored) {
    std::string_view part = std::string_view(staged.payload).substr(index * chunk_raw, chunk_raw);
    chunk_out.assign(1, static_cast<char>(kChunkZstd));
    const bool packed = maybe_compress(part, chunk_out);
    ChunkKey ck(staged.id, static_cast<std::uint32_t>(index));
    MDB_val k = val(ck.b, 12), v;
    v.mv_size = packed ? chunk_out.size() : part.size() + 1;
    int rc = mdb_put(txn, db_chunks, &k, &v, MDB_RESERVE);
    if (rc) return rc;
    char* dst = static_cast<char*>(v.mv_data);
    if (packed) {
      std::memcpy(dst, chunk_out.data(), chunk_out.size());
    } else {
      dst[0] = static_cast<char>(kChunkRaw);
      std::memcpy(dst + 1, part.data(), part.size());
    }
    stored += v.mv_size;
    return 0;
  }

  int put_staging_key(MDB_txn* txn, bool present) {
    MDB_val k = val("staging", 7);
    if (!present) {
      int rc = mdb_del(txn, db_meta, &k, nullptr);
      return rc == MDB_NOTFOUND ? 0 : rc;
    }
    IdKey ik(staged.id);
    MDB_val v = val(ik.b, 8);
    return mdb_put(txn, db_meta, &k, &v, 0);
  }

  /// Deletes every chunk of record `id` (a staged record that was refused or cut short).
  int delete_chunks(MDB_txn* txn, RecordId id) {
    MDB_cursor* cur = nullptr;
    int rc = mdb_cursor_open(txn, db_chunks, &cur);
    if (rc) return rc;
    ChunkKey first(id, 0);
    for (;;) {
      MDB_val k = val(first.b, 12), v;
      if ((rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE))) break;
      if (k.mv_size != 12 || get_be(static_cast<const char*>(k.mv_data), 8) != id) break;
      if ((rc = mdb_cursor_del(cur, 0))) break;
    }
    mdb_cursor_close(cur);
    return rc == MDB_NOTFOUND || rc == 0 ? 0 : rc;
  }

  /// Writes the staged record's next chunk; with the last one, the record itself. False when
  /// nothing is staged.
  bool step_staged() {
    if (!staged.active) return false;
    const std::size_t chunks = (staged.payload.size() + chunk_raw - 1) / chunk_raw;
    const std::size_t i = staged.next_chunk;
    if (!usable()) return abandon_staged(MDB_PANIC), true;
    if (i + 1 < chunks) {
      std::uint64_t stored = 0;
      int rc = write_txn([&](MDB_txn* txn) {
        stored = 0;
        int r = i == 0 ? put_staging_key(txn, true) : 0;
        return r ? r : put_staged_chunk(txn, i, stored);
      });
      if (rc) return abandon_staged(rc), true;
      staged.chunk_total += stored;
      staged.next_chunk++;
      return true;
    }
    AppendOutcome out;
    std::string reason;
    std::vector<Eviction> evictions;
    std::uint64_t stored_last = 0;
    Prepared head;
    int rc = write_txn([&](MDB_txn* txn) {
      out = AppendOutcome{};
      reason.clear();
      evictions.clear();
      stored_last = 0;
      roll_wear_day();
      FsCap fsc = fs_cap(txn);
      int r = put_staged_chunk(txn, i, stored_last);
      if (r) return r;
      head = prepare_staged_head(staged.chunk_total + stored_last);
      if ((r = admit(txn, head, fsc, out, evictions, reason))) return r;
      if (!out.accepted && (r = delete_chunks(txn, staged.id))) return r;
      return put_staging_key(txn, false);
    });
    if (rc) return abandon_staged(rc), true;
    report_evictions(evictions);
    if (out.accepted) {
      m_appended.inc();
      m_appended_bytes.inc(head.header.stored_bytes);
    } else {
      refuse_staged(reason, out.message);
    }
    staged.active = false;
    refresh_gauges();
    return true;
  }

  /// A staged record that could not be written: its chunks go (now, or at the next open).
  void abandon_staged(int rc) {
    AppendOutcome out;
    std::string reason = commit_failure(rc, out);
    if (usable()) {
      int drc = write_txn([&](MDB_txn* txn) {
        int r = delete_chunks(txn, staged.id);
        return r ? r : put_staging_key(txn, false);
      });
      if (drc) log(LogLevel::warning, "staged record's chunks stay until the next open: " + mdb_text(drc));
    }
    refuse_staged(reason, out.message);
    staged.active = false;
  }

  void refuse_staged(const std::string& reason, const std::string& message) {
    const int prio = std::min<int>(staged.meta.priority, 255);
    count_rejection(reason, prio, staged.meta.stream);
    log(LogLevel::warning, "rejected a staged append of " + std::to_string(staged.payload.size()) +
                               " bytes (priority " + std::to_string(prio) + ", stream \"" +
                               staged.meta.stream + "\") after it was queued: " + message);
  }

  /// Deletes the chunks of a staged record a crash cut short (open_env, inside its transaction).
  int drop_interrupted_staging(MDB_txn* txn) {
    MDB_val k = val("staging", 7), v;
    int rc = mdb_get(txn, db_meta, &k, &v);
    if (rc == MDB_NOTFOUND) return 0;
    if (rc) return rc;
    if (v.mv_size == 8) {
      RecordId id = get_be(static_cast<const char*>(v.mv_data), 8);
      IdKey ik(id);
      MDB_val rk = val(ik.b, 8), rv;
      if (mdb_get(txn, db_records, &rk, &rv) == MDB_NOTFOUND) {
        if ((rc = delete_chunks(txn, id))) return rc;
        log(LogLevel::warning, "deleted the chunks of record " + std::to_string(id) +
                                   ", whose staged append a restart cut short");
      }
    }
    return mdb_del(txn, db_meta, &k, nullptr);
  }

  // ---- lease bookkeeping ----------------------------------------------------------------

  void release(const std::vector<LeasedRecord>& recs, std::uint64_t serial) {
    for (const auto& r : recs) {
      auto it = leased.find(r.id);
      if (it != leased.end() && it->second == serial) leased.erase(it);
    }
    g_leased.set(static_cast<double>(leased.size()));
  }
};

// =============================================================================================
// Lease
// =============================================================================================

struct Lease::Impl {
  Buffer::Impl* owner = nullptr;
  std::uint64_t serial = 0;
  MDB_txn* rtxn = nullptr;
  std::vector<LeasedRecord> records;
  std::vector<std::string_view> stored;  // inline stored payload (view into the map)
  mutable std::vector<std::unique_ptr<std::string>> decoded;

  ~Impl() { end(); }
  void end() noexcept {
    if (!owner) return;
    owner->release(records, serial);
    if (rtxn) mdb_txn_abort(rtxn);
    rtxn = nullptr;
    owner->open_leases--;
    owner->grow_ahead();
    owner = nullptr;
  }
};

Lease::Lease() noexcept = default;
Lease::Lease(std::unique_ptr<Impl> impl) noexcept : impl_(std::move(impl)) {}
Lease::Lease(Lease&&) noexcept = default;
Lease& Lease::operator=(Lease&&) noexcept = default;
Lease::~Lease() = default;

const std::vector<LeasedRecord>& Lease::records() const noexcept {
  static const std::vector<LeasedRecord> empty;
  return impl_ ? impl_->records : empty;
}

std::uint64_t Lease::payload_bytes() const noexcept {
  std::uint64_t n = 0;
  for (const auto& r : records()) n += r.payload_size;
  return n;
}

Result<std::string_view> Lease::payload(std::size_t index) const {
  if (!impl_ || index >= impl_->records.size())
    return Error(errc::invalid_argument, "lease has no record at index " + std::to_string(index));
  const LeasedRecord& r = impl_->records[index];
  if (r.chunked)
    return Error(errc::unsupported, "record " + std::to_string(r.id) +
                                        " is stored in chunks: use Buffer::read_payload");
  if (!r.compressed) return impl_->stored[index];
  auto& slot = impl_->decoded[index];
  if (!slot) {
    auto s = std::make_unique<std::string>(r.payload_size, '\0');
    std::string_view in = impl_->stored[index];
    std::size_t n = ZSTD_decompress(s->data(), s->size(), in.data(), in.size());
    if (ZSTD_isError(n) || n != r.payload_size)
      return Error(errc::decode_error, "record " + std::to_string(r.id) + ": zstd payload damaged");
    slot = std::move(s);
  }
  return std::string_view(*slot);
}

Result<std::string_view> Lease::payload_piece(std::size_t index, std::uint64_t offset, std::size_t max) const {
  if (!impl_ || index >= impl_->records.size())
    return Error(errc::invalid_argument, "lease has no record at index " + std::to_string(index));
  const LeasedRecord& r = impl_->records[index];
  if (offset >= r.payload_size || max == 0) return std::string_view();
  if (!r.chunked) {
    if (r.compressed)
      return Error(errc::unsupported, "record " + std::to_string(r.id) + " is stored compressed");
    return impl_->stored[index].substr(static_cast<std::size_t>(offset), max);
  }
  const Buffer::Impl* b = impl_->owner;
  if (!b || !impl_->rtxn) return Error(errc::invalid_argument, "lease already released");
  auto idx = static_cast<std::uint32_t>(offset / b->chunk_raw);
  auto in_chunk = static_cast<std::size_t>(offset % b->chunk_raw);
  auto c = b->chunk_value(impl_->rtxn, r.id, idx, r.payload_size);
  if (!c) return std::move(c).error();
  if (!c->raw) return Error(errc::unsupported, "record " + std::to_string(r.id) + ": chunk stored compressed");
  return c->bytes.substr(in_chunk, max);
}

void Lease::release() noexcept {
  if (impl_) impl_->end();
}

// =============================================================================================
// Buffer
// =============================================================================================

Buffer::Buffer(std::unique_ptr<Impl> impl) noexcept : impl_(std::move(impl)) {}
Buffer::~Buffer() = default;

Result<std::unique_ptr<Buffer>> Buffer::open(const BufferConfig& config, const Port& port,
                                             MetricsRegistry& metrics) {
  std::string bad = validate(config);
  if (!bad.empty()) return Error(errc::invalid_config, "/buffer/" + bad, "/buffer");
  auto impl = std::make_unique<Impl>(config, port, metrics);
  impl->dir = fs::path(config.path);
  std::error_code ec;
  fs::create_directories(impl->dir, ec);
  if (ec) return Error(errc::io_error, "cannot create " + config.path + ": " + ec.message());
  impl->dir_fd = ::open(config.path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (impl->dir_fd < 0)
    return Error(errc::io_error, "cannot open " + config.path + ": " + std::strerror(errno));
  if (::flock(impl->dir_fd, LOCK_EX | LOCK_NB) != 0)
    return Error(errc::io_error, "buffer " + config.path + " is already open by a writer");
  impl->map_cap = std::max<std::uint64_t>(config.max_bytes * 2 + (8u << 20), config.initial_map_bytes);
  impl->last_sync = impl->port.clock->monotonic();
  auto r = impl->open_or_recover();
  if (!r) return std::move(r).error();
  impl->log(LogLevel::info, "opened " + config.path + ": " +
                                std::to_string(impl->pc.total_records()) + " records, " +
                                std::to_string(impl->pc.total_bytes()) + " bytes");
  return std::unique_ptr<Buffer>(new Buffer(std::move(impl)));
}

AppendOutcome Buffer::append_staged(const RecordMeta& meta, std::string_view payload) {
  return impl_->stage(meta, payload);
}

AppendOutcome Buffer::append(const RecordMeta& meta, std::string_view payload) {
  std::vector<std::pair<RecordMeta, std::string_view>> one;
  one.emplace_back(meta, payload);
  return std::move(impl_->append_many(one).front());
}

std::vector<AppendOutcome> Buffer::append_batch(
    const std::vector<std::pair<RecordMeta, std::string_view>>& records) {
  return impl_->append_many(records);
}

Result<Lease> Buffer::lease(std::uint64_t max_bytes, std::size_t max_records) {
  Impl& b = *impl_;
  if (!b.usable()) return Error(errc::io_error, "buffer store unavailable (reopen failed)");
  auto li = std::make_unique<Lease::Impl>();
  int rc = mdb_txn_begin(b.env, nullptr, MDB_RDONLY, &li->rtxn);
  if (rc) {
    b.note_failure(rc);
    return Error(errc::io_error, "lease: " + mdb_text(rc));
  }
  li->owner = &b;
  li->serial = ++b.lease_serial;
  b.open_leases++;
  MDB_cursor* cur = nullptr;
  if ((rc = mdb_cursor_open(li->rtxn, b.db_order, &cur)))
    return Error(errc::io_error, "lease: " + mdb_text(rc));
  std::uint64_t bytes = 0;
  MDB_val k, v;
  for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0 && li->records.size() < max_records;
       rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
    auto o = OrderValue::decode(sv(v));
    if (k.mv_size != 9 || !o) {
      rc = MDB_CORRUPTED;
      break;
    }
    if (o->flags & kParked) continue;
    RecordId id = get_be(static_cast<const char*>(k.mv_data) + 1, 8);
    if (b.leased.count(id)) continue;
    IdKey ik(id);
    MDB_val rk = val(ik.b, 8), rv;
    int grc = mdb_get(li->rtxn, b.db_records, &rk, &rv);
    if (grc) {
      rc = grc == MDB_NOTFOUND ? MDB_CORRUPTED : grc;
      break;
    }
    auto h = RecordHeader::decode(sv(rv));
    LeasedRecord r;
    if (!h || !decode_meta(sv(rv).substr(RecordHeader::kSize, h->meta_len), h->priority, r.meta)) {
      rc = MDB_CORRUPTED;
      break;
    }
    if (!li->records.empty() && bytes + h->payload_size > max_bytes) break;
    r.id = id;
    r.payload_size = h->payload_size;
    r.attempts = o->attempts;
    r.stored_bytes = h->stored_bytes;
    r.chunked = h->flags & kChunked;
    r.compressed = (h->flags & kCompressed) != 0;
    bytes += h->payload_size;
    li->stored.push_back(r.chunked ? std::string_view{}
                                   : sv(rv).substr(RecordHeader::kSize + h->meta_len));
    li->records.push_back(std::move(r));
    b.leased[id] = li->serial;
  }
  mdb_cursor_close(cur);
  if (rc != 0 && rc != MDB_NOTFOUND) {
    Lease dropped(std::move(li));  // releases what was taken
    dropped.release();
    b.note_failure(rc);
    return Error(errc::io_error, "lease: " + mdb_text(rc));
  }
  li->decoded.resize(li->records.size());
  b.g_leased.set(static_cast<double>(b.leased.size()));
  return Lease(std::move(li));
}

Result<void> Buffer::ack(const std::vector<RecordId>& ids) {
  Impl& b = *impl_;
  std::uint64_t deleted = 0;
  int rc = b.write_txn([&](MDB_txn* txn) {
    deleted = 0;
    for (RecordId id : ids) {
      int r = b.delete_record(txn, id);
      if (r == MDB_NOTFOUND) continue;
      if (r) return r;
      ++deleted;
    }
    return 0;
  });
  if (rc) return Error(errc::io_error, "ack: " + mdb_text(rc));
  for (RecordId id : ids) b.leased.erase(id);
  b.m_acked.inc(deleted);
  b.refresh_gauges();
  return {};
}

namespace {
/// Rewrites the order entry of each id with `edit(OrderValue&)`; returns ids changed.
template <class Edit>
int edit_order(Buffer::Impl& b, MDB_txn* txn, const std::vector<RecordId>& ids, Edit edit) {
  for (RecordId id : ids) {
    IdKey ik(id);
    MDB_val k = val(ik.b, 8), v;
    int rc = mdb_get(txn, b.db_records, &k, &v);
    if (rc == MDB_NOTFOUND) continue;
    if (rc) return rc;
    auto h = RecordHeader::decode(sv(v));
    if (!h) return MDB_CORRUPTED;
    OrderKey okey(h->priority, id);
    MDB_val ok = val(okey.b, 9), ov;
    if ((rc = mdb_get(txn, b.db_order, &ok, &ov))) return rc;
    auto o = OrderValue::decode(sv(ov));
    if (!o) return MDB_CORRUPTED;
    edit(*o);
    char buf[OrderValue::kSize];
    o->encode(buf);
    MDB_val nv = val(buf, sizeof buf);
    if ((rc = mdb_put(txn, b.db_order, &ok, &nv, 0))) return rc;
  }
  return 0;
}
}  // namespace

Result<void> Buffer::nack(const std::vector<RecordId>& ids) {
  Impl& b = *impl_;
  int rc = b.write_txn([&](MDB_txn* txn) {
    return edit_order(b, txn, ids, [](OrderValue& o) { o.attempts++; });
  });
  if (rc) return Error(errc::io_error, "nack: " + mdb_text(rc));
  for (RecordId id : ids) b.leased.erase(id);
  b.m_nacked.inc(ids.size());
  b.refresh_gauges();
  return {};
}

Result<void> Buffer::park(const std::vector<RecordId>& ids, std::string_view reason) {
  Impl& b = *impl_;
  std::uint64_t parked = 0;
  int rc = b.write_txn([&](MDB_txn* txn) {
    parked = 0;
    return edit_order(b, txn, ids, [&](OrderValue& o) {
      if (!(o.flags & kParked)) {
        o.flags |= kParked;
        b.pc.parked++;
        parked++;
      }
    });
  });
  if (rc) return Error(errc::io_error, "park: " + mdb_text(rc));
  for (RecordId id : ids) b.leased.erase(id);
  std::string r(reason.empty() ? "unspecified" : reason);
  auto it = b.m_parked.find(r);
  if (it == b.m_parked.end())
    it = b.m_parked
             .emplace(r, &b.metrics.counter("fleetpipe_buffer_parked_total",
                                            "Records parked after a permanent upload failure",
                                            {{"reason", r}}))
             .first;
  it->second->inc(parked);
  if (parked)
    b.log(LogLevel::warning, "parked " + std::to_string(parked) + " record(s): " + r);
  b.refresh_gauges();
  return {};
}

Result<std::size_t> Buffer::read_payload(RecordId id, std::uint64_t offset, char* out,
                                         std::size_t n) {
  Impl& b = *impl_;
  if (!b.usable()) return Error(errc::io_error, "buffer store unavailable");
  MDB_txn* txn = nullptr;
  int rc = mdb_txn_begin(b.env, nullptr, MDB_RDONLY, &txn);
  if (rc) return Error(errc::io_error, "read_payload: " + mdb_text(rc));
  struct Guard {
    MDB_txn* t;
    ~Guard() { mdb_txn_abort(t); }
  } guard{txn};
  IdKey ik(id);
  MDB_val k = val(ik.b, 8), v;
  rc = mdb_get(txn, b.db_records, &k, &v);
  if (rc == MDB_NOTFOUND) return Error(errc::not_found, "record " + std::to_string(id) + " not found");
  if (rc) return Error(errc::io_error, "read_payload: " + mdb_text(rc));
  auto h = RecordHeader::decode(sv(v));
  if (!h) return Error(errc::decode_error, "record " + std::to_string(id) + " header damaged");
  if (offset >= h->payload_size) return std::size_t{0};
  std::size_t want = static_cast<std::size_t>(std::min<std::uint64_t>(n, h->payload_size - offset));
  std::string_view body = sv(v).substr(RecordHeader::kSize + h->meta_len);
  if (!(h->flags & kChunked)) {
    if (!(h->flags & kCompressed)) {
      std::memcpy(out, body.data() + offset, want);
      return want;
    }
    auto whole = b.unpack(id, Impl::Unpacked::kWhole, body, static_cast<std::size_t>(h->payload_size));
    if (!whole) return Error(errc::decode_error, "record " + std::to_string(id) + ": zstd payload damaged");
    std::memcpy(out, whole->data() + offset, want);
    return want;
  }
  std::size_t done = 0;
  while (done < want) {
    std::uint64_t pos = offset + done;
    auto idx = static_cast<std::uint32_t>(pos / b.chunk_raw);
    std::size_t in_chunk = static_cast<std::size_t>(pos % b.chunk_raw);
    auto c = b.chunk_value(txn, id, idx, h->payload_size);
    if (!c) return std::move(c).error();
    std::string_view data = c->bytes;
    if (!c->raw) {
      auto unpacked = b.unpack(id, idx, c->bytes, c->len);
      if (!unpacked) return Error(errc::decode_error, "record " + std::to_string(id) + ": chunk damaged");
      data = *unpacked;
    }
    const std::size_t chunk_len = c->len;
    std::size_t take = std::min(want - done, chunk_len - in_chunk);
    std::memcpy(out + done, data.data() + in_chunk, take);
    done += take;
  }
  return done;
}

Result<void> Buffer::put_state(std::string_view key, std::string_view value) {
  Impl& b = *impl_;
  if (key.empty() || key.size() > kMaxStateKey)
    return Error(errc::invalid_argument, "state key must be 1..400 bytes");
  if (value.size() > kMaxStateValue)
    return Error(errc::invalid_argument, "state value must be <= 1 MiB");
  auto st = b.port.filesystem->stats(b.dir.string());
  if (st && (st->free_bytes < b.cfg.min_free_bytes / 2 + value.size() ||
             st->free_inodes < b.cfg.min_free_inodes / 2))
    return Error(errc::storage_full, "put_state: filesystem headroom exhausted");
  int rc = b.write_txn(
      [&](MDB_txn* txn) {
        MDB_val k = val(key.data(), key.size()), v = val(value.data(), value.size());
        return mdb_put(txn, b.db_state, &k, &v, 0);
      },
      /*force_sync=*/true);
  if (rc) return Error(rc == ENOSPC ? errc::storage_full : errc::io_error, "put_state: " + mdb_text(rc));
  return {};
}

Result<std::optional<std::string>> Buffer::get_state(std::string_view key) {
  Impl& b = *impl_;
  if (!b.usable()) return Error(errc::io_error, "buffer store unavailable");
  if (key.empty() || key.size() > kMaxStateKey)
    return Error(errc::invalid_argument, "state key must be 1..400 bytes");
  MDB_txn* txn = nullptr;
  int rc = mdb_txn_begin(b.env, nullptr, MDB_RDONLY, &txn);
  if (rc) return Error(errc::io_error, "get_state: " + mdb_text(rc));
  MDB_val k = val(key.data(), key.size()), v;
  rc = mdb_get(txn, b.db_state, &k, &v);
  std::optional<std::string> out;
  if (rc == 0) out = std::string(sv(v));
  mdb_txn_abort(txn);
  if (rc && rc != MDB_NOTFOUND) return Error(errc::io_error, "get_state: " + mdb_text(rc));
  return out;
}

Result<void> Buffer::erase_state(std::string_view key) {
  Impl& b = *impl_;
  if (key.empty() || key.size() > kMaxStateKey)
    return Error(errc::invalid_argument, "state key must be 1..400 bytes");
  int rc = b.write_txn(
      [&](MDB_txn* txn) {
        MDB_val k = val(key.data(), key.size());
        int r = mdb_del(txn, b.db_state, &k, nullptr);
        return r == MDB_NOTFOUND ? 0 : r;
      },
      /*force_sync=*/true);
  if (rc) return Error(errc::io_error, "erase_state: " + mdb_text(rc));
  return {};
}

Result<std::vector<std::pair<std::string, std::string>>> Buffer::list_state(
    std::string_view prefix) {
  Impl& b = *impl_;
  if (!b.usable()) return Error(errc::io_error, "buffer store unavailable");
  MDB_txn* txn = nullptr;
  int rc = mdb_txn_begin(b.env, nullptr, MDB_RDONLY, &txn);
  if (rc) return Error(errc::io_error, "list_state: " + mdb_text(rc));
  MDB_cursor* cur = nullptr;
  std::vector<std::pair<std::string, std::string>> out;
  rc = mdb_cursor_open(txn, b.db_state, &cur);
  if (rc == 0) {
    MDB_val k = val(prefix.data(), prefix.size()), v;
    MDB_cursor_op op = prefix.empty() ? MDB_FIRST : MDB_SET_RANGE;
    for (rc = mdb_cursor_get(cur, &k, &v, op); rc == 0; rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
      std::string_view key = sv(k);
      if (key.substr(0, prefix.size()) != prefix) break;
      out.emplace_back(std::string(key), std::string(sv(v)));
    }
    mdb_cursor_close(cur);
  }
  mdb_txn_abort(txn);
  if (rc && rc != MDB_NOTFOUND) return Error(errc::io_error, "list_state: " + mdb_text(rc));
  return out;
}

Result<void> Buffer::poll() {
  Impl& b = *impl_;
  if (!b.usable()) return Error(errc::io_error, "buffer store unavailable");
  const MonoTime now = b.port.clock->monotonic();
  if (now - b.last_reader_check >= std::chrono::seconds(1)) {  // hosts poll at up to kHz rates
    b.last_reader_check = now;
    b.grow_ahead();
    int dead = 0;
    mdb_reader_check(b.env, &dead);
    if (dead > 0) {
      b.m_stale_readers.inc(static_cast<std::uint64_t>(dead));
      b.log(LogLevel::info, "cleared " + std::to_string(dead) + " stale reader slot(s)");
    }
  }
  b.step_staged();  // at most one chunk per call
  if (int rc = b.sync_if_due(now)) return Error(errc::io_error, "sync: " + mdb_text(rc));
  b.refresh_gauges();
  return {};
}

Result<void> Buffer::flush() {
  Impl& b = *impl_;
  while (b.step_staged()) {
  }
  if (!b.usable()) return Error(errc::io_error, "buffer store unavailable");
  if (int rc = b.do_sync()) return Error(errc::io_error, "sync: " + mdb_text(rc));
  return {};
}

BufferStats Buffer::stats() const {
  const Impl& b = *impl_;
  BufferStats s;
  for (int p = 0; p < 8; ++p) {
    s.by_priority[p].records = b.pc.records[p];
    s.by_priority[p].bytes = b.pc.bytes[p];
  }
  s.records = b.pc.total_records();
  s.bytes = b.pc.total_bytes();
  s.leased = b.leased.size();
  s.parked = b.pc.parked;
  s.staged = b.staged.active ? 1 : 0;
  s.map_bytes = b.map_size;
  s.file_bytes = b.file_bytes;
  s.written_today = b.pc.wear_day == utc_day(wall_ns(b.port)) ? b.pc.wear_bytes : 0;
  s.evicted_total = b.evicted_total;
  s.rejected_total = b.rejected_total;
  s.quarantined_total = b.quarantined_total;
  s.compression_ratio = b.stored_compressed > 0 ? b.raw_compressed / b.stored_compressed : 1.0;
  return s;
}

const BufferConfig& Buffer::config() const noexcept { return impl_->cfg; }

// =============================================================================================
// inspect_buffer: read-only, alongside a running writer
// =============================================================================================

Result<BufferReport> inspect_buffer(const std::string& dir_s) {
  fs::path dir(dir_s);
  BufferReport rep;
  std::error_code ec;
  for (auto it = fs::directory_iterator(dir / "quarantine", ec); !ec && it != fs::directory_iterator();
       it.increment(ec))
    rep.quarantined.push_back(it->path().filename().string());
  std::sort(rep.quarantined.begin(), rep.quarantined.end());
  if (!fs::exists(dir / "data.mdb"))
    return Error(errc::not_found, "no buffer store in " + dir_s + " (data.mdb missing)");
  rep.file_bytes = file_size_of(dir / "data.mdb");

  MDB_env* env = nullptr;
  if (int rc = mdb_env_create(&env)) return Error(errc::io_error, mdb_text(rc));
  struct EnvGuard {
    MDB_env* e;
    ~EnvGuard() { mdb_env_close(e); }
  } eg{env};
  mdb_env_set_maxdbs(env, 8);
  int rc = mdb_env_open(env, dir.c_str(), MDB_RDONLY | MDB_NOTLS, 0644);
  if (rc) {
    return Error(is_corruption(rc) ? errc::corrupt_database : errc::io_error,
                 "cannot open " + dir_s + " read-only: " + mdb_text(rc));
  }
  MDB_txn* txn = nullptr;
  rc = mdb_txn_begin(env, nullptr, MDB_RDONLY, &txn);
  if (rc == MDB_MAP_RESIZED) {
    mdb_env_set_mapsize(env, 0);
    rc = mdb_txn_begin(env, nullptr, MDB_RDONLY, &txn);
  }
  if (rc) return Error(errc::io_error, "read transaction: " + mdb_text(rc));
  struct TxnGuard {
    MDB_txn* t;
    ~TxnGuard() { mdb_txn_abort(t); }
  } tg{txn};
  MDB_envinfo info;
  mdb_env_info(env, &info);
  rep.map_bytes = info.me_mapsize;
  MDB_dbi records, meta, state;
  if (mdb_dbi_open(txn, kDbRecords, 0, &records) || mdb_dbi_open(txn, kDbMeta, 0, &meta) ||
      mdb_dbi_open(txn, kDbState, 0, &state))
    return rep;  // created but never written: empty
  MDB_dbi main_db;
  MDB_val k = val(kCountersKey, std::strlen(kCountersKey)), v;
  int crc = mdb_dbi_open(txn, nullptr, 0, &main_db);
  if (crc == 0) crc = mdb_get(txn, main_db, &k, &v);
  if (crc == MDB_NOTFOUND) {  // a store from before the counters moved to the main DB
    k = val(kLegacyCountersKey, std::strlen(kLegacyCountersKey));
    crc = mdb_get(txn, meta, &k, &v);
  }
  if (crc == 0) {
    if (auto c = PersistentCounters::decode(sv(v))) {
      rep.next_id = c->next_id;
      rep.wear_day = c->wear_day;
      rep.written_on_wear_day = c->wear_bytes;
    }
  }
  k = val("quota", 5);
  if (mdb_get(txn, meta, &k, &v) == 0 && v.mv_size == 24) {
    const char* p = static_cast<const char*>(v.mv_data);
    rep.max_bytes = get_le(p, 8);
    rep.max_records = get_le(p + 8, 8);
    rep.max_bytes_written_per_day = get_le(p + 16, 8);
  }
  MDB_dbi order;
  bool have_order = mdb_dbi_open(txn, kDbOrder, 0, &order) == 0;
  std::map<std::pair<std::string, int>, StreamPriorityUsage> usage;
  MDB_cursor* cur = nullptr;
  if ((rc = mdb_cursor_open(txn, records, &cur))) return Error(errc::io_error, mdb_text(rc));
  for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0; rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
    auto h = RecordHeader::decode(sv(v));
    RecordMeta m;
    if (!h || k.mv_size != 8 ||
        !decode_meta(sv(v).substr(RecordHeader::kSize, h->meta_len), h->priority, m)) {
      mdb_cursor_close(cur);
      return Error(errc::corrupt_database, "record with a damaged header in " + dir_s);
    }
    auto& u = usage[{m.stream, -int(h->priority)}];
    if (u.records == 0) {
      u.stream = m.stream;
      u.priority = h->priority;
      u.oldest_ns = m.start_ns;
      u.newest_ns = m.end_ns;
    }
    u.records++;
    u.bytes += h->stored_bytes;
    u.payload_bytes += h->payload_size;
    u.oldest_ns = std::min(u.oldest_ns, m.start_ns);
    u.newest_ns = std::max(u.newest_ns, m.end_ns);
    if (have_order) {
      OrderKey okey(h->priority, get_be(static_cast<const char*>(k.mv_data), 8));
      MDB_val ok = val(okey.b, 9), ov;
      if (mdb_get(txn, order, &ok, &ov) == 0) {
        auto o = OrderValue::decode(sv(ov));
        if (o && (o->flags & kParked)) u.parked++;
      }
    }
    rep.records++;
    rep.bytes += h->stored_bytes;
  }
  mdb_cursor_close(cur);
  for (auto& [key, u] : usage) rep.usage.push_back(u);
  if (mdb_cursor_open(txn, state, &cur) == 0) {
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0; rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT))
      rep.state.emplace_back(std::string(sv(k)), std::to_string(v.mv_size));
    mdb_cursor_close(cur);
  }
  return rep;
}

}  // namespace fleetpipe

// =============================================================================================
// Config: the "buffer" section
// =============================================================================================

namespace fleetpipe::detail {

BufferConfig parse_buffer_config(JsonReader& r) {
  BufferConfig c;
  c.path = r.string("path", c.path);
  if (c.path.empty()) r.fail("path", "must not be empty");
  std::string d = r.one_of("durability", "sync", {"sync", "interval", "none"});
  c.durability = d == "sync" ? Durability::sync : d == "interval" ? Durability::interval : Durability::none;
  c.sync_interval_ms = static_cast<std::uint32_t>(
      r.seconds("sync_interval", c.sync_interval_ms / 1000.0, 0, 86400, true) * 1000.0 + 0.5);
  if (c.sync_interval_ms == 0) r.fail("sync_interval", "must be >= 1ms");
  c.async_sync = r.boolean("async_sync", c.async_sync);
  c.policy = r.one_of("policy", "evict", {"evict", "reject"}) == "evict" ? FullPolicy::evict
                                                                         : FullPolicy::reject;
  c.max_bytes = r.bytes("max_bytes", c.max_bytes, 1);
  c.max_records = r.bytes("max_records", c.max_records, 1);
  if (const nlohmann::json* rs = r.raw("reserved_share")) {
    JsonReader sub(*rs, r.pointer_of("reserved_share"));
    double sum = 0;
    for (int p = 0; p < 8; ++p) {
      c.reserved_share[p] = sub.number(std::to_string(p), 0.0, 0.0, 1.0);
      sum += c.reserved_share[p];
    }
    sub.finish();
    if (sum > 1.0 + 1e-9)
      r.fail("reserved_share", "shares must sum to <= 1, got " + std::to_string(sum));
  }
  c.min_free_bytes = r.bytes("min_free_bytes", c.min_free_bytes);
  c.min_free_inodes = static_cast<std::uint64_t>(
      r.integer("min_free_inodes", static_cast<std::int64_t>(c.min_free_inodes), 0));
  c.max_bytes_written_per_day = r.bytes("max_bytes_written_per_day", c.max_bytes_written_per_day);
  c.wear_exempt_priority =
      static_cast<std::uint8_t>(r.integer("wear_exempt_priority", c.wear_exempt_priority, 0, 8));
  c.max_payload_bytes = r.bytes("max_payload_bytes", c.max_payload_bytes, 1, 1ull << 32);
  c.chunk_bytes = static_cast<std::uint32_t>(r.bytes("chunk_bytes", c.chunk_bytes, 8192, 64u << 20));
  if (c.chunk_bytes % 4096 != 0)
    r.fail("chunk_bytes", "must be a multiple of 4096, got " + std::to_string(c.chunk_bytes));
  c.compress_min_bytes = r.bytes("compress_min_bytes", c.compress_min_bytes);
  c.compression_level = static_cast<int>(r.integer("compression_level", c.compression_level, -7, 22));
  c.initial_map_bytes = r.bytes("initial_map_bytes", c.initial_map_bytes);
  if (c.initial_map_bytes != 0 && c.initial_map_bytes < (1u << 20))
    r.fail("initial_map_bytes", "must be 0 (automatic) or >= 1MiB");
  c.max_quarantined = static_cast<std::uint32_t>(r.integer("max_quarantined", c.max_quarantined, 0, 100));
  r.finish();
  return c;
}

}  // namespace fleetpipe::detail
