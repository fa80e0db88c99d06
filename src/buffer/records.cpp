// Buffer records: how one record is encoded (header, metadata, inline or chunked payload,
// zstd where it pays), inserted, read back at an offset, and deleted.
#include <algorithm>
#include <cstring>

#include "buffer/impl.hpp"

namespace fleetpipe {

using namespace detail;
using lmdb::sv;
using lmdb::val;

/// Whether zstd would find nothing to gain in `in`, judged from a 16 KiB sample from its
/// middle: camera frames and other encoded media inside an event are not worth a full pass
/// (256 KiB of them cost ~0.15 ms of zstd each, on the host's loop when an event closes).
bool Buffer::Impl::looks_incompressible(std::string_view in) {
  constexpr std::size_t kSample = 16u << 10;
  if (in.size() < 4 * kSample) return false;  // small payloads: just try
  constexpr std::size_t kBound = ZSTD_COMPRESSBOUND(kSample);
  if (!probe_out) probe_out.reset(new char[kBound]);
  std::size_t n = ZSTD_compressCCtx(cctx, probe_out.get(), kBound, in.data() + (in.size() - kSample) / 2, kSample, 1);
  return ZSTD_isError(n) || n > kSample - kSample / 16;  // saves under 6 %
}

/// Compresses `in` into `out` when configured and worthwhile; returns true when compressed.
bool Buffer::Impl::maybe_compress(std::string_view in, std::string& out) {
  if (cfg.compress_min_bytes == 0 || in.size() < cfg.compress_min_bytes) return false;
  if (!cctx) cctx = ZSTD_createCCtx();
  if (looks_incompressible(in)) return false;
  std::size_t bound = ZSTD_compressBound(in.size());
  std::size_t base = out.size();
  out.resize(base + bound);
  std::size_t n =
      ZSTD_compressCCtx(cctx, out.data() + base, bound, in.data(), in.size(), cfg.compression_level);
  if (ZSTD_isError(n) || n >= in.size()) {
    out.resize(base);
    return false;
  }
  out.resize(base + n);
  raw_compressed += static_cast<double>(in.size());
  stored_compressed += static_cast<double>(n);
  return true;
}

/// The stored value is built in place: the header, the metadata, then the payload — compressed
/// into the value when that pays, else left where the caller has it (`inline_payload`) and
/// copied once, by insert_record, into the page LMDB reserves.
Buffer::Impl::Prepared Buffer::Impl::prepare(std::size_t index, const RecordMeta& m,
                                             std::string_view payload, std::int64_t now_ns) {
  Prepared p;
  p.index = index;
  p.stream = m.stream;
  RecordHeader& h = p.header;
  h.priority = m.priority;
  h.payload_size = payload.size();
  h.append_ns = now_ns;
  const bool chunked = payload.size() > chunk_raw;
  if (chunked) h.flags |= kChunked;
  const std::size_t meta = meta_size(m);
  h.meta_len = static_cast<std::uint32_t>(meta);
  std::string& v = p.value;
  v.resize(RecordHeader::kSize + meta);
  encode_meta_to(m, v.data() + RecordHeader::kSize);
  std::uint64_t chunk_total = 0;
  if (chunked) {
    for (std::size_t off = 0; off < payload.size(); off += chunk_raw) {
      std::string_view part = payload.substr(off, chunk_raw);
      std::string c(1, static_cast<char>(kChunkZstd));
      if (!maybe_compress(part, c)) {
        c[0] = static_cast<char>(kChunkRaw);
        c.append(part);
      }
      chunk_total += c.size();
      p.chunks.push_back(std::move(c));
    }
  } else if (maybe_compress(payload, v)) {
    h.flags |= kCompressed;
  } else {
    p.inline_payload = payload;
  }
  h.stored_bytes = v.size() + p.inline_payload.size() + chunk_total;
  h.encode_to(v.data());
  return p;
}

/// Writes an admitted record: its entry, its chunks, its place in the upload order; counts it.
int Buffer::Impl::insert_record(MDB_txn* txn, Prepared& p, AppendOutcome& out) {
  const int prio = p.header.priority;
  const std::uint64_t s = p.header.stored_bytes;
  // A staged record's id was reserved before later appends took theirs: no MDB_APPEND.
  RecordId id = p.fixed_id ? p.fixed_id : pc.next_id++;
  IdKey ik(id);
  MDB_val k = val(ik.b, 8), v;
  v.mv_size = p.value.size() + p.inline_payload.size();
  int rc = mdb_put(txn, db_records, &k, &v, MDB_RESERVE | (p.fixed_id ? 0u : unsigned{MDB_APPEND}));
  if (rc) return rc;
  char* dst = static_cast<char*>(v.mv_data);
  std::memcpy(dst, p.value.data(), p.value.size());
  if (!p.inline_payload.empty()) std::memcpy(dst + p.value.size(), p.inline_payload.data(), p.inline_payload.size());
  for (std::size_t i = 0; i < p.chunks.size(); ++i) {
    ChunkKey ck(id, static_cast<std::uint32_t>(i));
    MDB_val ckv = val(ck.b, 12), cv = val(p.chunks[i].data(), p.chunks[i].size());
    if ((rc = mdb_put(txn, db_chunks, &ckv, &cv, MDB_APPEND))) return rc;
  }
  OrderKey okey(static_cast<std::uint8_t>(prio), id);
  OrderValue ov;
  ov.stored_bytes = s;
  char ob[OrderValue::kSize];
  ov.encode(ob);
  // The entry is usually the order's last key (one priority, rising ids): MDB_APPEND skips the
  // search and fills pages instead of splitting them in half; LMDB refuses it (MDB_KEYEXIST)
  // when a lower priority's entries sort after it, and the put goes to its place.
  MDB_val ok = val(okey.b, 9), ovv = val(ob, sizeof ob);
  rc = mdb_put(txn, db_order, &ok, &ovv, MDB_APPEND);
  if (rc == MDB_KEYEXIST) rc = mdb_put(txn, db_order, &ok, &ovv, 0);
  if (rc) return rc;
  pc.records[prio]++;
  pc.bytes[prio] += s;
  pc.wear_bytes += s;
  out.accepted = true;
  out.id = id;
  return 0;
}

/// Deletes record `id` (record, order entry, chunks). Sets `h`/`stream` for the caller.
/// MDB_NOTFOUND when absent.
int Buffer::Impl::delete_record(MDB_txn* txn, RecordId id, RecordHeader* h_out, std::string* stream_out) {
  IdKey ik(id);
  MDB_val k = val(ik.b, 8), v;
  int rc = mdb_get(txn, db_records, &k, &v);
  if (rc) return rc;
  auto h = RecordHeader::decode(sv(v));
  if (!h) return MDB_CORRUPTED;
  if (stream_out) {
    RecordMeta m;
    if (decode_meta(sv(v).substr(RecordHeader::kSize, h->meta_len), h->priority, m)) *stream_out = m.stream;
  }
  OrderKey okey(h->priority, id);
  MDB_val ok = val(okey.b, 9), ov;
  rc = mdb_get(txn, db_order, &ok, &ov);
  if (rc == 0) {
    auto o = OrderValue::decode(sv(ov));
    if (o && (o->flags & kParked)) {
      if (pc.parked > 0) pc.parked--;
      MDB_val pk = val(ik.b, 8);
      rc = mdb_del(txn, db_parked, &pk, nullptr);
      if (rc && rc != MDB_NOTFOUND) return rc;
    }
    if ((rc = mdb_del(txn, db_order, &ok, nullptr))) return rc;
  } else if (rc != MDB_NOTFOUND) {
    return rc;
  }
  if (h->flags & kChunked) {
    std::uint64_t n = (h->payload_size + chunk_raw - 1) / chunk_raw;
    for (std::uint64_t i = 0; i < n; ++i) {
      ChunkKey ck(id, static_cast<std::uint32_t>(i));
      MDB_val ckv = val(ck.b, 12);
      rc = mdb_del(txn, db_chunks, &ckv, nullptr);
      if (rc && rc != MDB_NOTFOUND) return rc;
    }
  }
  if ((rc = mdb_del(txn, db_records, &k, nullptr))) return rc;
  pc.records[h->priority] -= std::min(pc.records[h->priority], std::uint64_t{1});
  pc.bytes[h->priority] -= std::min(pc.bytes[h->priority], h->stored_bytes);
  if (h_out) *h_out = *h;
  return 0;
}

/// `compressed` (zstd) of record `id`, chunk `index`, decompressed to exactly `len` bytes —
/// from the cache when it was the last one asked for. Empty optional: damaged.
std::optional<std::string_view> Buffer::Impl::unpack(RecordId id, std::uint32_t index,
                                                     std::string_view compressed, std::size_t len) {
  Unpacked& u = unpacked;
  if (u.valid && u.id == id && u.index == index && u.len == len) return std::string_view(u.data.get(), len);
  if (!dctx) dctx = ZSTD_createDCtx();
  if (u.cap < len) {
    u.data.reset(new char[len]);  // no zero-fill: zstd writes every byte it reports
    u.cap = len;
  }
  u.valid = false;
  std::size_t d = ZSTD_decompressDCtx(dctx, u.data.get(), len, compressed.data(), compressed.size());
  if (ZSTD_isError(d) || d != len) return std::nullopt;
  u.id = id;
  u.index = index;
  u.len = len;
  u.valid = true;
  return std::string_view(u.data.get(), len);
}

/// Chunk `idx` of record `id` (whose payload is `payload_size` bytes) as stored. A missing,
/// empty or (raw) wrongly sized chunk is decode_error.
Result<Buffer::Impl::StoredChunk> Buffer::Impl::chunk_value(MDB_txn* txn, RecordId id, std::uint32_t idx,
                                                            std::uint64_t payload_size) const {
  ChunkKey ck(id, idx);
  MDB_val k = val(ck.b, 12), v;
  int rc = mdb_get(txn, db_chunks, &k, &v);
  if (rc)
    return Error(errc::decode_error, "record " + std::to_string(id) + ": chunk " + std::to_string(idx) +
                                         " missing: " + lmdb::text(rc));
  std::string_view c = sv(v);
  if (c.empty()) return Error(errc::decode_error, "record " + std::to_string(id) + ": empty chunk");
  StoredChunk out;
  out.bytes = c.substr(1);
  out.raw = c[0] == char(kChunkRaw);
  out.len = static_cast<std::size_t>(std::min<std::uint64_t>(chunk_raw, payload_size - std::uint64_t(idx) * chunk_raw));
  if (out.raw && out.bytes.size() != out.len)
    return Error(errc::decode_error, "record " + std::to_string(id) + ": chunk has the wrong size");
  return out;
}

Result<std::size_t> Buffer::Impl::read_payload(RecordId id, std::uint64_t offset, char* out, std::size_t n) {
  if (!usable()) return Error(errc::io_error, "buffer store unavailable");
  lmdb::Txn txn;
  int rc = txn.begin(env.get(), MDB_RDONLY);
  if (rc) return Error(errc::io_error, "read_payload: " + lmdb::text(rc));
  IdKey ik(id);
  MDB_val k = val(ik.b, 8), v;
  rc = mdb_get(txn.get(), db_records, &k, &v);
  if (rc == MDB_NOTFOUND) return Error(errc::not_found, "record " + std::to_string(id) + " not found");
  if (rc) return Error(errc::io_error, "read_payload: " + lmdb::text(rc));
  auto h = RecordHeader::decode(sv(v));
  if (!h) return Error(errc::decode_error, "record " + std::to_string(id) + " header damaged");
  if (offset >= h->payload_size) return std::size_t{0};
  std::size_t want = static_cast<std::size_t>(std::min<std::uint64_t>(n, h->payload_size - offset));
  std::string_view body = sv(v).substr(RecordHeader::kSize + h->meta_len);
  if (!(h->flags & kChunked)) {
    if (!(h->flags & kCompressed)) {
      std::memcpy(out, body.data() + offset, want);
      return want;
    }
    auto whole = unpack(id, Unpacked::kWhole, body, static_cast<std::size_t>(h->payload_size));
    if (!whole) return Error(errc::decode_error, "record " + std::to_string(id) + ": zstd payload damaged");
    std::memcpy(out, whole->data() + offset, want);
    return want;
  }
  std::size_t done = 0;
  while (done < want) {
    std::uint64_t pos = offset + done;
    auto idx = static_cast<std::uint32_t>(pos / chunk_raw);
    std::size_t in_chunk = static_cast<std::size_t>(pos % chunk_raw);
    auto c = chunk_value(txn.get(), id, idx, h->payload_size);
    if (!c) return std::move(c).error();
    std::string_view data = c->bytes;
    if (!c->raw) {
      auto unpacked_chunk = unpack(id, idx, c->bytes, c->len);
      if (!unpacked_chunk) return Error(errc::decode_error, "record " + std::to_string(id) + ": chunk damaged");
      data = *unpacked_chunk;
    }
    std::size_t take = std::min(want - done, c->len - in_chunk);
    std::memcpy(out + done, data.data() + in_chunk, take);
    done += take;
  }
  return done;
}

}  // namespace fleetpipe
