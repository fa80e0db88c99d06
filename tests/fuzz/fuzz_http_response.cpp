// Fuzzes HTTP response handling with hostile bytes: Beast's response parser configured exactly
// as the S3 client configures it (4 MiB body limit), then the client's own code on whatever
// parsed: header lookup, success test, error classification (incl. the Date header parse used
// for clock-skew correction). Never a crash, an exception escaping, or a hang.
#include <cstddef>
#include <cstdint>
#include <string>

#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include "s3/s3_client.hpp"

namespace http = boost::beast::http;
using namespace fleetpipe::detail;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  http::response_parser<http::string_body> parser;
  parser.body_limit(4u << 20);
  // First byte: feed in small pieces (like a dripping socket) or all at once.
  // Dripping re-parses the unparsed bytes on every piece (quadratic in Beast, bounded in the
  // client by its 16 KiB read buffer: ~0.1 s CPU at worst); only inputs up to 2 KiB are dripped so
  // the fuzzer keeps its speed. The long drip is covered by tests/test_fuzz_regressions.cpp.
  std::size_t step = size > 0 ? (data[0] % 4 == 0 && size <= 2048 ? 1 + data[0] % 17 : size) : 1;
  std::string buf;
  boost::beast::error_code ec;
  std::size_t pos = size > 0 ? 1 : 0;
  while (pos < size && !parser.is_done()) {
    std::size_t n = std::min(step, size - pos);
    buf.append(reinterpret_cast<const char*>(data + pos), n);
    pos += n;
    if (buf.size() > (16u << 10)) return 0;  // the client's read buffer limit (s3_client.cpp)
    std::size_t used = parser.put(boost::asio::buffer(buf), ec);
    if (ec == http::error::need_more) {
      ec = {};
      buf.erase(0, used);
      continue;
    }
    if (ec) return 0;  // rejected: the client reports a network failure
    buf.erase(0, used);
  }
  if (!parser.is_done() && !ec) {
    parser.put_eof(ec);
    if (ec || !parser.is_done()) return 0;
  }
  auto res = parser.release();
  S3Response r;
  r.status = res.result_int();
  for (const auto& f : res) r.headers.emplace_back(std::string(f.name_string()), std::string(f.value()));
  r.body = std::move(res.body());
  (void)r.header("Date");
  (void)r.header("ETag");
  (void)r.header("x-amz-request-id");
  if (!response_ok(r)) {
    S3Failure f = classify_response(r);
    if (f.status != r.status) __builtin_trap();
    // The Date header feeds clock-skew correction: force its parse on every input.
    S3Response skew = r;
    skew.body = "<Error><Code>RequestTimeTooSkewed</Code></Error>";
    S3Failure g = classify_response(skew);
    if (g.cls != FailureClass::clock_skew) __builtin_trap();
  }
  (void)res.keep_alive();
  return 0;
}
