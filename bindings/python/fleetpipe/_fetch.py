"""The Dataset's fetcher: ranged GETs of events in parallel (bounded), through the disk cache,
with every failure turned into a counted skip reason instead of an exception."""
import collections
import concurrent.futures
import os
import threading

from ._errors import Error
from ._fleetpipe import BucketReader

__all__ = ["ReaderSource", "Fetcher", "SKIP_REASONS"]

# Why an event can be skipped (Dataset.stats()["skipped"] counts each).
SKIP_REASONS = ("vanished", "truncated", "corrupt", "unknown_version", "fetch_error")
_NOT_FOUND = 7  # fleetpipe::errc::not_found

_READER_KEYWORDS = {"endpoint", "bucket", "region", "prefix", "ca_file", "connect_address",
                    "allow_insecure_http", "access_key", "secret_key", "session_token"}


class ReaderSource:
    """Makes BucketReaders: one per fetch thread and per process, as a reader is not
    thread-safe and must not cross a fork. Picklable (DataLoader workers may be spawned)."""

    def __init__(self, source):
        self.shared = None
        self.factory = None
        self.config = None
        self.kwargs = None
        if isinstance(source, BucketReader):
            self.shared = source  # used under a lock: sequential, and only in this process
            self.shared_pid = os.getpid()
        elif callable(source):
            self.factory = source
        elif isinstance(source, dict) and set(source) <= _READER_KEYWORDS | {"config"}:
            self.kwargs = dict(source)
            self.config = self.kwargs.pop("config", None)
        else:
            self.config = source
        self._lock = threading.Lock()

    def __getstate__(self):
        if self.shared is not None:
            raise TypeError("a Dataset made from a BucketReader object cannot be sent to other "
                            "processes: give it the reader's keyword arguments (a dict) instead")
        state = dict(self.__dict__)
        del state["_lock"]
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()

    @property
    def parallel_ok(self):
        return self.shared is None

    def new(self):
        if self.shared is not None:
            if os.getpid() != self.shared_pid:  # its connection belongs to the parent
                raise RuntimeError("a Dataset made from a BucketReader object cannot be read in "
                                   "another process (a DataLoader worker): give it the reader's "
                                   "keyword arguments (a dict) instead")
            return self.shared
        if self.factory is not None:
            return self.factory()
        return BucketReader(self.config, **(self.kwargs or {}))

    def call(self, reader, fn):
        """fn(reader), serialised when the reader is the shared one."""
        if reader is self.shared:
            with self._lock:
                return fn(reader)
        return fn(reader)


class Fetcher:
    """Fetches entries (dicts from BucketReader.query, with "etag" and "object_size" when the
    listing knew them) as (entry, bytes or None, skip reason, detail)."""

    def __init__(self, source, cache, parallel):
        self.source = source
        self.cache = cache
        self.parallel = max(1, int(parallel)) if source.parallel_ok else 1
        self.stats = collections.Counter()
        self._pid = None
        self._pool = None
        self._local = None
        self._stats_lock = threading.Lock()

    def __getstate__(self):
        state = dict(self.__dict__)  # threads, readers and counters stay in this process
        state.update(_pid=None, _pool=None, _local=None, _stats_lock=None,
                     stats=collections.Counter())
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._stats_lock = threading.Lock()

    def _ensure(self):
        if self._pid != os.getpid():  # first use, or a forked child: nothing of the parent's
            self._pid = os.getpid()
            self._local = threading.local()
            self._pool = (concurrent.futures.ThreadPoolExecutor(self.parallel, "fleetpipe-fetch")
                          if self.parallel > 1 else None)
            self._stats_lock = threading.Lock()

    def reader(self):
        """This thread's reader."""
        self._ensure()
        r = getattr(self._local, "reader", None)
        if r is None:
            r = self._local.reader = self.source.new()
        return r

    def _count(self, name, n=1):
        with self._stats_lock:
            self.stats[name] += n

    def fetch(self, entry):
        """One entry; never raises."""
        key = entry["object_key"]
        offset, length = int(entry.get("offset", 0)), int(entry.get("length", 0))
        etag = entry.get("etag")
        if etag is None:
            return entry, None, "vanished", "not in the listing of its partition"
        size = entry.get("object_size")
        if size is not None and length > 0 and offset + length > size:
            return entry, None, "truncated", "object has %d bytes, the event ends at %d" % (
                size, offset + length)
        if self.cache is not None:
            data = self.cache.get(key, etag, offset, length)
            if data is not None:
                self._count("cache_hits")
                return entry, data, None, None
        reader = self.reader()  # misuse (a shared reader in another process) is raised
        try:
            data = self.source.call(reader, lambda r: r.download(entry))
        except Error as e:
            if e.code == _NOT_FOUND:
                return entry, None, "vanished", str(e)
            return entry, None, "fetch_error", str(e)
        except Exception as e:  # noqa: BLE001 - a skip reason, never an exception to the loop
            return entry, None, "fetch_error", "%s: %s" % (type(e).__name__, e)
        self._count("gets")
        self._count("bytes_fetched", len(data))
        if length > 0 and len(data) != length:
            return entry, None, "truncated", "got %d of %d bytes" % (len(data), length)
        if self.cache is not None:
            self.cache.put(key, etag, offset, length, data)
        return entry, data, None, None

    def run_all(self, fn, items):
        """[fn(reader, item) for item in items], on the fetch threads; exceptions propagate."""
        self._ensure()
        if self._pool is None:
            return [self.source.call(self.reader(), lambda r, it=it: fn(r, it)) for it in items]
        return list(self._pool.map(lambda it: fn(self.reader(), it), items))

    def fetch_all(self, entries):
        """Yields fetch(e) for every entry in order, with at most 2 x parallel GETs in flight."""
        self._ensure()
        if self._pool is None:
            for e in entries:
                yield self.fetch(e)
            return
        window = collections.deque()
        try:
            for e in entries:
                window.append(self._pool.submit(self.fetch, e))
                if len(window) >= 2 * self.parallel:
                    yield window.popleft().result()
            while window:
                yield window.popleft().result()
        finally:
            for f in window:
                f.cancel()
