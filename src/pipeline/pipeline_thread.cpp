// PipelineThread: a Pipeline on its own thread, fed through a preallocated SPSC queue.
#include "fleetpipe/pipeline_thread.hpp"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstring>
#include <exception>
#include <limits>
#include <mutex>
#include <thread>
#include <vector>

#if defined(__linux__)
#include <linux/futex.h>
#include <pthread.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#endif

namespace fleetpipe {

namespace {

constexpr const char* kComponent = "pipeline_thread";

enum class Kind : std::uint8_t { row, blob, fire, tick };

// One queued entry. Values live in a parallel array (max_channels doubles per entry), blob
// bytes in the blob slot ring (consumed in the same order as the entries that use them).
struct Entry {
  double t = 0;
  std::uint64_t blob_size = 0;
  std::uint32_t index = 0;  // stream or trigger
  std::uint32_t n = 0;      // values copied
  Kind kind = Kind::row;
  bool has_slot = false;    // blob bytes are in the next blob slot
};

// Sleep/wake for the pipeline thread. Linux: a futex on a sequence word (the waker does one
// syscall and takes no lock). Elsewhere: a condition variable (the waker takes a mutex briefly).
class Waiter {
 public:
  // Reads the sequence to wait on; call before re-checking for work.
  std::uint32_t prepare() const noexcept { return seq_.load(std::memory_order_acquire); }
  void wait(std::uint32_t seen, std::chrono::nanoseconds d) noexcept {
#if defined(__linux__)
    timespec ts{static_cast<time_t>(d.count() / 1000000000),
                static_cast<long>(d.count() % 1000000000)};
    // A 32-bit ABI built with a 64-bit time_t (armhf, docs/porting.md) needs the time64 call:
    // the classic one reads a 32-bit timespec.
#if defined(SYS_futex_time64)
    constexpr long kFutexWait = sizeof(ts.tv_sec) > sizeof(long) ? SYS_futex_time64 : SYS_futex;
#else
    constexpr long kFutexWait = SYS_futex;
#endif
    // Returns at once if seq_ changed since `seen` (EAGAIN), on a wake, or after d.
    syscall(kFutexWait, reinterpret_cast<std::uint32_t*>(&seq_), FUTEX_WAIT_PRIVATE, seen, &ts,
            nullptr, 0);
#else
    std::unique_lock<std::mutex> lk(mu_);
    cv_.wait_for(lk, d, [&] { return seq_.load(std::memory_order_acquire) != seen; });
#endif
  }
  void wake() noexcept {
    seq_.fetch_add(1, std::memory_order_release);
#if defined(__linux__)
    syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&seq_), FUTEX_WAKE_PRIVATE, 1, nullptr,
            nullptr, 0);
#else
    std::lock_guard<std::mutex> g(mu_);
    cv_.notify_one();
#endif
  }

 private:
  static_assert(sizeof(std::atomic<std::uint32_t>) == sizeof(std::uint32_t),
                "the futex word must be a plain 32-bit integer");
  std::atomic<std::uint32_t> seq_{0};
#if !defined(__linux__)
  std::mutex mu_;
  std::condition_variable cv_;
#endif
};

// A call() waiting for the pipeline thread; lives on the caller's stack.
struct Request {
  const std::function<void(Pipeline&)>* fn = nullptr;
  enum class State { queued, running, done } state = State::queued;
  std::string error;  // fn threw
  Request* next = nullptr;
};

bool crossed_power_of_two(std::uint64_t before, std::uint64_t now) {
  // True when some power of two p satisfies before < p <= now (1 is the first drop).
  if (now <= before) return false;
  std::uint64_t p = 1;
  while (p <= before && p < (1ull << 63)) p <<= 1;
  return p <= now;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Impl
// ---------------------------------------------------------------------------------------------

struct PipelineThread::Impl {
  std::unique_ptr<Pipeline> pipeline;
  PipelineThreadOptions opt;
  std::size_t cap = 0, max_ch = 0, nslots = 0, slot_bytes = 0;
  std::uint64_t wake_depth = 1, wake_slots = 1;
  std::vector<Entry> entries;
  std::vector<double> values;     // cap * max_ch
  std::vector<char> blob_bytes;   // nslots * slot_bytes (zeroed: pages committed up front)
  std::vector<std::uint32_t> stream_channels;  // per stream: numeric channel count, 0 for blob
  std::vector<bool> stream_is_blob;

  // Producer side (written by the producer only; head/blob_head read by the consumer).
  struct alignas(64) Producer {
    std::atomic<std::uint64_t> head{0};
    std::atomic<std::uint64_t> blob_head{0};
    std::uint64_t tail_cache = 0, blob_tail_cache = 0;
  } prod;
  // Consumer side (written by whoever consumes: the thread, or the owner while it is stopped).
  struct alignas(64) Consumer {
    std::atomic<std::uint64_t> tail{0};
    std::atomic<std::uint64_t> blob_tail{0};
  } cons;
  alignas(64) std::atomic<bool> sleeping{false};
  std::atomic<bool> stop_flag{false};
  std::atomic<bool> requests_pending{false};
  std::atomic<bool> released{false};
  std::atomic<bool> running_flag{false};
  Waiter waiter;

  // Thread, requests, consumer role. `mu` guards running/worker_done/requests and serializes
  // consumers other than the running thread.
  std::mutex life_mu;  // start/stop/release
  std::mutex mu;
  std::condition_variable cv;
  bool running = false;      // a thread was started and not yet joined
  bool worker_done = false;  // the thread left its loop: consumers take `mu`
  Request* req_head = nullptr;
  Request* req_tail = nullptr;
  std::thread thread;
  std::atomic<std::thread::id> worker_id{};

  // Metrics (in the pipeline's registry) and plain totals.
  Counter* m_drop_full = nullptr;
  Counter* m_drop_large = nullptr;
  Counter* m_processed = nullptr;
  Counter* m_wakeups = nullptr;
  Gauge* m_high_water = nullptr;
  Gauge* m_running = nullptr;
  // Own totals too: stats() stays valid after release() hands the registry away.
  std::atomic<std::uint64_t> high_water{0};
  std::atomic<std::uint64_t> n_drop_full{0}, n_drop_large{0}, n_wakeups{0};
  std::uint64_t logged_full = 0, logged_large = 0;  // consumer-side: drop totals already logged

  // ---- producer ------------------------------------------------------------------------------

  // Index of a free entry, or nullopt-like UINT64_MAX.
  std::uint64_t reserve_entry() noexcept {
    const std::uint64_t h = prod.head.load(std::memory_order_relaxed);
    if (h - prod.tail_cache >= cap) {
      prod.tail_cache = cons.tail.load(std::memory_order_acquire);
      if (h - prod.tail_cache >= cap) return std::numeric_limits<std::uint64_t>::max();
    }
    return h;
  }
  bool reserve_slot() noexcept {
    const std::uint64_t h = prod.blob_head.load(std::memory_order_relaxed);
    if (h - prod.blob_tail_cache >= nslots) {
      prod.blob_tail_cache = cons.blob_tail.load(std::memory_order_acquire);
      if (h - prod.blob_tail_cache >= nslots) return false;
    }
    return true;
  }
  void publish(std::uint64_t h) noexcept {
    // Dekker with the thread's sleep_idle(): it sets `sleeping` then re-checks the queue; we
    // publish then check `sleeping`. Both sides use seq_cst operations (not fences, which TSan
    // does not model), so one of the two sees the other; a missed wake costs at most idle_wait.
    prod.head.store(h + 1, std::memory_order_seq_cst);
    if (!sleeping.load(std::memory_order_seq_cst)) return;
    const std::uint64_t depth = h + 1 - prod.tail_cache;
    const std::uint64_t slots = prod.blob_head.load(std::memory_order_relaxed) - prod.blob_tail_cache;
    if (depth >= wake_depth || (nslots && slots >= wake_slots)) wake();
  }
  void wake() noexcept {
    if (sleeping.exchange(false, std::memory_order_acq_rel)) waiter.wake();
  }
  void drop_full() noexcept {
    n_drop_full.fetch_add(1, std::memory_order_relaxed);
    m_drop_full->inc();
  }
  void drop_large() noexcept {
    n_drop_large.fetch_add(1, std::memory_order_relaxed);
    m_drop_large->inc();
  }

  // ---- consumer ------------------------------------------------------------------------------

  bool queue_empty() const noexcept {
    return cons.tail.load(std::memory_order_relaxed) == prod.head.load(std::memory_order_acquire);
  }

  // Hands every visible entry to the pipeline, in order. Returns how many.
  std::size_t drain_queue() noexcept {
    std::uint64_t t = cons.tail.load(std::memory_order_relaxed);
    const std::uint64_t h = prod.head.load(std::memory_order_acquire);
    if (t == h) return 0;
    const std::uint64_t depth = h - t;
    if (depth > high_water.load(std::memory_order_relaxed)) {
      high_water.store(depth, std::memory_order_relaxed);
      m_high_water->set(static_cast<double>(depth));
    }
    Pipeline& p = *pipeline;
    std::uint64_t bt = cons.blob_tail.load(std::memory_order_relaxed);
    for (; t != h; ++t) {
      const std::size_t i = static_cast<std::size_t>(t % cap);
      const Entry& e = entries[i];
      switch (e.kind) {
        case Kind::row:
          p.push(StreamHandle{e.index}, e.t, values.data() + i * max_ch, e.n);
          break;
        case Kind::blob:
          if (e.has_slot) {
            const char* b = blob_bytes.data() + static_cast<std::size_t>(bt % nslots) * slot_bytes;
            p.push_blob(StreamHandle{e.index}, e.t,
                        std::string_view(b, static_cast<std::size_t>(e.blob_size)));
            ++bt;
            cons.blob_tail.store(bt, std::memory_order_release);
          } else {
            p.push_blob(StreamHandle{e.index}, e.t, std::string_view());
          }
          break;
        case Kind::fire:
          try {
            (void)p.capture().fire(TriggerHandle{e.index}, e.t);  // a bad handle is counted
          } catch (...) {  // out of memory building the error message: nothing to report to
          }
          break;
        case Kind::tick:
          p.tick(e.t);
          break;
      }
      cons.tail.store(t + 1, std::memory_order_release);
    }
    m_processed->inc(depth);
    return static_cast<std::size_t>(depth);
  }

  // Logs drops at the first one and at each power of two (on the consuming thread: the log
  // sink is called where the pipeline is driven, and the producer must not allocate).
  void report_drops() {
    auto report = [&](const std::atomic<std::uint64_t>& c, std::uint64_t& logged, const char* what) {
      const std::uint64_t now = c.load(std::memory_order_relaxed);
      if (!crossed_power_of_two(logged, now)) {
        logged = std::max(logged, now);
        return;
      }
      logged = now;
      log(pipeline->port(), LogLevel::warning, kComponent,
          std::to_string(now) + " samples dropped so far (" + what + ")");
    };
    report(n_drop_full, logged_full, "queue_full: the pipeline thread is behind; raise queue_capacity/blob_slots");
    report(n_drop_large, logged_large, "blob_too_large: a blob exceeds blob_slot_bytes");
  }

  // Runs fn and records a throw as an error.
  void run_request(Request& r) {
    try {
      (*r.fn)(*pipeline);
    } catch (const std::exception& e) {
      r.error = std::string("call threw: ") + e.what();
    } catch (...) {
      r.error = "call threw a non-standard exception";
    }
  }

  // The thread's share of the requests: one at a time, `mu` released while fn runs.
  void serve_requests() {
    for (;;) {
      Request* r = nullptr;
      {
        std::lock_guard<std::mutex> g(mu);
        r = req_head;
        if (!r) {
          requests_pending.store(false, std::memory_order_relaxed);
          return;
        }
        req_head = r->next;
        if (!req_head) req_tail = nullptr;
        r->state = Request::State::running;
      }
      drain_queue();  // the caller's earlier pushes come first
      run_request(*r);
      {
        std::lock_guard<std::mutex> g(mu);
        r->state = Request::State::done;  // r may be gone once mu is released
      }
      cv.notify_all();
    }
  }

  // With `mu` held: consume everything and serve every queued request on this thread.
  void consume_locked() {
    drain_queue();
    while (Request* r = req_head) {
      req_head = r->next;
      r->state = Request::State::running;
      drain_queue();
      run_request(*r);
      r->state = Request::State::done;
    }
    req_tail = nullptr;
    requests_pending.store(false, std::memory_order_relaxed);
    report_drops();
  }

  bool has_work() const noexcept {
    return !queue_empty() || stop_flag.load(std::memory_order_relaxed) ||
           requests_pending.load(std::memory_order_relaxed);
  }

  void sleep_idle() {
    const std::uint32_t seen = waiter.prepare();
    sleeping.store(true, std::memory_order_seq_cst);
    if (cons.tail.load(std::memory_order_relaxed) != prod.head.load(std::memory_order_seq_cst) ||
        stop_flag.load(std::memory_order_seq_cst) ||
        requests_pending.load(std::memory_order_seq_cst)) {
      sleeping.store(false, std::memory_order_relaxed);
      return;
    }
    waiter.wait(seen, opt.idle_wait);
    sleeping.store(false, std::memory_order_relaxed);
  }

  void setup_thread() {
#if defined(__linux__)
    if (!opt.thread_name.empty()) pthread_setname_np(pthread_self(), opt.thread_name.c_str());
    if (opt.nice) {
      const auto tid = static_cast<id_t>(syscall(SYS_gettid));
      if (setpriority(PRIO_PROCESS, tid, *opt.nice) != 0) {
        const int err = errno;
        log(pipeline->port(), LogLevel::warning, kComponent,
            "could not set the pipeline thread's niceness to " + std::to_string(*opt.nice) +
                ": " + std::strerror(err));
      }
    }
#endif
    if (opt.on_thread_start) {
      try {
        opt.on_thread_start();
      } catch (const std::exception& e) {
        log(pipeline->port(), LogLevel::error, kComponent,
            std::string("on_thread_start threw: ") + e.what());
      } catch (...) {
        log(pipeline->port(), LogLevel::error, kComponent, "on_thread_start threw");
      }
    }
  }

  void run() noexcept {
    worker_id.store(std::this_thread::get_id(), std::memory_order_relaxed);
    try {
      setup_thread();
      log(pipeline->port(), LogLevel::info, kComponent, "pipeline thread started");
    } catch (...) {  // a log line that could not be built
    }
    Pipeline& p = *pipeline;
    std::uint64_t failures = 0;
    for (;;) {
      m_wakeups->inc();
      n_wakeups.fetch_add(1, std::memory_order_relaxed);
      try {
        drain_queue();
        if (requests_pending.load(std::memory_order_acquire)) serve_requests();
        report_drops();
        if (stop_flag.load(std::memory_order_acquire)) break;
        const bool busy = p.poll();
        if (has_work()) continue;
        // A request on the network: wait for its I/O (bounded slice; the host cannot wake a
        // wait inside the io_context, so keep it short). Otherwise (idle, paused, waiting for a
        // batch's age, a backoff or a timer) sleep until woken or idle_wait.
        if (busy && p.has_uploader() && !p.uploader().idle()) {
          p.run_for(std::min<std::chrono::microseconds>(
              std::chrono::milliseconds(2),
              std::chrono::duration_cast<std::chrono::microseconds>(opt.idle_wait)));
        } else {
          sleep_idle();
        }
      } catch (const std::exception& e) {
        // Out of memory in the pipeline's work: never let it end the process. Logged at the
        // first failure and each power of two; the loop goes on after a pause.
        ++failures;
        if ((failures & (failures - 1)) == 0) {
          try {
            log(p.port(), LogLevel::error, kComponent,
                std::string("pipeline work failed (") + std::to_string(failures) +
                    " so far): " + e.what());
          } catch (...) {
          }
        }
        sleep_idle();
      }
    }
    std::unique_lock<std::mutex> lk(mu);
    try {
      consume_locked();  // entries and calls that raced with stop
    } catch (...) {
    }
    worker_done = true;
    lk.unlock();
    cv.notify_all();
    try {
      log(pipeline->port(), LogLevel::info, kComponent, "pipeline thread stopped");
    } catch (...) {
    }
  }

  bool on_worker() const noexcept {
    return running_flag.load(std::memory_order_relaxed) &&
           worker_id.load(std::memory_order_relaxed) == std::this_thread::get_id();
  }
};

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
  m.cap = m.opt.queue_capacity;
  m.nslots = m.opt.blob_slots;
  m.slot_bytes = m.opt.blob_slot_bytes;
  if (m.slot_bytes == 0 || m.nslots == 0) {  // no blob storage: every blob is too large
    m.nslots = 0;
    m.slot_bytes = 0;
  }
  for (const auto& s : m.pipeline->capture().streams()) {
    const bool blob = s.kind == StreamKind::blob;
    m.stream_is_blob.push_back(blob);
    m.stream_channels.push_back(blob ? 0 : static_cast<std::uint32_t>(s.channels.size()));
    if (!blob) m.max_ch = std::max(m.max_ch, s.channels.size());
  }
  m.wake_depth = std::max<std::uint64_t>(1, m.cap / 4);
  m.wake_slots = std::max<std::uint64_t>(1, m.nslots / 2);
  try {
    m.entries.resize(m.cap);
    m.values.assign(m.cap * m.max_ch, 0.0);
    m.blob_bytes.assign(m.nslots * m.slot_bytes, '\0');
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
  const std::uint64_t h = m.reserve_entry();
  if (h == std::numeric_limits<std::uint64_t>::max()) {
    m.drop_full();
    return false;
  }
  const std::size_t i = static_cast<std::size_t>(h % m.cap);
  std::size_t k = 0;
  if (stream.index < m.stream_channels.size()) {
    k = std::min<std::size_t>(n, m.stream_channels[stream.index]);
  }
  if (k && values) std::memcpy(m.values.data() + i * m.max_ch, values, k * sizeof(double));
  Entry& e = m.entries[i];
  e.kind = Kind::row;
  e.index = stream.index;
  e.t = t;
  e.n = static_cast<std::uint32_t>(values ? k : 0);
  e.blob_size = 0;
  e.has_slot = false;
  m.publish(h);
  return true;
}

bool PipelineThread::push_blob(StreamHandle stream, double t, std::string_view bytes) noexcept {
  Impl& m = *impl_;
  if (m.released.load(std::memory_order_relaxed)) return false;
  // A blob to a numeric stream or a bad handle is queued without its bytes: Capture counts it
  // as "invalid" either way.
  const bool keep = stream.index < m.stream_is_blob.size() && m.stream_is_blob[stream.index] &&
                    !bytes.empty();
  if (keep && bytes.size() > m.slot_bytes) {
    m.drop_large();
    return false;
  }
  const std::uint64_t h = m.reserve_entry();
  if (h == std::numeric_limits<std::uint64_t>::max() || (keep && !m.reserve_slot())) {
    m.drop_full();
    return false;
  }
  Entry& e = m.entries[static_cast<std::size_t>(h % m.cap)];
  e.kind = Kind::blob;
  e.index = stream.index;
  e.t = t;
  e.n = 0;
  e.has_slot = keep;
  e.blob_size = keep ? bytes.size() : 0;
  if (keep) {
    const std::uint64_t bh = m.prod.blob_head.load(std::memory_order_relaxed);
    std::memcpy(m.blob_bytes.data() + static_cast<std::size_t>(bh % m.nslots) * m.slot_bytes,
                bytes.data(), bytes.size());
    m.prod.blob_head.store(bh + 1, std::memory_order_relaxed);  // published with head below
  }
  m.publish(h);
  return true;
}

// A fire or a tick: an entry without payload (queue-full drops as a push does).
static bool queue_marker(PipelineThread::Impl& m, Kind kind, std::uint32_t index, double t) noexcept {
  if (m.released.load(std::memory_order_relaxed)) return false;
  const std::uint64_t h = m.reserve_entry();
  if (h == std::numeric_limits<std::uint64_t>::max()) {
    m.drop_full();
    return false;
  }
  Entry& e = m.entries[static_cast<std::size_t>(h % m.cap)];
  e = Entry{};
  e.kind = kind;
  e.index = index;
  e.t = t;
  m.publish(h);
  return true;
}

bool PipelineThread::fire(TriggerHandle trigger, double t) noexcept {
  return queue_marker(*impl_, Kind::fire, trigger.index, t);
}

bool PipelineThread::tick(double t) noexcept { return queue_marker(*impl_, Kind::tick, 0, t); }

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
  s.queued = m.prod.head.load(std::memory_order_relaxed);
  s.processed = m.cons.tail.load(std::memory_order_relaxed);
  s.dropped_queue_full = m.n_drop_full.load(std::memory_order_relaxed);
  s.dropped_blob_too_large = m.n_drop_large.load(std::memory_order_relaxed);
  s.queue_high_water = m.high_water.load(std::memory_order_relaxed);
  s.wakeups = m.n_wakeups.load(std::memory_order_relaxed);
  s.running = m.running_flag.load(std::memory_order_relaxed);
  return s;
}

MetricsRegistry& PipelineThread::metrics() noexcept { return impl_->pipeline->metrics(); }
Pipeline& PipelineThread::pipeline() noexcept { return *impl_->pipeline; }
const PipelineThreadOptions& PipelineThread::options() const noexcept { return impl_->opt; }

}  // namespace fleetpipe
