// Buffer state table: the small persistent key/value table the uploader keeps its resume state
// in, synced on every write (in the background under `interval` with async_sync).
#include <cerrno>

#include "buffer/impl.hpp"

namespace fleetpipe {

using namespace detail;
using lmdb::sv;
using lmdb::val;

namespace {
bool bad_key(std::string_view key) { return key.empty() || key.size() > kMaxStateKey; }
}  // namespace

Result<void> Buffer::Impl::put_state(std::string_view key, std::string_view value) {
  if (bad_key(key)) return Error(errc::invalid_argument, "state key must be 1..400 bytes");
  if (value.size() > kMaxStateValue) return Error(errc::invalid_argument, "state value must be <= 1 MiB");
  // Unknown free space (the stats query failed) does not block state writes: they are small,
  // and they let the uploader finish the uploads whose acks free space.
  auto st = fs_stats();
  if (st && (st->free_bytes < cfg.min_free_bytes / 2 + value.size() || st->free_inodes < cfg.min_free_inodes / 2))
    return Error(errc::storage_full, "put_state: filesystem headroom exhausted");
  int rc = write_txn(
      [&](MDB_txn* txn) {
        MDB_val k = val(key.data(), key.size()), v = val(value.data(), value.size());
        return mdb_put(txn, db_state, &k, &v, 0);
      },
      /*force_sync=*/true);
  if (rc) return Error(rc == ENOSPC ? errc::storage_full : errc::io_error, "put_state: " + lmdb::text(rc));
  return {};
}

Result<std::optional<std::string>> Buffer::Impl::get_state(std::string_view key) {
  if (!usable()) return Error(errc::io_error, "buffer store unavailable");
  if (bad_key(key)) return Error(errc::invalid_argument, "state key must be 1..400 bytes");
  lmdb::Txn txn;
  int rc = txn.begin(env.get(), MDB_RDONLY);
  if (rc) return Error(errc::io_error, "get_state: " + lmdb::text(rc));
  MDB_val k = val(key.data(), key.size()), v;
  rc = mdb_get(txn.get(), db_state, &k, &v);
  std::optional<std::string> out;
  if (rc == 0) out = std::string(sv(v));
  if (rc && rc != MDB_NOTFOUND) return Error(errc::io_error, "get_state: " + lmdb::text(rc));
  return out;
}

Result<void> Buffer::Impl::erase_state(std::string_view key) {
  if (bad_key(key)) return Error(errc::invalid_argument, "state key must be 1..400 bytes");
  int rc = write_txn(
      [&](MDB_txn* txn) {
        MDB_val k = val(key.data(), key.size());
        int r = mdb_del(txn, db_state, &k, nullptr);
        return r == MDB_NOTFOUND ? 0 : r;
      },
      /*force_sync=*/true);
  if (rc) return Error(errc::io_error, "erase_state: " + lmdb::text(rc));
  return {};
}

Result<std::vector<std::pair<std::string, std::string>>> Buffer::Impl::list_state(std::string_view prefix) {
  if (!usable()) return Error(errc::io_error, "buffer store unavailable");
  lmdb::Txn txn;
  int rc = txn.begin(env.get(), MDB_RDONLY);
  if (rc) return Error(errc::io_error, "list_state: " + lmdb::text(rc));
  std::vector<std::pair<std::string, std::string>> out;
  lmdb::Cursor cur;
  rc = cur.open(txn.get(), db_state);
  if (rc == 0) {
    MDB_val k = val(prefix.data(), prefix.size()), v;
    MDB_cursor_op op = prefix.empty() ? MDB_FIRST : MDB_SET_RANGE;
    for (rc = cur.get(k, v, op); rc == 0; rc = cur.get(k, v, MDB_NEXT)) {
      std::string_view key = sv(k);
      if (key.substr(0, prefix.size()) != prefix) break;
      out.emplace_back(std::string(key), std::string(sv(v)));
    }
  }
  if (rc && rc != MDB_NOTFOUND) return Error(errc::io_error, "list_state: " + lmdb::text(rc));
  return out;
}

}  // namespace fleetpipe
