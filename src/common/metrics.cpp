// Metrics: the registry (counters, gauges, histograms; lock-free updates) and its exports.
#include "fleetpipe/metrics.hpp"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <sstream>

#include <nlohmann/json.hpp>

namespace fleetpipe {
namespace {

void atomic_add(std::atomic<double>& a, double d) noexcept {
  double cur = a.load(std::memory_order_relaxed);
  while (!a.compare_exchange_weak(cur, cur + d, std::memory_order_relaxed)) {
  }
}

const char* type_name(MetricType t) {
  switch (t) {
    case MetricType::counter: return "counter";
    case MetricType::gauge: return "gauge";
    case MetricType::histogram: return "histogram";
  }
  return "untyped";
}

std::string escape_label_value(const std::string& v) {
  std::string out;
  out.reserve(v.size());
  for (char c : v) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

std::string escape_help(const std::string& v) {
  std::string out;
  for (char c : v) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

std::string format_value(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  if (v == std::floor(v) && std::fabs(v) < 1e15) {
    return std::to_string(static_cast<long long>(v));
  }
  // Shortest form that reads back exactly (what a person expects to see: 1.0055, not 1.00550...1).
  for (int precision = 15; precision <= 17; ++precision) {
    std::ostringstream os;
    os.precision(precision);
    os << v;
    if (std::strtod(os.str().c_str(), nullptr) == v || precision == 17) return os.str();
  }
  return {};
}

std::string label_block(const Labels& labels, const std::string& extra_name = {},
                        const std::string& extra_value = {}) {
  if (labels.empty() && extra_name.empty()) return {};
  std::string out = "{";
  bool first = true;
  for (const auto& [k, v] : labels) {
    if (!first) out += ",";
    first = false;
    out += k + "=\"" + escape_label_value(v) + "\"";
  }
  if (!extra_name.empty()) {
    if (!first) out += ",";
    out += extra_name + "=\"" + extra_value + "\"";
  }
  out += "}";
  return out;
}

}  // namespace

Histogram::Histogram(std::vector<double> upper_bounds)
    : bounds_(std::move(upper_bounds)),
      buckets_(new std::atomic<std::uint64_t>[bounds_.size() + 1]) {
  std::sort(bounds_.begin(), bounds_.end());
  for (std::size_t i = 0; i <= bounds_.size(); ++i) buckets_[i].store(0);
}

void Histogram::observe(double v) noexcept {
  // Bounds are few (typically <= 16): a linear scan beats a binary search here.
  std::size_t i = 0;
  while (i < bounds_.size() && v > bounds_[i]) ++i;
  buckets_[i].fetch_add(1, std::memory_order_relaxed);
  count_.fetch_add(1, std::memory_order_relaxed);
  atomic_add(sum_, v);
}

MetricsRegistry::Series* MetricsRegistry::find_or_add(std::string_view name,
                                                      std::string_view help, MetricType type,
                                                      const Labels& labels,
                                                      const std::vector<double>* bounds) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = families_.find(name);
  if (it == families_.end()) {
    Family f;
    f.type = type;
    f.help = std::string(help);
    if (bounds) f.bounds = *bounds;
    it = families_.emplace(std::string(name), std::move(f)).first;
  }
  Family& fam = it->second;
  if (fam.type != type) {
    // Programming error: keep the process alive, hand out a metric nobody exports, count it.
    auto& errs = families_["fleetpipe_metrics_registration_errors_total"];
    if (errs.series.empty()) {
      errs.type = MetricType::counter;
      errs.help = "Metric registrations rejected for a type mismatch";
      errs.series.emplace_back();
      errs.series.back().counter = std::make_unique<Counter>();
    }
    if (errs.type == MetricType::counter) errs.series.front().counter->inc();
    detached_.emplace_back();
    Series& s = detached_.back();
    s.counter = std::make_unique<Counter>();
    s.gauge = std::make_unique<Gauge>();
    s.histogram = std::make_unique<Histogram>(bounds ? *bounds : std::vector<double>{});
    return &s;
  }
  for (auto& s : fam.series) {
    if (s.labels == labels) return &s;
  }
  fam.series.emplace_back();
  Series& s = fam.series.back();
  s.labels = labels;
  switch (type) {
    case MetricType::counter: s.counter = std::make_unique<Counter>(); break;
    case MetricType::gauge: s.gauge = std::make_unique<Gauge>(); break;
    case MetricType::histogram: s.histogram = std::make_unique<Histogram>(fam.bounds); break;
  }
  return &s;
}

Counter& MetricsRegistry::counter(std::string_view name, std::string_view help,
                                  const Labels& labels) {
  return *find_or_add(name, help, MetricType::counter, labels, nullptr)->counter;
}

Gauge& MetricsRegistry::gauge(std::string_view name, std::string_view help,
                              const Labels& labels) {
  return *find_or_add(name, help, MetricType::gauge, labels, nullptr)->gauge;
}

Histogram& MetricsRegistry::histogram(std::string_view name, std::string_view help,
                                      const std::vector<double>& upper_bounds,
                                      const Labels& labels) {
  return *find_or_add(name, help, MetricType::histogram, labels, &upper_bounds)->histogram;
}

double MetricsRegistry::value(std::string_view name, const Labels& labels) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = families_.find(name);
  if (it == families_.end()) return -1;
  for (const auto& s : it->second.series) {
    if (s.labels != labels) continue;
    if (s.counter) return static_cast<double>(s.counter->value());
    if (s.gauge) return s.gauge->value();
    if (s.histogram) return static_cast<double>(s.histogram->count());
  }
  return -1;
}

double MetricsRegistry::sum(std::string_view name) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = families_.find(name);
  if (it == families_.end()) return 0;
  double total = 0;
  for (const auto& s : it->second.series) {
    if (s.counter) total += static_cast<double>(s.counter->value());
    if (s.gauge) total += s.gauge->value();
    if (s.histogram) total += static_cast<double>(s.histogram->count());
  }
  return total;
}

std::string MetricsRegistry::to_prometheus() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::string out;
  for (const auto& [name, fam] : families_) {
    out += "# HELP " + name + " " + escape_help(fam.help) + "\n";
    out += "# TYPE " + name + " " + type_name(fam.type) + "\n";
    for (const auto& s : fam.series) {
      if (s.counter) {
        out += name + label_block(s.labels) + " " + std::to_string(s.counter->value()) + "\n";
      } else if (s.gauge) {
        out += name + label_block(s.labels) + " " + format_value(s.gauge->value()) + "\n";
      } else if (s.histogram) {
        const Histogram& h = *s.histogram;
        std::uint64_t cumulative = 0;
        for (std::size_t i = 0; i <= h.upper_bounds().size(); ++i) {
          cumulative += h.bucket_count(i);
          std::string le =
              i < h.upper_bounds().size() ? format_value(h.upper_bounds()[i]) : "+Inf";
          out += name + "_bucket" + label_block(s.labels, "le", le) + " " +
                 std::to_string(cumulative) + "\n";
        }
        out += name + "_sum" + label_block(s.labels) + " " + format_value(h.sum()) + "\n";
        out += name + "_count" + label_block(s.labels) + " " + std::to_string(h.count()) + "\n";
      }
    }
  }
  return out;
}

std::string MetricsRegistry::to_json() const {
  std::lock_guard<std::mutex> lock(mu_);
  nlohmann::json root = nlohmann::json::object();
  for (const auto& [name, fam] : families_) {
    nlohmann::json f;
    f["type"] = type_name(fam.type);
    f["help"] = fam.help;
    f["series"] = nlohmann::json::array();
    for (const auto& s : fam.series) {
      nlohmann::json js;
      js["labels"] = nlohmann::json::object();
      for (const auto& [k, v] : s.labels) js["labels"][k] = v;
      if (s.counter) js["value"] = s.counter->value();
      if (s.gauge) js["value"] = s.gauge->value();
      if (s.histogram) {
        const Histogram& h = *s.histogram;
        nlohmann::json buckets = nlohmann::json::array();
        std::uint64_t cumulative = 0;
        for (std::size_t i = 0; i <= h.upper_bounds().size(); ++i) {
          cumulative += h.bucket_count(i);
          nlohmann::json b;
          if (i < h.upper_bounds().size()) {
            b["le"] = h.upper_bounds()[i];
          } else {
            b["le"] = "+Inf";
          }
          b["count"] = cumulative;
          buckets.push_back(b);
        }
        js["buckets"] = buckets;
        js["count"] = h.count();
        js["sum"] = h.sum();
      }
      f["series"].push_back(js);
    }
    root[name] = f;
  }
  return root.dump();
}

}  // namespace fleetpipe
