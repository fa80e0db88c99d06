"""Capture.push_rows / Pipeline.push_rows: numpy blocks read in place give the same fires and the
same recorded rows as row-by-row push; wrong dtypes, shapes and layouts are refused."""
import numpy as np
import pytest

import fleetpipe

CONFIG = {
    "device_id": "cart-0001",
    "streams": [{"name": "imu", "channels": ["speed", "accel_x"], "ring_seconds": 2}],
    "triggers": [
        {"name": "hard_brake", "type": "threshold", "stream": "imu", "channel": "accel_x",
         "below": -4, "hysteresis": 0.5, "capture": {"pre": 0.2, "post": 0.3}},
        {"name": "fast", "type": "threshold", "stream": "imu", "channel": "speed",
         "above": 20, "cooldown": 1, "capture": {"pre": 0.1, "post": 0.1}},
    ],
}


def data(n=5000):
    rng = np.random.default_rng(7)
    t = np.arange(n, dtype=np.float64) * 0.001
    speed = 15 + 8 * np.sin(t * 3) + rng.random(n)
    accel = -5 * np.sin(t * 7) + rng.random(n)
    return t, np.ascontiguousarray(np.stack([speed, accel], axis=1))


def rows_of(cap):
    out = []
    for meta, payload in cap.take_events():
        ev = fleetpipe.decode_events(payload)[0]
        out.append((tuple(meta["trigger_ids"]), ev.section("imu").array().tobytes()))
    return out


def test_push_rows_matches_push_row_by_row():
    t, v = data()
    one, many = fleetpipe.Capture(CONFIG), fleetpipe.Capture(CONFIG)
    for i in range(len(t)):
        one.push("imu", float(t[i]), [float(v[i, 0]), float(v[i, 1])])
    for i in range(0, len(t), 700):
        many.push_rows("imu", t[i:i + 700], v[i:i + 700])
    one.flush()
    many.flush()
    a, b = rows_of(one), rows_of(many)
    assert len(a) > 5
    assert a == b
    for trig in ("hard_brake", "fast"):
        assert one.trigger_stats(trig) == many.trigger_stats(trig)
    assert one.stats()["samples"] == many.stats()["samples"] == len(t)


def test_push_rows_refuses_what_it_cannot_read_in_place():
    t, v = data(10)
    cap = fleetpipe.Capture(CONFIG)
    with pytest.raises(fleetpipe.Error):
        cap.push_rows("imu", t.astype(np.float32), v)
    with pytest.raises(fleetpipe.Error):
        cap.push_rows("imu", t, np.asfortranarray(v))  # not C-contiguous: would need a copy
    with pytest.raises(fleetpipe.Error):
        cap.push_rows("imu", t, v[:, :1].copy())  # one channel short
    cap.push_rows("imu", t, v.reshape(-1))  # flat n * channels is fine
    assert cap.stats()["samples"] == 10


def test_pipeline_push_rows_feeds_its_capture(tmp_path):
    cfg = dict(CONFIG, buffer={"path": str(tmp_path / "db"), "durability": "none"},
               uploader={"enabled": False})
    p = fleetpipe.Pipeline(cfg)
    t, v = data(2000)
    p.push_rows("imu", t, v)
    p.tick(100.0)
    p.poll()
    s = p.status()
    assert s["capture"]["samples"] == 2000
    assert s["capture"]["events"] >= 1
    assert s["buffer"]["records"] == s["capture"]["events"]
