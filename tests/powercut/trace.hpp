// Power-cut traces and crash states: the trace the shim (shim.cpp) records of a run, and the
// disk states a power cut at any point of it may leave, in the spirit of ALICE and CrashMonkey.
//
// The model, per file: what the last fsync/fdatasync (or an O_DSYNC write) made durable is on
// disk; of the writes issued after it, any subset has reached the disk, in any order, each torn
// at 512-byte sectors (a sector holds one of the versions written to it, old or new). Mode
// `ordered` instead keeps a prefix of those writes, in issue order, the last one torn: a
// filesystem that preserves write order. File names, truncation and rename are metadata,
// taken as done once the call returned (journaled metadata). lock.mdb is left out: LMDB rebuilds
// it when the first process opens the environment.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <string>
#include <string_view>
#include <vector>

namespace fleetpipe::powercut {

enum class Op : std::uint32_t {
  name = 1,          ///< file id -> path relative to the watched directory (data)
  write = 2,         ///< data at offset
  sync = 3,          ///< fsync / fdatasync of the file
  sync_range = 4,    ///< an O_DSYNC write: [offset, offset+len) durable
  truncate = 5,      ///< size = offset
  rename = 6,        ///< "from\0to" (absolute paths)
  mark = 7,          ///< the workload's note (data), e.g. a record the Buffer accepted
  writable_map = 8,  ///< a shared writable mmap of the file: writes the trace cannot see
};

struct OpHeader {
  std::uint32_t op;
  std::int32_t file;
  std::uint64_t offset;
  std::uint64_t len;
};

/// Starts recording calls on files under `dir` (an absolute path) into `trace_path`.
bool arm(const char* dir, const char* trace_path);
/// Adds a note to the trace, ordered with the file operations around it.
void mark(std::string_view text);

struct TraceOp {
  Op op;
  std::int32_t file;
  std::uint64_t offset, len;
  std::string data;
};

inline std::vector<TraceOp> read_trace(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::vector<TraceOp> out;
  OpHeader h{};
  while (in.read(reinterpret_cast<char*>(&h), sizeof h)) {
    TraceOp t{static_cast<Op>(h.op), h.file, h.offset, h.len, {}};
    if (h.op == static_cast<std::uint32_t>(Op::name) || h.op == static_cast<std::uint32_t>(Op::write) ||
        h.op == static_cast<std::uint32_t>(Op::rename) || h.op == static_cast<std::uint32_t>(Op::mark)) {
      t.data.resize(h.len);
      if (!in.read(t.data.data(), static_cast<std::streamsize>(h.len))) break;  // cut short
    }
    out.push_back(std::move(t));
  }
  return out;
}

enum class Reorder { reordered, ordered };

struct CrashStats {
  std::size_t pending_writes = 0;  ///< issued after the file's last sync, before the cut
  std::size_t kept_sectors = 0, dropped_sectors = 0;
};

/// Writes into `out` the files a power cut just before op `cut` may leave (cut = ops.size():
/// after the run). Paths are relative to the watched directory.
inline CrashStats make_crash_state(const std::vector<TraceOp>& ops, std::size_t cut, Reorder mode,
                                   std::mt19937_64& rng, const std::filesystem::path& out) {
  constexpr std::uint64_t kSector = 512;
  struct Piece {
    std::uint64_t offset;
    std::string bytes;
  };
  struct File {
    std::string name;
    std::string durable;
    std::vector<std::vector<Piece>> pending;  // per write since the last sync: its sectors
    bool written = false;  // directories (opened for fsync) and untouched files are not
  };
  std::map<std::int32_t, File> files;
  auto apply = [](std::string& img, std::uint64_t off, std::string_view b) {
    if (img.size() < off + b.size()) img.resize(off + b.size(), '\0');
    std::memcpy(img.data() + off, b.data(), b.size());
  };
  for (std::size_t i = 0; i < cut && i < ops.size(); ++i) {
    const auto& o = ops[i];
    if (o.op == Op::name) {
      files[o.file].name = o.data;
      continue;
    }
    if (o.file < 0) continue;
    File& f = files[o.file];
    f.written = f.written || o.op == Op::write || o.op == Op::truncate;
    switch (o.op) {
      case Op::write: {
        std::vector<Piece> w;
        for (std::uint64_t p = o.offset; p < o.offset + o.len;) {
          std::uint64_t end = std::min(o.offset + o.len, (p / kSector + 1) * kSector);
          w.push_back({p, o.data.substr(p - o.offset, end - p)});
          p = end;
        }
        f.pending.push_back(std::move(w));
        break;
      }
      case Op::sync:
        for (const auto& w : f.pending)
          for (const auto& s : w) apply(f.durable, s.offset, s.bytes);
        f.pending.clear();
        break;
      case Op::sync_range: {
        // The O_DSYNC write is the last pending one: durable now; older versions of its
        // sectors can no longer land over it.
        if (f.pending.empty()) break;
        auto w = std::move(f.pending.back());
        f.pending.pop_back();
        for (const auto& s : w) apply(f.durable, s.offset, s.bytes);
        for (auto& pw : f.pending)
          pw.erase(std::remove_if(pw.begin(), pw.end(),
                                  [&](const Piece& s) {
                                    return s.offset >= o.offset && s.offset < o.offset + o.len;
                                  }),
                   pw.end());
        break;
      }
      case Op::truncate:
        for (const auto& w : f.pending)
          for (const auto& s : w) apply(f.durable, s.offset, s.bytes);
        f.pending.clear();
        f.durable.resize(o.offset, '\0');
        break;
      default:
        break;
    }
  }
  CrashStats st;
  std::bernoulli_distribution coin(0.5);
  for (auto& [id, f] : files) {
    if (!f.written || f.name.empty() || f.name.find("lock.mdb") != std::string::npos) continue;
    std::string img = f.durable;
    st.pending_writes += f.pending.size();
    std::vector<const Piece*> land;
    if (mode == Reorder::reordered) {
      for (const auto& w : f.pending)
        for (const auto& s : w) {
          if (coin(rng)) land.push_back(&s);
          else ++st.dropped_sectors;
        }
      std::shuffle(land.begin(), land.end(), rng);
    } else if (!f.pending.empty()) {
      std::size_t n = std::uniform_int_distribution<std::size_t>(0, f.pending.size())(rng);
      for (std::size_t w = 0; w < n; ++w) {
        bool last = w + 1 == n;
        for (const auto& s : f.pending[w]) {
          if (last && !coin(rng)) {
            ++st.dropped_sectors;
            continue;
          }
          land.push_back(&s);
        }
      }
      for (std::size_t w = n; w < f.pending.size(); ++w) st.dropped_sectors += f.pending[w].size();
    }
    for (const Piece* s : land) apply(img, s->offset, s->bytes);
    st.kept_sectors += land.size();
    auto path = out / f.name;
    std::filesystem::create_directories(path.parent_path());
    std::ofstream(path, std::ios::binary).write(img.data(), static_cast<std::streamsize>(img.size()));
  }
  return st;
}

}  // namespace fleetpipe::powercut
