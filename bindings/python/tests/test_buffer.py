"""fleetpipe.Buffer / Lease / inspect_buffer: round trip, typed rejections, error paths."""
import pytest

import fleetpipe


def open_buffer(tmp_path, **kw):
    cfg = {"path": str(tmp_path / "db"), "durability": "none"}
    cfg.update(kw)
    return fleetpipe.Buffer(cfg)


def test_append_lease_ack_round_trip(tmp_path):
    with open_buffer(tmp_path) as buf:
        out = buf.append("imu", b"payload-1", event_id="e1", trigger_ids=["hard_brake"],
                         priority=6, start_ns=10, end_ns=20, metadata={"device": "cart-1"})
        assert out["accepted"] and out["id"] > 0 and out["evicted"] == 0
        buf.append("imu", b"payload-2", event_id="e2", priority=1)
        assert buf.stats()["records"] == 2
        with buf.lease(1 << 20) as lease:
            recs = lease.records
            assert [r["event_id"] for r in recs] == ["e1", "e2"]  # priority first
            assert recs[0]["trigger_ids"] == ["hard_brake"]
            assert recs[0]["metadata"] == {"device": "cart-1"}
            assert lease.payload(0) == b"payload-1"
            buf.ack([recs[0]["id"]])
        # the un-acked record went back to the queue when the lease was released
        assert buf.stats()["records"] == 1
        with buf.lease(1 << 20) as lease:
            assert [r["event_id"] for r in lease.records] == ["e2"]


def test_rejection_is_a_typed_outcome_not_an_exception(tmp_path):
    with open_buffer(tmp_path, max_payload_bytes=1024) as buf:
        out = buf.append("imu", b"x" * 4096)
        assert not out["accepted"]
        assert out["reason"] == "invalid argument"
        assert out["message"]
        assert buf.metrics.sum("fleetpipe_buffer_rejected_total") == 1


def test_bad_priority_raises_invalid_argument(tmp_path):
    with open_buffer(tmp_path) as buf:
        with pytest.raises(fleetpipe.Error) as info:
            buf.append("imu", b"x", priority=9)
        assert info.value.reason == "invalid argument"


def test_buffer_config_error_names_the_buffer_key(tmp_path):
    with pytest.raises(fleetpipe.Error) as info:
        fleetpipe.Buffer({"path": str(tmp_path), "max_bytes": -5})
    assert info.value.json_pointer == "/buffer/max_bytes"
    assert info.value.reason == "invalid configuration"


def test_second_writer_on_the_same_directory_is_refused(tmp_path):
    with open_buffer(tmp_path):
        with pytest.raises(fleetpipe.Error) as info:
            open_buffer(tmp_path)
        assert info.value.reason == "I/O error"
    # closed: it can be opened again
    open_buffer(tmp_path).close()


def test_closed_buffer_raises_and_open_lease_is_returned(tmp_path):
    buf = open_buffer(tmp_path)
    buf.append("imu", b"abc")
    lease = buf.lease(1 << 20)
    buf.close()
    assert buf.closed
    with pytest.raises(fleetpipe.Error):
        buf.stats()
    with pytest.raises(fleetpipe.Error):
        lease.records  # noqa: B018  (released by close)
    again = open_buffer(tmp_path)
    assert again.stats()["records"] == 1
    again.close()


def test_state_table_and_read_payload(tmp_path):
    with open_buffer(tmp_path) as buf:
        buf.put_state("uploader/x", b"\x00\x01")
        assert buf.get_state("uploader/x") == b"\x00\x01"
        assert buf.get_state("absent") is None
        assert buf.list_state("uploader/") == [("uploader/x", b"\x00\x01")]
        buf.erase_state("uploader/x")
        assert buf.list_state() == []
        rid = buf.append("cam", bytes(range(256)) * 64)["id"]
        assert buf.read_payload(rid, 256, 4) == bytes([0, 1, 2, 3])
        with pytest.raises(fleetpipe.Error) as info:
            buf.read_payload(rid + 1000)
        assert info.value.reason == "not found"


def test_append_staged_is_written_by_later_polls(tmp_path):
    payload = bytes(range(256)) * 2400  # 600 KiB: three chunks
    with open_buffer(tmp_path, durability="interval") as buf:
        out = buf.append_staged("camera", payload, event_id="e1", priority=3)
        assert out["accepted"] and out["id"] > 0
        assert buf.stats()["staged"] == 1 and buf.stats()["records"] == 0
        for _ in range(3):
            buf.poll()
        assert buf.stats()["staged"] == 0 and buf.stats()["records"] == 1
        assert buf.read_payload(out["id"], 0, len(payload)) == payload


def test_inspect_buffer_summarises_without_the_writer(tmp_path):
    with open_buffer(tmp_path) as buf:
        buf.append("imu", b"a" * 100, priority=3)
        buf.append("cam", b"b" * 100, priority=5)
        buf.flush()
        report = fleetpipe.inspect_buffer(str(tmp_path / "db"))
    assert report["records"] == 2
    assert sorted(u["stream"] for u in report["usage"]) == ["cam", "imu"]
    with pytest.raises(fleetpipe.Error) as info:
        fleetpipe.inspect_buffer(str(tmp_path / "nothing-here"))
    assert info.value.reason == "not found"


def test_unpark_returns_parked_records_to_the_queue(tmp_path):
    with open_buffer(tmp_path) as buf:
        ids = [buf.append("imu", b"p%d" % i, priority=2)["id"] for i in range(3)]
        buf.park(ids[:2], "NoSuchBucket")
        buf.park(ids[2:], "too_large")
        assert buf.stats()["parked"] == 3
        assert buf.unpark("AccessDenied") == 0
        assert buf.unpark("NoSuchBucket") == 2
        with buf.lease(1 << 20) as lease:
            assert [r["id"] for r in lease.records] == ids[:2]
        assert buf.unpark() == 1
        assert buf.stats()["parked"] == 0
        assert buf.metrics.sum("fleetpipe_buffer_unparked_total") == 3
        buf.park(ids[:1], "NoSuchBucket")
    # a restart retries what was parked
    with open_buffer(tmp_path) as buf:
        assert buf.stats()["parked"] == 0
        with buf.lease(1 << 20) as lease:
            assert len(lease.records) == 3
