// Internal to the CLI: the options `query` and `status` share to reach a bucket.
//
//   --config FILE          a fleetpipe config; its "uploader" section names the bucket
//   --endpoint URL --bucket NAME --region R --prefix P --ca-file PEM
//   --access-key / --secret-key (else: config keys, AWS_* variables, shared credentials file)
//   --connect-address IP   connect here instead of resolving the endpoint host
// Flags override the config file.
#pragma once

#include <CLI/CLI.hpp>
#include <cstdio>
#include <string>

#include "fleetpipe/config.hpp"
#include "fleetpipe/uploader.hpp"

namespace fleetpipe::cli {

struct BucketOptions {
  std::string config_file, endpoint, bucket, region, prefix, ca_file, access_key, secret_key,
      session_token, connect_address;
  bool insecure_http = false;

  void add_to(CLI::App* cmd) {
    cmd->add_option("--config", config_file, "fleetpipe config file (its \"uploader\" section)");
    cmd->add_option("--endpoint", endpoint, "S3 endpoint, https://host[:port]");
    cmd->add_option("--bucket", bucket, "bucket name");
    cmd->add_option("--region", region, "region (default us-east-1)");
    cmd->add_option("--prefix", prefix, "key prefix (default fleetpipe)");
    cmd->add_option("--ca-file", ca_file, "PEM file of the CA to trust");
    cmd->add_option("--connect-address", connect_address, "connect to this address instead");
    cmd->add_option("--access-key", access_key, "access key id (else AWS_ACCESS_KEY_ID, ...)");
    cmd->add_option("--secret-key", secret_key, "secret access key");
    cmd->add_option("--session-token", session_token, "session token");
    cmd->add_flag("--allow-insecure-http", insecure_http, "allow an http:// endpoint");
  }

  /// The bucket settings; prints the error and returns false on a bad config file.
  bool resolve(UploaderConfig& out) const {
    if (!config_file.empty()) {
      auto c = load_config_file(config_file);
      if (!c) {
        std::fprintf(stderr, "fleetpipe: %s\n", c.error().message.c_str());
        return false;
      }
      out = c->uploader;
    }
    if (!endpoint.empty()) out.endpoint = endpoint;
    if (!bucket.empty()) out.bucket = bucket;
    if (!region.empty()) out.region = region;
    if (!prefix.empty()) out.prefix = prefix;
    if (!ca_file.empty()) out.ca_file = ca_file;
    if (!connect_address.empty()) out.connect_address = connect_address;
    if (insecure_http) out.allow_insecure_http = true;
    if (!access_key.empty()) {
      out.credentials.source = CredentialsSource::static_keys;
      out.credentials.access_key_id = access_key;
      out.credentials.secret_access_key = secret_key;
      out.credentials.session_token = session_token;
    }
    if (out.bucket.empty()) {
      std::fprintf(stderr, "fleetpipe: no bucket (use --bucket or --config)\n");
      return false;
    }
    return true;
  }
};

}  // namespace fleetpipe::cli
