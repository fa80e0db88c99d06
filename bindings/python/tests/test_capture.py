"""fleetpipe.Capture: triggers fire, events are FPEV payloads the Python decoder reads, sinks
(list, callable, Buffer) and their error paths."""
import pytest

import fleetpipe

CONFIG = {
    "device_id": "cart-0001",
    "streams": [{"name": "imu", "channels": ["speed", "accel_x"], "ring_seconds": 5},
                {"name": "cam", "kind": "blob", "content_type": "image/jpeg", "ring_seconds": 5}],
    "triggers": [
        {"name": "hard_brake", "type": "threshold", "stream": "imu", "channel": "accel_x",
         "below": -4, "priority": 6, "capture": {"streams": ["imu", "cam"], "pre": 1, "post": 1}},
        {"name": "flag", "type": "manual", "priority": 7, "capture": {"streams": ["imu"], "pre": 1, "post": 0.5}},
    ],
}


def drive(cap, brake_at=2.0, until=5.0):
    t = 0.0
    while t < until:
        ax = -6.0 if abs(t - brake_at) < 0.05 else 0.0
        cap.push("imu", t, {"speed": 12.0, "accel_x": ax})
        if int(t * 100) % 10 == 0:
            cap.push_blob("cam", t, b"jpeg@%.1f" % t)
        t = round(t + 0.01, 2)
    cap.tick(until + 5)


def test_threshold_trigger_makes_a_decodable_event():
    cap = fleetpipe.Capture(CONFIG)
    drive(cap)
    events = cap.take_events()
    assert len(events) == 1
    meta, payload = events[0]
    assert meta["trigger_ids"] == ["hard_brake"]
    assert meta["priority"] == 6
    assert meta["stream"] == "imu"
    assert meta["metadata"]["device"] == "cart-0001"
    assert meta["end_ns"] > meta["start_ns"] > 0
    decoded = fleetpipe.decode_events(payload)
    assert len(decoded) == 1
    ev = decoded[0]
    imu = ev.section("imu")
    assert imu is not None and imu.count > 100  # ~1 s before + ~1 s after at 100 Hz
    assert ev.section("cam") is not None
    stats = cap.trigger_stats("hard_brake")
    assert stats["fires"] == 1 and stats["events"] == 1
    assert cap.stats()["events"] == 1
    assert cap.take_events() == []  # taken


def test_manual_fire_and_list_values():
    cap = fleetpipe.Capture(CONFIG)
    for i in range(200):
        cap.push("imu", i * 0.01, [10.0, 0.0])
    assert cap.fire("flag", 2.0) is True
    cap.tick(10.0)
    (meta, _), = cap.take_events()
    assert meta["trigger_ids"] == ["flag"] and meta["priority"] == 7


def test_callable_sink_receives_events_and_its_exception_propagates():
    got = []
    cap = fleetpipe.Capture(CONFIG, sink=lambda meta, payload: got.append(meta["event_id"]))
    drive(cap)
    assert len(got) == 1

    def boom(meta, payload):
        raise RuntimeError("sink failed")

    cap2 = fleetpipe.Capture(CONFIG, sink=boom)
    with pytest.raises(RuntimeError, match="sink failed"):
        drive(cap2)
    assert cap2.stats()["events_rejected"] == 1


def test_buffer_sink_stores_events(tmp_path):
    buf = fleetpipe.Buffer({"path": str(tmp_path / "db"), "durability": "none"})
    cap = fleetpipe.Capture(CONFIG, sink=buf, metrics=buf.metrics)
    drive(cap)
    assert buf.stats()["records"] == 1
    with pytest.raises(fleetpipe.Error):
        buf.close()  # still used by the Capture
    cap.close()
    with buf.lease(1 << 24) as lease:
        rec = lease.records[0]
        assert rec["trigger_ids"] == ["hard_brake"]
        assert fleetpipe.decode_events(lease.payload(0))[0].section("imu").count > 100
    buf.close()


def test_capture_error_paths():
    cap = fleetpipe.Capture(CONFIG)
    with pytest.raises(fleetpipe.Error) as info:
        cap.push("nope", 0.0, [1.0])
    assert info.value.reason == "invalid argument"
    with pytest.raises(fleetpipe.Error):
        cap.push("imu", 0.0, {"no_such_channel": 1.0})
    with pytest.raises(fleetpipe.Error):
        cap.push_blob("imu", 0.0, b"x")  # numeric stream
    with pytest.raises(fleetpipe.Error):
        cap.fire("no_such_trigger", 0.0)
    with pytest.raises(TypeError):
        fleetpipe.Capture(CONFIG, sink=42)
    bad = dict(CONFIG, triggers=[dict(CONFIG["triggers"][0], stream="gps")])
    with pytest.raises(fleetpipe.Error) as info:
        fleetpipe.Capture(bad)
    assert info.value.json_pointer.startswith("/triggers/0")
