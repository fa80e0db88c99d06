// Buffer upload queue: leases (records handed out for upload, in upload order, over a read
// snapshot), what ends them — ack, nack, park — and unpark, the way back from park.
#include <algorithm>

#include "buffer/impl.hpp"

namespace fleetpipe {

using namespace detail;
using lmdb::sv;
using lmdb::val;

// ---- Lease ----------------------------------------------------------------------------------

void Lease::Impl::end() noexcept {
  if (!owner) return;
  owner->release(records, serial);
  rtxn.abort();
  owner->open_leases--;
  owner->grow_ahead();
  owner = nullptr;
}

Lease::Lease() noexcept = default;
Lease::Lease(std::unique_ptr<Impl> impl) noexcept : impl_(std::move(impl)) {}
Lease::Lease(Lease&&) noexcept = default;
Lease& Lease::operator=(Lease&&) noexcept = default;
Lease::~Lease() = default;

const std::vector<LeasedRecord>& Lease::records() const noexcept {
  static const std::vector<LeasedRecord> empty;
  return impl_ ? impl_->records : empty;
}

std::uint64_t Lease::payload_bytes() const noexcept {
  std::uint64_t n = 0;
  for (const auto& r : records()) n += r.payload_size;
  return n;
}

Result<std::string_view> Lease::payload(std::size_t index) const {
  if (!impl_ || index >= impl_->records.size())
    return Error(errc::invalid_argument, "lease has no record at index " + std::to_string(index));
  const LeasedRecord& r = impl_->records[index];
  if (r.chunked)
    return Error(errc::unsupported,
                 "record " + std::to_string(r.id) + " is stored in chunks: use Buffer::read_payload");
  if (!r.compressed) return impl_->stored[index];
  auto& slot = impl_->decoded[index];
  if (!slot) {
    auto s = std::make_unique<std::string>(r.payload_size, '\0');
    std::string_view in = impl_->stored[index];
    std::size_t n = ZSTD_decompress(s->data(), s->size(), in.data(), in.size());
    if (ZSTD_isError(n) || n != r.payload_size)
      return Error(errc::decode_error, "record " + std::to_string(r.id) + ": zstd payload damaged");
    slot = std::move(s);
  }
  return std::string_view(*slot);
}

Result<std::string_view> Lease::payload_piece(std::size_t index, std::uint64_t offset, std::size_t max) const {
  if (!impl_ || index >= impl_->records.size())
    return Error(errc::invalid_argument, "lease has no record at index " + std::to_string(index));
  const LeasedRecord& r = impl_->records[index];
  if (offset >= r.payload_size || max == 0) return std::string_view();
  if (!r.chunked) {
    if (r.compressed) return Error(errc::unsupported, "record " + std::to_string(r.id) + " is stored compressed");
    return impl_->stored[index].substr(static_cast<std::size_t>(offset), max);
  }
  const Buffer::Impl* b = impl_->owner;
  if (!b || !impl_->rtxn) return Error(errc::invalid_argument, "lease already released");
  auto idx = static_cast<std::uint32_t>(offset / b->chunk_raw);
  auto in_chunk = static_cast<std::size_t>(offset % b->chunk_raw);
  auto c = b->chunk_value(impl_->rtxn.get(), r.id, idx, r.payload_size);
  if (!c) return std::move(c).error();
  if (!c->raw) return Error(errc::unsupported, "record " + std::to_string(r.id) + ": chunk stored compressed");
  return c->bytes.substr(in_chunk, max);
}

void Lease::release() noexcept {
  if (impl_) impl_->end();
}

// ---- Buffer::Impl: handing out, and ending leases ------------------------------------------

Result<std::unique_ptr<Lease::Impl>> Buffer::Impl::lease(std::uint64_t max_bytes, std::size_t max_records) {
  if (!usable()) return Error(errc::io_error, "buffer store unavailable (reopen failed)");
  auto li = std::make_unique<Lease::Impl>();
  int rc = li->rtxn.begin(env.get(), MDB_RDONLY);
  if (rc) {
    note_failure(rc);
    return Error(errc::io_error, "lease: " + lmdb::text(rc));
  }
  li->owner = this;
  li->serial = ++lease_serial;
  open_leases++;
  {
    lmdb::Cursor cur;
    if ((rc = cur.open(li->rtxn.get(), db_order))) return Error(errc::io_error, "lease: " + lmdb::text(rc));
    std::uint64_t bytes = 0;
    MDB_val k, v;
    for (rc = cur.get(k, v, MDB_FIRST); rc == 0 && li->records.size() < max_records; rc = cur.get(k, v, MDB_NEXT)) {
      auto o = OrderValue::decode(sv(v));
      if (k.mv_size != 9 || !o) {
        rc = MDB_CORRUPTED;
        break;
      }
      if (o->flags & kParked) continue;
      RecordId id = get_be(static_cast<const char*>(k.mv_data) + 1, 8);
      if (leased.count(id)) continue;
      IdKey ik(id);
      MDB_val rk = val(ik.b, 8), rv;
      int grc = mdb_get(li->rtxn.get(), db_records, &rk, &rv);
      if (grc) {
        rc = grc == MDB_NOTFOUND ? MDB_CORRUPTED : grc;
        break;
      }
      auto h = RecordHeader::decode(sv(rv));
      LeasedRecord r;
      if (!h || !decode_meta(sv(rv).substr(RecordHeader::kSize, h->meta_len), h->priority, r.meta)) {
        rc = MDB_CORRUPTED;
        break;
      }
      if (!li->records.empty() && bytes + h->payload_size > max_bytes) break;
      r.id = id;
      r.payload_size = h->payload_size;
      r.attempts = o->attempts;
      r.stored_bytes = h->stored_bytes;
      r.chunked = h->flags & kChunked;
      r.compressed = (h->flags & kCompressed) != 0;
      bytes += h->payload_size;
      li->stored.push_back(r.chunked ? std::string_view{} : sv(rv).substr(RecordHeader::kSize + h->meta_len));
      li->records.push_back(std::move(r));
      leased[id] = li->serial;
    }
  }
  if (rc != 0 && rc != MDB_NOTFOUND) {
    li->end();  // releases what was taken
    note_failure(rc);
    return Error(errc::io_error, "lease: " + lmdb::text(rc));
  }
  li->decoded.resize(li->records.size());
  g_leased.set(static_cast<double>(leased.size()));
  return li;
}

void Buffer::Impl::release(const std::vector<LeasedRecord>& recs, std::uint64_t serial) {
  for (const auto& r : recs) {
    auto it = leased.find(r.id);
    if (it != leased.end() && it->second == serial) leased.erase(it);
  }
  g_leased.set(static_cast<double>(leased.size()));
}

Result<void> Buffer::Impl::ack(const std::vector<RecordId>& ids) {
  std::uint64_t deleted = 0;
  int rc = write_txn([&](MDB_txn* txn) {
    deleted = 0;
    for (RecordId id : ids) {
      int r = delete_record(txn, id);
      if (r == MDB_NOTFOUND) continue;
      if (r) return r;
      ++deleted;
    }
    return 0;
  });
  if (rc) return Error(errc::io_error, "ack: " + lmdb::text(rc));
  for (RecordId id : ids) leased.erase(id);
  m_acked.inc(deleted);
  refresh_gauges();
  return {};
}

namespace {

constexpr std::string_view kUnspecified = "unspecified";  // park() without a reason, or parked
                                                           // by a version that kept no reasons

/// Rewrites the order entry of each id with `edit(id, OrderValue&)`, which returns 0 or an
/// LMDB error; unknown ids are skipped.
template <class Edit>
int edit_order(Buffer::Impl& b, MDB_txn* txn, const std::vector<RecordId>& ids, Edit edit) {
  for (RecordId id : ids) {
    IdKey ik(id);
    MDB_val k = val(ik.b, 8), v;
    int rc = mdb_get(txn, b.db_records, &k, &v);
    if (rc == MDB_NOTFOUND) continue;
    if (rc) return rc;
    auto h = RecordHeader::decode(sv(v));
    if (!h) return MDB_CORRUPTED;
    OrderKey okey(h->priority, id);
    MDB_val ok = val(okey.b, 9), ov;
    if ((rc = mdb_get(txn, b.db_order, &ok, &ov))) return rc;
    auto o = OrderValue::decode(sv(ov));
    if (!o) return MDB_CORRUPTED;
    if ((rc = edit(id, *o))) return rc;
    char buf[OrderValue::kSize];
    o->encode(buf);
    MDB_val nv = val(buf, sizeof buf);
    if ((rc = mdb_put(txn, b.db_order, &ok, &nv, 0))) return rc;
  }
  return 0;
}

/// The counter of `family` labelled with `reason`, registered on first use (park/unpark are rare).
Counter& by_reason(Buffer::Impl& b, std::map<std::string, Counter*>& cache, const char* family,
                   const char* help, const std::string& reason) {
  auto it = cache.find(reason);
  if (it == cache.end()) it = cache.emplace(reason, &b.metrics.counter(family, help, {{"reason", reason}})).first;
  return *it->second;
}

}  // namespace

Result<void> Buffer::Impl::nack(const std::vector<RecordId>& ids) {
  int rc = write_txn([&](MDB_txn* txn) {
    return edit_order(*this, txn, ids, [](RecordId, OrderValue& o) {
      o.attempts++;
      return 0;
    });
  });
  if (rc) return Error(errc::io_error, "nack: " + lmdb::text(rc));
  for (RecordId id : ids) leased.erase(id);
  m_nacked.inc(ids.size());
  refresh_gauges();
  return {};
}

Result<void> Buffer::Impl::park(const std::vector<RecordId>& ids, std::string_view reason) {
  const std::string r(reason.empty() ? kUnspecified : reason);
  std::uint64_t parked = 0;
  int rc = write_txn([&](MDB_txn* txn) {
    parked = 0;
    return edit_order(*this, txn, ids, [&](RecordId id, OrderValue& o) {
      if (o.flags & kParked) return 0;
      o.flags |= kParked;
      pc.parked++;
      parked++;
      IdKey ik(id);
      MDB_val k = val(ik.b, 8), v = val(r.data(), r.size());
      return mdb_put(txn, db_parked, &k, &v, 0);
    });
  });
  if (rc) return Error(errc::io_error, "park: " + lmdb::text(rc));
  for (RecordId id : ids) leased.erase(id);
  by_reason(*this, m_parked, "fleetpipe_buffer_parked_total", "Records parked after a permanent upload failure", r)
      .inc(parked);
  if (parked) log(LogLevel::warning, "parked " + std::to_string(parked) + " record(s): " + r);
  refresh_gauges();
  return {};
}

/// Clears the parked flag of every parked record (of `reason`, when not empty) in one write
/// transaction, walking the upload order. `when` prefixes the log line ("at open: ").
Result<std::uint64_t> Buffer::Impl::unpark(std::string_view reason, const char* when) {
  if (!usable()) return Error(errc::io_error, "buffer store unavailable");
  if (pc.parked == 0) return std::uint64_t{0};
  std::map<std::string, std::uint64_t> unparked;  // reason -> records
  int rc = write_txn([&](MDB_txn* txn) {
    unparked.clear();
    lmdb::Cursor cur;
    int r = cur.open(txn, db_order);
    if (r) return r;
    MDB_val k, v;
    for (r = cur.get(k, v, MDB_FIRST); r == 0 && pc.parked > 0; r = cur.get(k, v, MDB_NEXT)) {
      auto o = OrderValue::decode(sv(v));
      if (k.mv_size != 9 || !o) return MDB_CORRUPTED;
      if (!(o->flags & kParked)) continue;
      IdKey ik(get_be(static_cast<const char*>(k.mv_data) + 1, 8));
      MDB_val pk = val(ik.b, 8), pv;
      int g = mdb_get(txn, db_parked, &pk, &pv);
      if (g && g != MDB_NOTFOUND) return g;
      const std::string why(g == 0 ? sv(pv) : kUnspecified);
      if (!reason.empty() && why != reason) continue;
      o->flags = static_cast<std::uint8_t>(o->flags & ~kParked);
      char buf[OrderValue::kSize];
      o->encode(buf);
      MDB_val nv = val(buf, sizeof buf);
      if ((r = cur.put(k, nv, MDB_CURRENT))) return r;
      if (g == 0 && (r = mdb_del(txn, db_parked, &pk, nullptr))) return r;
      pc.parked--;
      unparked[why]++;
    }
    return r == MDB_NOTFOUND || r == 0 ? 0 : r;
  });
  if (rc) return Error(errc::io_error, "unpark: " + lmdb::text(rc));
  std::uint64_t total = 0;
  std::string detail;
  for (const auto& [why, n] : unparked) {
    by_reason(*this, m_unparked, "fleetpipe_buffer_unparked_total",
              "Parked records returned to the upload queue (unpark, or at open)", why)
        .inc(n);
    total += n;
    detail += (detail.empty() ? "" : ", ") + std::to_string(n) + " " + why;
  }
  if (total) log(LogLevel::info, std::string(when) + "returned " + std::to_string(total) +
                                     " parked record(s) to the upload queue (" + detail + ")");
  refresh_gauges();
  return total;
}

}  // namespace fleetpipe
