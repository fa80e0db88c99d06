// Internal: up to eight independent MD5 streams hashed together, one per 32-bit SIMD lane.
//
// MD5 is strictly serial within one stream (~5 cycles/byte, ~60 % of the uploader's CPU per
// GiB); its steps are plain 32-bit adds, rotates and bit logic, so eight *different* streams fit
// the eight lanes of an AVX2 register and cost about what one does. The uploader uses it for
// the Content-MD5 of the next parts of a multipart upload, which all have the same size.
// AVX-512VL or AVX2 (x86-64) and NEON (aarch64: two 4-lane vectors) are picked at run time;
// other CPUs (armhf, where NEON is optional) get a portable loop over the lanes with the same
// results (docs/porting.md says why armhf has no NEON path).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>

namespace fleetpipe::detail {

class Md5Lanes {
 public:
  static constexpr std::size_t kLanes = 8;
  enum class Engine { best, avx2, portable };  ///< avx2: at most AVX2 (tests use each); ARM: as best
  enum class Simd { none, avx2, avx512vl, neon };

  struct Span {
    const void* data = nullptr;
    std::size_t size = 0;
  };

  /// All lanes start empty. `portable` forces the loop without SIMD.
  explicit Md5Lanes(Engine e = Engine::best) noexcept;

  /// Appends spans[l] to lane l's stream (size 0: the lane takes nothing this call). Lanes are
  /// hashed in lockstep over their common length, so callers pass spans of similar sizes.
  void update(const std::array<Span, kLanes>& spans) noexcept;

  /// The 16 raw digest bytes of lane l's stream; the lane starts empty again.
  std::string finish(std::size_t lane);

  /// Every lane starts empty again, whatever it held.
  void clear() noexcept;

  /// The SIMD engine this CPU offers (none: hash streams one by one instead, e.g. with OpenSSL,
  /// whose MD5 beats the portable loop).
  static Simd available() noexcept;

  /// The instruction set in use (picked from the CPU at construction).
  Simd simd() const noexcept { return simd_; }

 private:
  void reset(std::size_t lane) noexcept;
  void blocks(const unsigned char* const* ptrs, std::size_t n) noexcept;

  alignas(32) std::uint32_t state_[4][kLanes];
  std::array<std::uint64_t, kLanes> total_{};                  // bytes appended per lane
  std::array<std::array<unsigned char, 64>, kLanes> carry_{};  // a partial block per lane
  std::array<std::size_t, kLanes> carry_len_{};
  Simd simd_ = Simd::none;
};

}  // namespace fleetpipe::detail
