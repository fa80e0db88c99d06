// Label selectors over events: where an event's labels come from, and the filter.
#include <algorithm>
#include <set>

#include <nlohmann/json.hpp>

#include "fleetpipe/query.hpp"

namespace fleetpipe {
namespace {

using json = nlohmann::json;
using LabelMap = std::map<std::string, std::string>;

LabelMap string_members(const json& obj) {
  LabelMap out;
  if (!obj.is_object()) return out;
  for (const auto& [k, v] : obj.items()) {
    if (v.is_string()) out[k] = v.get<std::string>();
  }
  return out;
}

/// LabelMap per data object key, from the manifest lines that carry a "labels" object.
Result<std::map<std::string, LabelMap>> manifest_labels(BucketReader& reader, const std::string& key) {
  auto body = reader.get(key);
  if (!body) return std::move(body).error();
  std::map<std::string, LabelMap> out;
  std::size_t pos = 0;
  while (pos < body->size()) {
    std::size_t nl = body->find('\n', pos);
    if (nl == std::string::npos) nl = body->size();
    json line = json::parse(body->begin() + static_cast<std::ptrdiff_t>(pos),
                            body->begin() + static_cast<std::ptrdiff_t>(nl), nullptr, false);
    pos = nl + 1;
    if (!line.is_object() || !line.contains("labels")) continue;
    const json& k = line.contains("key") ? line["key"] : line.value("object_key", json());
    if (k.is_string()) out[k.get<std::string>()] = string_members(line["labels"]);
  }
  return out;
}

/// LabelMap of the device's newest heartbeat ({} without one).
Result<LabelMap> heartbeat_labels(BucketReader& reader, const std::string& device) {
  const std::string prefix = (reader.prefix().empty() ? "" : reader.prefix() + "/") +
                             "_heartbeat/device=" + device + "/";
  auto listed = reader.list(prefix);
  if (!listed) return std::move(listed).error();
  if (listed->empty()) return LabelMap{};
  // Heartbeat file names are their UTC times: the greatest key is the newest.
  auto newest = std::max_element(listed->begin(), listed->end(),
                                 [](const ObjectInfo& a, const ObjectInfo& b) { return a.key < b.key; });
  auto body = reader.get(newest->key);
  if (!body) return std::move(body).error();
  json doc = json::parse(*body, nullptr, false);
  return doc.is_object() && doc.contains("labels") ? string_members(doc["labels"]) : LabelMap{};
}

LabelMap metadata_labels(const std::map<std::string, std::string>& metadata) {
  static const std::string kPrefix = "fleetpipe-label-";
  LabelMap out;
  for (const auto& [k, v] : metadata) {
    if (k.compare(0, kPrefix.size(), kPrefix) == 0) out[k.substr(kPrefix.size())] = v;
  }
  return out;
}

bool matches(const LabelMap& have, const LabelSelector& want) {
  for (const auto& [k, glob] : want) {
    auto it = have.find(k);
    if (it == have.end() || !glob_match(glob, it->second)) return false;
  }
  return true;
}

}  // namespace

Result<std::pair<std::string, std::string>> parse_label_selector(std::string_view text) {
  const auto eq = text.find('=');
  if (eq == std::string_view::npos || eq == 0) {
    return Error(errc::invalid_argument,
                 "not a label selector: \"" + std::string(text) + "\" (use KEY=GLOB, e.g. site=store-01*)");
  }
  return std::pair{std::string(text.substr(0, eq)), std::string(text.substr(eq + 1))};
}

Result<std::vector<EventEntry>> query_labeled(BucketReader& reader, const EventQuery& q,
                                              const LabelSelector& labels) {
  EventQuery all = q;
  all.limit = 0;  // the limit applies after the label filter
  auto events = reader.query(all);
  if (!events || labels.empty()) {
    if (events && q.limit > 0 && events->size() > q.limit) events->resize(q.limit);
    return events;
  }
  std::map<std::string, std::map<std::string, LabelMap>> by_manifest;
  std::map<std::string, LabelMap> by_device;
  std::vector<EventEntry> out;
  for (auto& e : *events) {
    const LabelMap* have = nullptr;
    if (!e.manifest_key.empty()) {
      auto m = by_manifest.find(e.manifest_key);
      if (m == by_manifest.end()) {
        auto read = manifest_labels(reader, e.manifest_key);
        if (!read) return std::move(read).error();
        m = by_manifest.emplace(e.manifest_key, std::move(*read)).first;
      }
      auto it = m->second.find(e.object_key);
      if (it != m->second.end()) have = &it->second;
    }
    LabelMap from_meta;
    if (!have) {
      from_meta = metadata_labels(e.metadata);
      if (!from_meta.empty()) have = &from_meta;
    }
    if (!have) {
      auto d = by_device.find(e.device);
      if (d == by_device.end()) {
        auto read = heartbeat_labels(reader, e.device);
        if (!read) return std::move(read).error();
        d = by_device.emplace(e.device, std::move(*read)).first;
      }
      have = &d->second;
    }
    if (matches(*have, labels)) out.push_back(std::move(e));
    if (q.limit > 0 && out.size() >= q.limit) break;
  }
  return out;
}

}  // namespace fleetpipe
