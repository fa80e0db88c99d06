// Multi-lane MD5 (RFC 1321), see detail/md5_lanes.hpp.
#include "s3/md5_lanes.hpp"

#include <algorithm>
#include <cstring>

#include <utility>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define FLEETPIPE_MD5_AVX2 1
#elif defined(__aarch64__) && !defined(__ARM_BIG_ENDIAN)
#include <arm_neon.h>
#include <asm/hwcap.h>
#include <sys/auxv.h>
#define FLEETPIPE_MD5_NEON 1
#endif

namespace fleetpipe::detail {
namespace {

constexpr std::uint32_t kInit[4] = {0x67452301u, 0xefcdab89u, 0x98badcfeu, 0x10325476u};

constexpr std::uint32_t kK[64] = {
    0xd76aa478, 0xe8c7b756, 0x242070db, 0xc1bdceee, 0xf57c0faf, 0x4787c62a, 0xa8304613, 0xfd469501,
    0x698098d8, 0x8b44f7af, 0xffff5bb1, 0x895cd7be, 0x6b901122, 0xfd987193, 0xa679438e, 0x49b40821,
    0xf61e2562, 0xc040b340, 0x265e5a51, 0xe9b6c7aa, 0xd62f105d, 0x02441453, 0xd8a1e681, 0xe7d3fbc8,
    0x21e1cde6, 0xc33707d6, 0xf4d50d87, 0x455a14ed, 0xa9e3e905, 0xfcefa3f8, 0x676f02d9, 0x8d2a4c8a,
    0xfffa3942, 0x8771f681, 0x6d9d6122, 0xfde5380c, 0xa4beea44, 0x4bdecfa9, 0xf6bb4b60, 0xbebfbc70,
    0x289b7ec6, 0xeaa127fa, 0xd4ef3085, 0x04881d05, 0xd9d4d039, 0xe6db99e5, 0x1fa27cf8, 0xc4ac5665,
    0xf4292244, 0x432aff97, 0xab9423a7, 0xfc93a039, 0x655b59c3, 0x8f0ccc92, 0xffeff47d, 0x85845dd1,
    0x6fa87e4f, 0xfe2ce6e0, 0xa3014314, 0x4e0811a1, 0xf7537e82, 0xbd3af235, 0x2ad7d2bb, 0xeb86d391};

// Step i reads message word kG[i] and rotates by kS[i].
constexpr int kG[64] = {0, 1, 2,  3,  4,  5,  6,  7,  8,  9,  10, 11, 12, 13, 14, 15,
                        1, 6, 11, 0,  5,  10, 15, 4,  9,  14, 3,  8,  13, 2,  7,  12,
                        5, 8, 11, 14, 1,  4,  7,  10, 13, 0,  3,  6,  9,  12, 15, 2,
                        0, 7, 14, 5,  12, 3,  10, 1,  8,  15, 6,  13, 4,  11, 2,  9};
constexpr int kS[64] = {7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22,
                        5, 9,  14, 20, 5, 9,  14, 20, 5, 9,  14, 20, 5, 9,  14, 20,
                        4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23,
                        6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21};

alignas(64) const unsigned char kIdleBlock[64] = {};

inline std::uint32_t load_le32(const unsigned char* p) {
  return std::uint32_t(p[0]) | std::uint32_t(p[1]) << 8 | std::uint32_t(p[2]) << 16 | std::uint32_t(p[3]) << 24;
}

inline std::uint32_t rotl(std::uint32_t x, int s) { return (x << s) | (x >> (32 - s)); }

// One lane, one block.
void compress_portable(std::uint32_t st[4], const unsigned char* p) {
  std::uint32_t m[16];
  for (int i = 0; i < 16; ++i) m[i] = load_le32(p + 4 * i);
  std::uint32_t a = st[0], b = st[1], c = st[2], d = st[3];
  for (int i = 0; i < 64; ++i) {
    std::uint32_t f;
    if (i < 16) f = d ^ (b & (c ^ d));
    else if (i < 32) f = c ^ (d & (b ^ c));
    else if (i < 48) f = b ^ c ^ d;
    else f = c ^ (b | ~d);
    std::uint32_t t = d;
    d = c;
    c = b;
    b = b + rotl(a + f + kK[i] + m[kG[i]], kS[i]);
    a = t;
  }
  st[0] += a;
  st[1] += b;
  st[2] += c;
  st[3] += d;
}

#ifdef FLEETPIPE_MD5_AVX2
// Eight lanes, n blocks each, one lane per 32-bit element of a 256-bit register. The 64 steps
// are written out so every rotate count and message index is a compile-time constant. An idle
// lane (ptrs[l] == idle) reads the same block each time; the caller restores its state.
// Defined twice: AVX2 (rotate = two shifts and an or; F..I from two or three logic ops) and
// AVX-512VL on the same 256-bit registers (vprold; each of F..I one vpternlogd).
#define FP_MD5X8_KERNEL(name, isa)                                                                   \
  __attribute__((target(isa))) void name(std::uint32_t st[4][8], const unsigned char* const ptrs[8], \
                                            const unsigned char* idle, std::size_t n) {             \
    std::size_t step[8];                                                                             \
    for (int l = 0; l < 8; ++l) step[l] = ptrs[l] == idle ? 0 : 64;                                  \
    __m256i a = _mm256_load_si256(reinterpret_cast<const __m256i*>(st[0]));                          \
    __m256i b = _mm256_load_si256(reinterpret_cast<const __m256i*>(st[1]));                          \
    __m256i c = _mm256_load_si256(reinterpret_cast<const __m256i*>(st[2]));                          \
    __m256i d = _mm256_load_si256(reinterpret_cast<const __m256i*>(st[3]));                          \
    const __m256i ones = _mm256_set1_epi32(-1);                                                      \
    (void)ones;                                                                                      \
    for (std::size_t blk = 0; blk < n; ++blk) {                                                      \
      __m256i m[16];                                                                                 \
      for (int half = 0; half < 2; ++half) { /* transpose 8 lanes x 8 words, twice */               \
        __m256i r[8];                                                                                \
        for (int l = 0; l < 8; ++l)                                                                  \
          r[l] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ptrs[l] + blk * step[l] + half * 32)); \
        __m256i t0 = _mm256_unpacklo_epi32(r[0], r[1]), t1 = _mm256_unpackhi_epi32(r[0], r[1]);     \
        __m256i t2 = _mm256_unpacklo_epi32(r[2], r[3]), t3 = _mm256_unpackhi_epi32(r[2], r[3]);     \
        __m256i t4 = _mm256_unpacklo_epi32(r[4], r[5]), t5 = _mm256_unpackhi_epi32(r[4], r[5]);     \
        __m256i t6 = _mm256_unpacklo_epi32(r[6], r[7]), t7 = _mm256_unpackhi_epi32(r[6], r[7]);     \
        __m256i u0 = _mm256_unpacklo_epi64(t0, t2), u1 = _mm256_unpackhi_epi64(t0, t2);             \
        __m256i u2 = _mm256_unpacklo_epi64(t1, t3), u3 = _mm256_unpackhi_epi64(t1, t3);             \
        __m256i u4 = _mm256_unpacklo_epi64(t4, t6), u5 = _mm256_unpackhi_epi64(t4, t6);             \
        __m256i u6 = _mm256_unpacklo_epi64(t5, t7), u7 = _mm256_unpackhi_epi64(t5, t7);             \
        __m256i* w = m + half * 8;                                                                   \
        w[0] = _mm256_permute2x128_si256(u0, u4, 0x20);                                              \
        w[1] = _mm256_permute2x128_si256(u1, u5, 0x20);                                              \
        w[2] = _mm256_permute2x128_si256(u2, u6, 0x20);                                              \
        w[3] = _mm256_permute2x128_si256(u3, u7, 0x20);                                              \
        w[4] = _mm256_permute2x128_si256(u0, u4, 0x31);                                              \
        w[5] = _mm256_permute2x128_si256(u1, u5, 0x31);                                              \
        w[6] = _mm256_permute2x128_si256(u2, u6, 0x31);                                              \
        w[7] = _mm256_permute2x128_si256(u3, u7, 0x31);                                              \
      }                                                                                              \
      const __m256i a0 = a, b0 = b, c0 = c, d0 = d;                                                  \
      FP_FOUR(FP_F, 0, 7, 12, 17, 22); FP_FOUR(FP_F, 4, 7, 12, 17, 22); FP_FOUR(FP_F, 8, 7, 12, 17, 22); FP_FOUR(FP_F, 12, 7, 12, 17, 22);                       \
      FP_FOUR(FP_G, 16, 5, 9, 14, 20); FP_FOUR(FP_G, 20, 5, 9, 14, 20); FP_FOUR(FP_G, 24, 5, 9, 14, 20); FP_FOUR(FP_G, 28, 5, 9, 14, 20);                    \
      FP_FOUR(FP_H, 32, 4, 11, 16, 23); FP_FOUR(FP_H, 36, 4, 11, 16, 23); FP_FOUR(FP_H, 40, 4, 11, 16, 23); FP_FOUR(FP_H, 44, 4, 11, 16, 23);                    \
      FP_FOUR(FP_I, 48, 6, 10, 15, 21); FP_FOUR(FP_I, 52, 6, 10, 15, 21); FP_FOUR(FP_I, 56, 6, 10, 15, 21); FP_FOUR(FP_I, 60, 6, 10, 15, 21);                    \
      a = _mm256_add_epi32(a, a0);                                                                   \
      b = _mm256_add_epi32(b, b0);                                                                   \
      c = _mm256_add_epi32(c, c0);                                                                   \
      d = _mm256_add_epi32(d, d0);                                                                   \
    }                                                                                                \
    _mm256_store_si256(reinterpret_cast<__m256i*>(st[0]), a);                                        \
    _mm256_store_si256(reinterpret_cast<__m256i*>(st[1]), b);                                        \
    _mm256_store_si256(reinterpret_cast<__m256i*>(st[2]), c);                                        \
    _mm256_store_si256(reinterpret_cast<__m256i*>(st[3]), d);                                        \
  }

#define FP_ADD _mm256_add_epi32
// Rotate counts are literals (an immediate operand even in unoptimized builds).
#define FP_STEP(fn, w, x, y, z, i, r)                                                             \
  do {                                                                                            \
    __m256i v = FP_ADD(FP_ADD(w, fn(x, y, z)), FP_ADD(_mm256_set1_epi32(int(kK[i])), m[kG[i]])); \
    w = FP_ADD(x, FP_ROTL(v, r));                                                                 \
  } while (0)
#define FP_FOUR(fn, i, r0, r1, r2, r3)  \
  FP_STEP(fn, a, b, c, d, i, r0);       \
  FP_STEP(fn, d, a, b, c, i + 1, r1);   \
  FP_STEP(fn, c, d, a, b, i + 2, r2);   \
  FP_STEP(fn, b, c, d, a, i + 3, r3)

#define FP_F(x, y, z) _mm256_xor_si256(z, _mm256_and_si256(x, _mm256_xor_si256(y, z)))
#define FP_G(x, y, z) _mm256_xor_si256(y, _mm256_and_si256(z, _mm256_xor_si256(x, y)))
#define FP_H(x, y, z) _mm256_xor_si256(_mm256_xor_si256(x, y), z)
#define FP_I(x, y, z) _mm256_xor_si256(y, _mm256_or_si256(x, _mm256_xor_si256(z, ones)))
#define FP_ROTL(v, s) _mm256_or_si256(_mm256_slli_epi32(v, s), _mm256_srli_epi32(v, 32 - (s)))
FP_MD5X8_KERNEL(compress_avx2, "avx2")
#undef FP_F
#undef FP_G
#undef FP_H
#undef FP_I
#undef FP_ROTL

// vpternlogd immediates: the function's truth table over x = 0xF0, y = 0xCC, z = 0xAA.
#define FP_F(x, y, z) _mm256_ternarylogic_epi32(x, y, z, 0xCA)
#define FP_G(x, y, z) _mm256_ternarylogic_epi32(x, y, z, 0xE4)
#define FP_H(x, y, z) _mm256_ternarylogic_epi32(x, y, z, 0x96)
#define FP_I(x, y, z) _mm256_ternarylogic_epi32(x, y, z, 0x39)
#define FP_ROTL(v, s) _mm256_rol_epi32(v, s)
FP_MD5X8_KERNEL(compress_avx512vl, "avx2,avx512f,avx512vl")
#undef FP_F
#undef FP_G
#undef FP_H
#undef FP_I
#undef FP_ROTL
#undef FP_FOUR
#undef FP_STEP
#undef FP_ADD
#undef FP_MD5X8_KERNEL

Md5Lanes::Simd pick_simd(Md5Lanes::Engine e) {
  __builtin_cpu_init();
  if (e == Md5Lanes::Engine::best && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl"))
    return Md5Lanes::Simd::avx512vl;
  if (e != Md5Lanes::Engine::portable && __builtin_cpu_supports("avx2")) return Md5Lanes::Simd::avx2;
  return Md5Lanes::Simd::none;
}
#endif

#ifdef FLEETPIPE_MD5_NEON
// Eight lanes as two uint32x4_t sets (lanes 0-3, 4-7), n blocks each; the two sets are
// independent chains, interleaved so one's latency hides behind the other's work. Per step and
// set: F and G are one BSL, H two EOR, I an ORN and an EOR; the rotate is SHL + SRI (NEON has
// no vector rotate); four adds. Step I's function, word and rotate are template constants.
template <int I>
inline uint32x4_t md5_fn(uint32x4_t x, uint32x4_t y, uint32x4_t z) {
  if constexpr (I < 16) return vbslq_u32(x, y, z);      // z ^ (x & (y ^ z))
  else if constexpr (I < 32) return vbslq_u32(z, x, y); // y ^ (z & (x ^ y))
  else if constexpr (I < 48) return veorq_u32(veorq_u32(x, y), z);
  else return veorq_u32(y, vornq_u32(x, z));            // y ^ (x | ~z)
}

template <int I>
inline void neon_step(uint32x4_t (&s)[4], const uint32x4_t* m) {
  constexpr int w = (4 - I % 4) % 4;  // a, d, c, b in turn take the new value
  const uint32x4_t v = vaddq_u32(vaddq_u32(s[w], md5_fn<I>(s[(w + 1) % 4], s[(w + 2) % 4], s[(w + 3) % 4])),
                                 vaddq_u32(vdupq_n_u32(kK[I]), m[kG[I]]));
  s[w] = vaddq_u32(s[(w + 1) % 4], vsriq_n_u32(vshlq_n_u32(v, kS[I]), v, 32 - kS[I]));
}

template <std::size_t... I>
inline void neon_rounds(uint32x4_t (&lo)[4], uint32x4_t (&hi)[4], const uint32x4_t* mlo,
                        const uint32x4_t* mhi, std::index_sequence<I...>) {
  ((neon_step<int(I)>(lo, mlo), neon_step<int(I)>(hi, mhi)), ...);
}

// The 16 message words of one block for four lanes: m[j] holds word j of each lane.
inline void neon_words(uint32x4_t m[16], const unsigned char* const p[4]) {
  for (int q = 0; q < 4; ++q) {  // a 4 x 4 transpose per group of four words
    const uint32x4_t r0 = vreinterpretq_u32_u8(vld1q_u8(p[0] + 16 * q));
    const uint32x4_t r1 = vreinterpretq_u32_u8(vld1q_u8(p[1] + 16 * q));
    const uint32x4_t r2 = vreinterpretq_u32_u8(vld1q_u8(p[2] + 16 * q));
    const uint32x4_t r3 = vreinterpretq_u32_u8(vld1q_u8(p[3] + 16 * q));
    const uint64x2_t t0 = vreinterpretq_u64_u32(vtrn1q_u32(r0, r1));
    const uint64x2_t t1 = vreinterpretq_u64_u32(vtrn2q_u32(r0, r1));
    const uint64x2_t t2 = vreinterpretq_u64_u32(vtrn1q_u32(r2, r3));
    const uint64x2_t t3 = vreinterpretq_u64_u32(vtrn2q_u32(r2, r3));
    m[4 * q + 0] = vreinterpretq_u32_u64(vtrn1q_u64(t0, t2));
    m[4 * q + 1] = vreinterpretq_u32_u64(vtrn1q_u64(t1, t3));
    m[4 * q + 2] = vreinterpretq_u32_u64(vtrn2q_u64(t0, t2));
    m[4 * q + 3] = vreinterpretq_u32_u64(vtrn2q_u64(t1, t3));
  }
}

// An idle lane (ptrs[l] == idle) reads the same block each time; the caller restores its state.
void compress_neon(std::uint32_t st[4][8], const unsigned char* const ptrs[8], const unsigned char* idle,
                   std::size_t n) {
  std::size_t step[8];
  for (int l = 0; l < 8; ++l) step[l] = ptrs[l] == idle ? 0 : 64;
  uint32x4_t lo[4], hi[4];
  for (int j = 0; j < 4; ++j) {
    lo[j] = vld1q_u32(st[j]);
    hi[j] = vld1q_u32(st[j] + 4);
  }
  for (std::size_t blk = 0; blk < n; ++blk) {
    const unsigned char* p[8];
    for (int l = 0; l < 8; ++l) p[l] = ptrs[l] + blk * step[l];
    uint32x4_t mlo[16], mhi[16];
    neon_words(mlo, p);
    neon_words(mhi, p + 4);
    const uint32x4_t lo0[4] = {lo[0], lo[1], lo[2], lo[3]}, hi0[4] = {hi[0], hi[1], hi[2], hi[3]};
    neon_rounds(lo, hi, mlo, mhi, std::make_index_sequence<64>{});
    for (int j = 0; j < 4; ++j) {
      lo[j] = vaddq_u32(lo[j], lo0[j]);
      hi[j] = vaddq_u32(hi[j], hi0[j]);
    }
  }
  for (int j = 0; j < 4; ++j) {
    vst1q_u32(st[j], lo[j]);
    vst1q_u32(st[j] + 4, hi[j]);
  }
}

// Advanced SIMD is part of every ARMv8-A core Linux runs on; the kernel still says so in HWCAP.
Md5Lanes::Simd pick_simd(Md5Lanes::Engine e) {
  if (e != Md5Lanes::Engine::portable && (getauxval(AT_HWCAP) & HWCAP_ASIMD) != 0) return Md5Lanes::Simd::neon;
  return Md5Lanes::Simd::none;
}
#elif !defined(FLEETPIPE_MD5_AVX2)
Md5Lanes::Simd pick_simd(Md5Lanes::Engine) { return Md5Lanes::Simd::none; }
#endif

}  // namespace

Md5Lanes::Md5Lanes(Engine e) noexcept : simd_(pick_simd(e)) { clear(); }

void Md5Lanes::clear() noexcept {
  for (std::size_t l = 0; l < kLanes; ++l) reset(l);
}

Md5Lanes::Simd Md5Lanes::available() noexcept {
  static const Simd best = pick_simd(Engine::best);
  return best;
}

void Md5Lanes::reset(std::size_t lane) noexcept {
  for (int j = 0; j < 4; ++j) state_[j][lane] = kInit[j];
  total_[lane] = 0;
  carry_len_[lane] = 0;
}

void Md5Lanes::blocks(const unsigned char* const* ptrs, std::size_t n) noexcept {
#ifdef FLEETPIPE_MD5_AVX2
  if (simd_ == Simd::avx512vl) return compress_avx512vl(state_, ptrs, kIdleBlock, n);
  if (simd_ == Simd::avx2) return compress_avx2(state_, ptrs, kIdleBlock, n);
#endif
#ifdef FLEETPIPE_MD5_NEON
  if (simd_ == Simd::neon) return compress_neon(state_, ptrs, kIdleBlock, n);
#endif
  for (std::size_t l = 0; l < kLanes; ++l) {
    if (ptrs[l] == kIdleBlock) continue;
    std::uint32_t st[4] = {state_[0][l], state_[1][l], state_[2][l], state_[3][l]};
    for (std::size_t k = 0; k < n; ++k) compress_portable(st, ptrs[l] + 64 * k);
    for (int j = 0; j < 4; ++j) state_[j][l] = st[j];
  }
}

void Md5Lanes::update(const std::array<Span, kLanes>& spans) noexcept {
  std::array<const unsigned char*, kLanes> p{};
  std::array<std::size_t, kLanes> left{};
  for (std::size_t l = 0; l < kLanes; ++l) {
    p[l] = static_cast<const unsigned char*>(spans[l].data);
    left[l] = spans[l].size;
    total_[l] += left[l];
    if (carry_len_[l] > 0 && left[l] > 0) {  // top up the partial block first
      std::size_t take = std::min(left[l], 64 - carry_len_[l]);
      std::memcpy(carry_[l].data() + carry_len_[l], p[l], take);
      carry_len_[l] += take;
      p[l] += take;
      left[l] -= take;
    }
  }
  while (true) {
    std::array<const unsigned char*, kLanes> ptrs{};
    std::size_t n = SIZE_MAX;
    bool any = false;
    for (std::size_t l = 0; l < kLanes; ++l) {
      std::size_t avail = carry_len_[l] == 64 ? 1 : left[l] / 64;
      if (avail == 0) {
        ptrs[l] = kIdleBlock;
        continue;
      }
      any = true;
      ptrs[l] = carry_len_[l] == 64 ? carry_[l].data() : p[l];
      n = std::min(n, avail);
    }
    if (!any) break;
    // Idle lanes hash kIdleBlock too (the SIMD step is all-or-nothing): keep their state.
    alignas(32) std::uint32_t saved[4][kLanes];
    std::memcpy(saved, state_, sizeof saved);
    blocks(ptrs.data(), n);
    for (std::size_t l = 0; l < kLanes; ++l) {
      if (ptrs[l] == kIdleBlock) {
        for (int j = 0; j < 4; ++j) state_[j][l] = saved[j][l];
      } else if (ptrs[l] == carry_[l].data()) {
        carry_len_[l] = 0;
      } else {
        p[l] += 64 * n;
        left[l] -= 64 * n;
      }
    }
  }
  for (std::size_t l = 0; l < kLanes; ++l) {  // a tail shorter than a block waits in the carry
    if (left[l] == 0) continue;
    std::memcpy(carry_[l].data() + carry_len_[l], p[l], left[l]);
    carry_len_[l] += left[l];
  }
}

std::string Md5Lanes::finish(std::size_t lane) {
  // Padding: 0x80, zeros to 56 mod 64, the bit length little-endian; one or two blocks.
  unsigned char tail[128] = {};
  std::size_t len = carry_len_[lane];
  std::memcpy(tail, carry_[lane].data(), len);
  tail[len] = 0x80;
  std::size_t blocks_needed = len + 1 + 8 <= 64 ? 1 : 2;
  std::uint64_t bits = total_[lane] * 8;
  for (int i = 0; i < 8; ++i) tail[blocks_needed * 64 - 8 + i] = static_cast<unsigned char>(bits >> (8 * i));
  std::uint32_t st[4] = {state_[0][lane], state_[1][lane], state_[2][lane], state_[3][lane]};
  for (std::size_t k = 0; k < blocks_needed; ++k) compress_portable(st, tail + 64 * k);
  std::string out(16, '\0');
  for (int j = 0; j < 4; ++j)
    for (int i = 0; i < 4; ++i) out[static_cast<std::size_t>(4 * j + i)] = static_cast<char>(st[j] >> (8 * i));
  reset(lane);
  return out;
}

}  // namespace fleetpipe::detail
