// Buffer appends: append() and append_batch() as one transaction each (group commit), and how
// their outcomes — rejections, evictions, failed commits — are counted and logged.
#include <algorithm>
#include <cerrno>
#include <new>

#include "buffer/impl.hpp"

namespace fleetpipe {

using namespace detail;

std::vector<AppendOutcome> Buffer::Impl::append_many(
    const std::vector<std::pair<RecordMeta, std::string_view>>& in) {
  std::vector<AppendItem> items;
  items.reserve(in.size());
  for (const auto& [m, payload] : in) items.push_back({&m, payload});
  std::vector<AppendOutcome> out(in.size());
  std::vector<std::string> reasons(in.size());
  append_core(items.data(), items.size(), out.data(), reasons.data());
  return out;
}

AppendOutcome Buffer::Impl::append_one(const RecordMeta& m, std::string_view payload) {
  const AppendItem item{&m, payload};
  AppendOutcome out;
  std::string reason;
  append_core(&item, 1, &out, &reason);
  return out;
}

/// Appends `in[0..n)` in one transaction; fills `out[i]` and, for a refusal, `reasons[i]` (the
/// metric label). `out` and `reasons` come in default-constructed.
void Buffer::Impl::append_core(const AppendItem* in, std::size_t n, AppendOutcome* out,
                               std::string* reasons) {
  std::vector<Prepared> prepared;
  prepared.reserve(n);
  std::int64_t now = wall_ns(port);
  for (std::size_t i = 0; i < n; ++i) {
    std::string bad = check_meta(*in[i].meta, in[i].payload.size());
    if (!bad.empty()) {
      out[i].reason = errc::invalid_argument;
      out[i].message = bad;
      reasons[i] = "invalid";
      continue;
    }
    prepared.push_back(prepare(i, *in[i].meta, in[i].payload, now));
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
  // Count and log (after the outcome is final: a failed commit evicted nothing). The outcome
  // stands whatever happens here: out of memory while grouping or formatting loses a log line
  // or a labelled count, never turns a stored record into an exception for the caller.
  std::uint64_t accepted = 0, accepted_bytes = 0;
  for (auto& p : prepared) {
    if (!out[p.index].accepted) continue;
    ++accepted;
    accepted_bytes += p.header.stored_bytes;
  }
  m_appended.inc(accepted);
  m_appended_bytes.inc(accepted_bytes);
  try {
    report_evictions(evictions);
    std::map<std::tuple<std::string, int, std::string>, std::pair<std::uint64_t, std::string>> rj;
    for (std::size_t i = 0; i < n; ++i) {
      if (out[i].accepted) continue;
      const RecordMeta& m = *in[i].meta;
      int prio = std::min<int>(m.priority, 255);
      count_rejection(reasons[i], prio, m.stream);
      auto& g = rj[{reasons[i], prio, m.stream}];
      if (g.first++ == 0) g.second = out[i].message;
    }
    for (auto& [key, g] : rj) {
      if (std::get<0>(key) == "fs_stats") {  // summed up in the once-a-minute warning (fs_stats())
        fs_stats_refused += g.first;
        continue;
      }
      log(LogLevel::warning, "rejected " + std::to_string(g.first) + " append(s) of priority " +
                                 std::to_string(std::get<1>(key)) + ", stream \"" + std::get<2>(key) +
                                 "\": " + g.second);
    }
  } catch (const std::bad_alloc&) {
  }
  refresh_gauges();
}

/// Fills `out` for a commit that failed with `rc`; returns the rejection reason label.
std::string Buffer::Impl::commit_failure(int rc, AppendOutcome& out) {
  // LMDB reports a short write on a full filesystem as EIO: look at the filesystem.
  bool space = rc == ENOSPC || rc == EDQUOT;
  if (rc == EIO) {
    auto st = fs_stats();
    space = st && st->free_bytes < (1u << 20);
  }
  if (space) fs_pressure = true;
  bool full = space || rc == MDB_MAP_FULL;
  out = AppendOutcome{};
  out.reason = full ? errc::storage_full : errc::io_error;
  out.message = "commit failed: " + lmdb::text(rc);
  return rc == MDB_MAP_FULL ? "map_full" : full ? "fs_full" : "io_error";
}

/// Counts and logs what a commit evicted. Never throws: out of memory loses the log line.
void Buffer::Impl::report_evictions(const std::vector<Eviction>& evictions) noexcept {
  for (auto& e : evictions) leased.erase(e.id);  // first: erasing never allocates
  try {
    std::map<std::tuple<std::string, int, std::string>, std::uint64_t> ev_groups;
    for (auto& e : evictions) ev_groups[{e.reason, e.priority, e.stream}]++;
    for (auto& [key, n] : ev_groups) {
      count_eviction(std::get<0>(key), std::get<1>(key), std::get<2>(key), n);
      log(LogLevel::warning, "evicted " + std::to_string(n) + " record(s) of priority " +
                                 std::to_string(std::get<1>(key)) + ", stream \"" + std::get<2>(key) +
                                 "\" (" + std::get<0>(key) + ")");
    }
  } catch (...) {
  }
}

}  // namespace fleetpipe
