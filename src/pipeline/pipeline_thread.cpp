// PipelineThread: a Pipeline on its own thread, fed through a preallocated SPSC queue.
#include "fleetpipe/pipeline_thread.hpp"

#include <chrono>
#include <exception>
#include <mutex>
#include <new>
#include <string>
#include <thread>

#include "pipeline/pipeline_thread_impl.hpp"

namespace fleetpipe {

using detail::Request;

// ---------------------------------------------------------------------------------------------
// Construction
// ---------------------------------------------------------------------------------------------

PipelineThread::PipelineThread(std::unique_ptr<Impl> impl) noexcept : impl_(std::move(impl)) {}

Result<std::unique_ptr<PipelineThread>> PipelineThread::create(std::unique_ptr<Pipeline> pipeline,
                                                               PipelineThreadOptions o) {
  auto bad = [](std::string msg) { return Error(errc::invalid_argument, std::move(msg)); };
  if (!pipeline) return bad("PipelineThread::create: pipeline is null");
  if (o.queue_capacity < 1 || o.queue_capacity > (std::size_t{1} << 24)) {
    return bad("queue_capacity: must be 1 .. 16777216, got " + std::to_string(o.queue_capacity));
  }
  if (o.blob_slots > o.queue_capacity) {
    return bad("blob_slots: must be <= queue_capacity (" + std::to_string(o.queue_capacity) +
               "), got " + std::to_string(o.blob_slots));
  }
  if (o.blob_slot_bytes > (std::size_t{1} << 30)) {
    return bad("blob_slot_bytes: must be <= 1 GiB, got " + std::to_string(o.blob_slot_bytes));
  }
  if (static_cast<unsigned long long>(o.blob_slots) * o.blob_slot_bytes > (1ull << 32)) {
    return bad("blob_slots x blob_slot_bytes: must be <= 4 GiB, got " +
               std::to_string(static_cast<unsigned long long>(o.blob_slots) * o.blob_slot_bytes));
  }
  if (o.idle_wait < std::chrono::milliseconds(1) || o.idle_wait > std::chrono::seconds(10)) {
    return bad("idle_wait: must be 1 ms .. 10 s, got " + std::to_string(o.idle_wait.count()) +
               " ms");
  }
  if (o.thread_name.size() > 15) {
    return bad("thread_name: at most 15 bytes, got \"" + o.thread_name + "\"");
  }
  if (o.nice && (*o.nice < -20 || *o.nice > 19)) {
    return bad("nice: must be -20 .. 19, got " + std::to_string(*o.nice));
  }

  auto impl = std::make_unique<Impl>();
  Impl& m = *impl;
  m.pipeline = std::move(pipeline);
  m.opt = std::move(o);
  try {
    m.queue.init(m.opt.queue_capacity, m.opt.blob_slots, m.opt.blob_slot_bytes,
                 m.pipeline->capture().streams());
  } catch (const std::bad_alloc&) {
    return bad("the queue does not fit in memory (queue_capacity/blob_slots/blob_slot_bytes)");
  }

  MetricsRegistry& reg = m.pipeline->metrics();
  const char* drop_help = "Samples the host could not hand to the pipeline thread, by reason";
  m.m_drop_full = &reg.counter("fleetpipe_pipeline_thread_dropped_samples_total", drop_help,
                               {{"reason", "queue_full"}});
  m.m_drop_large = &reg.counter("fleetpipe_pipeline_thread_dropped_samples_total", drop_help,
                                {{"reason", "blob_too_large"}});
  m.m_processed = &reg.counter("fleetpipe_pipeline_thread_processed_total",
                               "Queue entries (samples, fires, ticks) handed to the pipeline");
  m.m_wakeups = &reg.counter("fleetpipe_pipeline_thread_wakeups_total",
                             "Iterations of the pipeline thread's loop");
  m.m_high_water = &reg.gauge("fleetpipe_pipeline_thread_queue_high_water",
                              "Most queue entries seen waiting at once");
  m.m_running = &reg.gauge("fleetpipe_pipeline_thread_running", "1 while the pipeline thread runs");
  return std::unique_ptr<PipelineThread>(new PipelineThread(std::move(impl)));
}

PipelineThread::~PipelineThread() {
  if (!impl_) return;
  stop();
  impl_->pipeline.reset();
}

// ---------------------------------------------------------------------------------------------
// Lifecycle
// ---------------------------------------------------------------------------------------------

Result<void> PipelineThread::start() {
  Impl& m = *impl_;
  std::lock_guard<std::mutex> life(m.life_mu);
  if (m.released.load(std::memory_order_relaxed)) {
    return Error(errc::invalid_argument, "PipelineThread::start: the pipeline was released");
  }
  std::lock_guard<std::mutex> g(m.mu);
  if (m.running) return Error(errc::invalid_argument, "PipelineThread::start: already running");
  m.stop_flag.store(false, std::memory_order_relaxed);
  m.worker_done = false;
  m.running = true;
  m.running_flag.store(true, std::memory_order_relaxed);
  try {
    m.thread = std::thread([&m] { m.run(); });
  } catch (const std::exception& e) {
    m.running = false;
    m.running_flag.store(false, std::memory_order_relaxed);
    return Error(errc::internal, std::string("PipelineThread::start: no thread: ") + e.what());
  }
  m.m_running->set(1);
  return {};
}

void PipelineThread::stop() noexcept {
  Impl& m = *impl_;
  if (m.on_worker()) return;  // from a call() on the thread itself: it cannot join itself
  std::lock_guard<std::mutex> life(m.life_mu);
  if (m.released.load(std::memory_order_relaxed)) return;
  bool was_running;
  {
    std::lock_guard<std::mutex> g(m.mu);
    was_running = m.running;
  }
  if (was_running) {
    m.stop_flag.store(true, std::memory_order_seq_cst);
    m.sleeping.store(false, std::memory_order_relaxed);
    m.waiter.wake();  // unconditionally: the thread may be about to sleep
    m.thread.join();
  }
  std::lock_guard<std::mutex> g(m.mu);
  m.running = false;
  m.worker_done = false;
  m.running_flag.store(false, std::memory_order_relaxed);
  m.worker_id.store(std::thread::id(), std::memory_order_relaxed);
  m.stop_flag.store(false, std::memory_order_relaxed);
  try {
    m.consume_locked();  // pushed after the thread's last look
  } catch (...) {       // a log line that could not be built: nothing to do
  }
  m.m_running->set(0);
}

std::unique_ptr<Pipeline> PipelineThread::release() noexcept {
  stop();
  Impl& m = *impl_;
  std::lock_guard<std::mutex> life(m.life_mu);
  if (m.released.exchange(true)) return nullptr;
  std::lock_guard<std::mutex> g(m.mu);
  return std::move(m.pipeline);
}

bool PipelineThread::running() const noexcept {
  return impl_->running_flag.load(std::memory_order_relaxed);
}

// ---------------------------------------------------------------------------------------------
// Lookups
// ---------------------------------------------------------------------------------------------

StreamHandle PipelineThread::stream(std::string_view name) const noexcept {
  if (impl_->released.load(std::memory_order_relaxed)) return {};
  return impl_->pipeline->stream(name);
}
TriggerHandle PipelineThread::trigger(std::string_view name) const noexcept {
  if (impl_->released.load(std::memory_order_relaxed)) return {};
  return impl_->pipeline->trigger(name);
}

// ---------------------------------------------------------------------------------------------
// Producer
// ---------------------------------------------------------------------------------------------

bool PipelineThread::push(StreamHandle stream, double t, const double* values,
                          std::size_t n) noexcept {
  Impl& m = *impl_;
  if (m.released.load(std::memory_order_relaxed)) return false;
  return m.accept(m.queue.push_row(stream, t, values, n));
}

bool PipelineThread::push_blob(StreamHandle stream, double t, std::string_view bytes) noexcept {
  Impl& m = *impl_;
  if (m.released.load(std::memory_order_relaxed)) return false;
  return m.accept(m.queue.push_blob(stream, t, bytes));
}

bool PipelineThread::fire(TriggerHandle trigger, double t) noexcept {
  Impl& m = *impl_;
  if (m.released.load(std::memory_order_relaxed)) return false;
  return m.accept(m.queue.push_fire(trigger, t));
}

bool PipelineThread::tick(double t) noexcept {
  Impl& m = *impl_;
  if (m.released.load(std::memory_order_relaxed)) return false;
  return m.accept(m.queue.push_tick(t));
}

// ---------------------------------------------------------------------------------------------
// Controls
// ---------------------------------------------------------------------------------------------

void PipelineThread::set_network_state(NetworkState s) noexcept {
  if (impl_->released.load(std::memory_order_relaxed)) return;
  impl_->pipeline->set_network_state(s);
  impl_->wake();
}
void PipelineThread::pause_uploads() {
  if (impl_->released.load(std::memory_order_relaxed)) return;
  impl_->pipeline->pause_uploads();
  impl_->wake();
}
void PipelineThread::resume_uploads() {
  if (impl_->released.load(std::memory_order_relaxed)) return;
  impl_->pipeline->resume_uploads();
  impl_->wake();
}
void PipelineThread::set_upload_rate(double bytes_per_second, std::uint64_t burst_bytes) {
  if (impl_->released.load(std::memory_order_relaxed)) return;
  impl_->pipeline->set_upload_rate(bytes_per_second, burst_bytes);
  impl_->wake();
}
void PipelineThread::flush_uploads() {
  if (impl_->released.load(std::memory_order_relaxed)) return;
  impl_->pipeline->flush_uploads();
  impl_->wake();
}
void PipelineThread::request_heartbeat() noexcept {
  if (impl_->released.load(std::memory_order_relaxed)) return;
  impl_->pipeline->request_heartbeat();
  impl_->wake();
}

// ---------------------------------------------------------------------------------------------
// Calls on the pipeline thread
// ---------------------------------------------------------------------------------------------

Result<void> PipelineThread::call(const std::function<void(Pipeline&)>& fn,
                                  std::chrono::milliseconds timeout) {
  Impl& m = *impl_;
  if (m.released.load(std::memory_order_relaxed)) {
    return Error(errc::invalid_argument, "PipelineThread::call: the pipeline was released");
  }
  if (!fn) return Error(errc::invalid_argument, "PipelineThread::call: empty function");
  if (m.on_worker()) {  // re-entrant (from a hook on the pipeline thread): run in place
    Request r;
    r.fn = &fn;
    m.run_request(r);
    if (!r.error.empty()) return Error(errc::internal, r.error);
    return {};
  }
  Request r;
  r.fn = &fn;
  std::unique_lock<std::mutex> lk(m.mu);
  if (!m.running || m.worker_done) {
    // No thread takes the queue: this caller does, under `mu` (one consumer at a time).
    m.drain_queue();
    m.run_request(r);
    if (!r.error.empty()) return Error(errc::internal, r.error);
    return {};
  }
  if (m.req_tail) {
    m.req_tail->next = &r;
  } else {
    m.req_head = &r;
  }
  m.req_tail = &r;
  m.requests_pending.store(true, std::memory_order_seq_cst);
  lk.unlock();
  m.wake();
  lk.lock();
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  m.cv.wait_until(lk, deadline, [&] { return r.state == Request::State::done; });
  if (r.state == Request::State::queued) {  // not picked up: withdraw it
    Request** link = &m.req_head;
    Request* prev = nullptr;
    while (*link && *link != &r) {
      prev = *link;
      link = &(*link)->next;
    }
    if (*link) *link = r.next;
    if (m.req_tail == &r) m.req_tail = prev;
    if (!m.req_head) m.requests_pending.store(false, std::memory_order_relaxed);
    return Error(errc::timeout, "PipelineThread::call: the pipeline thread did not take the call within " +
                                    std::to_string(timeout.count()) + " ms");
  }
  m.cv.wait(lk, [&] { return r.state == Request::State::done; });  // started: let it finish
  if (!r.error.empty()) return Error(errc::internal, r.error);
  return {};
}

Result<PipelineStatus> PipelineThread::status(std::chrono::milliseconds timeout) {
  PipelineStatus s;
  auto r = call([&](Pipeline& p) { s = p.status(); }, timeout);
  if (!r) return std::move(r).error();
  return s;
}

Result<std::string> PipelineThread::metrics_prometheus(std::chrono::milliseconds timeout) {
  std::string s;
  auto r = call([&](Pipeline& p) { s = p.metrics_prometheus(); }, timeout);
  if (!r) return std::move(r).error();
  return s;
}

Result<std::string> PipelineThread::metrics_json(std::chrono::milliseconds timeout) {
  std::string s;
  auto r = call([&](Pipeline& p) { s = p.metrics_json(); }, timeout);
  if (!r) return std::move(r).error();
  return s;
}

Result<void> PipelineThread::drain(std::chrono::milliseconds timeout) {
  Result<void> out;
  auto r = call([&](Pipeline& p) { out = p.drain(timeout); }, timeout);
  if (!r) return r;
  return out;
}

// ---------------------------------------------------------------------------------------------
// Observability
// ---------------------------------------------------------------------------------------------

PipelineThreadStats PipelineThread::stats() const noexcept {
  const Impl& m = *impl_;
  PipelineThreadStats s;
  s.queued = m.queue.queued();
  s.processed = m.queue.processed();
  s.dropped_queue_full = m.n_drop_full.load(std::memory_order_relaxed);
  s.dropped_blob_too_large = m.n_drop_large.load(std::memory_order_relaxed);
  s.queue_high_water = m.queue.high_water();
  s.wakeups = m.n_wakeups.load(std::memory_order_relaxed);
  s.running = m.running_flag.load(std::memory_order_relaxed);
  return s;
}

MetricsRegistry& PipelineThread::metrics() noexcept { return impl_->pipeline->metrics(); }
Pipeline& PipelineThread::pipeline() noexcept { return *impl_->pipeline; }
const PipelineThreadOptions& PipelineThread::options() const noexcept { return impl_->opt; }

}  // namespace fleetpipe
