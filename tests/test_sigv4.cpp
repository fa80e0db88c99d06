// The signer against AWS's published S3 SigV4 examples ("Examples: Signature Calculations in
// AWS Signature Version 4", Amazon S3 API reference): access key AKIAIOSFODNN7EXAMPLE, secret
// wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY, us-east-1, 20130524T000000Z, bucket examplebucket.
#include "fleetpipe/sigv4.hpp"

#include <catch2/catch.hpp>

#include "s3/digest.hpp"

using namespace fleetpipe;

namespace {

const char* kAccess = "AKIAIOSFODNN7EXAMPLE";
const char* kSecret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
const char* kDate = "20130524T000000Z";
const char* kEmpty = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

SigV4Credentials creds() {
  SigV4Credentials c;
  c.access_key_id = kAccess;
  c.secret_access_key = kSecret;
  c.region = "us-east-1";
  return c;
}

std::string header(const HeaderList& h, const std::string& name) {
  for (const auto& [n, v] : h)
    if (n == name) return v;
  return "<absent>";
}

}  // namespace

TEST_CASE("GET Object with Range matches the AWS published signature", "[sigv4]") {
  SigV4Request r;
  r.method = "GET";
  r.host = "examplebucket.s3.amazonaws.com";
  r.path = "/test.txt";
  r.headers = {{"Range", "bytes=0-9"}};
  r.payload_sha256 = kEmpty;
  auto s = sign_v4(r, creds(), kDate);
  REQUIRE(s.ok());
  CHECK(sha256_hex(s->canonical_request) ==
        "7344ae5b7ee6c3e7e6b0fe0640412a37625d1fbfff95c48bbb2dc43964946972");
  CHECK(s->signature == "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41");
  CHECK(header(s->headers_to_add, "authorization") ==
        "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,"
        "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,"
        "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41");
  CHECK(header(s->headers_to_add, "x-amz-content-sha256") == kEmpty);
  CHECK(header(s->headers_to_add, "x-amz-date") == kDate);
}

TEST_CASE("PUT Object matches the AWS published signature (key with $ encoded once)", "[sigv4]") {
  std::string body = "Welcome to Amazon S3.";
  SigV4Request r;
  r.method = "PUT";
  r.host = "examplebucket.s3.amazonaws.com";
  r.path = "/test$file.text";
  r.headers = {{"Date", "Fri, 24 May 2013 00:00:00 GMT"},
               {"x-amz-storage-class", "REDUCED_REDUNDANCY"}};
  r.payload_sha256 = sha256_hex(body);
  CHECK(r.payload_sha256 == "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072");
  auto s = sign_v4(r, creds(), kDate);
  REQUIRE(s.ok());
  CHECK(s->canonical_request.find("\n/test%24file.text\n") != std::string::npos);
  CHECK(sha256_hex(s->canonical_request) ==
        "9e0e90d9c76de8fa5b200d8c849cd5b8dc7a3be3951ddb7f6a76b4158342019d");
  CHECK(s->signed_headers == "date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class");
  CHECK(s->signature == "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd");
}

TEST_CASE("GET Bucket Lifecycle (query key without value) matches AWS", "[sigv4]") {
  SigV4Request r;
  r.method = "GET";
  r.host = "examplebucket.s3.amazonaws.com";
  r.path = "/";
  r.query = {{"lifecycle", ""}};
  r.payload_sha256 = kEmpty;
  auto s = sign_v4(r, creds(), kDate);
  REQUIRE(s.ok());
  CHECK(sha256_hex(s->canonical_request) ==
        "9766c798316ff2757b517bc739a67f6213b4ab36dd5da2f94eaebf79c77395ca");
  CHECK(s->signature == "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543");
}

TEST_CASE("Get Bucket (List Objects) sorts the query and matches AWS", "[sigv4]") {
  SigV4Request r;
  r.method = "GET";
  r.host = "examplebucket.s3.amazonaws.com";
  r.path = "/";
  r.query = {{"prefix", "J"}, {"max-keys", "2"}};  // out of order on purpose
  r.payload_sha256 = kEmpty;
  auto s = sign_v4(r, creds(), kDate);
  REQUIRE(s.ok());
  CHECK(sha256_hex(s->canonical_request) ==
        "df57d21db20da04d7fa30298dd4488ba3a2b47ca3a489c74750e0f1e7df1b9b7");
  CHECK(s->signature == "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7");
}

TEST_CASE("the URL form reproduces the published examples", "[sigv4]") {
  auto get = sign_s3_request("GET", "https://examplebucket.s3.amazonaws.com/test.txt",
                             {{"Range", "bytes=0-9"}}, "", kAccess, kSecret, "us-east-1", kDate);
  REQUIRE(get.ok());
  CHECK(header(*get, "authorization").find(
            "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41") !=
        std::string::npos);

  // Both the raw and the percent-encoded key sign identically.
  for (const char* url : {"https://examplebucket.s3.amazonaws.com/test$file.text",
                          "https://examplebucket.s3.amazonaws.com:443/test%24file.text"}) {
    auto put = sign_s3_request(
        "PUT", url,
        {{"Date", "Fri, 24 May 2013 00:00:00 GMT"}, {"x-amz-storage-class", "REDUCED_REDUNDANCY"}},
        "Welcome to Amazon S3.", kAccess, kSecret, "us-east-1", kDate);
    REQUIRE(put.ok());
    CHECK(header(*put, "authorization").find(
              "Signature=98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd") !=
          std::string::npos);
  }
  auto lc = sign_s3_request("GET", "https://examplebucket.s3.amazonaws.com/?lifecycle", {}, "",
                            kAccess, kSecret, "us-east-1", kDate);
  REQUIRE(lc.ok());
  CHECK(header(*lc, "authorization").find("fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543") !=
        std::string::npos);
  auto list = sign_s3_request("GET", "https://examplebucket.s3.amazonaws.com/?prefix=J&max-keys=2",
                              {}, "", kAccess, kSecret, "us-east-1", kDate);
  REQUIRE(list.ok());
  CHECK(header(*list, "authorization").find("34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7") !=
        std::string::npos);
}

TEST_CASE("session token is signed and returned, UNSIGNED-PAYLOAD is honoured", "[sigv4]") {
  auto h = sign_s3_request("PUT", "http://127.0.0.1:9000/bucket/key", {}, "abc", kAccess, kSecret,
                           "garage", kDate, "FQoGZXIvYXdzEXAMPLE", true);
  REQUIRE(h.ok());
  CHECK(header(*h, "x-amz-security-token") == "FQoGZXIvYXdzEXAMPLE");
  CHECK(header(*h, "x-amz-content-sha256") == "UNSIGNED-PAYLOAD");
  CHECK(header(*h, "authorization").find("/20130524/garage/s3/aws4_request,") != std::string::npos);
  CHECK(header(*h, "authorization").find("x-amz-security-token") != std::string::npos);
  CHECK(header(*h, "authorization").find(kSecret) == std::string::npos);
}

TEST_CASE("malformed inputs are rejected with invalid_argument", "[sigv4]") {
  auto bad_date = sign_s3_request("GET", "https://h/x", {}, "", kAccess, kSecret, "us-east-1",
                                  "2013-05-24");
  REQUIRE_FALSE(bad_date.ok());
  CHECK(bad_date.error().is(errc::invalid_argument));
  CHECK_FALSE(sign_s3_request("GET", "h/x", {}, "", kAccess, kSecret, "r", kDate).ok());
  CHECK_FALSE(sign_s3_request("GET", "https://h/x", {}, "", kAccess, "", "r", kDate).ok());
  CHECK_FALSE(sign_s3_request("GET", "https://h/x", {{"Host", "other"}}, "", kAccess, kSecret,
                              "r", kDate).ok());
  SigV4Request r;
  r.method = "GET";
  r.host = "h";
  r.payload_sha256 = "xyz";
  CHECK_FALSE(sign_v4(r, creds(), kDate).ok());
}

TEST_CASE("helpers: uri_encode, amz date, sha256", "[sigv4]") {
  CHECK(uri_encode("a b+c/d~e", true) == "a%20b%2Bc/d~e");
  CHECK(uri_encode("a/b", false) == "a%2Fb");
  CHECK(format_amz_date(std::chrono::system_clock::time_point(std::chrono::seconds(1369353600))) ==
        kDate);
  CHECK(sha256_hex("") == kEmpty);
}

TEST_CASE("base64 (Content-MD5) follows RFC 4648's test vectors", "[sigv4]") {
  const std::pair<const char*, const char*> vectors[] = {{"", ""},         {"f", "Zg=="},         {"fo", "Zm8="},
                                                         {"foo", "Zm9v"}, {"foob", "Zm9vYg=="},  {"fooba", "Zm9vYmE="},
                                                         {"foobar", "Zm9vYmFy"}};
  for (const auto& [in, out] : vectors) {
    INFO(in);
    CHECK(detail::base64_encode(in) == out);
  }
  // The Content-MD5 of an empty body, as S3 documents it.
  CHECK(detail::base64_encode(detail::md5_raw("")) == "1B2M2Y8AsgTpgAmY7PhCfg==");
}
