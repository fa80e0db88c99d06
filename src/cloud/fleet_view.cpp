// The fleet view: per-device window summaries from heartbeat deltas, grouped per label value.
#include "cloud/fleet_view.hpp"

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cmath>
#include <set>
#include <tuple>

#include "cloud/heartbeat_doc.hpp"
#include "cloud/heartbeat_keys.hpp"
#include "fleetpipe/metrics.hpp"
#include "s3/bucket_layout.hpp"

namespace fleetpipe {
namespace detail {
namespace {

using json = nlohmann::json;

/// The value at a JSON pointer, or nullptr when absent (or null).
const json* find(const json& doc, const char* pointer) {
  json::json_pointer p(pointer);
  if (!doc.contains(p)) return nullptr;
  const json& v = doc.at(p);
  return v.is_null() ? nullptr : &v;
}

double num_at(const json& doc, const char* pointer) {
  const json* v = find(doc, pointer);
  return v && v->is_number() ? v->get<double>() : 0.0;
}

std::string str_at(const json& doc, const char* pointer) {
  const json* v = find(doc, pointer);
  return v && v->is_string() ? v->get<std::string>() : std::string();
}

/// Numbers of a {name: number} object (other members skipped).
std::map<std::string, double> number_map(const json* obj) {
  std::map<std::string, double> out;
  if (!obj || !obj->is_object()) return out;
  for (const auto& [k, v] : obj->items()) {
    if (v.is_number()) out[k] = v.get<double>();
  }
  return out;
}

/// The series of one metric of the full metrics export, keyed by the value of `label`.
std::map<std::string, double> metric_by_label(const json& doc, const char* metric,
                                              const char* label) {
  std::map<std::string, double> out;
  const json* m = find(doc, "/metrics");
  if (!m || !m->is_object() || !m->contains(metric)) return out;
  const json& series = (*m)[metric].value("series", json::array());
  if (!series.is_array()) return out;
  for (const auto& s : series) {
    const json* v = find(s, "/value");
    const json* l = find(s, (std::string("/labels/") + label).c_str());
    if (v && v->is_number() && l && l->is_string()) out[l->get<std::string>()] += v->get<double>();
  }
  return out;
}

double metric_total(const json& doc, const char* metric) {
  double sum = 0;
  const json* m = find(doc, "/metrics");
  if (!m || !m->is_object() || !m->contains(metric)) return 0;
  const json& series = (*m)[metric].value("series", json::array());
  if (!series.is_array()) return 0;
  for (const auto& s : series) sum += num_at(s, "/value");
  return sum;
}

WallTime from_ns(std::int64_t ns) {
  return WallTime(std::chrono::duration_cast<WallTime::duration>(std::chrono::nanoseconds(ns)));
}

double seconds(WallTime::duration d) { return std::chrono::duration<double>(d).count(); }

/// The growth of a counter from `a` to `b`: `b` itself after a restart (it counts from zero).
double delta(double a, double b, bool restarted) {
  if (restarted || b < a) return b;
  return b - a;
}

void add_deltas(const std::map<std::string, double>& a, const std::map<std::string, double>& b,
                bool restarted, std::map<std::string, double>& out) {
  for (const auto& [k, v] : b) {
    auto it = a.find(k);
    out[k] += delta(it == a.end() ? 0.0 : it->second, v, restarted || it == a.end());
  }
}

bool restarted_between(const HeartbeatPoint& a, const HeartbeatPoint& b) {
  return b.uptime_s < a.uptime_s || b.bytes_sent < a.bytes_sent || b.evicted < a.evicted ||
         b.paused_s < a.paused_s;
}

}  // namespace

HeartbeatPoint read_heartbeat_point(const json& stored, WallTime key_time) {
  const json doc = heartbeat_as_v1(stored);
  HeartbeatPoint h;
  h.time = key_time;
  if (auto t = parse_query_time(str_at(doc, "/time"))) {
    h.time = *t;
  } else if (const json* ns = find(doc, "/time_unix_ns"); ns && ns->is_number_integer()) {
    h.time = from_ns(ns->get<std::int64_t>());
  }
  h.uptime_s = num_at(doc, "/uptime_s");
  h.bytes_sent = find(doc, "/uploads/bytes_sent")
                     ? num_at(doc, "/uploads/bytes_sent")
                     : metric_total(doc, "fleetpipe_uploader_bytes_sent_total");
  h.evicted = num_at(doc, "/buffer/evicted_total");
  h.rejected = num_at(doc, "/buffer/rejected_total");
  h.backlog_records = num_at(doc, "/backlog/records");
  h.backlog_bytes = num_at(doc, "/backlog/bytes");
  const json* paused = find(doc, "/uploads/paused");
  h.paused = paused && paused->is_boolean() && paused->get<bool>();
  // Paused seconds: a number (any reason) or an object by reason.
  if (const json* ps = find(doc, "/uploads/paused_seconds"); ps && ps->is_object()) {
    h.paused_s_by_reason = number_map(ps);
  } else {
    h.paused_s = num_at(doc, "/uploads/paused_seconds");
    h.paused_s_by_reason = number_map(find(doc, "/uploads/paused_seconds_by_reason"));
  }
  if (h.paused_s == 0) {
    for (const auto& [r, s] : h.paused_s_by_reason) h.paused_s += s;
  }
  h.pauses_by_reason = number_map(find(doc, "/uploads/pauses_by_reason"));
  if (h.pauses_by_reason.empty()) {
    h.pauses_by_reason = metric_by_label(doc, "fleetpipe_uploader_pauses_total", "reason");
  }
  if (const json* trig = find(doc, "/triggers"); trig && trig->is_object()) {
    for (const auto& [name, t] : trig->items()) h.fires[name] = num_at(t, "/fires");
  }
  if (const json* labels = find(doc, "/labels"); labels && labels->is_object()) {
    for (const auto& [k, v] : labels->items()) {
      if (v.is_string()) h.labels[k] = v.get<std::string>();
    }
  }
  // The campaigns in force ("campaigns": the agent's status per campaign, docs/campaigns.md):
  // "id@version" of each active one, comma-separated.
  if (const json* cs = find(doc, "/campaigns"); cs && cs->is_array()) {
    for (const json& c : *cs) {
      if (!c.is_object() || str_at(c, "/state") != "active") continue;
      const json* v = find(c, "/version");
      if (!h.campaign_version.empty()) h.campaign_version += ",";
      h.campaign_version += str_at(c, "/id") + "@" + (v && v->is_number() ? v->dump() : std::string("?"));
    }
  } else if (const json* c = find(doc, "/campaign"); c && c->is_object()) {
    const json* v = find(*c, "/version");
    if (!v) v = find(*c, "/id");
    if (v && v->is_string()) h.campaign_version = v->get<std::string>();
    else if (v && v->is_number()) h.campaign_version = v->dump();
  }
  h.sdk_version = str_at(doc, "/sdk_version");
  h.last_error = str_at(doc, "/last_error");
  if (const json* cs = find(doc, "/campaigns"); cs && cs->is_array()) {
    for (const json& c : *cs) {
      if (!c.is_object()) continue;
      const json* v = find(c, "/version");
      h.epoch += str_at(c, "/id") + "@" + (v ? v->dump() : std::string()) + ":" +
                 str_at(c, "/state") + ":" + str_at(c, "/since") + ";";
    }
  } else if (const json* c = find(doc, "/campaign")) {
    h.epoch = c->dump();
  }
  return h;
}

DeviceWindow summarise(const DeviceHistory& hist, WallTime now, const StatusQuery& q) {
  DeviceWindow d;
  d.device = hist.device;
  if (hist.beats.empty()) return d;
  d.last = hist.beats.back();
  d.seconds_since_last = seconds(now - d.last.time);
  if (hist.beats.size() == 1) {
    // No delta: the device's only heartbeat counts since its start.
    const HeartbeatPoint& b = d.last;
    d.span_s = std::min(b.uptime_s, q.window_s);
    d.bytes = b.bytes_sent;
    d.evicted = b.evicted;
    d.paused_s = b.paused_s;
    d.paused_s_by_reason = b.paused_s_by_reason;
    d.pauses_by_reason = b.pauses_by_reason;
    d.fires = b.fires;
  }
  for (std::size_t i = 1; i < hist.beats.size(); ++i) {
    const HeartbeatPoint& a = hist.beats[i - 1];
    const HeartbeatPoint& b = hist.beats[i];
    const bool restarted = restarted_between(a, b);
    if (restarted) ++d.restarts;
    // After a restart only the new run's uptime is known to be covered.
    d.span_s += restarted ? std::min(b.uptime_s, seconds(b.time - a.time)) : seconds(b.time - a.time);
    d.bytes += delta(a.bytes_sent, b.bytes_sent, restarted);
    d.evicted += delta(a.evicted, b.evicted, restarted);
    d.paused_s += delta(a.paused_s, b.paused_s, restarted);
    add_deltas(a.paused_s_by_reason, b.paused_s_by_reason, restarted, d.paused_s_by_reason);
    add_deltas(a.pauses_by_reason, b.pauses_by_reason, restarted, d.pauses_by_reason);
    add_deltas(a.fires, b.fires, restarted, d.fires);
  }
  d.silent = d.seconds_since_last > q.silent_after_s;
  d.evicting = d.evicted > 0;
  return d;
}

std::vector<FleetGroup> aggregate(const std::vector<DeviceWindow>& devices, std::string_view by) {
  std::map<std::pair<bool, std::string>, FleetGroup> groups;  // (no value, value): no-value last
  for (const auto& d : devices) {
    std::string value;
    bool has = true;
    if (!by.empty()) {
      auto it = d.last.labels.find(std::string(by));
      has = it != d.last.labels.end();
      if (has) value = it->second;
    }
    FleetGroup& g = groups[{!has, value}];
    g.label = std::string(by);
    g.value = value;
    g.has_value = has;
    g.devices.push_back(d.device);
    g.silent += d.silent;
    g.evicting += d.evicting;
    g.paused_now += d.last.paused;
    g.restarts += d.restarts;
    g.observed_device_s += d.span_s;
    g.upload_bytes += d.bytes;
    g.upload_bytes_per_s += d.upload_bytes_per_s();
    g.paused_share += d.paused_s;  // divided below
    for (const auto& [r, s] : d.paused_s_by_reason) g.paused_share_by_reason[r] += s;
    for (const auto& [r, n] : d.pauses_by_reason) g.pauses_per_device_hour[r] += n;
    g.evictions += d.evicted;
    for (const auto& [t, n] : d.fires) g.fires[t] += n;
    g.backlog_records += d.last.backlog_records;
    g.backlog_bytes += d.last.backlog_bytes;
    if (!d.last.campaign_version.empty()) ++g.campaign_versions[d.last.campaign_version];
  }
  std::vector<FleetGroup> out;
  for (auto& [k, g] : groups) {
    const double s = g.observed_device_s;
    auto per = [s](double n, double unit_s) { return s > 0 ? n * unit_s / s : 0.0; };
    g.paused_share = s > 0 ? std::min(1.0, g.paused_share / s) : 0.0;
    for (auto& [r, v] : g.paused_share_by_reason) v = s > 0 ? std::min(1.0, v / s) : 0.0;
    for (auto& [r, v] : g.pauses_per_device_hour) v = per(v, 3600);
    g.evictions_per_device_day = per(g.evictions, 86400);
    for (const auto& [t, n] : g.fires) g.fires_per_device_hour[t] = per(n, 3600);
    out.push_back(std::move(g));
  }
  return out;
}

std::vector<FleetBin> fleet_bins(const std::vector<DeviceHistory>& histories, WallTime now,
                                 double window_s, std::size_t bins) {
  std::vector<FleetBin> out(bins);
  if (bins == 0 || window_s <= 0) return out;
  const double bin_s = window_s / static_cast<double>(bins);
  const WallTime start = now - std::chrono::duration_cast<WallTime::duration>(
                                   std::chrono::duration<double>(window_s));
  auto bin_of = [&](WallTime t) -> long {
    return static_cast<long>(std::floor(seconds(t - start) / bin_s));
  };
  std::vector<double> device_s(bins, 0.0);
  for (std::size_t i = 0; i < bins; ++i) {
    out[i].end = start + std::chrono::duration_cast<WallTime::duration>(
                             std::chrono::duration<double>(bin_s * static_cast<double>(i + 1)));
  }
  for (const auto& h : histories) {
    for (std::size_t i = 1; i < h.beats.size(); ++i) {
      const HeartbeatPoint& a = h.beats[i - 1];
      const HeartbeatPoint& b = h.beats[i];
      const long k = bin_of(b.time);  // a delta counts in the bin of its later heartbeat
      if (k < 0 || k >= static_cast<long>(bins)) continue;
      const bool restarted = restarted_between(a, b);
      FleetBin& bin = out[static_cast<std::size_t>(k)];
      bin.upload_bytes_per_s += delta(a.bytes_sent, b.bytes_sent, restarted) / bin_s;
      bin.evictions += delta(a.evicted, b.evicted, restarted);
      bin.paused_share += delta(a.paused_s, b.paused_s, restarted);
      for (const auto& [t, n] : b.fires) {
        auto it = a.fires.find(t);
        bin.fires += delta(it == a.fires.end() ? 0.0 : it->second, n, restarted);
      }
      device_s[static_cast<std::size_t>(k)] +=
          restarted ? std::min(b.uptime_s, seconds(b.time - a.time)) : seconds(b.time - a.time);
    }
    // Backlog: each device's newest heartbeat at or before the bin's end.
    std::size_t j = 0;
    for (std::size_t k = 0; k < bins; ++k) {
      while (j < h.beats.size() && h.beats[j].time <= out[k].end) ++j;
      if (j > 0) out[k].backlog_records += h.beats[j - 1].backlog_records;
    }
  }
  for (std::size_t k = 0; k < bins; ++k) {
    out[k].paused_share = device_s[k] > 0 ? std::min(1.0, out[k].paused_share / device_s[k]) : 0;
  }
  return out;
}

Result<std::vector<WindowKeys>> list_windows(BucketReader& reader, const StatusQuery& q,
                                             WallTime now) {
  const WallTime window_start = now - std::chrono::duration_cast<WallTime::duration>(
                                          std::chrono::duration<double>(q.window_s));
  auto listed = list_heartbeat_keys(ReaderAccess::impl(reader), q.device_glob, window_start,
                                    [](std::size_t) { return true; });
  if (!listed) return std::move(listed).error();
  std::vector<WindowKeys> out;
  for (auto& d : *listed) {
    WindowKeys w;
    w.device = std::move(d.device);
    // An explicit `now` is a view of the past; without one, heartbeats a device clock ahead of
    // ours dated a little in the future still count as its latest.
    for (auto& k : d.keys) {
      if (q.now && k.time > now) break;
      w.keys.push_back(std::move(k));
    }
    if (!w.keys.empty()) out.push_back(std::move(w));
  }
  return out;
}

FetchPoint fetch_from(BucketReader& reader) {
  return [&reader](const HeartbeatKey& k) -> Result<std::optional<HeartbeatPoint>> {
    auto body = reader.get(k.key);
    if (!body) {
      if (body.error().is(errc::not_found)) return std::optional<HeartbeatPoint>();  // deleted since
      return std::move(body).error();
    }
    json doc = json::parse(*body, nullptr, false);
    if (doc.is_discarded() || !doc.is_object()) return std::optional<HeartbeatPoint>();
    HeartbeatPoint p = read_heartbeat_point(doc, k.time);
    p.key = k.key;
    return std::optional<HeartbeatPoint>(std::move(p));
  };
}

namespace {

/// Keys within this of a bin edge are read: a heartbeat's own time (which places it in a bin)
/// is taken just before its key's.
constexpr std::chrono::seconds kEdgeSlack{2};

bool no_decrease(const std::map<std::string, double>& a, const std::map<std::string, double>& b) {
  for (const auto& [k, v] : a) {
    auto it = b.find(k);
    if (it == b.end() || it->second < v) return false;
  }
  return true;
}

/// Whether every heartbeat between `ia` and `ib` may be summed as the difference of the two:
/// one run (seqs rising, uptime keeping pace with the time), counters and per-trigger / per-
/// reason counts never lower, the same campaign epoch.
bool telescopes(const std::vector<HeartbeatKey>& keys, std::size_t ia, std::size_t ib,
                const HeartbeatPoint& a, const HeartbeatPoint& b) {
  for (std::size_t i = ia + 1; i <= ib; ++i) {
    if (keys[i].has_seq && keys[i - 1].has_seq && keys[i].seq <= keys[i - 1].seq) return false;
  }
  if (restarted_between(a, b) || a.epoch != b.epoch) return false;
  const double dt = seconds(b.time - a.time);
  if (std::abs((b.uptime_s - a.uptime_s) - dt) > 2 + 0.002 * std::abs(dt)) return false;
  return no_decrease(a.fires, b.fires) && no_decrease(a.pauses_by_reason, b.pauses_by_reason) &&
         no_decrease(a.paused_s_by_reason, b.paused_s_by_reason);
}

}  // namespace

Result<DeviceHistory> read_history(WindowKeys& w, const std::vector<WallTime>& edges,
                                   const FetchPoint& fetch) {
  const auto& keys = w.keys;
  const std::size_t n = keys.size();
  DeviceHistory h;
  h.device = w.device;
  if (n == 0) return h;
  std::set<std::size_t> want = {0, n - 1};
  for (std::size_t i = 1; i < n; ++i) {
    if (keys[i].has_seq && keys[i - 1].has_seq && keys[i].seq <= keys[i - 1].seq) {
      want.insert(i - 1);
      want.insert(i);
    }
  }
  for (WallTime e : edges) {
    auto lo = std::lower_bound(keys.begin(), keys.end(), e - kEdgeSlack,
                               [](const HeartbeatKey& k, WallTime t) { return k.time < t; });
    if (lo != keys.begin()) want.insert(static_cast<std::size_t>(lo - keys.begin()) - 1);
    for (auto it = lo; it != keys.end() && it->time <= e + kEdgeSlack; ++it) {
      want.insert(static_cast<std::size_t>(it - keys.begin()));
    }
  }
  for (;;) {
    // Read what is wanted; a key that is gone or not a heartbeat hands its role to both
    // neighbours (the window skips it, so they become consecutive).
    while (!want.empty()) {
      const std::size_t i = *want.begin();
      want.erase(want.begin());
      if (w.read.count(i)) continue;
      auto p = fetch(keys[i]);
      if (!p) return std::move(p).error();
      w.read[i] = std::move(*p);
      if (!w.read[i]) {
        if (i > 0) want.insert(i - 1);
        if (i + 1 < n) want.insert(i + 1);
      }
    }
    // Split every pair of points that does not telescope and has unread heartbeats between.
    std::size_t prev = n;
    for (const auto& [i, p] : w.read) {
      if (!p) continue;
      if (prev != n && i > prev + 1) {
        std::vector<std::size_t> unread;
        for (std::size_t j = prev + 1; j < i; ++j) {
          if (!w.read.count(j)) unread.push_back(j);
        }
        if (!unread.empty() && !telescopes(keys, prev, i, *w.read[prev], *p)) {
          want.insert(unread[unread.size() / 2]);
        }
      }
      prev = i;
    }
    if (want.empty()) break;
  }
  for (const auto& [i, p] : w.read) {
    if (p) h.beats.push_back(*p);
  }
  return h;
}

std::vector<WallTime> bin_edges(WallTime now, double window_s, std::size_t bins) {
  std::vector<WallTime> out;
  if (bins == 0 || window_s <= 0) return out;
  const double bin_s = window_s / static_cast<double>(bins);
  const WallTime start = now - std::chrono::duration_cast<WallTime::duration>(
                                   std::chrono::duration<double>(window_s));
  out.push_back(start);
  for (std::size_t i = 0; i < bins; ++i) {
    out.push_back(start + std::chrono::duration_cast<WallTime::duration>(
                              std::chrono::duration<double>(bin_s * static_cast<double>(i + 1))));
  }
  return out;
}

Result<std::vector<DeviceHistory>> load_histories(BucketReader& reader, const StatusQuery& q,
                                                  WallTime now) {
  auto windows = list_windows(reader, q, now);
  if (!windows) return std::move(windows).error();
  const FetchPoint fetch = fetch_from(reader);
  std::vector<DeviceHistory> out;
  for (auto& w : *windows) {
    auto h = read_history(w, {}, fetch);
    if (!h) return std::move(h).error();
    if (!h->beats.empty()) out.push_back(std::move(*h));
  }
  return out;
}

}  // namespace detail

Result<std::vector<FleetGroup>> fleet_status(BucketReader& reader, const StatusQuery& q,
                                             std::string_view by) {
  const WallTime now = q.now ? *q.now : std::chrono::system_clock::now();
  auto histories = detail::load_histories(reader, q, now);
  if (!histories) return std::move(histories).error();
  std::vector<detail::DeviceWindow> windows;
  for (const auto& h : *histories) windows.push_back(detail::summarise(h, now, q));
  return detail::aggregate(windows, by);
}

namespace {

/// A Prometheus label name from a device label key ([a-zA-Z_][a-zA-Z0-9_]*).
std::string prom_label_name(std::string_view key) {
  std::string out = key.empty() ? "group" : std::string(key);
  for (auto& c : out) {
    if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
  }
  if (std::isdigit(static_cast<unsigned char>(out[0]))) out.insert(out.begin(), '_');
  return out;
}

}  // namespace

std::string fleet_status_prometheus(const std::vector<FleetGroup>& groups) {
  // The registry renders the exposition format (HELP/TYPE lines, escaped label values).
  MetricsRegistry reg;
  for (const auto& g : groups) {
    Labels base;
    if (!g.label.empty()) base.emplace_back(prom_label_name(g.label), g.has_value ? g.value : "");
    auto with = [&](const char* k, const std::string& v) {
      Labels l = base;
      l.emplace_back(k, v);
      return l;
    };
    auto set = [&](const char* name, const char* help, double v, const Labels& l) {
      reg.gauge(name, help, l).set(v);
    };
    set("fleetpipe_fleet_devices", "Devices with a heartbeat in the window",
        static_cast<double>(g.devices.size()), base);
    set("fleetpipe_fleet_devices_silent", "Devices without a recent heartbeat",
        static_cast<double>(g.silent), base);
    set("fleetpipe_fleet_devices_evicting", "Devices that evicted records in the window",
        static_cast<double>(g.evicting), base);
    set("fleetpipe_fleet_devices_paused", "Devices whose uploads are paused now",
        static_cast<double>(g.paused_now), base);
    set("fleetpipe_fleet_device_restarts", "Restarts seen in the window (a counter went down)",
        static_cast<double>(g.restarts), base);
    set("fleetpipe_fleet_upload_bytes_per_second", "Upload throughput over the window",
        g.upload_bytes_per_s, base);
    set("fleetpipe_fleet_paused_ratio", "Share of the window uploads were paused, by reason",
        g.paused_share, with("reason", "any"));
    for (const auto& [r, v] : g.paused_share_by_reason) {
      set("fleetpipe_fleet_paused_ratio", "Share of the window uploads were paused, by reason", v,
          with("reason", r));
    }
    for (const auto& [r, v] : g.pauses_per_device_hour) {
      set("fleetpipe_fleet_pauses_per_device_hour", "Upload pauses per device-hour, by reason", v,
          with("reason", r));
    }
    set("fleetpipe_fleet_evictions_per_device_day", "Buffer evictions per device-day",
        g.evictions_per_device_day, base);
    for (const auto& [t, v] : g.fires_per_device_hour) {
      set("fleetpipe_fleet_trigger_fires_per_device_hour", "Trigger fires per device-hour", v,
          with("trigger", t));
    }
    set("fleetpipe_fleet_backlog_records", "Records queued on the devices (newest heartbeats)",
        g.backlog_records, base);
    set("fleetpipe_fleet_backlog_bytes", "Bytes queued on the devices (newest heartbeats)",
        g.backlog_bytes, base);
    for (const auto& [v, n] : g.campaign_versions) {
      set("fleetpipe_fleet_campaign_devices", "Devices per campaign version",
          static_cast<double>(n), with("version", v));
    }
  }
  return reg.to_prometheus();
}

}  // namespace fleetpipe
