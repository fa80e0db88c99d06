// Every crash the libFuzzer targets (tests/fuzz/fuzz_*.cpp) found, replayed as a unit test so it
// runs in the normal and the ASan+UBSan suites, not only in the clang fuzz build. The inputs are
// also committed in tests/fuzz/corpus/<target>/regression-*.
#include "capture/event_format.hpp"

#include <catch2/catch.hpp>
#include <atomic>
#include <boost/asio.hpp>
#include <chrono>
#include <cstring>
#include <optional>
#include <thread>
#include <fstream>
#include <sstream>
#include <string>

#include "s3/s3_client.hpp"
#include "fleetpipe/config.hpp"

using namespace fleetpipe;
using namespace fleetpipe::detail;

namespace {

std::string corpus(const std::string& rel) {
  std::ifstream in(std::string(FLEETPIPE_SOURCE_DIR) + "/tests/fuzz/corpus/" + rel, std::ios::binary);
  REQUIRE(in);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string header(std::uint16_t header_size, std::uint32_t index_len, std::uint64_t data_len) {
  std::string h = "FPEV";
  auto put = [&](auto v) { h.append(reinterpret_cast<const char*>(&v), sizeof v); };
  put(std::uint16_t{1});
  put(header_size);
  put(index_len);
  put(std::uint32_t{0});
  put(data_len);
  return h;
}

}  // namespace

TEST_CASE("event decoder: a data_len that wraps the length sum is a decode error, not an overflow",
          "[fuzz][event_format]") {
  // Found by fuzz_event_decoder: header 24 + index 363 + data_len 2^64-194 wrapped to 193.
  auto bytes = corpus("event_decoder/regression-length-wrap.fpev");
  auto r = decode_events(bytes);
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().is(errc::decode_error));
  CHECK(r.error().message.find("truncated event") != std::string::npos);
  // The same shape built by hand.
  std::string idx = "{}";
  std::string ev = header(24, static_cast<std::uint32_t>(idx.size()), ~std::uint64_t{0} - 10) + idx;
  auto r2 = decode_events(ev);
  REQUIRE_FALSE(r2.ok());
  CHECK(r2.error().is(errc::decode_error));
}

TEST_CASE("event decoder: a hostile raw_length does not size an allocation", "[fuzz][event_format]") {
  std::string idx =
      R"({"event_id":"e","triggers":[],"priority":1,"sections":[{"stream":"s","kind":"blob",)"
      R"("count":0,"offset":0,"length":4,"raw_length":1152921504606846976,"compression":"zstd"}]})";
  std::string data = "\x28\xb5\x2f\xfd";  // a zstd magic, nothing else
  std::string ev = header(24, static_cast<std::uint32_t>(idx.size()), data.size()) + idx + data;
  auto r = decode_events(ev);
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().message.find("bad zstd section") != std::string::npos);
}

TEST_CASE("S3 responses: a Date header far in the future is ignored, not an overflow",
          "[fuzz][s3_client]") {
  // Found by fuzz_http_response: "Date: Mon, 01 Jan 4048 00:00:00 GMT" on a clock-skew error
  // overflowed std::chrono::system_clock (nanoseconds).
  S3Response r;
  r.status = 403;
  r.headers = {{"Date", "Mon, 01 Jan 4048 00:00:00 GMT"}};
  r.body = "<Error><Code>RequestTimeTooSkewed</Code></Error>";
  auto f = classify_response(r);
  CHECK(f.cls == FailureClass::clock_skew);
  CHECK_FALSE(f.server_time.has_value());
  r.headers = {{"Date", "Mon, 01 Jan 2024 00:00:00 GMT"}};
  CHECK(classify_response(r).server_time.has_value());
}

TEST_CASE("S3 XML: self-closing blocks are empty, other blocks lie inside the document",
          "[fuzz][s3_client]") {
  auto body = corpus("s3_xml/regression-empty-part.xml").substr(1);
  for (auto part : xml_blocks(body, "Part")) {
    if (part.empty()) continue;
    CHECK(part.data() >= body.data());
    CHECK(part.data() + part.size() <= body.data() + body.size());
  }
  auto parts = xml_blocks("<L><Part /><Part><PartNumber>2</PartNumber></Part></L>", "Part");
  REQUIRE(parts.size() == 2);
  CHECK(parts[0].empty());
  CHECK(xml_text(parts[1], "PartNumber") == std::optional<std::string>("2"));
}

TEST_CASE("config: a number too large for a double is an invalid_config error, not a terminate",
          "[fuzz][config]") {
  // Found by fuzz_config: nlohmann throws out_of_range (not parse_error) for 3e3333...
  auto text = corpus("config/regression-number-overflow.json");
  auto c = parse_config(text);
  REQUIRE_FALSE(c.ok());
  CHECK(c.error().is(errc::invalid_config));
  CHECK(c.error().json_pointer == "/");
  CHECK_FALSE(parse_config(R"({"device_id":"d","x":1e400})").ok());
}

// fuzz_http_response (timeout): Beast re-parses an incomplete chunk header from its start on every
// read, so a server dripping an endless chunk extension cost the client O(n^2) CPU and kept the
// request alive until the inactivity timeout. The client's read buffer now holds at most 16 KiB
// unparsed: the request fails at once as a network failure (retried by the uploader).
TEST_CASE("a server dripping an endless chunk extension fails the request fast, as a network failure",
          "[fuzz][http]") {
  namespace net = boost::asio;
  using tcp = net::ip::tcp;
  const std::string reply = corpus("http_response/regression-chunk-ext-drip").substr(1);  // byte 0: harness mode
  REQUIRE(reply.size() > (16u << 10));
  net::io_context server_ioc;
  tcp::acceptor acceptor(server_ioc, tcp::endpoint(net::ip::make_address("127.0.0.1"), 0));
  const unsigned short port = acceptor.local_endpoint().port();
  std::atomic<bool> stop{false};
  std::thread server([&] {
    boost::system::error_code ec;
    tcp::socket s(server_ioc);
    acceptor.accept(s, ec);
    if (ec) return;
    std::string req;
    char b[4096];
    while (req.find("\r\n\r\n") == std::string::npos) {
      std::size_t n = s.read_some(net::buffer(b), ec);
      if (ec) return;
      req.append(b, n);
    }
    for (std::size_t off = 0; off < reply.size() && !stop; off += 64) {  // a drip of small packets
      net::write(s, net::buffer(reply.data() + off, std::min<std::size_t>(64, reply.size() - off)), ec);
      if (ec) return;
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
    while (!stop) std::this_thread::sleep_for(std::chrono::milliseconds(10));  // keep it open
  });

  UploaderConfig c;
  c.endpoint = "http://127.0.0.1:" + std::to_string(port);
  c.allow_insecure_http = true;
  c.bucket = "bucket-x";
  c.request_timeout_s = 30;  // the old behaviour: a live-looking connection until this timeout
  S3Client::Hooks hooks;
  hooks.credentials = [] { return Result<Credentials>(Credentials{"AK", "SK", ""}); };
  hooks.wall = [] { return std::chrono::system_clock::now(); };
  hooks.mono = [] { return std::chrono::steady_clock::now(); };
  net::io_context ioc;
  auto client = S3Client::create(ioc, c, hooks);
  REQUIRE(client.ok());
  std::optional<S3Outcome> outcome;
  S3Request r;
  r.method = "GET";
  r.key = "k";
  const auto t0 = std::chrono::steady_clock::now();
  (*client)->async_send(std::move(r), [&](S3Outcome o) { outcome = std::move(o); });
  while (!outcome && std::chrono::steady_clock::now() - t0 < std::chrono::seconds(40)) {
    ioc.run_for(std::chrono::milliseconds(50));
  }
  const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  stop = true;
  server.join();
  REQUIRE(outcome.has_value());
  INFO(outcome->failure.message << " after " << took << " s");
  CHECK_FALSE(outcome->ok);
  CHECK(outcome->failure.cls == FailureClass::network);
  CHECK(took < 10);
}
