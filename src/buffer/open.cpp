// Buffer store opening: the directory lock, the environment, the format marker and counters,
// quarantine of a damaged store, and reopening after a run-time LMDB failure.
#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "buffer/impl.hpp"

namespace fleetpipe {

namespace fs = std::filesystem;
using namespace detail;
using lmdb::sv;
using lmdb::val;

/// Creates the directory and takes its flock: one writer process per directory.
Result<void> Buffer::Impl::lock_dir() {
  dir = fs::path(cfg.path);
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return Error(errc::io_error, "cannot create " + cfg.path + ": " + ec.message());
  dir_fd = ::open(cfg.path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir_fd < 0) return Error(errc::io_error, "cannot open " + cfg.path + ": " + std::strerror(errno));
  if (::flock(dir_fd, LOCK_EX | LOCK_NB) != 0)
    return Error(errc::io_error, "buffer " + cfg.path + " is already open by a writer");
  return {};
}

void Buffer::Impl::close_env() {
  while (background_sync.in_flight()) sync_step_done(background_sync.wait());  // it uses env's fd
  stop_checkpoints();  // its read transactions end before the environment
  env.close();
}

/// Clears the reader slots of dead processes (they would pin old pages).
void Buffer::Impl::check_readers() {
  int dead = 0;
  mdb_reader_check(env.get(), &dead);
  if (dead > 0) {
    m_stale_readers.inc(static_cast<std::uint64_t>(dead));
    log(LogLevel::info, "cleared " + std::to_string(dead) + " stale reader slot(s)");
  }
}

/// Opens the environment in `dir`. Returns 0, an LMDB/errno code, or MDB_CORRUPTED /
/// MDB_INCOMPATIBLE for content we do not accept; `why` says what.
int Buffer::Impl::open_env(std::string& why) {
  close_env();
  int rc = env.create();
  if (rc) return why = "mdb_env_create: " + lmdb::text(rc), rc;
  mdb_env_set_maxdbs(env.get(), 8);
  std::uint64_t file = file_size_of(dir / "data.mdb");
  const std::uint64_t initial =
      cfg.initial_map_bytes ? cfg.initial_map_bytes : sizeof(void*) >= 8 ? map_cap : std::uint64_t{16} << 20;
  map_size = std::max<std::uint64_t>(initial, file + file / 4);
  map_size = std::max<std::uint64_t>(map_size, 1u << 20);
  map_size = (map_size + 65535) / 65536 * 65536;
  mdb_env_set_mapsize(env.get(), map_size);
  unsigned flags = MDB_NOTLS | MDB_NORDAHEAD;
  if (cfg.durability != Durability::sync) flags |= MDB_NOSYNC;
  // After a reboot, a store left by an `interval` run opens at its last checkpointed state; a
  // new store starts without one.
  if (!fs::exists(dir / "data.mdb")) detail::CheckpointFile::remove(dir, dir_fd);
  auto restored = restore_to_checkpoint(dir);
  if (restored.rolled_back) {
    std::error_code ec;
    fs::remove(dir / "lock.mdb", ec);
    rolled_back_at_open = true;
    const std::string from = restored.from_txn ? "transaction " + std::to_string(restored.from_txn)
                                               : "unreadable meta pages";
    log(LogLevel::warning, "the store was not closed before a reboot: rolled back from " + from +
                               " to its last synced state (transaction " + std::to_string(restored.to_txn) +
                               "); what was accepted after that sync is lost, as `interval` durability allows");
  } else if (restored.error) {
    log(LogLevel::error, std::string("rolling the store back to its checkpoint failed: ") +
                             std::strerror(restored.error));
  }
  rc = mdb_env_open(env.get(), dir.c_str(), flags, 0644);
  if (rc) {
    why = "mdb_env_open: " + lmdb::text(rc);
    close_env();
    return rc;
  }
  check_readers();
  MDB_envinfo info;
  MDB_stat st;
  mdb_env_info(env.get(), &info);
  mdb_env_stat(env.get(), &st);
  map_size = info.me_mapsize;
  // A truncated file would make LMDB fault on access through the map: refuse it.
  std::uint64_t need = (static_cast<std::uint64_t>(info.me_last_pgno) + 1) * st.ms_psize;
  if (file_size_of(dir / "data.mdb") < need) {
    why = "data.mdb is shorter than its last used page (truncated)";
    close_env();
    return MDB_CORRUPTED;
  }
  unpacked.valid = false;

  lmdb::Txn txn;
  rc = txn.begin(env.get(), 0);
  if (rc) return why = "mdb_txn_begin: " + lmdb::text(rc), close_env(), rc;
  auto fail = [&](int code, std::string w) {
    txn.abort();
    close_env();
    why = std::move(w);
    return code;
  };
  for (auto [name, dbi] : {std::pair{kDbRecords, &db_records}, std::pair{kDbOrder, &db_order},
                           std::pair{kDbChunks, &db_chunks}, std::pair{kDbState, &db_state},
                           std::pair{kDbMeta, &db_meta}, std::pair{kDbParked, &db_parked}}) {
    rc = mdb_dbi_open(txn.get(), name, MDB_CREATE, dbi);
    if (rc) return fail(rc, std::string("mdb_dbi_open(") + name + "): " + lmdb::text(rc));
  }
  if ((rc = mdb_dbi_open(txn.get(), nullptr, 0, &db_main)))
    return fail(rc, "mdb_dbi_open(main): " + lmdb::text(rc));
  MDB_val k = val("format", 6), v;
  rc = mdb_get(txn.get(), db_meta, &k, &v);
  if (rc == MDB_NOTFOUND) {
    MDB_stat rs;
    mdb_stat(txn.get(), db_records, &rs);
    if (rs.ms_entries != 0) return fail(MDB_CORRUPTED, "records present but no format marker");
    std::string f;
    put_le(f, kBufferFormat, 4);
    MDB_val fv = val(f.data(), f.size());
    rc = mdb_put(txn.get(), db_meta, &k, &fv, 0);
    if (rc) return fail(rc, "writing format marker: " + lmdb::text(rc));
    pc = PersistentCounters{};
  } else if (rc) {
    return fail(rc, "reading format marker: " + lmdb::text(rc));
  } else {
    if (v.mv_size != 4 || get_le(static_cast<const char*>(v.mv_data), 4) != kBufferFormat)
      return fail(MDB_INCOMPATIBLE, "unknown buffer format");
    MDB_val ck = val(kCountersKey, std::strlen(kCountersKey)), cv;
    MDB_val lk = val(kLegacyCountersKey, std::strlen(kLegacyCountersKey));
    rc = mdb_get(txn.get(), db_main, &ck, &cv);
    if (rc == MDB_NOTFOUND) rc = mdb_get(txn.get(), db_meta, &lk, &cv);  // an older store
    if (rc == MDB_NOTFOUND) {
      pc = PersistentCounters{};
    } else if (rc) {
      return fail(rc, "reading counters: " + lmdb::text(rc));
    } else {
      auto d = PersistentCounters::decode(sv(cv));
      if (!d) return fail(MDB_CORRUPTED, "counters record has a bad size");
      pc = *d;
    }
    rc = mdb_del(txn.get(), db_meta, &lk, nullptr);  // moved to the main DB by put_counters below
    if (rc && rc != MDB_NOTFOUND) return fail(rc, "moving counters: " + lmdb::text(rc));
  }
  // The mirror must match the data; if not (should not happen), recount rather than trust it.
  MDB_stat rs, os;
  mdb_stat(txn.get(), db_records, &rs);
  mdb_stat(txn.get(), db_order, &os);
  if (rs.ms_entries != pc.total_records() || os.ms_entries != rs.ms_entries) {
    log(LogLevel::warning, "record counters disagree with the store: recounting");
    rc = recount(txn.get());
    if (rc) return fail(rc, "recount: " + lmdb::text(rc));
  }
  if ((rc = use_stored_chunk_size(txn.get()))) return fail(rc, "chunk size: " + lmdb::text(rc));
  if ((rc = drop_interrupted_staging(txn.get()))) return fail(rc, "staged chunks: " + lmdb::text(rc));
  // Quotas as last opened with, for `fleetpipe inspect`.
  std::string q;
  put_le(q, cfg.max_bytes, 8);
  put_le(q, cfg.max_records, 8);
  put_le(q, cfg.max_bytes_written_per_day, 8);
  MDB_val qk = val("quota", 5), qv = val(q.data(), q.size());
  if ((rc = mdb_put(txn.get(), db_meta, &qk, &qv, 0))) return fail(rc, "writing quota: " + lmdb::text(rc));
  if ((rc = put_counters(txn.get()))) return fail(rc, "writing counters: " + lmdb::text(rc));
  rc = txn.commit();
  if (rc) return close_env(), why = "commit: " + lmdb::text(rc), rc;
  env_broken = false;
  note_file_size();
  file_bytes_checked_at = 0;
  refresh_gauges();
  start_checkpoints();
  if (rolled_back_at_open) m_rollbacks->inc();
  rolled_back_at_open = false;
  return 0;
}

/// Sets chunk_raw from the chunk size the store was created with (meta "chunk"): chunked records
/// are read and deleted by chunk index, so a store keeps its size whatever a later config says
/// (cfg.chunk_bytes applies to new stores). A store written before the key existed used the
/// configured size — the only one it can have been read with — and records it now.
int Buffer::Impl::use_stored_chunk_size(MDB_txn* txn) {
  MDB_val k = val("chunk", 5), v;
  int rc = mdb_get(txn, db_meta, &k, &v);
  std::uint64_t bytes = cfg.chunk_bytes;
  if (rc == 0) {
    if (v.mv_size != 4) return MDB_CORRUPTED;
    bytes = get_le(static_cast<const char*>(v.mv_data), 4);
    if (bytes < 8192 || bytes % 4096 != 0) return MDB_CORRUPTED;
    if (bytes != cfg.chunk_bytes)
      log(LogLevel::info, "the store keeps the chunk size it was created with, " + std::to_string(bytes) +
                              " bytes (chunk_bytes " + std::to_string(cfg.chunk_bytes) + " applies to new stores)");
  } else if (rc == MDB_NOTFOUND) {
    std::string b;
    put_le(b, bytes, 4);
    MDB_val bv = val(b.data(), b.size());
    if ((rc = mdb_put(txn, db_meta, &k, &bv, 0))) return rc;
  } else {
    return rc;
  }
  chunk_raw = static_cast<std::size_t>(bytes) - kPageHeader - 1;
  return 0;
}

/// Rebuilds the per-priority counters and the order index from the records table.
int Buffer::Impl::recount(MDB_txn* txn) {
  PersistentCounters fresh;
  fresh.next_id = pc.next_id;
  fresh.wear_day = pc.wear_day;
  fresh.wear_bytes = pc.wear_bytes;
  int rc = mdb_drop(txn, db_order, 0);
  if (rc) return rc;
  if ((rc = mdb_drop(txn, db_parked, 0))) return rc;  // the rebuilt order has nothing parked
  lmdb::Cursor cur;
  if ((rc = cur.open(txn, db_records))) return rc;
  MDB_val k, v;
  std::vector<RecordId> bad;
  for (rc = cur.get(k, v, MDB_FIRST); rc == 0; rc = cur.get(k, v, MDB_NEXT)) {
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
    if (int prc = mdb_put(txn, db_order, &okv, &ovv, 0)) return prc;
  }
  if (rc != MDB_NOTFOUND) return rc;
  if (!bad.empty()) return MDB_CORRUPTED;
  pc = fresh;
  return 0;
}

// Every write transaction's: encoded in place, in the space LMDB reserves (no string per commit).
int Buffer::Impl::put_counters(MDB_txn* txn) {
  static const std::size_t key_len = std::strlen(kCountersKey);
  MDB_val k = val(kCountersKey, key_len), v;
  v.mv_size = PersistentCounters::kSize;
  int rc = mdb_put(txn, db_main, &k, &v, MDB_RESERVE);
  if (rc == 0) pc.encode_to(static_cast<char*>(v.mv_data));
  return rc;
}

/// Moves data.mdb into quarantine/ (and drops lock.mdb); prunes old quarantined files.
void Buffer::Impl::quarantine(const std::string& why) {
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
  detail::CheckpointFile::remove(dir, dir_fd);
  m_quarantined.inc();
  ++quarantined_total;
  log(LogLevel::error, "store in " + dir.string() + " could not be used (" + why + "): moved to " +
                           (cfg.max_quarantined ? target.string() : "(deleted)") +
                           "; starting a fresh store (its records are lost)");
  // Keep at most max_quarantined files, newest by name (names embed the time).
  std::vector<fs::path> files;
  for (auto it = fs::directory_iterator(qdir, ec); !ec && it != fs::directory_iterator(); it.increment(ec))
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
Result<void> Buffer::Impl::open_or_recover() {
  std::string why;
  int rc = open_env(why);
  if (rc && lmdb::is_corruption(rc)) {
    quarantine(why);
    rc = open_env(why);
  }
  if (rc) return Error(errc::io_error, "cannot open buffer store in " + dir.string() + ": " + why);
  return {};
}

/// After an LMDB panic or corruption found at run time: reopen (or quarantine + fresh store).
/// Deferred while leases hold read transactions of the old environment.
void Buffer::Impl::note_failure(int rc) {
  if (rc == MDB_PANIC || lmdb::is_corruption(rc)) {
    env_broken = true;
    broken_is_corrupt = broken_is_corrupt || lmdb::is_corruption(rc);
  }
  if (env_broken) try_repair();
}

void Buffer::Impl::try_repair() {
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
  if (rc && lmdb::is_corruption(rc)) {
    quarantine(why);
    rc = open_env(why);
  }
  if (rc) log(LogLevel::error, "reopening the store failed: " + why);
}

bool Buffer::Impl::usable() {
  if (env_broken) try_repair();
  return env && !env_broken;
}

}  // namespace fleetpipe
