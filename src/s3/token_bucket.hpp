// Internal: a token bucket over bytes written to the socket.
//
// Tokens are bytes. They accrue at `rate` bytes/s up to `burst`; a writer asks how many bytes it
// may hand to the socket now (`available`), writes at most that, and `consume`s what it wrote.
// Consuming more than available (e.g. an HTTP header written in one piece) puts the bucket in
// debt, which later writes wait off — so over any long interval the bytes written are at most
// rate * t + burst. The bucket starts empty (and empties when a cap replaces "unlimited"), so
// the first interval after a start carries no burst: over the first T seconds at most rate * T
// bytes go out; afterwards a quiet spell refills at most `burst`.
//
// Pure integer arithmetic on caller-supplied times: tokens are counted in nano-bytes (1e-9 byte,
// so one nanosecond at R bytes/s earns exactly R of them), which makes every result exact and
// the same on every platform (no floating-point rounding, no FMA contraction).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <limits>

#include "fleetpipe/port.hpp"

namespace fleetpipe::detail {

class TokenBucket {
 public:
  static constexpr std::uint64_t kUnlimited = std::numeric_limits<std::uint64_t>::max();
  /// Rates are whole bytes/s in [1, kMaxRate] (a fraction is rounded, a rate above is clamped);
  /// bursts are at most kMaxBurst bytes. Both bounds keep nano-byte sums inside 64 bits.
  static constexpr std::uint64_t kMaxRate = std::uint64_t{1} << 32;   // 4 GiB/s
  static constexpr std::uint64_t kMaxBurst = std::uint64_t{1} << 32;  // 4 GiB

  /// rate_bytes_per_s <= 0 means unlimited; burst 0 means "rate / 50 (20 ms of
  /// traffic), at least 4 KiB": a 100 ms window carries at most 1.2 x the rate, even after a pause.
  TokenBucket(double rate_bytes_per_s, std::uint64_t burst, MonoTime now) noexcept;

  /// Changes rate and burst at run time. Tokens already earned are kept (capped to the new
  /// burst); debt is kept, so a rate change cannot be used to skip a wait.
  void set_rate(double rate_bytes_per_s, std::uint64_t burst, MonoTime now) noexcept;

  /// Whole bytes that may be written now (kUnlimited when unlimited; 0 while in debt).
  std::uint64_t available(MonoTime now) noexcept;

  /// Records `n` bytes written at `now` (may go into debt).
  void consume(std::uint64_t n, MonoTime now) noexcept;

  /// How long until `n` bytes (capped to burst) are available; zero when they already are.
  std::chrono::nanoseconds wait_for(std::uint64_t n, MonoTime now) noexcept;

  bool unlimited() const noexcept { return rate_ == 0; }
  /// The rate as it was set (so a caller comparing it with its config sees no change).
  double rate() const noexcept { return rate_set_; }
  std::uint64_t burst() const noexcept { return burst_; }

  /// The largest write for this bucket: its burst, at most `max_chunk` (`max_chunk` when
  /// unlimited). A writer writes what is available up to this, so at a steady cap each socket
  /// write (one TLS record, a syscall and a timer wait) carries about one burst.
  std::size_t chunk_size(std::size_t max_chunk) const noexcept;

  /// How many bytes a writer that wants `want` (<= chunk_size) waits for before writing what is
  /// available: `want`, or less where a wait that long plus its timer's lateness would find the
  /// bucket full and lose tokens (burst - 2 x the recent lateness in bytes - burst/16, at least
  /// burst/2). So the cap stays exact while the writes stay as large as the burst allows.
  std::size_t wait_target(std::size_t want) const noexcept;

  /// How late a writer's timer fired after the wait_for it asked for (the host's poll period
  /// when the io_context is polled). Feeds wait_target; a decaying maximum.
  void note_wake_lateness(std::chrono::nanoseconds late) noexcept;

 private:
  void refill(MonoTime now) noexcept;

  double rate_set_ = 0;
  std::uint64_t rate_ = 0;  ///< bytes/s = nano-bytes/ns; 0 = unlimited
  std::uint64_t burst_ = 0;
  std::int64_t tokens_ = 0;  ///< nano-bytes; negative = debt
  MonoTime last_{};
  // Recent timer lateness (decaying maximum), ns. Starts at a quarter of the burst's time, so a
  // new bucket waits for burst/2 (no token lost until the first timers have been measured).
  std::int64_t late_ns_ = -1;
};

}  // namespace fleetpipe::detail
