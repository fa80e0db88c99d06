// Credentials: the sources (static, environment, profile file, host) and their resolution.
#include "s3/credentials.hpp"

#include <sys/stat.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>

namespace fleetpipe::detail {

namespace {

std::string trim(const std::string& s) {
  auto b = s.find_first_not_of(" \t\r\n");
  if (b == std::string::npos) return {};
  auto e = s.find_last_not_of(" \t\r\n");
  return s.substr(b, e - b + 1);
}

std::string default_credentials_path() {
  if (const char* p = std::getenv("AWS_SHARED_CREDENTIALS_FILE"); p && *p) return p;
  const char* home = std::getenv("HOME");
  return std::string(home ? home : "") + "/.aws/credentials";
}

}  // namespace

Result<Credentials> read_shared_credentials_file(const std::string& path,
                                                 const std::string& profile) {
  std::ifstream in(path);
  if (!in) return Error(errc::io_error, "cannot read shared credentials file " + path);
  Credentials c;
  bool in_profile = false, found = false;
  std::string line;
  while (std::getline(in, line)) {
    line = trim(line);
    if (line.empty() || line[0] == '#' || line[0] == ';') continue;
    if (line.front() == '[' && line.back() == ']') {
      std::string name = trim(line.substr(1, line.size() - 2));
      if (name.rfind("profile ", 0) == 0) name = trim(name.substr(8));
      in_profile = name == profile;
      found = found || in_profile;
      continue;
    }
    if (!in_profile) continue;
    auto eq = line.find('=');
    if (eq == std::string::npos) continue;
    std::string k = trim(line.substr(0, eq)), v = trim(line.substr(eq + 1));
    if (k == "aws_access_key_id") c.access_key_id = v;
    else if (k == "aws_secret_access_key") c.secret_access_key = v;
    else if (k == "aws_session_token") c.session_token = v;
  }
  if (!found) {
    return Error(errc::auth_error, "profile [" + profile + "] not found in " + path);
  }
  if (c.access_key_id.empty() || c.secret_access_key.empty()) {
    return Error(errc::auth_error, "profile [" + profile + "] in " + path +
                                       " lacks aws_access_key_id or aws_secret_access_key");
  }
  return c;
}

std::string credentials_file_warning(const UploaderCredentialsConfig& config) {
  if (config.source != CredentialsSource::profile && config.source != CredentialsSource::auto_detect)
    return {};
  std::string path = config.shared_credentials_file.empty() ? default_credentials_path()
                                                            : config.shared_credentials_file;
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0 || !(st.st_mode & S_IROTH)) return {};
  char mode[8];
  std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
  return "shared credentials file " + path + " is world-readable (mode " + mode +
         "): other users on this device can read the secret key; run chmod 600 on it";
}

Result<Credentials> credentials_from_environment() {
  const char* id = std::getenv("AWS_ACCESS_KEY_ID");
  const char* secret = std::getenv("AWS_SECRET_ACCESS_KEY");
  if (!id || !*id || !secret || !*secret) {
    return Error(errc::auth_error,
                 "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are not both set");
  }
  Credentials c;
  c.access_key_id = id;
  c.secret_access_key = secret;
  if (const char* tok = std::getenv("AWS_SESSION_TOKEN")) c.session_token = tok;
  return c;
}

Result<Credentials> CredentialResolver::get() const {
  auto from_static = [&]() -> Result<Credentials> {
    if (config_.access_key_id.empty() || config_.secret_access_key.empty()) {
      return Error(errc::auth_error, "no static access_key_id/secret_access_key in the config");
    }
    return Credentials{config_.access_key_id, config_.secret_access_key, config_.session_token};
  };
  auto from_profile = [&]() {
    std::string path = config_.shared_credentials_file.empty() ? default_credentials_path()
                                                               : config_.shared_credentials_file;
    auto r = read_shared_credentials_file(path, config_.profile);
    if (!r.ok() && r.error().is(errc::io_error)) {
      return Result<Credentials>(Error(errc::auth_error, r.error().message));
    }
    return r;
  };
  auto from_host = [&]() -> Result<Credentials> {
    if (!host_) return Error(errc::auth_error, "no CredentialsProvider in the Port");
    auto r = host_->get();
    if (!r.ok()) return Error(errc::auth_error, "host credentials: " + r.error().message);
    if (r->access_key_id.empty() || r->secret_access_key.empty()) {
      return Error(errc::auth_error, "host credentials provider returned empty keys");
    }
    return r;
  };
  switch (config_.source) {
    case CredentialsSource::static_keys: return from_static();
    case CredentialsSource::environment: return credentials_from_environment();
    case CredentialsSource::profile: return from_profile();
    case CredentialsSource::host: return from_host();
    case CredentialsSource::auto_detect: break;
  }
  if (host_) return from_host();
  if (!config_.access_key_id.empty()) return from_static();
  auto env = credentials_from_environment();
  if (env.ok()) return env;
  auto prof = from_profile();
  if (prof.ok()) return prof;
  return Error(errc::auth_error,
               "no credentials: no host provider, no static keys, no AWS_ACCESS_KEY_ID in the "
               "environment, and " + prof.error().message);
}

}  // namespace fleetpipe::detail
