// SyncCheckpoint: keeps the last fsynced state of an `interval` store restorable after a power
// cut on a disk that reorders writes.
//
// Why: under `interval` LMDB commits with MDB_NOSYNC, so between two fsyncs the disk may hold a
// newer meta page whose tree pages never arrived, and LMDB (no page checksums) would open that
// tree and crash or read garbage. The Buffer therefore
//   1. pins the state it is about to fsync with a read transaction (LMDB never reuses a page a
//      reader still sees, so later commits cannot overwrite it),
//   2. after the data file's fsync, writes a copy of that state's meta page into `checkpoint`
//      (two CRC-checked slots, one 512-byte sector each) and fsyncs it; only then is the previous
//      pin released;
//   3. at open, when the data file's newest meta is newer than the checkpoint and the machine has
//      rebooted since the checkpoint was written (a process kill keeps the page cache, so then
//      the newest state is whole), writes the checkpointed meta back into both meta slots: the
//      store opens at its last synced state, intact because it was pinned.
// This relies on LMDB's on-disk meta page (MDB_DATA_VERSION 1, checked by magic and version at
// every use); when it does not match, checkpoints are off and the Buffer logs why.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>

namespace fleetpipe::detail {

/// The bytes of one LMDB meta page that describe a state: page header + MDB_meta.
struct MetaCopy {
  // PAGEHDRSZ (a word + 8) + magic, version (2 x 4) + address, mapsize (2 words) + 2 x MDB_db
  // (8 + 5 words) + last_pg, txnid (2 words): 152 bytes with 64-bit words, 92 with 32-bit ones.
  static constexpr std::size_t kWord = sizeof(std::size_t);
  static constexpr std::size_t kBytes = 32 + 15 * kWord;
  std::array<unsigned char, kBytes> bytes{};
  std::uint64_t txnid = 0;

  /// Parses meta page `slot` (0 or 1) of a data file whose first pages are at `pages`
  /// (`page_size` bytes each). Empty when the page is not an LMDB meta page of a known version.
  static std::optional<MetaCopy> from_page(const unsigned char* pages, std::size_t page_size, int slot);
  /// This meta as page `slot`'s first bytes (the page number in its header set to `slot`).
  std::array<unsigned char, kBytes> as_page(int slot) const;
};

/// One checkpoint: which state was synced, and on which boot. It belongs to the data.mdb beside
/// it: whoever replaces or removes that file removes the checkpoint too (the Buffer does, when it
/// quarantines a store or creates a new one); a copy of the directory keeps both, consistent.
struct CheckpointRecord {
  std::uint64_t seq = 0;  // slot = seq % 2; the valid slot with the higher seq wins
  std::uint32_t page_size = 0;
  std::string boot_id;    // /proc/sys/kernel/random/boot_id when written
  MetaCopy meta;
};

/// The machine's boot identity ("" where unknown: then every unclean stop counts as a reboot).
std::string current_boot_id();
/// Test seam: a file read instead of /proc/sys/kernel/random/boot_id ("" = the real one).
void set_boot_id_file_for_testing(std::string path);

/// The `checkpoint` file beside data.mdb.
class CheckpointFile {
 public:
  static constexpr const char* kName = "checkpoint";
  CheckpointFile() = default;
  CheckpointFile(const CheckpointFile&) = delete;
  CheckpointFile& operator=(const CheckpointFile&) = delete;
  ~CheckpointFile() { close(); }

  /// Reads the newest valid record of `dir`/checkpoint, if any (no file, torn slots: empty).
  static std::optional<CheckpointRecord> read(const std::filesystem::path& dir);
  /// Removes `dir`/checkpoint durably (unlink + directory fsync). 0 or an errno.
  static int remove(const std::filesystem::path& dir, int dir_fd);

  /// Opens (creating) the file for writing. 0 or an errno.
  int open(const std::filesystem::path& dir, int dir_fd);
  /// Writes `r` into its slot (no fsync: the caller syncs fd()). 0 or an errno.
  int write(const CheckpointRecord& r);
  int fd() const { return fd_; }
  void close();

 private:
  int fd_ = -1;
};

/// What restore_to_checkpoint() did.
struct RestoreOutcome {
  bool rolled_back = false;
  std::uint64_t from_txn = 0, to_txn = 0;  // when rolled back
  int error = 0;                           // an errno when the rollback write failed
  std::string note;                        // why a checkpoint was ignored, when it was
};

/// Before LMDB opens `dir`/data.mdb: when the file's newest meta is newer than its checkpoint
/// and the checkpoint was written on an earlier boot, writes the checkpointed meta into both
/// meta slots and fsyncs the file.
RestoreOutcome restore_to_checkpoint(const std::filesystem::path& dir);

}  // namespace fleetpipe::detail
