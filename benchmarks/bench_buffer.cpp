// bench_buffer: the Buffer against raw LMDB doing the same work, same run, same disk.
//
//   ingest_batched_vs_lmdb  1 KiB records, 100 per durable commit: raw LMDB time / fleetpipe time
//   put_sync_vs_lmdb        1 record per durable commit:           raw LMDB time / fleetpipe time
//   ingest_1mib_mb_s        1 MiB sensor-like records, 1 per durable commit, compression on
//                           (compression off and raw LMDB in the baseline text)
//   lease_ack_rec_s         lease 100 + ack 100 per durable commit, records/s
//
// Both sides use the same directory's filesystem, LMDB's default durable commit (fsync), the
// same record count, payload bytes and commit count. The first two are measured again on
// /dev/shm (a memory filesystem: the fsync costs ~nothing, so the ratio is the work per commit
// without the disk) and that run is named in their baseline text. Rounds alternate fleetpipe / LMDB and the
// median is reported, so disk noise hits both sides alike.
#include <lmdb.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include <unistd.h>

#include "bench_report.hpp"
#include "fleetpipe/buffer.hpp"

using namespace fleetpipe;
namespace fs = std::filesystem;
using Steady = std::chrono::steady_clock;

namespace {

fs::path g_root;

fs::path fresh(const std::string& name) {
  fs::path p = g_root / name;
  fs::remove_all(p);
  fs::create_directories(p);
  return p;
}

double seconds_since(Steady::time_point t) {
  return std::chrono::duration<double>(Steady::now() - t).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

std::string random_payload(std::size_t n, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::string s(n, '\0');
  for (auto& c : s) c = static_cast<char>(rng());
  return s;
}

/// Sensor-like data: int16 samples of a noisy sine (compresses about 2-3x with zstd -1).
std::string sensor_payload(std::size_t n, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> noise(0, 20);
  std::string s(n, '\0');
  for (std::size_t i = 0; i + 1 < n; i += 2) {
    auto v = static_cast<std::int16_t>(1000 * std::sin(static_cast<double>(i) / 200.0) + noise(rng));
    s[i] = static_cast<char>(v & 0xff);
    s[i + 1] = static_cast<char>((v >> 8) & 0xff);
  }
  return s;
}

// ---- raw LMDB baseline ----------------------------------------------------------------------

struct RawLmdb {
  MDB_env* env = nullptr;
  MDB_dbi dbi = 0;
  std::uint64_t next = 1;
  explicit RawLmdb(const fs::path& dir) {
    mdb_env_create(&env);
    mdb_env_set_mapsize(env, 4ull << 30);
    mdb_env_open(env, dir.c_str(), MDB_NOTLS, 0644);
    MDB_txn* txn;
    mdb_txn_begin(env, nullptr, 0, &txn);
    mdb_dbi_open(txn, nullptr, 0, &dbi);
    mdb_txn_commit(txn);
  }
  ~RawLmdb() { mdb_env_close(env); }
  /// `per_txn` puts of `payload` per durable commit, `commits` times.
  void ingest(const std::string& payload, int per_txn, int commits) {
    for (int c = 0; c < commits; ++c) {
      MDB_txn* txn;
      mdb_txn_begin(env, nullptr, 0, &txn);
      for (int i = 0; i < per_txn; ++i) {
        std::uint64_t k = __builtin_bswap64(next++);
        MDB_val kv{8, &k}, vv{payload.size(), const_cast<char*>(payload.data())};
        mdb_put(txn, dbi, &kv, &vv, MDB_APPEND);
      }
      mdb_txn_commit(txn);
    }
  }
  /// Reads the first `n` records and deletes them, per durable commit; returns records done.
  std::uint64_t read_delete(int n, int commits) {
    std::uint64_t done = 0;
    for (int c = 0; c < commits; ++c) {
      MDB_txn* txn;
      mdb_txn_begin(env, nullptr, 0, &txn);
      MDB_cursor* cur;
      mdb_cursor_open(txn, dbi, &cur);
      MDB_val k, v;
      std::uint64_t sum = 0;
      for (int i = 0; i < n && mdb_cursor_get(cur, &k, &v, i ? MDB_NEXT : MDB_FIRST) == 0; ++i) {
        sum += static_cast<const unsigned char*>(v.mv_data)[0];
        mdb_cursor_del(cur, 0);
        ++done;
      }
      mdb_cursor_close(cur);
      mdb_txn_commit(txn);
      if (sum == 12345678) std::puts("");  // keep the reads
    }
    return done;
  }
};

// ---- fleetpipe ------------------------------------------------------------------------------

class NullLog final : public LogSink {
 public:
  void write(LogLevel, std::string_view, std::string_view) noexcept override {}
};

struct Fp {
  MetricsRegistry metrics;
  NullLog log;
  std::unique_ptr<Buffer> b;
  Fp(const fs::path& dir, bool compress, Durability d = Durability::sync) {
    BufferConfig c;
    c.path = dir.string();
    c.durability = d;
    c.max_bytes = 8ull << 30;
    c.max_records = 100000000;
    c.min_free_bytes = 256ull << 20;
    c.compress_min_bytes = compress ? 4096 : 0;
    c.initial_map_bytes = 64ull << 20;
    Port port;
    port.log = &log;
    auto r = Buffer::open(c, port, metrics);
    if (!r) {
      std::fprintf(stderr, "open: %s\n", r.error().message.c_str());
      std::exit(1);
    }
    b = std::move(*r);
  }
  void ingest(const std::string& payload, int per_txn, int commits) {
    RecordMeta m;
    m.stream = "imu";
    m.event_id = "bench";
    m.priority = 3;
    m.content_type = "application/octet-stream";
    std::vector<std::pair<RecordMeta, std::string_view>> batch(per_txn, {m, payload});
    for (int c = 0; c < commits; ++c) {
      if (per_txn == 1) {
        if (!b->append(m, payload).accepted) std::exit(2);
      } else {
        auto out = b->append_batch(batch);
        if (!out.back().accepted) std::exit(2);
      }
    }
  }
};

}  // namespace

int main() {
  const char* tmp = std::getenv("FLEETPIPE_BENCH_TMP");
  g_root = tmp ? fs::path(tmp) : fs::path("bench-results") / ".tmp-buffer";
  fs::create_directories(g_root);
  bench::Report report("buffer");
  const int rounds = 5;

  // ---- ingest_batched_vs_lmdb, put_sync_vs_lmdb ----
  // On the bench's disk (the figures), and again on a memory filesystem where an fsync costs
  // next to nothing: there the ratio is fleetpipe's own work per commit against LMDB's, which a
  // slow disk's fsync hides (baseline text only).
  const fs::path disk_root = g_root;
  const fs::path mem_root = fs::path("/dev/shm") / ("fleetpipe-bench-buffer-" + std::to_string(getpid()));
  const bool have_mem = fs::is_directory("/dev/shm");
  struct Pair {
    double fp = 0, raw = 0;  // median seconds
  };
  auto durable_commits = [&](const fs::path& root, int per, int commits, std::uint64_t seed) {
    g_root = root;
    fs::create_directories(g_root);
    std::string p = random_payload(1024, seed);
    std::vector<double> fp_t, raw_t;
    for (int r = 0; r < rounds; ++r) {
      {
        Fp fp(fresh("fp-commits"), true);
        auto t = Steady::now();
        fp.ingest(p, per, commits);
        fp_t.push_back(seconds_since(t));
      }
      {
        RawLmdb raw(fresh("raw-commits"));
        auto t = Steady::now();
        raw.ingest(p, per, commits);
        raw_t.push_back(seconds_since(t));
      }
    }
    g_root = disk_root;
    return Pair{median(fp_t), median(raw_t)};
  };
  auto mem_text = [&](int per, int commits, std::uint64_t seed, const char* unit) {
    if (!have_mem) return std::string("; no /dev/shm for the memory-filesystem comparison");
    Pair m = durable_commits(mem_root, per, commits * 10, seed);
    fs::remove_all(mem_root);
    char t[200];
    std::snprintf(t, sizeof t, "; on a memory filesystem (fsync ~free, fleetpipe's own work shows): raw %.0f %s, "
                  "fleetpipe %.0f (ratio %.2f)", commits * 10.0 * per / m.raw, unit, commits * 10.0 * per / m.fp,
                  m.raw / m.fp);
    return std::string(t);
  };
  {
    const int commits = 40, per = 100;
    Pair d = durable_commits(disk_root, per, commits, 1);
    char base[512];
    std::snprintf(base, sizeof base,
                  "raw LMDB, 1 KiB values 100 per durable txn: %.0f rec/s; fleetpipe %.0f rec/s",
                  commits * per / d.raw, commits * per / d.fp);
    report.add("ingest_batched_vs_lmdb", d.raw / d.fp, "ratio", base + mem_text(per, commits, 1, "rec/s"), ">= 0.9");
  }
  {
    const int commits = 200;
    Pair d = durable_commits(disk_root, 1, commits, 2);
    char base[512];
    std::snprintf(base, sizeof base,
                  "raw LMDB, one 1 KiB put per durable txn: %.0f commits/s; fleetpipe %.0f/s",
                  commits / d.raw, commits / d.fp);
    report.add("put_sync_vs_lmdb", d.raw / d.fp, "ratio", base + mem_text(1, commits, 2, "commits/s"), ">= 0.95");
  }

  // ---- ingest_1mib_mb_s (compression on; off and raw LMDB in the baseline) ----
  {
    std::string p = sensor_payload(1 << 20, 3);
    const int commits = 24;
    std::vector<double> on_t, off_t, raw_t;
    double ratio = 1;
    for (int r = 0; r < 3; ++r) {
      {
        Fp fp(fresh("fp-1mib-on"), true);
        auto t = Steady::now();
        fp.ingest(p, 1, commits);
        on_t.push_back(seconds_since(t));
        ratio = fp.b->stats().compression_ratio;
      }
      {
        Fp fp(fresh("fp-1mib-off"), false);
        auto t = Steady::now();
        fp.ingest(p, 1, commits);
        off_t.push_back(seconds_since(t));
      }
      {
        RawLmdb raw(fresh("raw-1mib"));
        auto t = Steady::now();
        raw.ingest(p, 1, commits);
        raw_t.push_back(seconds_since(t));
      }
    }
    double mb = commits * 1.048576;
    char base[256];
    std::snprintf(base, sizeof base,
                  "compression off: %.1f MB/s; raw LMDB 1 MiB put per durable txn: %.1f MB/s; "
                  "zstd level 1 ratio %.2f",
                  mb / median(off_t), mb / median(raw_t), ratio);
    report.add("ingest_1mib_mb_s", mb / median(on_t), "MB/s", base);
  }

  // ---- lease_ack_rec_s ----
  {
    std::string p = random_payload(1024, 4);
    const int n = 20000, per = 100;
    std::vector<double> fp_r, raw_r;
    for (int r = 0; r < 3; ++r) {
      {
        Fp fp(fresh("fp-lease"), true);
        fp.ingest(p, 1000, n / 1000);
        auto t = Steady::now();
        std::uint64_t done = 0;
        for (;;) {
          auto l = fp.b->lease(UINT64_MAX, per);
          if (!l || l->empty()) break;
          std::vector<RecordId> ids;
          std::uint64_t sum = 0;
          for (std::size_t i = 0; i < l->records().size(); ++i) {
            ids.push_back(l->records()[i].id);
            sum += static_cast<unsigned char>((*l->payload(i))[0]);
          }
          if (!fp.b->ack(ids)) std::exit(3);
          done += ids.size();
          if (sum == 12345678) std::puts("");
        }
        fp_r.push_back(static_cast<double>(done) / seconds_since(t));
      }
      {
        RawLmdb raw(fresh("raw-lease"));
        raw.ingest(p, 1000, n / 1000);
        auto t = Steady::now();
        std::uint64_t done = raw.read_delete(per, n / per);
        raw_r.push_back(static_cast<double>(done) / seconds_since(t));
      }
    }
    char base[256];
    std::snprintf(base, sizeof base,
                  "raw LMDB read+delete 100 per durable txn: %.0f rec/s (fleetpipe/raw %.2f)",
                  median(raw_r), median(fp_r) / median(raw_r));
    report.add("lease_ack_rec_s", median(fp_r), "rec/s", base);
  }

  fs::remove_all(g_root);
  return report.write() ? 0 : 1;
}
