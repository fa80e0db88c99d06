"""fleetpipe — trigger, capture, buffer and upload edge-device data to S3.

The compiled core lives in ``fleetpipe._fleetpipe``; pure-Python helpers (the event decoder,
the bucket query tools) live beside it. Every failing call raises :class:`fleetpipe.Error`.
"""
import json as _json

from ._errors import Error
from ._fleetpipe import *  # noqa: F401,F403
from ._fleetpipe import __version__, MetricsRegistry


def metrics_dict(registry):
    """The registry's metrics as a dict (the JSON export, parsed)."""
    return _json.loads(registry.to_json())
