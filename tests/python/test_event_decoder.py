"""The plain-Python event decoder (bindings/python/fleetpipe/event.py) against events the C++
encoder wrote: `fleetpipe replay --dump-events DIR` writes them, this test decodes them."""
import importlib.util
import json
import os
import struct
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EVENT_PY = os.path.join(REPO, "bindings", "python", "fleetpipe", "event.py")


def load_event_module():
    # Loaded by path, not through the package: proves the module stands alone (stdlib only).
    spec = importlib.util.spec_from_file_location("fleetpipe_event_standalone", EVENT_PY)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


event = load_event_module()


def fleetpipe_cli():
    candidates = [os.environ.get("FLEETPIPE_CLI", "")]
    if os.environ.get("FLEETPIPE_PYTHONPATH"):
        candidates.append(os.path.join(os.path.dirname(os.environ["FLEETPIPE_PYTHONPATH"]),
                                       "fleetpipe"))
    candidates += [os.path.join(REPO, d, "fleetpipe") for d in ("build", "build-capture")]
    for c in candidates:
        if c and os.access(c, os.X_OK) and os.path.isfile(c):
            return c
    pytest.skip("the fleetpipe CLI is not built (set FLEETPIPE_CLI)")


def write(path, text):
    with open(path, "w") as f:
        f.write(text)
    return path


STREAMS = [
    {"name": "imu", "channels": ["accel_x", "speed"], "compression": "zstd"},
    {"name": "cam", "kind": "blob", "content_type": "image/jpeg"},
]


def replay(tmp_path, triggers, lines, *extra):
    cfg = write(tmp_path / "cfg.json",
                json.dumps({"device_id": "dev-7", "streams": STREAMS, "triggers": triggers}))
    samples = write(tmp_path / "s.jsonl", "\n".join(json.dumps(l) for l in lines) + "\n")
    dump = tmp_path / "dump"
    dump.mkdir(exist_ok=True)
    out = subprocess.run([fleetpipe_cli(), "replay", "--config", str(cfg), str(samples),
                          "--json", "--dump-events", str(dump), *extra],
                         capture_output=True, text=True, check=False)
    return out, dump / "events.fpev"


def drive(n=200):
    lines = []
    for i in range(n):
        t = i * 0.05
        lines.append({"t": t, "stream": "imu",
                      "v": {"accel_x": -5.0 if 60 <= i < 64 else 0.1 * i, "speed": 12.0}})
        if i % 4 == 0:
            lines.append({"t": t, "stream": "cam", "blob_bytes": 1000 + i})
    return lines


HARD_BRAKE = {"name": "hard_brake", "type": "all", "tolerance": 0.5,
              "of": [{"type": "threshold", "stream": "imu", "channel": "accel_x", "below": -4},
                     {"type": "threshold", "stream": "imu", "channel": "speed", "above": 10}],
              "priority": 6, "capture": {"streams": ["imu", "cam"], "pre": 1, "post": 1}}


def test_decoder_round_trips_events_written_by_the_cpp_encoder(tmp_path):
    out, dump = replay(tmp_path, [HARD_BRAKE], drive())
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["events"] == 1
    data = dump.read_bytes()
    assert len(data) == report["bytes"]
    (ev,) = event.decode_events(data)
    assert ev.triggers == ["hard_brake"]
    assert ev.priority == 6
    assert ev.device == "dev-7"
    assert ev.index["closed"] == "time"
    imu = ev.section("imu")
    assert imu.meta["compression"] == "zstd"
    cols = imu.columns()
    # fire at i=60 (t=3.0): pre 1 s -> t >= 2.0, post 1 s -> t <= 4.0
    assert cols["t"][0] == pytest.approx(2.0)
    assert cols["t"][-1] == pytest.approx(4.0)
    assert imu.count == len(imu.rows) == 41
    assert cols["accel_x"][20] == -5.0
    assert set(cols["speed"]) == {12.0}
    cam = ev.section("cam")
    assert cam.content_type == "image/jpeg"
    assert [round(t, 3) for t, _ in cam.blobs] == [2.0, 2.2, 2.4, 2.6, 2.8, 3.0, 3.2, 3.4, 3.6,
                                                   3.8, 4.0]
    assert [len(b) for _, b in cam.blobs] == [1000 + i for i in range(40, 81, 4)]
    assert all(b == bytes(len(b)) for _, b in cam.blobs)  # synthetic blobs are zeros


def test_concatenated_events_iterate_in_order(tmp_path):
    lines = drive(400)
    for line in lines:  # a second hard brake at i=300
        if line["stream"] == "imu" and 300 <= round(line["t"] / 0.05) < 303:
            line["v"]["accel_x"] = -6.0
    out, dump = replay(tmp_path, [HARD_BRAKE], lines)
    assert out.returncode == 0, out.stderr
    events = event.decode_events(dump.read_bytes())
    assert len(events) == 2
    assert events[0].offset == 0
    assert events[1].offset == events[0].size
    assert events[0].event_id != events[1].event_id
    assert events[1].section("imu").columns()["accel_x"][20] == -6.0


def test_command_line_summary(tmp_path):
    out, dump = replay(tmp_path, [HARD_BRAKE], drive())
    assert out.returncode == 0, out.stderr
    run = subprocess.run([sys.executable, EVENT_PY, str(dump)], capture_output=True, text=True,
                         check=False)
    assert run.returncode == 0, run.stderr
    assert "triggers=hard_brake" in run.stdout
    assert "1 event(s)" in run.stdout
    js = subprocess.run([sys.executable, EVENT_PY, str(dump), "--json"], capture_output=True,
                        text=True, check=True)
    assert json.loads(js.stdout)[0]["triggers"] == ["hard_brake"]


def test_corrupt_input_raises_with_offset():
    index = json.dumps({"event_id": "x", "sections": []}).encode()
    one = struct.pack("<4sHHIIQ", b"FPEV", 1, 24, len(index), 0, 0) + index
    assert [e.event_id for e in event.decode_events(one + one)] == ["x", "x"]
    with pytest.raises(event.DecodeError, match="event at offset %d: truncated" % len(one)):
        event.decode_events(one + one[:10])
    with pytest.raises(event.DecodeError, match="offset 0: bad magic"):
        event.decode_events(b"XXXX" + one[4:])


def test_replay_json_report_and_bad_lines(tmp_path):
    out, _ = replay(tmp_path, [HARD_BRAKE], drive(), "--fleet", "100")
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    hb = r["triggers"]["hard_brake"]
    assert (hb["fires"], hb["events"], hb["budget_hits"]) == (1, 1, 0)
    assert hb["bytes"] == r["bytes"] > 0
    assert r["duration_s"] == pytest.approx(9.95)
    assert r["forecast"]["events_per_day"] == pytest.approx(86400 / 9.95)
    assert r["forecast"]["fleet"]["devices"] == 100
    assert r["forecast"]["fleet"]["bytes_per_day"] == pytest.approx(
        100 * r["forecast"]["bytes_per_day"])
    lines = drive(10)
    lines.insert(3, {"t": 1.0, "stream": "imu", "v": {"acel_x": 1}})
    out, _ = replay(tmp_path, [HARD_BRAKE], lines)
    assert out.returncode == 2
    assert "s.jsonl:4: stream \"imu\" has no channel \"acel_x\"" in out.stderr
