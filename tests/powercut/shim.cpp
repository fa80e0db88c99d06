// Power-cut recorder: interposes the write/sync calls LMDB and the Buffer make (open, write,
// writev, pwrite, fsync, fdatasync, ftruncate, rename, mmap) and, once armed, appends
// each one on a file under the watched directory to a binary trace (see trace.hpp). Compiled into
// the test executable, so calls from liblmdb.so and libstdc++ bind here first; unarmed, every
// call goes straight through.
#include <dlfcn.h>
#include <fcntl.h>
#include <stdarg.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>

#include "powercut/trace.hpp"

namespace {

using namespace fleetpipe::powercut;

constexpr int kMaxFds = 4096;
constexpr int kMaxFiles = 64;

struct State {
  bool armed = false;
  int trace_fd = -1;
  char dir[512] = {};
  std::size_t dir_len = 0;
  std::int32_t fd_file[kMaxFds];  // fd -> file id, -1 when not watched
  bool fd_dsync[kMaxFds];
  char files[kMaxFiles][256];
  int nfiles = 0;
  State() {
    for (auto& f : fd_file) f = -1;
  }
};
State g;

template <typename F>
F real(const char* name) {
  return reinterpret_cast<F>(dlsym(RTLD_NEXT, name));
}

ssize_t raw_write(int fd, const void* p, std::size_t n) {
  static auto w = real<ssize_t (*)(int, const void*, std::size_t)>("write");
  return w(fd, p, n);
}

// `data` (len bytes) follows the header for the ops that carry data; for the others (data null)
// len is a length in the file.
void emit(Op op, std::int32_t file, std::uint64_t off, const void* data, std::uint64_t len) {
  OpHeader h{static_cast<std::uint32_t>(op), file, off, len};
  if (!data) {
    (void)raw_write(g.trace_fd, &h, sizeof h);
    return;
  }
  // One buffer, one write: a reader never sees half a record.
  static char buf[1 << 16];
  if (sizeof h + len <= sizeof buf) {
    std::memcpy(buf, &h, sizeof h);
    std::memcpy(buf + sizeof h, data, len);
    (void)raw_write(g.trace_fd, buf, sizeof h + len);
  } else {
    (void)raw_write(g.trace_fd, &h, sizeof h);
    (void)raw_write(g.trace_fd, data, len);
  }
}

// The id of `path` when it lies in the watched directory, else -1.
std::int32_t file_of(const char* path) {
  if (!g.armed || !path || std::strncmp(path, g.dir, g.dir_len) != 0 || path[g.dir_len] != '/')
    return -1;
  const char* rel = path + g.dir_len + 1;
  for (int i = 0; i < g.nfiles; ++i)
    if (std::strcmp(g.files[i], rel) == 0) return i;
  if (g.nfiles == kMaxFiles || std::strlen(rel) >= sizeof g.files[0]) return -1;
  std::strcpy(g.files[g.nfiles], rel);
  emit(Op::name, g.nfiles, 0, rel, std::strlen(rel));
  return g.nfiles++;
}

std::int32_t watched(int fd) { return fd >= 0 && fd < kMaxFds && g.armed ? g.fd_file[fd] : -1; }

void opened(int fd, const char* path, int flags) {
  if (fd < 0 || fd >= kMaxFds) return;
  std::int32_t f = file_of(path);
  g.fd_file[fd] = f;
  g.fd_dsync[fd] = (flags & (O_DSYNC | O_SYNC)) != 0;
  if (f >= 0 && (flags & O_TRUNC)) emit(Op::truncate, f, 0, nullptr, 0);
}

void wrote(int fd, std::uint64_t off, const void* p, ssize_t n) {
  std::int32_t f = watched(fd);
  if (f < 0 || n <= 0) return;
  emit(Op::write, f, off, p, static_cast<std::uint64_t>(n));
  if (g.fd_dsync[fd]) emit(Op::sync_range, f, off, nullptr, static_cast<std::uint64_t>(n));
}

std::uint64_t position(int fd) {
  int fl = fcntl(fd, F_GETFL);
  if (fl >= 0 && (fl & O_APPEND)) {
    struct stat st {};
    return fstat(fd, &st) == 0 ? static_cast<std::uint64_t>(st.st_size) : 0;
  }
  off_t o = lseek(fd, 0, SEEK_CUR);
  return o < 0 ? 0 : static_cast<std::uint64_t>(o);
}

void wrote_iov(int fd, std::uint64_t off, const struct iovec* iov, int cnt, ssize_t n) {
  if (watched(fd) < 0 || n <= 0) return;
  for (int i = 0; i < cnt && n > 0; ++i) {
    auto len = static_cast<ssize_t>(iov[i].iov_len) < n ? static_cast<ssize_t>(iov[i].iov_len) : n;
    wrote(fd, off, iov[i].iov_base, len);
    off += static_cast<std::uint64_t>(len);
    n -= len;
  }
}

int synced(int fd, int r) {
  if (r == 0 && watched(fd) >= 0) emit(Op::sync, watched(fd), 0, nullptr, 0);
  return r;
}

}  // namespace

namespace fleetpipe::powercut {

bool arm(const char* dir, const char* trace_path) {
  static auto o = real<int (*)(const char*, int, ...)>("open");
  g.trace_fd = o(trace_path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0644);
  if (g.trace_fd < 0) return false;
  std::size_t n = std::strlen(dir);
  if (n + 1 > sizeof g.dir) return false;
  std::memcpy(g.dir, dir, n + 1);
  g.dir_len = n;
  g.armed = true;
  return true;
}

void mark(std::string_view text) {
  if (g.armed) emit(Op::mark, -1, 0, text.data(), text.size());
}

}  // namespace fleetpipe::powercut

extern "C" {

int open(const char* path, int flags, ...) {
  static auto o = real<int (*)(const char*, int, ...)>("open");
  mode_t mode = 0;
  if (flags & (O_CREAT | O_TMPFILE)) {
    va_list ap;
    va_start(ap, flags);
    mode = static_cast<mode_t>(va_arg(ap, int));
    va_end(ap);
  }
  int fd = o(path, flags, mode);
  opened(fd, path, flags);
  return fd;
}

int close(int fd) {
  static auto c = real<int (*)(int)>("close");
  if (fd >= 0 && fd < kMaxFds) g.fd_file[fd] = -1;
  return c(fd);
}

ssize_t write(int fd, const void* p, size_t n) {
  std::uint64_t off = watched(fd) >= 0 ? position(fd) : 0;
  ssize_t r = raw_write(fd, p, n);
  wrote(fd, off, p, r);
  return r;
}

ssize_t writev(int fd, const struct iovec* iov, int cnt) {
  static auto w = real<ssize_t (*)(int, const struct iovec*, int)>("writev");
  std::uint64_t off = watched(fd) >= 0 ? position(fd) : 0;
  ssize_t r = w(fd, iov, cnt);
  wrote_iov(fd, off, iov, cnt, r);
  return r;
}

ssize_t pwrite(int fd, const void* p, size_t n, off_t off) {
  static auto w = real<ssize_t (*)(int, const void*, size_t, off_t)>("pwrite");
  ssize_t r = w(fd, p, n, off);
  wrote(fd, static_cast<std::uint64_t>(off), p, r);
  return r;
}

int fsync(int fd) {
  static auto s = real<int (*)(int)>("fsync");
  return synced(fd, s(fd));
}

int fdatasync(int fd) {
  static auto s = real<int (*)(int)>("fdatasync");
  return synced(fd, s(fd));
}

int ftruncate(int fd, off_t len) {
  static auto t = real<int (*)(int, off_t)>("ftruncate");
  int r = t(fd, len);
  if (r == 0 && watched(fd) >= 0) emit(Op::truncate, watched(fd), static_cast<std::uint64_t>(len), nullptr, 0);
  return r;
}

int rename(const char* from, const char* to) {
  static auto rn = real<int (*)(const char*, const char*)>("rename");
  int r = rn(from, to);
  if (r == 0 && (file_of(from) >= 0 || file_of(to) >= 0)) {
    std::string_view a(from), b(to);
    char buf[1100];
    if (a.size() + b.size() + 1 < sizeof buf) {
      std::memcpy(buf, from, a.size());
      buf[a.size()] = '\0';
      std::memcpy(buf + a.size() + 1, to, b.size());
      emit(Op::rename, -1, 0, buf, a.size() + 1 + b.size());
    }
  }
  return r;
}

void* mmap(void* addr, size_t len, int prot, int flags, int fd, off_t off) {
  static auto m = real<void* (*)(void*, size_t, int, int, int, off_t)>("mmap");
  void* r = m(addr, len, prot, flags, fd, off);
  // Writes through a shared writable map bypass this trace (LMDB's MDB_WRITEMAP): say so, the
  // test fails on it. lock.mdb is exempt: LMDB rebuilds it when the first process opens the env.
  std::int32_t f = watched(fd);
  if (r != MAP_FAILED && f >= 0 && (prot & PROT_WRITE) && (flags & MAP_SHARED) &&
      std::strstr(g.files[f], "lock.mdb") == nullptr)
    emit(Op::writable_map, f, 0, nullptr, 0);
  return r;
}

// Kernel AIO runs the Buffer's background fdatasync where this trace cannot see when it ends:
// refuse io_setup, so the Buffer falls back to an inline fdatasync (the path it takes where
// kernel AIO is missing) and every sync is in the trace.
long syscall(long n, ...) {
  static auto s = real<long (*)(long, ...)>("syscall");
  va_list ap;
  va_start(ap, n);
  long a[6];
  for (auto& x : a) x = va_arg(ap, long);
  va_end(ap);
  if (g.armed && n == SYS_io_setup) {
    errno = ENOSYS;
    return -1;
  }
  return s(n, a[0], a[1], a[2], a[3], a[4], a[5]);
}

}  // extern "C"
