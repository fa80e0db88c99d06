#!/usr/bin/python3
"""faultproxy: a small asyncio TCP proxy that injects network faults, for tests.

It forwards bytes between a client and one upstream (host:port). It never terminates TLS: HTTPS
passes through untouched, so the client still verifies the real server's certificate.

Usage
-----
    python3 tests/faultproxy/faultproxy.py --listen 127.0.0.1:0 --upstream 127.0.0.1:PORT \
        --mode pass [--first K] [--fraction P] [--seed S] [--control 127.0.0.1:0] --port-file F \
        [--exit-with-parent]

Once both sockets listen, F is written atomically (poll for it) with one JSON object:
    {"listen_host": "127.0.0.1", "listen_port": 41234, "control_port": 41235, "pid": 123}
SIGTERM or SIGINT stops the proxy (exit 0); with --exit-with-parent it also stops when the process that started it dies, so
a crashed test leaves nothing behind.

Modes (a "spec"; the unit of fault selection is one accepted client connection)
------------------------------------------------------------------------------
    pass                   forward both ways.
    reset_after:N          forward exactly N client->upstream bytes, then RST the client
                           (SO_LINGER 0) and abort the upstream connection.
    stall:T[@N]            after N client->upstream bytes (default 0) forward nothing, either way,
                           for T seconds (float; "inf" = until a side closes), then pass.
    latency:MS             deliver every chunk MS milliseconds late, each direction (throughput
                           is kept; only delay is added).
    drip:BPS               at most BPS bytes/second each direction (small reads, so the sender
                           sees back-pressure).
    truncate_response:N    forward only N upstream->client bytes, then close the client
                           cleanly (FIN) and abort upstream. truncate_response:0 = the request
                           reached the server but the response is lost.
    http_500               plain HTTP only: do not connect upstream; read each request (headers,
    http_503_slowdown      Content-Length or chunked body; not the body if "Expect:
                           100-continue") and answer a canned S3 XML error (500 InternalError /
                           503 SlowDown) with Content-Length and "Connection: close", then close.
    close_before_response  do not connect upstream; read the request and close (FIN). For HTTP
                           the request is parsed; otherwise (e.g. TLS) it reads until the client
                           is idle for 0.3 s.
    refuse                 unconditional: stop listening (connect gets ECONNREFUSED; the port is
                           re-bound when the mode changes). With first/fraction: accept the
                           selected connections and RST them at once.

Selection: ``first=K`` applies the fault only to the first K connections accepted after the mode
was set; ``fraction=P`` applies it to each connection with probability P (seeded RNG,
``--seed``, default 1). Both may be combined; connections not selected are passed through.

Control channel (TCP on loopback, --control, port in the port file)
-------------------------------------------------------------------
Line protocol: send one command per line, get one JSON object per line back:
    MODE <spec> [first=K] [fraction=P]   set the mode; resets the first-K count
    STATS                                counters (below)
    RESET                                zero the counters
    PING                                 {"ok": true}
The same commands as HTTP GET (one per connection; curl-friendly):
    GET /stats   GET /reset   GET /ping   GET /mode/<spec>?first=K&fraction=P
Every answer has "ok" (bool), and "error" when ok is false.

Counters (STATS): connections (accepted), active, since_mode (accepted since the last MODE),
faulted_connections (selected for the fault), faults_injected (fault actually applied, e.g. the
RST was sent; for refuse-by-not-listening this is not counted), bytes_up (client->upstream
bytes forwarded), bytes_down (upstream->client), http_errors_sent, upstream_connect_errors,
plus "mode", "first", "fraction" and "listening".

Python helper: ``FaultProxy.spawn(upstream_port, mode="pass")`` runs the CLI as a subprocess and
offers ``set_mode()``, ``stats()``, ``reset()``, ``stop()`` (also a context manager).
"""
import argparse
import asyncio
import json
import os
import random
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.parse

CHUNK = 65536
STOPPED = object()  # queue sentinel: a pipe's reader was stopped (see Connection.stop_reader)
MODES = ("pass", "reset_after", "stall", "latency", "drip", "truncate_response", "http_500",
         "http_503_slowdown", "close_before_response", "refuse")
HTTP_ERRORS = {
    "http_500": (500, "Internal Server Error", "InternalError",
                 "We encountered an internal error. Please try again."),
    "http_503_slowdown": (503, "Slow Down", "SlowDown", "Please reduce your request rate."),
}


def parse_spec(spec):
    """Parse a mode spec into a dict; raises ValueError on anything malformed."""
    name, _, arg = spec.strip().partition(":")
    if name not in MODES:
        raise ValueError("unknown mode %r (modes: %s)" % (name, ", ".join(MODES)))
    m = {"name": name, "spec": spec.strip()}
    needs_arg = name in ("reset_after", "stall", "latency", "drip", "truncate_response")
    if needs_arg and not arg:
        raise ValueError("mode %s needs an argument, e.g. %s:100" % (name, name))
    if not needs_arg and arg:
        raise ValueError("mode %s takes no argument" % name)
    if name in ("reset_after", "truncate_response"):
        m["n"] = int(arg)
    elif name == "stall":
        t, _, n = arg.partition("@")
        m["t"] = float(t)
        m["n"] = int(n) if n else 0
    elif name == "latency":
        m["delay"] = float(arg) / 1000.0
    elif name == "drip":
        m["bps"] = int(arg)
        if m["bps"] <= 0:
            raise ValueError("drip needs BPS > 0")
    for key in ("n", "t", "delay"):
        if key in m and m[key] < 0:
            raise ValueError("negative argument in %r" % spec)
    return m


def rst(writer):
    """Abort a connection with a TCP RST (SO_LINGER 0) instead of a FIN."""
    sock = writer.get_extra_info("socket")
    try:
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    writer.transport.abort()


async def read_http_request(reader):
    """Read one HTTP/1.x request (headers + body). Returns False on EOF before a request."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return False
    headers = {}
    for line in head.split(b"\r\n")[1:]:
        k, sep, v = line.partition(b":")
        if sep:
            headers[k.strip().lower()] = v.strip().lower()
    if headers.get(b"expect") == b"100-continue":
        return True  # answering with a final status means the client must not send the body
    if b"chunked" in headers.get(b"transfer-encoding", b""):
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0].strip(), 16)
            if size == 0:
                while (await reader.readuntil(b"\r\n")) != b"\r\n":  # trailers
                    pass
                return True
            await discard(reader, size + 2)
    await discard(reader, int(headers.get(b"content-length", b"0")))
    return True


async def stop_task(task):
    """Cancels `task` and waits until it has finished (a plain cancel() only requests it: the
    task may still be waiting on a StreamReader when the caller goes on)."""
    if not task.done():
        task.cancel()
        await asyncio.wait([task])


async def discard(reader, n):
    """Read and drop exactly n bytes, a chunk at a time (bodies may be large)."""
    while n > 0:
        n -= len(await reader.readexactly(min(n, CHUNK)))


async def close_gracefully(writer, reader=None, linger=1.0):
    """FIN the connection; drain what the peer still sends (so close() does not RST), close."""
    try:
        await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
        if reader is not None:
            deadline = time.monotonic() + linger
            while time.monotonic() < deadline:
                data = await asyncio.wait_for(reader.read(CHUNK), deadline - time.monotonic())
                if not data:
                    break
    except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError):
        pass
    writer.close()


class Connection:
    """One client connection and, for forwarding modes, its upstream connection."""

    def __init__(self, proxy, mode, creader, cwriter):
        self.proxy, self.mode, self.stats = proxy, mode, proxy.stats
        self.creader, self.cwriter = creader, cwriter
        self.uwriter = None
        self.sent = {"up": 0, "down": 0}
        self.stall_until = 0.0
        self.stall_done = mode["name"] != "stall"
        self.closing = False
        # The task reading each StreamReader ("up" reads the client, "down" the upstream). A
        # StreamReader allows one waiting reader: whoever else wants to read one (draining the
        # client before a clean close) must stop this task first (stop_reader).
        self.readers = {}

    def injected(self):
        self.stats["faults_injected"] += 1

    async def run(self):
        name = self.mode["name"]
        try:
            if name == "refuse":
                self.injected()
                rst(self.cwriter)
            elif name in HTTP_ERRORS:
                await self.answer_http_errors(*HTTP_ERRORS[name])
            elif name == "close_before_response":
                await self.close_before_response()
            else:
                await self.forward()
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            self.abort()
        finally:
            if not self.cwriter.is_closing():
                self.cwriter.close()

    async def answer_http_errors(self, status, reason, code, message):
        if not await read_http_request(self.creader):
            return
        rid = "%016X" % random.getrandbits(64)
        body = ('<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>%s</Code><Message>%s</Message>'
                '<RequestId>%s</RequestId></Error>' % (code, message, rid)).encode()
        head = ("HTTP/1.1 %d %s\r\nContent-Type: application/xml\r\nContent-Length: %d\r\n"
                "x-amz-request-id: %s\r\nConnection: close\r\n\r\n" % (status, reason, len(body), rid))
        self.cwriter.write(head.encode() + body)
        self.stats["http_errors_sent"] += 1
        self.injected()
        await close_gracefully(self.cwriter, self.creader)

    async def close_before_response(self):
        first = await self.creader.read(CHUNK)
        if first[:1].isalpha():  # an HTTP method: parse the whole request
            reader = asyncio.StreamReader(limit=2 ** 20)
            reader.feed_data(first)
            pump = asyncio.ensure_future(self._feed(reader))
            try:
                await read_http_request(reader)
            finally:
                await stop_task(pump)  # it reads self.creader: gone before anyone else reads it
        else:
            while first:
                try:
                    first = await asyncio.wait_for(self.creader.read(CHUNK), 0.3)
                except asyncio.TimeoutError:
                    break
        self.injected()
        await close_gracefully(self.cwriter, None)

    async def _feed(self, reader):
        while True:
            data = await self.creader.read(CHUNK)
            if not data:
                reader.feed_eof()
                return
            reader.feed_data(data)

    async def forward(self):
        try:
            ureader, self.uwriter = await asyncio.open_connection(*self.proxy.upstream)
        except OSError:
            self.stats["upstream_connect_errors"] += 1
            rst(self.cwriter)
            return
        if self.mode["name"] in ("latency", "drip"):
            self.injected()
        if self.mode["name"] == "drip":  # small buffers so the sender feels the slow link
            for w in (self.cwriter, self.uwriter):
                try:
                    w.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
                except OSError:
                    pass
        tasks = [asyncio.ensure_future(self.pipe("up", self.creader, self.uwriter)),
                 asyncio.ensure_future(self.pipe("down", ureader, self.cwriter))]
        try:
            await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()
            if not self.uwriter.is_closing():
                self.uwriter.close()

    def abort(self):
        self.closing = True
        for w in (self.cwriter, self.uwriter):
            if w is not None and not w.is_closing():
                w.transport.abort()

    async def pipe(self, direction, reader, writer):
        """Read chunks into a bounded queue; a writer loop applies delay, stall, limits, rate."""
        m = self.mode
        size = max(1, min(CHUNK, m["bps"] // 8)) if m["name"] == "drip" else CHUNK
        delay = m.get("delay", 0.0)
        queue = asyncio.Queue(maxsize=8)

        async def read_loop():
            try:
                while True:
                    data = await reader.read(size)
                    if not data and self.stall_until > time.monotonic():
                        self.abort()  # a peer gave up during the stall: end the connection
                    await queue.put((time.monotonic() + delay, data))
                    if not data:
                        return
            except OSError:
                await queue.put((0.0, None))
            except asyncio.CancelledError:
                # stop_reader(): wake the writer loop below (it ends since closing is set; a
                # full queue means it is not waiting anyway).
                try:
                    queue.put_nowait((0.0, STOPPED))
                except asyncio.QueueFull:
                    pass
                raise

        rtask = asyncio.ensure_future(read_loop())
        self.readers[direction] = rtask
        try:
            while not self.closing:
                due, data = await queue.get()
                if data is STOPPED or self.closing:
                    return
                if data is None:  # read error: the peer reset
                    self.abort()
                    return
                if not data:  # EOF: half-close the other side
                    if writer.can_write_eof() and not writer.is_closing():
                        writer.write_eof()
                    return
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                if not await self.send(direction, writer, data):
                    return
        except OSError:
            self.abort()
        finally:
            rtask.cancel()

    async def stop_reader(self, direction):
        """Stops the task reading `direction` and waits until it is gone, so its StreamReader has
        no waiting reader and the caller may read it (two readers raise RuntimeError)."""
        task = self.readers.get(direction)
        if task is not None:
            await stop_task(task)

    async def send(self, direction, writer, data):
        """Forward one chunk under the mode's rules. Returns False once the connection ends."""
        m, name = self.mode, self.mode["name"]
        limit = None
        if direction == "up" and (name == "reset_after" or (name == "stall" and not self.stall_done)):
            limit = m["n"] - self.sent["up"]
        elif direction == "down" and name == "truncate_response":
            limit = m["n"] - self.sent["down"]
        if limit is None or len(data) < limit:
            await self.write(direction, writer, data)
            return True
        await self.write(direction, writer, data[:limit])
        self.injected()
        if name == "reset_after":
            self.closing = True
            rst(self.cwriter)
            self.uwriter.transport.abort()
            return False
        if name == "truncate_response":
            self.closing = True
            self.uwriter.transport.abort()
            # The "up" pipe's reader is waiting on the client's StreamReader; draining it here
            # too used to raise RuntimeError('read() called while another coroutine is already
            # waiting for incoming data') whenever the client had not closed first.
            await self.stop_reader("up")
            await close_gracefully(self.cwriter, self.creader, linger=0.2)
            return False
        # stall: starts now; write() holds both directions until stall_until
        self.stall_done = True
        self.stall_until = time.monotonic() + m["t"]
        await self.write(direction, writer, data[limit:])
        return True

    async def write(self, direction, writer, data):
        while self.stall_until > time.monotonic() and not self.closing:
            await asyncio.sleep(min(0.05, self.stall_until - time.monotonic()))
        if not data or self.closing:
            return
        if self.mode["name"] == "drip":
            bps, step = self.mode["bps"], max(1, min(CHUNK, self.mode["bps"] // 8))
            for i in range(0, len(data), step):
                piece = data[i:i + step]
                writer.write(piece)
                await writer.drain()
                self.sent[direction] += len(piece)
                self.stats["bytes_" + direction] += len(piece)
                await asyncio.sleep(len(piece) / bps)
            return
        writer.write(data)
        await writer.drain()
        self.sent[direction] += len(data)
        self.stats["bytes_" + direction] += len(data)


class Proxy:
    def __init__(self, listen, upstream, control, seed=1):
        self.listen_host, self.listen_port = listen
        self.upstream = upstream
        self.control_addr = control
        self.rng = random.Random(seed)
        self.server = None
        self.control_server = None
        self.conns = set()
        self.mode, self.first, self.fraction = parse_spec("pass"), None, 1.0
        self.stats = {}
        self.reset_stats()

    def reset_stats(self):
        since = self.stats.get("since_mode", 0)
        self.stats = dict.fromkeys(("connections", "faulted_connections", "faults_injected", "bytes_up",
                                    "bytes_down", "http_errors_sent", "upstream_connect_errors"), 0)
        self.stats["since_mode"] = since

    def snapshot(self):
        s = dict(self.stats, ok=True, active=len(self.conns), mode=self.mode["spec"], first=self.first,
                 fraction=self.fraction, listening=self.server is not None)
        return s

    async def start(self, mode, first=None, fraction=1.0):
        self.server = await asyncio.start_server(self.on_client, self.listen_host, self.listen_port,
                                                 reuse_address=True)
        self.listen_port = self.server.sockets[0].getsockname()[1]
        self.control_server = await asyncio.start_server(self.on_control, *self.control_addr)
        await self.set_mode(mode, first, fraction)

    async def set_mode(self, spec, first=None, fraction=1.0):
        mode = parse_spec(spec)
        if first is not None and int(first) < 0 or not 0.0 <= float(fraction) <= 1.0:
            raise ValueError("first must be >= 0 and fraction in [0, 1]")
        self.mode, self.first, self.fraction = mode, (None if first is None else int(first)), float(fraction)
        self.stats["since_mode"] = 0
        stop_listening = mode["name"] == "refuse" and self.first is None and self.fraction >= 1.0
        if stop_listening and self.server is not None:
            self.server.close()
            await self.server.wait_closed()
            self.server = None
        elif not stop_listening and self.server is None:
            self.server = await asyncio.start_server(self.on_client, self.listen_host, self.listen_port,
                                                     reuse_address=True)

    def choose(self):
        idx = self.stats["since_mode"]
        self.stats["since_mode"] += 1
        if self.mode["name"] == "pass":
            return self.mode
        selected = (self.first is None or idx < self.first) and (
            self.fraction >= 1.0 or self.rng.random() < self.fraction)
        if not selected:
            return parse_spec("pass")
        self.stats["faulted_connections"] += 1
        return self.mode

    async def on_client(self, reader, writer):
        self.stats["connections"] += 1
        conn = Connection(self, self.choose(), reader, writer)
        self.conns.add(conn)
        try:
            await conn.run()
        finally:
            self.conns.discard(conn)

    async def run_command(self, line):
        """Run one control command; returns the answer dict (never raises on bad input)."""
        words = line.split()
        if not words:
            return {"ok": False, "error": "empty command"}
        cmd, args = words[0].upper(), words[1:]
        try:
            if cmd == "PING":
                return {"ok": True}
            if cmd == "STATS":
                return self.snapshot()
            if cmd == "RESET":
                self.reset_stats()
                return self.snapshot()
            if cmd == "MODE" and args:
                opts = dict(a.split("=", 1) for a in args[1:])
                unknown = set(opts) - {"first", "fraction"}
                if unknown:
                    raise ValueError("unknown option(s) %s" % ", ".join(sorted(unknown)))
                await self.set_mode(args[0], opts.get("first"), opts.get("fraction", 1.0))
                return self.snapshot()
            return {"ok": False, "error": "unknown command %r (MODE spec [first=K] [fraction=P] | STATS | "
                                          "RESET | PING)" % line.strip()}
        except ValueError as e:
            return {"ok": False, "error": str(e)}

    async def on_control(self, reader, writer):
        try:
            while True:
                line = await reader.readline()
                if not line:
                    break
                text = line.decode("utf-8", "replace").strip()
                if text.upper().startswith(("GET ", "POST ")):
                    while (await reader.readline()).strip():  # skip the request headers
                        pass
                    url = urllib.parse.urlsplit(text.split()[1])
                    parts = [urllib.parse.unquote(p) for p in url.path.split("/") if p]
                    q = urllib.parse.parse_qs(url.query)
                    cmd = " ".join(parts + ["%s=%s" % (k, v[-1]) for k, v in q.items()])
                    answer = await self.run_command(cmd)
                    body = (json.dumps(answer) + "\n").encode()
                    writer.write(b"HTTP/1.0 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                                 b"Connection: close\r\n\r\n" % (200 if answer["ok"] else 400,
                                                                 b"OK" if answer["ok"] else b"Bad Request",
                                                                 len(body)) + body)
                    await writer.drain()
                    break
                writer.write((json.dumps(await self.run_command(text)) + "\n").encode())
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    async def close(self):
        for s in (self.server, self.control_server):
            if s is not None:
                s.close()
        for c in list(self.conns):
            c.abort()


def host_port(text):
    host, _, port = text.rpartition(":")
    if not host:
        raise argparse.ArgumentTypeError("expected HOST:PORT, got %r" % text)
    return host.strip("[]"), int(port)


async def amain(args):
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):  # before the port file: a quick stop is still clean
        loop.add_signal_handler(sig, stop.set)
    if args.exit_with_parent:
        asyncio.ensure_future(watch_parent(os.getppid(), stop))
    proxy = Proxy(args.listen, args.upstream, args.control, args.seed)
    await proxy.start(args.mode, args.first, args.fraction)
    info = {"listen_host": args.listen[0], "listen_port": proxy.listen_port,
            "control_port": proxy.control_server.sockets[0].getsockname()[1], "pid": os.getpid()}
    if args.port_file:
        tmp = args.port_file + ".tmp"
        with open(tmp, "w") as f:
            json.dump(info, f)
        os.replace(tmp, args.port_file)  # readers never see a partial file
    print(json.dumps(info), flush=True)
    await stop.wait()
    await proxy.close()


async def watch_parent(ppid, stop):
    while os.getppid() == ppid:
        await asyncio.sleep(0.5)
    stop.set()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--listen", type=host_port, default=("127.0.0.1", 0), help="HOST:PORT (port 0 = free)")
    p.add_argument("--upstream", type=host_port, required=True, help="HOST:PORT to forward to")
    p.add_argument("--control", type=host_port, default=("127.0.0.1", 0), help="control HOST:PORT")
    p.add_argument("--mode", default="pass", help="initial mode spec (see module doc)")
    p.add_argument("--first", type=int, default=None, help="fault only the first K connections")
    p.add_argument("--fraction", type=float, default=1.0, help="fault each connection with probability P")
    p.add_argument("--seed", type=int, default=1, help="seed for --fraction")
    p.add_argument("--port-file", help="write {listen_port, control_port, ...} here as JSON")
    p.add_argument("--exit-with-parent", action="store_true", help="stop when the parent process dies")
    args = p.parse_args(argv)
    try:
        parse_spec(args.mode)
    except ValueError as e:
        p.error(str(e))
    asyncio.run(amain(args))
    return 0


def control(port, line, host="127.0.0.1", timeout=10.0):
    """Send one control command (line protocol) and return the decoded JSON answer."""
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(line.encode() + b"\n")
        buf = b""
        while not buf.endswith(b"\n"):
            data = s.recv(65536)
            if not data:
                raise ConnectionError("control channel closed")
            buf += data
    return json.loads(buf)


class FaultProxy:
    """A faultproxy subprocess (the real CLI), for tests. Use as a context manager or call stop()."""

    def __init__(self, proc, info, tmpdir):
        self.proc, self.info, self._tmpdir = proc, info, tmpdir
        self.stderr = ""
        self.host, self.port, self.control_port = info["listen_host"], info["listen_port"], info["control_port"]

    @classmethod
    def spawn(cls, upstream_port, mode="pass", upstream_host="127.0.0.1", first=None, fraction=None,
              seed=None, timeout=15.0):
        tmpdir = tempfile.mkdtemp(prefix="faultproxy.")
        port_file = os.path.join(tmpdir, "ports.json")
        cmd = [sys.executable, os.path.abspath(__file__), "--listen", "127.0.0.1:0", "--exit-with-parent",
               "--upstream", "%s:%d" % (upstream_host, upstream_port), "--mode", mode, "--port-file", port_file]
        for flag, value in (("--first", first), ("--fraction", fraction), ("--seed", seed)):
            if value is not None:
                cmd += [flag, str(value)]
        with open(os.path.join(tmpdir, "stderr.log"), "wb") as err:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
        deadline = time.monotonic() + timeout
        while not os.path.exists(port_file):
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                with open(os.path.join(tmpdir, "stderr.log")) as f:
                    raise RuntimeError("faultproxy did not start: " + f.read())
            time.sleep(0.02)
        with open(port_file) as f:
            return cls(proc, json.load(f), tmpdir)

    @property
    def address(self):
        return (self.host, self.port)

    def command(self, line):
        answer = control(self.control_port, line)
        if not answer.get("ok"):
            raise ValueError(answer.get("error", "control command failed"))
        return answer

    def set_mode(self, spec, first=None, fraction=None):
        line = "MODE " + spec
        if first is not None:
            line += " first=%d" % first
        if fraction is not None:
            line += " fraction=%s" % fraction
        return self.command(line)

    def stats(self):
        return self.command("STATS")

    def reset(self):
        return self.command("RESET")

    def stop(self):
        """Stops the proxy; afterwards ``self.stderr`` holds what it wrote to stderr (a clean
        run writes nothing: an exception in a connection's task shows up there)."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        try:
            with open(os.path.join(self._tmpdir, "stderr.log"), errors="replace") as f:
                self.stderr = f.read()
        except OSError:
            pass  # already stopped and cleaned up
        for name in ("ports.json", "stderr.log"):
            try:
                os.unlink(os.path.join(self._tmpdir, name))
            except OSError:
                pass
        try:
            os.rmdir(self._tmpdir)
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


if __name__ == "__main__":
    sys.exit(main())
