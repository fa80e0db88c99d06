// SyncCheckpoint: the checkpoint file's format and the rollback at open (sync_checkpoint.hpp).
#include "buffer/sync_checkpoint.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <boost/crc.hpp>
#include <cerrno>
#include <cstring>
#include <fstream>

#include "buffer/buffer_format.hpp"

namespace fleetpipe::detail {

namespace fs = std::filesystem;

namespace {

// LMDB's meta page (lmdb/mdb.c, MDB_DATA_VERSION 1).
constexpr std::size_t W = MetaCopy::kWord;
constexpr std::uint32_t kLmdbMagic = 0xBEEFC0DE;
constexpr std::uint32_t kLmdbDataVersion = 1;
constexpr std::uint16_t kPageFlagMeta = 0x08;
constexpr std::size_t kFlagsAt = W + 2, kMagicAt = W + 8, kVersionAt = W + 12;
constexpr std::size_t kTxnAt = MetaCopy::kBytes - W;

// A checkpoint slot: one 512-byte sector, so a torn write spoils at most the slot being written.
constexpr std::size_t kSlot = 512;
constexpr char kSlotMagic[4] = {'F', 'P', 'C', 'K'};
constexpr std::uint32_t kSlotFormat = 1;
constexpr std::size_t kBootBytes = 40;
constexpr std::size_t kMetaAt = 32 + kBootBytes;
constexpr std::size_t kCrcAt = kSlot - 4;
static_assert(kMetaAt + MetaCopy::kBytes <= kCrcAt);

template <typename T>
T load(const unsigned char* p) {
  T v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

std::uint32_t crc32_of(const unsigned char* p, std::size_t n) {
  boost::crc_32_type crc;
  crc.process_bytes(p, n);
  return crc.checksum();
}

std::string& boot_id_file() {
  static std::string path;
  return path;
}

std::optional<MetaCopy> parse_meta(const unsigned char* page) {
  if ((load<std::uint16_t>(page + kFlagsAt) & kPageFlagMeta) == 0 ||
      load<std::uint32_t>(page + kMagicAt) != kLmdbMagic ||
      load<std::uint32_t>(page + kVersionAt) != kLmdbDataVersion)
    return std::nullopt;
  MetaCopy m;
  std::memcpy(m.bytes.data(), page, MetaCopy::kBytes);
  m.txnid = load<std::size_t>(page + kTxnAt);
  return m;
}

std::optional<CheckpointRecord> parse_slot(const unsigned char* s) {
  if (std::memcmp(s, kSlotMagic, 4) != 0) return std::nullopt;
  auto le = [&](std::size_t at, int n) { return get_le(reinterpret_cast<const char*>(s) + at, n); };
  if (le(4, 4) != kSlotFormat || le(20, 4) != MetaCopy::kBytes) return std::nullopt;
  if (le(kCrcAt, 4) != crc32_of(s, kCrcAt)) return std::nullopt;
  auto meta = parse_meta(s + kMetaAt);
  if (!meta) return std::nullopt;
  CheckpointRecord r;
  r.seq = le(8, 8);
  r.page_size = static_cast<std::uint32_t>(le(16, 4));
  const char* boot = reinterpret_cast<const char*>(s + 32);
  r.boot_id.assign(boot, strnlen(boot, kBootBytes));
  r.meta = *meta;
  return r;
}

}  // namespace

std::optional<MetaCopy> MetaCopy::from_page(const unsigned char* pages, std::size_t page_size, int slot) {
  return parse_meta(pages + static_cast<std::size_t>(slot) * page_size);
}

std::array<unsigned char, MetaCopy::kBytes> MetaCopy::as_page(int slot) const {
  auto page = bytes;
  std::size_t pgno = static_cast<std::size_t>(slot);
  std::memcpy(page.data(), &pgno, W);
  return page;
}

std::string current_boot_id() {
  const std::string& f = boot_id_file();
  std::ifstream in(f.empty() ? "/proc/sys/kernel/random/boot_id" : f);
  std::string id;
  std::getline(in, id);
  if (id.size() > kBootBytes) id.resize(kBootBytes);
  return id;
}

void set_boot_id_file_for_testing(std::string path) { boot_id_file() = std::move(path); }

std::optional<CheckpointRecord> CheckpointFile::read(const fs::path& dir) {
  int fd = ::open((dir / kName).c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return std::nullopt;
  unsigned char buf[2 * kSlot] = {};
  ssize_t n = ::pread(fd, buf, sizeof buf, 0);
  ::close(fd);
  std::optional<CheckpointRecord> best;
  for (int slot = 0; slot < 2; ++slot) {
    if (n < static_cast<ssize_t>((slot + 1) * kSlot)) break;
    auto r = parse_slot(buf + slot * kSlot);
    if (r && r->seq % 2 == static_cast<std::uint64_t>(slot) && (!best || r->seq > best->seq)) best = std::move(r);
  }
  return best;
}

int CheckpointFile::remove(const fs::path& dir, int dir_fd) {
  if (::unlink((dir / kName).c_str()) != 0) return errno == ENOENT ? 0 : errno;
  if (dir_fd >= 0 && ::fsync(dir_fd) != 0) return errno;
  return 0;
}

int CheckpointFile::open(const fs::path& dir, int dir_fd) {
  close();
  const fs::path path = dir / kName;
  const bool existed = ::access(path.c_str(), F_OK) == 0;
  fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd_ < 0) return errno;
  // The name must be durable before a checkpoint in it is relied on.
  if (!existed && dir_fd >= 0 && ::fsync(dir_fd) != 0) return errno;
  return 0;
}

int CheckpointFile::write(const CheckpointRecord& r) {
  unsigned char s[kSlot] = {};
  std::string head(kSlotMagic, 4);
  put_le(head, kSlotFormat, 4);
  put_le(head, r.seq, 8);
  put_le(head, r.page_size, 4);
  put_le(head, MetaCopy::kBytes, 4);
  put_le(head, 0, 8);  // reserved
  std::memcpy(s, head.data(), head.size());
  std::memcpy(s + 32, r.boot_id.data(), std::min(r.boot_id.size(), kBootBytes));
  std::memcpy(s + kMetaAt, r.meta.bytes.data(), MetaCopy::kBytes);
  std::string crc;
  put_le(crc, crc32_of(s, kCrcAt), 4);
  std::memcpy(s + kCrcAt, crc.data(), 4);
  const off_t at = static_cast<off_t>((r.seq % 2) * kSlot);
  if (::pwrite(fd_, s, kSlot, at) != static_cast<ssize_t>(kSlot)) return errno ? errno : EIO;
  return 0;
}

void CheckpointFile::close() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

RestoreOutcome restore_to_checkpoint(const fs::path& dir) {
  RestoreOutcome out;
  auto ck = CheckpointFile::read(dir);
  if (!ck) return out;
  const std::size_t psize = ck->page_size;
  if (psize < MetaCopy::kBytes || psize > (1u << 16)) return out.note = "checkpoint has a bad page size", out;
  int fd = ::open((dir / "data.mdb").c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) return out;  // no store: LMDB creates one
  std::string pages(2 * psize, '\0');
  const bool whole = ::pread(fd, pages.data(), pages.size(), 0) == static_cast<ssize_t>(pages.size());
  const auto* p = reinterpret_cast<const unsigned char*>(pages.data());
  std::optional<std::uint64_t> newest;
  for (int slot = 0; whole && slot < 2; ++slot)
    if (auto m = MetaCopy::from_page(p, psize, slot); m && (!newest || m->txnid > *newest)) newest = m->txnid;
  // Same boot: the page cache outlived the process, so the newest state is whole.
  const std::string boot = current_boot_id();
  const bool same_boot = !boot.empty() && boot == ck->boot_id;
  if ((newest && *newest == ck->meta.txnid) || (same_boot && newest)) {
    ::close(fd);
    return out;
  }
  for (int slot = 0; slot < 2; ++slot) {
    auto page = ck->meta.as_page(slot);
    if (::pwrite(fd, page.data(), page.size(), static_cast<off_t>(slot * psize)) != static_cast<ssize_t>(page.size())) {
      out.error = errno ? errno : EIO;
      ::close(fd);
      return out;
    }
  }
  if (::fdatasync(fd) != 0) out.error = errno;
  ::close(fd);
  if (out.error) return out;
  out.rolled_back = true;
  out.from_txn = newest.value_or(0);
  out.to_txn = ck->meta.txnid;
  return out;
}

}  // namespace fleetpipe::detail
