// Shared by the examples: tiny "--name value" flags, and where to upload.
//
// S3 settings come from flags (--endpoint URL --bucket NAME --access-key K --secret-key S
// --ca-file PEM --region R), else from the env file of a local test server started with
// `tests/s3server/start STATE` (--s3-state STATE, or $FLEETPIPE_S3_STATE). With neither, the
// example runs without uploading (data stays in its local buffer).
#pragma once

#include <cstdlib>
#include <fstream>
#include <map>
#include <string>

#include <fleetpipe/config.hpp>

namespace example {

class Args {
 public:
  Args(int argc, char** argv) {
    for (int i = 1; i + 1 < argc; i += 2) flags_[argv[i]] = argv[i + 1];
  }
  std::string get(const std::string& name, const std::string& def = "") const {
    auto it = flags_.find(name);
    return it == flags_.end() ? def : it->second;
  }
  double number(const std::string& name, double def) const {
    auto v = get(name);
    return v.empty() ? def : std::atof(v.c_str());
  }

 private:
  std::map<std::string, std::string> flags_;
};

/// Fills `u` (endpoint, keys, CA, bucket). Returns false when no server is configured.
inline bool apply_s3(const Args& args, fleetpipe::UploaderConfig& u,
                     const std::string& default_bucket) {
  std::map<std::string, std::string> env;  // "export K=V" lines of STATE/env
  const char* state_env = std::getenv("FLEETPIPE_S3_STATE");
  std::string state = args.get("--s3-state", state_env ? state_env : "");
  if (!state.empty()) {
    std::ifstream in(state + "/env");
    for (std::string line; std::getline(in, line);) {
      if (line.rfind("export ", 0) == 0) line = line.substr(7);
      auto eq = line.find('=');
      if (eq == std::string::npos) continue;
      std::string v = line.substr(eq + 1);
      if (v.size() >= 2 && (v.front() == '"' || v.front() == '\'')) v = v.substr(1, v.size() - 2);
      env[line.substr(0, eq)] = v;
    }
  }
  u.endpoint = args.get("--endpoint", env["S3_ENDPOINT_HTTPS"]);
  if (u.endpoint.empty()) return false;
  u.bucket = args.get("--bucket", default_bucket);
  u.region = args.get("--region", env.count("S3_REGION") ? env["S3_REGION"] : u.region);
  u.ca_file = args.get("--ca-file", env["S3_CA_FILE"]);
  u.credentials.source = fleetpipe::CredentialsSource::static_keys;
  u.credentials.access_key_id = args.get("--access-key", env["S3_ACCESS_KEY"]);
  u.credentials.secret_access_key = args.get("--secret-key", env["S3_SECRET_KEY"]);
  return true;
}

}  // namespace example
