// Test and benchmark helper: replaces every global operator new/delete form with a counting
// malloc/free pair, so a hot path can be shown to allocate nothing, and that can be told to fail
// after N allocations (out-of-memory tests). Include it in exactly ONE translation unit of a
// program (it defines the replacements); read `g_allocs`, arm with `FailAfter`.
#pragma once

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <new>

// GCC's -Wmismatched-new-delete cannot see that these replacements pair malloc with free on
// purpose (it pattern-matches the inlined std::allocator calls at -O2).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif

namespace fleetpipe::test {
/// Number of operator new calls (all forms) since program start.
inline std::atomic<std::uint64_t> g_allocs{0};
/// Allocations left before every further one fails; -1 = never fail.
inline std::atomic<std::int64_t> g_allocs_left{-1};

/// True when this allocation may succeed (takes one from g_allocs_left when armed).
inline bool allocation_allowed() noexcept {
  fleetpipe::test::g_allocs.fetch_add(1, std::memory_order_relaxed);
  std::int64_t left = g_allocs_left.load(std::memory_order_relaxed);
  while (left > 0 && !g_allocs_left.compare_exchange_weak(left, left - 1)) {
  }
  return left != 0;
}

/// While alive, the first `n` allocations succeed and every later one fails (std::bad_alloc,
/// nullptr for the nothrow forms). Single scope at a time.
class FailAfter {
 public:
  explicit FailAfter(std::int64_t n) noexcept { g_allocs_left.store(n); }
  ~FailAfter() { g_allocs_left.store(-1); }
  FailAfter(const FailAfter&) = delete;
  FailAfter& operator=(const FailAfter&) = delete;
};
}  // namespace fleetpipe::test

// Every replaceable form, so no allocation pairs ours with the runtime's (ASan checks that).
void* operator new(std::size_t n) {
  if (!fleetpipe::test::allocation_allowed()) throw std::bad_alloc();
  if (void* p = std::malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t n) { return operator new(n); }
void* operator new(std::size_t n, const std::nothrow_t&) noexcept {
  if (!fleetpipe::test::allocation_allowed()) return nullptr;
  return std::malloc(n ? n : 1);
}
void* operator new[](std::size_t n, const std::nothrow_t& t) noexcept { return operator new(n, t); }
void* operator new(std::size_t n, std::align_val_t a) {
  if (!fleetpipe::test::allocation_allowed()) throw std::bad_alloc();
  std::size_t al = static_cast<std::size_t>(a);
  if (void* p = std::aligned_alloc(al, (n + al - 1) / al * al)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t n, std::align_val_t a) { return operator new(n, a); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }
