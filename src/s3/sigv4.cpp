// SigV4: the request signer (canonical request, string to sign, signature).
#include "fleetpipe/sigv4.hpp"

#include <algorithm>
#include <cctype>
#include <ctime>

#include "common/utc_time.hpp"
#include "s3/digest.hpp"

namespace fleetpipe {

namespace {

std::string lower(std::string_view s) {
  std::string out(s);
  for (auto& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

// Trims and collapses runs of spaces, as SigV4 canonical header values require.
std::string canonical_value(std::string_view v) {
  std::string out;
  bool space = false;
  for (char c : v) {
    if (c == ' ' || c == '\t') {
      space = true;
      continue;
    }
    if (space && !out.empty()) out.push_back(' ');
    space = false;
    out.push_back(c);
  }
  return out;
}

bool valid_amz_date(std::string_view d) {
  if (d.size() != 16 || d[8] != 'T' || d[15] != 'Z') return false;
  for (std::size_t i = 0; i < 15; ++i) {
    if (i == 8) continue;
    if (!std::isdigit(static_cast<unsigned char>(d[i]))) return false;
  }
  return true;
}

bool valid_payload_hash(std::string_view h) {
  if (h == "UNSIGNED-PAYLOAD") return true;
  if (h.size() != 64) return false;
  return std::all_of(h.begin(), h.end(),
                     [](char c) { return std::isdigit(static_cast<unsigned char>(c)) ||
                                         (c >= 'a' && c <= 'f'); });
}

int hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::string percent_decode(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size() && hexval(s[i + 1]) >= 0 && hexval(s[i + 2]) >= 0) {
      out.push_back(static_cast<char>(hexval(s[i + 1]) * 16 + hexval(s[i + 2])));
      i += 2;
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

}  // namespace

std::string uri_encode(std::string_view s, bool keep_slash) {
  static const char* k = "0123456789ABCDEF";
  std::string out;
  out.reserve(s.size() * 3 / 2);
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~' ||
        (keep_slash && c == '/')) {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(k[c >> 4]);
      out.push_back(k[c & 15]);
    }
  }
  return out;
}

std::string sha256_hex(std::string_view data) {
  detail::Digest d(detail::Digest::Kind::sha256);
  d.update(data);
  return detail::to_hex(d.finish());
}

std::string format_amz_date(std::chrono::system_clock::time_point t) { return detail::utc_compact(t); }

Result<SigV4Signature> sign_v4(const SigV4Request& req, const SigV4Credentials& creds,
                               std::string_view amz_date) {
  if (!valid_amz_date(amz_date)) {
    return Error(errc::invalid_argument, "sigv4: amz_date must be YYYYMMDDTHHMMSSZ, got \"" +
                                             std::string(amz_date) + "\"");
  }
  if (req.method.empty() || req.host.empty()) {
    return Error(errc::invalid_argument, "sigv4: method and host must not be empty");
  }
  if (creds.access_key_id.empty() || creds.secret_access_key.empty()) {
    return Error(errc::invalid_argument, "sigv4: access key id and secret key must not be empty");
  }
  if (creds.region.empty() || creds.service.empty()) {
    return Error(errc::invalid_argument, "sigv4: region and service must not be empty");
  }
  if (!valid_payload_hash(req.payload_sha256)) {
    return Error(errc::invalid_argument,
                 "sigv4: payload hash must be 64 lower-case hex chars or UNSIGNED-PAYLOAD");
  }

  // Headers: the caller's plus ours, lower-cased, sorted, duplicates joined by ','.
  std::vector<std::pair<std::string, std::string>> hs;
  hs.reserve(req.headers.size() + 4);
  for (const auto& [n, v] : req.headers) {
    std::string ln = lower(n);
    if (ln == "host" || ln == "x-amz-date" || ln == "x-amz-content-sha256" ||
        ln == "authorization" || ln == "x-amz-security-token") {
      continue;  // ours win: the caller may pass a request's full header set
    }
    hs.emplace_back(std::move(ln), canonical_value(v));
  }
  hs.emplace_back("host", canonical_value(req.host));
  hs.emplace_back("x-amz-date", std::string(amz_date));
  hs.emplace_back("x-amz-content-sha256", req.payload_sha256);
  if (!creds.session_token.empty()) hs.emplace_back("x-amz-security-token", creds.session_token);
  std::stable_sort(hs.begin(), hs.end(),
                   [](const auto& a, const auto& b) { return a.first < b.first; });

  std::string canonical_headers, signed_headers;
  for (std::size_t i = 0; i < hs.size(); ++i) {
    if (i > 0 && hs[i].first == hs[i - 1].first) {
      canonical_headers.pop_back();  // '\n'
      canonical_headers += "," + hs[i].second + "\n";
      continue;
    }
    canonical_headers += hs[i].first + ":" + hs[i].second + "\n";
    if (!signed_headers.empty()) signed_headers += ';';
    signed_headers += hs[i].first;
  }

  std::vector<std::pair<std::string, std::string>> q;
  q.reserve(req.query.size());
  for (const auto& [k, v] : req.query) q.emplace_back(uri_encode(k, false), uri_encode(v, false));
  std::sort(q.begin(), q.end());
  std::string canonical_query;
  for (const auto& [k, v] : q) {
    if (!canonical_query.empty()) canonical_query += '&';
    canonical_query += k + "=" + v;
  }

  std::string path = req.path.empty() ? "/" : uri_encode(req.path, true);

  SigV4Signature out;
  out.canonical_request = req.method + "\n" + path + "\n" + canonical_query + "\n" +
                          canonical_headers + "\n" + signed_headers + "\n" + req.payload_sha256;
  std::string date(amz_date.substr(0, 8));
  std::string scope = date + "/" + creds.region + "/" + creds.service + "/aws4_request";
  out.string_to_sign = "AWS4-HMAC-SHA256\n" + std::string(amz_date) + "\n" + scope + "\n" +
                       sha256_hex(out.canonical_request);
  std::string k = detail::hmac_sha256("AWS4" + creds.secret_access_key, date);
  k = detail::hmac_sha256(k, creds.region);
  k = detail::hmac_sha256(k, creds.service);
  k = detail::hmac_sha256(k, "aws4_request");
  out.signature = detail::to_hex(detail::hmac_sha256(k, out.string_to_sign));
  out.signed_headers = signed_headers;

  out.headers_to_add.emplace_back("x-amz-date", std::string(amz_date));
  out.headers_to_add.emplace_back("x-amz-content-sha256", req.payload_sha256);
  if (!creds.session_token.empty()) {
    out.headers_to_add.emplace_back("x-amz-security-token", creds.session_token);
  }
  out.headers_to_add.emplace_back(
      "authorization", "AWS4-HMAC-SHA256 Credential=" + creds.access_key_id + "/" + scope +
                           ",SignedHeaders=" + signed_headers + ",Signature=" + out.signature);
  return out;
}

Result<HeaderList> sign_s3_request(std::string_view method, std::string_view url,
                                   const HeaderList& headers, std::string_view payload,
                                   std::string_view access_key, std::string_view secret_key,
                                   std::string_view region, std::string_view amz_date,
                                   std::string_view session_token, bool unsigned_payload) {
  auto scheme_end = url.find("://");
  if (scheme_end == std::string_view::npos) {
    return Error(errc::invalid_argument, "sigv4: URL must start with http:// or https://");
  }
  std::string scheme = lower(url.substr(0, scheme_end));
  if (scheme != "http" && scheme != "https") {
    return Error(errc::invalid_argument, "sigv4: URL scheme must be http or https");
  }
  std::string_view rest = url.substr(scheme_end + 3);
  auto auth_end = rest.find_first_of("/?#");
  std::string host(rest.substr(0, auth_end));
  if (host.empty() || host.find('@') != std::string::npos) {
    return Error(errc::invalid_argument, "sigv4: URL must have a host and no user info");
  }
  std::string default_port = scheme == "https" ? ":443" : ":80";
  if (host.size() > default_port.size() &&
      host.compare(host.size() - default_port.size(), default_port.size(), default_port) == 0 &&
      host.back() != ']') {
    host.resize(host.size() - default_port.size());
  }
  rest = auth_end == std::string_view::npos ? std::string_view{} : rest.substr(auth_end);
  auto frag = rest.find('#');
  if (frag != std::string_view::npos) rest = rest.substr(0, frag);
  auto qpos = rest.find('?');
  SigV4Request req;
  req.method = std::string(method);
  req.host = host;
  req.path = percent_decode(rest.substr(0, qpos));
  if (qpos != std::string_view::npos) {
    std::string_view qs = rest.substr(qpos + 1);
    while (!qs.empty()) {
      auto amp = qs.find('&');
      std::string_view item = qs.substr(0, amp);
      if (!item.empty()) {
        auto eq = item.find('=');
        req.query.emplace_back(percent_decode(item.substr(0, eq)),
                               eq == std::string_view::npos ? std::string()
                                                            : percent_decode(item.substr(eq + 1)));
      }
      if (amp == std::string_view::npos) break;
      qs = qs.substr(amp + 1);
    }
  }
  for (const auto& [n, v] : headers) {
    std::string ln = lower(n);
    if (ln == "host") {
      if (canonical_value(v) != host) {
        return Error(errc::invalid_argument, "sigv4: Host header does not match the URL");
      }
      continue;
    }
    if (ln == "x-amz-date" || ln == "x-amz-content-sha256" || ln == "authorization" ||
        ln == "x-amz-security-token") {
      return Error(errc::invalid_argument,
                   "sigv4: header " + ln + " is set by the signer; don't pass it");
    }
    req.headers.emplace_back(n, v);
  }
  req.payload_sha256 = unsigned_payload ? "UNSIGNED-PAYLOAD" : sha256_hex(payload);
  SigV4Credentials c;
  c.access_key_id = std::string(access_key);
  c.secret_access_key = std::string(secret_key);
  c.session_token = std::string(session_token);
  c.region = std::string(region);
  auto s = sign_v4(req, c, amz_date);
  if (!s) return std::move(s).error();
  return std::move(s->headers_to_add);
}

}  // namespace fleetpipe
