// Buffer staging (append_staged): a large record on the host's loop, written one chunk per
// poll().
//
// Its payload is copied here and written under the id it reserved, so that no call spends the
// ~1 ms a 640 KiB commit takes (mostly the kernel copying it into the page cache). The "staging"
// meta key names the id while its chunks are written: a crash leaves nothing behind (open_env
// deletes them). The record entry and its admission (quotas, eviction, headroom) come with the
// last chunk.
#include <algorithm>
#include <cstring>

#include "buffer/impl.hpp"

namespace fleetpipe {

using namespace detail;
using lmdb::val;

AppendOutcome Buffer::Impl::stage(const RecordMeta& m, std::string_view payload) {
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

/// The record entry of a staged record whose chunks (`chunk_total` stored bytes) are written.
Buffer::Impl::Prepared Buffer::Impl::prepare_staged_head(std::uint64_t chunk_total) {
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

/// Puts chunk `index` of the staged record (compressed when worthwhile, copied straight into
/// the page LMDB reserves); adds its stored size to `stored`.
int Buffer::Impl::put_staged_chunk(MDB_txn* txn, std::size_t index, std::uint64_t& stored) {
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

int Buffer::Impl::put_staging_key(MDB_txn* txn, bool present) {
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
int Buffer::Impl::delete_chunks(MDB_txn* txn, RecordId id) {
  lmdb::Cursor cur;
  int rc = cur.open(txn, db_chunks);
  if (rc) return rc;
  ChunkKey first(id, 0);
  for (;;) {
    MDB_val k = val(first.b, 12), v;
    if ((rc = cur.get(k, v, MDB_SET_RANGE))) break;
    if (k.mv_size != 12 || get_be(static_cast<const char*>(k.mv_data), 8) != id) break;
    if ((rc = cur.del())) break;
  }
  return rc == MDB_NOTFOUND || rc == 0 ? 0 : rc;
}

/// Writes the staged record's next chunk; with the last one, the record itself. False when
/// nothing is staged.
bool Buffer::Impl::step_staged() {
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
void Buffer::Impl::abandon_staged(int rc) {
  AppendOutcome out;
  std::string reason = commit_failure(rc, out);
  if (usable()) {
    int drc = write_txn([&](MDB_txn* txn) {
      int r = delete_chunks(txn, staged.id);
      return r ? r : put_staging_key(txn, false);
    });
    if (drc) log(LogLevel::warning, "staged record's chunks stay until the next open: " + lmdb::text(drc));
  }
  refuse_staged(reason, out.message);
  staged.active = false;
}

void Buffer::Impl::refuse_staged(const std::string& reason, const std::string& message) {
  const int prio = std::min<int>(staged.meta.priority, 255);
  count_rejection(reason, prio, staged.meta.stream);
  log(LogLevel::warning, "rejected a staged append of " + std::to_string(staged.payload.size()) +
                             " bytes (priority " + std::to_string(prio) + ", stream \"" +
                             staged.meta.stream + "\") after it was queued: " + message);
}

/// Deletes the chunks of a staged record a crash cut short (open_env, inside its transaction).
int Buffer::Impl::drop_interrupted_staging(MDB_txn* txn) {
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

}  // namespace fleetpipe
