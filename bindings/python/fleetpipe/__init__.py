"""fleetpipe — trigger, capture, buffer and upload edge-device data to S3; query it in the cloud.

Device side (compiled core, ``fleetpipe._fleetpipe``):
    Pipeline        the whole device side from one config (Capture -> Buffer -> Uploader + heartbeat)
    Capture         triggers and pre/post-trigger capture
    Buffer, Lease   the durable on-device buffer (LMDB)
    Uploader        shaped, resumable delivery to S3
    Config, parse_config, load_config      validated configuration
    MetricsRegistry, metrics_dict          metrics (Prometheus text, JSON, dicts)
    sign_s3_request                        AWS SigV4 for S3 (the uploader's signer)

Cloud side:
    BucketReader    query events (manifests, object metadata), fleet status from heartbeats
    query, status   one-call forms of BucketReader.query / .status
    decode_events, iter_events, Event      the event payload decoder (fleetpipe.event, pure Python;
                                           Section.array() gives numpy arrays)

Training feed (needs numpy):
    Dataset         matching events as samples: parallel ranged GETs, disk cache, torch-ready
    export_webdataset                      WebDataset tar shards + lineage (python3 -m fleetpipe.export)
    balance, remove_duplicates             curation, each reporting what it removed

Every failing call raises :class:`fleetpipe.Error` with ``.code``, ``.reason`` and, for
configuration errors, ``.json_pointer`` (e.g. ``"/uploader/bandwidth/bytes_per_second"``).
Calls that block (I/O, uploads, queries) release the GIL. See docs/python.md.
"""
import json as _json

from ._errors import Error
from ._fleetpipe import *  # noqa: F401,F403
from ._fleetpipe import (__version__, BucketReader, Buffer, Capture, Config, Lease,  # noqa: F401
                         MetricsRegistry, Pipeline, Uploader, format_time, glob_match,
                         inspect_buffer, load_config, load_config_file, parse_config, parse_time,
                         sha256_hex, sign_s3_request)
from . import event  # noqa: F401
from .event import DecodeError, Event, Section, decode_events, iter_events  # noqa: F401
from .dataset import Dataset  # noqa: F401
from .curation import balance, remove_duplicates  # noqa: F401


def metrics_dict(registry):
    """The metrics of a MetricsRegistry (or a Pipeline) as a dict (the JSON export, parsed):
    ``{name: {"type": ..., "help": ..., "series": [{"labels": {...}, "value": n}]}}``."""
    if isinstance(registry, Pipeline):
        return registry.metrics()
    return _json.loads(registry.to_json())


def query(bucket, stream=None, trigger=None, device=None, since=None, until=None,
          min_priority=0, limit=0, download=False, decode=False, label=None, campaign=None):
    """Events in the bucket matching every filter (see BucketReader.query).

    ``bucket``: a BucketReader, or a dict of BucketReader keyword arguments (endpoint, bucket,
    ca_file, access_key, secret_key, prefix, ...). With ``download=True`` each dict gets
    ``"data"`` (the event's bytes); with ``decode=True`` also ``"events"`` (decoded
    :class:`fleetpipe.event.Event` objects).
    """
    reader = bucket if isinstance(bucket, BucketReader) else BucketReader(**bucket)
    found = reader.query(stream=stream, trigger=trigger, device=device, since=since,
                         until=until, min_priority=min_priority, limit=limit, label=label,
                         campaign=campaign)
    if download or decode:
        for e in found:
            e["data"] = reader.download(e)
            if decode:
                e["events"] = decode_events(e["data"])
    return found


def status(bucket, device=None, now=None, silent_after=900.0, window=86400.0):
    """Per-device health from heartbeats (see BucketReader.status)."""
    reader = bucket if isinstance(bucket, BucketReader) else BucketReader(**bucket)
    return reader.status(device=device, now=now, silent_after=silent_after, window=window)


def __getattr__(name):
    # fleetpipe.export is imported on first use: `python3 -m fleetpipe.export` must find it unloaded.
    if name == "export_webdataset":
        from .export import export_webdataset  # noqa: PLC0415
        return export_webdataset
    raise AttributeError("module 'fleetpipe' has no attribute %r" % name)
