// The report's event gallery: the latest events per trigger, decoded — channel plots around the
// fire time and JPEG thumbnails as data: URIs — each linking to its object.
#include <algorithm>
#include <cctype>
#include <chrono>
#include <cmath>
#include <map>
#include <set>

#include <nlohmann/json.hpp>

#include "capture/event_format.hpp"
#include "cloud/report.hpp"
#include "s3/digest.hpp"

namespace fleetpipe::detail::report {
namespace {

constexpr std::size_t kMaxThumbBytes = 256 * 1024;  // larger images are linked, not inlined
constexpr std::size_t kMaxPlotPoints = 600;         // thinned beyond this (one row in n)
constexpr const char* kColors[] = {"#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2"};

/// Percent-encodes a key for a URL path (keeps '/' and the unreserved characters and '=').
std::string url_path(std::string_view key) {
  static const char* hex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : key) {
    if (std::isalnum(c) || c == '/' || c == '-' || c == '_' || c == '.' || c == '~' || c == '=') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
  return out;
}

std::string object_url(const ReportOptions& o, const std::string& key) {
  if (!o.object_url_base.empty()) return o.object_url_base + "/" + url_path(key);
  return "s3://" + o.bucket + "/" + url_path(key);
}

/// The decoded event the entry names (the first one when it names none).
const EventOut* pick(const std::vector<EventOut>& evs, const EventEntry& e) {
  for (const auto& ev : evs) {
    if (!e.event_id.empty() && ev.event_id == e.event_id) return &ev;
  }
  return evs.empty() ? nullptr : &evs.front();
}

std::string event_card(const EventEntry& e, const std::string& trigger, const EventOut* ev,
                       const std::string& problem, const ReportOptions& o, std::size_t n) {
  std::string out = "<figure class=\"event\" data-trigger=\"" + esc(trigger) + "\" data-device=\"" +
                    esc(e.device) + "\" data-event-id=\"" + esc(e.event_id) +
                    "\" data-object-key=\"" + esc(e.object_key) + "\" data-start-ns=\"" +
                    std::to_string(e.start_ns) + "\">";
  const std::string when = format_query_time(WallTime(std::chrono::duration_cast<WallTime::duration>(
      std::chrono::nanoseconds(e.start_ns))));
  out += "<figcaption><b>" + esc(e.device) + "</b> <span class=\"muted\">" + esc(when) +
         " · priority " + std::to_string(e.priority) + "</span><br><a class=\"objlink\" href=\"" +
         esc(object_url(o, e.object_key)) + "\">" + esc(e.object_key) + "</a></figcaption>";
  if (!ev) {
    out += "<p class=\"warn\">" + esc(problem) + "</p></figure>";
    return out;
  }
  nlohmann::json index = nlohmann::json::parse(ev->index_json, nullptr, false);
  double t_fire = 0;
  if (index.is_object() && index.contains("t_fire") && index["t_fire"].is_number())
    t_fire = index["t_fire"].get<double>();
  std::size_t thumbs = 0;
  for (std::size_t si_ = 0; si_ < ev->sections.size(); ++si_) {
    const SectionOut& s = ev->sections[si_];
    if (s.kind == StreamKind::numeric && s.count > 0) {
      const std::size_t width = 1 + s.channels.size();
      const std::size_t step = std::max<std::size_t>(1, s.count / kMaxPlotPoints);
      Chart c;
      c.id = "event-" + std::to_string(n) + "-" + std::to_string(si_);
      c.title = s.stream + " (s from the fire)";
      c.x_is_time = false;
      c.marker_at_zero = true;
      c.width = 420;
      c.height = 150;
      for (std::size_t ch = 0; ch < s.channels.size(); ++ch) {
        Series ser;
        ser.name = s.channels[ch];
        ser.color = kColors[ch % (sizeof kColors / sizeof kColors[0])];
        for (std::size_t r = 0; r < s.count; r += step) {
          ser.xy.emplace_back(s.rows[r * width] - t_fire, s.rows[r * width + 1 + ch]);
        }
        c.series.push_back(std::move(ser));
      }
      out += svg_chart(c);
    } else if (s.kind == StreamKind::blob && s.content_type == "image/jpeg") {
      for (const auto& [t, bytes] : s.blobs) {
        if (thumbs >= o.max_thumbnails) break;
        if (bytes.size() > kMaxThumbBytes) continue;
        ++thumbs;
        out += "<img class=\"thumb\" alt=\"" + esc(s.stream) + " at " + attr_num(t - t_fire) +
               " s\" title=\"" + esc(s.stream) + " at " + attr_num(t - t_fire) +
               " s\" src=\"data:image/jpeg;base64," + base64_encode(bytes) + "\">";
      }
    }
  }
  out += "</figure>";
  return out;
}

}  // namespace

std::string gallery(BucketReader& reader, const std::vector<EventEntry>& events,
                    const ReportOptions& o, std::size_t* shown) {
  // The latest events of each trigger (events come oldest first).
  std::map<std::string, std::vector<const EventEntry*>> by_trigger;
  for (auto it = events.rbegin(); it != events.rend(); ++it) {
    for (const auto& t : it->trigger_ids) {
      auto& v = by_trigger[t];
      if (v.size() < o.events_per_trigger) v.push_back(&*it);
    }
  }
  std::string out;
  std::size_t n = 0;
  std::map<std::pair<std::string, std::uint64_t>, std::vector<EventOut>> decoded;  // per range
  std::map<std::pair<std::string, std::uint64_t>, std::string> problems;
  for (const auto& [trigger, list] : by_trigger) {
    out += "<section class=\"trigger-gallery\" data-trigger=\"" + esc(trigger) + "\"><h3>" +
           esc(trigger) + "</h3><div class=\"cards\">";
    for (const EventEntry* e : list) {
      const auto where = std::make_pair(e->object_key, e->offset);
      if (!decoded.count(where) && !problems.count(where)) {
        auto bytes = reader.download(*e);
        if (!bytes) {
          problems[where] = "not downloaded: " + bytes.error().message;
        } else if (auto evs = decode_events(*bytes); !evs) {
          problems[where] = "not decoded: " + evs.error().message;
        } else {
          decoded[where] = std::move(*evs);
        }
      }
      auto it = decoded.find(where);
      const EventOut* ev = it == decoded.end() ? nullptr : pick(it->second, *e);
      out += event_card(*e, trigger, ev, ev ? "" : problems[where], o, n++);
    }
    out += "</div></section>";
  }
  if (by_trigger.empty()) out = "<p class=\"muted\">No events in the window.</p>";
  if (shown) *shown = n;
  return out;
}

}  // namespace fleetpipe::detail::report
