"""Helpers for tests that talk to the server started by ``tests/s3server/start``.

    import s3env
    env = s3env.load_env(state_dir)             # the variables of STATE_DIR/env as a dict
    s3 = s3env.boto3_client(env)                # HTTPS, trusting only env["S3_CA_FILE"]
    s3env.ensure_bucket(s3, "fleetpipe-test")

The client is built so that nothing from the process environment or ~/.aws changes it: the CA to
trust is passed explicitly (AWS_CA_BUNDLE, REQUESTS_CA_BUNDLE, SSL_CERT_FILE are ignored), no
profile or config file is read, proxies from *_proxy variables are not used, addressing is
path-style (``*.s3.localhost`` does not resolve on every host), and the region comes from the env.
"""
import os

__all__ = ["load_env", "env_alive", "boto3_client", "ensure_bucket"]


def load_env(state_dir):
    """Parse STATE_DIR/env (``export K=V`` lines) into a dict. Raises FileNotFoundError."""
    env = {}
    with open(os.path.join(state_dir, "env"), encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line.startswith("export ") or "=" not in line:
                continue
            key, value = line[len("export "):].split("=", 1)
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
                value = value[1:-1]
            env[key] = value
    return env


def env_alive(env):
    """True if every pid in env["S3_PIDS"] is alive and still runs this state dir's config."""
    pids = env.get("S3_PIDS", "").split()
    marker = os.path.join(env.get("S3_STATE_DIR", ""), "etc") + "/"
    if not pids or marker == "etc/":
        return False
    for pid in pids:
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                if marker.encode() not in f.read():
                    return False
        except OSError:
            return False
    return True


def _clean_session():
    """A botocore session that reads no environment variables and no ~/.aws files."""
    import botocore.session
    # Each session variable keeps its name and built-in default but loses its environment
    # variable; config and credentials files are /dev/null (empty).
    names = botocore.session.Session.SESSION_VARIABLES
    clean = {}
    for name, spec in dict(names).items():
        spec = tuple(spec)
        default = os.devnull if name in ("config_file", "credentials_file") else spec[2]
        clean[name] = (spec[0], None, default) + spec[3:]
    return botocore.session.Session(session_vars=clean)


def boto3_client(env, https=True, **config_kwargs):
    """A boto3 S3 client for the server in ``env``.

    https=True uses S3_ENDPOINT_HTTPS with ``verify=env["S3_CA_FILE"]``; https=False uses
    S3_ENDPOINT_HTTP. Extra keyword arguments go to ``botocore.config.Config`` (e.g.
    ``retries={"max_attempts": 0}``); ``verify`` may be overridden with ``config_kwargs``'s
    special key ``verify`` (only for tests that prove verification fails without the CA).
    """
    import boto3
    from botocore.config import Config
    verify = config_kwargs.pop("verify", env["S3_CA_FILE"] if https else None)
    cfg = dict(
        signature_version="s3v4",
        region_name=env["S3_REGION"],
        s3={"addressing_style": "path"},
        retries={"max_attempts": 2, "mode": "standard"},
        proxies={},  # not None: botocore would otherwise read *_proxy from the environment
        connect_timeout=10,
        read_timeout=60,
    )
    cfg.update(config_kwargs)
    session = boto3.session.Session(botocore_session=_clean_session())
    return session.client(
        "s3",
        endpoint_url=env["S3_ENDPOINT_HTTPS"] if https else env["S3_ENDPOINT_HTTP"],
        region_name=env["S3_REGION"],
        aws_access_key_id=env["S3_ACCESS_KEY"],
        aws_secret_access_key=env["S3_SECRET_KEY"],
        verify=verify,
        config=Config(**cfg),
    )


def ensure_bucket(client, name):
    """Create bucket ``name`` unless it exists already (owned by us). Returns ``name``."""
    from botocore.exceptions import ClientError
    try:
        client.create_bucket(Bucket=name)
    except ClientError as e:
        if e.response.get("Error", {}).get("Code") not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            raise
    return name
