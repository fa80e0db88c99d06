// The fleet report page: overview, per-label tables, time series, trigger rates, flagged devices
// and the event gallery, from the heartbeats and events of one window.
#include "cloud/report.hpp"

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <chrono>
#include <cstring>
#include <fstream>
#include <set>

#include "cloud/fleet_view.hpp"

namespace fleetpipe::detail {
namespace {

using report::attr_num;
using report::esc;
using report::si;

constexpr const char* kStyle = R"css(
*{box-sizing:border-box}
body{margin:0;font:14px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1f2937;background:#f3f4f6}
header{background:#111827;color:#f9fafb;padding:14px 24px}
header h1{margin:0;font-size:20px;font-weight:600}
header .sub{color:#9ca3af;font-size:12px;margin-top:2px}
main{padding:16px 24px;max-width:1500px}
h2{font-size:16px;margin:22px 0 8px;color:#111827}
h3{font-size:14px;margin:12px 0 6px}
.tiles{display:grid;grid-template-columns:repeat(auto-fill,minmax(150px,1fr));gap:10px}
.tile{background:#fff;border-radius:8px;padding:10px 12px;box-shadow:0 1px 2px rgba(0,0,0,.08)}
.tile .v{font-size:22px;font-weight:600}
.tile .k{color:#6b7280;font-size:12px}
.tile.bad{border-left:4px solid #dc2626}
.tile.warn{border-left:4px solid #f59e0b}
.tile.ok{border-left:4px solid #16a34a}
.charts{display:flex;flex-wrap:wrap;gap:10px}
.card{background:#fff;border-radius:8px;padding:8px;box-shadow:0 1px 2px rgba(0,0,0,.08)}
table{border-collapse:collapse;background:#fff;border-radius:8px;overflow:hidden;box-shadow:0 1px 2px rgba(0,0,0,.08);margin-bottom:8px}
th,td{padding:5px 10px;text-align:right;border-bottom:1px solid #e5e7eb;white-space:nowrap}
th{background:#f9fafb;font-weight:600;color:#374151;font-size:12px}
td:first-child,th:first-child{text-align:left}
tr.flag-silent td:first-child{border-left:4px solid #dc2626}
tr.flag-evicting td:first-child{border-left:4px solid #f59e0b}
.badge{display:inline-block;border-radius:4px;padding:0 6px;font-size:11px;font-weight:600;margin-right:4px}
.b-silent{background:#fee2e2;color:#991b1b}.b-evicting{background:#fef3c7;color:#92400e}
.b-paused{background:#e0e7ff;color:#3730a3}.b-error{background:#fce7f3;color:#9d174d}
.muted{color:#6b7280}.warn{color:#b45309}
.chart text,.bars text{font:11px system-ui,sans-serif;fill:#4b5563}
.chart .ct{font-weight:600;fill:#111827;font-size:12px}
.chart .grid{stroke:#e5e7eb}.chart .axis{stroke:#9ca3af}
.chart .marker{stroke:#dc2626;stroke-dasharray:4 3}
.bars .bar{fill:#2563eb}
.cards{display:flex;flex-wrap:wrap;gap:10px}
figure.event{background:#fff;margin:0;border-radius:8px;padding:8px;box-shadow:0 1px 2px rgba(0,0,0,.08);max-width:440px}
figure.event figcaption{font-size:12px;margin-bottom:4px;word-break:break-all}
img.thumb{height:72px;margin:2px;border-radius:4px;border:1px solid #e5e7eb}
a{color:#1d4ed8}
)css";

std::string tile(const char* id, const char* name, double value, const std::string& shown,
                 const char* cls = "") {
  return std::string("<div class=\"tile ") + cls + "\" id=\"" + id + "\" data-value=\"" +
         attr_num(value) + "\"><div class=\"v\">" + esc(shown) + "</div><div class=\"k\">" +
         name + "</div></div>";
}

std::string pct(double share) { return attr_num(std::round(share * 1000) / 10) + " %"; }

/// The table of one label's groups.
std::string label_table(const std::string& label, const std::vector<FleetGroup>& groups) {
  std::string o = "<table class=\"label-table\" data-label=\"" + esc(label) + "\"><tr><th>" +
                  esc(label) + "</th><th>devices</th><th>silent</th><th>evicting</th>"
                  "<th>upload</th><th>paused</th><th>evictions / device-day</th>"
                  "<th>fires / device-hour</th><th>backlog</th><th>campaign</th></tr>";
  for (const auto& g : groups) {
    double fires = 0;
    for (const auto& [t, v] : g.fires_per_device_hour) fires += v;
    std::string campaign;
    for (const auto& [v, n] : g.campaign_versions)
      campaign += (campaign.empty() ? "" : ", ") + v + " ×" + std::to_string(n);
    o += "<tr class=\"group\" data-value=\"" + esc(g.has_value ? g.value : "") +
         "\" data-has-value=\"" + (g.has_value ? "1" : "0") + "\" data-devices=\"" +
         std::to_string(g.devices.size()) + "\" data-silent=\"" + std::to_string(g.silent) +
         "\" data-evicting=\"" + std::to_string(g.evicting) + "\" data-upload-bytes-per-s=\"" +
         attr_num(g.upload_bytes_per_s) + "\" data-paused-share=\"" + attr_num(g.paused_share) +
         "\" data-evictions-per-device-day=\"" + attr_num(g.evictions_per_device_day) +
         "\" data-fires-per-device-hour=\"" + attr_num(fires) + "\" data-backlog-records=\"" +
         attr_num(g.backlog_records) + "\">";
    o += "<td>" + (g.has_value ? esc(g.value) : std::string("<i class=\"muted\">(none)</i>")) +
         "</td><td>" + std::to_string(g.devices.size()) + "</td><td>" + std::to_string(g.silent) +
         "</td><td>" + std::to_string(g.evicting) + "</td><td>" + si(g.upload_bytes_per_s, "B/s") +
         "</td><td>" + pct(g.paused_share) + "</td><td>" + attr_num(g.evictions_per_device_day) +
         "</td><td>" + esc(si(fires, "")) + "</td><td>" + si(g.backlog_records, "rec") +
         "</td><td>" + esc(campaign.empty() ? "-" : campaign) + "</td></tr>";
  }
  return o + "</table>";
}

std::string device_row(const DeviceWindow& d) {
  double fires = 0;
  for (const auto& [t, v] : d.fires) fires += v;
  std::string flags, cls;
  if (d.silent) flags += "<span class=\"badge b-silent\">SILENT</span>", cls = "flag-silent";
  if (d.evicting) flags += "<span class=\"badge b-evicting\">EVICTING</span>",
                  cls = cls.empty() ? "flag-evicting" : cls;
  if (d.last.paused) flags += "<span class=\"badge b-paused\">PAUSED</span>";
  if (!d.last.last_error.empty()) flags += "<span class=\"badge b-error\">ERROR</span>";
  std::string labels;
  for (const auto& [k, v] : d.last.labels) labels += (labels.empty() ? "" : " ") + k + "=" + v;
  return "<tr class=\"device " + cls + "\" data-device=\"" + esc(d.device) +
         "\" data-silent=\"" + (d.silent ? "1" : "0") + "\" data-evicting=\"" +
         (d.evicting ? "1" : "0") + "\" data-backlog-records=\"" + attr_num(d.last.backlog_records) +
         "\" data-backlog-bytes=\"" + attr_num(d.last.backlog_bytes) + "\" data-bytes-sent=\"" +
         attr_num(d.last.bytes_sent) + "\" data-fires=\"" + attr_num(fires) + "\" data-evicted=\"" +
         attr_num(d.evicted) + "\" data-last-seen=\"" + esc(format_query_time(d.last.time)) +
         "\"><td>" + esc(d.device) + "</td><td>" + esc(labels) + "</td><td>" +
         esc(format_query_time(d.last.time)) + "</td><td>" + si(d.last.backlog_records, "rec") +
         "</td><td>" + si(d.upload_bytes_per_s(), "B/s") + "</td><td>" + attr_num(fires) +
         "</td><td>" + attr_num(d.evicted) + "</td><td>" + flags +
         (d.last.last_error.empty() ? "" : " <span class=\"muted\">" + esc(d.last.last_error) + "</span>") +
         "</td></tr>";
}

std::string device_table(const std::vector<const DeviceWindow*>& devices, const char* id) {
  std::string o = std::string("<table id=\"") + id + "\"><tr><th>device</th><th>labels</th>"
                  "<th>last heartbeat</th><th>backlog</th><th>upload</th><th>fires</th>"
                  "<th>evicted</th><th>flags</th></tr>";
  for (const auto* d : devices) o += device_row(*d);
  return o + "</table>";
}

double unix_s(WallTime t) { return std::chrono::duration<double>(t.time_since_epoch()).count(); }

}  // namespace

Result<ReportResult> write_report(BucketReader& reader, const ReportOptions& o,
                                  const std::string& out_dir) {
  StatusQuery q = o.status;
  const WallTime now = q.now ? *q.now : std::chrono::system_clock::now();
  // Heartbeats: first each device's first and newest (which fix the charts' span), then the
  // last one before each bin edge (read_history): at most bins + 2 per device, not all.
  auto keyed = list_windows(reader, q, now);
  if (!keyed) return std::move(keyed).error();
  const FetchPoint fetch = fetch_from(reader);
  std::vector<DeviceHistory> histories;
  double chart_s = 0;  // the charts span the window, or less when the oldest heartbeat is younger
  for (auto& w : *keyed) {
    auto h = read_history(w, {}, fetch);
    if (!h) return std::move(h).error();
    if (!h->beats.empty()) chart_s = std::max(chart_s, unix_s(now) - unix_s(h->beats.front().time));
  }
  const double chart_window_s = std::min(q.window_s, chart_s * 1.02 + 1);
  const auto edges = bin_edges(now, chart_window_s, o.bins);
  ReportResult res;
  for (auto& w : *keyed) {
    auto h = read_history(w, edges, fetch);
    if (!h) return std::move(h).error();
    res.heartbeats += w.keys.size();
    res.heartbeats_read += w.read.size();
    if (!h->beats.empty()) histories.push_back(std::move(*h));
  }
  std::vector<DeviceWindow> windows;
  std::set<std::string> label_keys;
  for (const auto& h : histories) {
    windows.push_back(summarise(h, now, q));
    for (const auto& [k, v] : windows.back().last.labels) label_keys.insert(k);
  }
  res.devices = windows.size();
  const FleetGroup fleet = windows.empty() ? FleetGroup{} : aggregate(windows, "").front();

  EventQuery eq;
  eq.device_glob = q.device_glob;
  eq.since = now - std::chrono::duration_cast<WallTime::duration>(
                       std::chrono::duration<double>(q.window_s));
  if (q.now) eq.until = now;
  auto events = reader.query(eq);
  if (!events) return std::move(events).error();
  res.events = events->size();

  std::string page = "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
                     "<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">"
                     "<title>" + esc(o.title) + "</title><style>" + kStyle + "</style></head><body>";
  page += "<header><h1>" + esc(o.title) + "</h1><div class=\"sub\" id=\"report-meta\" "
          "data-generated=\"" + esc(format_query_time(now)) + "\" data-window-s=\"" +
          attr_num(q.window_s) + "\">bucket " + esc(o.bucket) + (reader.prefix().empty() ? "" : "/" + esc(reader.prefix())) +
          " · window " + attr_num(q.window_s / 3600) + " h ending " + esc(format_query_time(now)) +
          " · " + std::to_string(res.heartbeats) + " heartbeats, " + std::to_string(res.heartbeats_read) +
          " read</div></header><main>";

  // Overview.
  double fires = 0;
  for (const auto& [t, v] : fleet.fires) fires += v;
  page += "<h2>Fleet overview</h2><div class=\"tiles\">";
  page += tile("fleet-devices", "devices", static_cast<double>(res.devices),
               std::to_string(res.devices), "ok");
  page += tile("fleet-silent", "silent", static_cast<double>(fleet.silent),
               std::to_string(fleet.silent), fleet.silent ? "bad" : "ok");
  page += tile("fleet-evicting", "evicting", static_cast<double>(fleet.evicting),
               std::to_string(fleet.evicting), fleet.evicting ? "warn" : "ok");
  page += tile("fleet-paused-now", "paused now", static_cast<double>(fleet.paused_now),
               std::to_string(fleet.paused_now), fleet.paused_now ? "warn" : "ok");
  page += tile("fleet-upload-bytes-per-s", "upload throughput", fleet.upload_bytes_per_s,
               si(fleet.upload_bytes_per_s, "B/s"));
  page += tile("fleet-paused-share", "share of time paused", fleet.paused_share, pct(fleet.paused_share));
  page += tile("fleet-evictions-per-device-day", "evictions / device-day",
               fleet.evictions_per_device_day, si(fleet.evictions_per_device_day, ""));
  page += tile("fleet-fires", "trigger fires in window", fires, si(fires, ""));
  page += tile("fleet-events", "events uploaded in window", static_cast<double>(res.events),
               std::to_string(res.events));
  page += tile("fleet-backlog-records", "backlog (records)", fleet.backlog_records,
               si(fleet.backlog_records, ""));
  page += tile("fleet-backlog-bytes", "backlog (bytes)", fleet.backlog_bytes,
               si(fleet.backlog_bytes, "B"));
  page += tile("fleet-restarts", "restarts seen", static_cast<double>(fleet.restarts),
               std::to_string(fleet.restarts), fleet.restarts ? "warn" : "");
  page += "</div>";

  // Time series.
  auto bins = fleet_bins(histories, now, chart_window_s, o.bins);
  auto chart = [&](const char* id, const char* title, const char* unit, const char* color,
                   double FleetBin::*field) {
    report::Chart c;
    c.id = id;
    c.title = title;
    c.unit = unit;
    report::Series s;
    s.color = color;
    for (const auto& b : bins) s.xy.emplace_back(unix_s(b.end), b.*field);
    c.series.push_back(std::move(s));
    return "<div class=\"card\">" + report::svg_chart(c) + "</div>";
  };
  page += "<h2>Over the window</h2><div class=\"charts\">";
  page += chart("chart-throughput", "Upload throughput", "B/s", "#2563eb", &FleetBin::upload_bytes_per_s);
  page += chart("chart-backlog", "Backlog (records)", "", "#9333ea", &FleetBin::backlog_records);
  page += chart("chart-fires", "Trigger fires per bin", "", "#dc2626", &FleetBin::fires);
  page += chart("chart-paused", "Share of time paused", "", "#ea580c", &FleetBin::paused_share);
  page += "</div>";

  // Trigger fire rates.
  page += "<h2>Trigger fire rates</h2><div class=\"charts\"><div class=\"card\">";
  std::vector<std::pair<std::string, double>> bars(fleet.fires_per_device_hour.begin(),
                                                   fleet.fires_per_device_hour.end());
  page += report::svg_bars("bars-fire-rates", bars, "/dev-h");
  page += "</div><table id=\"trigger-rates\"><tr><th>trigger</th><th>fires</th>"
          "<th>fires / device-hour</th></tr>";
  for (const auto& [t, rate] : fleet.fires_per_device_hour) {
    const double n = fleet.fires.count(t) ? fleet.fires.at(t) : 0;
    page += "<tr class=\"trigger-rate\" data-trigger=\"" + esc(t) + "\" data-fires=\"" +
            attr_num(n) + "\" data-fires-per-device-hour=\"" + attr_num(rate) + "\"><td>" +
            esc(t) + "</td><td>" + attr_num(n) + "</td><td>" + esc(si(rate, "")) + "</td></tr>";
  }
  page += "</table></div>";

  // Flagged devices, then one table per label, then every device.
  std::vector<const DeviceWindow*> flagged, all;
  for (const auto& d : windows) {
    all.push_back(&d);
    if (d.silent || d.evicting || !d.last.last_error.empty()) flagged.push_back(&d);
  }
  page += "<h2>Flagged devices <span class=\"muted\" id=\"flagged-count\" data-value=\"" +
          std::to_string(flagged.size()) + "\">(" + std::to_string(flagged.size()) + ")</span></h2>";
  page += flagged.empty() ? "<p class=\"muted\">None: every device reported recently and kept "
                            "its data.</p>"
                          : device_table(flagged, "flagged-devices");
  page += "<h2>Per label</h2>";
  if (label_keys.empty()) page += "<p class=\"muted\">No device carries labels.</p>";
  for (const auto& k : label_keys) page += "<h3>" + esc(k) + "</h3>" + label_table(k, aggregate(windows, k));
  page += "<h2>Devices</h2>" + device_table(all, "devices");

  page += "<h2>Latest events per trigger</h2>";
  page += report::gallery(reader, *events, o, &res.gallery_events);
  page += "</main></body></html>\n";

  if (::mkdir(out_dir.c_str(), 0755) != 0 && errno != EEXIST) {
    return Error(errc::io_error, "mkdir " + out_dir + ": " + std::strerror(errno));
  }
  res.path = out_dir + "/index.html";
  std::ofstream out(res.path, std::ios::binary | std::ios::trunc);
  out << page;
  out.close();
  if (!out) return Error(errc::io_error, "cannot write " + res.path);
  res.bytes = page.size();
  return res;
}

}  // namespace fleetpipe::detail
