// Internal: helpers the campaign sources share (names, errors, base64, digests).
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "fleetpipe/campaign.hpp"

namespace fleetpipe::detail {

/// 1..max of [A-Za-z0-9._-], not "." or "..": safe in an S3 key and a label.
bool campaign_safe_name(std::string_view s, std::size_t max) noexcept;

/// An Error of the campaign category with its JSON pointer.
Error campaign_error(campaign_errc code, std::string message, std::string pointer = {});

/// Standard base64 with padding (OpenSSL EVP_EncodeBlock / EVP_DecodeBlock). Decoding is strict:
/// nullopt for characters outside the alphabet, bad padding or a length not a multiple of 4.
std::string campaign_base64_encode(std::string_view raw);
std::optional<std::string> campaign_base64_decode(std::string_view text);

/// SHA-256 of `data` (32 raw bytes).
std::string campaign_sha256(std::string_view data);

}  // namespace fleetpipe::detail

namespace fleetpipe::detail {

/// Ed25519 over `message` with a raw 32-byte public key; false on any failure.
bool ed25519_verify(std::string_view raw_public_key, std::string_view message,
                    std::string_view signature) noexcept;
/// Signs with a PEM private key. Errors: invalid_argument (not an Ed25519 private key), internal.
Result<std::string> ed25519_sign(std::string_view private_key_pem, std::string_view message);

}  // namespace fleetpipe::detail
