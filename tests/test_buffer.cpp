#include "fleetpipe/buffer.hpp"

#include <lmdb.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cstdlib>
#include <fstream>
#include <random>
#include <set>
#include <thread>

#include "fleetpipe/config.hpp"
#include "support/shell.hpp"
#include "support/test_paths.hpp"

using namespace fleetpipe;
namespace fs = std::filesystem;

namespace {

struct Env {
  FakeClock clock;
  FakeFilesystemStats fsstats;
  std::vector<std::string> lines;
  CallbackLogSink sink{[this](LogLevel, std::string_view, std::string_view m) {
    lines.emplace_back(m);
  }};
  MetricsRegistry metrics;
  BufferConfig cfg;
  Port port() {
    Port p;
    p.clock = &clock;
    p.filesystem = &fsstats;
    p.log = &sink;
    return p;
  }
  explicit Env(const std::string& tag) {
    cfg.path = (test::scratch_dir(tag) / "db").string();
    cfg.durability = Durability::none;
  }
  std::unique_ptr<Buffer> open() {
    auto b = Buffer::open(cfg, port(), metrics);
    if (!b.ok()) FAIL(b.error().message);
    return std::move(*b);
  }
  /// Opened with `stats` as Port::filesystem instead of `fsstats`.
  std::unique_ptr<Buffer> open(FilesystemStats& stats) {
    Port p = port();
    p.filesystem = &stats;
    auto b = Buffer::open(cfg, p, metrics);
    if (!b.ok()) FAIL(b.error().message);
    return std::move(*b);
  }
  bool logged(const std::string& needle) const {
    return std::any_of(lines.begin(), lines.end(),
                       [&](const std::string& l) { return l.find(needle) != std::string::npos; });
  }
};

RecordMeta meta(std::uint8_t prio, std::string stream = "imu", std::string event = "e") {
  RecordMeta m;
  m.stream = std::move(stream);
  m.event_id = std::move(event);
  m.priority = prio;
  m.trigger_ids = {"t1"};
  m.start_ns = 100;
  m.end_ns = 200;
  m.content_type = "application/octet-stream";
  m.metadata = {{"device", "d1"}};
  return m;
}

std::vector<RecordId> lease_ids(Buffer& b) {
  auto l = b.lease(UINT64_MAX);
  REQUIRE(l.ok());
  std::vector<RecordId> ids;
  for (auto& r : l->records()) ids.push_back(r.id);
  return ids;
}

std::string random_bytes(std::size_t n, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::string s(n, '\0');
  for (auto& c : s) c = static_cast<char>(rng());
  return s;
}

}  // namespace

TEST_CASE("append returns accepted ids and lease yields priority desc, then oldest") {
  Env e("buf-order");
  auto b = e.open();
  std::vector<std::pair<int, RecordId>> appended;
  for (int i = 0; i < 20; ++i) {
    int prio = (i * 5) % 8;
    auto o = b->append(meta(static_cast<std::uint8_t>(prio)), "payload-" + std::to_string(i));
    REQUIRE(o.accepted);
    appended.emplace_back(prio, o.id);
  }
  std::stable_sort(appended.begin(), appended.end(),
                   [](auto& a, auto& c) { return a.first > c.first; });
  auto ids = lease_ids(*b);
  REQUIRE(ids.size() == appended.size());
  for (std::size_t i = 0; i < ids.size(); ++i) CHECK(ids[i] == appended[i].second);
}

TEST_CASE("lease metadata and zero-copy payload round-trip") {
  Env e("buf-meta");
  auto b = e.open();
  RecordMeta m = meta(3, "camera", "ev-1");
  m.trigger_ids = {"a", "b"};
  m.metadata = {{"k", "v"}, {"x", "y"}};
  auto o = b->append(m, "hello");
  REQUIRE(o.accepted);
  auto l = b->lease(1 << 20);
  REQUIRE(l.ok());
  REQUIRE(l->records().size() == 1);
  const auto& r = l->records()[0];
  CHECK(r.meta.stream == "camera");
  CHECK(r.meta.event_id == "ev-1");
  CHECK(r.meta.trigger_ids == m.trigger_ids);
  CHECK(r.meta.metadata == m.metadata);
  CHECK(r.meta.priority == 3);
  CHECK(r.meta.start_ns == 100);
  CHECK(r.payload_size == 5);
  auto p = l->payload(0);
  REQUIRE(p.ok());
  CHECK(*p == "hello");
  CHECK(!l->payload(1).ok());
}

TEST_CASE("lease respects max_bytes and max_records, always giving at least one record") {
  Env e("buf-leasesize");
  auto b = e.open();
  for (int i = 0; i < 10; ++i) REQUIRE(b->append(meta(1), std::string(100, 'x')).accepted);
  {
    auto l = b->lease(350);
    REQUIRE(l.ok());
    CHECK(l->records().size() == 3);
  }
  {
    auto l = b->lease(UINT64_MAX, 4);
    REQUIRE(l.ok());
    CHECK(l->records().size() == 4);
  }
  auto l = b->lease(10);
  REQUIRE(l.ok());
  CHECK(l->records().size() == 1);
}

TEST_CASE("ack deletes, nack returns with attempts+1, leased records are skipped") {
  Env e("buf-acknack");
  auto b = e.open();
  for (int i = 0; i < 4; ++i) REQUIRE(b->append(meta(2), "p").accepted);
  auto l1 = b->lease(UINT64_MAX, 2);
  REQUIRE(l1.ok());
  REQUIRE(l1->records().size() == 2);
  auto l2 = b->lease(UINT64_MAX);
  REQUIRE(l2.ok());
  CHECK(l2->records().size() == 2);  // the other two
  RecordId a = l1->records()[0].id, c = l1->records()[1].id;
  REQUIRE(b->ack({a}).ok());
  REQUIRE(b->nack({c}).ok());
  auto p = l1->payload(0);  // the view stays valid after ack (snapshot)
  REQUIRE(p.ok());
  CHECK(*p == "p");
  l2->release();
  auto l3 = b->lease(UINT64_MAX);
  REQUIRE(l3.ok());
  REQUIRE(l3->records().size() == 3);
  CHECK(l3->records()[0].id == c);
  CHECK(l3->records()[0].attempts == 1);
  CHECK(b->stats().records == 3);
  CHECK(e.metrics.value("fleetpipe_buffer_acked_total") == 1);
  CHECK(e.metrics.value("fleetpipe_buffer_nacked_total") == 1);
  REQUIRE(b->ack({a, 999999}).ok());  // unknown ids are ignored
}

TEST_CASE("parked records are kept and counted but not leased again") {
  Env e("buf-park");
  auto b = e.open();
  auto o = b->append(meta(4), "p");
  REQUIRE(b->append(meta(1), "q").accepted);
  REQUIRE(b->park({o.id}, "access_denied").ok());
  auto ids = lease_ids(*b);
  REQUIRE(ids.size() == 1);
  CHECK(ids[0] != o.id);
  CHECK(b->stats().parked == 1);
  CHECK(b->stats().records == 2);
  CHECK(e.metrics.value("fleetpipe_buffer_parked_total", {{"reason", "access_denied"}}) == 1);
  CHECK(e.logged("parked 1 record"));
}

TEST_CASE("unpark returns parked records to the queue, all or by reason, counted and logged") {
  Env e("buf-unpark");
  auto b = e.open();
  std::vector<RecordId> ids;
  for (int i = 0; i < 6; ++i) ids.push_back(b->append(meta(static_cast<std::uint8_t>(i % 3)), "p").id);
  REQUIRE(b->park({ids[0], ids[1], ids[2]}, "NoSuchBucket").ok());
  REQUIRE(b->park({ids[3]}, "too_large").ok());
  REQUIRE(b->park({ids[4]}, "").ok());  // no reason given: "unspecified"
  REQUIRE(b->stats().parked == 5);
  REQUIRE(lease_ids(*b) == std::vector<RecordId>{ids[5]});

  auto none = b->unpark("AccessDenied");  // nothing parked for that reason
  REQUIRE(none.ok());
  CHECK(*none == 0);
  auto some = b->unpark("NoSuchBucket");
  REQUIRE(some.ok());
  CHECK(*some == 3);
  CHECK(b->stats().parked == 2);
  auto back = lease_ids(*b);
  std::sort(back.begin(), back.end());
  CHECK(back == std::vector<RecordId>{ids[0], ids[1], ids[2], ids[5]});
  CHECK(e.metrics.value("fleetpipe_buffer_unparked_total", {{"reason", "NoSuchBucket"}}) == 3);
  CHECK(e.logged("returned 3 parked record(s) to the upload queue (3 NoSuchBucket)"));

  auto rest = b->unpark();
  REQUIRE(rest.ok());
  CHECK(*rest == 2);
  CHECK(b->stats().parked == 0);
  CHECK(lease_ids(*b).size() == 6);
  CHECK(e.metrics.value("fleetpipe_buffer_unparked_total", {{"reason", "too_large"}}) == 1);
  CHECK(e.metrics.value("fleetpipe_buffer_unparked_total", {{"reason", "unspecified"}}) == 1);
  auto again = b->unpark();
  REQUIRE(again.ok());
  CHECK(*again == 0);

  // The uploader may park a record again: it is counted again, and unparked again.
  REQUIRE(b->park({ids[3]}, "too_large").ok());
  CHECK(b->stats().parked == 1);
  CHECK(e.metrics.value("fleetpipe_buffer_parked_total", {{"reason", "too_large"}}) == 2);
  // An acked parked record leaves nothing behind to unpark.
  REQUIRE(b->ack({ids[3]}).ok());
  CHECK(b->stats().parked == 0);
  auto after_ack = b->unpark();
  REQUIRE(after_ack.ok());
  CHECK(*after_ack == 0);
}

TEST_CASE("parked records are retried after a restart, once per open, unless unpark_on_open is off") {
  Env e("buf-unpark-open");
  std::vector<RecordId> ids;
  {
    auto b = e.open();
    for (int i = 0; i < 4; ++i) ids.push_back(b->append(meta(3), "x").id);
    REQUIRE(b->park({ids[1], ids[2]}, "InvalidAccessKeyId").ok());
    REQUIRE(b->stats().parked == 2);
  }
  {
    e.cfg.unpark_on_open = false;
    auto b = e.open();
    CHECK(b->stats().parked == 2);
    CHECK(lease_ids(*b).size() == 2);
    CHECK(inspect_buffer(e.cfg.path)->usage.at(0).parked == 2);
  }
  {
    e.cfg.unpark_on_open = true;
    auto b = e.open();
    CHECK(b->stats().parked == 0);
    CHECK(lease_ids(*b) == ids);  // back in upload order
    CHECK(e.metrics.value("fleetpipe_buffer_unparked_total", {{"reason", "InvalidAccessKeyId"}}) == 2);
    CHECK(e.logged("at open: returned 2 parked record(s)"));
    REQUIRE(b->park({ids[2]}, "too_large").ok());  // parked again for its own fault
  }
  auto b = e.open();  // the next open retries it once more
  CHECK(b->stats().parked == 0);
  CHECK(lease_ids(*b).size() == 4);
}

TEST_CASE("fleetpipe unpark --db returns parked records by reason, refused while the device runs") {
  const std::string cli = std::string(FLEETPIPE_BINARY_DIR) + "/fleetpipe";
  if (!fs::exists(cli)) {
    WARN("the fleetpipe command is not built (FLEETPIPE_BUILD_CLI=OFF): skipped");
    return;
  }
  Env e("buf-unpark-cli");
  auto exit_status = [&](const std::string& args) {
    int rc = std::system((cli + " unpark " + args + " >/dev/null 2>&1").c_str());
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
  };
  std::vector<RecordId> ids;
  {
    auto b = e.open();
    for (int i = 0; i < 3; ++i) ids.push_back(b->append(meta(2), "x").id);
    REQUIRE(b->park({ids[0], ids[1]}, "NoSuchBucket").ok());
    REQUIRE(b->park({ids[2]}, "too_large").ok());
    CHECK(exit_status("--db " + e.cfg.path) == 1);  // the writer holds the store
  }
  CHECK(exit_status("--db " + (fs::path(e.cfg.path).parent_path() / "none").string()) == 3);
  std::string out = test::run(cli + " unpark --db " + e.cfg.path + " --reason NoSuchBucket");
  CHECK(out.find("unparked 2 record(s) parked with reason NoSuchBucket; 1 still parked") != std::string::npos);
  e.cfg.unpark_on_open = false;
  auto b = e.open();
  CHECK(b->stats().parked == 1);
  CHECK(lease_ids(*b) == std::vector<RecordId>{ids[0], ids[1]});
  auto report = inspect_buffer(e.cfg.path);
  REQUIRE(report.ok());
  CHECK(report->max_bytes == e.cfg.max_bytes);  // the CLI kept the device's quotas
}

TEST_CASE("records leased but not acked come back after a restart, ids are never reused") {
  Env e("buf-restart");
  RecordId last = 0;
  {
    auto b = e.open();
    for (int i = 0; i < 5; ++i) last = b->append(meta(1), "x").id;
    auto l = b->lease(UINT64_MAX);
    REQUIRE(l.ok());
    REQUIRE(l->records().size() == 5);
    REQUIRE(b->ack({l->records()[0].id}).ok());
    l->release();
    auto l2 = b->lease(UINT64_MAX);  // held across the "crash"
    REQUIRE(l2->records().size() == 4);
    l2->release();
  }
  auto b = e.open();
  CHECK(lease_ids(*b).size() == 4);
  CHECK(b->append(meta(1), "y").id > last);
}

TEST_CASE("stats().file_bytes is data.mdb's size after every commit, without a stat per call") {
  Env e("buf-filebytes");
  e.cfg.compress_min_bytes = 0;
  e.cfg.initial_map_bytes = 1u << 20;  // the file grows with the map
  auto b = e.open();
  const auto file = std::filesystem::path(e.cfg.path) / "data.mdb";
  CHECK(b->stats().file_bytes == std::filesystem::file_size(file));
  for (int i = 0; i < 8; ++i) {
    REQUIRE(b->append(meta(1), random_bytes(700000, i)).accepted);
    CHECK(b->stats().file_bytes == std::filesystem::file_size(file));
  }
  CHECK(b->stats().file_bytes > 4u << 20);
}

TEST_CASE("compressed and chunked payloads read back exactly, compression ratio exported") {
  Env e("buf-chunks");
  e.cfg.chunk_bytes = 64 * 1024;
  auto b = e.open();
  std::string compressible;
  for (int i = 0; i < 300000; ++i) compressible += static_cast<char>('a' + (i / 7) % 5);
  std::string random = random_bytes(200000, 7);
  std::string small_compressible(10000, 'z');
  auto o1 = b->append(meta(1), compressible);
  auto o2 = b->append(meta(1), random);
  auto o3 = b->append(meta(1), small_compressible);
  REQUIRE((o1.accepted && o2.accepted && o3.accepted));
  auto l = b->lease(UINT64_MAX);
  REQUIRE(l->records().size() == 3);
  CHECK(l->records()[0].chunked);
  CHECK(l->records()[1].chunked);
  CHECK(!l->records()[2].chunked);
  CHECK(l->records()[2].compressed);
  CHECK(l->records()[0].stored_bytes < compressible.size() / 4);
  CHECK(!l->payload(0).ok());
  auto p3 = l->payload(2);
  REQUIRE(p3.ok());
  CHECK(*p3 == small_compressible);
  for (auto [id, src] : {std::pair{o1.id, &compressible}, std::pair{o2.id, &random}}) {
    std::string back(src->size(), '\0');
    std::size_t off = 0;
    std::mt19937 rng(1);
    while (off < back.size()) {
      std::size_t n = 1 + rng() % 100000;
      auto r = b->read_payload(id, off, back.data() + off, std::min(n, back.size() - off));
      REQUIRE(r.ok());
      REQUIRE(*r > 0);
      off += *r;
    }
    CHECK(back == *src);
    char c;
    auto end = b->read_payload(id, src->size(), &c, 1);
    REQUIRE(end.ok());
    CHECK(*end == 0);
  }
  CHECK(b->stats().compression_ratio > 2.0);
  CHECK(e.metrics.value("fleetpipe_buffer_compression_ratio") > 2.0);
  CHECK(b->read_payload(424242, 0, nullptr, 0).error().is(errc::not_found));
}

TEST_CASE("a payload mixing text and encoded media: compressible chunks compressed, the rest stored raw") {
  Env e("buf-mixed");
  e.cfg.chunk_bytes = 256 * 1024;
  auto b = e.open();
  std::string text;
  for (int i = 0; text.size() < 600000; ++i) text += "imu," + std::to_string(i % 977) + ",9.81,0.02\n";
  text.resize(600000);
  const std::string payload = text + random_bytes(700000, 11) + text.substr(0, 300000);
  auto o = b->append(meta(1), payload);
  REQUIRE(o.accepted);
  auto l = b->lease(UINT64_MAX);
  REQUIRE(l->records().size() == 1);
  const auto& r = l->records()[0];
  CHECK(r.chunked);
  // The text chunks shrink (the random ones stay raw): well under the raw size, over random's.
  CHECK(r.stored_bytes < payload.size() - 400000);
  CHECK(r.stored_bytes > 700000);
  std::string back(payload.size(), '\0');
  for (std::size_t off = 0; off < back.size(); off += 5000) {
    auto n = b->read_payload(o.id, off, back.data() + off, std::min<std::size_t>(5000, back.size() - off));
    REQUIRE(n.ok());
  }
  CHECK(back == payload);
}

TEST_CASE("Lease::payload_piece walks a chunked record without copying, one stored chunk at a time") {
  Env e("buf-pieces");
  e.cfg.chunk_bytes = 64 * 1024;
  auto b = e.open();
  const std::string random = random_bytes(300000, 5);  // incompressible: raw chunks
  std::string text;
  for (int i = 0; text.size() < 200000; ++i) text += "gps," + std::to_string(i % 311) + ",48.1,11.5\n";
  auto o1 = b->append(meta(1), random);
  auto o2 = b->append(meta(1), text);
  auto o3 = b->append(meta(1), "inline bytes");
  REQUIRE((o1.accepted && o2.accepted && o3.accepted));
  auto l = b->lease(UINT64_MAX);
  REQUIRE(l->records().size() == 3);
  REQUIRE(l->records()[0].chunked);
  std::string back;
  std::size_t pieces = 0;
  for (std::uint64_t off = 1000; off < random.size();) {
    auto piece = l->payload_piece(0, off, 1u << 20);
    REQUIRE(piece.ok());
    REQUIRE(!piece->empty());
    // A piece never crosses a chunk: each ends where the chunk's payload ends (or the record).
    CHECK(piece->size() <= 64 * 1024);
    back += *piece;
    off += piece->size();
    ++pieces;
  }
  CHECK(back == random.substr(1000));
  CHECK(pieces == (random.size() + 64 * 1024 - 18) / (64 * 1024 - 17));
  auto capped = l->payload_piece(0, 10, 100);
  REQUIRE(capped.ok());
  CHECK(*capped == random.substr(10, 100));
  auto past = l->payload_piece(0, random.size(), 10);
  REQUIRE(past.ok());
  CHECK(past->empty());
  // Compressed chunks cannot be viewed: the caller copies them out with read_payload.
  CHECK(l->payload_piece(1, 0, 100).error().is(errc::unsupported));
  auto inl = l->payload_piece(2, 7, 100);
  REQUIRE(inl.ok());
  CHECK(*inl == "bytes");
  CHECK(l->payload_piece(3, 0, 1).error().is(errc::invalid_argument));
}

TEST_CASE("state table: put/get/list/erase, persistent across reopen") {
  Env e("buf-state");
  {
    auto b = e.open();
    REQUIRE(b->put_state("mpu/obj1", "upload-id-1").ok());
    REQUIRE(b->put_state("mpu/obj2", "upload-id-2").ok());
    REQUIRE(b->put_state("seq", "7").ok());
    REQUIRE(b->erase_state("mpu/obj2").ok());
    CHECK(!b->put_state("", "x").ok());
  }
  auto b = e.open();
  auto v = b->get_state("mpu/obj1");
  REQUIRE(v.ok());
  CHECK(v->value() == "upload-id-1");
  CHECK(!b->get_state("mpu/obj2")->has_value());
  auto list = b->list_state("mpu/");
  REQUIRE(list.ok());
  REQUIRE(list->size() == 1);
  CHECK((*list)[0].first == "mpu/obj1");
  CHECK(b->list_state("")->size() == 2);
}

TEST_CASE("invalid records are rejected with invalid_argument and counted") {
  Env e("buf-invalid");
  auto b = e.open();
  auto o = b->append(meta(8), "x");
  CHECK(!o.accepted);
  CHECK(o.reason == errc::invalid_argument);
  RecordMeta m = meta(1);
  m.metadata["big"] = std::string(2000, 'x');
  CHECK(b->append(m, "x").reason == errc::invalid_argument);
  CHECK(e.metrics.sum("fleetpipe_buffer_rejected_total") == 2);
  CHECK(b->stats().records == 0);
}

TEST_CASE("batch append commits many records, rejects are per record") {
  Env e("buf-batch");
  auto b = e.open();
  std::vector<std::pair<RecordMeta, std::string_view>> batch;
  for (int i = 0; i < 50; ++i) batch.emplace_back(meta(i == 10 ? 9 : 1), "abc");
  auto out = b->append_batch(batch);
  REQUIRE(out.size() == 50);
  CHECK(!out[10].accepted);
  CHECK(std::count_if(out.begin(), out.end(), [](auto& o) { return o.accepted; }) == 49);
  CHECK(b->stats().records == 49);
}

TEST_CASE("evict policy drops lowest priority, oldest first, never a higher priority") {
  Env e("buf-evict");
  e.cfg.max_bytes = 20000;
  e.cfg.compress_min_bytes = 0;
  auto b = e.open();
  std::string p(900, 'x');
  std::vector<RecordId> low, mid;
  for (int i = 0; i < 10; ++i) mid.push_back(b->append(meta(5, "cam"), p).id);
  for (int i = 0; i < 10; ++i) low.push_back(b->append(meta(1, "imu"), p).id);
  CHECK(b->stats().bytes <= e.cfg.max_bytes);
  CHECK(b->stats().records < 20);  // some low records evicted by later low records
  // A priority-0 record may only evict priority 0: there is none -> rejected, nothing evicted.
  auto r0 = b->append(meta(0, "imu"), p);
  CHECK(!r0.accepted);
  CHECK(r0.reason == errc::storage_full);
  CHECK(r0.evicted == 0);
  // Priority 7 evicts the oldest priority-1 records first.
  auto before = lease_ids(*b);
  auto hi = b->append(meta(7, "cam"), p);
  REQUIRE(hi.accepted);
  CHECK(hi.evicted >= 1);
  auto after = lease_ids(*b);
  std::set<RecordId> now(after.begin(), after.end());
  for (RecordId id : mid) CHECK(now.count(id) == 1);
  // The evicted one is the oldest remaining low record.
  RecordId oldest_low = *std::min_element(before.begin(), before.end(), [&](RecordId a, RecordId c) {
    bool al = std::find(low.begin(), low.end(), a) != low.end();
    bool cl = std::find(low.begin(), low.end(), c) != low.end();
    if (al != cl) return al;
    return a < c;
  });
  CHECK(now.count(oldest_low) == 0);
  CHECK(e.metrics.value("fleetpipe_buffer_evicted_total",
                        {{"reason", "max_bytes"}, {"priority", "1"}, {"stream", "imu"}}) >= 1);
  CHECK(e.metrics.value("fleetpipe_buffer_rejected_total",
                        {{"reason", "max_bytes"}, {"priority", "0"}, {"stream", "imu"}}) == 1);
  CHECK(e.logged("evicted"));
  CHECK(e.logged("rejected 1 append"));
}

TEST_CASE("reject policy applies back-pressure at max_bytes and max_records") {
  Env e("buf-reject");
  e.cfg.policy = FullPolicy::reject;
  e.cfg.max_records = 5;
  auto b = e.open();
  for (int i = 0; i < 5; ++i) REQUIRE(b->append(meta(1), "x").accepted);
  auto o = b->append(meta(7), "x");
  CHECK(!o.accepted);
  CHECK(o.reason == errc::storage_full);
  CHECK(e.metrics.value("fleetpipe_buffer_rejected_total",
                        {{"reason", "max_records"}, {"priority", "7"}, {"stream", "imu"}}) == 1);
  CHECK(b->stats().records == 5);
  REQUIRE(b->ack({lease_ids(*b)[0]}).ok());
  CHECK(b->append(meta(7), "x").accepted);
}

TEST_CASE("reserved share keeps room for high priority") {
  Env e("buf-reserve");
  e.cfg.policy = FullPolicy::reject;
  e.cfg.max_bytes = 100000;
  e.cfg.compress_min_bytes = 0;
  e.cfg.reserved_share[6] = 0.5;
  auto b = e.open();
  std::string p(1000, 'x');
  int low = 0;
  while (b->append(meta(2), p).accepted) ++low;
  CHECK(b->stats().bytes <= 50000);
  CHECK(low > 30);
  CHECK(e.metrics.sum("fleetpipe_buffer_rejected_total") == 1);
  CHECK(e.metrics.value("fleetpipe_buffer_rejected_total",
                        {{"reason", "reserved_share"}, {"priority", "2"}, {"stream", "imu"}}) == 1);
  int high = 0;
  while (b->append(meta(6), p).accepted) ++high;
  CHECK(high > 30);
  CHECK(b->stats().bytes <= e.cfg.max_bytes);
}

TEST_CASE("flash-wear budget refuses low priority past the daily budget, persists, resets daily") {
  Env e("buf-wear");
  e.cfg.max_bytes_written_per_day = 20000;
  e.cfg.wear_exempt_priority = 6;
  e.cfg.compress_min_bytes = 0;
  std::string p(1000, 'x');
  {
    auto b = e.open();
    int n = 0;
    while (b->append(meta(1), p).accepted) ++n;
    CHECK(n >= 15);
    CHECK(n <= 20);
    auto o = b->append(meta(1), p);
    CHECK(o.reason == errc::wear_budget_exhausted);
    CHECK(b->append(meta(6), p).accepted);  // exempt priority
    CHECK(b->stats().written_today > 20000);
  }
  auto b = e.open();  // budget use persists
  CHECK(b->append(meta(1), p).reason == errc::wear_budget_exhausted);
  CHECK(e.metrics.value("fleetpipe_buffer_rejected_total",
                        {{"reason", "wear_budget"}, {"priority", "1"}, {"stream", "imu"}}) >= 2);
  e.clock.advance(std::chrono::hours(24));
  CHECK(b->append(meta(1), p).accepted);
}

TEST_CASE("filesystem headroom: min_free_bytes and min_free_inodes cap growth (fake stats)") {
  Env e("buf-fakefs");
  e.cfg.min_free_bytes = 1 << 20;
  e.cfg.min_free_inodes = 10;
  e.cfg.compress_min_bytes = 0;
  auto b = e.open();
  std::string p(1000, 'x');
  // The fake filesystem loses what the buffer stores: room for ~5 records above the headroom.
  auto shrink = [&] { e.fsstats.value.free_bytes = (1 << 20) + 5500 - b->stats().bytes; };
  shrink();
  int n = 0;
  while (n < 50 && b->append(meta(1), p).accepted) {
    shrink();
    ++n;
  }
  CHECK(n == 50);  // evict: same priority ring-buffers
  CHECK(b->stats().records <= 6);
  CHECK(e.metrics.value("fleetpipe_buffer_evicted_total",
                        {{"reason", "min_free_bytes"}, {"priority", "1"}, {"stream", "imu"}}) > 0);
  e.fsstats.value.free_bytes = 1ull << 40;
  e.fsstats.value.free_inodes = 3;
  auto records = b->stats().records;
  auto hi = b->append(meta(7), p);
  CHECK(hi.accepted);
  CHECK(hi.evicted >= 1);
  CHECK(b->stats().records == records);  // no net growth
  CHECK(e.metrics.value("fleetpipe_buffer_evicted_total",
                        {{"reason", "min_free_inodes"}, {"priority", "1"}, {"stream", "imu"}}) >= 1);
}

namespace {
/// A Port::filesystem that fails while `failing`, counting its calls.
struct FailingFsStats final : FilesystemStats {
  bool failing = false;
  mutable std::uint64_t calls = 0, failed_calls = 0;
  FsStats value{1ull << 40, 1ull << 40, 1ull << 20, 1ull << 20};
  Result<FsStats> stats(const std::string&) const override {
    ++calls;
    if (!failing) return value;
    ++failed_calls;
    return Error(errc::io_error, "statvfs: injected failure");
  }
};
}  // namespace

TEST_CASE("failing filesystem stats count as a full filesystem: refused, nothing lost, warned once a minute, recovers") {
  for (FullPolicy policy : {FullPolicy::evict, FullPolicy::reject}) {
    Env e(policy == FullPolicy::evict ? "buf-fsfail-evict" : "buf-fsfail-reject");
    e.cfg.policy = policy;
    FailingFsStats fsstats;
    auto opened = e.open(fsstats);
    Buffer& b = *opened;
    std::string p(2000, 'x');
    for (int i = 0; i < 5; ++i) REQUIRE(b.append(meta(1), p).accepted);
    const auto before = lease_ids(b);
    auto warnings = [&] {
      return std::count_if(e.lines.begin(), e.lines.end(), [](const std::string& l) {
        return l.rfind("filesystem stats unavailable (", 0) == 0;  // not the rejections' lines
      });
    };

    fsstats.failing = true;
    e.clock.advance(std::chrono::seconds(1));  // the stats of the appends above are reused for under 1 s
    for (int i = 0; i < 20; ++i) {
      auto o = b.append(meta(7, "alarm"), p);  // a higher priority would evict on a full disk
      CHECK(!o.accepted);
      CHECK(o.reason == errc::storage_full);
      CHECK(o.message.find("fs_stats") != std::string::npos);
      CHECK(o.evicted == 0);
    }
    CHECK(lease_ids(b) == before);  // nothing accepted is lost
    CHECK(b.stats().evicted_total == 0);
    CHECK(e.metrics.value("fleetpipe_buffer_rejected_total",
                          {{"reason", "fs_stats"}, {"priority", "7"}, {"stream", "alarm"}}) == 20);
    CHECK(fsstats.failed_calls >= 20);
    CHECK(e.metrics.value("fleetpipe_buffer_fs_stats_errors_total") == static_cast<double>(fsstats.failed_calls));
    CHECK(warnings() == 1);  // not one per append
    CHECK(!e.logged("rejected"));  // nor a rejection line per append: the warning sums them up
    REQUIRE(b.ack({before[0]}).ok());  // acks go on: they free space
    REQUIRE(b.put_state("k", "v").ok());  // so do state writes

    e.clock.advance(std::chrono::seconds(61));
    CHECK(!b.append(meta(7, "alarm"), p).accepted);
    CHECK(warnings() == 2);  // the next minute's warning counts what it did not log
    CHECK(e.logged("failed queries since the last warning"));
    CHECK(e.logged("refused (20 since the last warning"));

    fsstats.failing = false;
    auto ok = b.append(meta(7, "alarm"), p);
    CHECK(ok.accepted);
    CHECK(e.logged("filesystem stats available again"));
    CHECK(b.stats().records == 5);
    CHECK(warnings() == 2);
  }
}

TEST_CASE("filesystem stats: reused for under 1 s and 16 MiB of growth far from the guards, queried per append near them") {
  Env e("buf-fscache");
  e.cfg.min_free_bytes = 1 << 20;
  e.cfg.min_free_inodes = 10;
  e.cfg.compress_min_bytes = 0;
  FailingFsStats fsstats;  // never failing here: it counts the queries
  auto opened = e.open(fsstats);
  Buffer& b = *opened;
  std::string p(1000, 'x');
  const auto at_open = fsstats.calls;
  for (int i = 0; i < 50; ++i) REQUIRE(b.append(meta(1), p).accepted);
  CHECK(fsstats.calls - at_open == 1);  // far from every guard: one query for 50 appends
  e.clock.advance(std::chrono::milliseconds(999));
  REQUIRE(b.append(meta(1), p).accepted);
  CHECK(fsstats.calls - at_open == 1);
  e.clock.advance(std::chrono::milliseconds(1));
  REQUIRE(b.append(meta(1), p).accepted);
  CHECK(fsstats.calls - at_open == 2);  // a second old: queried again

  // 16 MiB of growth of data.mdb since the last query: queried again, whatever the clock says.
  std::string big(1 << 20, 'y');
  for (int i = 0; i < 20; ++i) REQUIRE(b.append(meta(1), big).accepted);
  CHECK(fsstats.calls - at_open >= 3);
  CHECK(fsstats.calls - at_open <= 4);

  // Near a guard (free bytes within 64 MiB of min_free_bytes): every append queries, so the
  // guard acts on the first append past it, exactly as without the cache.
  fsstats.value.free_bytes = (1 << 20) + (32 << 20);
  e.clock.advance(std::chrono::seconds(1));
  REQUIRE(b.append(meta(1), p).accepted);
  auto before = fsstats.calls;
  for (int i = 0; i < 10; ++i) REQUIRE(b.append(meta(1), p).accepted);
  CHECK(fsstats.calls - before == 10);
  fsstats.value.free_bytes = (1 << 20) + 500;  // the device's real job fills the disk
  auto o = b.append(meta(1), p);
  CHECK(o.evicted >= 1);  // acted on at once: room made by evicting, not by growing the file
  CHECK(e.metrics.value("fleetpipe_buffer_evicted_total",
                        {{"reason", "min_free_bytes"}, {"priority", "1"}, {"stream", "imu"}}) >= 1);

  // Near the inode guard too.
  fsstats.value.free_bytes = 1ull << 40;
  fsstats.value.free_inodes = 10 + 1000;
  e.clock.advance(std::chrono::seconds(1));
  REQUIRE(b.append(meta(1), p).accepted);
  before = fsstats.calls;
  for (int i = 0; i < 5; ++i) REQUIRE(b.append(meta(1), p).accepted);
  CHECK(fsstats.calls - before == 5);
}

TEST_CASE("map grows on MDB_MAP_FULL up to the quota without failing appends") {
  Env e("buf-mapgrow");
  e.cfg.initial_map_bytes = 1 << 20;
  e.cfg.max_bytes = 64 << 20;
  e.cfg.compress_min_bytes = 0;
  auto b = e.open();
  std::string p = random_bytes(100000, 3);
  for (int i = 0; i < 60; ++i) REQUIRE(b->append(meta(1), p).accepted);
  CHECK(e.metrics.value("fleetpipe_buffer_map_resizes_total") >= 2);
  CHECK(b->stats().map_bytes > (4u << 20));
  std::string back(p.size(), '\0');
  auto ids = lease_ids(*b);
  REQUIRE(b->read_payload(ids.back(), 0, back.data(), back.size()).ok());
  CHECK(back == p);
}

TEST_CASE("map cannot grow while a lease is open: the append is handled as storage full") {
  Env e("buf-mapleased");
  e.cfg.initial_map_bytes = 1 << 20;
  e.cfg.compress_min_bytes = 0;
  e.cfg.policy = FullPolicy::reject;
  auto b = e.open();
  REQUIRE(b->append(meta(1), "x").accepted);
  auto l = b->lease(UINT64_MAX);
  std::string p = random_bytes(200000, 4);
  int rejected = 0;
  for (int i = 0; i < 10; ++i) {
    auto o = b->append(meta(1), p);
    if (!o.accepted) {
      CHECK(o.reason == errc::storage_full);
      ++rejected;
    }
  }
  CHECK(rejected > 0);
  CHECK(e.metrics.value("fleetpipe_buffer_rejected_total",
                        {{"reason", "map_full"}, {"priority", "1"}, {"stream", "imu"}}) == rejected);
  l->release();
  CHECK(b->append(meta(1), p).accepted);  // grows now
}

TEST_CASE("a small map grows ahead of need when the last lease ends, so a later lease does not block appends") {
  Env e("buf-mapahead");
  e.cfg.initial_map_bytes = 1 << 20;
  e.cfg.compress_min_bytes = 0;
  e.cfg.policy = FullPolicy::reject;
  auto b = e.open();
  REQUIRE(b->append(meta(1), random_bytes(600000, 5)).accepted);  // past half of the 1 MiB map
  const double resizes = e.metrics.value("fleetpipe_buffer_map_resizes_total");
  { auto l = b->lease(1); }  // the last lease ends: the map grows now, ahead of need
  CHECK(e.metrics.value("fleetpipe_buffer_map_resizes_total") == resizes + 1);
  CHECK(b->stats().map_bytes >= (2u << 20));
  auto l = b->lease(1);  // pins the map again: it cannot grow until released
  REQUIRE(l.ok());
  CHECK(b->append(meta(1), random_bytes(400000, 6)).accepted);
  REQUIRE(b->ack({l->records().at(0).id}).ok());
}

TEST_CASE("the default map covers the quota: appends and acks under open leases never hit map_full") {
  Env e("buf-mapdefault");
  e.cfg.max_bytes = 64 << 20;
  e.cfg.compress_min_bytes = 0;
  auto b = e.open();
  if (sizeof(void*) < 8) return;  // 32-bit hosts start at 16 MiB and grow
  CHECK(b->stats().map_bytes == 2 * (64ull << 20) + (8u << 20));
  std::string p = random_bytes(500000, 7);
  REQUIRE(b->append(meta(1), p).accepted);
  for (int i = 0; i < 60; ++i) {  // ~30 MB while a lease is always open, as an uploader holds them
    auto l = b->lease(1);
    REQUIRE(l.ok());
    REQUIRE(b->append(meta(1), p).accepted);
    REQUIRE(b->append(meta(1), p).accepted);
    REQUIRE(b->ack({l->records().at(0).id}).ok());
  }
  CHECK(e.metrics.value("fleetpipe_buffer_map_resizes_total") == 0);
  CHECK(b->stats().records == 61);
}

TEST_CASE("a corrupt store is quarantined, counted, logged, and a fresh one takes appends") {
  Env e("buf-corrupt");
  e.cfg.max_quarantined = 1;
  {
    auto b = e.open();
    for (int i = 0; i < 10; ++i) REQUIRE(b->append(meta(1), "x").accepted);
  }
  auto data = fs::path(e.cfg.path) / "data.mdb";
  SECTION("garbage over the meta pages") {
    std::fstream f(data, std::ios::in | std::ios::out | std::ios::binary);
    std::string junk = random_bytes(16384, 9);
    f.write(junk.data(), static_cast<std::streamsize>(junk.size()));
  }
  SECTION("truncated file") {
    fs::resize_file(data, 4096 * 2 + 100);
  }
  SECTION("not an LMDB file at all") {
    fs::remove(data);
    std::ofstream(data) << "this is not a database, it is a text file with enough bytes to read "
                        << std::string(10000, '!');
  }
  auto b = e.open();
  CHECK(e.metrics.value("fleetpipe_buffer_quarantined_total") == 1);
  CHECK(b->stats().quarantined_total == 1);
  CHECK(e.logged("moved to"));
  CHECK(b->stats().records == 0);
  CHECK(b->append(meta(1), "after").accepted);
  CHECK(lease_ids(*b).size() == 1);
  auto rep = inspect_buffer(e.cfg.path);
  REQUIRE(rep.ok());
  CHECK(rep->quarantined.size() == 1);
  b.reset();
  // Quarantine keeps at most max_quarantined files.
  fs::resize_file(data, 4096 * 2 + 100);
  e.open();
  CHECK(inspect_buffer(e.cfg.path)->quarantined.size() == 1);
}

TEST_CASE("a second writer on the same directory is refused") {
  Env e("buf-lock");
  auto b = e.open();
  MetricsRegistry m2;
  auto second = Buffer::open(e.cfg, e.port(), m2);
  REQUIRE(!second.ok());
  CHECK(second.error().is(errc::io_error));
}

TEST_CASE("inspect_buffer reports per stream and priority while the writer has it open") {
  Env e("buf-inspect");
  auto b = e.open();
  RecordMeta m = meta(2, "imu");
  m.start_ns = 50;
  REQUIRE(b->append(m, "abc").accepted);
  m.start_ns = 70;
  m.end_ns = 900;
  REQUIRE(b->append(m, "defg").accepted);
  REQUIRE(b->append(meta(5, "camera"), "x").accepted);
  REQUIRE(b->put_state("k", "value").ok());
  auto l = b->lease(UINT64_MAX);  // a writer-side reader is open too
  auto rep = inspect_buffer(e.cfg.path);
  REQUIRE(rep.ok());
  CHECK(rep->records == 3);
  REQUIRE(rep->usage.size() == 2);
  CHECK(rep->usage[0].stream == "camera");
  CHECK(rep->usage[1].stream == "imu");
  CHECK(rep->usage[1].records == 2);
  CHECK(rep->usage[1].payload_bytes == 7);
  CHECK(rep->usage[1].oldest_ns == 50);
  CHECK(rep->usage[1].newest_ns == 900);
  CHECK(rep->max_bytes == e.cfg.max_bytes);
  CHECK(rep->state.size() == 1);
  CHECK(inspect_buffer((fs::path(e.cfg.path) / "nope").string()).error().is(errc::not_found));
}

TEST_CASE("durability interval syncs on the clock, flush and poll succeed") {
  Env e("buf-interval");
  e.cfg.durability = Durability::interval;
  e.cfg.sync_interval_ms = 500;
  auto b = e.open();
  REQUIRE(b->append(meta(1), "x").accepted);
  e.clock.advance(std::chrono::seconds(1));
  REQUIRE(b->poll().ok());
  REQUIRE(b->flush().ok());
}

namespace {
double syncs(const Env& e, const char* mode) {
  return e.metrics.value("fleetpipe_buffer_syncs_total", {{"mode", mode}});
}
}  // namespace

TEST_CASE("durability interval: the due fsync starts in the background, later calls collect it") {
  Env e("buf-interval-async");
  e.cfg.durability = Durability::interval;
  e.cfg.sync_interval_ms = 500;
  const std::string payload = random_bytes(100000, 3);
  RecordId first = 0;
  {
    auto b = e.open();
    auto o = b->append(meta(1), payload);
    REQUIRE(o.accepted);
    first = o.id;
    REQUIRE(b->poll().ok());  // not due yet: nothing synced
    CHECK(syncs(e, "background") == 0);
    CHECK(syncs(e, "inline") == 0);
    e.clock.advance(std::chrono::seconds(1));
    REQUIRE(b->poll().ok());
    // Kernel AIO is there on Linux >= 4.18; where it is refused the fsync runs inline, said once.
    if (e.logged("kernel AIO unavailable")) {
      CHECK(syncs(e, "inline") == 1);
      CHECK(syncs(e, "background") == 0);
    } else {
      CHECK(syncs(e, "background") == 1);
      CHECK(syncs(e, "inline") == 0);
    }
    // Nothing new committed: no further fsync however long the host waits.
    e.clock.advance(std::chrono::seconds(5));
    REQUIRE(b->poll().ok());
    CHECK(syncs(e, "background") + syncs(e, "inline") == 1);
    // flush() is the synchronous one: it waits for the background fsync, then syncs itself.
    REQUIRE(b->append(meta(1), payload).accepted);
    REQUIRE(b->flush().ok());
    CHECK(syncs(e, "inline") >= 1);
    // A due fsync is started by a commit too; the Buffer is destroyed with it possibly in flight.
    e.clock.advance(std::chrono::seconds(1));
    REQUIRE(b->append(meta(1), payload).accepted);
    CHECK(syncs(e, "background") + syncs(e, "inline") >= 2);
    CHECK(e.metrics.value("fleetpipe_buffer_sync_errors_total") == 0);
  }
  auto b = e.open();  // everything accepted is there after the close that waited for the fsync
  CHECK(b->stats().records == 3);
  std::string back(payload.size(), '\0');
  auto r = b->read_payload(first, 0, back.data(), back.size());
  REQUIRE(r.ok());
  CHECK(back == payload);
}

TEST_CASE("durability interval with async_sync off: the due fsync runs inline") {
  Env e("buf-interval-inline");
  e.cfg.durability = Durability::interval;
  e.cfg.sync_interval_ms = 500;
  e.cfg.async_sync = false;
  auto b = e.open();
  REQUIRE(b->append(meta(1), "x").accepted);
  e.clock.advance(std::chrono::seconds(1));
  REQUIRE(b->poll().ok());
  CHECK(syncs(e, "inline") == 1);
  CHECK(syncs(e, "background") == 0);
  CHECK(!e.logged("kernel AIO unavailable"));
}

TEST_CASE("durability interval: a state write starts its fsync at once, in the background") {
  // The uploader writes state once per object: an inline fsync there stalled the host's loop.
  Env e("buf-state-async");
  e.cfg.durability = Durability::interval;
  e.cfg.sync_interval_ms = 60000;  // the interval alone would not sync for a minute
  {
    auto b = e.open();
    REQUIRE(b->append(meta(1), "x").accepted);
    CHECK(syncs(e, "background") + syncs(e, "inline") == 0);
    REQUIRE(b->put_state("uploader/test", "v1").ok());
    if (e.logged("kernel AIO unavailable")) {
      // Kernel AIO absent (e.g. under qemu-user): the same promise, kept inline — each state
      // write's fsync has run before the call returns.
      WARN("kernel AIO unavailable on this platform: state fsyncs ran inline");
      CHECK(syncs(e, "inline") == 1);
      REQUIRE(b->erase_state("uploader/test").ok());
      REQUIRE(b->put_state("uploader/test2", "v2").ok());
      CHECK(syncs(e, "inline") >= 2);
      CHECK(syncs(e, "background") == 0);
    } else {
      CHECK(syncs(e, "background") == 1);
      CHECK(syncs(e, "inline") == 0);
      // A second state write while the first fsync may still be in flight: its own fsync
      // follows (started now or by the next call), still without an inline one.
      REQUIRE(b->erase_state("uploader/test").ok());
      REQUIRE(b->put_state("uploader/test2", "v2").ok());
      for (int i = 0; i < 200 && syncs(e, "background") < 2; ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
        REQUIRE(b->poll().ok());
      }
      CHECK(syncs(e, "background") >= 2);
      CHECK(syncs(e, "inline") == 0);
    }
    CHECK(e.metrics.value("fleetpipe_buffer_sync_errors_total") == 0);
  }
  auto b = e.open();
  auto v = b->get_state("uploader/test2");
  REQUIRE(v.ok());
  REQUIRE(v->has_value());
  CHECK(**v == "v2");
  CHECK(!b->get_state("uploader/test")->has_value());
}

TEST_CASE("durability interval with async_sync off: a state write fsyncs inline") {
  Env e("buf-state-inline");
  e.cfg.durability = Durability::interval;
  e.cfg.sync_interval_ms = 60000;
  e.cfg.async_sync = false;
  auto b = e.open();
  REQUIRE(b->put_state("uploader/test", "v1").ok());
  CHECK(syncs(e, "inline") == 1);
  CHECK(syncs(e, "background") == 0);
}

namespace {
// Entries of the raw chunks table: what a staged record left in the store.
std::size_t raw_chunk_entries(const std::string& path) {
  MDB_env* env = nullptr;
  REQUIRE(mdb_env_create(&env) == 0);
  mdb_env_set_maxdbs(env, 8);
  REQUIRE(mdb_env_open(env, path.c_str(), MDB_RDONLY, 0644) == 0);
  MDB_txn* txn = nullptr;
  REQUIRE(mdb_txn_begin(env, nullptr, MDB_RDONLY, &txn) == 0);
  MDB_dbi dbi;
  REQUIRE(mdb_dbi_open(txn, "chunks", 0, &dbi) == 0);
  MDB_stat st;
  REQUIRE(mdb_stat(txn, dbi, &st) == 0);
  mdb_txn_abort(txn);
  mdb_env_close(env);
  return st.ms_entries;
}

std::string read_all(Buffer& b, RecordId id, std::size_t n) {
  std::string back(n, '\0');
  auto r = b.read_payload(id, 0, back.data(), n);
  REQUIRE(r.ok());
  back.resize(*r);
  return back;
}
}  // namespace

TEST_CASE("a store keeps the chunk size it was created with: a later chunk_bytes applies to new stores only") {
  Env e("buf-chunk-size");
  e.cfg.chunk_bytes = 64 * 1024;
  const std::string first = random_bytes(300000, 21), second = random_bytes(200000, 22);
  RecordId a = 0;
  {
    auto b = e.open();
    a = b->append(meta(1), first).id;
    REQUIRE(a != 0);
  }
  e.cfg.chunk_bytes = 256 * 1024;  // reopened with another size: its 64 KiB chunks still read back
  auto b = e.open();
  auto o = b->append(meta(1), second);
  REQUIRE(o.accepted);
  CHECK(read_all(*b, a, first.size()) == first);
  CHECK(read_all(*b, o.id, second.size()) == second);
  auto l = b->lease(UINT64_MAX);
  REQUIRE(l->records().size() == 2);
  auto piece = l->payload_piece(0, 0, SIZE_MAX);
  REQUIRE(piece.ok());
  CHECK(piece->size() == 64 * 1024 - 17);  // one stored chunk of the store's size
  l->release();
  REQUIRE(b->ack({a, o.id}).ok());  // deleting walks the same chunk indexes
  CHECK(e.logged("keeps the chunk size it was created with, 65536 bytes"));
  b.reset();
  CHECK(raw_chunk_entries(e.cfg.path) == 0);
}

TEST_CASE("a store that kept its counters in meta (older versions) opens with them intact") {
  // The counters moved to the main DB (no page of their own per commit). Rewrite a store the
  // old way with raw LMDB: counters under meta/"counters", none in the main DB.
  Env e("buf-legacy-counters");
  RecordId last = 0;
  {
    auto b = e.open();
    for (int i = 0; i < 3; ++i) last = b->append(meta(2), "legacy").id;
    REQUIRE(b->ack({lease_ids(*b)[0]}).ok());
  }
  {
    MDB_env* env = nullptr;
    REQUIRE(mdb_env_create(&env) == 0);
    mdb_env_set_maxdbs(env, 8);
    REQUIRE(mdb_env_open(env, e.cfg.path.c_str(), 0, 0644) == 0);
    MDB_txn* txn = nullptr;
    REQUIRE(mdb_txn_begin(env, nullptr, 0, &txn) == 0);
    MDB_dbi main_db, meta_db;
    REQUIRE(mdb_dbi_open(txn, nullptr, 0, &main_db) == 0);
    REQUIRE(mdb_dbi_open(txn, "meta", 0, &meta_db) == 0);
    MDB_val k{18, const_cast<char*>("fleetpipe/counters")}, v;
    REQUIRE(mdb_get(txn, main_db, &k, &v) == 0);
    std::string counters(static_cast<const char*>(v.mv_data), v.mv_size);
    REQUIRE(mdb_del(txn, main_db, &k, nullptr) == 0);
    MDB_val lk{8, const_cast<char*>("counters")}, lv{counters.size(), counters.data()};
    REQUIRE(mdb_put(txn, meta_db, &lk, &lv, 0) == 0);
    REQUIRE(mdb_txn_commit(txn) == 0);
    mdb_env_close(env);
  }
  auto b = e.open();
  CHECK(b->stats().records == 2);
  CHECK(!e.logged("recounting"));  // read from meta, not rebuilt
  auto o = b->append(meta(2), "after");
  CHECK(o.id == last + 1);  // next_id came across
  auto rep = inspect_buffer(e.cfg.path);
  REQUIRE(rep.ok());
  CHECK(rep->next_id == last + 2);
}

TEST_CASE("append_staged writes a large record one chunk per poll, around other appends") {
  Env e("buf-staged");
  e.cfg.durability = Durability::interval;
  // Half text, half noise: compressed and raw chunks both go through the staged path.
  std::string payload = random_bytes(600000, 11);
  for (std::size_t i = 0; i < 300000; ++i) payload[i] = "fleetpipe "[i % 10];
  auto b = e.open();
  const std::size_t chunks = (payload.size() + (256u << 10) - 1) / (256u << 10);
  REQUIRE(chunks == 3);
  auto o = b->append_staged(meta(3, "camera"), payload);
  REQUIRE(o.accepted);
  CHECK(b->stats().records == 0);
  CHECK(b->stats().staged == 1);
  CHECK(b->lease(UINT64_MAX)->records().empty());  // invisible until complete
  auto small = b->append(meta(1), "between");  // takes a later id while the first is staged
  REQUIRE(small.accepted);
  CHECK(small.id > o.id);
  for (std::size_t i = 0; i + 1 < chunks; ++i) {
    REQUIRE(b->poll().ok());
    CHECK(b->stats().staged == 1);
    CHECK(b->stats().records == 1);
  }
  REQUIRE(b->poll().ok());
  CHECK(b->stats().staged == 0);
  CHECK(b->stats().records == 2);
  CHECK(read_all(*b, o.id, payload.size()) == payload);
  CHECK(b->stats().compression_ratio > 1.0);  // the text chunk was compressed
  CHECK(e.metrics.value("fleetpipe_buffer_staged_total") == 1);
  CHECK(e.metrics.value("fleetpipe_buffer_appended_total") == 2);
  auto ids = lease_ids(*b);
  CHECK(std::find(ids.begin(), ids.end(), o.id) != ids.end());
  // A second staged record while one is pending: the first is written out first.
  auto a1 = b->append_staged(meta(3, "camera"), payload);
  auto a2 = b->append_staged(meta(3, "camera"), payload.substr(1000));
  REQUIRE(a1.accepted);
  REQUIRE(a2.accepted);
  CHECK(b->stats().records == 3);
  REQUIRE(b->flush().ok());  // writes the pending one
  CHECK(b->stats().records == 4);
  CHECK(read_all(*b, a2.id, payload.size()) == payload.substr(1000));
  b.reset();
  auto again = e.open();
  CHECK(again->stats().records == 4);
  CHECK(read_all(*again, a1.id, payload.size()) == payload);
}

TEST_CASE("append_staged is append() under sync durability and for small payloads") {
  Env e("buf-staged-sync");
  e.cfg.durability = Durability::sync;
  auto b = e.open();
  const std::string big = random_bytes(600000, 12);
  CHECK(b->append_staged(meta(3), big).accepted);
  CHECK(b->stats().records == 1);
  CHECK(b->stats().staged == 0);
  Env f("buf-staged-small");
  f.cfg.durability = Durability::interval;
  auto c = f.open();
  CHECK(c->append_staged(meta(3), "small").accepted);
  CHECK(c->stats().records == 1);
  CHECK(f.metrics.value("fleetpipe_buffer_staged_total") == 0);
}

TEST_CASE("a staged record refused at its last chunk is counted and leaves no chunks") {
  Env e("buf-staged-refused");
  e.cfg.durability = Durability::interval;
  e.cfg.policy = FullPolicy::reject;
  e.cfg.max_bytes = 400000;  // the record fits the payload limit, not the quota
  auto b = e.open();
  auto o = b->append_staged(meta(3, "camera"), random_bytes(600000, 13));
  REQUIRE(o.accepted);  // queued: admission comes with the last chunk
  for (int i = 0; i < 5; ++i) REQUIRE(b->poll().ok());
  CHECK(b->stats().staged == 0);
  CHECK(b->stats().records == 0);
  CHECK(e.metrics.value("fleetpipe_buffer_rejected_total",
                        {{"reason", "max_bytes"}, {"priority", "3"}, {"stream", "camera"}}) == 1);
  CHECK(e.logged("after it was queued"));
  b.reset();
  CHECK(raw_chunk_entries(e.cfg.path) == 0);
}

TEST_CASE("a staged record cut short by kill -9 leaves nothing behind, and ids move on") {
  Env e("buf-staged-crash");
  e.cfg.durability = Durability::interval;
  const std::string payload = random_bytes(900000, 14);  // 4 chunks
  RecordId staged_id = 0;
  {
    int fds[2];
    REQUIRE(::pipe(fds) == 0);
    pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      ::close(fds[0]);
      MetricsRegistry m;
      Port p;
      auto b = Buffer::open(e.cfg, p, m);
      if (!b) ::_exit(2);
      auto o = (*b)->append_staged(meta(3, "camera"), payload);
      (void)(*b)->poll();
      (void)(*b)->poll();  // two of four chunks in the store
      RecordId id = o.id;
      (void)!::write(fds[1], &id, sizeof id);
      for (;;) ::pause();  // killed here, chunks written, record not
    }
    ::close(fds[1]);
    REQUIRE(::read(fds[0], &staged_id, sizeof staged_id) == sizeof staged_id);
    ::close(fds[0]);
    ::kill(pid, SIGKILL);
    int status = 0;
    ::waitpid(pid, &status, 0);
    REQUIRE(WIFSIGNALED(status));
  }
  CHECK(raw_chunk_entries(e.cfg.path) == 2);
  auto b = e.open();
  CHECK(e.logged("staged append a restart cut short"));
  CHECK(b->stats().records == 0);
  auto o = b->append(meta(1), payload);
  REQUIRE(o.accepted);
  CHECK(o.id > staged_id);
  b.reset();
  CHECK(raw_chunk_entries(e.cfg.path) == 4);  // only the new record's
}

TEST_CASE("compressed chunks read in small interleaved pieces from several records stay exact") {
  // read_payload keeps the last decompressed chunk: reads that alternate between records and
  // chunks must never be served from the wrong one.
  Env e("buf-unpack");
  e.cfg.chunk_bytes = 64 * 1024;
  auto b = e.open();
  std::vector<std::string> src;
  std::vector<RecordId> ids;
  for (int k = 0; k < 3; ++k) {
    std::string s;
    for (int i = 0; i < 200000; ++i) s += static_cast<char>('a' + (i / (3 + k)) % (5 + k));
    src.push_back(s);
    auto o = b->append(meta(1), s);
    REQUIRE(o.accepted);
    ids.push_back(o.id);
  }
  auto small = b->append(meta(1), std::string(20000, 'q'));  // one unchunked compressed payload
  REQUIRE(small.accepted);
  std::vector<std::string> back(3, std::string(200000, '\0'));
  std::mt19937 rng(5);
  for (int step = 0; step < 400; ++step) {
    std::size_t k = rng() % 3;
    std::size_t off = (rng() % 50) * 4000;
    std::size_t n = std::min<std::size_t>(4096, back[k].size() - off);
    auto r = b->read_payload(ids[k], off, back[k].data() + off, n);
    REQUIRE(r.ok());
    REQUIRE(*r == n);
    REQUIRE(std::string_view(back[k]).substr(off, n) == std::string_view(src[k]).substr(off, n));
    char q[3];
    auto rs = b->read_payload(small.id, 19990, q, 3);
    REQUIRE(rs.ok());
    REQUIRE(std::string_view(q, 3) == "qqq");
  }
}

TEST_CASE("buffer config: every key parses, errors name the pointer") {
  auto c = parse_config(R"({"device_id":"d","buffer":{"path":"/data/fp","durability":"interval",
    "sync_interval":"250ms","async_sync":false,"policy":"reject","max_bytes":"1GiB","max_records":5000,
    "reserved_share":{"7":0.1,"6":0.2},"min_free_bytes":"128MiB","min_free_inodes":100,
    "max_bytes_written_per_day":"2GiB","wear_exempt_priority":5,"max_payload_bytes":"32MiB",
    "chunk_bytes":"512KiB","compress_min_bytes":8192,"compression_level":3,
    "initial_map_bytes":"32MiB","max_quarantined":3,"unpark_on_open":false}})");
  REQUIRE(c.ok());
  const BufferConfig& b = c->buffer;
  CHECK(b.path == "/data/fp");
  CHECK(b.durability == Durability::interval);
  CHECK(b.sync_interval_ms == 250);
  CHECK(!b.async_sync);
  CHECK(b.policy == FullPolicy::reject);
  CHECK(b.max_bytes == (1ull << 30));
  CHECK(b.max_records == 5000);
  CHECK(b.reserved_share[7] == Approx(0.1));
  CHECK(b.reserved_share[6] == Approx(0.2));
  CHECK(b.min_free_bytes == (128ull << 20));
  CHECK(b.min_free_inodes == 100);
  CHECK(b.max_bytes_written_per_day == (2ull << 30));
  CHECK(b.wear_exempt_priority == 5);
  CHECK(b.max_payload_bytes == (32ull << 20));
  CHECK(b.chunk_bytes == 512 * 1024);
  CHECK(b.compress_min_bytes == 8192);
  CHECK(b.compression_level == 3);
  CHECK(b.initial_map_bytes == (32ull << 20));
  CHECK(b.max_quarantined == 3);
  CHECK(!b.unpark_on_open);

  auto bad = parse_config(R"({"device_id":"d","buffer":{"max_bytes":0}})");
  REQUIRE(!bad.ok());
  CHECK(bad.error().json_pointer == "/buffer/max_bytes");
  auto bad2 = parse_config(R"({"device_id":"d","buffer":{"reserved_share":{"7":0.7,"6":0.6}}})");
  REQUIRE(!bad2.ok());
  CHECK(bad2.error().message.find("/buffer/reserved_share") == 0);
  auto bad3 = parse_config(R"({"device_id":"d","buffer":{"polcy":"evict"}})");
  REQUIRE(!bad3.ok());
  CHECK(bad3.error().json_pointer == "/buffer/polcy");
  auto ex = load_config_file(std::string(FLEETPIPE_SOURCE_DIR) + "/examples/config/buffer.json");
  REQUIRE(ex.ok());
}

// (d) Property test: random operation sequences keep quotas, priority protection and order.
TEST_CASE("random operation sequences keep quotas, never evict higher priority, keep order") {
  for (int seed = 1; seed <= 6; ++seed) {
    Env e("buf-prop");
    std::mt19937_64 rng(static_cast<std::uint64_t>(seed));
    e.cfg.max_bytes = 30000 + rng() % 30000;
    e.cfg.max_records = 20 + rng() % 40;
    e.cfg.policy = (seed % 2) ? FullPolicy::evict : FullPolicy::reject;
    e.cfg.compress_min_bytes = (seed % 3) ? 0 : 512;
    e.cfg.reserved_share[7] = (seed % 3 == 1) ? 0.2 : 0.0;
    auto b = e.open();
    std::map<RecordId, int> present;  // model: id -> priority
    std::set<RecordId> acked;
    for (int step = 0; step < 400; ++step) {
      int op = static_cast<int>(rng() % 10);
      if (op < 6) {
        auto prio = static_cast<std::uint8_t>(rng() % 8);
        std::string p(1 + rng() % 3000, static_cast<char>('a' + rng() % 3));
        auto before = present;
        auto o = b->append(meta(prio, "s" + std::to_string(prio % 2)), p);
        auto ids = lease_ids(*b);
        std::set<RecordId> now(ids.begin(), ids.end());
        if (o.accepted) {
          CHECK(now.count(o.id) == 1);
          present[o.id] = prio;
        } else {
          CHECK(o.evicted == 0);
          CHECK(o.reason == errc::storage_full);
        }
        // Anything that vanished was evicted for this append: never of higher priority.
        std::uint32_t gone = 0;
        for (auto it = present.begin(); it != present.end();) {
          if (!now.count(it->first)) {
            CHECK(o.accepted);
            CHECK(it->second <= prio);
            ++gone;
            it = present.erase(it);
          } else {
            ++it;
          }
        }
        CHECK(gone == o.evicted);
        if (e.cfg.policy == FullPolicy::reject) CHECK(o.evicted == 0);
      } else if (op < 8) {
        auto l = b->lease(rng() % 20000, 1 + rng() % 10);
        REQUIRE(l.ok());
        // Upload order: priority desc, then id asc.
        for (std::size_t i = 1; i < l->records().size(); ++i) {
          const auto& a = l->records()[i - 1];
          const auto& c = l->records()[i];
          CHECK((a.meta.priority > c.meta.priority ||
                 (a.meta.priority == c.meta.priority && a.id < c.id)));
        }
        std::vector<RecordId> to_ack, to_nack;
        for (auto& r : l->records()) (rng() % 2 ? to_ack : to_nack).push_back(r.id);
        REQUIRE(b->ack(to_ack).ok());
        REQUIRE(b->nack(to_nack).ok());
        for (auto id : to_ack) {
          present.erase(id);
          acked.insert(id);
        }
      } else if (op == 8) {
        b.reset();
        b = e.open();
      } else {
        auto ids = lease_ids(*b);
        for (auto id : ids) CHECK(acked.count(id) == 0);
      }
      auto s = b->stats();
      CHECK(s.bytes <= e.cfg.max_bytes);
      CHECK(s.records <= e.cfg.max_records);
      CHECK(s.records == present.size());
    }
    CHECK(e.metrics.sum("fleetpipe_buffer_evicted_total") +
              e.metrics.sum("fleetpipe_buffer_rejected_total") >
          0);
  }
}
