// Buffer appends: append() and append_batch() as one transaction each (group commit), and how
// their outcomes — rejections, evictions, failed commits — are counted and logged.
#include <algorithm>
#include <cerrno>

#include "buffer/impl.hpp"

namespace fleetpipe {

using namespace detail;

std::vector<AppendOutcome> Buffer::Impl::append_many(
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
                               std::to_string(std::get<1>(key)) + ", stream \"" + std::get<2>(key) +
                               "\": " + g.second);
  for (auto& p : prepared)
    if (out[p.index].accepted) m_appended_bytes.inc(p.header.stored_bytes);
  refresh_gauges();
  return out;
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

void Buffer::Impl::report_evictions(const std::vector<Eviction>& evictions) {
  std::map<std::tuple<std::string, int, std::string>, std::uint64_t> ev_groups;
  for (auto& e : evictions) {
    ev_groups[{e.reason, e.priority, e.stream}]++;
    auto it = leased.find(e.id);
    if (it != leased.end()) leased.erase(it);
  }
  for (auto& [key, n] : ev_groups) {
    count_eviction(std::get<0>(key), std::get<1>(key), std::get<2>(key), n);
    log(LogLevel::warning, "evicted " + std::to_string(n) + " record(s) of priority " +
                               std::to_string(std::get<1>(key)) + ", stream \"" + std::get<2>(key) +
                               "\" (" + std::get<0>(key) + ")");
  }
}

}  // namespace fleetpipe
