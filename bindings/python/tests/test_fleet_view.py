"""The fleet view from Python and the CLI: BucketReader.status(by=...), `fleetpipe status --by
--prometheus` and the label filter (query(label=...), `fleetpipe query --label`) over heartbeats,
manifests and data objects laid out by boto3 on the real S3 server in the documented shapes, with
the `labels` objects labelled devices write (docs/fleet-view.md)."""
import json
import subprocess
import time

import pytest

import fleetpipe
from fp_helpers import bucket_args, clean_env

NOW = fleetpipe.parse_time("2026-11-25T12:00:00Z")


def put_heartbeat(client, bucket, device, when, uptime, bytes_sent, fires, paused_s=0, labels=None):
    doc = {"schema": "fleetpipe.heartbeat/1", "device": device, "time": fleetpipe.format_time(when),
           "uptime_s": uptime, "backlog": {"records": 3, "bytes": 300},
           "buffer": {"evicted_total": 0}, "triggers": {"bump": {"fires": fires}},
           "uploads": {"paused": False, "bytes_sent": bytes_sent, "paused_seconds": paused_s}}
    if labels is not None:
        doc["labels"] = labels
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(when))
    client.put_object(Bucket=bucket, Key="fleetpipe/_heartbeat/device=%s/%s.json" % (device, stamp),
                      Body=json.dumps(doc).encode())


def put_event(client, bucket, device, n, labels=None):
    """One data object and (when labels is not None) its manifest line carrying the labels."""
    start = int((NOW - 300 + n) * 1e9)
    key = "fleetpipe/stream=imu/date=2026-11-25/device=%s/20261125T115500.000Z-%016d.fpev" % (device, n)
    meta = {"fleetpipe-trigger-ids": "bump", "fleetpipe-event-ids": "ev-%s" % device,
            "fleetpipe-start-ns": str(start), "fleetpipe-end-ns": str(start + 10**9)}
    client.put_object(Bucket=bucket, Key=key, Body=b"x" * 10, Metadata=meta)
    if labels is None:
        return key
    line = {"key": key, "size": 10, "stream": "imu", "device": device, "labels": labels,
            "records": [{"id": n, "event_id": "ev-%s" % device, "offset": 0, "size": 10,
                         "start_ns": start, "end_ns": start + 10**9, "priority": 3,
                         "trigger_ids": ["bump"]}]}
    client.put_object(Bucket=bucket,
                      Key="fleetpipe/_manifests/device=%s/date=2026-11-25/%016d.jsonl" % (device, n),
                      Body=(json.dumps(line) + "\n").encode())
    return key


@pytest.fixture
def labelled_fleet(s3_client, bucket):
    # store-01: two devices, 600 s of heartbeats; a2 restarted (uptime and counters went down)
    for i, (bytes_sent, fires, paused) in enumerate([(0, 0, 0), (3000, 2, 30), (6000, 5, 60)]):
        put_heartbeat(s3_client, bucket, "a1", NOW - 600 + 300 * i, 1000 + 300 * i, bytes_sent,
                      fires, paused, {"site": "store-01", "model": "m1"})
    for i, (uptime, bytes_sent, fires) in enumerate([(1000, 5000, 4), (1300, 8000, 6), (100, 900, 1)]):
        put_heartbeat(s3_client, bucket, "a2", NOW - 600 + 300 * i, uptime, bytes_sent, fires,
                      labels={"site": "store-01"})
    # store-02: silent for an hour
    put_heartbeat(s3_client, bucket, "b1", NOW - 3600 - 600, 500, 0, 0, labels={"site": "store-02"})
    put_heartbeat(s3_client, bucket, "b1", NOW - 3600, 1100, 1200, 3, labels={"site": "store-02"})
    # today's heartbeats: no labels
    put_heartbeat(s3_client, bucket, "c1", NOW - 600, 50, 0, 0)
    put_heartbeat(s3_client, bucket, "c1", NOW - 300, 350, 600, 1)
    return {"a1": put_event(s3_client, bucket, "a1", 1, {"site": "store-01"}),
            "b1": put_event(s3_client, bucket, "b1", 2, {"site": "store-02"}),
            "c1": put_event(s3_client, bucket, "c1", 3)}  # no manifest: labels from its heartbeat


def test_status_by_label_groups_window_deltas(reader, labelled_fleet):
    groups = reader.status(by="site", now=NOW, window=7200, silent_after=900)
    assert [g["value"] for g in groups] == ["store-01", "store-02", None]
    s1, s2, none = groups
    assert s1["devices"] == ["a1", "a2"] and s1["silent"] == 0 and s1["restarts"] == 1
    # a1: 6000 B over 600 s; a2: 3000 B before its restart, then 900 B over its 100 s of uptime
    assert s1["upload_bytes"] == 6000 + 3000 + 900
    assert s1["upload_bytes_per_s"] == pytest.approx(6000 / 600 + 3900 / 400)
    assert s1["observed_device_s"] == pytest.approx(600 + 400)
    assert s1["fires"]["bump"] == 5 + 2 + 1
    assert s1["fires_per_device_hour"]["bump"] == pytest.approx(8 * 3600 / 1000)
    assert s1["paused_share"] == pytest.approx(60 / 1000)
    assert s1["backlog_records"] == 6
    assert s2["devices"] == ["b1"] and s2["silent"] == 1
    assert none["devices"] == ["c1"] and none["label"] == "site"
    fleet = reader.status(by="", now=NOW, window=7200)
    assert len(fleet) == 1 and len(fleet[0]["devices"]) == 4


def test_cli_status_by_and_prometheus(cli, s3, bucket, labelled_fleet):
    args = [cli, "status", *bucket_args(s3, bucket), "--now", "2026-11-25T12:00:00Z",
            "--window", "7200", "--by", "site"]
    out = subprocess.run(args + ["--json"], env=clean_env(), capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["value"] for r in rows] == ["store-01", "store-02", None]
    prom = subprocess.run(args + ["--prometheus"], env=clean_env(), capture_output=True, text=True,
                          timeout=60)
    assert prom.returncode == 0, prom.stderr
    lines = prom.stdout.splitlines()
    assert "# TYPE fleetpipe_fleet_devices gauge" in lines
    assert 'fleetpipe_fleet_devices{site="store-01"} 2' in lines
    assert 'fleetpipe_fleet_devices_silent{site="store-02"} 1' in lines
    assert 'fleetpipe_fleet_devices{site=""} 1' in lines
    rate = [l for l in lines if l.startswith('fleetpipe_fleet_trigger_fires_per_device_hour{site="store-01",trigger="bump"}')]
    assert len(rate) == 1 and float(rate[0].split()[-1]) == pytest.approx(8 * 3600 / 1000)


def test_query_by_label(reader, cli, s3, bucket, labelled_fleet):
    keys = lambda events: sorted(e["object_key"] for e in events)  # noqa: E731
    assert keys(reader.query(label="site=store-01")) == [labelled_fleet["a1"]]
    assert keys(reader.query(label={"site": "store-0*"})) == sorted([labelled_fleet["a1"], labelled_fleet["b1"]])
    assert keys(reader.query(label=["site=store-0*", "model=m1"])) == []  # the manifest line has no model
    assert reader.query(label="site=nowhere") == []
    assert len(reader.query()) == 3
    with pytest.raises(fleetpipe.Error):
        reader.query(label="site")
    out = subprocess.run([cli, "query", *bucket_args(s3, bucket), "--label", "site=store-0*", "--json"],
                         env=clean_env(), capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert sorted(json.loads(l)["object_key"] for l in out.stdout.splitlines()) == \
        sorted([labelled_fleet["a1"], labelled_fleet["b1"]])


def test_cli_report_has_a_table_per_label_and_survives_undecodable_events(cli, s3, bucket, labelled_fleet,
                                                                          tmp_path):
    out = subprocess.run([cli, "report", *bucket_args(s3, bucket), "--out", str(tmp_path / "r"),
                          "--now", "2026-11-25T12:00:00Z", "--window", "7200", "--silent-after", "900"],
                         env=clean_env(), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    page = (tmp_path / "r" / "index.html").read_text()
    assert out.stdout.strip() == str(tmp_path / "r" / "index.html")
    assert '<table class="label-table" data-label="site">' in page
    assert '<table class="label-table" data-label="model">' in page
    assert 'data-value="store-01" data-has-value="1" data-devices="2"' in page
    assert 'data-value="" data-has-value="0" data-devices="1"' in page  # c1, no labels
    assert 'id="fleet-silent" data-value="1"' in page
    assert 'id="fleet-restarts" data-value="1"' in page
    # the laid-out event objects are not FPEV: shown as not decoded, the page still written
    assert page.count('<figure class="event"') == 3 and 'not decoded' in page
    assert "<script" not in page


def test_status_by_reads_two_heartbeats_per_steady_device(reader, s3_client, bucket):
    # 30 heartbeats a minute apart, and one that restarted 10 minutes ago: the sums are those of
    # every delta, from the first and newest heartbeat (and a few to find the restart).
    for i in range(30):
        put_heartbeat(s3_client, bucket, "d1", NOW - 1800 + 60 * i, 5000 + 60 * i, 100 * i, i // 3,
                      labels={"site": "s"})
        restarted = i >= 20
        put_heartbeat(s3_client, bucket, "d2", NOW - 1800 + 60 * i,
                      60 * (i - 20) + 5 if restarted else 5000 + 60 * i,
                      10 * (i - 19) if restarted else 50 * i, 0, labels={"site": "s"})
    reader.reset_stats()
    (g,) = reader.status(by="site", now=NOW, window=7200)
    stats = reader.stats()
    assert g["upload_bytes"] == 100 * 29 + (50 * 19 + 10 * 10)
    assert g["fires"]["bump"] == 29 // 3
    assert g["restarts"] == 1
    assert stats["list_requests"] == 1
    assert stats["gets"] < 2 + 2 + 2 * 6  # not 60
