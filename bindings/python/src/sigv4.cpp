// fleetpipe.sign_s3_request: the SigV4 signer the uploader uses, for hosts and cross-checks.
#include <pybind11/stl.h>

#include "bindings.hpp"
#include "fleetpipe/sigv4.hpp"

namespace fleetpipe::py {

namespace {
HeaderList headers_from(pybind11::handle h) {
  HeaderList out;
  if (h.is_none()) return out;
  pybind11::object items = pybind11::hasattr(h, "items") ? h.attr("items")() : pybind11::reinterpret_borrow<pybind11::object>(h);
  for (auto item : items) {
    auto pair = item.cast<pybind11::tuple>();
    if (pair.size() != 2) throw pybind11::value_error("headers must be (name, value) pairs");
    out.emplace_back(pybind11::str(pair[0]).cast<std::string>(), pybind11::str(pair[1]).cast<std::string>());
  }
  return out;
}

std::string bytes_of(pybind11::handle payload) {
  if (payload.is_none()) return {};
  if (pybind11::isinstance<pybind11::str>(payload)) return payload.cast<std::string>();
  return std::string(pybind11::bytes(pybind11::reinterpret_borrow<pybind11::object>(payload)));
}
}  // namespace

void bind_sigv4(pybind11::module_& m) {
  m.def(
      "sign_s3_request",
      [](const std::string& method, const std::string& url, pybind11::handle headers,
         pybind11::handle payload, const std::string& access_key, const std::string& secret_key,
         const std::string& region, const std::string& amz_date,
         std::optional<std::string> session_token, bool unsigned_payload) {
        HeaderList h = headers_from(headers);
        std::string body = bytes_of(payload);
        auto r = sign_s3_request(method, url, h, body, access_key, secret_key, region, amz_date,
                                 session_token.value_or(""), unsigned_payload);
        HeaderList added = unwrap(std::move(r));
        pybind11::dict out;  // insertion-ordered: x-amz-date, x-amz-content-sha256, [token], authorization
        for (auto& [k, v] : added) out[pybind11::str(k)] = v;
        return out;
      },
      pybind11::arg("method"), pybind11::arg("url"), pybind11::arg("headers"),
      pybind11::arg("payload"), pybind11::arg("access_key"), pybind11::arg("secret_key"),
      pybind11::arg("region"), pybind11::arg("amz_date"),
      pybind11::arg("session_token") = pybind11::none(), pybind11::arg("unsigned_payload") = false,
      "Signs an S3 request with AWS Signature Version 4 (header authentication) and returns\n"
      "the headers to add, as an ordered dict: x-amz-date, x-amz-content-sha256,\n"
      "[x-amz-security-token], authorization (names lower case).\n\n"
      "method: 'GET', 'PUT', ...; url: 'https://host[:port]/bucket/key?query' (the Host header is\n"
      "taken from it); headers: dict or (name, value) pairs to sign besides host/x-amz-*;\n"
      "payload: bytes/str (None = empty); amz_date: 'YYYYMMDDTHHMMSSZ';\n"
      "unsigned_payload: sign 'UNSIGNED-PAYLOAD' instead of the body's SHA-256.\n"
      "Pure computation, no I/O. Raises fleetpipe.Error (reason 'invalid argument') for a bad\n"
      "date, URL, empty keys/region, or a headers entry that must not be passed (Host not\n"
      "matching the URL, x-amz-date, authorization).");
  m.def("sha256_hex", [](pybind11::handle payload) { return sha256_hex(bytes_of(payload)); },
        pybind11::arg("payload"), "Lower-case hex SHA-256 of bytes or str.");
}

}  // namespace fleetpipe::py
