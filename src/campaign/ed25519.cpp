// Ed25519 through OpenSSL (EVP_PKEY_ED25519): key generation, signing, verification.
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include <memory>

#include "campaign/internal.hpp"

namespace fleetpipe {
namespace {

struct PkeyFree {
  void operator()(EVP_PKEY* p) const noexcept { EVP_PKEY_free(p); }
};
struct CtxFree {
  void operator()(EVP_MD_CTX* c) const noexcept { EVP_MD_CTX_free(c); }
};
struct PkeyCtxFree {
  void operator()(EVP_PKEY_CTX* c) const noexcept { EVP_PKEY_CTX_free(c); }
};
struct BioFree {
  void operator()(BIO* b) const noexcept { BIO_free(b); }
};
using Pkey = std::unique_ptr<EVP_PKEY, PkeyFree>;

// The key's bytes never reach a message: OpenSSL's error text is not forwarded either.
Result<Pkey> read_private_key(std::string_view pem) {
  std::unique_ptr<BIO, BioFree> bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  if (!bio) return Error(errc::internal, "cannot allocate an OpenSSL BIO");
  Pkey key(PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr));
  if (!key || EVP_PKEY_id(key.get()) != EVP_PKEY_ED25519) {
    return Error(errc::invalid_argument, "not a PEM Ed25519 private key");
  }
  return key;
}

Result<std::string> raw_public_of(EVP_PKEY* key) {
  std::string raw(32, '\0');
  std::size_t len = raw.size();
  if (EVP_PKEY_get_raw_public_key(key, reinterpret_cast<unsigned char*>(raw.data()), &len) != 1 ||
      len != 32) {
    return Error(errc::internal, "cannot read the Ed25519 public key");
  }
  return raw;
}

}  // namespace

namespace detail {

bool ed25519_verify(std::string_view raw_public_key, std::string_view message,
                    std::string_view signature) noexcept {
  if (raw_public_key.size() != 32 || signature.size() != 64) return false;
  Pkey key(EVP_PKEY_new_raw_public_key(
      EVP_PKEY_ED25519, nullptr, reinterpret_cast<const unsigned char*>(raw_public_key.data()),
      raw_public_key.size()));
  std::unique_ptr<EVP_MD_CTX, CtxFree> ctx(EVP_MD_CTX_new());
  if (!key || !ctx) return false;
  if (EVP_DigestVerifyInit(ctx.get(), nullptr, nullptr, nullptr, key.get()) != 1) return false;
  return EVP_DigestVerify(ctx.get(), reinterpret_cast<const unsigned char*>(signature.data()),
                          signature.size(), reinterpret_cast<const unsigned char*>(message.data()),
                          message.size()) == 1;
}

Result<std::string> ed25519_sign(std::string_view private_key_pem, std::string_view message) {
  auto key = read_private_key(private_key_pem);
  if (!key) return std::move(key).error();
  std::unique_ptr<EVP_MD_CTX, CtxFree> ctx(EVP_MD_CTX_new());
  if (!ctx || EVP_DigestSignInit(ctx.get(), nullptr, nullptr, nullptr, key->get()) != 1) {
    return Error(errc::internal, "cannot start an Ed25519 signature");
  }
  std::string sig(64, '\0');
  std::size_t len = sig.size();
  if (EVP_DigestSign(ctx.get(), reinterpret_cast<unsigned char*>(sig.data()), &len,
                     reinterpret_cast<const unsigned char*>(message.data()), message.size()) != 1) {
    return Error(errc::internal, "Ed25519 signing failed");
  }
  sig.resize(len);
  return sig;
}

}  // namespace detail

Result<CampaignKeyPair> generate_campaign_key() {
  std::unique_ptr<EVP_PKEY_CTX, PkeyCtxFree> ctx(EVP_PKEY_CTX_new_id(EVP_PKEY_ED25519, nullptr));
  EVP_PKEY* raw = nullptr;
  if (!ctx || EVP_PKEY_keygen_init(ctx.get()) != 1 || EVP_PKEY_keygen(ctx.get(), &raw) != 1) {
    return Error(errc::internal, "Ed25519 key generation failed");
  }
  Pkey key(raw);
  std::unique_ptr<BIO, BioFree> bio(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio_PrivateKey(bio.get(), key.get(), nullptr, nullptr, 0, nullptr,
                                       nullptr) != 1) {
    return Error(errc::internal, "cannot write the private key as PEM");
  }
  char* data = nullptr;
  long n = BIO_get_mem_data(bio.get(), &data);
  CampaignKeyPair pair;
  pair.private_key_pem.assign(data, n > 0 ? static_cast<std::size_t>(n) : 0);
  auto pub = raw_public_of(key.get());
  if (!pub) return std::move(pub).error();
  pair.public_key = detail::campaign_base64_encode(*pub);
  return pair;
}

Result<std::string> campaign_public_key_of(std::string_view private_key_pem) {
  auto key = read_private_key(private_key_pem);
  if (!key) return std::move(key).error();
  auto pub = raw_public_of(key->get());
  if (!pub) return std::move(pub).error();
  return detail::campaign_base64_encode(*pub);
}

}  // namespace fleetpipe
