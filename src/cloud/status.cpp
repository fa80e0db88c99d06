// Device status: the newest heartbeats of each device, read from {prefix}/_heartbeat/.
//
// Cost: the flat listing of heartbeat_keys.hpp (one LIST per 1,000 keys of short histories, at
// most one per device and one more for long ones) and one GET of the newest heartbeat per device.
// A /2 heartbeat carries the device's trailing-day deltas ("day"), which serve the default 1-day
// window; other windows (and /1 heartbeats) also GET the window's first heartbeat, or with a
// single heartbeat in the window the one before it.
#include <algorithm>
#include <array>
#include <chrono>
#include <optional>
#include <tuple>

#include <nlohmann/json.hpp>

#include "cloud/heartbeat_doc.hpp"
#include "cloud/heartbeat_keys.hpp"
#include "cloud/reader_impl.hpp"
#include "common/utc_time.hpp"
#include "s3/bucket_layout.hpp"

namespace fleetpipe {

namespace {

using json = nlohmann::json;

WallTime from_ns(std::int64_t ns) {
  return WallTime(std::chrono::duration_cast<WallTime::duration>(std::chrono::nanoseconds(ns)));
}

const json* at(const json& j, std::initializer_list<const char*> pointers) {
  for (const char* p : pointers) {
    try {
      const json& v = j.at(json::json_pointer(p));
      if (!v.is_null()) return &v;
    } catch (const json::exception&) {
    }
  }
  return nullptr;
}

double number(const json& j, std::initializer_list<const char*> pointers, double dflt = 0) {
  const json* v = at(j, pointers);
  if (v && v->is_number()) return v->get<double>();
  return dflt;
}

std::string text(const json& j, std::initializer_list<const char*> pointers) {
  const json* v = at(j, pointers);
  if (v && v->is_string()) return v->get<std::string>();
  return {};
}

/// Sum over all series of a metric in a MetricsRegistry::to_json() document; nullopt if absent.
std::optional<double> metric_sum(const json& metrics, const char* name) {
  if (!metrics.is_object()) return std::nullopt;
  auto it = metrics.find(name);
  if (it == metrics.end() || !it->is_object()) return std::nullopt;
  double sum = 0;
  auto series = it->find("series");
  if (series == it->end() || !series->is_array()) return std::nullopt;
  for (const auto& s : *series) {
    auto v = s.find("value");
    if (v != s.end() && v->is_number()) sum += v->get<double>();
  }
  return sum;
}

struct Heartbeat {
  WallTime time{};
  double backlog_records = 0, backlog_bytes = 0, evicted = 0, bytes_sent = 0, uptime_s = 0;
  std::string sdk, network, last_error;
  /// The device's trailing-day deltas (/2 "day": seconds covered, bytes sent, evictions).
  std::optional<std::array<double, 3>> day;
};

constexpr double kDaySeconds = 86400;

Heartbeat read_heartbeat(const json& stored, WallTime key_t) {
  const json doc = detail::heartbeat_as_v1(stored);
  Heartbeat h;
  h.time = key_t;
  const json* t = at(doc, {"/time"});
  if (t && t->is_string()) {
    if (auto pt = parse_query_time(t->get<std::string>())) h.time = *pt;
  } else if (const json* tn = at(doc, {"/time_unix_ns", "/time_ns"}); tn && tn->is_number()) {
    h.time = from_ns(tn->get<std::int64_t>());
  }
  const json* metrics = at(doc, {"/metrics"});
  json empty = json::object();
  const json& m = metrics ? *metrics : empty;
  h.backlog_records = number(doc, {"/backlog/records"},
                             metric_sum(m, "fleetpipe_buffer_records").value_or(0));
  h.backlog_bytes = number(doc, {"/backlog/bytes"},
                           metric_sum(m, "fleetpipe_buffer_bytes").value_or(0));
  h.evicted = number(doc, {"/buffer/evicted_total"},
                     metric_sum(m, "fleetpipe_buffer_evicted_total").value_or(0));
  h.bytes_sent = number(doc, {"/uploads/bytes_sent", "/uploader/bytes_sent"},
                        metric_sum(m, "fleetpipe_uploader_bytes_sent_total").value_or(0));
  h.uptime_s = number(doc, {"/uptime_s"});
  h.sdk = text(doc, {"/sdk_version"});
  h.network = text(doc, {"/network"});
  h.last_error = text(doc, {"/last_error"});
  if (const json* day = at(doc, {"/day"}); day && day->is_array() && day->size() == 3 &&
                                            (*day)[0].is_number() && (*day)[1].is_number() &&
                                            (*day)[2].is_number()) {
    h.day = {(*day)[0].get<double>(), (*day)[1].get<double>(), (*day)[2].get<double>()};
  }
  return h;
}

}  // namespace

Result<std::vector<DeviceStatus>> BucketReader::status(const StatusQuery& q) {
  const WallTime now = q.now ? *q.now : impl_->port.clock->wall();
  const auto window_start =
      now - std::chrono::duration_cast<WallTime::duration>(std::chrono::duration<double>(q.window_s));
  // The baseline matters to a device with one heartbeat in the window (its rate), and with none
  // it is the newest heartbeat.
  auto listed = detail::list_heartbeat_keys(*impl_, q.device_glob, window_start,
                                            [](std::size_t in_window) { return in_window <= 1; });
  if (!listed) return std::move(listed).error();
  std::vector<DeviceStatus> out;
  for (auto& dk : *listed) {
    std::vector<std::pair<WallTime, std::string>> beats;
    for (auto& k : dk.keys) beats.emplace_back(k.time, std::move(k.key));
    const std::string device = std::move(dk.device);
    DeviceStatus d;
    d.device = device;
    auto first_in_window = beats.begin() + static_cast<std::ptrdiff_t>(dk.first_in_window);
    const auto in_window = std::distance(first_in_window, beats.end());
    d.heartbeats = static_cast<std::size_t>(in_window);
    // A single heartbeat in the window is compared with the one before it, if any.
    auto baseline = first_in_window;
    if (in_window == 1 && first_in_window != beats.begin()) --baseline;
    const auto& newest = beats.back();
    auto body = impl_->get(newest.second, 0, 0);
    if (!body) return std::move(body).error();
    json doc = json::parse(*body, nullptr, false);
    if (doc.is_discarded() || !doc.is_object()) doc = json::object();
    Heartbeat last = read_heartbeat(doc, newest.first);
    d.heartbeat_json = *body;
    d.last_key = newest.second;
    d.last_seen = last.time;
    d.seconds_since_last = std::chrono::duration<double>(now - last.time).count();
    d.sdk_version = last.sdk;
    d.network = last.network;
    d.backlog_records = last.backlog_records;
    d.backlog_bytes = last.backlog_bytes;
    d.evicted_total = last.evicted;
    d.uploaded_bytes_total = last.bytes_sent;
    d.last_error = last.last_error;
    if (in_window > 0 && last.day && q.window_s == kDaySeconds) {
      // The device's own trailing day (hourly checkpoints: 23 to 24 hours back).
      d.evicted_in_window = (*last.day)[2];
      if ((*last.day)[0] > 0) d.upload_bytes_per_s = (*last.day)[1] / (*last.day)[0];
    } else if (in_window > 0 && baseline->second != newest.second) {
      auto fb = impl_->get(baseline->second, 0, 0);
      if (!fb) return std::move(fb).error();
      json fdoc = json::parse(*fb, nullptr, false);
      if (fdoc.is_discarded() || !fdoc.is_object()) fdoc = json::object();
      Heartbeat first = read_heartbeat(fdoc, baseline->first);
      const double dt = std::chrono::duration<double>(last.time - first.time).count();
      // A counter that went down means the device restarted: count from zero.
      const bool restarted = last.bytes_sent < first.bytes_sent || last.evicted < first.evicted;
      d.evicted_in_window = restarted ? last.evicted : last.evicted - first.evicted;
      if (restarted && last.uptime_s > 0) {
        d.upload_bytes_per_s = last.bytes_sent / last.uptime_s;
      } else if (!restarted && dt > 0) {
        d.upload_bytes_per_s = (last.bytes_sent - first.bytes_sent) / dt;
      }
    } else if (in_window > 0) {
      // The device's only heartbeat: its counters are since its start.
      d.evicted_in_window = last.evicted;
      if (last.uptime_s > 0) d.upload_bytes_per_s = last.bytes_sent / last.uptime_s;
    }
    d.silent = d.seconds_since_last > q.silent_after_s;
    d.evicting = d.evicted_in_window > 0;
    out.push_back(std::move(d));
  }
  std::sort(out.begin(), out.end(),
            [](const DeviceStatus& a, const DeviceStatus& b) { return a.device < b.device; });
  return out;
}

}  // namespace fleetpipe
