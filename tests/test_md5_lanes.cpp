// Multi-lane MD5 (src/s3/md5_lanes.hpp) against RFC 1321's test suite and OpenSSL's MD5, on
// every engine this CPU has (AVX-512VL, AVX2 or NEON, and the portable loop).
#include "s3/md5_lanes.hpp"

#include <catch2/catch.hpp>

#include <random>
#include <string>
#include <vector>

#include "s3/digest.hpp"

using fleetpipe::detail::Md5Lanes;
using fleetpipe::detail::md5_raw;
using fleetpipe::detail::to_hex;

namespace {

std::array<Md5Lanes::Span, Md5Lanes::kLanes> none() { return {}; }

const char* name(Md5Lanes::Simd s) {
  switch (s) {
    case Md5Lanes::Simd::none: return "portable";
    case Md5Lanes::Simd::avx2: return "avx2";
    case Md5Lanes::Simd::avx512vl: return "avx512vl";
    case Md5Lanes::Simd::neon: return "neon";
  }
  return "?";
}

}  // namespace

TEST_CASE("Md5Lanes gives RFC 1321's digests in every lane, on both engines") {
  const std::vector<std::pair<std::string, std::string>> suite = {
      {"", "d41d8cd98f00b204e9800998ecf8427e"},
      {"a", "0cc175b9c0f1b6a831c399e269772661"},
      {"abc", "900150983cd24fb0d6963f7d28e17f72"},
      {"message digest", "f96b697d7cb7938d525a2f31aaf161d0"},
      {"abcdefghijklmnopqrstuvwxyz", "c3fcd3d76192e4007dfb496cca67e13b"},
      {"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789", "d174ab98d277d9f5a5611c2c9f419d9f"},
      {"12345678901234567890123456789012345678901234567890123456789012345678901234567890",
       "57edf4a22be3c955ac49da2e2107b67a"},
  };
  for (auto engine : {Md5Lanes::Engine::best, Md5Lanes::Engine::avx2, Md5Lanes::Engine::portable}) {
    Md5Lanes h(engine);
    auto spans = none();
    for (std::size_t l = 0; l < Md5Lanes::kLanes; ++l) {
      const auto& s = suite[l % suite.size()].first;
      spans[l] = {s.data(), s.size()};
    }
    h.update(spans);
    for (std::size_t l = 0; l < Md5Lanes::kLanes; ++l) {
      INFO("lane " << l << ", engine " << int(engine) << ", simd " << int(h.simd()));
      CHECK(to_hex(h.finish(l)) == suite[l % suite.size()].second);
    }
  }
}

TEST_CASE("Md5Lanes matches OpenSSL for streams of different lengths fed in uneven pieces") {
  std::mt19937_64 rng(GENERATE(1, 2, 3, 4, 5));
  auto engine = GENERATE(Md5Lanes::Engine::best, Md5Lanes::Engine::avx2, Md5Lanes::Engine::portable);
  std::vector<std::string> data(Md5Lanes::kLanes);
  for (auto& d : data) {
    d.resize(rng() % 300000);
    for (auto& c : d) c = static_cast<char>(rng());
  }
  data[3].clear();  // an empty stream next to full ones
  data[5].resize(64);  // exactly one block
  Md5Lanes h(engine);
  std::vector<std::size_t> pos(Md5Lanes::kLanes, 0);
  bool more = true;
  while (more) {
    more = false;
    auto spans = none();
    for (std::size_t l = 0; l < Md5Lanes::kLanes; ++l) {
      std::size_t left = data[l].size() - pos[l];
      // Pieces of 0..70000 bytes: most lanes move together, some pause, tails cross blocks.
      std::size_t n = std::min<std::size_t>(left, rng() % 4 == 0 ? rng() % 130 : rng() % 70000);
      spans[l] = {data[l].data() + pos[l], n};
      pos[l] += n;
      more |= pos[l] < data[l].size();
    }
    h.update(spans);
  }
  for (std::size_t l = 0; l < Md5Lanes::kLanes; ++l) {
    INFO("lane " << l << ", " << data[l].size() << " bytes, simd " << int(h.simd()));
    CHECK(to_hex(h.finish(l)) == to_hex(md5_raw(data[l])));
  }
  if (engine == Md5Lanes::Engine::best) CHECK(h.simd() == Md5Lanes::available());
  // A finished lane starts over empty; the others are unaffected by its reuse.
  auto spans = none();
  spans[0] = {"abc", 3};
  h.update(spans);
  CHECK(to_hex(h.finish(0)) == "900150983cd24fb0d6963f7d28e17f72");
  CHECK(to_hex(h.finish(1)) == "d41d8cd98f00b204e9800998ecf8427e");
}

TEST_CASE("Md5Lanes::clear empties every lane, mid-block and after whole blocks") {
  const std::string abc = "abc";
  const std::string junk(200, 'x');  // three whole blocks and a partial one
  for (auto engine : {Md5Lanes::Engine::best, Md5Lanes::Engine::portable}) {
    Md5Lanes h(engine);
    auto spans = none();
    for (auto& s : spans) s = {junk.data(), junk.size()};
    h.update(spans);
    h.clear();
    for (auto& s : spans) s = {abc.data(), abc.size()};
    h.update(spans);
    for (std::size_t l = 0; l < Md5Lanes::kLanes; ++l) CHECK(to_hex(h.finish(l)) == "900150983cd24fb0d6963f7d28e17f72");
  }
}

TEST_CASE("Md5Lanes runs the SIMD path this CPU has, and says which one ran") {
  const Md5Lanes::Simd best = Md5Lanes::available();
  WARN("Md5Lanes: the SIMD path on this CPU is " << name(best));
#if defined(__aarch64__) && !defined(__ARM_BIG_ENDIAN)
  CHECK(best == Md5Lanes::Simd::neon);  // Advanced SIMD is in every ARMv8-A core
#elif defined(__x86_64__)
  CHECK(best != Md5Lanes::Simd::neon);
#else
  CHECK(best == Md5Lanes::Simd::none);  // armhf and others: the portable loop (docs/porting.md)
#endif
  CHECK(Md5Lanes(Md5Lanes::Engine::best).simd() == best);
  CHECK(Md5Lanes(Md5Lanes::Engine::portable).simd() == Md5Lanes::Simd::none);
  // The path that ran agrees with the portable loop on a stream longer than one lockstep call.
  const std::string big(64 * 1000 + 17, 'q');
  Md5Lanes simd(Md5Lanes::Engine::best), portable(Md5Lanes::Engine::portable);
  auto spans = none();
  for (std::size_t l = 0; l < Md5Lanes::kLanes; ++l) spans[l] = {big.data() + l, big.size() - l};
  simd.update(spans);
  portable.update(spans);
  for (std::size_t l = 0; l < Md5Lanes::kLanes; ++l) {
    INFO("lane " << l << ", path " << name(simd.simd()));
    CHECK(to_hex(simd.finish(l)) == to_hex(portable.finish(l)));
  }
}
