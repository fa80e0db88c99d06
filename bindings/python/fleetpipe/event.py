"""Decoder for fleetpipe event payloads ("FPEV", see docs/event-format.md).

Plain Python: the standard library only, plus the ``zstandard`` module when a section is
zstd-compressed and numpy for ``Section.array()``. Importable on its own (``import event``) or as ``fleetpipe.event``; also a
command line::

    python3 bindings/python/fleetpipe/event.py FILE [--json]

prints a summary of every event in FILE (one event, or many concatenated as the uploader packs
them).

Layout of one event (all little-endian)::

    0   4s  magic "FPEV"
    4   u16 version (1)
    6   u16 header_size (24; skip any extra header bytes)
    8   u32 index_len
    12  u32 flags (reserved, 0)
    16  u64 data_len
    header_size: index_len bytes of JSON index, then data_len bytes of data

The index lists ``sections``; each has ``offset``/``length`` into the data, ``compression``
("none" | "zstd", ``raw_length`` = decompressed size) and ``encoding``:
``f64le-rows`` (numeric: rows of float64 t then one float64 per channel) or ``blob-records``
(repeated float64 t, u64 size, size bytes).
"""

import json
import struct
import sys

__all__ = ["MAGIC", "DecodeError", "Event", "Section", "iter_events", "decode_events",
           "summary"]

MAGIC = b"FPEV"
VERSION = 1
_HEADER = struct.Struct("<4sHHIIQ")  # 24 bytes
_BLOB = struct.Struct("<dQ")


class DecodeError(ValueError):
    """The bytes are not a valid fleetpipe event stream; the message names the offset."""


def _zstd_decompress(body, raw_length):
    try:
        import zstandard  # noqa: PLC0415 - optional dependency, only for compressed sections
    except ImportError as e:  # pragma: no cover - depends on the host
        raise DecodeError("section is zstd-compressed: install the 'zstandard' module") from e
    return zstandard.ZstdDecompressor().decompress(body, max_output_size=raw_length)


class Section:
    """One stream's data in an event.

    Numeric rows are unpacked on first use of ``rows`` (pure Python); ``array()`` gives them as
    a numpy array over the section's bytes instead, without unpacking or copying.
    """

    def __init__(self, meta, body):
        self.meta = meta
        self.stream = meta["stream"]
        self.kind = meta["kind"]
        self.channels = list(meta.get("channels", []))
        self.content_type = meta.get("content_type", "")
        self.count = int(meta["count"])
        self.t_first = meta.get("t_first")
        self.t_last = meta.get("t_last")
        self._body = body  # numeric: the f64le rows (bytes or a memoryview of the event)
        self._rows = None
        self.blobs = []  # blob: (t, bytes)
        if self.kind == "numeric":
            if len(body) != 8 * self.width * self.count:
                raise DecodeError("section %s: %d bytes for %d rows of %d float64"
                                  % (self.stream, len(body), self.count, self.width))
        elif self.kind == "blob":
            self._body = b""
            pos = 0
            for _ in range(self.count):
                if len(body) - pos < _BLOB.size:
                    raise DecodeError("section %s: truncated blob record" % self.stream)
                t, n = _BLOB.unpack_from(body, pos)
                pos += _BLOB.size
                if n > len(body) - pos:
                    raise DecodeError("section %s: truncated blob" % self.stream)
                self.blobs.append((t, bytes(body[pos:pos + n])))
                pos += n
            if pos != len(body):
                raise DecodeError("section %s: trailing bytes" % self.stream)
        else:
            raise DecodeError("section %s: unknown kind %r" % (self.stream, self.kind))

    @property
    def width(self):
        """Values per numeric row: t, then one per channel."""
        return 1 + len(self.channels)

    @property
    def rows(self):
        """Numeric sections: a list of tuples (t, v0, v1, ...); [] for blobs."""
        if self._rows is None:
            body = self._body
            self._rows = list(struct.iter_unpack("<%dd" % self.width, body)) if body else []
        return self._rows

    def array(self):
        """Numeric sections: a read-only ``numpy.ndarray`` of float64, shape (count, 1 + channels),
        column 0 is t. It is a view of the decoded bytes (``numpy.frombuffer``), not a copy;
        ``.copy()`` it to write. Blob sections: ``(times, blobs)`` — a float64 array of the
        times and the list of ``bytes``. Needs numpy (``python3-numpy``)."""
        import numpy  # noqa: PLC0415 - optional dependency, only for arrays
        if self.kind == "blob":
            return numpy.array([t for t, _ in self.blobs], dtype="<f8"), [b for _, b in self.blobs]
        return numpy.frombuffer(self._body, dtype="<f8").reshape(self.count, self.width)

    def columns(self):
        """Numeric sections as {"t": [...], channel: [...]}."""
        names = ["t"] + self.channels
        return {name: [row[i] for row in self.rows] for i, name in enumerate(names)}

    def __repr__(self):
        return "Section(%s, %s, %d samples)" % (self.stream, self.kind, self.count)


class Event:
    """One decoded event: ``index`` (the JSON index as a dict) plus decoded ``sections``."""

    def __init__(self, index, sections, offset, size):
        self.index = index
        self.sections = sections
        self.offset = offset  # where it starts in the decoded byte string
        self.size = size      # encoded bytes
        self.event_id = index.get("event_id")
        self.device = index.get("device")
        self.triggers = list(index.get("triggers", []))
        self.priority = index.get("priority")

    def section(self, stream):
        for s in self.sections:
            if s.stream == stream:
                return s
        raise KeyError(stream)

    def __repr__(self):
        return "Event(%s, triggers=%s, %d sections)" % (self.event_id, self.triggers,
                                                        len(self.sections))


def iter_events(data):
    """Yields every Event in ``data`` (bytes-like: one event or several back to back)."""
    view = memoryview(data)
    pos = 0
    while pos < len(view):
        if len(view) - pos < _HEADER.size:
            raise DecodeError("event at offset %d: truncated header" % pos)
        magic, version, header_size, index_len, _flags, data_len = _HEADER.unpack_from(view, pos)
        if magic != MAGIC:
            raise DecodeError("event at offset %d: bad magic %r" % (pos, bytes(magic)))
        if version != VERSION:
            raise DecodeError("event at offset %d: unsupported version %d" % (pos, version))
        if header_size < _HEADER.size:
            raise DecodeError("event at offset %d: header too short" % pos)
        total = header_size + index_len + data_len
        if total > len(view) - pos:
            raise DecodeError("event at offset %d: truncated event" % pos)
        start = pos + header_size
        try:
            index = json.loads(bytes(view[start:start + index_len]).decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as e:
            raise DecodeError("event at offset %d: bad index: %s" % (pos, e)) from e
        body = view[start + index_len:pos + total]
        sections = []
        for meta in index.get("sections", []):
            off, length = int(meta["offset"]), int(meta["length"])
            if off + length > len(body):
                raise DecodeError("event at offset %d: section out of range" % pos)
            raw = body[off:off + length]  # a view: uncompressed rows are never copied
            if meta.get("compression", "none") == "zstd":
                raw = _zstd_decompress(bytes(raw), int(meta["raw_length"]))
            elif meta.get("compression", "none") != "none":
                raise DecodeError("event at offset %d: unknown compression %r"
                                  % (pos, meta["compression"]))
            if len(raw) != int(meta.get("raw_length", len(raw))):
                raise DecodeError("event at offset %d: section length mismatch" % pos)
            sections.append(Section(meta, raw))
        yield Event(index, sections, pos, total)
        pos += total


def decode_events(data):
    """All events in ``data`` as a list."""
    return list(iter_events(data))


def summary(event):
    """A few lines describing an event, for people."""
    ix = event.index
    lines = ["event %s  device=%s  triggers=%s  priority=%s  closed=%s  %d bytes" % (
        event.event_id, event.device, ",".join(event.triggers), event.priority,
        ix.get("closed"), event.size)]
    lines.append("  t %.6f .. %.6f (fire %.6f), wall ns %s .. %s" % (
        ix.get("t_start", 0), ix.get("t_end", 0), ix.get("t_fire", 0),
        ix.get("wall_start_ns"), ix.get("wall_end_ns")))
    for s in event.sections:
        extra = ("channels=" + ",".join(s.channels)) if s.kind == "numeric" else (
            "bytes=%d%s" % (sum(len(b) for _, b in s.blobs),
                            (" type=" + s.content_type) if s.content_type else ""))
        lines.append("  %-12s %-7s %6d samples  %s  (%s)" % (
            s.stream, s.kind, s.count, extra, s.meta.get("compression", "none")))
    return "\n".join(lines)


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    as_json = "--json" in argv
    paths = [a for a in argv if a != "--json"]
    if len(paths) != 1:
        sys.stderr.write("usage: event.py FILE [--json]\n")
        return 2
    with open(paths[0], "rb") as f:
        data = f.read()
    try:
        events = decode_events(data)
    except DecodeError as e:
        sys.stderr.write("%s: %s\n" % (paths[0], e))
        return 1
    if as_json:
        print(json.dumps([dict(e.index, encoded_size=e.size) for e in events]))
    else:
        for e in events:
            print(summary(e))
        print("%d event(s), %d bytes" % (len(events), len(data)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
