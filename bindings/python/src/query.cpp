// fleetpipe.BucketReader: the cloud side (query events, fleet status from heartbeats).
#include <pybind11/stl.h>

#include "bindings.hpp"
#include "fleetpipe/query.hpp"

namespace fleetpipe::py {
namespace {

struct PyReader {
  std::unique_ptr<BucketReader> r;
};

std::vector<std::string> str_list(pybind11::handle h) {
  std::vector<std::string> out;
  if (h.is_none()) return out;
  if (pybind11::isinstance<pybind11::str>(h)) {
    out.push_back(h.cast<std::string>());
    return out;
  }
  for (auto v : h) out.push_back(v.cast<std::string>());
  return out;
}

double unix_s(WallTime t) { return std::chrono::duration<double>(t.time_since_epoch()).count(); }

pybind11::dict entry_dict(const EventEntry& e) {
  pybind11::dict d;
  d["object_key"] = e.object_key;
  d["offset"] = e.offset;
  d["length"] = e.length;
  d["stream"] = e.stream;
  d["device"] = e.device;
  d["date"] = e.date;
  d["event_id"] = e.event_id;
  d["trigger_ids"] = e.trigger_ids;
  d["priority"] = e.priority;
  d["start_ns"] = e.start_ns;
  d["end_ns"] = e.end_ns;
  d["content_type"] = e.content_type;
  d["record_count"] = e.record_count;
  d["manifest_key"] = e.manifest_key;
  d["metadata"] = e.metadata;
  d["campaigns"] = event_campaigns(e);
  return d;
}

pybind11::dict group_dict(const FleetGroup& g) {
  pybind11::dict d;
  d["label"] = g.label;
  d["value"] = g.has_value ? pybind11::object(pybind11::str(g.value)) : pybind11::object(pybind11::none());
  d["devices"] = g.devices;
  d["silent"] = g.silent;
  d["evicting"] = g.evicting;
  d["paused_now"] = g.paused_now;
  d["restarts"] = g.restarts;
  d["observed_device_s"] = g.observed_device_s;
  d["upload_bytes"] = g.upload_bytes;
  d["upload_bytes_per_s"] = g.upload_bytes_per_s;
  d["paused_share"] = g.paused_share;
  d["paused_share_by_reason"] = g.paused_share_by_reason;
  d["pauses_per_device_hour"] = g.pauses_per_device_hour;
  d["evictions"] = g.evictions;
  d["evictions_per_device_day"] = g.evictions_per_device_day;
  d["fires"] = g.fires;
  d["fires_per_device_hour"] = g.fires_per_device_hour;
  d["backlog_records"] = g.backlog_records;
  d["backlog_bytes"] = g.backlog_bytes;
  d["campaign_versions"] = g.campaign_versions;
  return d;
}

EventEntry entry_from(pybind11::handle h) {
  EventEntry e;
  auto d = h.cast<pybind11::dict>();
  e.object_key = d["object_key"].cast<std::string>();
  if (d.contains("offset")) e.offset = d["offset"].cast<std::uint64_t>();
  if (d.contains("length")) e.length = d["length"].cast<std::uint64_t>();
  return e;
}

pybind11::dict device_dict(const DeviceStatus& s) {
  pybind11::dict d;
  d["device"] = s.device;
  d["heartbeats"] = s.heartbeats;
  d["last_seen"] = s.last_seen ? pybind11::object(pybind11::str(format_query_time(*s.last_seen)))
                               : pybind11::object(pybind11::none());
  d["last_seen_unix"] = s.last_seen ? pybind11::object(pybind11::float_(unix_s(*s.last_seen)))
                                    : pybind11::object(pybind11::none());
  d["seconds_since_last"] = s.seconds_since_last;
  d["last_key"] = s.last_key;
  d["sdk_version"] = s.sdk_version;
  d["network"] = s.network;
  d["backlog_records"] = s.backlog_records;
  d["backlog_bytes"] = s.backlog_bytes;
  d["evicted_total"] = s.evicted_total;
  d["evicted_in_window"] = s.evicted_in_window;
  d["uploaded_bytes_total"] = s.uploaded_bytes_total;
  d["upload_bytes_per_s"] = s.upload_bytes_per_s;
  d["last_error"] = s.last_error;
  d["silent"] = s.silent;
  d["evicting"] = s.evicting;
  d["heartbeat"] = json_loads(s.heartbeat_json.empty() ? std::string("{}") : s.heartbeat_json);
  return d;
}

std::unique_ptr<PyReader> make_reader(pybind11::handle config, pybind11::kwargs overrides) {
  Config c = config.is_none() ? Config{} : section_config_from(config, "uploader");
  UploaderConfig u = c.uploader;
  for (auto item : overrides) {
    std::string k = pybind11::str(item.first);
    pybind11::handle v = item.second;
    if (k == "endpoint") u.endpoint = v.cast<std::string>();
    else if (k == "bucket") u.bucket = v.cast<std::string>();
    else if (k == "region") u.region = v.cast<std::string>();
    else if (k == "prefix") u.prefix = v.cast<std::string>();
    else if (k == "ca_file") u.ca_file = v.cast<std::string>();
    else if (k == "connect_address") u.connect_address = v.cast<std::string>();
    else if (k == "allow_insecure_http") u.allow_insecure_http = v.cast<bool>();
    else if (k == "access_key") {
      u.credentials.source = CredentialsSource::static_keys;
      u.credentials.access_key_id = v.cast<std::string>();
    } else if (k == "secret_key") u.credentials.secret_access_key = v.cast<std::string>();
    else if (k == "session_token") u.credentials.session_token = v.cast<std::string>();
    else throw pybind11::type_error("BucketReader: unexpected keyword argument '" + k + "'");
  }
  auto pr = std::make_unique<PyReader>();
  pr->r = unwrap(BucketReader::open(u));
  return pr;
}

}  // namespace

void bind_query(pybind11::module_& m) {
  pybind11::class_<PyReader>(m, "BucketReader",
      "Reads the bucket the fleet uploads to (include/fleetpipe/query.hpp,\n"
      "docs/bucket-layout.md): events from the JSONL manifests and object metadata, device\n"
      "health from heartbeats.\n\n"
      "    r = fleetpipe.BucketReader(endpoint='https://127.0.0.1:9000', bucket='fleet',\n"
      "                               ca_file='ca.pem', access_key='...', secret_key='...')\n"
      "    for e in r.query(stream='camera', trigger='hard_brake', since='2026-11-01', device='cart-0*'):\n"
      "        events = fleetpipe.decode_events(r.download(e))\n"
      "    r.status(silent_after=900)\n\n"
      "Every call blocks on the network and releases the GIL. One thread per reader.")
      .def(pybind11::init(&make_reader), pybind11::arg("config") = pybind11::none(),
           "`config`: an \"uploader\" section dict, or a whole config (Config, dict, JSON text,\n"
           "path); keyword overrides: endpoint, bucket, region, prefix, ca_file, connect_address,\n"
           "allow_insecure_http, access_key, secret_key, session_token. Credentials otherwise come\n"
           "from the config, AWS_* variables or the shared credentials file. No request is made\n"
           "here. Raises fleetpipe.Error: invalid configuration, insecure refused, TLS error.")
      .def("query",
           [](PyReader& pr, pybind11::handle stream, pybind11::handle trigger,
              std::optional<std::string> device, pybind11::handle since, pybind11::handle until,
              int min_priority, std::size_t limit, pybind11::handle label,
              std::optional<std::string> campaign) {
             EventQuery q;
             q.streams = str_list(stream);
             q.triggers = str_list(trigger);
             q.device_glob = device.value_or("");
             if (!since.is_none()) q.since = wall_time_from(since);
             if (!until.is_none()) q.until = wall_time_from(until);
             q.min_priority = min_priority;
             q.limit = limit;
             q.campaign = campaign.value_or("");
             LabelSelector selector;  // label: "site=store-01*", a list of those, or a dict
             if (pybind11::isinstance<pybind11::dict>(label)) {
               for (auto [k, v] : label.cast<pybind11::dict>())
                 selector[k.cast<std::string>()] = v.cast<std::string>();
             } else {
               for (const auto& text : str_list(label)) {
                 auto kv = unwrap(parse_label_selector(text));
                 selector[kv.first] = kv.second;
               }
             }
             Result<std::vector<EventEntry>> r = Error(errc::internal, "");
             {
               pybind11::gil_scoped_release nogil;
               r = query_labeled(*pr.r, q, selector);
             }
             pybind11::list out;
             for (const auto& e : unwrap(std::move(r))) out.append(entry_dict(e));
             return out;
           },
           pybind11::arg("stream") = pybind11::none(), pybind11::arg("trigger") = pybind11::none(),
           pybind11::arg("device") = pybind11::none(), pybind11::arg("since") = pybind11::none(),
           pybind11::arg("until") = pybind11::none(), pybind11::arg("min_priority") = 0,
           pybind11::arg("limit") = 0, pybind11::arg("label") = pybind11::none(),
           pybind11::arg("campaign") = pybind11::none(),
           "Events matching every given filter, oldest first, as dicts (object_key, offset,\n"
           "length, stream, device, date, event_id, trigger_ids, priority, start_ns, end_ns,\n"
           "content_type, record_count, manifest_key, metadata).\n"
           "stream/trigger: a name or a list (any of); device: glob ('cart-0*');\n"
           "since/until: datetime (naive = UTC), 'YYYY-MM-DD[THH:MM:SS[.fff]Z]' or unix seconds —\n"
           "events ending at/after `since` and starting before `until`.\n"
           "label: 'site=store-01*', a list of such selectors or a dict {key: glob} (all must\n"
           "match the event's labels: its manifest line's, else its device's heartbeat's).\n"
           "campaign: 'ID' or 'ID@VERSION', events captured under that campaign (the entry's\n"
           "'campaigns' lists them).\n"
           "Raises fleetpipe.Error (network error, auth error, s3 permanent error, ...).")
      .def("download",
           [](PyReader& pr, pybind11::handle entry) {
             EventEntry e = entry_from(entry);
             Result<std::string> r = Error(errc::internal, "");
             {
               pybind11::gil_scoped_release nogil;
               r = pr.r->download(e);
             }
             return pybind11::bytes(unwrap(std::move(r)));
           },
           pybind11::arg("event"),
           "The bytes of one event from query() (a ranged GET of its slice of a packed object,\n"
           "or the whole object). Decode with fleetpipe.decode_events().")
      .def("status",
           [](PyReader& pr, std::optional<std::string> device, pybind11::handle now,
              double silent_after, double window, std::optional<std::string> by) {
             StatusQuery q;
             q.device_glob = device.value_or("");
             if (!now.is_none()) q.now = wall_time_from(now);
             q.silent_after_s = silent_after;
             q.window_s = window;
             pybind11::list out;
             if (by) {
               Result<std::vector<FleetGroup>> g = Error(errc::internal, "");
               {
                 pybind11::gil_scoped_release nogil;
                 g = fleet_status(*pr.r, q, *by);
               }
               for (const auto& grp : unwrap(std::move(g))) out.append(group_dict(grp));
               return out;
             }
             Result<std::vector<DeviceStatus>> r = Error(errc::internal, "");
             {
               pybind11::gil_scoped_release nogil;
               r = pr.r->status(q);
             }
             for (const auto& d : unwrap(std::move(r))) out.append(device_dict(d));
             return out;
           },
           pybind11::arg("device") = pybind11::none(), pybind11::arg("now") = pybind11::none(),
           pybind11::arg("silent_after") = 900.0, pybind11::arg("window") = 86400.0,
           pybind11::arg("by") = pybind11::none(),
           "One dict per device with heartbeats: last_seen, seconds_since_last, backlog_records,\n"
           "backlog_bytes, evicted_total, evicted_in_window, upload_bytes_per_s, last_error,\n"
           "silent (no heartbeat for `silent_after` s), evicting (evictions within `window` s),\n"
           "heartbeat (the newest document).\n"
           "With by=LABEL (\"\" = the whole fleet): one dict per value of that device label instead\n"
           "(docs/fleet-view.md): value (None for devices without it), devices, silent, evicting,\n"
           "upload_bytes_per_s, paused_share, evictions_per_device_day, fires_per_device_hour, ...")
      .def("list",
           [](PyReader& pr, const std::string& prefix, const std::string& start_after) {
             Result<std::vector<ObjectInfo>> r = Error(errc::internal, "");
             {
               pybind11::gil_scoped_release nogil;
               r = pr.r->list(prefix, start_after);
             }
             pybind11::list out;
             for (const auto& o : unwrap(std::move(r))) {
               pybind11::dict d;
               d["key"] = o.key;
               d["size"] = o.size;
               d["last_modified"] = o.last_modified;
               d["etag"] = o.etag;
               out.append(d);
             }
             return out;
           },
           pybind11::arg("prefix") = "", pybind11::arg("start_after") = "",
           "Every object under `prefix` (all pages): [{key, size, last_modified, etag}].")
      .def("get",
           [](PyReader& pr, const std::string& key, std::uint64_t offset, std::uint64_t length) {
             Result<std::string> r = Error(errc::internal, "");
             {
               pybind11::gil_scoped_release nogil;
               r = pr.r->get(key, offset, length);
             }
             return pybind11::bytes(unwrap(std::move(r)));
           },
           pybind11::arg("key"), pybind11::arg("offset") = 0, pybind11::arg("length") = 0,
           "Object bytes (all, or [offset, offset+length)). Raises not found for a missing key.")
      .def("head",
           [](PyReader& pr, const std::string& key) {
             Result<std::map<std::string, std::string>> r = Error(errc::internal, "");
             {
               pybind11::gil_scoped_release nogil;
               r = pr.r->head(key);
             }
             return unwrap(std::move(r));
           },
           pybind11::arg("key"), "User metadata (x-amz-meta-* without the prefix) + content-type/-length.")
      .def("stats", [](PyReader& pr) {
             const QueryStats& s = pr.r->stats();
             pybind11::dict d;
             d["list_requests"] = s.list_requests;
             d["objects_listed"] = s.objects_listed;
             d["manifests_read"] = s.manifests_read;
             d["manifest_lines"] = s.manifest_lines;
             d["manifest_lines_bad"] = s.manifest_lines_bad;
             d["heads"] = s.heads;
             d["gets"] = s.gets;
             return d;
           }, "Request counters since creation / reset_stats().")
      .def("reset_stats", [](PyReader& pr) { pr.r->reset_stats(); })
      .def_property_readonly("prefix", [](PyReader& pr) { return pr.r->prefix(); });

  m.def("parse_time", [](const std::string& s) { return unix_s(unwrap(parse_query_time(s))); },
        pybind11::arg("text"),
        "'2026-11-01', '2026-11-01T10:20:30[.5]Z', '20261101T102030Z' or unix seconds -> unix\n"
        "seconds (float, UTC). Raises fleetpipe.Error (invalid argument).");
  m.def("format_time", [](double unix_seconds) {
          return format_query_time(WallTime(std::chrono::duration_cast<WallTime::duration>(
              std::chrono::duration<double>(unix_seconds))));
        }, pybind11::arg("unix_seconds"), "'2026-11-01T10:20:30.123Z'");
  m.def("glob_match", [](const std::string& p, const std::string& s) { return glob_match(p, s); },
        pybind11::arg("pattern"), pybind11::arg("text"), "fnmatch(3) as the device filter uses it.");
}

}  // namespace fleetpipe::py
