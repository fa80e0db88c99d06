// Internal: BucketReader's state and its request plumbing (list, ranged get), shared by the
// reader's files: query.cpp (events) and status.cpp (devices).
#pragma once

#include <algorithm>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <boost/asio/io_context.hpp>

#include "s3/credentials.hpp"
#include "s3/request_sender.hpp"
#include "s3/retry_policy.hpp"
#include "s3/s3_client.hpp"
#include "fleetpipe/query.hpp"

namespace fleetpipe {

namespace reader_internal {
constexpr std::uint64_t kRangeChunk = 4u << 20;  // the client refuses bodies above 4 MiB
constexpr std::uint32_t kAttempts = 4;
}  // namespace reader_internal

struct BucketReader::Impl {
  boost::asio::io_context ioc;
  UploaderConfig config;
  Port port;
  std::unique_ptr<detail::CredentialResolver> creds;
  std::unique_ptr<detail::S3Client> client;
  detail::ExponentialBackoff retry_policy{{reader_internal::kAttempts, 0.2, 0.8, /*full_jitter=*/false}};
  detail::RequestSender sender{ioc, retry_policy, {}};
  QueryStats stats;
  unsigned heartbeat_page_keys = 1000;  ///< max-keys of heartbeat listings (tests shrink it)

  /// One request, retried as retry_policy says (backoff 0.2, 0.4, 0.8 s), the io_context run
  /// until its outcome.
  Result<detail::S3Response> send(const detail::S3Request& req) {
    std::optional<detail::S3Outcome> out;
    sender.send(*client, req, [&](detail::S3Outcome o) { out = std::move(o); });
    ioc.restart();
    while (!out && ioc.run_one() > 0) {
    }
    if (!out) {
      client->cancel();
      sender.cancel_retries();
      return Error(errc::internal, "S3 request finished without an outcome");
    }
    if (out->ok) return std::move(out->response);
    const detail::S3Failure& last = out->failure;
    errc code = detail::errc_of(last.cls);
    if (last.s3_code == "NoSuchKey" || (last.status == 404 && !req.key.empty())) {
      code = errc::not_found;
    }
    std::string what = req.method + " " + (req.key.empty() ? "s3://" + config.bucket
                                                            : "s3://" + config.bucket + "/" + req.key);
    return Error(code, what + ": " + last.message);
  }

  /// One ListObjectsV2 page: after `start_after`, or where `token` (a NextContinuationToken)
  /// says; `next` is empty on the last page.
  struct Page {
    std::vector<ObjectInfo> objects;
    std::vector<std::string> prefixes;
    std::string next;
  };
  Result<Page> list_page(std::string_view prefix, std::string_view start_after,
                         std::string_view token, bool delimiter, unsigned max_keys = 1000) {
    detail::S3Request req;
    req.method = "GET";
    req.query = {{"list-type", "2"}, {"prefix", std::string(prefix)},
                 {"max-keys", std::to_string(max_keys)}};
    if (delimiter) req.query.emplace_back("delimiter", "/");
    if (!token.empty()) req.query.emplace_back("continuation-token", std::string(token));
    else if (!start_after.empty()) req.query.emplace_back("start-after", std::string(start_after));
    ++stats.list_requests;
    auto r = send(req);
    if (!r) return std::move(r).error();
    const std::string& body = r->body;
    if (body.find("<ListBucketResult") == std::string::npos) {
      return Error(errc::decode_error, "ListObjectsV2 of s3://" + config.bucket + "/" +
                                           std::string(prefix) + ": not a listing");
    }
    Page page;
    for (auto block : detail::xml_blocks(body, "Contents")) {
      ObjectInfo o;
      o.key = detail::xml_text(block, "Key").value_or("");
      auto sz = detail::xml_text(block, "Size").value_or("0");
      o.size = std::strtoull(sz.c_str(), nullptr, 10);
      o.last_modified = detail::xml_text(block, "LastModified").value_or("");
      o.etag = detail::xml_text(block, "ETag").value_or("");
      if (!o.key.empty()) page.objects.push_back(std::move(o));
    }
    if (delimiter) {
      for (auto block : detail::xml_blocks(body, "CommonPrefixes")) {
        if (auto p = detail::xml_text(block, "Prefix")) page.prefixes.push_back(*p);
      }
    }
    if (detail::xml_text(body, "IsTruncated").value_or("false") == "true") {
      page.next = detail::xml_text(body, "NextContinuationToken").value_or("");
    }
    stats.objects_listed += page.objects.size();
    return page;
  }

  Result<std::vector<ObjectInfo>> list(std::string_view prefix, std::string_view start_after,
                                       std::vector<std::string>* common_prefixes) {
    std::vector<ObjectInfo> out;
    std::string token;
    for (;;) {
      auto page = list_page(prefix, token.empty() ? start_after : std::string_view(), token,
                            common_prefixes != nullptr);
      if (!page) return std::move(page).error();
      for (auto& o : page->objects) out.push_back(std::move(o));
      if (common_prefixes) {
        for (auto& p : page->prefixes) common_prefixes->push_back(std::move(p));
      }
      if (page->next.empty()) break;
      token = std::move(page->next);
    }
    return out;
  }

  Result<std::string> get(std::string_view key, std::uint64_t offset, std::uint64_t length) {
    std::string data;
    std::uint64_t pos = offset;
    const bool whole = length == 0 && offset == 0;
    for (;;) {
      detail::S3Request req;
      req.method = "GET";
      req.key = std::string(key);
      std::uint64_t want = reader_internal::kRangeChunk;
      if (length > 0) want = std::min<std::uint64_t>(reader_internal::kRangeChunk, offset + length - pos);
      req.headers.emplace_back("range", "bytes=" + std::to_string(pos) + "-" +
                                            std::to_string(pos + want - 1));
      ++stats.gets;
      auto r = send(req);
      if (!r) {
        // An empty object answers 416 to any range: retry without one.
        if (whole && pos == 0 && r.error().message.find("InvalidRange") != std::string::npos) {
          detail::S3Request plain;
          plain.method = "GET";
          plain.key = std::string(key);
          auto p = send(plain);
          if (!p) return std::move(p).error();
          return std::move(p->body);
        }
        return std::move(r).error();
      }
      data += r->body;
      pos += r->body.size();
      std::uint64_t total = 0;
      auto cr = r->header("content-range");  // "bytes a-b/total"
      auto slash = cr.rfind('/');
      if (slash != std::string::npos) total = std::strtoull(cr.c_str() + slash + 1, nullptr, 10);
      if (r->status == 200) return data;  // the server ignored the range: whole object
      if (r->body.empty()) break;
      if (length > 0 && pos >= offset + length) break;
      if (total > 0 && pos >= total) break;
      if (total == 0 && r->body.size() < want) break;
    }
    return data;
  }
};

}  // namespace fleetpipe
