// Internal: the fleet report — one self-contained static HTML page (inline CSS and SVG, no
// scripts, no external resources) written from the bucket by `fleetpipe report --out DIR`.
//
// Every figure a test or a script may want to read carries a stable element id or data-
// attributes (docs/fleet-view.md lists them): the page is the report's machine interface too.
#pragma once

#include <cstddef>
#include <string>
#include <utility>
#include <vector>

#include "fleetpipe/query.hpp"

namespace fleetpipe::detail {

struct ReportOptions {
  StatusQuery status;                  ///< devices, window, silent threshold, now
  std::size_t bins = 48;               ///< points of each time series
  std::size_t events_per_trigger = 4;  ///< gallery: the latest events of each trigger
  std::size_t max_thumbnails = 3;      ///< JPEG thumbnails per event
  std::string title = "fleetpipe — fleet report";
  /// Links to event objects are `{object_url_base}/{key}`; "" = "s3://{bucket}".
  std::string object_url_base;
  std::string bucket;                  ///< shown in the header and in s3:// links
};

struct ReportResult {
  std::string path;                    ///< DIR/index.html
  std::size_t devices = 0, events = 0, gallery_events = 0;
  std::size_t heartbeats = 0;       ///< in the window (with each device's baseline)
  std::size_t heartbeats_read = 0;  ///< of those, fetched (read_history)
  std::size_t bytes = 0;               ///< size of the page
};

/// Reads the heartbeats and events of the window and writes `out_dir`/index.html (the
/// directory is created). Errors: as BucketReader::list(); io_error (the page not written).
/// Event objects that do not decode are shown as such, not an error.
Result<ReportResult> write_report(BucketReader& reader, const ReportOptions& o,
                                  const std::string& out_dir);

namespace report {

/// Text for HTML content and attribute values.
std::string esc(std::string_view s);
/// A number for a data- attribute (round-trips through strtod closely enough to compare).
std::string attr_num(double v);
/// "12.3 k" style, for people, followed by `unit`.
std::string si(double v, const char* unit);

struct Series {
  std::string name, color;
  std::vector<std::pair<double, double>> xy;
};
struct Chart {
  std::string id, title, unit;
  bool x_is_time = true;     ///< x in unix seconds (labels HH:MM UTC); else seconds
  std::vector<Series> series;
  bool marker_at_zero = false;  ///< a vertical line at x = 0 (the fire time)
  int width = 460, height = 170;
};
/// An inline <svg> line chart with axes, ticks and a legend.
std::string svg_chart(const Chart& c);
/// Horizontal bars, one per (name, value).
std::string svg_bars(const std::string& id, const std::vector<std::pair<std::string, double>>& bars,
                     const char* unit);

/// The event gallery: for each trigger, its latest events (decoded: channel plots around the
/// fire time, JPEG thumbnails) linking to their objects. Fetches each event's bytes.
std::string gallery(BucketReader& reader, const std::vector<EventEntry>& events,
                    const ReportOptions& o, std::size_t* shown);

}  // namespace report
}  // namespace fleetpipe::detail
