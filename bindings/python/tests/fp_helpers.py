"""Helpers shared by the bindings' tests (imported by name: the test directory is on sys.path)."""
import os

# Variables that would make peer tools trust another CA or use a proxy (as tests/python/conftest.py).
FOREIGN_ENV = ("AWS_CA_BUNDLE", "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE",
               "http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY")


def clean_env():
    """os.environ without FOREIGN_ENV, for subprocesses."""
    return {k: v for k, v in os.environ.items() if k not in FOREIGN_ENV}


def make_uploader_section(env, bucket, **objects):
    section = {
        "endpoint": env["S3_ENDPOINT_HTTPS"],
        "bucket": bucket,
        "region": env["S3_REGION"],
        "tls": {"ca_file": env["S3_CA_FILE"]},
        "credentials": {"source": "static", "access_key_id": env["S3_ACCESS_KEY"],
                        "secret_access_key": env["S3_SECRET_KEY"]},
        "retry": {"max_attempts": 3, "base_delay": "50ms", "max_delay": "200ms"},
    }
    if objects:
        section["objects"] = objects
    return section


def bucket_args(env, bucket):
    """The CLI flags reaching `bucket`."""
    return ["--endpoint", env["S3_ENDPOINT_HTTPS"], "--bucket", bucket, "--region", env["S3_REGION"],
            "--ca-file", env["S3_CA_FILE"], "--access-key", env["S3_ACCESS_KEY"],
            "--secret-key", env["S3_SECRET_KEY"]]
