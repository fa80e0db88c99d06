"""WebDataset export and curation over events really uploaded to the real S3 server: shards read
back with tarfile + numpy equal the decoder's arrays, the lineage names every sample's source,
an interrupted export resumes to the same shards, and curation reports what it removed."""
import io
import json
import os
import subprocess
import sys
import tarfile

import numpy as np
import pytest

import fleetpipe
from feed_helpers import FLEET, fleet_bucket
from fleetpipe.export import ExportError
from fp_helpers import bucket_args, clean_env


@pytest.fixture(scope="module")
def feed(s3, s3_client, tmp_path_factory):
    """A bucket with the FLEET uploaded once for the tests of this module."""
    return fleet_bucket(s3, s3_client, tmp_path_factory, "fp-export-%d" % os.getpid())


def read_shards(out):
    """{shard: {member name: bytes}} of every shard in `out`."""
    shards = {}
    for name in sorted(os.listdir(out)):
        if name.endswith(".tar"):
            with tarfile.open(os.path.join(out, name)) as tar:
                shards[name] = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
    return shards


def test_shards_read_back_with_tarfile_and_numpy_equal_the_decoder(feed, tmp_path):
    out = str(tmp_path / "wds")
    ds = fleetpipe.Dataset(feed["args"], torch=False)
    report = fleetpipe.export_webdataset(ds, out, shard_max_samples=3)
    n = len(feed["captured"])
    assert report["samples"] == n and report["resumed_at"] == 0
    shards = read_shards(out)
    assert list(shards) == ["shard-%06d.tar" % i for i in range((n + 2) // 3)] == report["shards"]
    members = {k: v for files in shards.values() for k, v in files.items()}
    lineage = [json.loads(l) for l in open(os.path.join(out, "lineage.jsonl"))]
    assert len(lineage) == n
    for rec in lineage:
        meta, payload = feed["captured"][rec["event_id"]]
        (ev,) = fleetpipe.decode_events(payload)
        key = rec["key"]
        assert "." not in key and rec["key"] + ".json" in shards[rec["shard"]]
        doc = json.loads(members[key + ".json"])
        assert doc["event_id"] == rec["event_id"] and doc["triggers"] == meta["trigger_ids"]
        for sec in ev.sections:
            if sec.kind == "numeric":
                arr = np.load(io.BytesIO(members["%s.%s.npy" % (key, sec.stream)]))
                assert np.array_equal(arr, np.array(sec.rows)) and arr.shape[1] == 1 + len(sec.channels)
            else:
                for i, (_, blob) in enumerate(sec.blobs):
                    assert members["%s.%s.%d.jpg" % (key, sec.stream, i)] == blob
                assert doc["blob_times"][sec.stream] == [t for t, _ in sec.blobs]
        campaign, labels = FLEET[rec["device"]][2], FLEET[rec["device"]][3]
        assert rec["labels"] == labels and rec["etag"] and rec["manifest_key"]
        assert (rec["campaign_id"], rec["campaign_version"]) == (campaign or (None, None))
        assert rec["object_key"].startswith("fleetpipe/stream=")
    state = json.load(open(os.path.join(out, "export.json")))
    assert state["complete"] and state["summary"]["samples"] == n
    assert state["summary"]["campaigns"] == {"brakes": [1, 2]}
    assert state["summary"]["devices"] == {d: v[3] for d, v in FLEET.items()}
    assert set(state["summary"]["sources"]) == {r["object_key"] for r in lineage}


def test_shard_size_in_bytes_closes_shards(feed, tmp_path):
    out = str(tmp_path / "wds")
    report = fleetpipe.export_webdataset(fleetpipe.Dataset(feed["args"], torch=False), out,
                                         shard_max_bytes=1)
    assert len(report["shards"]) == len(feed["captured"])  # one event each: none is split
    assert all(len({m.split(".")[0] for m in files}) == 1 for files in read_shards(out).values())


def test_an_interrupted_export_resumes_to_the_same_shards(feed, tmp_path):
    clean = str(tmp_path / "clean")
    fleetpipe.export_webdataset(fleetpipe.Dataset(feed["args"], torch=False), clean, shard_max_samples=2)
    out = str(tmp_path / "resumed")
    ds = fleetpipe.Dataset(feed["args"], torch=False)
    real_decode, calls = ds.decode, []

    def dying_decode(entry, data):
        calls.append(entry)
        if len(calls) == 4:
            raise KeyboardInterrupt  # the run is killed while its third shard is open
        return real_decode(entry, data)

    ds.decode = dying_decode
    with pytest.raises(KeyboardInterrupt):
        fleetpipe.export_webdataset(ds, out, shard_max_samples=2)
    assert len(read_shards(out)) == 1
    assert sum(1 for _ in open(os.path.join(out, "lineage.jsonl"))) == 2
    report = fleetpipe.export_webdataset(fleetpipe.Dataset(feed["args"], torch=False), out,
                                         shard_max_samples=2)
    assert report["resumed_at"] == 2
    assert read_shards(out) == read_shards(clean)
    assert open(os.path.join(out, "lineage.jsonl")).read() == \
        open(os.path.join(clean, "lineage.jsonl")).read()
    with pytest.raises(ExportError):
        fleetpipe.export_webdataset(fleetpipe.Dataset(feed["args"], trigger="flag", torch=False), out)
    again = fleetpipe.export_webdataset(fleetpipe.Dataset(feed["args"], trigger="flag", torch=False),
                                        out, overwrite=True)
    assert again["samples"] == sum(1 for m, _ in feed["captured"].values() if "flag" in m["trigger_ids"])
    assert len(read_shards(out)) == len(again["shards"])


def test_export_command_line(s3, feed, tmp_path):
    out = str(tmp_path / "cli")
    env = clean_env()
    env["PYTHONPATH"] = os.path.dirname(os.path.dirname(fleetpipe.__file__))
    cmd = [sys.executable, "-m", "fleetpipe.export", "--format", "webdataset", "--out", out,
           "--trigger", "hard_brake", "--label", "site=store-01", "--shard-size", "1M", "--json"]
    run = subprocess.run(cmd + bucket_args(s3, feed["bucket"]), capture_output=True, text=True,
                         env=env, check=False)
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    want = [e for e, (m, _) in feed["captured"].items()
            if "hard_brake" in m["trigger_ids"] and FLEET[m["device"]][3]["site"] == "store-01"]
    assert report["samples"] == len(want) and report["shards"] == ["shard-000000.tar"]
    assert s3["S3_SECRET_KEY"] not in run.stdout + run.stderr
    bad = subprocess.run(cmd[:-1] + ["--label", "nolabel"] + bucket_args(s3, feed["bucket"]),
                         capture_output=True, text=True, env=env, check=False)
    assert bad.returncode == 2 and "name=glob" in bad.stderr


def test_fleetpipe_export_subcommand(s3, feed, tmp_path, cli):
    out = str(tmp_path / "sub")
    env = clean_env()
    env["FLEETPIPE_PYTHONPATH"] = os.path.dirname(os.path.dirname(fleetpipe.__file__))
    run = subprocess.run([cli, "export", "--format", "webdataset", "--out", out, "--campaign",
                          "brakes@2"] + bucket_args(s3, feed["bucket"]),
                         capture_output=True, text=True, env=env, check=False)
    assert run.returncode == 0, run.stderr
    lineage = [json.loads(l) for l in open(os.path.join(out, "lineage.jsonl"))]
    assert lineage and {r["device"] for r in lineage} == {"cart-0002"}


def test_balance_across_triggers_and_labels_reports_what_it_removed(feed):
    ds = fleetpipe.Dataset(feed["args"], torch=False)
    first = [e["trigger_ids"][0] for e in ds.entries()]
    balanced, report = fleetpipe.balance(ds, by="trigger", seed=1)
    smallest = min(first.count(t) for t in set(first))
    assert report["per_group"] == smallest
    kept = [e["trigger_ids"][0] for e in balanced.entries()]
    assert {t: kept.count(t) for t in set(kept)} == {t: smallest for t in set(first)}
    assert len(report["removed"]) == len(first) - len(kept)
    assert {g: v["removed"] for g, v in report["groups"].items()} == \
        {t: first.count(t) - smallest for t in set(first)}
    assert fleetpipe.balance(ds, by="trigger", seed=1)[0].entries() == balanced.entries()
    sites, rep = fleetpipe.balance(ds, by="label:site", per_group=2, seed=0)
    counts = {}
    for s in sites:
        counts[s["meta"]["labels"]["site"]] = counts.get(s["meta"]["labels"]["site"], 0) + 1
    assert counts == {"store-01": 2, "store-02": 2}
    assert rep["groups"]["store-01"]["available"] == sum(
        1 for m, _ in feed["captured"].values() if FLEET[m["device"]][3]["site"] == "store-01")


def test_remove_duplicates_finds_reuploads_and_identical_content(s3, s3_client, feed, tmp_path):
    bucket = feed["bucket"]
    ds = fleetpipe.Dataset(feed["args"], torch=False)
    original = ds.entries()[0]
    payload = feed["captured"][original["event_id"]][1]
    part = original["object_key"].rsplit("/", 1)[0] + "/"
    copies = [(part + "29991231T000000.000Z-9999999999999998.fpev", original["event_id"]),
              (part + "29991231T000000.000Z-9999999999999999.fpev", "renamed-copy")]
    for key, event_id in copies:
        s3_client.put_object(Bucket=bucket, Key=key, Body=payload, Metadata={
            "fleetpipe-trigger-ids": ",".join(original["trigger_ids"]),
            "fleetpipe-event-ids": event_id, "fleetpipe-record-count": "1",
            "fleetpipe-start-ns": str(original["start_ns"] + 1), "fleetpipe-end-ns": str(original["end_ns"])})
    try:
        ds = fleetpipe.Dataset(feed["args"], torch=False)
        assert len(ds) == len(feed["captured"]) + 2
        # exported as they are, the two copies of one event stay two samples
        fleetpipe.export_webdataset(ds, str(tmp_path / "dups"))
        names = [n for files in read_shards(str(tmp_path / "dups")).values() for n in files
                 if n.endswith(".json")]
        assert len(names) == len(set(names)) == len(ds)
        assert sorted(n.split(".")[0][-5:] for n in names if "_dup" in n) == ["_dup1", "_dup2"]
        by_id, report = fleetpipe.remove_duplicates(ds, content=False)
        assert [(r["object_key"], r["reason"]) for r in report["removed"]] == \
            [(copies[0][0], "same event id")]
        deduped, report = fleetpipe.remove_duplicates(ds)
        assert sorted((r["object_key"], r["reason"]) for r in report["removed"]) == \
            sorted([(copies[0][0], "same event id"), (copies[1][0], "same content")])
        assert all(r["duplicate_of"]["object_key"] == original["object_key"] for r in report["removed"])
        assert report["kept"] == len(feed["captured"]) == len(list(deduped))
    finally:
        for key, _ in copies:
            s3_client.delete_object(Bucket=bucket, Key=key)
