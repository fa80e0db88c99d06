"""Shared pytest fixtures for fleetpipe's Python tests.

- ``s3``: a session-wide real S3 server (tests/s3server). If FLEETPIPE_S3_STATE names a state dir
  whose server is running (``scripts/test`` starts one), that one is used; otherwise a server is
  started in a temp dir for this session and stopped at the end. The value is the dict of
  STATE_DIR/env (S3_ENDPOINT_HTTPS, S3_CA_FILE, ...).
- ``s3_client``: a boto3 client over HTTPS that trusts only S3_CA_FILE.
- sys.path gets tests/s3server (``import s3env``), tests/faultproxy (``import faultproxy``) and
  the built Python bindings: $FLEETPIPE_PYTHONPATH, else <repo>/build/python, when it exists.
"""
import os
import subprocess
import sys
import tempfile

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
S3SERVER = os.path.join(REPO, "tests", "s3server")
for path in (os.environ.get("FLEETPIPE_PYTHONPATH", os.path.join(REPO, "build", "python")),
             os.path.join(REPO, "tests", "faultproxy"), S3SERVER):
    if os.path.isdir(path) and path not in sys.path:
        sys.path.insert(0, path)

import s3env  # noqa: E402

# Variables that would make peer tools trust another CA or use a proxy; tools we start run without.
FOREIGN_ENV = ("AWS_CA_BUNDLE", "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE",
               "http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY")


def clean_env():
    """os.environ without FOREIGN_ENV, for subprocesses."""
    return {k: v for k, v in os.environ.items() if k not in FOREIGN_ENV}


def _running_env(state_dir):
    try:
        env = s3env.load_env(state_dir)
    except OSError:
        return None
    return env if s3env.env_alive(env) else None


@pytest.fixture(scope="session")
def s3():
    shared = os.environ.get("FLEETPIPE_S3_STATE")
    env = _running_env(shared) if shared else None
    if env is not None:
        yield env
        return
    state = tempfile.mkdtemp(prefix="fleetpipe-s3.")
    proc = subprocess.run([os.path.join(S3SERVER, "start"), state], env=clean_env(), stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=300, check=False)
    if proc.returncode != 0:
        subprocess.run([os.path.join(S3SERVER, "stop"), state], check=False)
        pytest.fail("tests/s3server/start failed:\n" + proc.stdout.decode(errors="replace"), pytrace=False)
    try:
        yield s3env.load_env(state)
    finally:
        subprocess.run([os.path.join(S3SERVER, "stop"), state], check=False)
        subprocess.run(["rm", "-rf", "--", state], check=False)


@pytest.fixture(scope="session")
def s3_client(s3):
    return s3env.boto3_client(s3, https=True)
