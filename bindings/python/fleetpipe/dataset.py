"""fleetpipe.Dataset: the events of a bucket as training samples (numpy arrays, blobs, lineage).

    ds = fleetpipe.Dataset(dict(endpoint=..., bucket=..., ca_file=..., access_key=..., secret_key=...),
                           trigger="hard_brake", campaign="brakes@3", labels={"site": "store-01*"},
                           since="2026-11-01", cache_dir="/var/cache/fp", shuffle=True, seed=7)
    for sample in ds:            # or torch.utils.data.DataLoader(ds, batch_size=None, num_workers=4)
        sample["arrays"]["imu"]  # numpy (rows, 1 + channels); column 0 is t
        sample["blobs"]["camera"], sample["meta"]["campaign_version"], sample["meta"]["labels"]

Listing is lazy (the first iteration, len() or entries() runs BucketReader.query plus one LIST
per data partition for the objects' ETags and sizes); event bytes are fetched while iterating,
with ranged GETs in parallel (bounded), through a size-capped disk cache. Bad data (a corrupt
or truncated object, an unknown format version, an object that vanished, a request that failed
after its retries) is skipped with a counted, logged reason. See docs/python.md.
"""
import copy
import json
import logging
import random
import re
import sys

from ._cache import DiskCache
from ._fetch import SKIP_REASONS, Fetcher, ReaderSource
from ._fleetpipe import glob_match
from .event import DecodeError, iter_events

__all__ = ["Dataset", "attribution", "sample_key", "safe_name", "SKIP_REASONS"]

log = logging.getLogger("fleetpipe.dataset")


def attribution(entry):
    """(campaign_id, campaign_version, labels) of a query entry; (None, None, {}) when absent.

    Read from the entry's own fields ``campaign_id`` / ``campaign_version`` / ``labels`` (the
    manifest line's, when the reader passes them on), else from the record metadata under the
    same names (``campaign_version`` a decimal string, ``labels`` JSON text of an object)."""
    md = entry.get("metadata") or {}
    cid = entry.get("campaign_id") or md.get("campaign_id") or None
    ver = entry.get("campaign_version")
    if ver is None:
        ver = md.get("campaign_version")
    try:
        ver = int(ver) if ver not in (None, "") else None
    except (TypeError, ValueError):
        ver = None
    labels = entry.get("labels")
    if labels is None:
        labels = md.get("labels")
    if isinstance(labels, str):
        try:
            labels = json.loads(labels)
        except ValueError:
            labels = None
    if not isinstance(labels, dict):
        labels = {}
    return cid, ver, {str(k): str(v) for k, v in labels.items()}


def _campaign_filter(campaign):
    """[(id, version or None)] from "id", "id@3", ("id", 3) or a list of those."""
    if campaign is None:
        return None
    items = [campaign] if isinstance(campaign, (str, tuple)) else list(campaign)
    out = []
    for c in items:
        if isinstance(c, tuple):
            out.append((str(c[0]), None if c[1] is None else int(c[1])))
        elif "@" in c:
            cid, ver = c.rsplit("@", 1)
            if not ver.isdigit():
                raise ValueError("campaign filter %r: use ID or ID@VERSION (an integer)" % c)
            out.append((cid, int(ver)))
        else:
            out.append((c, None))
    return out


def _label_filter(labels):
    """{name: glob} from a dict or "name=glob" strings."""
    if labels is None:
        return None
    if isinstance(labels, dict):
        return {str(k): str(v) for k, v in labels.items()}
    items = [labels] if isinstance(labels, str) else list(labels)
    out = {}
    for item in items:
        name, sep, pattern = item.partition("=")
        if not sep:
            raise ValueError("label filter %r: use name=glob" % item)
        out[name] = pattern
    return out


_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def safe_name(text):
    """``text`` with every character outside [A-Za-z0-9_-] replaced by "-": no dot, as
    WebDataset splits file names at the first one."""
    return _UNSAFE.sub("-", str(text))


def sample_key(device, event_id):
    """A sample's name: safe_name("<device>_<event_id>")."""
    return safe_name("%s_%s" % (device, event_id))


def _decode_reason(exc):
    text = str(exc)
    if "unsupported version" in text:
        return "unknown_version"
    if "truncated" in text:
        return "truncated"
    return "corrupt"


class Dataset:
    """The events matching every filter, as samples (dicts).

    ``reader``: what fetches go through — a dict of BucketReader keyword arguments (endpoint,
    bucket, ca_file, access_key, secret_key, ...; "config" for a config these override), a
    config (path, dict, Config; as BucketReader(config)), or a callable returning a new BucketReader. Each fetch thread and
    each process gets its own reader. A BucketReader object is accepted too, but then fetches are
    sequential and the Dataset cannot go to DataLoader worker processes.

    Filters: ``trigger`` (name or list, any of), ``campaign`` ("id", "id@version", ("id", v) or a
    list; an event without campaign attribution never matches), ``labels`` ({"site": "store-01*"}
    or ["site=store-01*"]: every name present and matching its glob), ``since`` / ``until``
    (as BucketReader.query), ``device`` (glob), ``stream`` (the object's stream, as query),
    ``min_priority``, ``limit`` (after every filter). ``streams``: the sections a sample
    carries (name or list; default all).

    Iteration: ``shuffle`` with ``seed`` gives the same order on every run and in every
    DataLoader worker (set_epoch(n) changes it per epoch, deterministically); each DataLoader
    worker takes every num_workers-th event of that order, so each event is read exactly once;
    ``shard=(index, count)`` splits further, e.g. by distributed rank. ``parallel`` GETs at a
    time per process (at most 2 x parallel queued). ``cache_dir`` / ``cache_max_bytes``: the disk
    cache (None: no cache). ``arrays=False`` gives numeric sections as lists of row tuples (no
    numpy needed).

    If torch is imported when the Dataset is made (or ``torch=True``), the object is also a
    ``torch.utils.data.IterableDataset``. List before the DataLoader starts its workers (len(ds)
    or ds.entries()), so that they share one listing.
    """

    def __new__(cls, *args, **kwargs):
        want = kwargs.get("torch")
        if cls is Dataset and (want or (want is None and "torch" in sys.modules)):
            from ._torch import TorchDataset  # noqa: PLC0415 - torch only when asked for
            cls = TorchDataset
        return object.__new__(cls)

    def __init__(self, reader, trigger=None, campaign=None, labels=None, since=None, until=None,
                 streams=None, device=None, stream=None, min_priority=0, limit=0,
                 shuffle=False, seed=0, shard=None, parallel=8, cache_dir=None,
                 cache_max_bytes=1 << 30, arrays=True, torch=None):
        del torch  # used by __new__
        self.query_args = dict(stream=stream, trigger=trigger, device=device, since=since,
                               until=until, min_priority=min_priority)
        self.campaign = _campaign_filter(campaign)
        self.labels = _label_filter(labels)
        self.limit = int(limit)
        self.streams = None if streams is None else (
            [streams] if isinstance(streams, str) else list(streams))
        self.shuffle = bool(shuffle)
        self.seed = seed
        self.epoch = 0
        self.shard = tuple(shard) if shard else (0, 1)
        if not 0 <= self.shard[0] < self.shard[1]:
            raise ValueError("shard=%r: use (index, count) with 0 <= index < count" % (shard,))
        self.arrays = bool(arrays)
        self.cache = DiskCache(cache_dir, cache_max_bytes) if cache_dir else None
        self._fetcher = Fetcher(ReaderSource(reader), self.cache, parallel)
        self._entries = None
        self._skipped = {r: 0 for r in SKIP_REASONS}
        self._events = 0

    def __getstate__(self):
        state = dict(self.__dict__)  # counters are per process
        state.update(_skipped={r: 0 for r in SKIP_REASONS}, _events=0)
        return state

    # ---- selection ---------------------------------------------------------------------------

    def _selected(self, entry):
        cid, ver, labels = attribution(entry)
        if self.campaign is not None:
            if cid is None or not any(cid == c and (v is None or v == ver)
                                      for c, v in self.campaign):
                return False
        if self.labels is not None:
            for name, pattern in self.labels.items():
                if name not in labels or not glob_match(pattern, labels[name]):
                    return False
        return True

    def _attach_listing(self, entries):
        """Adds "etag" and "object_size" from one LIST per data partition, `parallel` at a time
        (the cache key needs the ETag; an object missing from its listing has vanished)."""
        parts = sorted({e["object_key"].rsplit("/", 1)[0] + "/" for e in entries})
        listed = {}
        for objs in self._fetcher.run_all(lambda r, part: r.list(part), parts):
            for o in objs:
                listed[o["key"]] = (o["etag"].strip('"'), int(o["size"]))
        for e in entries:
            etag, size = listed.get(e["object_key"], (None, None))
            e["etag"], e["object_size"] = etag, size

    def entries(self):
        """The matching events (query dicts plus "etag", "object_size"), listed on first call."""
        if self._entries is None:
            reader = self._fetcher.reader()
            found = self._fetcher.source.call(reader, lambda r: r.query(**self.query_args))
            chosen = [e for e in found if self._selected(e)]
            if self.limit > 0:
                chosen = chosen[:self.limit]
            self._attach_listing(chosen)
            self._entries = chosen
        return self._entries

    def __len__(self):
        """Entries listed (an object without manifest may hold several events)."""
        return len(self.entries())

    def subset(self, entries):
        """A Dataset like this one over the given entries (in that order), e.g. curated."""
        other = copy.copy(self)
        other._entries = list(entries)
        other._fetcher = Fetcher(self._fetcher.source, self.cache, self._fetcher.parallel)
        other._skipped = {r: 0 for r in SKIP_REASONS}
        other._events = 0
        return other

    def set_epoch(self, epoch):
        """Shuffle order for epoch ``epoch`` (deterministic with the seed)."""
        self.epoch = int(epoch)

    # ---- iteration ---------------------------------------------------------------------------

    def _worker(self):
        """(index, count) of this iterator among all readers of the dataset."""
        index, count = self.shard
        data = getattr(getattr(sys.modules.get("torch"), "utils", None), "data", None)
        info = data.get_worker_info() if data is not None else None
        if info is not None:
            return index * info.num_workers + info.id, count * info.num_workers
        return index, count

    def order(self, worker=None):
        """Indices into entries() this iterator reads, in order."""
        index, count = self._worker() if worker is None else worker
        order = list(range(len(self.entries())))
        if self.shuffle:
            random.Random("%s/%d" % (self.seed, self.epoch)).shuffle(order)
        return order[index::count]

    def skip(self, entry, reason, detail):
        """Counts and logs a skipped entry."""
        self._skipped[reason] += 1
        log.warning("skipped %s [%d+%d]: %s (%s)", entry["object_key"], int(entry.get("offset", 0)),
                    int(entry.get("length", 0)), reason, detail)

    def fetched(self, entries=None):
        """Yields (entry, bytes) for the given entries (default: this iterator's share), skipping
        and counting those that cannot be fetched."""
        if entries is None:
            all_entries = self.entries()
            entries = [all_entries[i] for i in self.order()]
        for entry, data, reason, detail in self._fetcher.fetch_all(entries):
            if reason:
                self.skip(entry, reason, detail)
                continue
            yield entry, data

    def decode(self, entry, data):
        """The samples in one entry's bytes; [] (skipped, counted, logged) when they are bad."""
        try:
            return [self._sample(entry, ev) for ev in iter_events(data)]
        except DecodeError as e:
            self.skip(entry, _decode_reason(e), e)
        except Exception as e:  # noqa: BLE001 - e.g. a zstd error inside a section
            self.skip(entry, "corrupt", "%s: %s" % (type(e).__name__, e))
        return []

    def __iter__(self):
        for entry, data in self.fetched():
            for s in self.decode(entry, data):
                self._events += 1
                yield s

    def _sample(self, entry, ev):
        cid, ver, labels = attribution(entry)
        device = ev.device or entry.get("device", "")
        event_id = ev.event_id or entry.get("event_id", "")
        meta = {
            "key": sample_key(device, event_id), "event_id": event_id, "device": device,
            "stream": entry.get("stream", ""), "triggers": list(ev.triggers),
            "priority": ev.priority, "start_ns": ev.index.get("wall_start_ns", entry.get("start_ns")),
            "end_ns": ev.index.get("wall_end_ns", entry.get("end_ns")),
            "campaign_id": cid, "campaign_version": ver, "labels": labels,
            "object_key": entry["object_key"], "offset": int(entry.get("offset", 0)) + ev.offset,
            "length": ev.size, "etag": entry.get("etag"), "manifest_key": entry.get("manifest_key", ""),
            "channels": {}, "content_types": {}, "index": ev.index,
        }
        arrays, blobs = {}, {}
        for sec in ev.sections:
            if self.streams is not None and sec.stream not in self.streams:
                continue
            if sec.kind == "numeric":
                meta["channels"][sec.stream] = ["t"] + sec.channels
                arrays[sec.stream] = sec.array() if self.arrays else sec.rows
            else:
                meta["content_types"][sec.stream] = sec.content_type
                blobs[sec.stream] = sec.blobs
        return {"key": meta["key"], "meta": meta, "arrays": arrays, "blobs": blobs}

    def stats(self):
        """This process's counters: entries listed, events yielded, skipped per reason, GETs,
        bytes fetched, cache hits."""
        f = self._fetcher.stats
        return {"entries": len(self._entries) if self._entries is not None else None,
                "events": self._events, "skipped": dict(self._skipped),
                "skipped_total": sum(self._skipped.values()), "gets": f["gets"],
                "bytes_fetched": f["bytes_fetched"], "cache_hits": f["cache_hits"]}
