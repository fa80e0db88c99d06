// Test helper: the independent boto3 read-back (tests/s3/uploader_readback.py) against the ctest
// S3 server, its JSON answer parsed. Fails the current test when the script fails or prints
// something that is not JSON (the script's stderr, e.g. a traceback, is in the test output).
#pragma once

#include <catch2/catch.hpp>
#include <exception>
#include <nlohmann/json.hpp>
#include <string>

#include "support/s3_env.hpp"
#include "support/shell.hpp"

namespace fleetpipe::test {

/// Runs `uploader_readback.py STATE_DIR <args>` (args: a shell fragment, quote keys and paths)
/// with the machine's CA variables unset (the script trusts the state dir's CA only).
inline nlohmann::json readback(const S3Env& env, const std::string& args) {
  const std::string cmd =
      "env -u AWS_CA_BUNDLE -u SSL_CERT_FILE -u REQUESTS_CA_BUNDLE -u SSL_CERT_DIR -u CURL_CA_BUNDLE "
      "/usr/bin/python3 " FLEETPIPE_SOURCE_DIR "/tests/s3/uploader_readback.py '" +
      env.state_dir + "' " + args;
  std::string out;
  try {
    out = run(cmd);
  } catch (const std::exception& e) {
    FAIL("uploader_readback.py " << args << " failed:\n" << e.what());
  }
  auto j = nlohmann::json::parse(out, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) FAIL("uploader_readback.py " << args << " printed invalid JSON:\n" << out);
  return j;
}

}  // namespace fleetpipe::test
