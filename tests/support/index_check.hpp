// Test helper: checks a bucket's index (the `_manifests/` JSONL lines) against its data objects
// and against the records a device accepted, from a `uploader_readback.py dump` answer.
#pragma once

#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "capture/event_format.hpp"
#include "support/shell.hpp"

namespace fleetpipe::test {

struct IndexReport {
  int data_objects = 0;
  int manifests = 0;
  int manifest_lines = 0;
  int undecodable_objects = 0;  ///< FPEV objects that do not decode whole
  int unlisted_objects = 0;     ///< data objects no manifest line names
  int bad_lines = 0;            ///< a line naming a missing object, a wrong size/offset/event id
  int accepted = 0;
  int missing = 0;              ///< accepted, found in no data object
  int unindexed = 0;            ///< accepted, in the bucket, in no valid manifest line
  int duplicated = 0;           ///< in more than one data object
  std::vector<std::string> problems;  ///< the first few, for the test output

  std::string summary() const {
    std::ostringstream s;
    s << data_objects << " data objects, " << manifests << " manifests, " << manifest_lines
      << " lines, " << accepted << " accepted; undecodable " << undecodable_objects
      << ", unlisted objects " << unlisted_objects << ", bad lines " << bad_lines << ", missing "
      << missing << ", unindexed " << unindexed << ", duplicated " << duplicated;
    for (const auto& p : problems) s << "\n  " << p;
    return s.str();
  }
};

/// `accepted`: event ids the device's Buffer accepted. FPEV objects (key ending ".fpev") are
/// decoded, so their events are known without the index; other objects are known only through
/// manifest lines, whose byte ranges `payload_ok(event_id, bytes)` must accept.
inline IndexReport check_index(
    const nlohmann::json& dump, const std::set<std::string>& accepted,
    const std::function<bool(const std::string&, std::string_view)>& payload_ok) {
  IndexReport r;
  auto note = [&](std::string p) {
    if (r.problems.size() < 12) r.problems.push_back(std::move(p));
  };
  struct Ev {
    std::uint64_t offset, size;
    std::string id;
  };
  std::map<std::string, std::string> data;                 // key -> bytes
  std::map<std::string, std::vector<Ev>> decoded;          // FPEV key -> its events
  std::map<std::string, std::set<std::string>> in_bucket;  // event id -> keys holding it
  std::vector<std::pair<std::string, std::string>> manifests;
  auto is_fpev = [](const std::string& k) {
    return k.size() > 5 && k.compare(k.size() - 5, 5, ".fpev") == 0;
  };
  for (const auto& o : dump["objects"]) {
    auto key = o["key"].get<std::string>();
    if (key.find("/_heartbeat/") != std::string::npos) continue;  // not data, not indexed
    auto bytes = slurp(o["file"].get<std::string>());
    if (key.find("/_manifests/") != std::string::npos) {
      manifests.emplace_back(key, std::move(bytes));
      continue;
    }
    ++r.data_objects;
    if (is_fpev(key)) {
      auto events = detail::decode_events(bytes);
      if (!events) {
        ++r.undecodable_objects;
        note("undecodable object " + key);
      } else {
        std::uint64_t off = 0;
        for (const auto& e : *events) {
          decoded[key].push_back({off, e.encoded_size, e.event_id});
          in_bucket[e.event_id].insert(key);
          off += e.encoded_size;
        }
      }
    }
    data.emplace(key, std::move(bytes));
  }
  r.manifests = static_cast<int>(manifests.size());
  std::set<std::string> listed;
  std::map<std::string, std::set<std::string>> indexed;  // event id -> keys valid lines give
  for (const auto& [mkey, body] : manifests) {
    std::istringstream in(body);
    std::string text;
    while (std::getline(in, text)) {
      if (text.empty()) continue;
      ++r.manifest_lines;
      auto line = nlohmann::json::parse(text, nullptr, false);
      std::string why;
      std::string key = line.is_object() ? line.value("key", "") : "";
      auto d = data.find(key);
      if (line.is_discarded() || !line.contains("records")) {
        why = "line does not parse";
      } else if (d == data.end()) {
        why = "names missing object " + key;
      } else if (line.value("size", std::uint64_t{0}) != d->second.size()) {
        why = "size " + std::to_string(line.value("size", 0)) + " but object " + key + " has " +
              std::to_string(d->second.size());
      } else {
        for (const auto& rec : line["records"]) {
          auto off = rec.value("offset", std::uint64_t{0});
          auto size = rec.value("size", std::uint64_t{0});
          auto id = rec.value("event_id", std::string());
          if (off + size > d->second.size()) {
            why = "record " + id + " lies beyond the end of " + key;
          } else if (is_fpev(key)) {
            bool found = false;
            for (const auto& e : decoded[key])
              found = found || (e.offset == off && e.size == size && e.id == id);
            if (!found) why = "record " + id + " is not at [" + std::to_string(off) + ", +" +
                              std::to_string(size) + ") of " + key;
          } else if (!payload_ok(id, std::string_view(d->second).substr(off, size))) {
            why = "record " + id + ": the bytes at its offset/size are not its payload";
          }
          if (!why.empty()) break;
        }
      }
      if (!why.empty()) {
        ++r.bad_lines;
        note("manifest " + mkey + ": " + why);
        continue;
      }
      listed.insert(key);
      for (const auto& rec : line["records"]) {
        auto id = rec.value("event_id", std::string());
        indexed[id].insert(key);
        if (!is_fpev(key)) in_bucket[id].insert(key);
      }
    }
  }
  for (const auto& [key, bytes] : data) {
    if (listed.count(key)) continue;
    ++r.unlisted_objects;
    note("object " + key + " is in no manifest");
  }
  r.accepted = static_cast<int>(accepted.size());
  for (const auto& id : accepted) {
    if (!in_bucket.count(id)) {
      ++r.missing;
      note("accepted " + id + " is in no object");
    } else if (!indexed.count(id)) {
      ++r.unindexed;
      note("accepted " + id + " (in " + *in_bucket[id].begin() + ") is in no manifest");
    }
  }
  for (const auto& [id, keys] : in_bucket)
    if (keys.size() > 1) {
      ++r.duplicated;
      note(id + " is in " + std::to_string(keys.size()) + " objects");
    }
  return r;
}

}  // namespace fleetpipe::test
