// The bucket layout: every key fleetpipe writes, rendered and parsed in one place.
#include "s3/bucket_layout.hpp"

#include <algorithm>
#include <cstdio>
#include <map>

#include "common/utc_time.hpp"

namespace fleetpipe::detail {

namespace {

constexpr std::size_t kMaxKeyBytes = 1024;  // S3's key limit

std::string seq16(std::uint64_t v) {
  char seq[32];
  std::snprintf(seq, sizeof seq, "%016llu", static_cast<unsigned long long>(v));
  return seq;
}

// An empty prefix must not leave a leading or doubled '/'.
std::string collapse_slashes(std::string_view s) {
  std::string clean;
  for (char c : s) {
    if (c == '/' && (clean.empty() || clean.back() == '/')) continue;
    clean.push_back(c);
  }
  return clean;
}

// "{name}" -> the value of `v`; text outside placeholders as is. The template was checked.
std::string fill(std::string_view t, const std::map<std::string, std::string>& v) {
  std::string out;
  for (std::size_t i = 0; i < t.size(); ++i) {
    if (t[i] == '{') {
      auto e = t.find('}', i);
      auto it = v.find(std::string(t.substr(i + 1, e - i - 1)));
      if (it != v.end()) out += it->second;
      i = e;
    } else {
      out.push_back(t[i]);
    }
  }
  return out;
}

// The file name "<start_time>-<seq>[-<writer>].<ext>" of manifests (and of default data keys).
void parse_time_seq_name(std::string_view name, ParsedKey& k) {
  auto dash = name.find('-');
  auto dot = name.find('.', dash == std::string_view::npos ? 0 : dash);
  if (dash == std::string_view::npos || dot == std::string_view::npos) return;
  k.time = parse_utc_compact(name.substr(0, dash));
  std::string_view rest = name.substr(dash + 1, dot - dash - 1);
  std::string_view seq = rest.substr(0, rest.find('-'));
  if (seq.size() == 16 && std::all_of(seq.begin(), seq.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    k.seq = std::stoull(std::string(seq));
  }
  if (seq.size() < rest.size()) {
    std::string_view writer = rest.substr(seq.size() + 1);
    if (writer.size() == 16 && std::all_of(writer.begin(), writer.end(), [](char c) {
          return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
        })) {
      k.writer = std::stoull(std::string(writer), nullptr, 16);
    } else {
      k.seq.reset();  // not a name this layout writes
    }
  }
}

}  // namespace

std::string key_segment(std::string_view s) {
  std::string out;
  for (unsigned char c : s) {
    if (out.size() >= 200) break;
    bool ok = c > 0x20 && c < 0x7f && c != '/' && c != '\\';
    char ch = ok ? static_cast<char>(c) : '_';
    if (ch == '.' && !out.empty() && out.back() == '.') ch = '_';
    out.push_back(ch);
  }
  if (out.empty() || out == ".") out = "_";
  return out;
}

std::string key_partition(std::string_view key, std::string_view name) {
  std::size_t pos = 0;
  while (pos <= key.size()) {
    std::size_t end = key.find('/', pos);
    if (end == std::string_view::npos) end = key.size();
    std::string_view seg = key.substr(pos, end - pos);
    if (seg.size() > name.size() && seg.compare(0, name.size(), name) == 0 && seg[name.size()] == '=') {
      return std::string(seg.substr(name.size() + 1));
    }
    pos = end + 1;
  }
  return {};
}

// ---- the template -----------------------------------------------------------------------------

const std::vector<std::string>& BucketLayout::template_fields() {
  static const std::vector<std::string> fields = {"prefix", "stream", "YYYY-MM-DD", "YYYY", "MM", "DD",
                                                  "HH", "device", "start_time", "seq", "ext", "event_id"};
  return fields;
}

std::string BucketLayout::check_template(std::string_view t) {
  if (t.find("{seq}") == std::string_view::npos) {
    return "must contain {seq} (keys must be unique and deterministic)";
  }
  for (std::size_t p = t.find('{'); p != std::string_view::npos; p = t.find('{', p + 1)) {
    auto e = t.find('}', p);
    if (e == std::string_view::npos) return "unbalanced '{'";
    std::string f(t.substr(p + 1, e - p - 1));
    const auto& fields = template_fields();
    if (std::find(fields.begin(), fields.end(), f) == fields.end()) return "unknown placeholder {" + f + "}";
  }
  if (!t.empty() && t[0] == '/') return "must not start with '/'";
  return {};
}

std::string BucketLayout::extension_for(std::string_view content_type) {
  if (content_type == "application/vnd.fleetpipe.event") return "fpev";
  if (content_type == "application/json") return "json";
  if (content_type == "application/x-ndjson" || content_type == "application/jsonl") return "jsonl";
  if (content_type == "text/plain") return "txt";
  return "bin";
}

BucketLayout::BucketLayout(std::string prefix, std::string key_template)
    : prefix_(std::move(prefix)), template_(std::move(key_template)) {
  while (!prefix_.empty() && prefix_.back() == '/') prefix_.pop_back();
}

// ---- rendering --------------------------------------------------------------------------------

std::string BucketLayout::data_key(const DataKeyFields& f) const {
  const std::string seq = seq16(f.seq);
  const std::map<std::string, std::string> v = {
      {"prefix", prefix_},
      {"stream", f.stream.empty() ? "default" : key_segment(f.stream)},
      {"YYYY-MM-DD", utc_format(f.start_ns, "%Y-%m-%d")},
      {"YYYY", utc_format(f.start_ns, "%Y")},
      {"MM", utc_format(f.start_ns, "%m")},
      {"DD", utc_format(f.start_ns, "%d")},
      {"HH", utc_format(f.start_ns, "%H")},
      {"device", key_segment(f.device)},
      {"start_time", utc_compact_ms(f.start_ns)},
      {"seq", seq},
      {"ext", f.ext.empty() ? std::string("bin") : key_segment(f.ext)},
      {"event_id", f.event_id.empty() ? seq : key_segment(f.event_id)},
  };
  std::string key = collapse_slashes(fill(template_, v));
  if (key.size() > kMaxKeyBytes) key.resize(kMaxKeyBytes);
  return key;
}

std::string BucketLayout::manifest_key(std::string_view device, std::int64_t start_ns,
                                       std::uint64_t first_id,
                                       std::optional<std::uint64_t> writer) const {
  std::string tag;
  if (writer) {
    char hex[17];
    std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(*writer));
    tag = std::string("-") + hex;
  }
  return manifests_prefix() + "device=" + key_segment(device) + "/date=" + utc_format(start_ns, "%Y-%m-%d") +
         "/" + utc_compact_ms(start_ns) + "-" + seq16(first_id) + tag + ".jsonl";
}

std::string BucketLayout::heartbeat_key(std::string_view device, WallTime t, std::uint64_t seq) const {
  const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
  return heartbeats_prefix() + "device=" + key_segment(device) + "/" + utc_compact_ms(ns) + "-" +
         std::to_string(seq) + ".json";
}

// ---- prefixes ---------------------------------------------------------------------------------

std::string BucketLayout::root_prefix() const { return prefix_.empty() ? std::string() : prefix_ + "/"; }
std::string BucketLayout::stream_prefix(std::string_view stream) const {
  return root_prefix() + "stream=" + std::string(stream) + "/";
}
std::string BucketLayout::manifests_prefix() const { return root_prefix() + "_manifests/"; }
std::string BucketLayout::heartbeats_prefix() const { return root_prefix() + "_heartbeat/"; }
std::string BucketLayout::campaigns_prefix() const { return root_prefix() + "_campaigns/"; }
// An empty prefix would claim the whole bucket: no scan then.
std::string BucketLayout::uploads_scan_prefix() const { return root_prefix(); }

// ---- parsing ----------------------------------------------------------------------------------

ParsedKey BucketLayout::parse(std::string_view key) const {
  ParsedKey k;
  const std::string root = root_prefix();
  if (key.compare(0, root.size(), root) != 0) return k;
  std::string_view rest = key.substr(root.size());
  std::string_view name = rest.substr(rest.rfind('/') == std::string_view::npos ? 0 : rest.rfind('/') + 1);
  auto starts = [&](std::string_view p) { return rest.compare(0, p.size(), p) == 0; };
  if (starts("_manifests/")) {
    k.device = key_partition(rest, "device");
    k.date = key_partition(rest, "date");
    parse_time_seq_name(name, k);
    if (!k.device.empty() && !k.date.empty() && k.seq) k.kind = KeyKind::manifest;
    return k;
  }
  if (starts("_heartbeat/")) {
    k.device = key_partition(rest, "device");
    // "<compact time with ms>-<seq>.json", or the older "<compact time>.json".
    if (name.size() > 5 && name.compare(name.size() - 5, 5, ".json") == 0) name.remove_suffix(5);
    auto dash = name.find('-');
    k.time = parse_utc_compact(name.substr(0, dash));
    if (dash != std::string_view::npos) {
      std::string_view seq = name.substr(dash + 1);
      if (seq.empty() || seq.size() > 19 ||
          !std::all_of(seq.begin(), seq.end(), [](char c) { return c >= '0' && c <= '9'; })) {
        k.time.reset();
      } else {
        k.seq = std::stoull(std::string(seq));
      }
    }
    if (!k.device.empty() && k.time) k.kind = KeyKind::heartbeat;
    return k;
  }
  if (starts("_campaigns/")) {
    k.kind = KeyKind::campaign;
    return k;
  }
  // Data: the partitions, wherever the key template put them; the time and seq when the name
  // has the default form.
  k.stream = key_partition(rest, "stream");
  k.device = key_partition(rest, "device");
  k.date = key_partition(rest, "date");
  parse_time_seq_name(name, k);
  if (!k.device.empty() && !k.date.empty()) k.kind = KeyKind::data;
  return k;
}

}  // namespace fleetpipe::detail
