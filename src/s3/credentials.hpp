// Internal: where the uploader's S3 credentials come from (config, environment, shared
// credentials file, host callback). Errors name the source, never a secret.
#pragma once

#include <string>

#include "fleetpipe/port.hpp"
#include "fleetpipe/uploader.hpp"

namespace fleetpipe::detail {

/// Parses an AWS shared credentials file (INI: [profile] sections, aws_access_key_id,
/// aws_secret_access_key, aws_session_token). Errors: io_error (unreadable), auth_error
/// (profile or keys missing).
Result<Credentials> read_shared_credentials_file(const std::string& path,
                                                 const std::string& profile);

/// AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN. Errors: auth_error.
Result<Credentials> credentials_from_environment();

/// A warning for people when the shared credentials file the config would read is readable by
/// other users (mode & 0004), naming the file and its mode, never its content; "" otherwise.
std::string credentials_file_warning(const UploaderCredentialsConfig& config);

/// Resolves per the config on every call (cheap; a host callback may rotate keys, and a
/// rewritten credentials file is picked up).
class CredentialResolver {
 public:
  CredentialResolver(UploaderCredentialsConfig config, CredentialsProvider* host)
      : config_(std::move(config)), host_(host) {}
  /// Errors: auth_error ("no credentials: ..." naming the sources tried).
  Result<Credentials> get() const;

 private:
  UploaderCredentialsConfig config_;
  CredentialsProvider* host_;
};

}  // namespace fleetpipe::detail
