"""tests/faultproxy: each mode against real local sockets (echo server, HTTP server, real S3)."""
import http.client
import http.server
import json
import os
import socket
import socketserver
import threading
import time
import urllib.error
import urllib.request

import pytest
import s3env
from botocore.exceptions import BotoCoreError, ClientError
from faultproxy import FaultProxy, control

TIMEOUT = 10


class EchoServer(socketserver.ThreadingTCPServer):
    """Echoes every byte back; records how many bytes each finished connection received."""
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self):
        self.received = []  # one entry per closed connection
        self.cond = threading.Condition()

        class Handler(socketserver.BaseRequestHandler):
            def handle(handler):
                total = 0
                try:
                    while True:
                        data = handler.request.recv(65536)
                        if not data:
                            break
                        total += len(data)
                        handler.request.sendall(data)
                except OSError:
                    pass
                with self.cond:
                    self.received.append(total)
                    self.cond.notify_all()
        super().__init__(("127.0.0.1", 0), Handler)

    def wait_closed(self, count):
        with self.cond:
            assert self.cond.wait_for(lambda: len(self.received) >= count, TIMEOUT), self.received
        return self.received


class HttpUpstream(http.server.ThreadingHTTPServer):
    """GET /bytes/N answers N bytes; PUT/POST answer 200 "ok". Records (method, path, body length)."""
    daemon_threads = True

    def __init__(self):
        self.requests = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                outer.requests.append(("GET", self.path, 0))
                n = int(self.path.rsplit("/", 1)[1]) if self.path.startswith("/bytes/") else 2
                body = bytes(i % 251 for i in range(n))
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_PUT(self):
                n = int(self.headers.get("Content-Length", 0))
                outer.requests.append((self.command, self.path, len(self.rfile.read(n))))
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")
            do_POST = do_PUT
        super().__init__(("127.0.0.1", 0), Handler)


def serve(server):
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def echo():
    server = serve(EchoServer())
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def web():
    server = serve(HttpUpstream())
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def spawn():
    proxies = []

    def start(upstream_port, mode="pass", **kw):
        proxies.append(FaultProxy.spawn(upstream_port, mode, **kw))
        return proxies[-1]
    yield start
    for p in proxies:
        p.stop()
    for p in proxies:  # no connection task may die with an exception (they are only logged)
        assert "Traceback" not in p.stderr and "exception" not in p.stderr, p.stderr


def connect(proxy):
    return socket.create_connection(proxy.address, timeout=TIMEOUT)


def recv_exactly(sock, n):
    buf = b""
    while len(buf) < n:
        data = sock.recv(n - len(buf))
        if not data:
            raise EOFError("EOF after %d of %d bytes" % (len(buf), n))
        buf += data
    return buf


def recv_until_close(sock):
    """All bytes until the peer closes. Returns (data, None) on FIN or (data, exception) on RST."""
    buf = b""
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                return buf, None
            buf += data
    except (ConnectionResetError, BrokenPipeError) as e:
        return buf, e


def echo_roundtrip(proxy, payload):
    with connect(proxy) as s:
        t0 = time.monotonic()
        s.sendall(payload)
        got = recv_exactly(s, len(payload))
        return got, time.monotonic() - t0


def is_reset(proxy, payload=b"hello"):
    """True if the connection gets an RST, False if the echo comes back."""
    try:
        with connect(proxy) as s:
            s.sendall(payload)
            data, err = recv_until_close_or_n(s, len(payload))
            return err is not None
    except (ConnectionResetError, BrokenPipeError):
        return True


def recv_until_close_or_n(sock, n):
    buf = b""
    try:
        while len(buf) < n:
            data = sock.recv(n - len(buf))
            if not data:
                return buf, EOFError("clean EOF")
            buf += data
    except (ConnectionResetError, BrokenPipeError) as e:
        return buf, e
    return buf, None


def http_request(proxy, method, path, body=None, headers=None, **kw):
    conn = http.client.HTTPConnection(*proxy.address, timeout=TIMEOUT)
    try:
        conn.request(method, path, body=body, headers=headers or {}, **kw)
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


# ---------------------------------------------------------------------------------------------


def test_pass_forwards_bytes_exactly_and_counts(echo, spawn):
    proxy = spawn(echo.server_address[1])
    payload = os.urandom(300 * 1024)
    got, _ = echo_roundtrip(proxy, payload)
    assert got == payload
    assert echo.wait_closed(1) == [len(payload)]
    stats = proxy.stats()
    assert stats["mode"] == "pass" and stats["connections"] == 1
    assert stats["bytes_up"] == len(payload) and stats["bytes_down"] == len(payload)
    assert stats["faults_injected"] == 0 and stats["faulted_connections"] == 0


def test_port_file_and_cli_validation(echo, tmp_path):
    import subprocess
    import sys
    script = os.path.join(os.path.dirname(os.path.dirname(__file__)), "faultproxy", "faultproxy.py")
    bad = subprocess.run([sys.executable, script, "--upstream", "127.0.0.1:1", "--mode", "bogus:1"],
                         capture_output=True, timeout=TIMEOUT)
    assert bad.returncode == 2 and b"unknown mode" in bad.stderr
    with FaultProxy.spawn(echo.server_address[1]) as proxy:
        assert set(proxy.info) >= {"listen_port", "control_port", "pid"}
        assert proxy.info["listen_port"] > 0 and proxy.info["control_port"] != proxy.info["listen_port"]
        assert proxy.proc.pid == proxy.info["pid"]
    assert proxy.proc.returncode == 0  # SIGTERM is a clean stop


def test_reset_after_n_bytes_sends_rst_and_forwards_exactly_n(echo, spawn):
    proxy = spawn(echo.server_address[1], "reset_after:1000")
    with connect(proxy) as s:
        s.sendall(os.urandom(5000))
        data, err = recv_until_close(s)
    assert isinstance(err, ConnectionResetError), (len(data), err)
    assert len(data) <= 1000
    assert echo.wait_closed(1) == [1000]
    stats = proxy.stats()
    assert stats["faults_injected"] == 1 and stats["bytes_up"] == 1000


def test_stall_holds_both_directions_then_passes(echo, spawn):
    proxy = spawn(echo.server_address[1], "stall:1.0")
    with connect(proxy) as s:
        t0 = time.monotonic()
        s.sendall(b"ping")
        assert recv_exactly(s, 4) == b"ping"
        assert time.monotonic() - t0 >= 0.9
        t1 = time.monotonic()
        s.sendall(b"pong")
        assert recv_exactly(s, 4) == b"pong"
        assert time.monotonic() - t1 < 0.5
    proxy.set_mode("stall:1.0@8")  # first 8 bytes pass, then the stall starts
    with connect(proxy) as s:
        t0 = time.monotonic()
        s.sendall(b"abcd")
        assert recv_exactly(s, 4) == b"abcd"
        assert time.monotonic() - t0 < 0.5
        t1 = time.monotonic()
        s.sendall(b"efghijkl")
        assert recv_exactly(s, 8) == b"efghijkl"
        assert time.monotonic() - t1 >= 0.9
    assert proxy.stats()["faults_injected"] == 2


def test_latency_delays_each_direction_but_keeps_throughput(echo, spawn):
    proxy = spawn(echo.server_address[1], "latency:200")
    got, elapsed = echo_roundtrip(proxy, b"x")
    assert got == b"x" and 0.38 <= elapsed < 2.0, elapsed
    payload = os.urandom(1024 * 1024)
    got, elapsed = echo_roundtrip(proxy, payload)
    assert got == payload and elapsed < 5.0, elapsed  # not 200 ms per chunk serialised
    proxy.set_mode("pass")
    _, fast = echo_roundtrip(proxy, b"x")
    assert fast < 0.2


def test_drip_limits_rate(echo, spawn):
    proxy = spawn(echo.server_address[1], "drip:4096")
    payload = os.urandom(4096)
    got, elapsed = echo_roundtrip(proxy, payload)
    assert got == payload
    assert 0.85 <= elapsed < 5.0, elapsed
    assert proxy.stats()["faults_injected"] == 1


def test_truncate_response_closes_cleanly_after_n_bytes(web, spawn):
    proxy = spawn(web.server_address[1], "truncate_response:500")
    with connect(proxy) as s:
        s.sendall(b"GET /bytes/10000 HTTP/1.1\r\nHost: x\r\n\r\n")
        data, err = recv_until_close(s)
    assert err is None, err  # FIN, not RST
    assert len(data) == 500 and data.startswith(b"HTTP/1.1 200")
    with pytest.raises(http.client.IncompleteRead):
        http_request(proxy, "GET", "/bytes/10000")
    assert proxy.stats()["faults_injected"] == 2


def test_truncate_response_while_the_client_keeps_its_side_open(web, spawn):
    # The client keeps its connection open (as a kept-alive HTTP client does) while the proxy
    # cuts the response: the proxy drains the client before its FIN without a second reader on
    # the client's stream (that raised RuntimeError 'read() called while another coroutine is
    # already waiting for incoming data' in the connection's task, about every other time).
    proxy = spawn(web.server_address[1], "truncate_response:300")
    for _ in range(20):
        with connect(proxy) as s:
            s.sendall(b"GET /bytes/5000 HTTP/1.1\r\nHost: x\r\n\r\n")
            data, err = recv_until_close(s)
        assert err is None and len(data) == 300, (len(data), err)
    assert proxy.stats()["faults_injected"] == 20
    proxy.stop()
    assert "Traceback" not in proxy.stderr, proxy.stderr


@pytest.mark.parametrize("mode,status,code", [("http_500", 500, "InternalError"),
                                              ("http_503_slowdown", 503, "SlowDown")])
def test_canned_http_errors(web, spawn, mode, status, code):
    proxy = spawn(web.server_address[1], mode)
    got_status, headers, body = http_request(proxy, "PUT", "/bucket/key", body=os.urandom(200 * 1024))
    assert got_status == status
    assert int(headers["Content-Length"]) == len(body)
    assert headers["Connection"] == "close" and headers["Content-Type"] == "application/xml"
    assert b"<Error><Code>%s</Code>" % code.encode() in body
    # chunked request bodies and bodiless GETs are read and answered too
    chunks = iter([b"a" * 1000, b"b" * 10])
    assert http_request(proxy, "POST", "/x", body=chunks, encode_chunked=True)[0] == status
    assert http_request(proxy, "GET", "/bytes/3")[0] == status
    assert web.requests == []  # upstream never saw a request
    stats = proxy.stats()
    assert stats["http_errors_sent"] == 3 and stats["faults_injected"] == 3 and stats["bytes_up"] == 0


def test_close_before_response(web, spawn):
    proxy = spawn(web.server_address[1], "close_before_response")
    with pytest.raises((http.client.RemoteDisconnected, ConnectionResetError)):
        http_request(proxy, "PUT", "/k", body=os.urandom(50 * 1024))
    assert web.requests == []
    proxy.set_mode("pass")
    assert http_request(proxy, "PUT", "/k", body=b"abc")[0] == 200
    assert web.requests == [("PUT", "/k", 3)]
    assert proxy.stats()["faults_injected"] == 1


def test_refuse_stops_listening_then_listens_again(echo, spawn):
    proxy = spawn(echo.server_address[1], "refuse")
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(proxy.address, timeout=TIMEOUT)
    assert proxy.stats()["listening"] is False
    proxy.set_mode("pass")
    assert echo_roundtrip(proxy, b"back")[0] == b"back"
    proxy.set_mode("refuse", first=1)  # limited: accept, then RST at once
    assert is_reset(proxy) is True
    assert is_reset(proxy) is False
    assert proxy.stats()["faults_injected"] == 1


def test_first_k_connections_only(echo, spawn):
    proxy = spawn(echo.server_address[1], "reset_after:0", first=2)
    assert [is_reset(proxy) for _ in range(4)] == [True, True, False, False]
    stats = proxy.stats()
    assert stats["faulted_connections"] == 2 and stats["faults_injected"] == 2 and stats["connections"] == 4
    proxy.set_mode("reset_after:0", first=1)  # MODE restarts the count
    assert [is_reset(proxy) for _ in range(2)] == [True, False]


def test_fraction_of_connections(echo, spawn):
    proxy = spawn(echo.server_address[1], "reset_after:0", fraction=0.5, seed=7)
    results = [is_reset(proxy) for _ in range(30)]
    assert 5 <= sum(results) <= 25, results
    stats = proxy.stats()
    assert stats["faults_injected"] == sum(results) == stats["faulted_connections"]
    proxy.set_mode("reset_after:0", fraction=0)
    assert not any(is_reset(proxy) for _ in range(3))


def test_control_channel_line_and_http(echo, spawn):
    proxy = spawn(echo.server_address[1])
    base = "http://127.0.0.1:%d" % proxy.control_port
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # no *_proxy from env
    answer = json.load(opener.open(base + "/mode/latency:10?first=3", timeout=TIMEOUT))
    assert answer["ok"] and answer["mode"] == "latency:10" and answer["first"] == 3
    assert json.load(opener.open(base + "/stats", timeout=TIMEOUT))["mode"] == "latency:10"
    with pytest.raises(urllib.error.HTTPError) as e:
        opener.open(base + "/mode/nonsense", timeout=TIMEOUT)
    assert e.value.code == 400 and "unknown mode" in json.load(e.value)["error"]
    assert control(proxy.control_port, "PING") == {"ok": True}
    assert control(proxy.control_port, "FROB")["ok"] is False
    assert control(proxy.control_port, "MODE drip:0")["ok"] is False
    assert control(proxy.control_port, "MODE pass bogus=1")["ok"] is False
    echo_roundtrip(proxy, b"abc")
    assert proxy.stats()["connections"] == 1
    zeroed = proxy.reset()
    assert zeroed["connections"] == 0 and zeroed["bytes_up"] == 0
    # several commands on one line-protocol connection
    with socket.create_connection(("127.0.0.1", proxy.control_port), timeout=TIMEOUT) as s:
        s.sendall(b"MODE pass\nSTATS\n")
        f = s.makefile("rb")
        assert json.loads(f.readline())["mode"] == "pass"
        assert json.loads(f.readline())["ok"] is True


def _port(endpoint):
    return int(endpoint.rsplit(":", 1)[1])


def test_tls_passes_through_untouched_to_real_s3(s3, spawn):
    proxy = spawn(_port(s3["S3_ENDPOINT_HTTPS"]), "latency:20")
    env = dict(s3, S3_ENDPOINT_HTTPS="https://127.0.0.1:%d" % proxy.port)
    client = s3env.boto3_client(env, retries={"max_attempts": 0})  # verifies the S3 server's own cert
    bucket = s3env.ensure_bucket(client, "fp-proxy-tls")
    body = os.urandom(256 * 1024)
    client.put_object(Bucket=bucket, Key="k", Body=body)
    assert client.get_object(Bucket=bucket, Key="k")["Body"].read() == body
    assert proxy.stats()["bytes_up"] > len(body)
    proxy.set_mode("reset_after:2000")  # mid-request RST inside the TLS stream
    fresh = s3env.boto3_client(env, retries={"max_attempts": 0})
    with pytest.raises(BotoCoreError):
        fresh.put_object(Bucket=bucket, Key="k2", Body=body)
    assert proxy.stats()["faults_injected"] >= 1


def test_slowdown_then_retry_succeeds_against_real_s3(s3, spawn):
    proxy = spawn(_port(s3["S3_ENDPOINT_HTTP"]), "http_503_slowdown")
    env = dict(s3, S3_ENDPOINT_HTTP="http://127.0.0.1:%d" % proxy.port)
    strict = s3env.boto3_client(env, https=False, retries={"max_attempts": 0})
    with pytest.raises(ClientError) as e:
        strict.list_buckets()
    assert e.value.response["Error"]["Code"] == "SlowDown"
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
    proxy.set_mode("http_503_slowdown", first=1)
    retrying = s3env.boto3_client(env, https=False, retries={"max_attempts": 3, "mode": "standard"})
    bucket = s3env.ensure_bucket(retrying, "fp-proxy-slowdown")
    retrying.put_object(Bucket=bucket, Key="k", Body=b"after retry")
    assert retrying.get_object(Bucket=bucket, Key="k")["Body"].read() == b"after retry"
    stats = proxy.stats()
    assert stats["http_errors_sent"] == 2 and stats["connections"] >= 3
