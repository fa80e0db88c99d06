// Buffer admission: whether a record may be stored, and what is evicted to make room. In order:
// validation, the flash-wear budget, the caps (max_records; max_bytes less the unused reserved
// shares of higher priorities; the filesystem headroom), then the policy at a cap: reject, or
// evict the lowest-priority, oldest records of priority <= the incoming one. It runs inside the
// append transaction, so evictions and the insert commit together. A filesystem whose stats
// cannot be read counts as full. Rules: docs/buffer.md.
#include <algorithm>

#include "buffer/impl.hpp"

namespace fleetpipe {

using namespace detail;
using lmdb::sv;
using lmdb::val;

std::string Buffer::Impl::check_meta(const RecordMeta& m, std::size_t payload_size) const {
  if (m.priority > 7) return "priority must be 0..7, got " + std::to_string(m.priority);
  if (m.stream.size() > 255) return "stream name longer than 255 bytes";
  std::size_t md = 0;
  for (const auto& [k, v] : m.metadata) md += k.size() + v.size();
  if (md > kMaxMetadataBytes)
    return "metadata is " + std::to_string(md) + " bytes, limit " + std::to_string(kMaxMetadataBytes);
  if (payload_size > cfg.max_payload_bytes)
    return "payload of " + std::to_string(payload_size) + " bytes exceeds max_payload_bytes " +
           std::to_string(cfg.max_payload_bytes);
  return {};
}

/// The wear budget counts bytes per UTC day of the port's wall clock.
void Buffer::Impl::roll_wear_day() {
  std::int64_t day = utc_day(wall_ns(port));
  if (day != pc.wear_day) {
    pc.wear_day = day;
    pc.wear_bytes = 0;
  }
}

// ---- caps -----------------------------------------------------------------------------------

/// Byte cap for priority `p`: max_bytes minus the unused reserved shares of higher priorities.
std::uint64_t Buffer::Impl::quota_cap(int p) const {
  std::uint64_t cap = cfg.max_bytes;
  for (int q = p + 1; q < 8; ++q) {
    auto reserve = static_cast<std::uint64_t>(cfg.reserved_share[q] * double(cfg.max_bytes));
    std::uint64_t unused = reserve > pc.bytes[q] ? reserve - pc.bytes[q] : 0;
    cap = cap > unused ? cap - unused : 0;
  }
  return cap;
}

/// Port::filesystem's answer for the store's directory. Failures are counted one by one but
/// logged at most once a minute (a host appending at 100 Hz would otherwise log 100 lines a
/// second), and the first success after a logged failure says so once.
Result<FsStats> Buffer::Impl::fs_stats() {
  constexpr auto kWarnEvery = std::chrono::minutes(1);
  if (dir_string.empty()) dir_string = dir.string();
  auto st = port.filesystem->stats(dir_string);
  if (st) {
    if (fs_stats_failing && fs_stats_recovery_due) {
      fs_stats_recovery_due = false;
      log(LogLevel::info, "filesystem stats available again: headroom guards use them");
    }
    fs_stats_failing = false;
    return st;
  }
  m_fs_stats_errors.inc();
  fs_stats_failing = true;
  ++fs_stats_unlogged;
  const MonoTime now = port.clock->monotonic();
  if (!fs_stats_warned_ever || now - fs_stats_warned_at >= kWarnEvery) {
    log(LogLevel::warning, "filesystem stats unavailable (" + std::to_string(fs_stats_unlogged) +
                               " failed queries since the last warning): " + st.error().message +
                               "; the filesystem counts as full: appends that would grow the store are "
                               "refused (" + std::to_string(fs_stats_refused) + " since the last warning, "
                               "counted with reason fs_stats)");
    fs_stats_refused = 0;
    fs_stats_warned_ever = true;
    fs_stats_recovery_due = true;
    fs_stats_warned_at = now;
    fs_stats_unlogged = 0;
  }
  return st;
}

/// The filesystem stats the headroom guards use: the last query's, less what data.mdb has grown
/// since, while they are under a second old, the file has grown under 16 MiB since, and they are
/// far from every guard (over 64 MiB above min_free_bytes, over 1024 inodes above
/// min_free_inodes, no write failed for space); else a fresh query. A query that failed is
/// never reused. What this can miss — another writer's use of the filesystem in the last second,
/// beyond that 64 MiB margin — is in docs/buffer.md (Admission).
Result<FsStats> Buffer::Impl::headroom_stats() {
  constexpr auto kMaxAge = std::chrono::seconds(1);
  constexpr std::uint64_t kMaxGrowth = 16ull << 20;
  constexpr std::uint64_t kByteMargin = 64ull << 20;
  constexpr std::uint64_t kInodeMargin = 1024;
  FsStatsCache& c = fs_cache;
  const MonoTime now = port.clock->monotonic();
  const std::uint64_t file = file_bytes_bound();  // data.mdb is no larger than this
  if (c.valid && !fs_pressure && now >= c.at && now - c.at < kMaxAge && file >= c.file_bytes &&
      file - c.file_bytes < kMaxGrowth) {
    FsStats s = c.stats;
    const std::uint64_t grown = file - c.file_bytes;
    s.free_bytes = s.free_bytes > grown ? s.free_bytes - grown : 0;
    if (s.free_bytes > cfg.min_free_bytes + kByteMargin && s.free_inodes > cfg.min_free_inodes + kInodeMargin)
      return s;
  }
  auto st = fs_stats();
  c.valid = static_cast<bool>(st);
  if (st) {
    c.stats = *st;
    c.at = now;
    c.file_bytes = exact_file_bytes();
  }
  return st;
}

/// The filesystem headroom as a cap on stored bytes, computed once per append transaction.
Buffer::Impl::FsCap Buffer::Impl::fs_cap(MDB_txn* txn) {
  FsCap c;
  auto st = headroom_stats();
  if (!st) {
    // Unknown free space counts as none (the port contract, examples/port_template): the file
    // must not grow. The real headroom may be fine, so nothing is evicted for it either.
    c.cap = pc.total_bytes() + free_in_file(txn);
    c.reason = "fs_stats";
    c.may_evict = false;
    return c;
  }
  // After a write failed for lack of space, trust nothing but eviction until space is back.
  if (fs_pressure && st->free_bytes > cfg.min_free_bytes + (256u << 10)) fs_pressure = false;
  std::uint64_t headroom = st->free_bytes > cfg.min_free_bytes ? st->free_bytes - cfg.min_free_bytes : 0;
  if (!fs_pressure && st->free_inodes >= cfg.min_free_inodes && pc.total_bytes() + headroom >= cfg.max_bytes) {
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
std::uint64_t Buffer::Impl::free_in_file(MDB_txn* txn) {
  MDB_envinfo info;
  MDB_stat st;
  if (mdb_env_info(env.get(), &info) || mdb_env_stat(env.get(), &st)) return 0;
  std::uint64_t used = 2;  // meta pages
  for (MDB_dbi d : {MDB_dbi(0), MDB_dbi(1), db_records, db_order, db_chunks, db_state, db_meta, db_parked}) {
    MDB_stat ds;
    if (mdb_stat(txn, d, &ds) == 0) used += ds.ms_branch_pages + ds.ms_leaf_pages + ds.ms_overflow_pages;
  }
  std::uint64_t file = file_bytes / st.ms_psize;  // at the last fstat: max() below bounds its growth
  std::uint64_t high = static_cast<std::uint64_t>(info.me_last_pgno) + 1;
  std::uint64_t pages = std::max(file, high);
  // Pages freed by the last transactions (copy-on-write of the trees) are not reusable yet
  // and are replaced by as many in steady state: keep a margin of 64 pages and 1/8.
  std::uint64_t free_pages = pages > used + 64 ? (pages - used - 64) * 7 / 8 : 0;
  return free_pages * st.ms_psize;
}

// ---- eviction -------------------------------------------------------------------------------

namespace {

struct Victims {
  std::vector<std::pair<RecordId, int>> ids;  // (id, priority), in eviction order
  std::uint64_t bytes = 0, records = 0;
  bool enough(std::uint64_t need_bytes, std::uint64_t need_records) const {
    return bytes >= need_bytes && records >= need_records;
  }
};

/// Walks the upload order from the lowest priority up to `prio`, oldest first, until the
/// chosen records free `need_bytes` and `need_records`. Chooses only; deletes nothing.
int pick_victims(MDB_txn* txn, MDB_dbi order, int prio, std::uint64_t need_bytes,
                 std::uint64_t need_records, Victims& out) {
  lmdb::Cursor cur;
  int rc = cur.open(txn, order);
  if (rc) return rc;
  for (int q = 0; q <= prio && !out.enough(need_bytes, need_records); ++q) {
    OrderKey start(static_cast<std::uint8_t>(q), 0);
    MDB_val k = val(start.b, 9), v;
    for (rc = cur.get(k, v, MDB_SET_RANGE); rc == 0 && !out.enough(need_bytes, need_records);
         rc = cur.get(k, v, MDB_NEXT)) {
      if (k.mv_size != 9 || static_cast<const char*>(k.mv_data)[0] != char(7 - q)) break;
      auto o = OrderValue::decode(sv(v));
      if (!o) return MDB_CORRUPTED;
      out.ids.emplace_back(get_be(static_cast<const char*>(k.mv_data) + 1, 8), q);
      out.bytes += o->stored_bytes;
      out.records += 1;
    }
    if (rc != 0 && rc != MDB_NOTFOUND) return rc;
  }
  return 0;
}

}  // namespace

/// Admission of one prepared record inside the append transaction: wear budget, quotas,
/// headroom, eviction, then the insert. Returns an LMDB error, or 0 with `out` filled (accepted,
/// or rejected with `reject_reason` set to the metric label).
int Buffer::Impl::admit(MDB_txn* txn, Prepared& p, const FsCap& fsc, AppendOutcome& out,
                        std::vector<Eviction>& evictions, std::string& reject_reason) {
  const int prio = p.header.priority;
  const std::uint64_t s = p.header.stored_bytes;

  // 1. Flash-wear budget: evicting does not undo wear, so it refuses under both policies.
  if (cfg.max_bytes_written_per_day > 0 && prio < cfg.wear_exempt_priority &&
      pc.wear_bytes + s > cfg.max_bytes_written_per_day) {
    out.reason = errc::wear_budget_exhausted;
    out.message = "flash-wear budget of " + std::to_string(cfg.max_bytes_written_per_day) +
                  " bytes/day reached (" + std::to_string(pc.wear_bytes) + " written today); priority " +
                  std::to_string(prio) + " < " + std::to_string(cfg.wear_exempt_priority) + " refused";
    reject_reason = "wear_budget";
    return 0;
  }

  // 2. The binding cap and what must be freed to fit under it.
  std::uint64_t qcap = quota_cap(prio);
  std::uint64_t cap = std::min(qcap, fsc.cap);
  std::string reason = fsc.cap < qcap ? fsc.reason : qcap < cfg.max_bytes ? "reserved_share" : "max_bytes";
  std::uint64_t bytes = pc.total_bytes(), records = pc.total_records();
  std::uint64_t need_bytes = bytes + s > cap ? bytes + s - cap : 0;
  std::uint64_t need_records = records + 1 > cfg.max_records ? records + 1 - cfg.max_records : 0;
  if (need_records > 0 && need_bytes == 0) reason = "max_records";

  // 3. At a cap: reject, or evict lower/equal priorities oldest first.
  if (need_bytes > 0 || need_records > 0) {
    auto reject = [&](const std::string& why) {
      out.reason = errc::storage_full;
      out.message = "buffer full (" + reason + "): " + why;
      reject_reason = reason;
      return 0;
    };
    if (s > cap)
      return reject("record of " + std::to_string(s) + " bytes exceeds the cap of " + std::to_string(cap) +
                    " bytes for priority " + std::to_string(prio));
    if (need_bytes > 0 && fsc.cap < qcap && !fsc.may_evict)
      return reject("filesystem stats unavailable, the filesystem counts as full; nothing evicted for it");
    if (cfg.policy == FullPolicy::reject)
      return reject("policy reject; " + std::to_string(bytes) + " bytes, " + std::to_string(records) +
                    " records stored");
    Victims victims;
    if (int rc = pick_victims(txn, db_order, prio, need_bytes, need_records, victims)) return rc;
    if (!victims.enough(need_bytes, need_records))
      return reject("only higher-priority data could make room (never evicted for priority " +
                    std::to_string(prio) + ")");
    for (auto [id, q] : victims.ids) {
      std::string stream;
      if (int rc = delete_record(txn, id, nullptr, &stream)) return rc;
      evictions.push_back({id, q, std::move(stream), reason});
      out.evicted++;
    }
  }

  // 4. It fits.
  return insert_record(txn, p, out);
}

}  // namespace fleetpipe
