// Buffer durability: what happens after each commit (fsync per `durability`, in the background
// under `interval`), and growth of the LMDB map that write transactions rely on.
#include <sys/stat.h>

#include <algorithm>
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

// fstat of the open data file after each commit: LMDB (no MDB_WRITEMAP) writes data.mdb only
// when a transaction commits, so stats() and free_in_file() read this instead of a stat(2) by
// path on every call.
void Buffer::Impl::note_file_size() {
  mdb_filehandle_t fd;
  struct stat st {};
  if (env && mdb_env_get_fd(env.get(), &fd) == 0 && ::fstat(fd, &st) == 0)
    file_bytes = static_cast<std::uint64_t>(st.st_size);
}

void Buffer::Impl::after_commit(bool force_sync) {
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
int Buffer::Impl::sync_if_due(MonoTime now) {
  if (cfg.durability != Durability::interval) return 0;
  if (background_sync.in_flight()) {
    auto done = background_sync.reap();
    if (!done) return 0;  // still running: the next one starts after it
    note_sync_result(*done);
  }
  if (!unsynced || (!sync_soon && now - last_sync < std::chrono::milliseconds(cfg.sync_interval_ms)))
    return 0;
  sync_soon = false;
  int fd = -1;
  if (cfg.async_sync && mdb_env_get_fd(env.get(), &fd) == 0 && background_sync.start(fd)) {
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

void Buffer::Impl::note_sync_result(int err) {
  if (err == 0) return;
  m_sync_errors.inc();
  unsynced = true;
  log(LogLevel::error, std::string("background fsync of the store failed: ") + std::strerror(err));
}

int Buffer::Impl::do_sync() {
  if (background_sync.in_flight()) note_sync_result(background_sync.wait());
  int rc = mdb_env_sync(env.get(), 1);
  if (rc == 0) {
    unsynced = false;
    last_sync = port.clock->monotonic();
    m_syncs_inline.inc();
  } else {
    m_sync_errors.inc();
    log(LogLevel::error, "fsync of the store failed: " + lmdb::text(rc));
  }
  return rc;
}

}  // namespace fleetpipe
