// Buffer inspection (`inspect_buffer`, `fleetpipe inspect`): the second, read-only way into a
// store, one read transaction, safe while a writer has it open.
#include <algorithm>
#include <cstring>
#include <map>

#include "buffer/impl.hpp"

namespace fleetpipe {

namespace fs = std::filesystem;
using namespace detail;
using lmdb::sv;
using lmdb::val;

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

  lmdb::Env env;
  if (int rc = env.create()) return Error(errc::io_error, lmdb::text(rc));
  mdb_env_set_maxdbs(env.get(), 8);
  int rc = mdb_env_open(env.get(), dir.c_str(), MDB_RDONLY | MDB_NOTLS, 0644);
  if (rc) {
    return Error(lmdb::is_corruption(rc) ? errc::corrupt_database : errc::io_error,
                 "cannot open " + dir_s + " read-only: " + lmdb::text(rc));
  }
  lmdb::Txn txn;
  rc = txn.begin(env.get(), MDB_RDONLY);
  if (rc == MDB_MAP_RESIZED) {
    mdb_env_set_mapsize(env.get(), 0);
    rc = txn.begin(env.get(), MDB_RDONLY);
  }
  if (rc) return Error(errc::io_error, "read transaction: " + lmdb::text(rc));
  MDB_envinfo info;
  mdb_env_info(env.get(), &info);
  rep.map_bytes = info.me_mapsize;
  MDB_dbi records, meta, state;
  if (mdb_dbi_open(txn.get(), kDbRecords, 0, &records) || mdb_dbi_open(txn.get(), kDbMeta, 0, &meta) ||
      mdb_dbi_open(txn.get(), kDbState, 0, &state))
    return rep;  // created but never written: empty
  MDB_dbi main_db;
  MDB_val k = val(kCountersKey, std::strlen(kCountersKey)), v;
  int crc = mdb_dbi_open(txn.get(), nullptr, 0, &main_db);
  if (crc == 0) crc = mdb_get(txn.get(), main_db, &k, &v);
  if (crc == MDB_NOTFOUND) {  // a store from before the counters moved to the main DB
    k = val(kLegacyCountersKey, std::strlen(kLegacyCountersKey));
    crc = mdb_get(txn.get(), meta, &k, &v);
  }
  if (crc == 0) {
    if (auto c = PersistentCounters::decode(sv(v))) {
      rep.next_id = c->next_id;
      rep.wear_day = c->wear_day;
      rep.written_on_wear_day = c->wear_bytes;
    }
  }
  k = val("quota", 5);
  if (mdb_get(txn.get(), meta, &k, &v) == 0 && v.mv_size == 24) {
    const char* p = static_cast<const char*>(v.mv_data);
    rep.max_bytes = get_le(p, 8);
    rep.max_records = get_le(p + 8, 8);
    rep.max_bytes_written_per_day = get_le(p + 16, 8);
  }
  MDB_dbi order;
  bool have_order = mdb_dbi_open(txn.get(), kDbOrder, 0, &order) == 0;
  std::map<std::pair<std::string, int>, StreamPriorityUsage> usage;
  {
    lmdb::Cursor cur;
    if ((rc = cur.open(txn.get(), records))) return Error(errc::io_error, lmdb::text(rc));
    for (rc = cur.get(k, v, MDB_FIRST); rc == 0; rc = cur.get(k, v, MDB_NEXT)) {
      auto h = RecordHeader::decode(sv(v));
      RecordMeta m;
      if (!h || k.mv_size != 8 || !decode_meta(sv(v).substr(RecordHeader::kSize, h->meta_len), h->priority, m))
        return Error(errc::corrupt_database, "record with a damaged header in " + dir_s);
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
        if (mdb_get(txn.get(), order, &ok, &ov) == 0) {
          auto o = OrderValue::decode(sv(ov));
          if (o && (o->flags & kParked)) u.parked++;
        }
      }
      rep.records++;
      rep.bytes += h->stored_bytes;
    }
  }
  for (auto& [key, u] : usage) rep.usage.push_back(u);
  lmdb::Cursor cur;
  if (cur.open(txn.get(), state) == 0) {
    for (rc = cur.get(k, v, MDB_FIRST); rc == 0; rc = cur.get(k, v, MDB_NEXT))
      rep.state.emplace_back(std::string(sv(k)), std::to_string(v.mv_size));
  }
  return rep;
}

}  // namespace fleetpipe
