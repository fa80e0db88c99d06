"""fleetpipe.sign_s3_request: AWS's published S3 SigV4 examples, error paths, and a real request
signed by it and accepted by the S3 server."""
import datetime
import ssl
import urllib.error
import urllib.request

import pytest

import fleetpipe

AK = "AKIAIOSFODNN7EXAMPLE"
SK = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
DATE = "20130524T000000Z"
EMPTY_SHA = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def sig(headers):
    return headers["authorization"].rsplit("Signature=", 1)[1]


def test_get_object_example_from_the_aws_docs():
    h = fleetpipe.sign_s3_request("GET", "https://examplebucket.s3.amazonaws.com/test.txt",
                                  {"Range": "bytes=0-9"}, b"", AK, SK, "us-east-1", DATE)
    assert list(h) == ["x-amz-date", "x-amz-content-sha256", "authorization"]
    assert h["x-amz-date"] == DATE
    assert h["x-amz-content-sha256"] == EMPTY_SHA
    assert "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date" in h["authorization"]
    assert sig(h) == "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"


def test_put_object_example_from_the_aws_docs():
    h = fleetpipe.sign_s3_request(
        "PUT", "https://examplebucket.s3.amazonaws.com/test$file.text",
        [("Date", "Fri, 24 May 2013 00:00:00 GMT"), ("x-amz-storage-class", "REDUCED_REDUNDANCY")],
        b"Welcome to Amazon S3.", AK, SK, "us-east-1", DATE)
    assert h["x-amz-content-sha256"] == \
        "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072"
    assert sig(h) == "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd"


def test_list_objects_example_with_query_string():
    h = fleetpipe.sign_s3_request("GET", "https://examplebucket.s3.amazonaws.com/?max-keys=2&prefix=J",
                                  None, None, AK, SK, "us-east-1", DATE)
    assert sig(h) == "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7"


def test_session_token_and_unsigned_payload_are_signed_headers():
    h = fleetpipe.sign_s3_request("PUT", "https://127.0.0.1:9000/b/k", {}, b"data", AK, SK,
                                  "eu-central-2", DATE, session_token="TOKEN",
                                  unsigned_payload=True)
    assert list(h) == ["x-amz-date", "x-amz-content-sha256", "x-amz-security-token",
                       "authorization"]
    assert h["x-amz-content-sha256"] == "UNSIGNED-PAYLOAD"
    assert h["x-amz-security-token"] == "TOKEN"
    assert "x-amz-security-token" in h["authorization"].split("SignedHeaders=")[1]
    assert SK not in h["authorization"]


def test_str_payload_equals_its_utf8_bytes():
    a = fleetpipe.sign_s3_request("PUT", "https://h/b/k", {}, "é", AK, SK, "r", DATE)
    b = fleetpipe.sign_s3_request("PUT", "https://h/b/k", {}, "é".encode(), AK, SK, "r", DATE)
    assert a == b
    assert fleetpipe.sha256_hex(b"") == EMPTY_SHA


@pytest.mark.parametrize("kwargs, fragment", [
    (dict(amz_date="2013-05-24"), "amz_date"),
    (dict(url="not a url"), "URL"),
    (dict(access_key=""), "access key"),
    (dict(region=""), "region"),
    (dict(method=""), "method"),
])
def test_bad_arguments_raise_invalid_argument(kwargs, fragment):
    args = dict(method="GET", url="https://h/b/k", headers={}, payload=b"", access_key=AK,
                secret_key=SK, region="us-east-1", amz_date=DATE)
    args.update(kwargs)
    with pytest.raises(fleetpipe.Error) as info:
        fleetpipe.sign_s3_request(**args)
    assert info.value.reason == "invalid argument"
    assert fragment.lower() in str(info.value).lower()
    assert SK not in str(info.value)


def test_headers_must_be_pairs():
    with pytest.raises(ValueError):
        fleetpipe.sign_s3_request("GET", "https://h/b/k", [("a", "b", "c")], b"", AK, SK, "r", DATE)


def test_a_request_it_signs_is_accepted_by_the_real_server(s3, s3_client, bucket):
    body = b"signed by fleetpipe.sign_s3_request"
    url = "%s/%s/py%%20key.txt" % (s3["S3_ENDPOINT_HTTPS"], bucket)
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    headers = {"content-type": "text/plain"}
    added = fleetpipe.sign_s3_request("PUT", url, headers, body, s3["S3_ACCESS_KEY"],
                                      s3["S3_SECRET_KEY"], s3["S3_REGION"], now)
    ctx = ssl.create_default_context(cafile=s3["S3_CA_FILE"])
    req = urllib.request.Request(url, data=body, method="PUT", headers={**headers, **added})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}),
                                         urllib.request.HTTPSHandler(context=ctx))
    with opener.open(req, timeout=30) as resp:
        assert resp.status == 200
    got = s3_client.get_object(Bucket=bucket, Key="py key.txt")["Body"].read()
    assert got == body

    # A tampered signature is refused by the server (so the check above is meaningful).
    bad = dict(added)
    bad["authorization"] = bad["authorization"][:-4] + "0000"
    req = urllib.request.Request(url, data=body, method="PUT", headers={**headers, **bad})
    with pytest.raises(urllib.error.HTTPError) as info:
        opener.open(req, timeout=30)
    assert info.value.code == 403
