"""The Dataset's local disk cache of event bytes, keyed by object key, ETag and byte range."""
import hashlib
import os
import tempfile

__all__ = ["DiskCache"]


class DiskCache:
    """Files named by a hash of (object key, ETag, offset, length) under ``directory``, at most
    ``max_bytes`` in total: the least recently used files go first. A new ETag (the object was
    rewritten) is a new name, so stale bytes are never returned.

    Safe for several processes sharing the directory (DataLoader workers): files appear by
    rename, a file removed under a reader is a miss, and each process trims the directory when
    its own estimate of the total passes the cap."""

    def __init__(self, directory, max_bytes):
        self.directory = str(directory)
        self.max_bytes = int(max_bytes)
        os.makedirs(self.directory, exist_ok=True)
        self._total = self._scan_total()

    @staticmethod
    def name(object_key, etag, offset, length):
        h = hashlib.sha256("\0".join((object_key, etag, str(offset), str(length))).encode())
        return h.hexdigest() + ".fpev"

    def _path(self, name):
        return os.path.join(self.directory, name)

    def get(self, object_key, etag, offset, length):
        """The cached bytes, or None."""
        path = self._path(self.name(object_key, etag, offset, length))
        try:
            with open(path, "rb") as f:
                data = f.read()
            os.utime(path)  # least recently *used* is evicted first
        except OSError:
            return None
        return data

    def put(self, object_key, etag, offset, length, data):
        """Stores ``data`` unless it alone exceeds the cap; trims the directory when needed."""
        if len(data) > self.max_bytes:
            return
        fd, tmp = tempfile.mkstemp(dir=self.directory, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, self._path(self.name(object_key, etag, offset, length)))
        except OSError:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            return
        self._total += len(data)
        if self._total > self.max_bytes:
            self.trim()

    def _files(self):
        out = []
        for entry in os.scandir(self.directory):
            if entry.name.endswith(".fpev"):
                try:
                    st = entry.stat()
                except OSError:
                    continue
                out.append((st.st_mtime, st.st_size, entry.path))
        return out

    def _scan_total(self):
        return sum(size for _, size, _ in self._files())

    def trim(self):
        """Removes least recently used files until the total is at most 90 % of the cap."""
        files = sorted(self._files())
        total = sum(size for _, size, _ in files)
        target = self.max_bytes * 9 // 10
        for _, size, path in files:
            if total <= target:
                break
            try:
                os.unlink(path)
            except OSError:
                continue
            total -= size
        self._total = total

    def size(self):
        """Bytes in the cache now."""
        return self._scan_total()
