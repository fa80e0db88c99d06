"""A small fleet for the training-feed tests: events captured by fleetpipe.Capture, buffered and
uploaded by the real Uploader to the real S3 server, with campaign attribution and device labels
in the record metadata (the names docs/python.md gives: campaign_id, campaign_version, labels)."""
import json

import fleetpipe
from fp_helpers import make_uploader_section

STREAMS = [{"name": "imu", "channels": ["speed", "accel_x"], "ring_seconds": 5},
           {"name": "env", "channels": ["temp"], "ring_seconds": 5, "compression": "zstd"},
           {"name": "camera", "kind": "blob", "content_type": "image/jpeg", "ring_seconds": 5}]
TRIGGERS = [
    {"name": "hard_brake", "type": "threshold", "stream": "imu", "channel": "accel_x",
     "below": -4, "priority": 6, "capture": {"streams": ["imu", "env", "camera"], "pre": 1, "post": 1}},
    {"name": "flag", "type": "manual", "priority": 7, "stream": "camera",
     "capture": {"streams": ["camera"], "pre": 1, "post": 0.5}},
]

# device -> (brake times, flag times, campaign (id, version) or None, labels)
FLEET = {
    "cart-0001": ((2.0, 6.0, 10.0), (4.0,), ("brakes", 1), {"site": "store-01", "model": "v3"}),
    "cart-0002": ((2.0, 6.0), (), ("brakes", 2), {"site": "store-01", "model": "v2"}),
    "cart-0103": ((2.0,), (4.0, 8.0), None, {"site": "store-02", "model": "v3"}),
}


def record_events(cap, brakes, flags):
    t = 0.0
    end = max(list(brakes) + list(flags) + [0]) + 3
    while t < end:
        ax = -6.0 if any(abs(t - b) < 0.05 for b in brakes) else 0.0
        cap.push("imu", t, {"speed": 12.0 + t, "accel_x": ax})
        step = int(round(t * 100))
        if step % 10 == 0:
            cap.push("env", t, [20.0 + step / 1000.0])
            cap.push_blob("camera", t, b"\xff\xd8jpeg@%.1f" % t)
        if any(abs(t - f) < 0.005 for f in flags):
            cap.fire("flag", t)
        t = round(t + 0.01, 2)
    cap.tick(end + 5)


def upload_device(tmp_path, env, bucket, device, brakes, flags, campaign, labels):
    """Captures and uploads one device's events; returns {event_id: (meta, payload)}."""
    captured = {}
    buf = fleetpipe.Buffer({"path": str(tmp_path / device), "durability": "none"})

    def sink(meta, payload):
        md = dict(meta["metadata"], labels=json.dumps(labels, sort_keys=True))
        if campaign:
            md.update(campaign_id=campaign[0], campaign_version=str(campaign[1]))
        captured[meta["event_id"]] = (dict(meta, device=device), payload)
        out = buf.append(meta["stream"], payload, event_id=meta["event_id"],
                         trigger_ids=meta["trigger_ids"], priority=meta["priority"],
                         start_ns=meta["start_ns"], end_ns=meta["end_ns"],
                         content_type=meta["content_type"], metadata=md)
        return out["accepted"]

    cap = fleetpipe.Capture({"device_id": device, "streams": STREAMS, "triggers": TRIGGERS}, sink=sink)
    record_events(cap, brakes, flags)
    up = fleetpipe.Uploader(make_uploader_section(env, bucket), buf, device_id=device)
    up.drain(timeout=60)
    assert up.status()["objects_uploaded"] >= 1
    up.close()
    cap.close()
    buf.close()
    return captured


def upload_fleet(tmp_path, env, bucket):
    """Every device of FLEET uploaded; {event_id: (meta, payload)} of all their events."""
    out = {}
    for device, (brakes, flags, campaign, labels) in FLEET.items():
        out.update(upload_device(tmp_path, env, bucket, device, brakes, flags, campaign, labels))
    return out


def reader_args(env, bucket):
    """BucketReader keyword arguments reaching `bucket` (what a Dataset takes)."""
    return dict(endpoint=env["S3_ENDPOINT_HTTPS"], bucket=bucket, region=env["S3_REGION"],
                ca_file=env["S3_CA_FILE"], access_key=env["S3_ACCESS_KEY"],
                secret_key=env["S3_SECRET_KEY"])


def fleet_bucket(s3, s3_client, tmp_path_factory, name):
    """A new bucket `name` with the FLEET uploaded: {"bucket", "args" (reader_args), "captured"}."""
    import s3env  # noqa: PLC0415 - on sys.path once the shared conftest ran
    s3env.ensure_bucket(s3_client, name)
    captured = upload_fleet(tmp_path_factory.mktemp("fleet"), s3, name)
    return {"bucket": name, "args": reader_args(s3, name), "captured": captured}
