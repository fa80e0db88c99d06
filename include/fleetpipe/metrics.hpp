// fleetpipe/metrics.hpp — counters, gauges and histograms with labels.
//
// Registration (once, at construction of a component) takes a lock and allocates; it returns a
// reference that stays valid for the registry's lifetime. Updating a metric through that
// reference is lock-free and allocation-free, safe from any thread and from hot paths.
// Export: Prometheus text exposition format (version 0.0.4) and JSON.
//
// Naming: `fleetpipe_<component>_<what>[_total|_bytes|_seconds]`, labels lower_snake_case.
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace fleetpipe {

/// Label pairs; order is kept as given, (name, value).
using Labels = std::vector<std::pair<std::string, std::string>>;

/// Monotonically increasing count.
class Counter {
 public:
  void inc(std::uint64_t n = 1) noexcept { v_.fetch_add(n, std::memory_order_relaxed); }
  std::uint64_t value() const noexcept { return v_.load(std::memory_order_relaxed); }

 private:
  std::atomic<std::uint64_t> v_{0};
};

/// A value that goes up and down.
class Gauge {
 public:
  void set(double v) noexcept { v_.store(v, std::memory_order_relaxed); }
  void add(double d) noexcept {
    double cur = v_.load(std::memory_order_relaxed);
    while (!v_.compare_exchange_weak(cur, cur + d, std::memory_order_relaxed)) {
    }
  }
  double value() const noexcept { return v_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> v_{0.0};
};

/// Distribution over fixed upper bounds (Prometheus "le" buckets, +Inf implicit).
class Histogram {
 public:
  explicit Histogram(std::vector<double> upper_bounds);
  void observe(double v) noexcept;
  const std::vector<double>& upper_bounds() const noexcept { return bounds_; }
  /// Non-cumulative count of bucket i (i == upper_bounds().size() is the +Inf bucket).
  std::uint64_t bucket_count(std::size_t i) const noexcept {
    return buckets_[i].load(std::memory_order_relaxed);
  }
  std::uint64_t count() const noexcept { return count_.load(std::memory_order_relaxed); }
  double sum() const noexcept { return sum_.load(std::memory_order_relaxed); }

 private:
  std::vector<double> bounds_;
  std::unique_ptr<std::atomic<std::uint64_t>[]> buckets_;
  std::atomic<std::uint64_t> count_{0};
  std::atomic<double> sum_{0.0};
};

enum class MetricType { counter, gauge, histogram };

/// Owns every metric of one pipeline (or of the process). Not copyable.
class MetricsRegistry {
 public:
  MetricsRegistry() = default;
  MetricsRegistry(const MetricsRegistry&) = delete;
  MetricsRegistry& operator=(const MetricsRegistry&) = delete;

  /// Finds or creates the series `name{labels}`. `help` is kept from the first registration.
  /// A name already registered with another type (a programming error) yields a detached metric
  /// that is not exported, and `fleetpipe_metrics_registration_errors_total` counts it.
  Counter& counter(std::string_view name, std::string_view help, const Labels& labels = {});
  Gauge& gauge(std::string_view name, std::string_view help, const Labels& labels = {});
  /// `upper_bounds` must be increasing; it is fixed by the first registration of `name`.
  Histogram& histogram(std::string_view name, std::string_view help,
                       const std::vector<double>& upper_bounds, const Labels& labels = {});

  /// Current value of a counter or gauge series, or nullopt-like -1 when absent (for tests and
  /// status reports; takes the registration lock).
  double value(std::string_view name, const Labels& labels = {}) const;
  /// Sum of a counter or gauge over all its series (e.g. all reasons); 0 when absent.
  double sum(std::string_view name) const;

  /// Prometheus text exposition format 0.0.4: HELP/TYPE lines, escaped label values, histogram
  /// _bucket/_sum/_count series. Families sorted by name, series in registration order.
  std::string to_prometheus() const;
  /// {"name": {"type": "counter", "help": "...", "series": [{"labels": {...}, "value": 3}]}}
  /// Histogram series carry {"buckets": [{"le": 0.1, "count": n}, ...], "count": n, "sum": x}
  /// (cumulative counts, last "le" is "+Inf").
  std::string to_json() const;

 private:
  struct Series {
    Labels labels;
    std::unique_ptr<Counter> counter;
    std::unique_ptr<Gauge> gauge;
    std::unique_ptr<Histogram> histogram;
  };
  struct Family {
    MetricType type;
    std::string help;
    std::vector<double> bounds;
    std::deque<Series> series;
  };
  Series* find_or_add(std::string_view name, std::string_view help, MetricType type,
                      const Labels& labels, const std::vector<double>* bounds);

  mutable std::mutex mu_;
  std::map<std::string, Family, std::less<>> families_;
  std::deque<Series> detached_;
};

}  // namespace fleetpipe
