#!/usr/bin/env python3
"""bench feed — the training feed (fleetpipe.Dataset, Section.array()); writes bench-results/feed.json.

Figures (each against a baseline measured in the same run):
- dataset_events_per_s: events a Dataset yields per second from the local S3 server with
  parallel ranged GETs (8 in flight), against the same Dataset with sequential GETs (1).
- decode_numpy_speedup: the numeric rows of the same events decoded to numbers both ways —
  pure Python (Section.rows: struct.iter_unpack into tuples) against Section.array()
  (numpy.frombuffer) — time ratio; the whole decode (header, JSON index, blobs) is reported in
  the baseline text.

Run by `scripts/bench feed` (FLEETPIPE_S3_STATE names a running server, FLEETPIPE_PYTHONPATH
the built package, FLEETPIPE_BENCH_OUT the output directory).
"""
import json
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.environ.get("FLEETPIPE_PYTHONPATH", os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "build", "python")))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "tests", "s3server"))

import fleetpipe  # noqa: E402
import s3env  # noqa: E402

ROUNDS = 3
DEVICES = 4
EVENTS_PER_DEVICE = 60

STREAMS = [{"name": "imu", "channels": ["ax", "ay", "az", "gx", "gy", "gz"], "ring_seconds": 12},
           {"name": "camera", "kind": "blob", "content_type": "image/jpeg", "ring_seconds": 12}]
TRIGGERS = [{"name": "mark", "type": "manual", "stream": "imu", "priority": 5,
             "capture": {"streams": ["imu", "camera"], "pre": 4, "post": 4}}]


def events(device, n, spacing=10.0):
    """n events of one device (8 s of 100 Hz imu, 6 channels; 2 small JPEG stand-ins per s)."""
    cap = fleetpipe.Capture({"device_id": device, "streams": STREAMS, "triggers": TRIGGERS}, sink=None)
    t, out = 0.0, []
    for i in range(n):
        fire = (i + 1) * spacing
        while t < fire + 4.5:
            cap.push("imu", t, [t, -t, 9.81, 0.1, 0.2, 0.3])
            if int(round(t * 100)) % 50 == 0:
                cap.push_blob("camera", t, b"\xff\xd8" + bytes(2000))
            if abs(t - fire) < 0.005:
                cap.fire("mark", t)
            t = round(t + 0.01, 2)
        cap.tick(t)
        out += cap.take_events()
    cap.flush()
    out += cap.take_events()
    cap.close()
    return out


def upload(env, bucket, tmp):
    """Every device's events into the bucket through Buffer + Uploader; returns the events."""
    all_events = []
    for d in range(DEVICES):
        device = "bench-%02d" % d
        evs = events(device, EVENTS_PER_DEVICE)
        all_events += evs
        buf = fleetpipe.Buffer({"path": os.path.join(tmp, device), "durability": "none"})
        for meta, payload in evs:
            buf.append(meta["stream"], payload, event_id=meta["event_id"],
                       trigger_ids=meta["trigger_ids"], priority=meta["priority"],
                       start_ns=meta["start_ns"], end_ns=meta["end_ns"],
                       content_type=meta["content_type"], metadata=meta["metadata"])
        up = fleetpipe.Uploader({"endpoint": env["S3_ENDPOINT_HTTPS"], "bucket": bucket,
                                 "region": env["S3_REGION"], "tls": {"ca_file": env["S3_CA_FILE"]},
                                 "credentials": {"source": "static",
                                                 "access_key_id": env["S3_ACCESS_KEY"],
                                                 "secret_access_key": env["S3_SECRET_KEY"]}},
                                buf, device_id=device)
        up.drain(timeout=300)
        up.close()
        buf.close()
    return all_events


def rate(args, entries, parallel):
    ds = fleetpipe.Dataset(args, parallel=parallel, torch=False)
    ds._entries = [dict(e) for e in entries]  # the same listing for both: only the GETs differ
    t0 = time.perf_counter()
    n = sum(1 for _ in ds)
    dt = time.perf_counter() - t0
    assert n == len(entries) and ds.stats()["skipped_total"] == 0, ds.stats()
    return n / dt


def decode_times(payloads):
    """(pure rows s, numpy s, whole decode pure s, whole decode numpy s) over all payloads."""
    decoded = [fleetpipe.decode_events(p) for p in payloads]
    secs = [s for evs in decoded for ev in evs for s in ev.sections if s.kind == "numeric"]
    t0 = time.perf_counter()
    for s in secs:
        s._rows = None
        s.rows  # noqa: B018 - the pure-Python unpacking is what is timed
    t_rows = time.perf_counter() - t0
    t0 = time.perf_counter()
    for s in secs:
        s.array()
    t_arr = time.perf_counter() - t0
    t0 = time.perf_counter()
    for p in payloads:
        for ev in fleetpipe.decode_events(p):
            for s in ev.sections:
                s.rows  # noqa: B018
    whole_rows = time.perf_counter() - t0
    t0 = time.perf_counter()
    for p in payloads:
        for ev in fleetpipe.decode_events(p):
            for s in ev.sections:
                if s.kind == "numeric":
                    s.array()
    whole_arr = time.perf_counter() - t0
    return t_rows, t_arr, whole_rows, whole_arr


def main():
    state = os.environ.get("FLEETPIPE_S3_STATE")
    if not state:
        sys.stderr.write("bench_feed: FLEETPIPE_S3_STATE is not set (scripts/bench starts a server)\n")
        return 1
    env = s3env.load_env(state)
    for k in ("AWS_CA_BUNDLE", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE"):
        os.environ.pop(k, None)
    bucket = "bench-feed-%d" % os.getpid()
    s3env.ensure_bucket(s3env.boto3_client(env, https=True), bucket)
    args = dict(endpoint=env["S3_ENDPOINT_HTTPS"], bucket=bucket, region=env["S3_REGION"],
                ca_file=env["S3_CA_FILE"], access_key=env["S3_ACCESS_KEY"],
                secret_key=env["S3_SECRET_KEY"])
    with tempfile.TemporaryDirectory(prefix="bench-feed.") as tmp:
        evs = upload(env, bucket, tmp)
    entries = fleetpipe.Dataset(args, torch=False).entries()
    assert len(entries) == len(evs), (len(entries), len(evs))
    seq, par, ratios = [], [], []
    for _ in range(ROUNDS):
        s = rate(args, entries, 1)
        p = rate(args, entries, 8)
        seq.append(s)
        par.append(p)
        ratios.append(p / s)
    ratio = statistics.median(ratios)

    payloads = [p for _, p in evs]
    dec = [decode_times(payloads) for _ in range(ROUNDS)]
    speed = [d[0] / d[1] for d in dec]
    whole = [d[2] / d[3] for d in dec]
    rows = sum(s.count for ev in fleetpipe.decode_events(payloads[0]) for s in ev.sections
               if s.kind == "numeric")
    size = sum(len(p) for p in payloads) / len(payloads)
    figures = [
        {"id": "dataset_events_per_s", "value": statistics.median(par), "unit": "events/s",
         "baseline": "the same %d events (%.0f KB each) with sequential GETs: %s events/s; parallel "
                     "(8 in flight): %s; median ratio %.2f over %d rounds" % (
                         len(entries), size / 1e3, " ".join("%.0f" % x for x in seq),
                         " ".join("%.0f" % x for x in par), ratio, ROUNDS),
         "goal": ">= 1.5x sequential", "pass": ratio >= 1.5},
        {"id": "decode_numpy_speedup", "value": statistics.median(speed), "unit": "ratio",
         "baseline": "numeric rows of %d events (%d rows x 7 float64 each): Section.rows "
                     "(struct.iter_unpack) vs Section.array(), median of %d; whole decode incl. "
                     "header, JSON index and blobs: %.1fx" % (
                         len(payloads), rows, ROUNDS, statistics.median(whole)),
         "goal": ">= 20", "pass": statistics.median(speed) >= 20},
    ]
    out_dir = os.environ.get("FLEETPIPE_BENCH_OUT", "bench-results")
    os.makedirs(out_dir, exist_ok=True)
    doc = {"bench": "feed", "git": os.environ.get("FLEETPIPE_GIT_SHA", "unknown"), "figures": figures}
    with open(os.path.join(out_dir, "feed.json"), "w") as f:
        json.dump(doc, f, indent=2, sort_keys=True)
    for fig in figures:
        print("%-24s %10.1f %-9s %s  [%s]" % (fig["id"], fig["value"], fig["unit"], fig["goal"],
                                             "PASS" if fig["pass"] else "FAIL"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
