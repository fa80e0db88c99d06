// Power-cut matrix (issue #24): a forked child runs capture + buffer + upload (to the real S3
// server) with the write/sync recorder armed (shim.cpp); then crash states are cut from its trace
// (trace.hpp: the last synced state plus a random subset of the later writes, reordered, torn at
// 512-byte sectors, or a torn prefix of them) and each one is recovered in a forked child: the
// store opens (or is quarantined, counted) and takes a new record, its records are compared with
// what the run had accepted, and it drains to its own prefix. At the end one boto3 read-back
// compares every data key a recovery uploaded with the same key of the original run.
//
// Not built with sanitizers (tests/CMakeLists.txt). States per durability:
// $FLEETPIPE_POWERCUT_STATES, default 100; every
// $FLEETPIPE_POWERCUT_UPLOAD_EVERY-th state (default 5) also drains to the server.
// scripts/reliability runs the full matrix (1,000 states per durability).
#include "powercut/trace.hpp"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <sstream>
#include <thread>

#include "buffer/sync_checkpoint.hpp"
#include "capture/event_format.hpp"
#include "fleetpipe/buffer.hpp"
#include "fleetpipe/capture.hpp"
#include "fleetpipe/metrics.hpp"
#include "fleetpipe/trigger.hpp"
#include "fleetpipe/uploader.hpp"
#include "support/crash_uploader.hpp"
#include "support/readback.hpp"
#include "support/s3_env.hpp"
#include "support/shell.hpp"
#include "support/test_paths.hpp"

using namespace fleetpipe;
using namespace std::chrono_literals;
using nlohmann::json;
namespace fs = std::filesystem;
namespace pc = fleetpipe::powercut;

namespace {

constexpr int kDefaultStates = 100;

constexpr std::uint32_t kSyncIntervalMs = 50;

BufferConfig buffer_config(const fs::path& db, Durability d) {
  BufferConfig b;
  b.path = db.string();
  b.durability = d;
  b.sync_interval_ms = kSyncIntervalMs;
  b.min_free_bytes = 0;
  b.max_bytes = 256ull << 20;
  return b;
}

UploaderConfig uploader_config(const test::S3Env& env, const std::string& bucket,
                               const std::string& prefix) {
  auto c = test::crash_uploader_config(env, bucket, prefix, "pc-dev");
  c.target_object_bytes = 48 << 10;
  c.large_record_bytes = 96 << 10;
  return c;
}

std::string hash_of(std::string_view bytes) {
  return std::to_string(std::hash<std::string_view>{}(bytes));
}

double now_ms() {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// Notes each accepted event in the trace: "A <event id> <payload hash> <ms>".
struct MarkingSink final : EventSink {
  Buffer* buffer = nullptr;
  AppendOutcome deliver(const RecordMeta& meta, std::string_view payload) override {
    auto o = buffer->append(meta, payload);
    if (o.accepted)
      pc::mark("A " + meta.event_id + " " + hash_of(payload) + " " + std::to_string(now_ms()));
    return o;
  }
};

// Notes each object the Uploader acked: its debug line "uploaded <key> (...)" follows the ack.
struct AckMarkingLog final : LogSink {
  void write(LogLevel, std::string_view, std::string_view message) noexcept override {
    if (message.rfind("uploaded ", 0) != 0) return;
    auto key = message.substr(9, message.find(' ', 9) - 9);
    pc::mark("U " + std::string(key));
  }
};

// The recorded run: capture (a numeric and a blob stream) + buffer + upload, then a drain.
[[noreturn]] void record_main(const fs::path& dir, const fs::path& trace, Durability d,
                              const test::S3Env& env, const std::string& bucket,
                              const std::string& prefix, std::uint64_t seed) {
  if (!pc::arm(dir.c_str(), trace.c_str())) _exit(2);
  AckMarkingLog marks;
  Port port;
  port.log = &marks;
  MetricsRegistry metrics;
  auto buf = Buffer::open(buffer_config(dir / "db", d), port, metrics);
  if (!buf) _exit(3);
  MarkingSink sink;
  sink.buffer = buf->get();
  StreamConfig imu;
  imu.name = "imu";
  imu.channels = {"v"};
  imu.ring_seconds = 2;
  StreamConfig cam;
  cam.name = "cam";
  cam.kind = StreamKind::blob;
  cam.ring_seconds = 2;
  cam.ring_bytes = 4u << 20;
  cam.content_type = "image/jpeg";
  auto trig = manual_trigger("m");
  trig.capture.pre_s = 0.03;
  trig.capture.post_s = 0.03;
  auto cap = Capture::create("pc-dev", {imu, cam}, {trig}, sink, port, metrics);
  if (!cap) _exit(4);
  auto up = Uploader::create(uploader_config(env, bucket, prefix), **buf, port, metrics);
  if (!up) _exit(5);
  auto hi = (*cap)->stream("imu");
  auto hc = (*cap)->stream("cam");
  auto m = (*cap)->trigger("m");
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> log_size(std::log(10.0), std::log(200.0 * 1024));
  std::string blob;
  double t = 0;
  for (int i = 0; i < 1600; ++i) {
    t += 0.01;
    (*cap)->push(hi, t, {static_cast<double>(rng() % 1000)});
    if (i % 7 == 0) {  // a blob of 10 B .. 200 KiB, log-uniform
      blob.assign(static_cast<std::size_t>(std::exp(log_size(rng))), static_cast<char>('a' + rng() % 26));
      (*cap)->push_blob(hc, t, blob);
    }
    if (i % 20 == 0) (void)(*cap)->fire(m, t);
    (*cap)->tick(t);
    (*up)->poll();
    (void)(*buf)->poll();
    if (i % 5 == 0) (*up)->run_for(1ms);
  }
  (*cap)->flush();
  auto end = std::chrono::steady_clock::now() + 30s;
  while (std::chrono::steady_clock::now() < end && ((*buf)->stats().records > 0 || !(*up)->idle())) {
    (*up)->flush();
    (*up)->run_for(10ms);
  }
  (*up)->run_for(200ms);
  _exit((*buf)->stats().records == 0 ? 0 : 6);
}

struct Recovered {
  bool crashed = false;  // the recovery child died (signal) or failed to report
  int quarantined = 0;
  bool open_ok = false, accepts = false, drained = false;
  std::map<std::string, std::string> records;  // event id -> payload hash
  std::set<std::string> delivered;  // keys its saved manifest lines name: on the server at the cut
  std::string note;
};

// In a child: opens the crash state, lists it, appends one record, drains it to `prefix`.
Recovered recover(const fs::path& db, Durability d, const test::S3Env& env, const std::string& bucket,
                  const std::string& prefix, bool upload) {
  auto out = db.parent_path() / "result.json";
  std::fflush(nullptr);  // the child must not print the parent's buffered lines again
  pid_t pid = fork();
  if (pid == 0) {
    // A crash of the library on a damaged store is counted by the parent; Catch's handlers
    // would report it as a failure of its own.
    for (int sig : {SIGSEGV, SIGABRT, SIGBUS, SIGFPE, SIGILL}) signal(sig, SIG_DFL);
    // A power cut is a reboot: the Buffer must not take the page cache as having survived.
    auto boot = db.parent_path() / "boot_id";
    std::ofstream(boot) << "powercut-recovery\n";
    detail::set_boot_id_file_for_testing(boot.string());
    StderrLogSink quiet(LogLevel::off);
    Port port;
    port.log = &quiet;
    MetricsRegistry metrics;
    json r;
    auto buf = Buffer::open(buffer_config(db, d), port, metrics);
    r["open"] = buf.ok();
    r["quarantined"] = metrics.sum("fleetpipe_buffer_quarantined_total");
    if (!buf) r["note"] = buf.error().message;
    if (buf) {
      json recs = json::object();
      auto lease = (*buf)->lease(~0ull);
      if (lease) {
        for (const auto& lr : lease->records()) {
          std::string bytes(lr.payload_size, '\0');
          auto n = (*buf)->read_payload(lr.id, 0, bytes.data(), bytes.size());
          recs[lr.meta.event_id] = n && *n == bytes.size() ? hash_of(bytes) : "unreadable";
        }
        lease->release();
      } else {
        r["note"] = "lease: " + lease.error().message;
      }
      r["records"] = recs;
      json delivered = json::array();
      if (auto ms = (*buf)->list_state("uploader/manifest/"))
        for (const auto& [k, lines] : *ms) {
          std::istringstream in(lines);
          std::string line;
          while (std::getline(in, line)) {
            auto j = json::parse(line, nullptr, false);
            if (j.is_object()) delivered.push_back(j.value("key", ""));
          }
        }
      r["delivered"] = delivered;
      RecordMeta meta;
      meta.stream = "imu";
      meta.event_id = "after-recovery";
      meta.content_type = "application/octet-stream";
      r["accepts"] = (*buf)->append(meta, "goes on").accepted;
      if (upload) {
        auto up = Uploader::create(uploader_config(env, bucket, prefix), **buf, port, metrics);
        auto end = std::chrono::steady_clock::now() + 30s;
        while (up && std::chrono::steady_clock::now() < end &&
               ((*buf)->stats().records > (*buf)->stats().parked || !(*up)->idle())) {
          (*up)->flush();
          (*up)->run_for(10ms);
        }
        if (up) (*up)->run_for(100ms);
        r["drained"] = up && (*buf)->stats().records == 0;
      }
    }
    // A damaged store may hand back ids that are not UTF-8.
    std::ofstream(out) << r.dump(-1, ' ', false, json::error_handler_t::replace);
    _exit(0);
  }
  Recovered rec;
  int status = 0;
  if (pid < 0 || waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    rec.crashed = true;
    rec.note = "recovery child status " + std::to_string(status);
    return rec;
  }
  auto j = json::parse(test::slurp(out.string()), nullptr, false);
  if (j.is_discarded()) {
    rec.crashed = true;
    rec.note = "no report";
    return rec;
  }
  rec.open_ok = j.value("open", false);
  rec.quarantined = static_cast<int>(j.value("quarantined", 0.0));
  rec.accepts = j.value("accepts", false);
  rec.drained = j.value("drained", !upload);
  rec.note = j.value("note", "");
  if (j.contains("records"))
    for (auto& [k, v] : j["records"].items()) rec.records[k] = v.get<std::string>();
  if (j.contains("delivered"))
    for (const auto& k : j["delivered"]) rec.delivered.insert(k.get<std::string>());
  return rec;
}

struct Mark {
  std::size_t at;  // index of the op
  char kind;
  std::string a, b;
  double ms = 0;
};

void run_matrix(Durability d, const char* name) {
  auto env = test::load_s3_env();
  int states = kDefaultStates;
  if (const char* k = std::getenv("FLEETPIPE_POWERCUT_STATES")) states = std::max(1, std::atoi(k));
  int upload_every = 5;
  if (const char* k = std::getenv("FLEETPIPE_POWERCUT_UPLOAD_EVERY")) upload_every = std::max(1, std::atoi(k));
  std::string bucket = "fp-powercut-" + std::to_string(std::random_device{}() % 1000000000u);
  std::string base = "pc" + std::to_string(std::random_device{}() % 100000u);
  test::readback(env, "mkbucket " + bucket);
  auto scratch = test::scratch_dir(std::string("powercut-") + name);
  auto dir = fs::absolute(scratch / "run");
  fs::create_directories(dir);
  auto trace = scratch / "trace.bin";
  std::uint64_t seed = std::random_device{}();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);

  // 1. The recorded run.
  std::fflush(nullptr);
  auto t0 = std::chrono::steady_clock::now();
  auto secs = [](std::chrono::steady_clock::time_point a) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - a).count();
  };
  pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) record_main(dir, trace, d, env, bucket, base + "/run", rng());
  int status = 0;
  REQUIRE(waitpid(pid, &status, 0) == pid);
  INFO("recorded run: status " << status << (WIFSIGNALED(status) ? " (signal)" : ""));
  REQUIRE(WIFEXITED(status));
  REQUIRE(WEXITSTATUS(status) == 0);  // the run itself drained everything
  auto ops = pc::read_trace(trace.string());
  std::vector<Mark> marks;
  std::int32_t data_file = -1, checkpoint_file = -1;
  std::size_t syncs = 0, writes = 0;
  for (std::size_t i = 0; i < ops.size(); ++i) {
    const auto& o = ops[i];
    REQUIRE(o.op != pc::Op::writable_map);  // writes through a map would escape the model
    if (o.op == pc::Op::name && o.data == "db/data.mdb") data_file = o.file;
    if (o.op == pc::Op::name && o.data == "db/checkpoint") checkpoint_file = o.file;
    if (o.op == pc::Op::sync && o.file == data_file) ++syncs;
    if (o.op == pc::Op::write) ++writes;
    if (o.op != pc::Op::mark) continue;
    std::istringstream in(o.data);
    Mark mk{i, 0, {}, {}, 0};
    in >> mk.kind >> mk.a >> mk.b >> mk.ms;
    marks.push_back(mk);
  }
  REQUIRE(data_file >= 0);
  std::size_t accepted_total = 0;
  for (const auto& m : marks) accepted_total += m.kind == 'A';
  INFO(ops.size() << " ops, " << writes << " writes, " << syncs << " data syncs, " << accepted_total
                  << " records accepted");
  REQUIRE(accepted_total >= 20);
  if (d == Durability::interval) REQUIRE(syncs >= 3);

  // Which events each object of the run holds (every object is FPEV).
  auto run_dump = test::readback(env, "dump " + bucket + " " + base + "/run/ '" + (scratch / "rb-run").string() + "'");
  std::map<std::string, std::vector<std::string>> events_of;  // key -> event ids
  std::map<std::string, std::string> run_bytes;             // data key, relative -> bytes
  for (const auto& o : run_dump["objects"]) {
    auto key = o["key"].get<std::string>();
    if (key.find("/_manifests/") != std::string::npos) continue;
    auto bytes = test::slurp(o["file"].get<std::string>());
    auto ev = detail::decode_events(bytes);
    REQUIRE(ev.ok());
    for (const auto& e : *ev) events_of[key].push_back(e.event_id);
    run_bytes[key.substr(base.size() + 5)] = std::move(bytes);
  }

  // 2. Crash states.
  const double record_s = secs(t0);
  auto t1 = std::chrono::steady_clock::now();
  double upload_s = 0;
  int opened = 0, quarantined = 0, crashed = 0, refused = 0, lost = 0, lost_beyond_promise = 0;
  int corrupt = 0, not_drained = 0, states_losing = 0, quarantined_ordered = 0;
  int crashed_ordered = 0, beyond_ordered = 0, refused_ordered = 0, quarantined_at_stake = 0;
  double worst_loss_ms = 0, worst_loss_ordered_ms = 0;
  std::map<int, std::set<std::string>> on_server;  // state -> run keys on the server at its cut
  std::size_t kept = 0, dropped = 0;
  std::vector<std::string> problems;
  auto problem = [&](std::string p) {
    if (problems.size() < 16) problems.push_back(std::move(p));
  };
  for (int k = 0; k < states; ++k) {
    std::size_t cut = std::uniform_int_distribution<std::size_t>(0, ops.size())(rng);
    auto mode = k % 2 == 0 ? pc::Reorder::reordered : pc::Reorder::ordered;
    auto sdir = scratch / ("s" + std::to_string(k));
    auto st = pc::make_crash_state(ops, cut, mode, rng, sdir);
    kept += st.kept_sectors;
    dropped += st.dropped_sectors;
    auto tr = std::chrono::steady_clock::now();
    auto rec = recover(sdir / "db", d, env, bucket, base + "/s" + std::to_string(k), k % upload_every == 0);
    if (k % upload_every == 0) upload_s += secs(tr);
    std::string where = std::string("state ") + std::to_string(k) + " (cut " + std::to_string(cut) + "/" +
                        std::to_string(ops.size()) + (mode == pc::Reorder::ordered ? ", ordered" : ", reordered") + ")";
    if (rec.crashed) {
      ++crashed;
      crashed_ordered += mode == pc::Reorder::ordered;
      problem(where + ": " + rec.note);
      continue;
    }
    if (!rec.open_ok) {
      ++refused;
      refused_ordered += mode == pc::Reorder::ordered;
      problem(where + ": open failed: " + rec.note);
      continue;
    }
    const bool at_stake = std::any_of(marks.begin(), marks.end(), [&](const Mark& m) { return m.kind == 'A' && m.at < cut; });
    if (rec.quarantined > 0) {
      ++quarantined;
      // A store cut before its first record (still being created) may be quarantined: nothing
      // accepted is lost with it.
      if (at_stake) {
        ++quarantined_at_stake;
        quarantined_ordered += mode == pc::Reorder::ordered;
        if (d == Durability::sync || mode == pc::Reorder::ordered) problem(where + ": quarantined");
      }
    } else {
      ++opened;
    }
    if (!rec.accepts) problem(where + ": no append after recovery");
    if (!rec.drained) {
      ++not_drained;
      problem(where + ": not drained");
    }
    // What the run had accepted and not yet acked at the cut must be there; an object acked
    // before the cut, or the one whose ack was under way at it, may be gone.
    std::size_t last_sync = 0;
    double cut_ms = 0;
    // Under `interval` a state counts as synced once its checkpoint is (sync_checkpoint.hpp): the
    // data-file fsync that preceded the last checkpoint fsync before the cut.
    std::size_t data_sync = 0;
    for (std::size_t i = 0; i < cut; ++i) {
      if (ops[i].op != pc::Op::sync) continue;
      if (ops[i].file == data_file) data_sync = i;
      if (ops[i].file == data_file && checkpoint_file < 0) last_sync = i;
      if (ops[i].file == checkpoint_file) last_sync = data_sync;
    }
    std::set<std::string> may_be_gone;
    bool next_ack = false;
    auto& uploaded = on_server[k];
    for (const auto& key : rec.delivered) uploaded.insert(key.substr(base.size() + 5));
    for (const auto& m : marks) {
      if (m.at < cut && m.kind == 'A') cut_ms = m.ms;
      if (m.kind != 'U') continue;
      if (m.at < cut) uploaded.insert(m.a.substr(base.size() + 5));
      if (m.at < cut || !next_ack) {
        for (const auto& e : events_of[m.a]) may_be_gone.insert(e);
        if (m.at >= cut) next_ack = true;
      }
    }
    int lost_here = 0;
    for (const auto& m : marks) {
      if (m.kind != 'A' || m.at >= cut) continue;
      auto it = rec.records.find(m.a);
      if (it != rec.records.end()) {
        if (it->second != m.b) {
          ++corrupt;
          problem(where + ": " + m.a + " has other bytes");
        }
        continue;
      }
      if (may_be_gone.count(m.a) || rec.quarantined > 0) continue;
      ++lost_here;
      worst_loss_ms = std::max(worst_loss_ms, cut_ms - m.ms);
      if (mode == pc::Reorder::ordered) worst_loss_ordered_ms = std::max(worst_loss_ordered_ms, cut_ms - m.ms);
      bool promised = d == Durability::sync || m.at < last_sync;
      if (promised) {
        ++lost_beyond_promise;
        beyond_ordered += mode == pc::Reorder::ordered;
        problem(where + ": lost " + m.a + " (accepted at op " + std::to_string(m.at) +
                ", last checkpointed data sync at op " + std::to_string(last_sync) + ")");
      }
    }
    lost += lost_here;
    states_losing += lost_here > 0;
    for (const auto& [id, h] : rec.records)
      if (id != "after-recovery" && std::none_of(marks.begin(), marks.end(), [&](const Mark& m) {
            return m.kind == 'A' && m.a == id;
          })) {
        ++corrupt;
        problem(where + ": a record nobody appended: " + id);
      }
    fs::remove_all(sdir);
  }

  const double states_s = secs(t1);
  auto t2 = std::chrono::steady_clock::now();
  // 3. No key uploaded twice with different bytes: each recovery's data keys against the run's
  // objects that were on the server at its cut (acked before it, or named by its saved manifest
  // lines); the run's later objects never happened in that state's timeline.
  auto all = test::readback(env, "dump " + bucket + " " + base + "/ '" + (scratch / "rb-all").string() + "'");
  int keys_compared = 0, keys_differing = 0, differing_ordered = 0, recovered_objects = 0;
  for (const auto& o : all["objects"]) {
    auto key = o["key"].get<std::string>();
    if (key.find("/_manifests/") != std::string::npos || key.rfind(base + "/s", 0) != 0) continue;
    ++recovered_objects;
    auto slash = key.find('/', base.size() + 1);
    auto rel = key.substr(slash + 1);
    int state = std::atoi(key.substr(base.size() + 2, slash - base.size() - 2).c_str());
    auto it = run_bytes.find(rel);
    if (it == run_bytes.end() || !on_server[state].count(rel)) continue;
    ++keys_compared;
    if (test::slurp(o["file"].get<std::string>()) != it->second) {
      ++keys_differing;
      differing_ordered += state % 2 == 1;  // odd states are cut in the ordered mode
      problem("key " + rel + " uploaded with other bytes by " + key.substr(0, key.find('/', base.size() + 1)));
    }
  }
  std::ostringstream summary;
  summary << name << ": " << states << " crash states of a run with " << accepted_total << " records, "
          << ops.size() << " ops (" << writes << " writes, " << syncs << " data syncs); opened " << opened
          << ", quarantined " << quarantined << " (" << quarantined_at_stake << " holding records, "
          << quarantined_ordered << " of them ordered), refused " << refused
          << ", crashed " << crashed << " (" << crashed_ordered << " ordered); records lost " << lost << " in "
          << states_losing << " states (beyond the promise " << lost_beyond_promise << ", " << beyond_ordered
          << " ordered; worst " << worst_loss_ms << " ms of appends, " << worst_loss_ordered_ms << " ms ordered), other bytes " << corrupt
          << ", not drained " << not_drained << "; sectors kept " << kept << ", dropped " << dropped
          << "; " << recovered_objects << " objects uploaded by recoveries, " << keys_compared
          << " keys also on the server at the cut, " << keys_differing << " with other bytes ("
          << differing_ordered << " ordered)";
  summary << "; " << record_s << " s recorded run and read-back, " << states_s << " s crash states ("
          << upload_s << " s of it in " << (states + upload_every - 1) / upload_every << " drains), "
          << secs(t2) << " s final read-back";
  for (const auto& p : problems) summary << "\n  " << p;
  INFO(summary.str());
  std::printf("power-cut matrix %s\n", summary.str().c_str());
  CHECK(corrupt == 0);
  CHECK(not_drained == 0);
  CHECK(opened + quarantined + crashed + refused == states);
  // Write order kept (an ordered filesystem, or any under `sync`): nothing beyond the promise.
  CHECK(crashed_ordered == 0);
  CHECK(refused_ordered == 0);
  CHECK(quarantined_ordered == 0);
  CHECK(beyond_ordered == 0);
  CHECK(differing_ordered == 0);
  if (d == Durability::sync) {
    CHECK(keys_differing == 0);
    CHECK(crashed == 0);
    CHECK(quarantined_at_stake == 0);
    CHECK(refused == 0);
    CHECK(lost == 0);
  } else {
    // Writes reordered under `interval`: the store reopens at its last checkpointed state
    // (sync_checkpoint.hpp), which later commits could not overwrite.
    CHECK(crashed == 0);
    CHECK(refused == 0);
    CHECK(quarantined_at_stake == 0);
    CHECK(lost_beyond_promise == 0);
    CHECK(keys_differing == 0);
  }
  if (problems.empty()) fs::remove_all(scratch);
}

}  // namespace

TEST_CASE("power cuts of capture+buffer+upload under sync durability: the store opens, no "
          "accepted record is lost, no key is uploaded twice with other bytes",
          "[powercut][s3]") {
  run_matrix(Durability::sync, "sync");
}

TEST_CASE("power cuts of capture+buffer+upload under interval durability: the store opens or is "
          "quarantined, losses stay within the last sync interval, no key gets other bytes",
          "[powercut][s3]") {
  run_matrix(Durability::interval, "interval");
}
