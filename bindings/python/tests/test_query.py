"""query and status against objects really uploaded: fleetpipe.Capture -> Buffer -> Uploader
into the real S3 server, then fleetpipe.BucketReader / `fleetpipe query` / `fleetpipe status`
read them back. Objects laid out by boto3 cover what the uploader cannot produce on demand (no
manifest, old heartbeats of a silent device)."""
import json
import subprocess
import threading
import time

import pytest

import fleetpipe
from fp_helpers import bucket_args, clean_env, make_uploader_section

STREAMS = [{"name": "imu", "channels": ["speed", "accel_x"], "ring_seconds": 5},
           {"name": "camera", "kind": "blob", "content_type": "image/jpeg", "ring_seconds": 5}]
TRIGGERS = [
    {"name": "hard_brake", "type": "threshold", "stream": "imu", "channel": "accel_x",
     "below": -4, "priority": 6, "capture": {"streams": ["imu", "camera"], "pre": 1, "post": 1}},
    {"name": "flag", "type": "manual", "priority": 7, "stream": "camera",
     "capture": {"streams": ["camera"], "pre": 1, "post": 0.5}},
]


def device_config(device):
    return {"device_id": device, "streams": STREAMS, "triggers": TRIGGERS}


def record_events(cap, brakes=(2.0,), flags=()):
    t = 0.0
    end = max(list(brakes) + list(flags) + [0]) + 3
    while t < end:
        ax = -6.0 if any(abs(t - b) < 0.05 for b in brakes) else 0.0
        cap.push("imu", t, {"speed": 12.0, "accel_x": ax})
        if int(round(t * 100)) % 10 == 0:
            cap.push_blob("camera", t, b"jpeg@%.1f" % t)
        if any(abs(t - f) < 0.005 for f in flags):
            cap.fire("flag", t)
        t = round(t + 0.01, 2)
    cap.tick(end + 5)


def upload_device(tmp_path, env, bucket, device, extra_metadata=None, **kw):
    """Captures events for `device` and uploads them with the real uploader; returns the
    [(meta, payload)] that went into the buffer. `extra_metadata` is added to every record's
    metadata (as a Pipeline adds campaign_id/campaign_version under a campaign)."""
    captured = []
    buf = fleetpipe.Buffer({"path": str(tmp_path / device), "durability": "none"})

    def sink(meta, payload):
        meta["metadata"].update(extra_metadata or {})
        captured.append((meta, payload))
        out = buf.append(meta["stream"], payload, event_id=meta["event_id"],
                         trigger_ids=meta["trigger_ids"], priority=meta["priority"],
                         start_ns=meta["start_ns"], end_ns=meta["end_ns"],
                         content_type=meta["content_type"], metadata=meta["metadata"])
        return out["accepted"]

    cap = fleetpipe.Capture(device_config(device), sink=sink)
    record_events(cap, **kw)
    up = fleetpipe.Uploader(make_uploader_section(env, bucket), buf, device_id=device)
    up.drain(timeout=60)
    status = up.status()
    assert status["objects_uploaded"] >= 1, status
    up.close()
    cap.close()
    buf.close()
    return captured


@pytest.fixture
def fleet(tmp_path, s3, bucket):
    """Two devices' events really uploaded: cart-0001 (2 hard brakes + 1 flag), cart-0102
    (1 hard brake)."""
    a = upload_device(tmp_path, s3, bucket, "cart-0001", brakes=(2.0, 6.0), flags=(4.0,))
    b = upload_device(tmp_path, s3, bucket, "cart-0102", brakes=(2.0,))
    return {"cart-0001": a, "cart-0102": b}


def ids(entries):
    return sorted(e["event_id"] for e in entries)


def test_query_filters_real_uploads_by_trigger_device_stream_and_time(reader, fleet):
    a, b = fleet["cart-0001"], fleet["cart-0102"]
    assert len(a) == 3 and len(b) == 1
    everything = reader.query()
    assert ids(everything) == sorted(m["event_id"] for m, _ in a + b)
    assert all(e["manifest_key"] for e in everything)  # all described by manifests

    brakes = reader.query(trigger="hard_brake")
    assert ids(brakes) == sorted(m["event_id"] for m, _ in a + b if "hard_brake" in m["trigger_ids"])
    assert len(brakes) == 3

    only_a = reader.query(trigger="hard_brake", device="cart-00*")
    assert {e["device"] for e in only_a} == {"cart-0001"} and len(only_a) == 2

    cam = reader.query(stream="camera")
    assert ids(cam) == sorted(m["event_id"] for m, _ in a if m["stream"] == "camera")
    assert [e["trigger_ids"] for e in cam] == [["flag"]]

    first = min(m["start_ns"] for m, _ in a + b) / 1e9
    last = max(m["end_ns"] for m, _ in a + b) / 1e9
    assert len(reader.query(since=first - 3600)) == 4
    assert reader.query(since=last + 1) == []
    assert reader.query(until=first - 1) == []
    assert len(reader.query(min_priority=7)) == 1
    assert len(reader.query(limit=2)) == 2

    e = brakes[0]
    assert e["object_key"].startswith("fleetpipe/stream=imu/date=")
    assert "/device=%s/" % e["device"] in e["object_key"]
    assert e["priority"] == 6 and e["length"] > 0 and e["end_ns"] > e["start_ns"]


def test_download_returns_each_events_own_bytes_and_decodes(reader, fleet):
    payloads = {m["event_id"]: p for m, p in fleet["cart-0001"] + fleet["cart-0102"]}
    found = fleetpipe.query(reader, trigger="hard_brake", decode=True)
    assert len(found) == 3
    for e in found:
        assert e["data"] == payloads[e["event_id"]]
        (ev,), = [e["events"]]
        assert ev.index["event_id"] == e["event_id"]
        assert ev.section("imu").count > 100


def test_objects_without_manifest_are_found_from_their_metadata(reader, s3_client, bucket, fleet):
    key = "fleetpipe/stream=imu/date=2026-11-02/device=cart-0200/20261102T100000.000Z-0000000000000001.fpev"
    s3_client.put_object(Bucket=bucket, Key=key, Body=b"FPEV-not-really", Metadata={
        "fleetpipe-trigger-ids": "hard_brake,swerve", "fleetpipe-event-ids": "ev-x",
        "fleetpipe-start-ns": str(1793613600 * 10**9), "fleetpipe-end-ns": str(1793613610 * 10**9),
        "fleetpipe-record-count": "1"})
    found = reader.query(trigger="swerve")
    assert len(found) == 1
    e = found[0]
    assert e["object_key"] == key and e["manifest_key"] == "" and e["event_id"] == "ev-x"
    assert e["device"] == "cart-0200" and e["trigger_ids"] == ["hard_brake", "swerve"]
    assert reader.download(e) == b"FPEV-not-really"
    assert len(reader.query(trigger="hard_brake")) == 4
    assert reader.query(trigger="swerve", since="2026-11-03") == []
    # date= pruning: an object dated two days before `since` is not even listed, so not HEADed
    reader.reset_stats()
    assert reader.query(trigger="swerve", since="2026-11-04") == []
    assert reader.stats()["heads"] == 0
    reader.reset_stats()
    reader.query(trigger="swerve", since="2026-11-03")
    assert reader.stats()["heads"] == 1


def test_cli_query_prints_and_downloads_the_same_events(cli, s3, bucket, reader, fleet, tmp_path):
    expected = ids(reader.query(trigger="hard_brake", device="cart-0*"))
    out = subprocess.run([cli, "query", *bucket_args(s3, bucket), "--trigger", "hard_brake",
                          "--device", "cart-0*", "--json", "--since", "2026-01-01",
                          "--download", str(tmp_path / "dl")],
                         env=clean_env(), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = [json.loads(l) for l in out.stdout.splitlines()]
    assert sorted(l["event_id"] for l in lines) == expected
    files = sorted(p.name for p in (tmp_path / "dl").iterdir())
    assert len(files) == len(expected)
    payloads = {m["event_id"]: p for m, p in fleet["cart-0001"] + fleet["cart-0102"]}
    for l in lines:
        assert (tmp_path / "dl" / ("%s-%s.fpev" % (l["device"], l["event_id"]))).read_bytes() == \
            payloads[l["event_id"]]

    text = subprocess.run([cli, "query", *bucket_args(s3, bucket), "--stream", "camera", "--decode"],
                          env=clean_env(), capture_output=True, text=True, timeout=120)
    assert text.returncode == 0, text.stderr
    assert "flag" in text.stdout and "camera" in text.stdout and "count=" in text.stdout


def test_cli_query_error_paths(cli, s3, bucket):
    bad_time = subprocess.run([cli, "query", *bucket_args(s3, bucket), "--since", "yesterday"],
                              env=clean_env(), capture_output=True, text=True, timeout=60)
    assert bad_time.returncode == 2 and "not a time" in bad_time.stderr
    args = bucket_args(s3, "no-such-bucket-fp")
    missing = subprocess.run([cli, "query", *args], env=clean_env(), capture_output=True,
                             text=True, timeout=60)
    assert missing.returncode == 1 and "NoSuchBucket" in missing.stderr
    assert s3["S3_SECRET_KEY"] not in missing.stderr


def test_status_from_a_real_pipeline_heartbeat(tmp_path, s3, bucket, reader, cli):
    cfg = device_config("cart-0300")
    cfg["buffer"] = {"path": str(tmp_path / "p"), "durability": "none"}
    cfg["uploader"] = make_uploader_section(s3, bucket)
    cfg["pipeline"] = {"heartbeat_interval": "1h", "heartbeat_on_start": True}
    with fleetpipe.Pipeline(cfg) as p:
        for i in range(300):
            p.push("imu", i * 0.01, {"speed": 10.0, "accel_x": -6.0 if i == 150 else 0.0})
        p.tick(10.0)
        p.drain(timeout=60)
        st = p.status()
        assert st["heartbeats_sent"] >= 1, st
        hb_key = st["last_heartbeat_key"]
    assert hb_key.startswith("fleetpipe/_heartbeat/device=cart-0300/")
    devices = reader.status()
    d, = [d for d in devices if d["device"] == "cart-0300"]
    assert d["last_key"] == hb_key
    assert d["seconds_since_last"] < 600 and not d["silent"] and not d["evicting"]
    assert d["heartbeat"]["device"] == "cart-0300"
    assert d["backlog_records"] == 0  # drained
    assert d["sdk_version"] == fleetpipe.__version__
    assert len(reader.query(device="cart-0300", trigger="hard_brake")) == 1

    out = subprocess.run([cli, "status", *bucket_args(s3, bucket), "--json"], env=clean_env(),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    rows = {r["device"]: r for r in map(json.loads, out.stdout.splitlines())}
    assert rows["cart-0300"]["silent"] is False


def put_heartbeat(client, bucket, device, when, evicted, bytes_sent, backlog):
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(when))
    doc = {"schema": "fleetpipe.heartbeat/1", "device": device,
           "time": fleetpipe.format_time(when), "sdk_version": "0.1.0", "uptime_s": 3600,
           "network": "online", "backlog": {"records": backlog, "bytes": backlog * 1000},
           "buffer": {"evicted_total": evicted}, "uploads": {"bytes_sent": bytes_sent},
           "last_error": ""}
    client.put_object(Bucket=bucket, Key="fleetpipe/_heartbeat/device=%s/%s.json" % (device, stamp),
                      Body=json.dumps(doc).encode())


def test_status_flags_silent_and_evicting_devices(s3_client, bucket, reader, cli, s3):
    now = fleetpipe.parse_time("2026-11-25T12:00:00Z")
    # healthy: heartbeats every 5 min, counters growing, no evictions
    for i in range(3):
        put_heartbeat(s3_client, bucket, "cart-ok", now - 600 + 300 * i, 5, 1000 * i, 2)
    # evicting: eviction counter grew within the window
    put_heartbeat(s3_client, bucket, "cart-evict", now - 600, 10, 0, 900)
    put_heartbeat(s3_client, bucket, "cart-evict", now - 60, 25, 6000, 950)
    # silent: last heartbeat two hours ago
    put_heartbeat(s3_client, bucket, "cart-silent", now - 7200, 0, 0, 10)

    rows = {d["device"]: d for d in reader.status(now=now, silent_after=900, window=3600)}
    assert set(rows) == {"cart-ok", "cart-evict", "cart-silent"}
    ok, ev, si = rows["cart-ok"], rows["cart-evict"], rows["cart-silent"]
    assert not ok["silent"] and not ok["evicting"]
    assert ok["heartbeats"] == 3 and ok["upload_bytes_per_s"] == pytest.approx(2000 / 600)
    assert ok["seconds_since_last"] == pytest.approx(0, abs=1)
    assert ev["evicting"] and ev["evicted_in_window"] == 15 and not ev["silent"]
    assert ev["backlog_records"] == 950
    assert ev["upload_bytes_per_s"] == pytest.approx(6000 / 540)
    assert si["silent"] and not si["evicting"] and si["seconds_since_last"] == pytest.approx(7200)
    assert [d["device"] for d in reader.status(device="cart-s*", now=now)] == ["cart-silent"]

    out = subprocess.run([cli, "status", *bucket_args(s3, bucket), "--now", "2026-11-25T12:00:00Z",
                          "--window", "3600", "--flagged"], env=clean_env(), capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "cart-evict" in out.stdout and "EVICTING" in out.stdout
    assert "cart-silent" in out.stdout and "SILENT" in out.stdout
    assert "cart-ok" not in out.stdout


def test_reader_error_paths(s3, bucket):
    common = dict(endpoint=s3["S3_ENDPOINT_HTTPS"], region=s3["S3_REGION"], ca_file=s3["S3_CA_FILE"],
                  access_key=s3["S3_ACCESS_KEY"])
    with pytest.raises(fleetpipe.Error) as info:
        fleetpipe.BucketReader(bucket=bucket, secret_key="wrong-secret", **common).query()
    assert info.value.reason == "authentication failed" or "auth" in info.value.reason.lower()
    assert "wrong-secret" not in str(info.value)
    with pytest.raises(fleetpipe.Error) as info:
        fleetpipe.BucketReader(bucket="no-such-bucket-fp", secret_key=s3["S3_SECRET_KEY"], **common).status()
    assert "NoSuchBucket" in str(info.value)
    with pytest.raises(fleetpipe.Error) as info:
        fleetpipe.BucketReader(bucket=bucket, secret_key=s3["S3_SECRET_KEY"],
                               **dict(common, ca_file="/nonexistent/ca.pem"))
    assert "tls" in info.value.reason.lower() or "TLS" in str(info.value)
    with pytest.raises(fleetpipe.Error) as info:
        fleetpipe.BucketReader(endpoint=s3["S3_ENDPOINT_HTTP"], bucket=bucket)
    assert info.value.json_pointer == "/uploader/endpoint"
    reader = fleetpipe.BucketReader(bucket=bucket, secret_key=s3["S3_SECRET_KEY"], **common)
    with pytest.raises(fleetpipe.Error) as info:
        reader.get("does/not/exist")
    assert info.value.reason == "not found"
    with pytest.raises(TypeError):
        fleetpipe.BucketReader(bukket="typo")


def test_blocking_calls_release_the_gil(tmp_path, s3, bucket):
    buf = fleetpipe.Buffer({"path": str(tmp_path / "g"), "durability": "none"})
    up = fleetpipe.Uploader(make_uploader_section(s3, bucket), buf, device_id="cart-gil")
    ticks = [0]
    stop = threading.Event()

    def spin():
        while not stop.is_set():
            ticks[0] += 1

    t = threading.Thread(target=spin)
    t.start()
    try:
        time.sleep(0.05)
        before = ticks[0]
        up.run_for(0.5)  # idle uploader: blocks ~0.5 s in C++
        during = ticks[0] - before
    finally:
        stop.set()
        t.join()
    # With the GIL held for 0.5 s the spinning thread could not have counted at all.
    assert during > 1000
    up.close()
    buf.close()


def test_query_selects_events_by_campaign(tmp_path, s3, bucket, reader):
    upload_device(tmp_path, s3, bucket, "cart-0201", brakes=(2.0,),
                  extra_metadata={"campaign_id": "fleet", "campaign_version": "3"})
    upload_device(tmp_path, s3, bucket, "cart-0202", brakes=(2.0,))
    got = reader.query(campaign="fleet@3")
    assert {e["device"] for e in got} == {"cart-0201"}
    assert all(e["campaigns"] == ["fleet@3"] for e in got)
    assert ids(reader.query(campaign="fleet")) == ids(got)  # any version
    assert reader.query(campaign="fleet@2") == []
    assert reader.query(campaign="other") == []
    local = reader.query(device="cart-0202")
    assert local and all(e["campaigns"] == [] for e in local)
    assert ids(fleetpipe.query(reader, campaign="fleet@3")) == ids(got)
