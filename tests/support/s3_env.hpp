// Test helper: the real S3 server started by the ctest fixture (tests/s3server/start).
// Reads "$FLEETPIPE_S3_STATE/env" (export KEY=VALUE lines).
#pragma once

#include <cstdlib>
#include <fstream>
#include <map>
#include <stdexcept>
#include <string>

#include "fleetpipe/uploader.hpp"

namespace fleetpipe::test {

struct S3Env {
  std::string endpoint_http, endpoint_https, access_key, secret_key, region, ca_file, state_dir;
};

inline S3Env load_s3_env() {
  const char* dir = std::getenv("FLEETPIPE_S3_STATE");
  if (!dir) throw std::runtime_error("FLEETPIPE_S3_STATE is not set (run through ctest)");
  std::ifstream in(std::string(dir) + "/env");
  if (!in) throw std::runtime_error(std::string("no S3 env file in ") + dir);
  std::map<std::string, std::string> kv;
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("export ", 0) == 0) line = line.substr(7);
    auto eq = line.find('=');
    if (eq == std::string::npos) continue;
    std::string v = line.substr(eq + 1);
    if (v.size() >= 2 && (v.front() == '"' || v.front() == '\'')) v = v.substr(1, v.size() - 2);
    kv[line.substr(0, eq)] = v;
  }
  S3Env e;
  e.endpoint_http = kv["S3_ENDPOINT_HTTP"];
  e.endpoint_https = kv["S3_ENDPOINT_HTTPS"];
  e.access_key = kv["S3_ACCESS_KEY"];
  e.secret_key = kv["S3_SECRET_KEY"];
  e.region = kv["S3_REGION"];
  e.ca_file = kv["S3_CA_FILE"];
  e.state_dir = dir;
  if (e.endpoint_https.empty()) throw std::runtime_error("S3 env file is incomplete");
  return e;
}

/// An UploaderConfig (also the BucketReader's) that reaches `bucket` on this server over HTTPS
/// with its CA and its static keys; every other field keeps its default.
inline UploaderConfig s3_uploader_config(const S3Env& env, const std::string& bucket,
                                         const std::string& prefix) {
  UploaderConfig u;
  u.endpoint = env.endpoint_https;
  u.ca_file = env.ca_file;
  u.region = env.region;
  u.bucket = bucket;
  u.prefix = prefix;
  u.credentials.source = CredentialsSource::static_keys;
  u.credentials.access_key_id = env.access_key;
  u.credentials.secret_access_key = env.secret_key;
  return u;
}

}  // namespace fleetpipe::test
