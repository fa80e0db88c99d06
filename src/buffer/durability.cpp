// Buffer durability: what happens after each commit (fsync per `durability`, in the background
// under `interval`), and growth of the LMDB map that write transactions rely on.
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "buffer/impl.hpp"

namespace fleetpipe {

using namespace detail;

/// Grows the map ahead of need (at half full) while no lease pins it: once the uploader holds
/// a lease the map cannot grow, and appends and acks that need pages fail as "map full" until
/// the lease ends. Called when the last lease ends and from poll().
void Buffer::Impl::grow_ahead() {
  if (!env || env_broken || open_leases > 0 || map_size >= map_cap) return;
  MDB_envinfo info;
  MDB_stat st;
  if (mdb_env_info(env.get(), &info) != 0 || mdb_env_stat(env.get(), &st) != 0) return;
  if ((static_cast<std::uint64_t>(info.me_last_pgno) + 1) * st.ms_psize * 2 > map_size) grow_map();
}

bool Buffer::Impl::grow_map() {
  if (open_leases > 0 || map_size >= map_cap) return false;
  std::uint64_t next = std::min<std::uint64_t>(map_cap, map_size * 2);
  if (mdb_env_set_mapsize(env.get(), next) != 0) return false;
  MDB_envinfo info;
  mdb_env_info(env.get(), &info);
  map_size = info.me_mapsize;
  m_map_resizes.inc();
  log(LogLevel::info, "grew the LMDB map to " + std::to_string(map_size) + " bytes");
  g_map.set(static_cast<double>(map_size));
  return true;
}

// data.mdb's size without a stat(2) per commit. LMDB (no MDB_WRITEMAP) extends the file only by
// writing pages, and every page it writes is at most the last used one: the file is at most
// max(its size at the last fstat, (last_pgno + 1) pages). file_bytes is that fstat; the bound
// is read from the environment (no system call); an fstat happens only where an exact size is
// asked for (stats(), a fresh headroom query) and the bound says the file may have grown.
std::uint64_t Buffer::Impl::file_bytes_bound() const {
  MDB_envinfo info;
  MDB_stat st;
  if (!env || mdb_env_info(env.get(), &info) != 0 || mdb_env_stat(env.get(), &st) != 0) return file_bytes;
  return std::max<std::uint64_t>(file_bytes, (static_cast<std::uint64_t>(info.me_last_pgno) + 1) * st.ms_psize);
}

// At most one fstat per bound: a file that stays under its bound (pages LMDB allocated but did
// not write) costs no stat per call.
std::uint64_t Buffer::Impl::exact_file_bytes() const {
  const std::uint64_t bound = file_bytes_bound();
  if (bound > file_bytes && bound != file_bytes_checked_at) {
    note_file_size();
    file_bytes_checked_at = bound;
  }
  return file_bytes;
}

void Buffer::Impl::note_file_size() const {
  mdb_filehandle_t fd;
  struct stat st {};
  if (env && mdb_env_get_fd(env.get(), &fd) == 0 && ::fstat(fd, &st) == 0)
    file_bytes = static_cast<std::uint64_t>(st.st_size);
}

void Buffer::Impl::after_commit(bool force_sync) {
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
int Buffer::Impl::sync_if_due(MonoTime now) {
  if (cfg.durability != Durability::interval) return 0;
  if (background_sync.in_flight()) {
    auto done = background_sync.reap();
    if (!done) return 0;  // still running: the next one starts after it
    sync_step_done(*done);
    if (background_sync.in_flight()) return 0;  // the checkpoint's own fsync now runs
  }
  if (!unsynced || (!sync_soon && now - last_sync < std::chrono::milliseconds(cfg.sync_interval_ms)))
    return 0;
  sync_soon = false;
  pin_candidate_state();
  int fd = -1;
  if (cfg.async_sync && mdb_env_get_fd(env.get(), &fd) == 0 && background_sync.start(fd)) {
    sync_phase = SyncPhase::data;
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

/// A background fsync finished: the data file's (then checkpoint the state it made durable) or
/// the checkpoint file's (then that state is the one a power cut rolls back to).
void Buffer::Impl::sync_step_done(int err) {
  if (sync_phase == SyncPhase::checkpoint) return finish_checkpoint(err);
  sync_phase = SyncPhase::idle;
  note_sync_result(err);
  if (err == 0) {
    write_checkpoint(true);
  } else {
    pin_candidate.abort();
  }
}

void Buffer::Impl::note_sync_result(int err) {
  if (err == 0) return;
  m_sync_errors.inc();
  unsynced = true;
  log(LogLevel::error, std::string("background fsync of the store failed: ") + std::strerror(err));
}

int Buffer::Impl::do_sync(bool at_open) {
  while (background_sync.in_flight()) sync_step_done(background_sync.wait());
  pin_candidate_state();
  int rc = mdb_env_sync(env.get(), 1);
  if (rc == 0) {
    unsynced = false;
    last_sync = port.clock->monotonic();
    if (!at_open) m_syncs_inline.inc();  // the metric counts the syncs of a running store
    write_checkpoint(false);
  } else {
    pin_candidate.abort();
    m_sync_errors.inc();
    log(LogLevel::error, "fsync of the store failed: " + lmdb::text(rc));
  }
  return rc;
}

// ---- the synced state kept restorable (sync_checkpoint.hpp) ----------------------------------

/// After open_env: under `interval` the state as opened is made durable and checkpointed before
/// any new commit; under the other modes a checkpoint left by an `interval` run is removed (it
/// would name a state later commits no longer protect).
void Buffer::Impl::start_checkpoints() {
  stop_checkpoints();
  if (!m_checkpoints) {
    m_checkpoints = &metrics.counter("fleetpipe_buffer_checkpoints_total",
                                     "Synced states recorded as the rollback point of a power cut (interval durability)");
    m_rollbacks = &metrics.counter("fleetpipe_buffer_power_cut_rollbacks_total",
                                   "Opens that rolled the store back to its last synced state after a reboot");
  }
  if (cfg.durability != Durability::interval) {
    if (int err = detail::CheckpointFile::remove(dir, dir_fd))
      log(LogLevel::warning, std::string("cannot remove the interval checkpoint: ") + std::strerror(err));
    return;
  }
  MDB_stat ms;
  if (mdb_env_stat(env.get(), &ms) != 0) return;
  candidate = detail::CheckpointRecord{};
  candidate.page_size = ms.ms_psize;
  candidate.boot_id = detail::current_boot_id();
  if (auto prev = detail::CheckpointFile::read(dir)) candidate.seq = prev->seq;
  if (int err = checkpoint_file.open(dir, dir_fd)) {
    log(LogLevel::warning, std::string("interval durability without a checkpoint (cannot open it: ") +
                               std::strerror(err) + "): a power cut on a disk that reorders writes may damage the store");
    return;
  }
  checkpoints = true;
  do_sync(true);
}

/// Pins the newest committed state and copies its meta page: the candidate for the next
/// checkpoint. False when checkpoints are off.
bool Buffer::Impl::pin_candidate_state() {
  if (!checkpoints) return false;
  MDB_envinfo info;
  if (mdb_env_info(env.get(), &info) != 0) return false;
  if (pin_candidate && mdb_txn_id(pin_candidate.get()) == info.me_last_txnid) return true;
  if (pin_candidate.begin(env.get(), MDB_RDONLY) != 0) return false;
  const std::size_t txn = mdb_txn_id(pin_candidate.get());
  // The meta page as LMDB just wrote it (page cache; me_mapaddr is only set with MDB_FIXEDMAP).
  const int slot = static_cast<int>(txn & 1);
  std::optional<detail::MetaCopy> meta;
  mdb_filehandle_t fd;
  if (mdb_env_get_fd(env.get(), &fd) == 0) {
    meta_page.resize(candidate.page_size);
    if (::pread(fd, meta_page.data(), meta_page.size(), static_cast<off_t>(slot) * candidate.page_size) ==
        static_cast<ssize_t>(meta_page.size()))
      meta = detail::MetaCopy::from_page(reinterpret_cast<const unsigned char*>(meta_page.data()),
                                         candidate.page_size, 0);
  }
  if (!meta || meta->txnid != txn) {
    stop_checkpoints();
    log(LogLevel::warning, "interval checkpoints off: LMDB's meta page is not the format they know; a "
                           "power cut on a disk that reorders writes may damage the store");
    return false;
  }
  candidate.meta = *meta;
  return true;
}

/// The candidate's data is durable: records it in the checkpoint file and syncs that (in the
/// background when asked and possible).
void Buffer::Impl::write_checkpoint(bool in_background) {
  if (!checkpoints || !pin_candidate) return;
  ++candidate.seq;
  if (int err = checkpoint_file.write(candidate)) return finish_checkpoint(err);
  if (in_background && background_sync.start(checkpoint_file.fd())) {
    sync_phase = SyncPhase::checkpoint;
    return;
  }
  finish_checkpoint(::fdatasync(checkpoint_file.fd()) == 0 ? 0 : errno);
}

void Buffer::Impl::finish_checkpoint(int err) {
  sync_phase = SyncPhase::idle;
  if (err) {
    --candidate.seq;  // its slot may be torn: the other one still names the synced state
    pin_candidate.abort();
    unsynced = true;  // retried at the next interval
    m_sync_errors.inc();
    log(LogLevel::error, std::string("writing the interval checkpoint failed: ") + std::strerror(err));
    return;
  }
  pin_synced = std::move(pin_candidate);
  m_checkpoints->inc();
}

void Buffer::Impl::stop_checkpoints() {
  checkpoints = false;
  pin_candidate.abort();
  pin_synced.abort();
  checkpoint_file.close();
}

}  // namespace fleetpipe
