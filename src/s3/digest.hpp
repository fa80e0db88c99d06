// Internal: incremental MD5 / SHA-256 (OpenSSL EVP behind a pimpl) and encodings, used by the
// signer and the uploader (part digests are computed in a streaming first pass over LMDB).
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

namespace fleetpipe::detail {

class Digest {
 public:
  enum class Kind { md5, sha256 };
  explicit Digest(Kind k);
  ~Digest();
  Digest(Digest&&) noexcept;
  Digest& operator=(Digest&&) noexcept;
  void update(const void* data, std::size_t n);
  void update(std::string_view s) { update(s.data(), s.size()); }
  /// Raw digest bytes (16 or 32); the object is reset afterwards.
  std::string finish();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  Kind kind_;
};

std::string to_hex(std::string_view raw);
std::string base64_encode(std::string_view raw);
std::string hmac_sha256(std::string_view key, std::string_view data);
std::string md5_raw(std::string_view data);

}  // namespace fleetpipe::detail
