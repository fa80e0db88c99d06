// Pipeline: the facade that owns and drives Capture, Buffer, Uploader, metrics and the heartbeat.
#include "fleetpipe/pipeline.hpp"


#include <cstdio>

#include "pipeline/pipeline_impl.hpp"

namespace fleetpipe {

using namespace pipeline_internal;

namespace {

// Bytes of encoding per Capture::deliver_slice: a 64 KiB copy is ~10-20 us on the small cores
// this targets, so a poll can stop close to its half-budget mark.
constexpr std::size_t kEncodeSlice = 64 * 1024;

constexpr const char* kPollCauses[7] = {"tick",   "encode",    "buffer_append", "buffer_poll",
                                        "gauges", "heartbeat", "uploader_io"};

}  // namespace

const char* PollProfile::cause() const noexcept {
  const std::chrono::nanoseconds parts[7] = {tick,   encode,    buffer_append, buffer_poll,
                                             gauges, heartbeat, uploader_io};
  std::size_t best = 0;
  for (std::size_t i = 1; i < 7; ++i) {
    if (parts[i] > parts[best]) best = i;
  }
  return kPollCauses[best];
}

void Pipeline::Impl::register_metrics() {
  polls = &metrics.counter("fleetpipe_pipeline_polls_total", "Pipeline::poll calls");
  poll_out_of_memory = &metrics.counter(
      "fleetpipe_pipeline_poll_out_of_memory_total",
      "poll calls cut short by a failed allocation (the work is picked up by a later poll)");
  poll_overruns = &metrics.counter("fleetpipe_pipeline_poll_overruns_total",
                                   "poll calls that returned after their budget");
  for (std::size_t i = 0; i < 7; ++i) {
    poll_overrun_cause[i] = &metrics.counter(
        "fleetpipe_pipeline_poll_overrun_causes_total",
        "poll calls that overran their budget, by the step that took longest",
        {{"cause", kPollCauses[i]}});
  }
  const char* hb_help = "heartbeat objects by result (ok, failed, skipped_offline, skipped_paused)";
  hb_ok = &metrics.counter("fleetpipe_pipeline_heartbeats_total", hb_help, {{"result", "ok"}});
  hb_fail =
      &metrics.counter("fleetpipe_pipeline_heartbeats_total", hb_help, {{"result", "failed"}});
  hb_skip = &metrics.counter("fleetpipe_pipeline_heartbeats_total", hb_help,
                             {{"result", "skipped_offline"}});
  hb_skip_paused = &metrics.counter("fleetpipe_pipeline_heartbeats_total", hb_help,
                                    {{"result", "skipped_paused"}});
  uptime = &metrics.gauge("fleetpipe_pipeline_uptime_seconds", "seconds since the pipeline started");
  for (int p = 0; p < 8; ++p) {
    Labels l{{"priority", std::to_string(p)}};
    backlog_records[p] = &metrics.gauge("fleetpipe_pipeline_backlog_records",
                                        "records in the buffer by priority", l);
    backlog_bytes[p] = &metrics.gauge("fleetpipe_pipeline_backlog_bytes",
                                      "stored bytes in the buffer by priority", l);
  }
  backlog_leased = &metrics.gauge("fleetpipe_pipeline_backlog_leased_records",
                                  "records leased by the uploader now");
  backlog_parked = &metrics.gauge("fleetpipe_pipeline_backlog_parked_records",
                                  "records parked after a permanent upload failure");
  wear_written = &metrics.gauge("fleetpipe_pipeline_wear_written_today_bytes",
                                "bytes written to flash this UTC day (wear budget use)");
  wear_ratio = &metrics.gauge("fleetpipe_pipeline_wear_budget_used_ratio",
                              "written today / daily wear budget (0 when unlimited)");
  uploads_paused = &metrics.gauge("fleetpipe_pipeline_uploads_paused",
                                  "1 while uploads are paused (host, schedule or network)");
  network_state = &metrics.gauge("fleetpipe_pipeline_network_state",
                                 "0 online, 1 metered, 2 offline");
}

void Pipeline::Impl::refresh_gauges(MonoTime now) {
  last_refresh = now;
  uptime->set(seconds_between(created, now));
  BufferStats st = buffer->stats();
  for (int p = 0; p < 8; ++p) {
    backlog_records[p]->set(static_cast<double>(st.by_priority[p].records));
    backlog_bytes[p]->set(static_cast<double>(st.by_priority[p].bytes));
  }
  backlog_leased->set(static_cast<double>(st.leased));
  backlog_parked->set(static_cast<double>(st.parked));
  wear_written->set(static_cast<double>(st.written_today));
  auto budget = buffer->config().max_bytes_written_per_day;
  wear_ratio->set(budget ? static_cast<double>(st.written_today) / static_cast<double>(budget)
                         : 0.0);
  network_state->set(static_cast<double>(static_cast<int>(port.network->get())));
  if (uploader) uploads_paused->set(uploader->status().paused ? 1 : 0);
}

void Pipeline::Impl::auto_tick(MonoTime now) {
  if (!config.pipeline.auto_tick || !have_t) return;
  if (!have_seen || last_t != seen_t) {
    seen_t = last_t;
    seen_mono = now;
    have_seen = true;
  }
  double t = seen_t + std::max(0.0, seconds_between(seen_mono, now));
  if (t > ticked_t) {
    ticked_t = t;
    capture->tick(t);
  }
}


// Runs ready handlers (uploader and heartbeat) one at a time until none is ready or the next
// one would end past the deadline: a handler starts only where its expected cost (the longest
// recent one, decaying, plus half of it) fits in what is left. The first handler of a poll also starts while half
// the budget is left, or after two polls in a row that ran none because none fitted, so a handler
// costing more than the budget still runs (progress).
std::size_t Pipeline::Impl::run_ready(SteadyClock::time_point start, SteadyClock::time_point deadline) {
  std::size_t total = 0;
  if (ioc.stopped()) ioc.restart();
  auto now = SteadyClock::now();
  const auto half = start + (deadline - start) / 2;
  while (now < deadline) {
    // With half the estimate again as margin: handlers of one kind vary (a hashing slice that
    // spans two records, a write that meets a full socket buffer).
    if (now + handler_cost + handler_cost / 2 > deadline &&
        !(total == 0 && (now < half || starved_polls >= 2))) {
      if (total == 0) ++starved_polls;
      return total;
    }
    std::size_t n = ioc.poll_one();
    const auto after = SteadyClock::now();
    if (n == 0) break;
    total += n;
    // A decaying maximum: one long handler (a handshake, a response) raises it at once; it
    // halves over ~44 handlers after that, so the short write completions between two runs of
    // hashing slices do not wear it down before the next run.
    const auto cost = std::chrono::duration_cast<std::chrono::nanoseconds>(after - now);
    handler_cost = std::max(cost, handler_cost - handler_cost / 64);
    now = after;
  }
  starved_polls = 0;
  return total;
}

bool Pipeline::Impl::pending() const {
  if (hb_in_flight) return true;
  BufferStats st = buffer->stats();
  if (st.staged) return true;  // an event still being written, one chunk per poll
  if (capture->pending_events()) return true;  // finished events waiting in the hand-off
  if (!uploader) return false;
  if (!uploader->idle()) return true;
  return st.records > st.parked;
}

// ---------------------------------------------------------------------------------------------
// Construction
// ---------------------------------------------------------------------------------------------

Pipeline::Pipeline(std::unique_ptr<Impl> impl) noexcept : impl_(std::move(impl)) {}

Result<std::unique_ptr<Pipeline>> Pipeline::create(Config config, const Port& host_port) {
  if (auto v = validate_config(config); !v) return std::move(v).error();
  auto impl = std::make_unique<Impl>();
  Impl& m = *impl;
  config.uploader.device_id = config.device_id;
  config.uploader.labels = config.labels;
  m.config = std::move(config);

  Port p = host_port;
  if (!p.network) p.network = &m.own_network;
  m.own_log.set_min_level(m.config.log_level);
  m.log_sink.set_inner(p.log ? p.log : &m.own_log);
  p.log = &m.log_sink;
  m.port = p.with_defaults();

  m.created = m.port.clock->monotonic();
  m.last_refresh = m.created;
  m.register_metrics();

  auto buffer = Buffer::open(m.config.buffer, m.port, m.metrics);
  if (!buffer) return std::move(buffer).error();
  m.buffer = std::move(*buffer);
  m.sink = std::make_unique<TimedBufferSink>(*m.buffer);

  // push never does I/O: finished events wait in the hand-off for poll (pipeline.hpp).
  CaptureOptions copt;
  copt.handoff_events =
      static_cast<std::uint32_t>(std::max<std::size_t>(4, 2 * m.config.streams.size()));
  m.handoff_slots = copt.handoff_events;
  auto capture = Capture::create(m.config, *m.sink, m.port, m.metrics, copt);
  if (!capture) return std::move(capture).error();
  m.capture = std::move(*capture);

  if (m.config.uploader.enabled) {
    auto uploader = create_uploader(m.ioc, m.config.uploader, *m.buffer, m.port, m.metrics);
    if (!uploader) return std::move(uploader).error();
    m.uploader = std::move(*uploader);

    if (m.config.pipeline.heartbeat_interval_s > 0) {
      m.hb_enabled = true;
      m.next_heartbeat =
          m.config.pipeline.heartbeat_on_start
              ? m.created
              : m.created + std::chrono::duration_cast<MonoTime::duration>(
                                std::chrono::duration<double>(
                                    m.config.pipeline.heartbeat_interval_s));
    }
  }
  if (m.config.campaigns.enabled) {
    if (auto r = m.start_campaigns(); !r) return std::move(r).error();
  }
  m.refresh_gauges(m.created);
  log(m.port, LogLevel::info, "pipeline", "started device " + m.config.device_id);
  return std::unique_ptr<Pipeline>(new Pipeline(std::move(impl)));
}

Result<std::unique_ptr<Pipeline>> Pipeline::create_from_file(const std::string& path,
                                                             const Port& port) {
  auto config = load_config_file(path);
  if (!config) return std::move(config).error();
  return create(std::move(*config), port);
}

Pipeline::~Pipeline() {
  if (!impl_) return;
  Impl& m = *impl_;
  if (m.uploader) m.uploader->shutdown();
  m.uploader.reset();  // leased records go back to the buffer
  if (m.capture) m.capture->flush();
  if (m.buffer) {
    if (auto r = m.buffer->flush(); !r) {
      log(m.port, LogLevel::error, "pipeline", "final buffer flush failed: " + r.error().message);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Forwarding
// ---------------------------------------------------------------------------------------------

StreamHandle Pipeline::stream(std::string_view name) const noexcept {
  return impl_->capture->stream(name);
}
TriggerHandle Pipeline::trigger(std::string_view name) const noexcept {
  return impl_->capture->trigger(name);
}

void Pipeline::push(StreamHandle stream, double t, const double* values, std::size_t n) noexcept {
  Impl& m = *impl_;
  if (!m.have_t || t > m.last_t) {
    m.last_t = t;
    m.have_t = true;
  }
  m.capture->push(stream, t, values, n);
}

void Pipeline::push_blob(StreamHandle stream, double t, std::string_view bytes) noexcept {
  Impl& m = *impl_;
  if (!m.have_t || t > m.last_t) {
    m.last_t = t;
    m.have_t = true;
  }
  m.capture->push_blob(stream, t, bytes);
}

void Pipeline::push_rows(StreamHandle stream, const double* times, const double* values,
                         std::size_t n) noexcept {
  Impl& m = *impl_;
  if (n && times) {
    double hi = times[0];
    for (std::size_t i = 1; i < n; ++i) hi = times[i] > hi ? times[i] : hi;
    if (!m.have_t || hi > m.last_t) {
      m.last_t = hi;
      m.have_t = true;
    }
  }
  m.capture->push_rows(stream, times, values, n);
}

Result<void> Pipeline::push(std::string_view stream, double t,
                            std::initializer_list<std::pair<std::string_view, double>> values) {
  Impl& m = *impl_;
  auto r = m.capture->push(stream, t, values);
  if (r && (!m.have_t || t > m.last_t)) {
    m.last_t = t;
    m.have_t = true;
  }
  return r;
}

Result<void> Pipeline::push_blob(std::string_view stream, double t, std::string_view bytes) {
  Impl& m = *impl_;
  auto r = m.capture->push_blob(stream, t, bytes);
  if (r && (!m.have_t || t > m.last_t)) {
    m.last_t = t;
    m.have_t = true;
  }
  return r;
}

Result<bool> Pipeline::fire(std::string_view trigger, double t) {
  return impl_->capture->fire(trigger, t);
}

void Pipeline::tick(double t) noexcept {
  Impl& m = *impl_;
  if (t > m.ticked_t) m.ticked_t = t;
  m.capture->tick(t);
}

// ---------------------------------------------------------------------------------------------
// Driving
// ---------------------------------------------------------------------------------------------

bool Pipeline::poll() {
  return poll(std::chrono::microseconds(
      static_cast<std::int64_t>(impl_->config.pipeline.poll_budget_s * 1e6)));
}

bool Pipeline::poll(std::chrono::microseconds budget) {
  Impl& m = *impl_;
  const auto start = SteadyClock::now();
  const auto deadline = start + budget;
  m.polls->inc();
  PollProfile& pp = m.last_poll;
  pp = PollProfile{};
  pp.budget = budget;
  try {
    MonoTime now = m.port.clock->monotonic();
    m.auto_tick(now);
    auto t1 = SteadyClock::now();
    pp.tick = t1 - start;
    // The Buffer first: a staged event's next chunk is written before another event is
    // encoded, so one poll does not do both for a large event.
    if (auto r = m.buffer->poll(); !r) m.note_error("buffer", r.error().message);
    auto t2 = SteadyClock::now();
    pp.buffer_poll = t2 - t1;
    // Events finished since the last poll, oldest first, in slices of kEncodeSlice bytes that
    // resume at the next poll: at least one slice per poll (so a platform whose poll steps alone
    // take half the budget still makes progress), more while at least half the budget is left,
    // and regardless of the budget when half the hand-off is taken (so it never fills while the
    // host polls).
    m.sink->spent = {};
    const auto half = start + budget / 2;
    bool first = true;
    while (m.capture->pending_events() &&
           (first || SteadyClock::now() < half || 2 * m.capture->pending_events() >= m.handoff_slots)) {
      first = false;
      pp.events_delivered += static_cast<std::uint32_t>(m.capture->deliver_slice(kEncodeSlice));
      ++pp.encode_slices;
    }
    auto t3 = SteadyClock::now();
    pp.buffer_append = m.sink->spent;
    pp.encode = (t3 - t2) - m.sink->spent;
    if (m.campaigns) m.poll_campaigns(now);
    if (now - m.last_refresh >= std::chrono::milliseconds(250)) m.refresh_gauges(now);
    auto t4 = SteadyClock::now();
    pp.gauges = t4 - t3;
    m.maybe_start_heartbeat(now);
    auto t5 = SteadyClock::now();
    pp.heartbeat = t5 - t4;
    pp.io_handlers = static_cast<std::uint32_t>(m.run_ready(start, deadline));
    pp.uploader_io = SteadyClock::now() - t5;
  } catch (const std::bad_alloc&) {  // must not reach the host's loop; counted, logged as-is
    m.poll_out_of_memory->inc();
    log(m.port, LogLevel::error, "pipeline", "poll: out of memory (counted; retried next poll)");
    return true;
  }
  const auto end = SteadyClock::now();
  pp.total = end - start;
  if (end > deadline) {
    m.poll_overruns->inc();
    const char* cause = pp.cause();
    for (std::size_t i = 0; i < 7; ++i) {
      if (kPollCauses[i] == cause) m.poll_overrun_cause[i]->inc();
    }
    if (log_enabled(m.port, LogLevel::debug)) {
      auto us = [](std::chrono::nanoseconds d) { return static_cast<long long>(d.count() / 1000); };
      char msg[400];
      std::snprintf(msg, sizeof msg,
                    "poll overran its %lld us budget by %lld us (%s): tick %lld, encode %lld, "
                    "buffer_append %lld, buffer_poll %lld, gauges %lld, heartbeat %lld, "
                    "uploader_io %lld us (%u handlers), %u events delivered (%u encode slices)",
                    us(pp.budget), us(pp.total - pp.budget), cause, us(pp.tick), us(pp.encode),
                    us(pp.buffer_append), us(pp.buffer_poll), us(pp.gauges), us(pp.heartbeat),
                    us(pp.uploader_io), pp.io_handlers, pp.events_delivered,
                    pp.encode_slices);
      log(m.port, LogLevel::debug, "pipeline", msg);
    }
  }
  return m.pending();
}

bool Pipeline::run_for(std::chrono::microseconds d) {
  Impl& m = *impl_;
  const auto deadline = SteadyClock::now() + d;
  bool busy = true;
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::microseconds>(deadline - SteadyClock::now());
    if (left.count() <= 0) break;
    busy = poll(left);
    left = std::chrono::duration_cast<std::chrono::microseconds>(deadline - SteadyClock::now());
    if (left.count() <= 0) break;
    if (!m.uploader && !m.hb_in_flight) break;  // nothing can happen without new samples
    // Wait for I/O in short slices so the auto-tick and the heartbeat schedule keep moving.
    if (m.ioc.stopped()) m.ioc.restart();
    m.ioc.run_for(std::min<std::chrono::microseconds>(left, std::chrono::milliseconds(2)));
  }
  return busy;
}

Result<void> Pipeline::drain(std::chrono::milliseconds timeout) {
  Impl& m = *impl_;
  const auto deadline = SteadyClock::now() + timeout;
  m.capture->flush();
  if (!m.uploader) return Error(errc::unsupported, "drain: the uploader is disabled");
  auto left = [&] {
    return std::chrono::duration_cast<std::chrono::microseconds>(deadline - SteadyClock::now());
  };
  auto last_flush = SteadyClock::time_point{};
  std::uint64_t remaining = 0;
  bool drained = false;
  while (left().count() > 0) {
    if (SteadyClock::now() - last_flush > std::chrono::milliseconds(100)) {
      m.uploader->flush();  // records released by a finished batch are uploaded at once too
      last_flush = SteadyClock::now();
    }
    run_for(std::min<std::chrono::microseconds>(left(), std::chrono::milliseconds(5)));
    BufferStats st = m.buffer->stats();
    remaining = (st.records > st.parked ? st.records - st.parked : 0) + st.staged;
    if (remaining == 0 && m.uploader->idle()) {
      drained = true;
      break;
    }
    UploaderStatus us = m.uploader->status();
    if (us.paused) {
      return Error(errc::paused, "drain: uploads are paused (" +
                                     std::string(us.paused_by_host       ? "host"
                                                 : us.paused_by_network  ? "network"
                                                                         : "schedule") +
                                     "); " + std::to_string(remaining) + " records stay buffered");
    }
  }
  if (m.hb_enabled) {
    // Final heartbeat: the bucket shows the state after the drain.
    while (m.hb_in_flight && left().count() > 0) run_for(std::min(left(), std::chrono::microseconds(5000)));
    if (!m.hb_in_flight) {
      m.hb_requested.store(true, std::memory_order_relaxed);
      poll(std::chrono::microseconds(0));
      while (m.hb_in_flight && left().count() > 0) {
        run_for(std::min<std::chrono::microseconds>(left(), std::chrono::milliseconds(5)));
      }
    }
  }
  if (!drained) {
    return Error(errc::timeout,
                 "drain: " + std::to_string(remaining) + " records still buffered after " +
                     std::to_string(timeout.count()) + " ms");
  }
  return {};
}

// ---------------------------------------------------------------------------------------------
// Host hooks
// ---------------------------------------------------------------------------------------------

void Pipeline::set_network_state(NetworkState s) noexcept { impl_->port.network->set(s); }
NetworkState Pipeline::network_state() const noexcept { return impl_->port.network->get(); }
void Pipeline::pause_uploads() {
  if (impl_->uploader) impl_->uploader->pause();
}
void Pipeline::resume_uploads() {
  if (impl_->uploader) impl_->uploader->resume();
}
void Pipeline::set_upload_rate(double bytes_per_second, std::uint64_t burst_bytes) {
  if (impl_->uploader) impl_->uploader->set_rate(bytes_per_second, burst_bytes);
}
void Pipeline::flush_uploads() {
  if (impl_->uploader) impl_->uploader->flush();
}
void Pipeline::request_heartbeat() noexcept {
  impl_->hb_requested.store(true, std::memory_order_relaxed);
}
void Pipeline::request_metrics_heartbeat() noexcept {
  impl_->hb_metrics_requested.store(true, std::memory_order_relaxed);
  impl_->hb_requested.store(true, std::memory_order_relaxed);
}

// ---------------------------------------------------------------------------------------------
// Observability
// ---------------------------------------------------------------------------------------------

PipelineStatus Pipeline::status() const {
  const Impl& m = *impl_;
  PipelineStatus s;
  s.device_id = m.config.device_id;
  s.time = m.port.clock->wall();
  s.uptime_s = seconds_between(m.created, m.port.clock->monotonic());
  s.network = m.port.network->get();
  s.capture = m.capture->stats();
  const auto& tcs = m.capture->triggers();
  for (std::size_t i = 0; i < tcs.size(); ++i) {
    s.triggers.push_back(
        {tcs[i].name, m.capture->trigger_stats(TriggerHandle{static_cast<std::uint32_t>(i)})});
  }
  s.buffer = m.buffer->stats();
  if (m.uploader) s.uploader = m.uploader->status();
  s.polls = m.polls->value();
  s.heartbeats_sent = m.hb_sent;
  s.heartbeats_failed = m.hb_failed;
  s.heartbeats_skipped = m.hb_skipped;
  s.last_heartbeat = m.last_heartbeat;
  s.last_heartbeat_key = m.last_heartbeat_key;
  s.last_error = m.log_sink.last_error();
  if (s.last_error.empty()) s.last_error = s.uploader.last_error;
  return s;
}

std::string Pipeline::metrics_prometheus() const {
  impl_->refresh_gauges(impl_->port.clock->monotonic());
  return impl_->metrics.to_prometheus();
}

std::string Pipeline::metrics_json() const {
  impl_->refresh_gauges(impl_->port.clock->monotonic());
  return impl_->metrics.to_json();
}

std::string Pipeline::heartbeat_json() const {
  impl_->refresh_gauges(impl_->port.clock->monotonic());
  return impl_->heartbeat_doc(impl_->next_heartbeat_has_metrics()).dump(2);
}

std::string Pipeline::heartbeat_key(WallTime wall) const { return impl_->heartbeat_key(wall); }

const PollProfile& Pipeline::last_poll() const noexcept { return impl_->last_poll; }

Capture& Pipeline::capture() noexcept { return *impl_->capture; }
Buffer& Pipeline::buffer() noexcept { return *impl_->buffer; }
Uploader& Pipeline::uploader() noexcept { return *impl_->uploader; }
bool Pipeline::has_uploader() const noexcept { return impl_->uploader != nullptr; }
MetricsRegistry& Pipeline::metrics() noexcept { return impl_->metrics; }
const Config& Pipeline::config() const noexcept { return impl_->config; }
const Port& Pipeline::port() const noexcept { return impl_->port; }

}  // namespace fleetpipe

// ---------------------------------------------------------------------------------------------
// Config: "/pipeline"
// ---------------------------------------------------------------------------------------------

namespace fleetpipe::detail {

PipelineOptions parse_pipeline_options(JsonReader& r) {
  PipelineOptions o;
  o.heartbeat_interval_s = r.seconds("heartbeat_interval", o.heartbeat_interval_s);
  o.poll_budget_s = r.seconds("poll_budget", o.poll_budget_s, 0, 10, /*min_exclusive=*/true);
  o.heartbeat_on_start = r.boolean("heartbeat_on_start", o.heartbeat_on_start);
  o.heartbeat_metrics_every = static_cast<std::uint32_t>(
      r.integer("heartbeat_metrics_every", o.heartbeat_metrics_every, 0, 1000000));
  o.auto_tick = r.boolean("auto_tick", o.auto_tick);
  r.finish();
  return o;
}

}  // namespace fleetpipe::detail
