#!/usr/bin/python3
"""tls_server.py: a tiny HTTPS server on loopback with a chosen (bad) certificate, for the
security tests (tests/test_uploader_tls_and_secrets.cpp). It answers every request like a permissive S3:
200, ETag = MD5 of the body, and logs each request line to DIR/requests.log.

    tls_server.py --dir DIR --mode MODE --port-file F [--exit-with-parent]

MODE: valid       leaf for localhost/127.0.0.1 signed by DIR/ca.pem (the CA the client trusts)
      expired     same, but valid only 2020-01-01 .. 2020-01-02
      selfsigned  a self-signed leaf for localhost (not issued by DIR/ca.pem)
      wronghost   signed by DIR/ca.pem, but for other.example only
      deny        valid certificate; every request gets 403 SignatureDoesNotMatch with the
                  StringToSign and AWSAccessKeyId echoed, as AWS does
      reset2      valid certificate, but the first 2 connections are reset (RST) after the
                  client's ClientHello, as a server whose worker restarts does
Writes DIR/ca.pem, then F = {"port": N} atomically.
"""
import argparse
import struct
import datetime
import hashlib
import ipaddress
import json
import os
import socket
import ssl
import sys
import threading
import time
import urllib.parse

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def name(cn):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_cert(subject_cn, sans, issuer_cn, issuer_key, key, not_before, not_after, ca=False):
    b = (x509.CertificateBuilder().subject_name(name(subject_cn)).issuer_name(name(issuer_cn))
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(not_before).not_valid_after(not_after)
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if sans:
        alt = []
        for s in sans:
            try:
                alt.append(x509.IPAddress(ipaddress.ip_address(s)))
            except ValueError:
                alt.append(x509.DNSName(s))
        b = b.add_extension(x509.SubjectAlternativeName(alt), critical=False)
    return b.sign(issuer_key, hashes.SHA256())


def pem(obj):
    if isinstance(obj, x509.Certificate):
        return obj.public_bytes(serialization.Encoding.PEM)
    return obj.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def setup(d, mode):
    now = datetime.datetime.now(datetime.timezone.utc)
    day = datetime.timedelta(days=1)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = make_cert("fleetpipe security test CA", None, "fleetpipe security test CA", ca_key,
                   ca_key, now - day, now + 30 * day, ca=True)
    key = ec.generate_private_key(ec.SECP256R1())
    if mode in ("valid", "deny", "reset2"):
        leaf = make_cert("localhost", ["localhost", "127.0.0.1"], "fleetpipe security test CA",
                         ca_key, key, now - day, now + 30 * day)
    elif mode == "expired":
        leaf = make_cert("localhost", ["localhost", "127.0.0.1"], "fleetpipe security test CA",
                         ca_key, key, datetime.datetime(2020, 1, 1, tzinfo=datetime.timezone.utc),
                         datetime.datetime(2020, 1, 2, tzinfo=datetime.timezone.utc))
    elif mode == "selfsigned":
        leaf = make_cert("localhost", ["localhost", "127.0.0.1"], "localhost", key, key,
                         now - day, now + 30 * day)
    elif mode == "wronghost":
        leaf = make_cert("other.example", ["other.example"], "fleetpipe security test CA", ca_key,
                         key, now - day, now + 30 * day)
    else:
        sys.exit("unknown mode " + mode)
    with open(os.path.join(d, "ca.pem"), "wb") as f:
        f.write(pem(ca))
    with open(os.path.join(d, "leaf.pem"), "wb") as f:
        f.write(pem(leaf) + pem(key))
    return os.path.join(d, "leaf.pem")


LOCK = threading.Lock()


def handle(conn, d, mode):
    try:
        buf = b""
        while True:
            while b"\r\n\r\n" not in buf:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                buf += chunk
            head, buf = buf.split(b"\r\n\r\n", 1)
            lines = head.decode("latin-1").split("\r\n")
            headers = {}
            for l in lines[1:]:
                k, _, v = l.partition(":")
                headers[k.strip().lower()] = v.strip()
            n = int(headers.get("content-length", "0"))
            while len(buf) < n:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                buf += chunk
            body, buf = buf[:n], buf[n:]
            with LOCK, open(os.path.join(d, "requests.log"), "a") as f:
                f.write(lines[0] + "\n")
            if mode == "deny":
                akid = headers.get("authorization", "").split("Credential=")[-1].split("/")[0]
                doc = ("<Error><Code>SignatureDoesNotMatch</Code><Message>The request signature we "
                       "calculated does not match the signature you provided.</Message>"
                       "<AWSAccessKeyId>%s</AWSAccessKeyId><StringToSign>AWS4-HMAC-SHA256\n%s"
                       "</StringToSign></Error>" % (akid, headers.get("x-amz-date", ""))).encode()
                conn.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Type: application/xml\r\n"
                             b"Content-Length: %d\r\n\r\n" % len(doc) + doc)
                continue
            etag = hashlib.md5(body).hexdigest()
            conn.sendall(("HTTP/1.1 200 OK\r\nETag: \"%s\"\r\nContent-Length: 0\r\n\r\n" % etag).encode())
    except (OSError, ssl.SSLError, ValueError):
        pass
    finally:
        try:
            conn.close()
        except OSError:
            pass


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", required=True)
    ap.add_argument("--mode", required=True)
    ap.add_argument("--port-file", required=True)
    ap.add_argument("--exit-with-parent", action="store_true")
    a = ap.parse_args()
    chain = setup(a.dir, a.mode)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(chain)
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    tmp = a.port_file + ".tmp"
    with open(tmp, "w") as f:
        json.dump({"port": srv.getsockname()[1], "pid": os.getpid()}, f)
    os.rename(tmp, a.port_file)
    if a.exit_with_parent:
        parent = os.getppid()

        def watch():
            while os.getppid() == parent:
                time.sleep(0.2)
            os._exit(0)
        threading.Thread(target=watch, daemon=True).start()
    resets_left = 2 if a.mode == "reset2" else 0
    while True:
        raw, _ = srv.accept()
        if resets_left > 0:
            resets_left -= 1
            raw.recv(4096)  # the ClientHello: the client is mid-handshake
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            raw.close()  # linger 0: RST
            continue

        def serve(raw=raw):
            try:
                conn = ctx.wrap_socket(raw, server_side=True)
            except (OSError, ssl.SSLError):
                raw.close()
                return
            handle(conn, a.dir, a.mode)
        threading.Thread(target=serve, daemon=True).start()


if __name__ == "__main__":
    main()
