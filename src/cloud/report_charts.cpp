// The report's inline SVG charts: line charts with axes and legend, horizontal bars.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <ctime>

#include "cloud/report.hpp"
#include "s3/s3_client.hpp"

namespace fleetpipe::detail::report {
namespace {

std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

std::string hhmm(double unix_s) {
  std::time_t t = static_cast<std::time_t>(unix_s);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[16];
  std::strftime(buf, sizeof buf, "%H:%M", &tm);
  return buf;
}

/// A "nice" step (1, 2 or 5 x 10^n) that cuts `range` into about `n` parts.
double nice_step(double range, int n) {
  if (range <= 0) return 1;
  double raw = range / n;
  double p = std::pow(10, std::floor(std::log10(raw)));
  for (double m : {1.0, 2.0, 5.0, 10.0}) {
    if (m * p >= raw) return m * p;
  }
  return 10 * p;
}

}  // namespace

// HTML text and attribute values: the XML escapes (&apos; is HTML5's too).
std::string esc(std::string_view s) { return xml_escape(s); }

std::string attr_num(double v) {
  if (!std::isfinite(v)) return "0";
  return fmt("%.10g", v);
}

std::string si(double v, const char* unit) {
  static constexpr const char* prefixes[] = {"", " k", " M", " G", " T"};
  int p = 0;
  double a = std::fabs(v);
  while (a >= 1000 && p < 4) {
    a /= 1000;
    v /= 1000;
    ++p;
  }
  const bool whole = p == 0 && a == std::floor(a);
  const char* f = whole || a >= 100 ? "%.0f" : a < 10 ? "%.2f" : "%.1f";
  std::string out = fmt(f, v) + prefixes[p];
  if (*unit) out += (p == 0 ? " " : "") + std::string(unit);
  return out;
}

std::string svg_chart(const Chart& c) {
  const double left = 58, right = 10, top = 26, bottom = 34;
  const double w = c.width - left - right, h = c.height - top - bottom;
  double x0 = INFINITY, x1 = -INFINITY, y1 = 0, y0 = 0;
  for (const auto& s : c.series) {
    for (const auto& [x, y] : s.xy) {
      if (!std::isfinite(x) || !std::isfinite(y)) continue;
      x0 = std::min(x0, x);
      x1 = std::max(x1, x);
      y0 = std::min(y0, y);
      y1 = std::max(y1, y);
    }
  }
  if (!std::isfinite(x0)) x0 = 0, x1 = 1;
  if (x1 <= x0) x1 = x0 + 1;
  if (y1 <= y0) y1 = y0 + 1;
  const double ystep = nice_step(y1 - y0, 4);
  y1 = std::ceil(y1 / ystep) * ystep;
  y0 = std::floor(y0 / ystep) * ystep;
  auto px = [&](double x) { return left + (x - x0) / (x1 - x0) * w; };
  auto py = [&](double y) { return top + h - (y - y0) / (y1 - y0) * h; };

  std::string o = "<svg class=\"chart\" id=\"" + esc(c.id) + "\" xmlns=\"http://www.w3.org/2000/svg\" "
                  "viewBox=\"0 0 " + std::to_string(c.width) + " " + std::to_string(c.height) +
                  "\" width=\"" + std::to_string(c.width) + "\" height=\"" +
                  std::to_string(c.height) + "\" role=\"img\">";
  o += "<text class=\"ct\" x=\"" + fmt("%.0f", left) + "\" y=\"16\">" + esc(c.title) + "</text>";
  for (double y = y0; y <= y1 + ystep / 2; y += ystep) {
    o += "<line class=\"grid\" x1=\"" + fmt("%.1f", left) + "\" x2=\"" + fmt("%.1f", left + w) +
         "\" y1=\"" + fmt("%.1f", py(y)) + "\" y2=\"" + fmt("%.1f", py(y)) + "\"/>";
    o += "<text class=\"tick\" text-anchor=\"end\" x=\"" + fmt("%.1f", left - 6) + "\" y=\"" +
         fmt("%.1f", py(y) + 4) + "\">" + esc(si(y, c.unit.c_str())) + "</text>";
  }
  const double xstep = c.x_is_time ? std::max(60.0, nice_step(x1 - x0, 5)) : nice_step(x1 - x0, 6);
  for (double x = std::ceil(x0 / xstep) * xstep; x <= x1; x += xstep) {
    std::string label = c.x_is_time ? hhmm(x) : fmt("%+.3g s", x);
    o += "<text class=\"tick\" text-anchor=\"middle\" x=\"" + fmt("%.1f", px(x)) + "\" y=\"" +
         fmt("%.1f", top + h + 16) + "\">" + esc(label) + "</text>";
  }
  o += "<line class=\"axis\" x1=\"" + fmt("%.1f", left) + "\" x2=\"" + fmt("%.1f", left + w) +
       "\" y1=\"" + fmt("%.1f", top + h) + "\" y2=\"" + fmt("%.1f", top + h) + "\"/>";
  if (c.marker_at_zero && x0 <= 0 && x1 >= 0) {
    o += "<line class=\"marker\" x1=\"" + fmt("%.1f", px(0)) + "\" x2=\"" + fmt("%.1f", px(0)) +
         "\" y1=\"" + fmt("%.1f", top) + "\" y2=\"" + fmt("%.1f", top + h) + "\"/>";
  }
  double lx = left + w;
  for (auto it = c.series.rbegin(); it != c.series.rend(); ++it) {
    const Series& s = *it;
    std::string pts;
    for (const auto& [x, y] : s.xy) {
      if (!std::isfinite(x) || !std::isfinite(y)) continue;
      pts += fmt("%.1f", px(x)) + "," + fmt("%.1f", py(y)) + " ";
    }
    o += "<polyline fill=\"none\" stroke-width=\"1.6\" stroke=\"" + esc(s.color) + "\" points=\"" +
         pts + "\"/>";
    if (c.series.size() > 1 || !s.name.empty()) {
      lx -= 8.0 + 6.5 * static_cast<double>(s.name.size());
      o += "<rect x=\"" + fmt("%.1f", lx) + "\" y=\"9\" width=\"8\" height=\"8\" fill=\"" +
           esc(s.color) + "\"/><text class=\"legend\" x=\"" + fmt("%.1f", lx + 11) +
           "\" y=\"17\">" + esc(s.name) + "</text>";
      lx -= 14;
    }
  }
  o += "</svg>";
  return o;
}

std::string svg_bars(const std::string& id, const std::vector<std::pair<std::string, double>>& bars,
                     const char* unit) {
  const int row = 22, label_w = 150, width = 460;
  const int height = std::max<int>(row, row * static_cast<int>(bars.size())) + 6;
  double max = 0;
  for (const auto& b : bars) max = std::max(max, b.second);
  if (max <= 0) max = 1;
  std::string o = "<svg class=\"bars\" id=\"" + esc(id) + "\" xmlns=\"http://www.w3.org/2000/svg\" "
                  "viewBox=\"0 0 " + std::to_string(width) + " " + std::to_string(height) +
                  "\" width=\"" + std::to_string(width) + "\" height=\"" + std::to_string(height) +
                  "\" role=\"img\">";
  int y = 3;
  for (const auto& [name, v] : bars) {
    const double bw = (width - label_w - 90) * v / max;
    o += "<text class=\"tick\" x=\"0\" y=\"" + std::to_string(y + 15) + "\">" + esc(name) + "</text>";
    o += "<rect class=\"bar\" x=\"" + std::to_string(label_w) + "\" y=\"" + std::to_string(y + 3) +
         "\" width=\"" + fmt("%.1f", std::max(1.0, bw)) + "\" height=\"15\" rx=\"2\"/>";
    o += "<text class=\"tick\" x=\"" + fmt("%.1f", label_w + std::max(1.0, bw) + 6) + "\" y=\"" +
         std::to_string(y + 15) + "\">" + esc(si(v, unit)) + "</text>";
    y += row;
  }
  o += "</svg>";
  return o;
}

}  // namespace fleetpipe::detail::report
