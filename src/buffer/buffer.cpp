// Buffer: the public methods of the durable record store, and its Impl's metrics. Each method
// hands over to the file of its concept (see impl.hpp). Design and layout: docs/buffer.md.
#include "fleetpipe/buffer.hpp"

#include <unistd.h>

#include <algorithm>

#include "buffer/impl.hpp"
#include "fleetpipe/config.hpp"

namespace fleetpipe {

using namespace detail;

// ---- Impl: construction, log, gauges, labelled counters -----------------------------------

Buffer::Impl::Impl(const BufferConfig& c, const Port& p, MetricsRegistry& m)
    : cfg(c),
      port(p.with_defaults()),
      metrics(m),
      m_appended(m.counter("fleetpipe_buffer_appended_total", "Records accepted")),
      m_appended_bytes(m.counter("fleetpipe_buffer_appended_bytes_total",
                                 "Stored bytes of accepted records (after compression)")),
      m_staged(m.counter("fleetpipe_buffer_staged_total",
                         "Large records queued by append_staged, written one chunk per poll()")),
      m_acked(m.counter("fleetpipe_buffer_acked_total", "Records deleted after upload")),
      m_nacked(m.counter("fleetpipe_buffer_nacked_total", "Records returned to the queue")),
      m_quarantined(m.counter("fleetpipe_buffer_quarantined_total",
                              "Stores moved aside because they could not be opened")),
      m_map_resizes(m.counter("fleetpipe_buffer_map_resizes_total", "LMDB map growths")),
      m_stale_readers(m.counter("fleetpipe_buffer_stale_readers_cleared_total",
                                "Reader slots of dead processes cleared")),
      m_commit_errors(m.counter("fleetpipe_buffer_commit_errors_total",
                                "Write transactions that failed (I/O, full filesystem)")),
      m_reopens(m.counter("fleetpipe_buffer_reopens_total", "Environment reopened after an LMDB panic")),
      m_syncs_background(m.counter("fleetpipe_buffer_syncs_total",
                                   "fsyncs of the store outside commits (interval durability, flush())",
                                   {{"mode", "background"}})),
      m_syncs_inline(m.counter("fleetpipe_buffer_syncs_total",
                               "fsyncs of the store outside commits (interval durability, flush())",
                               {{"mode", "inline"}})),
      m_sync_errors(m.counter("fleetpipe_buffer_sync_errors_total",
                              "fsyncs of the store that failed (retried at the next interval)")),
      g_records(m.gauge("fleetpipe_buffer_records", "Records stored")),
      g_bytes(m.gauge("fleetpipe_buffer_bytes", "Stored bytes (quota accounting)")),
      g_map(m.gauge("fleetpipe_buffer_map_bytes", "LMDB map size")),
      g_written_today(m.gauge("fleetpipe_buffer_written_today_bytes",
                              "Bytes written this UTC day (flash-wear budget use)")),
      g_ratio(m.gauge("fleetpipe_buffer_compression_ratio",
                      "Raw / stored bytes over compressed payloads since open")),
      g_leased(m.gauge("fleetpipe_buffer_leased_records", "Records in open leases")),
      m_fs_stats_errors(m.counter("fleetpipe_buffer_fs_stats_errors_total",
                                  "Filesystem stats queries that failed (the filesystem then counts as full)")) {
  g_ratio.set(1.0);
}

Buffer::Impl::~Impl() {
  while (staged.active) step_staged();  // accepted: written before the store closes
  if (env && !env_broken && checkpoints) do_sync();  // a clean close leaves nothing to roll back
  close_env();
  if (dir_fd >= 0) ::close(dir_fd);
  ZSTD_freeCCtx(cctx);
  ZSTD_freeDCtx(dctx);
}

void Buffer::Impl::log(LogLevel l, const std::string& msg) const {
  fleetpipe::log(port, l, kBufferComponent, msg);
}

void Buffer::Impl::refresh_gauges() {
  g_records.set(static_cast<double>(pc.total_records()));
  g_bytes.set(static_cast<double>(pc.total_bytes()));
  g_map.set(static_cast<double>(map_size));
  g_written_today.set(static_cast<double>(pc.wear_bytes));
  g_leased.set(static_cast<double>(leased.size()));
  if (stored_compressed > 0) g_ratio.set(raw_compressed / stored_compressed);
}

Counter& Buffer::Impl::labelled(std::map<std::tuple<std::string, int, std::string>, Counter*>& cache,
                                const char* name, const char* help, const std::string& reason,
                                int prio, const std::string& stream) {
  auto key = std::make_tuple(reason, prio, stream);
  auto it = cache.find(key);
  if (it != cache.end()) return *it->second;
  Counter& c = metrics.counter(name, help,
                               {{"reason", reason}, {"priority", std::to_string(prio)}, {"stream", stream}});
  cache.emplace(key, &c);
  return c;
}

void Buffer::Impl::count_eviction(const std::string& reason, int prio, const std::string& stream,
                                  std::uint64_t n) {
  labelled(m_evicted, "fleetpipe_buffer_evicted_total", "Records evicted to admit others (policy evict)",
           reason, prio, stream)
      .inc(n);
  evicted_total += n;
}

void Buffer::Impl::count_rejection(const std::string& reason, int prio, const std::string& stream) {
  labelled(m_rejected, "fleetpipe_buffer_rejected_total", "Appends rejected", reason, prio, stream).inc();
  ++rejected_total;
}

// ---- Buffer ---------------------------------------------------------------------------------

Buffer::Buffer(std::unique_ptr<Impl> impl) noexcept : impl_(std::move(impl)) {}
Buffer::~Buffer() = default;

Result<std::unique_ptr<Buffer>> Buffer::open(const BufferConfig& config, const Port& port,
                                             MetricsRegistry& metrics) {
  std::string bad = validate(config);
  if (!bad.empty()) return Error(errc::invalid_config, "/buffer/" + bad, "/buffer");
  if (auto v = validate_config(config); !v) return std::move(v).error();
  auto impl = std::make_unique<Impl>(config, port, metrics);
  if (auto locked = impl->lock_dir(); !locked) return std::move(locked).error();
  impl->map_cap = std::max<std::uint64_t>(config.max_bytes * 2 + (8u << 20), config.initial_map_bytes);
  impl->last_sync = impl->port.clock->monotonic();
  auto r = impl->open_or_recover();
  if (!r) return std::move(r).error();
  if (config.unpark_on_open) {
    auto u = impl->unpark({}, "at open: ");
    if (!u) impl->log(LogLevel::error, "parked records stay parked: " + u.error().message);
  }
  impl->log(LogLevel::info, "opened " + config.path + ": " + std::to_string(impl->pc.total_records()) +
                                " records, " + std::to_string(impl->pc.total_bytes()) + " bytes");
  return std::unique_ptr<Buffer>(new Buffer(std::move(impl)));
}

AppendOutcome Buffer::append_staged(const RecordMeta& meta, std::string_view payload) {
  return impl_->stage(meta, payload);
}

AppendOutcome Buffer::append(const RecordMeta& meta, std::string_view payload) {
  return impl_->append_one(meta, payload);
}

std::vector<AppendOutcome> Buffer::append_batch(
    const std::vector<std::pair<RecordMeta, std::string_view>>& records) {
  return impl_->append_many(records);
}

Result<Lease> Buffer::lease(std::uint64_t max_bytes, std::size_t max_records) {
  auto li = impl_->lease(max_bytes, max_records);
  if (!li) return std::move(li).error();
  return Lease(std::move(*li));
}

Result<void> Buffer::ack(const std::vector<RecordId>& ids) { return impl_->ack(ids); }
Result<void> Buffer::nack(const std::vector<RecordId>& ids) { return impl_->nack(ids); }
Result<void> Buffer::park(const std::vector<RecordId>& ids, std::string_view reason) {
  return impl_->park(ids, reason);
}
Result<std::uint64_t> Buffer::unpark(std::string_view reason) { return impl_->unpark(reason, ""); }

Result<std::size_t> Buffer::read_payload(RecordId id, std::uint64_t offset, char* out, std::size_t n) {
  return impl_->read_payload(id, offset, out, n);
}

Result<void> Buffer::put_state(std::string_view key, std::string_view value) {
  return impl_->put_state(key, value);
}
Result<std::optional<std::string>> Buffer::get_state(std::string_view key) { return impl_->get_state(key); }
Result<void> Buffer::erase_state(std::string_view key) { return impl_->erase_state(key); }
Result<std::vector<std::pair<std::string, std::string>>> Buffer::list_state(std::string_view prefix) {
  return impl_->list_state(prefix);
}

Result<void> Buffer::poll() {
  Impl& b = *impl_;
  if (!b.usable()) return Error(errc::io_error, "buffer store unavailable");
  const MonoTime now = b.port.clock->monotonic();
  if (now - b.last_reader_check >= std::chrono::seconds(1)) {  // hosts poll at up to kHz rates
    b.last_reader_check = now;
    b.grow_ahead();
    b.check_readers();
  }
  b.step_staged();  // at most one chunk per call
  if (int rc = b.sync_if_due(now)) return Error(errc::io_error, "sync: " + lmdb::text(rc));
  b.refresh_gauges();
  return {};
}

Result<void> Buffer::flush() {
  Impl& b = *impl_;
  while (b.step_staged()) {
  }
  if (!b.usable()) return Error(errc::io_error, "buffer store unavailable");
  if (int rc = b.do_sync()) return Error(errc::io_error, "sync: " + lmdb::text(rc));
  return {};
}

BufferStats Buffer::stats() const {
  const Impl& b = *impl_;
  BufferStats s;
  for (int p = 0; p < 8; ++p) {
    s.by_priority[p].records = b.pc.records[p];
    s.by_priority[p].bytes = b.pc.bytes[p];
  }
  s.records = b.pc.total_records();
  s.bytes = b.pc.total_bytes();
  s.leased = b.leased.size();
  s.parked = b.pc.parked;
  s.staged = b.staged.active ? 1 : 0;
  s.map_bytes = b.map_size;
  s.file_bytes = b.exact_file_bytes();
  s.written_today = b.pc.wear_day == utc_day(wall_ns(b.port)) ? b.pc.wear_bytes : 0;
  s.evicted_total = b.evicted_total;
  s.rejected_total = b.rejected_total;
  s.quarantined_total = b.quarantined_total;
  s.compression_ratio = b.stored_compressed > 0 ? b.raw_compressed / b.stored_compressed : 1.0;
  return s;
}

const BufferConfig& Buffer::config() const noexcept { return impl_->cfg; }

}  // namespace fleetpipe
