// fleetpipe.Buffer, fleetpipe.Lease, fleetpipe.inspect_buffer.
#include <pybind11/stl.h>

#include "common.hpp"

namespace fleetpipe::py {

pybind11::object metrics_or_new(pybind11::handle obj) {
  if (!obj.is_none()) {
    if (!pybind11::isinstance<MetricsRegistry>(obj)) throw pybind11::type_error("metrics must be a fleetpipe.MetricsRegistry");
    return pybind11::reinterpret_borrow<pybind11::object>(obj);
  }
  return pybind11::cast(std::make_unique<MetricsRegistry>());
}

Buffer& PyBuffer::get() {
  if (!buffer) raise(Error(errc::invalid_argument, "the Buffer is closed"));
  return *buffer;
}

void PyBuffer::close() {
  if (dependents > 0) {
    raise(Error(errc::invalid_argument,
                "the Buffer is still used by a Capture or Uploader: close those first"));
  }
  for (PyLease* l : std::set<PyLease*>(leases)) l->release();
  leases.clear();
  pybind11::gil_scoped_release nogil;
  buffer.reset();
}

PyLease::~PyLease() { release(); }

void PyLease::release() {
  if (lease) {
    lease.reset();  // returns what it still holds to the queue
    if (buf) buf->leases.erase(this);
  }
}

Lease& PyLease::get() {
  if (!lease) raise(Error(errc::invalid_argument, "the Lease was released"));
  return *lease;
}

pybind11::dict record_meta_dict(const RecordMeta& m) {
  pybind11::dict d;
  d["stream"] = m.stream;
  d["event_id"] = m.event_id;
  d["trigger_ids"] = m.trigger_ids;
  d["priority"] = static_cast<int>(m.priority);
  d["start_ns"] = m.start_ns;
  d["end_ns"] = m.end_ns;
  d["content_type"] = m.content_type;
  d["metadata"] = m.metadata;
  return d;
}

RecordMeta record_meta_from(const std::string& stream, const std::string& event_id,
                            const std::vector<std::string>& trigger_ids, int priority,
                            std::int64_t start_ns, std::int64_t end_ns,
                            const std::string& content_type,
                            const std::map<std::string, std::string>& metadata) {
  if (priority < 0 || priority > 7) raise(Error(errc::invalid_argument, "priority must be 0..7, got " + std::to_string(priority)));
  RecordMeta m;
  m.stream = stream;
  m.event_id = event_id;
  m.trigger_ids = trigger_ids;
  m.priority = static_cast<std::uint8_t>(priority);
  m.start_ns = start_ns;
  m.end_ns = end_ns;
  m.content_type = content_type;
  m.metadata = metadata;
  return m;
}

pybind11::dict append_outcome_dict(const AppendOutcome& o) {
  pybind11::dict d;
  d["accepted"] = o.accepted;
  d["id"] = o.id;
  d["reason"] = o.accepted ? std::string() : make_error_code(o.reason).message();
  d["code"] = o.accepted ? 0 : static_cast<int>(o.reason);
  d["message"] = o.message;
  d["evicted"] = o.evicted;
  return d;
}

namespace {

pybind11::dict stats_dict(const BufferStats& s) {
  pybind11::dict d;
  pybind11::list prio;
  for (const auto& p : s.by_priority) {
    pybind11::dict e;
    e["records"] = p.records;
    e["bytes"] = p.bytes;
    prio.append(e);
  }
  d["by_priority"] = prio;
  d["records"] = s.records;
  d["bytes"] = s.bytes;
  d["leased"] = s.leased;
  d["parked"] = s.parked;
  d["staged"] = s.staged;
  d["map_bytes"] = s.map_bytes;
  d["file_bytes"] = s.file_bytes;
  d["written_today"] = s.written_today;
  d["evicted_total"] = s.evicted_total;
  d["rejected_total"] = s.rejected_total;
  d["quarantined_total"] = s.quarantined_total;
  d["compression_ratio"] = s.compression_ratio;
  return d;
}

pybind11::dict report_dict(const BufferReport& r) {
  pybind11::dict d;
  pybind11::list usage;
  for (const auto& u : r.usage) {
    pybind11::dict e;
    e["stream"] = u.stream;
    e["priority"] = static_cast<int>(u.priority);
    e["records"] = u.records;
    e["bytes"] = u.bytes;
    e["payload_bytes"] = u.payload_bytes;
    e["parked"] = u.parked;
    e["oldest_ns"] = u.oldest_ns;
    e["newest_ns"] = u.newest_ns;
    usage.append(e);
  }
  d["usage"] = usage;
  d["records"] = r.records;
  d["bytes"] = r.bytes;
  d["next_id"] = r.next_id;
  d["max_bytes"] = r.max_bytes;
  d["max_records"] = r.max_records;
  d["max_bytes_written_per_day"] = r.max_bytes_written_per_day;
  d["wear_day"] = r.wear_day;
  d["written_on_wear_day"] = r.written_on_wear_day;
  d["map_bytes"] = r.map_bytes;
  d["file_bytes"] = r.file_bytes;
  d["quarantined"] = r.quarantined;
  d["state"] = r.state;
  return d;
}

std::unique_ptr<PyBuffer> open_buffer(pybind11::handle config, pybind11::handle metrics) {
  Config c = section_config_from(config, "buffer");
  auto pb = std::make_unique<PyBuffer>();
  pb->metrics = metrics_or_new(metrics);
  pb->port = Port{}.with_defaults();
  MetricsRegistry& reg = pb->metrics.cast<MetricsRegistry&>();
  Result<std::unique_ptr<Buffer>> r = Error(errc::internal, "");
  {
    pybind11::gil_scoped_release nogil;
    r = Buffer::open(c.buffer, pb->port, reg);
  }
  pb->buffer = unwrap(std::move(r));
  return pb;
}

// append / append_staged: the record's metadata from keyword arguments, the call without the GIL.
pybind11::dict append_record(PyBuffer& b,
                             AppendOutcome (Buffer::*call)(const RecordMeta&, std::string_view),
                             const std::string& stream, const pybind11::bytes& payload,
                             const std::string& event_id, const std::vector<std::string>& trigger_ids,
                             int priority, std::int64_t start_ns, std::int64_t end_ns,
                             const std::string& content_type,
                             const std::map<std::string, std::string>& metadata) {
  RecordMeta meta = record_meta_from(stream, event_id, trigger_ids, priority, start_ns, end_ns,
                                     content_type, metadata);
  std::string_view view = payload;  // immutable bytes, referenced by the caller
  Buffer& buf = b.get();
  AppendOutcome o;
  {
    pybind11::gil_scoped_release nogil;
    o = (buf.*call)(meta, view);
  }
  return append_outcome_dict(o);
}

}  // namespace

void bind_buffer(pybind11::module_& m) {
  pybind11::class_<PyBuffer>(m, "Buffer",
      "The durable on-device buffer (LMDB). See include/fleetpipe/buffer.hpp and docs/buffer.md.\n\n"
      "    buf = fleetpipe.Buffer({'path': '/data/fp', 'max_bytes': 64 << 20})\n"
      "    out = buf.append('imu', b'...', event_id='e1', trigger_ids=['hard_brake'], priority=6)\n"
      "    with buf.lease(1 << 20) as lease: ...; buf.ack([r['id'] for r in lease.records])\n\n"
      "One Buffer per directory per process: close() it (or use `with`) before reopening.\n"
      "Not thread-safe: use it from one thread. Blocking calls (open, append with fsync,\n"
      "lease, ack, flush) release the GIL.")
      .def(pybind11::init(&open_buffer), pybind11::arg("config"),
           pybind11::arg("metrics") = pybind11::none(),
           "Opens (or creates) the store. `config`: the \"buffer\" section as a dict (errors\n"
           "name '/buffer/<key>'), or a whole config (fleetpipe.Config, dict, JSON text, path).\n"
           "`metrics`: a MetricsRegistry to register in (default: a new one, see .metrics).\n"
           "Raises fleetpipe.Error: invalid configuration, I/O error (directory not creatable,\n"
           "locked by another Buffer).")
      .def_property_readonly("metrics", [](PyBuffer& b) { return b.metrics; },
                             "the MetricsRegistry this buffer counts in")
      .def("append",
           [](PyBuffer& b, const std::string& stream, const pybind11::bytes& payload,
              const std::string& event_id, const std::vector<std::string>& trigger_ids,
              int priority, std::int64_t start_ns, std::int64_t end_ns,
              const std::string& content_type, const std::map<std::string, std::string>& metadata) {
             return append_record(b, &Buffer::append, stream, payload, event_id, trigger_ids,
                                  priority, start_ns, end_ns, content_type, metadata);
           },
           pybind11::arg("stream"), pybind11::arg("payload"), pybind11::arg("event_id") = "",
           pybind11::arg("trigger_ids") = std::vector<std::string>{}, pybind11::arg("priority") = 0,
           pybind11::arg("start_ns") = 0, pybind11::arg("end_ns") = 0,
           pybind11::arg("content_type") = "", pybind11::arg("metadata") = std::map<std::string, std::string>{},
           "Stores one record. Returns a dict {accepted, id, reason, code, message, evicted};\n"
           "a rejection (storage full, wear budget, invalid argument, I/O error) is not an\n"
           "exception: it is counted and logged by the buffer and reported here.")
      .def("append_staged",
           [](PyBuffer& b, const std::string& stream, const pybind11::bytes& payload,
              const std::string& event_id, const std::vector<std::string>& trigger_ids,
              int priority, std::int64_t start_ns, std::int64_t end_ns,
              const std::string& content_type, const std::map<std::string, std::string>& metadata) {
             return append_record(b, &Buffer::append_staged, stream, payload, event_id, trigger_ids,
                                  priority, start_ns, end_ns, content_type, metadata);
           },
           pybind11::arg("stream"), pybind11::arg("payload"), pybind11::arg("event_id") = "",
           pybind11::arg("trigger_ids") = std::vector<std::string>{}, pybind11::arg("priority") = 0,
           pybind11::arg("start_ns") = 0, pybind11::arg("end_ns") = 0,
           pybind11::arg("content_type") = "", pybind11::arg("metadata") = std::map<std::string, std::string>{},
           "append() for a host's loop: under interval/none durability a payload larger than one\n"
           "chunk is written one chunk per later poll() (admission with the last one; see\n"
           "docs/buffer.md, Staged appends). Returns the same dict as append().")
      .def("lease",
           [](pybind11::object self, std::uint64_t max_bytes, std::optional<std::size_t> max_records) {
             PyBuffer& b = self.cast<PyBuffer&>();
             Buffer& buf = b.get();
             Result<Lease> r = Error(errc::internal, "");
             {
               pybind11::gil_scoped_release nogil;
               r = buf.lease(max_bytes, max_records.value_or(std::numeric_limits<std::size_t>::max()));
             }
             auto l = std::make_unique<PyLease>();
             l->lease = std::make_unique<Lease>(unwrap(std::move(r)));
             l->owner = self;
             l->buf = &b;
             b.leases.insert(l.get());
             return l;
           },
           pybind11::arg("max_bytes"), pybind11::arg("max_records") = pybind11::none(),
           "Leases records in upload order (priority desc, then oldest) up to max_bytes of\n"
           "payload (the first record always). Returns a Lease; ack/nack/park its ids, or let it\n"
           "go (release() / `with` / garbage collection) to return them to the queue.")
      .def("ack", [](PyBuffer& b, const std::vector<RecordId>& ids) {
             Buffer& buf = b.get();
             pybind11::gil_scoped_release nogil;
             auto r = buf.ack(ids);
             pybind11::gil_scoped_acquire gil;
             unwrap(std::move(r));
           }, pybind11::arg("ids"), "Deletes uploaded records. Unknown ids are ignored.")
      .def("nack", [](PyBuffer& b, const std::vector<RecordId>& ids) { unwrap(b.get().nack(ids)); },
           pybind11::arg("ids"), "Returns leased records to the queue, attempts + 1.")
      .def("park", [](PyBuffer& b, const std::vector<RecordId>& ids, const std::string& reason) {
             unwrap(b.get().park(ids, reason));
           }, pybind11::arg("ids"), pybind11::arg("reason"),
           "Permanent failure: kept, not leased again until unparked, counted by reason.")
      .def("unpark", [](PyBuffer& b, std::optional<std::string> reason) {
             return unwrap(b.get().unpark(reason ? std::string_view(*reason) : std::string_view()));
           }, pybind11::arg("reason") = pybind11::none(),
           "Returns parked records (all, or those parked with `reason`) to the upload queue;\n"
           "returns how many. Opening a Buffer does the same for all (unpark_on_open).")
      .def("read_payload",
           [](PyBuffer& b, RecordId id, std::uint64_t offset, std::size_t n) {
             std::string out(n, '\0');
             Buffer& buf = b.get();
             Result<std::size_t> r = Error(errc::internal, "");
             {
               pybind11::gil_scoped_release nogil;
               r = buf.read_payload(id, offset, out.data(), n);
             }
             out.resize(unwrap(std::move(r)));
             return pybind11::bytes(out);
           },
           pybind11::arg("id"), pybind11::arg("offset") = 0, pybind11::arg("n") = 1 << 20,
           "Bytes [offset, offset+n) of a record's payload (decompressed). Raises not found.")
      .def("put_state", [](PyBuffer& b, const std::string& k, const pybind11::bytes& v) {
             unwrap(b.get().put_state(k, std::string_view(v)));
           }, pybind11::arg("key"), pybind11::arg("value"), "Small synced key/value table.")
      .def("get_state", [](PyBuffer& b, const std::string& k) -> pybind11::object {
             auto v = unwrap(b.get().get_state(k));
             if (!v) return pybind11::none();
             return pybind11::bytes(*v);
           }, pybind11::arg("key"), "Value of `key` (bytes) or None.")
      .def("erase_state", [](PyBuffer& b, const std::string& k) { unwrap(b.get().erase_state(k)); },
           pybind11::arg("key"))
      .def("list_state", [](PyBuffer& b, const std::string& prefix) {
             pybind11::list out;
             for (auto& [k, v] : unwrap(b.get().list_state(prefix)))
               out.append(pybind11::make_tuple(k, pybind11::bytes(v)));
             return out;
           }, pybind11::arg("prefix") = "", "[(key, value bytes)] sorted by key.")
      .def("poll", [](PyBuffer& b) { unwrap(b.get().poll()); },
           "Housekeeping: interval fsync, stale readers, gauges.")
      .def("flush", [](PyBuffer& b) {
             Buffer& buf = b.get();
             pybind11::gil_scoped_release nogil;
             auto r = buf.flush();
             pybind11::gil_scoped_acquire gil;
             unwrap(std::move(r));
           }, "fsyncs every committed transaction now.")
      .def("stats", [](PyBuffer& b) { return stats_dict(b.get().stats()); },
           "A dict: records, bytes, leased, parked, by_priority[8], evicted_total, ...")
      .def_property_readonly("path", [](PyBuffer& b) { return b.get().config().path; })
      .def_property_readonly("closed", [](PyBuffer& b) { return !b.buffer; })
      .def("close", &PyBuffer::close,
           "Returns open leases, closes the store. Raises if a Capture/Uploader still uses it.")
      .def("__enter__", [](pybind11::object self) { return self; })
      .def("__exit__", [](PyBuffer& b, pybind11::args) { b.close(); });

  pybind11::class_<PyLease>(m, "Lease",
      "Records handed out for upload (Buffer.lease). Records not acked/nacked/parked go back to\n"
      "the queue when the lease is released (release(), end of `with`, garbage collection).")
      .def_property_readonly("records", [](PyLease& l) {
            pybind11::list out;
            for (const auto& r : l.get().records()) {
              pybind11::dict d = record_meta_dict(r.meta);
              d["id"] = r.id;
              d["payload_size"] = r.payload_size;
              d["attempts"] = r.attempts;
              d["stored_bytes"] = r.stored_bytes;
              d["chunked"] = r.chunked;
              d["compressed"] = r.compressed;
              out.append(d);
            }
            return out;
          }, "list of dicts: id, stream, event_id, trigger_ids, priority, start_ns, end_ns, ...")
      .def_property_readonly("ids", [](PyLease& l) {
            std::vector<RecordId> ids;
            for (const auto& r : l.get().records()) ids.push_back(r.id);
            return ids;
          })
      .def("payload", [](PyLease& l, std::size_t i) {
             auto v = unwrap(l.get().payload(i));
             return pybind11::bytes(v.data(), v.size());
           }, pybind11::arg("index"),
           "Payload of records[index] (copied). Chunked payloads raise 'unsupported': use\n"
           "Buffer.read_payload.")
      .def("__len__", [](PyLease& l) { return l.lease ? l.lease->records().size() : 0; })
      .def("release", &PyLease::release, "Returns the records still held to the queue.")
      .def("__enter__", [](pybind11::object self) { return self; })
      .def("__exit__", [](PyLease& l, pybind11::args) { l.release(); });

  m.def("inspect_buffer", [](const std::string& path) {
          Result<BufferReport> r = Error(errc::internal, "");
          {
            pybind11::gil_scoped_release nogil;
            r = inspect_buffer(path);
          }
          return report_dict(unwrap(std::move(r)));
        }, pybind11::arg("path"),
        "Read-only summary of a buffer directory (safe while a writer runs): usage by stream\n"
        "and priority, quotas, wear, quarantined stores. Raises not found / corrupt database.");
}

}  // namespace fleetpipe::py
