"""The Python package imports from build/python and maps errors to fleetpipe.Error."""
import json
import pickle

import pytest

import fleetpipe


def test_version_is_a_dotted_string():
    parts = fleetpipe.__version__.split(".")
    assert len(parts) == 3 and all(p.isdigit() for p in parts)


def test_parse_config_returns_device_id():
    assert fleetpipe.parse_config('{"device_id": "cart-7"}') == "cart-7"


def test_config_error_carries_json_pointer():
    with pytest.raises(fleetpipe.Error) as info:
        fleetpipe.parse_config('{"device_id": "cart-7", "pipeline": {"poll_budget": -1}}')
    err = info.value
    assert err.json_pointer == "/pipeline/poll_budget"
    assert str(err) == "/pipeline/poll_budget: must be > 0 s, got -1"
    assert err.reason == "invalid configuration"
    # picklable, e.g. across multiprocessing
    again = pickle.loads(pickle.dumps(err))
    assert again.json_pointer == err.json_pointer


def test_missing_config_file_is_io_error(tmp_path):
    with pytest.raises(fleetpipe.Error) as info:
        fleetpipe.load_config_file(str(tmp_path / "absent.json"))
    assert info.value.reason == "I/O error"
    assert info.value.json_pointer == ""


def test_metrics_registry_exports_json_and_text():
    reg = fleetpipe.MetricsRegistry()
    assert fleetpipe.metrics_dict(reg) == {}
    assert reg.to_prometheus() == ""
    assert json.loads(reg.to_json()) == {}
