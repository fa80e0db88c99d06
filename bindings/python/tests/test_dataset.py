"""fleetpipe.Dataset and Section.array() against events really captured and uploaded to the real
S3 server (feed_helpers.FLEET): the dataset matches the query one for one, filters by trigger,
campaign and labels, caches on disk, shuffles deterministically, shards across DataLoader
workers, and skips bad objects planted in the bucket with a counted reason."""
import json
import logging
import os
import pickle
import struct
import subprocess

import numpy as np
import pytest

import fleetpipe
from feed_helpers import FLEET, fleet_bucket, reader_args, upload_fleet
from fp_helpers import bucket_args, clean_env


@pytest.fixture(scope="module")
def feed(s3, s3_client, tmp_path_factory):
    """A bucket with the FLEET uploaded once for the tests of this module."""
    return fleet_bucket(s3, s3_client, tmp_path_factory, "fp-feed-%d" % os.getpid())


def rows_of(payload, stream):
    """The pure-Python decoder's rows of one stream, as an array to compare with."""
    (ev,) = fleetpipe.decode_events(payload)
    return np.array(ev.section(stream).rows, dtype=float).reshape(-1, ev.section(stream).width)


def test_section_array_is_a_view_of_the_bytes_equal_to_the_rows(feed):
    brake = next(p for m, p in feed["captured"].values() if "hard_brake" in m["trigger_ids"])
    data = bytearray(brake)
    (ev,) = fleetpipe.decode_events(data)
    imu, env, cam = ev.section("imu"), ev.section("env"), ev.section("camera")
    assert env.meta["compression"] == "zstd" and imu.meta["compression"] == "none"
    for sec in (imu, env):
        arr = sec.array()
        assert arr.shape == (sec.count, 1 + len(sec.channels)) and arr.dtype == np.float64
        assert np.array_equal(arr, np.array(sec.rows))
    arr = imu.array()
    assert not arr.flags.owndata
    # no copy: the array reads the event's own bytes (header, index, then the section)
    index_len = struct.unpack_from("<I", data, 8)[0]
    pos = 24 + index_len + int(imu.meta["offset"]) + 8  # row 0, column 1
    assert data[pos:pos + 8] == np.float64(arr[0, 1]).tobytes()
    data[pos:pos + 8] = np.float64(-1234.5).tobytes()
    assert arr[0, 1] == -1234.5
    times, blobs = cam.array()
    assert list(times) == [t for t, _ in cam.blobs] and blobs == [b for _, b in cam.blobs]


def test_dataset_matches_the_query_one_for_one_and_the_decoder(s3, feed):
    reader = fleetpipe.BucketReader(**feed["args"])
    query = reader.query()
    ds = fleetpipe.Dataset(feed["args"], torch=False)
    samples = list(ds)
    assert len(samples) == len(query) == len(feed["captured"])
    assert [(s["meta"]["object_key"], s["meta"]["offset"], s["meta"]["event_id"]) for s in samples] == \
        [(e["object_key"], e["offset"], e["event_id"]) for e in query]
    for s in samples:
        meta, payload = feed["captured"][s["meta"]["event_id"]]
        assert s["meta"]["triggers"] == meta["trigger_ids"] and s["meta"]["device"] == meta["device"]
        (ev,) = fleetpipe.decode_events(payload)
        assert sorted(s["arrays"]) == sorted(x.stream for x in ev.sections if x.kind == "numeric")
        for stream, arr in s["arrays"].items():
            assert np.array_equal(arr, rows_of(payload, stream))
        for stream, blobs in s["blobs"].items():
            assert blobs == ev.section(stream).blobs
        device = s["meta"]["device"]
        campaign, labels = FLEET[device][2], FLEET[device][3]
        assert s["meta"]["labels"] == labels
        assert (s["meta"]["campaign_id"], s["meta"]["campaign_version"]) == (campaign or (None, None))
        assert s["meta"]["etag"] and s["meta"]["manifest_key"]
    st = ds.stats()
    assert st["events"] == len(query) and st["skipped_total"] == 0 and st["gets"] == len(query)


def test_dataset_matches_the_fleetpipe_query_command(s3, feed, cli):
    out = subprocess.run([cli, "query", "--json"] + bucket_args(s3, feed["bucket"]),
                         capture_output=True, text=True, env=clean_env(), check=True)
    lines = [json.loads(l) for l in out.stdout.splitlines() if l.strip()]
    ds = fleetpipe.Dataset(feed["args"], torch=False, parallel=4)
    assert [(s["meta"]["object_key"], s["meta"]["offset"], s["meta"]["event_id"]) for s in ds] == \
        [(l["object_key"], l["offset"], l["event_id"]) for l in lines]


def ids(ds):
    return sorted(s["meta"]["event_id"] for s in ds)


def test_filters_by_trigger_campaign_labels_and_streams(feed):
    cap = feed["captured"]

    def expect(pred):
        return sorted(eid for eid, (m, _) in cap.items() if pred(m))

    a = feed["args"]
    assert ids(fleetpipe.Dataset(a, trigger="flag", torch=False)) == \
        expect(lambda m: "flag" in m["trigger_ids"])
    assert ids(fleetpipe.Dataset(a, campaign="brakes", torch=False)) == \
        expect(lambda m: FLEET[m["device"]][2] is not None)
    assert ids(fleetpipe.Dataset(a, campaign="brakes@2", torch=False)) == \
        expect(lambda m: FLEET[m["device"]][2] == ("brakes", 2))
    assert ids(fleetpipe.Dataset(a, campaign=["brakes@1", ("brakes", 2)], torch=False)) == \
        expect(lambda m: FLEET[m["device"]][2] is not None)
    assert ids(fleetpipe.Dataset(a, campaign="other", torch=False)) == []
    assert ids(fleetpipe.Dataset(a, labels={"site": "store-01", "model": "v3"}, torch=False)) == \
        expect(lambda m: m["device"] == "cart-0001")
    assert ids(fleetpipe.Dataset(a, labels=["site=store-0*"], trigger="hard_brake", torch=False)) == \
        expect(lambda m: "hard_brake" in m["trigger_ids"])
    assert ids(fleetpipe.Dataset(a, labels={"region": "*"}, torch=False)) == []
    assert len(list(fleetpipe.Dataset(a, limit=2, torch=False))) == 2
    only_env = list(fleetpipe.Dataset(a, trigger="hard_brake", streams=["env"], torch=False))
    assert only_env and all(list(s["arrays"]) == ["env"] and s["blobs"] == {} for s in only_env)
    lists = next(iter(fleetpipe.Dataset(a, trigger="hard_brake", arrays=False, torch=False)))
    assert isinstance(lists["arrays"]["imu"], list) and isinstance(lists["arrays"]["imu"][0], tuple)
    for bad, words in (({"campaign": "brakes@two"}, "ID@VERSION"), ({"labels": ["site"]}, "name=glob"),
                       ({"shard": (2, 2)}, "index < count")):
        with pytest.raises(ValueError, match=words):
            fleetpipe.Dataset(a, torch=False, **bad)


def test_disk_cache_serves_a_second_pass_and_stays_under_its_cap(feed, tmp_path):
    cache = tmp_path / "cache"
    first = fleetpipe.Dataset(feed["args"], cache_dir=str(cache), torch=False)
    a = [(s["key"], s["arrays"]["imu"].tobytes() if "imu" in s["arrays"] else b"") for s in first]
    assert first.stats()["gets"] == len(a) and first.stats()["cache_hits"] == 0
    second = fleetpipe.Dataset(feed["args"], cache_dir=str(cache), torch=False)
    b = [(s["key"], s["arrays"]["imu"].tobytes() if "imu" in s["arrays"] else b"") for s in second]
    assert a == b
    assert second.stats()["gets"] == 0 and second.stats()["cache_hits"] == len(a)
    # the key holds the ETag: an entry whose object changed is not served from the cache
    third = fleetpipe.Dataset(feed["args"], cache_dir=str(cache), torch=False)
    third.entries()[0]["etag"] = "0123-not-the-etag"
    list(third)
    assert third.stats()["gets"] == 1 and third.stats()["cache_hits"] == len(a) - 1
    sizes = sorted(e["length"] for e in first.entries())
    cap = sizes[-1] + sizes[-2]  # room for two events only
    small = fleetpipe.Dataset(feed["args"], cache_dir=str(tmp_path / "small"), cache_max_bytes=cap,
                              torch=False)
    assert len(list(small)) == len(a)
    assert 0 < small.cache.size() <= cap


def test_shuffle_is_deterministic_by_seed_and_shards_are_disjoint(feed):
    a = feed["args"]

    def order(**kw):
        return [s["key"] for s in fleetpipe.Dataset(a, shuffle=True, torch=False, **kw)]

    plain = [s["key"] for s in fleetpipe.Dataset(a, torch=False)]
    assert order(seed=7) == order(seed=7)
    assert sorted(order(seed=7)) == sorted(plain)
    assert any(order(seed=s) != order(seed=7) for s in (8, 9, 10))
    ds = fleetpipe.Dataset(a, shuffle=True, seed=7, torch=False)
    ds.set_epoch(1)
    assert [s["key"] for s in ds] != order(seed=7) or len(plain) < 3
    halves = [order(seed=3, shard=(i, 2)) for i in range(2)]
    assert not set(halves[0]) & set(halves[1])
    assert sorted(halves[0] + halves[1]) == sorted(plain)


def test_dataloader_with_two_workers_sees_every_event_exactly_once(feed):
    torch = pytest.importorskip("torch", reason="python3-torch is not installed (scripts/setup-deps)")
    from torch.utils.data import DataLoader
    ds = fleetpipe.Dataset(feed["args"], shuffle=True, seed=1)
    assert isinstance(ds, torch.utils.data.IterableDataset)
    expected = sorted(s["key"] for s in fleetpipe.Dataset(feed["args"], torch=False))
    assert len(ds) == len(expected)  # listed once, before the workers start
    seen = []
    for sample in DataLoader(ds, batch_size=None, num_workers=2):
        seen.append(sample["key"])
        assert isinstance(sample["arrays"].get("imu", sample["arrays"].get("env", None)),
                          (torch.Tensor, type(None)))
    assert sorted(seen) == expected and len(set(seen)) == len(seen)


def test_pickles_for_spawned_workers_unless_made_from_a_reader_object(feed):
    ds = fleetpipe.Dataset(feed["args"], shuffle=True, seed=5, torch=False)
    keys = [s["key"] for s in ds]
    clone = pickle.loads(pickle.dumps(ds))
    assert [s["key"] for s in clone] == keys and clone.stats()["gets"] == len(keys)
    shared = fleetpipe.Dataset(fleetpipe.BucketReader(**feed["args"]), parallel=8, torch=False)
    assert sorted(s["key"] for s in shared) == sorted(keys)  # sequential on the one reader
    with pytest.raises(TypeError, match="keyword arguments"):
        pickle.dumps(shared)


def plant(s3_client, bucket, key, body, events="ev-x", triggers="hard_brake"):
    s3_client.put_object(Bucket=bucket, Key=key, Body=body, Metadata={
        "fleetpipe-trigger-ids": triggers, "fleetpipe-event-ids": events,
        "fleetpipe-start-ns": str(1793613600 * 10**9), "fleetpipe-end-ns": str(1793613610 * 10**9),
        "fleetpipe-record-count": "1"})


def test_bad_objects_are_skipped_counted_and_logged(tmp_path, s3, s3_client, bucket, caplog):
    captured = upload_fleet(tmp_path, s3, bucket)
    args = reader_args(s3, bucket)
    entries = fleetpipe.BucketReader(**args).query()
    by_object = {}
    for e in entries:
        by_object.setdefault(e["object_key"], []).append(e)
    packed = max(by_object, key=lambda k: len(by_object[k]))
    others = [k for k in by_object if k != packed]
    # truncated: the packed object cut in the middle of its last event
    body = s3_client.get_object(Bucket=bucket, Key=packed)["Body"].read()
    last = max(by_object[packed], key=lambda e: e["offset"])
    s3_client.put_object(Bucket=bucket, Key=packed, Body=body[:last["offset"] + last["length"] // 2])
    # vanished: an object the manifests still name
    gone = others[0]
    s3_client.delete_object(Bucket=bucket, Key=gone)
    part = "fleetpipe/stream=imu/date=2026-11-02/device=cart-0900/"
    good = next(p for m, p in captured.values())
    plant(s3_client, bucket, part + "20261102T100000.000Z-0000000000000001.fpev", b"\x00garbage" * 9)
    future = bytearray(good)
    future[4:6] = (9).to_bytes(2, "little")
    plant(s3_client, bucket, part + "20261102T100001.000Z-0000000000000002.fpev", bytes(future))
    plant(s3_client, bucket, part + "20261102T100002.000Z-0000000000000003.fpev", good[:len(good) - 7])

    ds = fleetpipe.Dataset(args, since="2026-11-01", torch=False)
    with caplog.at_level(logging.WARNING, logger="fleetpipe.dataset"):
        samples = list(ds)
    st = ds.stats()
    expected_skips = {"truncated": 1 + 1, "vanished": len(by_object[gone]), "corrupt": 1,
                      "unknown_version": 1, "fetch_error": 0}
    assert st["skipped"] == expected_skips
    assert len(samples) == len(entries) - 1 - len(by_object[gone])
    whole = {packed} if len(by_object[packed]) == 1 else set()
    assert {s["meta"]["object_key"] for s in samples} == set(by_object) - {gone} - whole
    logged = [r.getMessage() for r in caplog.records if r.name == "fleetpipe.dataset"]
    assert len(logged) == sum(expected_skips.values())
    assert any(gone in m and "vanished" in m for m in logged)
    assert any("unknown_version" in m and "unsupported version 9" in m for m in logged)
    assert not any(s3["S3_SECRET_KEY"] in m for m in logged)
