"""Fixtures for the Python bindings' tests.

Reuses tests/python/conftest.py (the real S3 server fixture ``s3`` and ``s3_client``; it also puts
the built package on sys.path: $FLEETPIPE_PYTHONPATH, else build/python) and adds:

- ``bucket``: a fresh bucket name on that server (created), one per test.
- ``uploader_section(bucket)``: the "uploader" config section reaching it over HTTPS with the
  server's CA and static keys.
- ``reader(bucket)``: a fleetpipe.BucketReader on that bucket.
- ``cli``: path of the built ``fleetpipe`` command (skips when not built).
"""
import importlib.util
import itertools
import os
import time

import pytest

_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
_spec = importlib.util.spec_from_file_location(
    "fleetpipe_tests_python_conftest", os.path.join(_REPO, "tests", "python", "conftest.py"))
_shared = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_shared)

s3 = _shared.s3
s3_client = _shared.s3_client
clean_env = _shared.clean_env

from fp_helpers import make_uploader_section  # noqa: E402

import fleetpipe  # noqa: E402  (after the shared conftest set sys.path)

_counter = itertools.count()


@pytest.fixture
def bucket(s3_client):
    import s3env
    name = "fp-py-%d-%d-%d" % (os.getpid(), int(time.time()) % 100000, next(_counter))
    s3env.ensure_bucket(s3_client, name)
    return name


@pytest.fixture
def uploader_section(s3, bucket):
    return make_uploader_section(s3, bucket)


@pytest.fixture
def reader(s3, bucket):
    return fleetpipe.BucketReader(endpoint=s3["S3_ENDPOINT_HTTPS"], bucket=bucket,
                                  region=s3["S3_REGION"], ca_file=s3["S3_CA_FILE"],
                                  access_key=s3["S3_ACCESS_KEY"], secret_key=s3["S3_SECRET_KEY"])


@pytest.fixture(scope="session")
def cli():
    candidates = [os.environ.get("FLEETPIPE_CLI", ""),
                  os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(fleetpipe.__file__))),
                               "fleetpipe")]
    for c in candidates:
        if c and os.path.isfile(c) and os.access(c, os.X_OK):
            return c
    pytest.skip("the fleetpipe command is not built next to the Python package")
