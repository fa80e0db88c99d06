"""The project's S3 test server works with boto3 over HTTPS, and only with its own CA."""
import os
import socket
import ssl
import urllib.parse
import uuid

import pytest
import s3env
from botocore.exceptions import ClientError, SSLError


def unique_bucket(prefix="fp-test"):
    return "%s-%s" % (prefix, uuid.uuid4().hex[:12])


def test_env_has_everything(s3):
    for key in ("S3_ENDPOINT_HTTP", "S3_ENDPOINT_HTTPS", "S3_ACCESS_KEY", "S3_SECRET_KEY", "S3_REGION",
                "S3_CA_FILE", "S3_PIDS", "S3_STATE_DIR"):
        assert s3.get(key), key
    assert s3["S3_ENDPOINT_HTTPS"].startswith("https://127.0.0.1:")
    assert s3["S3_ENDPOINT_HTTP"].startswith("http://127.0.0.1:")
    assert os.path.isfile(s3["S3_CA_FILE"])
    assert s3env.env_alive(s3)


def test_put_get_list_over_https(s3, s3_client):
    bucket = s3env.ensure_bucket(s3_client, unique_bucket())
    assert s3env.ensure_bucket(s3_client, bucket) == bucket  # idempotent
    body = os.urandom(1024 * 1024 + 7) + b"\x00\r\n\xff"
    s3_client.put_object(Bucket=bucket, Key="dir/obj.bin", Body=body)
    got = s3_client.get_object(Bucket=bucket, Key="dir/obj.bin")["Body"].read()
    assert got == body
    listed = s3_client.list_objects_v2(Bucket=bucket, Prefix="dir/")
    assert [(o["Key"], o["Size"]) for o in listed["Contents"]] == [("dir/obj.bin", len(body))]
    s3_client.delete_object(Bucket=bucket, Key="dir/obj.bin")
    s3_client.delete_bucket(Bucket=bucket)


def test_plain_http_endpoint(s3):
    client = s3env.boto3_client(s3, https=False)
    bucket = s3env.ensure_bucket(client, unique_bucket())
    client.put_object(Bucket=bucket, Key="k", Body=b"hello")
    assert client.get_object(Bucket=bucket, Key="k")["Body"].read() == b"hello"
    client.delete_object(Bucket=bucket, Key="k")
    client.delete_bucket(Bucket=bucket)


def test_server_checks_signatures(s3, s3_client):
    bucket = s3env.ensure_bucket(s3_client, unique_bucket())
    bad = s3env.boto3_client(dict(s3, S3_SECRET_KEY="not-the-secret"), retries={"max_attempts": 0})
    with pytest.raises(ClientError) as e:
        bad.list_objects_v2(Bucket=bucket)
    assert e.value.response["Error"]["Code"] == "SignatureDoesNotMatch"
    s3_client.delete_bucket(Bucket=bucket)


def test_https_fails_without_the_ca(s3):
    # Default trust store (certifi / system): the throwaway CA is not in it.
    client = s3env.boto3_client(s3, verify=True, retries={"max_attempts": 0})
    with pytest.raises(SSLError) as e:
        client.list_buckets()
    assert "CERTIFICATE_VERIFY_FAILED" in str(e.value) or "certificate verify failed" in str(e.value)

    # And at the socket level: a real handshake failure, then success with the CA.
    url = urllib.parse.urlsplit(s3["S3_ENDPOINT_HTTPS"])
    with socket.create_connection((url.hostname, url.port), timeout=10) as raw:
        with pytest.raises(ssl.SSLCertVerificationError):
            ssl.create_default_context().wrap_socket(raw, server_hostname=url.hostname)
    ctx = ssl.create_default_context(cafile=s3["S3_CA_FILE"])
    with socket.create_connection((url.hostname, url.port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname=url.hostname) as tls:
            assert tls.version().startswith("TLS")


def test_client_ignores_foreign_ca_environment(s3, monkeypatch, tmp_path):
    # A bogus AWS_CA_BUNDLE / config file in the environment must not change our client.
    bogus = tmp_path / "bogus-ca.pem"
    bogus.write_text("not a certificate\n")
    monkeypatch.setenv("AWS_CA_BUNDLE", str(bogus))
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(bogus))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(bogus))
    monkeypatch.setenv("AWS_PROFILE", "does-not-exist")
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    client = s3env.boto3_client(s3)
    assert isinstance(client.list_buckets()["Buckets"], list)


def test_load_env_parses_quotes(tmp_path):
    (tmp_path / "env").write_text('export A=1\nexport B="two words"\n# comment\nexport C=x=y\n')
    assert s3env.load_env(str(tmp_path)) == {"A": "1", "B": "two words", "C": "x=y"}
