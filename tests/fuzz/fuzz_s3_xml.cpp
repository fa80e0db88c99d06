// Fuzzes the S3 XML handling the uploader relies on: error documents (classification), and the
// InitiateMultipartUpload / ListParts / CompleteMultipartUpload / ListObjectsV2 extraction done
// with xml_text / xml_blocks / xml_unescape. Any body must be handled without a crash, an
// exception or a hang; escaping must round-trip.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "s3/s3_client.hpp"

using namespace fleetpipe::detail;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  // First byte picks the status code class; the rest is the body.
  static const unsigned kStatus[] = {200, 200, 400, 403, 404, 409, 500, 503};
  S3Response r;
  r.status = kStatus[data[0] % 8];
  r.body.assign(reinterpret_cast<const char*>(data + 1), size - 1);
  std::string_view xml = r.body;

  bool ok = response_ok(r);
  if (!ok) {
    S3Failure f = classify_response(r);
    if (f.status != r.status) __builtin_trap();
    if (f.message.rfind("HTTP ", 0) != 0) __builtin_trap();
    (void)is_retryable(f.cls);
    (void)errc_of(f.cls);
    (void)class_name(f.cls);
  } else if (r.status != 200) {
    __builtin_trap();
  }
  // InitiateMultipartUpload
  (void)xml_text(xml, "UploadId");
  // ListParts (as src/uploader/ reconcile_parts reads it)
  for (auto part : xml_blocks(xml, "Part")) {
    // A block is empty (<Part/>) or a view inside the body.
    if (!part.empty() &&
        (part.data() < xml.data() || part.data() + part.size() > xml.data() + xml.size()))
      __builtin_trap();
    auto n = std::strtoul(xml_text(part, "PartNumber").value_or("0").c_str(), nullptr, 10);
    (void)n;
    (void)xml_text(part, "ETag");
    (void)std::strtoull(xml_text(part, "Size").value_or("0").c_str(), nullptr, 10);
  }
  (void)xml_text(xml, "IsTruncated");
  (void)xml_text(xml, "NextPartNumberMarker");
  // CompleteMultipartUpload
  (void)xml_text(xml, "ETag");
  // ListObjectsV2 (src/cloud/query.cpp)
  for (auto c : xml_blocks(xml, "Contents")) {
    (void)xml_text(c, "Key");
    (void)xml_text(c, "Size");
  }
  // Escaping round-trips any byte string.
  if (xml_unescape(xml_escape(xml)) != xml) __builtin_trap();
  return 0;
}
