// Internal: small RAII owners for LMDB's environment, transactions and cursors, and the few
// MDB_val helpers the buffer uses. Each owner releases its handle on destruction; none throws.
#pragma once

#include <lmdb.h>

#include <cstddef>
#include <string>
#include <string_view>
#include <utility>

namespace fleetpipe::detail::lmdb {

inline MDB_val val(const void* p, std::size_t n) { return MDB_val{n, const_cast<void*>(p)}; }
inline std::string_view sv(const MDB_val& v) { return {static_cast<const char*>(v.mv_data), v.mv_size}; }
inline std::string text(int rc) { return std::string(mdb_strerror(rc)); }

/// LMDB errors that mean "this store is damaged": quarantine it.
inline bool is_corruption(int rc) {
  return rc == MDB_INVALID || rc == MDB_VERSION_MISMATCH || rc == MDB_CORRUPTED ||
         rc == MDB_PAGE_NOTFOUND || rc == MDB_INCOMPATIBLE;
}

/// Owns an MDB_env: create() then configure and open through get(); closed on destruction.
class Env {
 public:
  Env() = default;
  Env(const Env&) = delete;
  Env& operator=(const Env&) = delete;
  ~Env() { close(); }

  int create() {
    close();
    return mdb_env_create(&env_);
  }
  /// Closes the environment; every transaction and cursor of it must be gone.
  void close() {
    if (env_) mdb_env_close(env_);
    env_ = nullptr;
  }
  MDB_env* get() const { return env_; }
  explicit operator bool() const { return env_ != nullptr; }

 private:
  MDB_env* env_ = nullptr;
};

/// Owns an MDB_txn: aborted on destruction unless committed (a failed commit frees it too).
class Txn {
 public:
  Txn() = default;
  Txn(const Txn&) = delete;
  Txn& operator=(const Txn&) = delete;
  Txn(Txn&& o) noexcept : txn_(std::exchange(o.txn_, nullptr)) {}
  Txn& operator=(Txn&& o) noexcept {
    if (this != &o) {
      abort();
      txn_ = std::exchange(o.txn_, nullptr);
    }
    return *this;
  }
  ~Txn() { abort(); }

  int begin(MDB_env* env, unsigned flags) {
    abort();
    int rc = mdb_txn_begin(env, nullptr, flags, &txn_);
    if (rc) txn_ = nullptr;
    return rc;
  }
  int commit() { return mdb_txn_commit(std::exchange(txn_, nullptr)); }
  void abort() {
    if (txn_) mdb_txn_abort(txn_);
    txn_ = nullptr;
  }
  MDB_txn* get() const { return txn_; }
  explicit operator bool() const { return txn_ != nullptr; }

 private:
  MDB_txn* txn_ = nullptr;
};

/// Owns an MDB_cursor; closed on destruction (before its transaction ends).
class Cursor {
 public:
  Cursor() = default;
  Cursor(const Cursor&) = delete;
  Cursor& operator=(const Cursor&) = delete;
  ~Cursor() { close(); }

  int open(MDB_txn* txn, MDB_dbi dbi) {
    close();
    int rc = mdb_cursor_open(txn, dbi, &cur_);
    if (rc) cur_ = nullptr;
    return rc;
  }
  void close() {
    if (cur_) mdb_cursor_close(cur_);
    cur_ = nullptr;
  }
  int get(MDB_val& k, MDB_val& v, MDB_cursor_op op) { return mdb_cursor_get(cur_, &k, &v, op); }
  int del(unsigned flags = 0) { return mdb_cursor_del(cur_, flags); }
  int put(MDB_val& k, MDB_val& v, unsigned flags) { return mdb_cursor_put(cur_, &k, &v, flags); }

 private:
  MDB_cursor* cur_ = nullptr;
};

}  // namespace fleetpipe::detail::lmdb
