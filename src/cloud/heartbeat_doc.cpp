// Heartbeat documents: the compact /2 schema expanded to the /1 shape the readers use.
#include "cloud/heartbeat_doc.hpp"

#include <string>

namespace fleetpipe::detail {

namespace {

using json = nlohmann::json;

/// Element `i` of array `a` when it is a number, else 0.
json elem(const json& a, std::size_t i) {
  if (a.is_array() && i < a.size() && a[i].is_number()) return a[i];
  return 0;
}

std::string str(const json& o, const char* key) {
  auto it = o.find(key);
  return it != o.end() && it->is_string() ? it->get<std::string>() : std::string();
}

}  // namespace

json heartbeat_as_v1(const json& doc) {
  if (!doc.is_object() || str(doc, "schema") != "fleetpipe.heartbeat/2") return doc;
  json out = json::object();
  out["schema"] = "fleetpipe.heartbeat/2";
  auto copy = [&](const char* from, const char* to) {
    auto it = doc.find(from);
    if (it != doc.end() && !it->is_null()) out[to] = *it;
  };
  copy("device", "device");
  copy("seq", "seq");
  copy("up", "uptime_s");
  copy("sdk", "sdk_version");
  copy("net", "network");
  copy("state", "state");
  copy("labels", "labels");
  copy("day", "day");
  copy("last_error", "last_error");
  copy("campaigns", "campaigns");
  copy("metrics", "metrics");
  if (auto t = doc.find("t"); t != doc.end() && t->is_number_integer()) {
    out["time_unix_ns"] = t->get<std::int64_t>() * 1000000;
  }
  const json none = json::array();
  const json& b = doc.contains("backlog") ? doc["backlog"] : none;
  out["backlog"] = {{"records", elem(b, 0)}, {"bytes", elem(b, 1)}, {"leased", elem(b, 2)},
                    {"parked", elem(b, 3)}};
  const json& buf = doc.contains("buf") ? doc["buf"] : none;
  out["buffer"] = {{"evicted_total", elem(buf, 0)},
                   {"rejected_total", elem(buf, 1)},
                   {"quarantined_total", elem(buf, 2)}};
  json triggers = json::object();
  if (auto f = doc.find("fires"); f != doc.end() && f->is_object()) {
    for (const auto& [name, n] : f->items()) triggers[name] = {{"fires", n}};
  }
  out["triggers"] = std::move(triggers);
  const std::string state = str(doc, "state");
  if (state == "local") {
    out["uploads"] = {{"enabled", false}};
  } else {
    json up = {{"paused", state == "paused"}};
    copy("tx", "tx");
    if (out.contains("tx")) up["bytes_sent"] = out["tx"];
    out.erase("tx");
    if (auto o = doc.find("obj"); o != doc.end()) up["objects_uploaded"] = *o;
    if (auto f = doc.find("fault"); f != doc.end()) up["destination_fault"] = *f;
    json pauses = json::object(), seconds = json::object();
    if (auto p = doc.find("pause"); p != doc.end() && p->is_object()) {
      for (const auto& [reason, ns] : p->items()) {
        pauses[reason] = elem(ns, 0);
        seconds[reason] = elem(ns, 1);
      }
    }
    up["pauses_by_reason"] = std::move(pauses);
    up["paused_seconds"] = std::move(seconds);  // an object: seconds by reason
    out["uploads"] = std::move(up);
  }
  if (auto hb = doc.find("hb"); hb != doc.end()) {
    out["heartbeats"] = {{"sent", elem(*hb, 0)}, {"failed", elem(*hb, 1)}, {"skipped", elem(*hb, 2)}};
  }
  if (auto e = doc.find("err"); e != doc.end()) out["errors"] = *e;
  // The campaign in force, for the fleet view's campaign versions: the first active one.
  if (auto cs = doc.find("campaigns"); cs != doc.end() && cs->is_array()) {
    for (const auto& c : *cs) {
      if (!c.is_object() || str(c, "state") != "active") continue;
      auto v = c.find("version");
      const std::string version = v != c.end() && v->is_number_integer() && *v >= 0
                                      ? std::to_string(v->get<std::uint64_t>())
                                      : std::string("?");
      out["campaign"] = {{"id", str(c, "id")}, {"version", str(c, "id") + "@" + version}};
      break;
    }
  }
  return out;
}

}  // namespace fleetpipe::detail
