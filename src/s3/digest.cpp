// Digests and encodings: incremental MD5 / SHA-256, HMAC-SHA256, hex and base64, all through
// OpenSSL.
#include "s3/digest.hpp"

#include <openssl/evp.h>
#include <openssl/hmac.h>

namespace fleetpipe::detail {

struct Digest::Impl {
  EVP_MD_CTX* ctx = nullptr;
  ~Impl() { EVP_MD_CTX_free(ctx); }
};

namespace {
const EVP_MD* md_of(Digest::Kind k) { return k == Digest::Kind::md5 ? EVP_md5() : EVP_sha256(); }
}  // namespace

Digest::Digest(Kind k) : impl_(std::make_unique<Impl>()), kind_(k) {
  impl_->ctx = EVP_MD_CTX_new();
  EVP_DigestInit_ex(impl_->ctx, md_of(k), nullptr);
}
Digest::~Digest() = default;
Digest::Digest(Digest&&) noexcept = default;
Digest& Digest::operator=(Digest&&) noexcept = default;

void Digest::update(const void* data, std::size_t n) {
  if (n) EVP_DigestUpdate(impl_->ctx, data, n);
}

std::string Digest::finish() {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_DigestFinal_ex(impl_->ctx, out, &len);
  EVP_DigestInit_ex(impl_->ctx, md_of(kind_), nullptr);
  return std::string(reinterpret_cast<const char*>(out), len);
}

std::string to_hex(std::string_view raw) {
  static const char* k = "0123456789abcdef";
  std::string out;
  out.reserve(raw.size() * 2);
  for (unsigned char c : raw) {
    out.push_back(k[c >> 4]);
    out.push_back(k[c & 15]);
  }
  return out;
}

std::string base64_encode(std::string_view raw) {
  std::string out(4 * ((raw.size() + 2) / 3), '\0');
  const int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                reinterpret_cast<const unsigned char*>(raw.data()), static_cast<int>(raw.size()));
  out.resize(static_cast<std::size_t>(n));
  return out;
}

std::string hmac_sha256(std::string_view key, std::string_view data) {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
       reinterpret_cast<const unsigned char*>(data.data()), data.size(), out, &len);
  return std::string(reinterpret_cast<const char*>(out), len);
}

std::string md5_raw(std::string_view data) {
  Digest d(Digest::Kind::md5);
  d.update(data);
  return d.finish();
}

}  // namespace fleetpipe::detail
