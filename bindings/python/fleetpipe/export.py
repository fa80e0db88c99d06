"""WebDataset export of a Dataset: tar shards, resumable, with a lineage file.

    python3 -m fleetpipe.export --format webdataset --out DIR [bucket options] [filters]
    fleetpipe.export.export_webdataset(dataset, "DIR", shard_max_bytes=256 << 20)

``DIR/shard-000000.tar`` … hold, per event, ``<key>.json`` (the sample's metadata and source),
``<key>.<stream>.npy`` per numeric stream (float64, rows x (t + channels)) and
``<key>.<stream>.<n>.<ext>`` per blob (``jpg`` for image/jpeg, …); ``<key>`` is
``<device>_<event_id>`` with no dot. ``DIR/lineage.jsonl`` has one line per sample: its shard,
source object, byte range, ETag, manifest, campaign id and version, device labels.
``DIR/export.json`` is the state (what is done, so that a rerun resumes after an interruption)
and, once complete, the summary (sources, manifests, campaign versions, devices' labels).
"""
import argparse
import hashlib
import io
import json
import os
import sys
import tarfile

from .dataset import Dataset, safe_name

__all__ = ["export_webdataset", "main", "FORMAT"]

FORMAT = "fleetpipe.export/1"
STATE = "export.json"
LINEAGE = "lineage.jsonl"

_EXT = {"image/jpeg": "jpg", "image/png": "png", "image/webp": "webp", "application/json": "json",
        "text/plain": "txt", "audio/wav": "wav", "audio/x-wav": "wav"}


class ExportError(RuntimeError):
    """The output directory holds another export (or cannot be written)."""


def _selection_digest(entries):
    h = hashlib.sha256()
    for e in entries:
        h.update(json.dumps([e["object_key"], int(e.get("offset", 0)), int(e.get("length", 0)),
                             e.get("etag")]).encode())
    return h.hexdigest()


def _write_json_atomic(path, doc):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(doc, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _members(sample):
    """(name, bytes) of one sample's files."""
    import numpy  # noqa: PLC0415 - the feed's one dependency
    key, meta = sample["key"], dict(sample["meta"])
    files = []
    meta["files"] = []
    meta["blob_times"] = {}
    for stream, arr in sorted(sample["arrays"].items()):
        buf = io.BytesIO()
        numpy.save(buf, numpy.asarray(arr, dtype="<f8"), allow_pickle=False)
        name = "%s.%s.npy" % (key, safe_name(stream))
        files.append((name, buf.getvalue()))
    for stream, blobs in sorted(sample["blobs"].items()):
        ext = _EXT.get(meta["content_types"].get(stream, ""), "bin")
        safe = safe_name(stream)
        meta["blob_times"][stream] = [t for t, _ in blobs]
        for n, (_, blob) in enumerate(blobs):
            files.append(("%s.%s.%d.%s" % (key, safe, n, ext), blob))
    meta["files"] = [name for name, _ in files]
    head = ("%s.json" % key, json.dumps(meta, sort_keys=True).encode())
    return [head] + files


def _unique(sample, used):
    """The sample, renamed "<key>_dup<n>" when its key is taken (the same event delivered twice
    and not curated out): WebDataset would merge two samples of one name."""
    key, n = sample["key"], 1
    while key in used:
        key = "%s_dup%d" % (sample["key"], n)
        n += 1
    used.add(key)
    if key != sample["key"]:
        sample = dict(sample, key=key, meta=dict(sample["meta"], key=key))
    return sample


def _lineage(sample, shard):
    m = sample["meta"]
    return {"key": sample["key"], "shard": shard, "event_id": m["event_id"], "device": m["device"],
            "object_key": m["object_key"], "offset": m["offset"], "length": m["length"],
            "etag": m["etag"], "manifest_key": m["manifest_key"], "campaign_id": m["campaign_id"],
            "campaign_version": m["campaign_version"], "labels": m["labels"],
            "triggers": m["triggers"], "start_ns": m["start_ns"], "end_ns": m["end_ns"]}


def _summary(lineage_path):
    sources, manifests, campaigns, devices, samples = set(), set(), {}, {}, 0
    with open(lineage_path) as f:
        for line in f:
            rec = json.loads(line)
            samples += 1
            sources.add(rec["object_key"])
            if rec["manifest_key"]:
                manifests.add(rec["manifest_key"])
            if rec["campaign_id"] is not None:
                campaigns.setdefault(rec["campaign_id"], set()).add(rec["campaign_version"])
            devices.setdefault(rec["device"], rec["labels"])
    return {"samples": samples, "sources": sorted(sources), "manifests": sorted(manifests),
            "campaigns": {k: sorted(v, key=lambda x: (x is None, x)) for k, v in campaigns.items()},
            "devices": devices}


class _Shard:
    def __init__(self, out, name):
        self.name = name
        self.path = os.path.join(out, name)
        self.partial = self.path + ".partial"
        self.tar = tarfile.open(self.partial, "w", format=tarfile.PAX_FORMAT)
        self.bytes = 0
        self.samples = 0
        self.lineage = []

    def add(self, sample):
        mtime = int((sample["meta"]["start_ns"] or 0) // 10**9)
        for name, data in _members(sample):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = mtime
            self.tar.addfile(info, io.BytesIO(data))
            self.bytes += 512 + (len(data) + 511) // 512 * 512
        self.samples += 1
        self.lineage.append(_lineage(sample, self.name))

    def commit(self):
        self.tar.close()
        with open(self.partial, "rb") as f:
            os.fsync(f.fileno())
        os.replace(self.partial, self.path)


def export_webdataset(dataset, out, shard_max_bytes=256 << 20, shard_max_samples=10000,
                      name="shard", overwrite=False):
    """Writes the dataset's events (in its order; shuffle it with a seed for a shuffled export)
    as WebDataset shards under ``out``; resumes a previous, interrupted run of the same
    selection. A shard closes once it holds ``shard_max_bytes`` or ``shard_max_samples`` (an
    event never spans two shards). Bad events are skipped and counted (the dataset's reasons).

    Returns the report (also in out/export.json): shards, samples, skipped, resumed_at.
    Raises ExportError when ``out`` holds the export of another selection (``overwrite=True``
    starts over)."""
    os.makedirs(out, exist_ok=True)
    entries = dataset.entries()
    order = [entries[i] for i in dataset.order((0, 1))]
    digest = _selection_digest(order)
    state_path, lineage_path = os.path.join(out, STATE), os.path.join(out, LINEAGE)
    state = None
    if os.path.exists(state_path) and not overwrite:
        with open(state_path) as f:
            state = json.load(f)
        if state.get("format") != FORMAT or state.get("selection") != digest:
            raise ExportError("%s holds the export of another selection (overwrite=True, or "
                              "--overwrite, to start over)" % out)
    if state is None:
        state = {"format": FORMAT, "selection": digest, "entries": len(order), "next_entry": 0,
                 "lineage_bytes": 0, "shards": [], "skipped": {}, "complete": False}
        for stale in os.listdir(out):
            if stale == LINEAGE or (stale.startswith(name + "-") and ".tar" in stale):
                os.unlink(os.path.join(out, stale))
    resumed_at = state["next_entry"]
    with open(lineage_path, "a+b") as f:  # lines after the last committed shard are dropped
        f.truncate(state["lineage_bytes"])
    for stale in os.listdir(out):
        if stale.endswith(".partial"):
            os.unlink(os.path.join(out, stale))
    before = dict(dataset.stats()["skipped"])

    used = set()  # sample keys already in the export (the same event twice must not merge)
    with open(lineage_path) as f:
        for line in f:
            used.add(json.loads(line)["key"])
    position = {id(e): i for i, e in enumerate(order)}
    shard = None

    def commit(next_entry):
        shard.commit()
        with open(lineage_path, "ab") as f:
            for rec in shard.lineage:
                f.write((json.dumps(rec, sort_keys=True) + "\n").encode())
            f.flush()
            os.fsync(f.fileno())
            state["lineage_bytes"] = f.tell()
        state["shards"].append({"name": shard.name, "samples": shard.samples, "bytes": shard.bytes})
        state["next_entry"] = next_entry
        now = dataset.stats()["skipped"]
        for r, n in now.items():
            state["skipped"][r] = state["skipped"].get(r, 0) + n - before.get(r, 0)
        before.update(now)
        _write_json_atomic(state_path, state)

    for entry, data in dataset.fetched(order[resumed_at:]):
        samples = dataset.decode(entry, data)
        if not samples:
            continue
        if shard is None:
            shard = _Shard(out, "%s-%06d.tar" % (name, len(state["shards"])))
        for s in samples:
            shard.add(_unique(s, used))
        if shard.bytes >= shard_max_bytes or shard.samples >= shard_max_samples:
            commit(position[id(entry)] + 1)
            shard = None
    if shard is not None:
        commit(len(order))
    state["next_entry"] = len(order)
    now = dataset.stats()["skipped"]
    for r, n in now.items():
        state["skipped"][r] = state["skipped"].get(r, 0) + n - before.get(r, 0)
    state["complete"] = True
    state["summary"] = _summary(lineage_path)
    _write_json_atomic(state_path, state)
    return {"out": out, "shards": [s["name"] for s in state["shards"]],
            "samples": state["summary"]["samples"], "skipped": state["skipped"],
            "resumed_at": resumed_at, "entries": len(order)}


# ---- command line ----------------------------------------------------------------------------

def _size(text):
    mult = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    t = text.strip().lower().rstrip("b").rstrip("i")
    if t and t[-1] in mult:
        return int(float(t[:-1]) * mult[t[-1]])
    return int(t)


def _parser():
    p = argparse.ArgumentParser(prog="fleetpipe export",
                                description="Export matching events as WebDataset tar shards.")
    p.add_argument("--format", default="webdataset", choices=["webdataset"])
    p.add_argument("--out", required=True, help="output directory (reruns resume)")
    p.add_argument("--shard-size", type=_size, default=256 << 20, help="bytes per shard (256M)")
    p.add_argument("--shard-samples", type=int, default=10000, help="events per shard at most")
    p.add_argument("--overwrite", action="store_true", help="start over in a used directory")
    p.add_argument("--cache-dir", help="disk cache of fetched events")
    p.add_argument("--parallel", type=int, default=8, help="GETs in flight")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    for flag in ("config", "endpoint", "bucket", "region", "prefix", "ca-file", "connect-address",
                 "access-key", "secret-key", "session-token"):
        p.add_argument("--" + flag)
    p.add_argument("--allow-insecure-http", action="store_true")
    p.add_argument("--trigger", action="append")
    p.add_argument("--campaign", action="append", help="ID or ID@VERSION")
    p.add_argument("--label", action="append", help="NAME=GLOB")
    p.add_argument("--stream", action="append", help="the objects' stream (as fleetpipe query)")
    p.add_argument("--device")
    p.add_argument("--since")
    p.add_argument("--until")
    p.add_argument("--min-priority", type=int, default=0)
    p.add_argument("--limit", type=int, default=0)
    p.add_argument("--shuffle-seed", type=int, help="shuffle the events (deterministically)")
    return p


def main(argv=None):
    args = _parser().parse_args(argv)
    from ._errors import Error  # noqa: PLC0415
    reader = {k: getattr(args, k) for k in ("config", "endpoint", "bucket", "region", "prefix",
                                            "ca_file", "connect_address", "access_key",
                                            "secret_key", "session_token")
              if getattr(args, k) is not None}
    if args.allow_insecure_http:
        reader["allow_insecure_http"] = True
    try:
        ds = Dataset(reader, trigger=args.trigger, campaign=args.campaign, labels=args.label,
                     stream=args.stream, device=args.device, since=args.since, until=args.until,
                     min_priority=args.min_priority, limit=args.limit,
                     shuffle=args.shuffle_seed is not None, seed=args.shuffle_seed or 0,
                     parallel=args.parallel, cache_dir=args.cache_dir, torch=False)
        report = export_webdataset(ds, args.out, shard_max_bytes=args.shard_size,
                                   shard_max_samples=args.shard_samples, overwrite=args.overwrite)
    except (Error, ValueError) as e:
        sys.stderr.write("fleetpipe export: %s\n" % e)
        return 2 if isinstance(e, ValueError) or getattr(e, "code", 0) in (1, 2) else 1
    except (ExportError, OSError) as e:
        sys.stderr.write("fleetpipe export: %s\n" % e)
        return 1
    if args.json:
        print(json.dumps(report, sort_keys=True))
    else:
        print("%d events in %d shard(s) under %s (resumed at entry %d; skipped %s)" % (
            report["samples"], len(report["shards"]), report["out"], report["resumed_at"],
            {k: v for k, v in report["skipped"].items() if v} or "none"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
