"""The package imports from build/python, validates configs and maps errors to fleetpipe.Error."""
import json
import pickle

import pytest

import fleetpipe


def test_version_is_a_dotted_string():
    parts = fleetpipe.__version__.split(".")
    assert len(parts) == 3 and all(p.isdigit() for p in parts)


def test_parse_config_returns_a_config_with_device_id():
    c = fleetpipe.parse_config('{"device_id": "cart-7"}')
    assert isinstance(c, fleetpipe.Config)
    assert c.device_id == "cart-7"
    assert c.streams == [] and c.triggers == []


def test_parse_config_accepts_a_dict_and_exposes_names():
    c = fleetpipe.parse_config({
        "device_id": "cart-8",
        "streams": [{"name": "imu", "channels": ["ax"]}],
        "triggers": [{"name": "hard", "type": "threshold", "stream": "imu", "channel": "ax",
                      "below": -4}],
        "uploader": {"bucket": "bkt", "objects": {"prefix": "fp"}},
    })
    assert c.streams == ["imu"]
    assert c.triggers == ["hard"]
    assert c.bucket == "bkt" and c.prefix == "fp"


def test_config_error_carries_json_pointer():
    with pytest.raises(fleetpipe.Error) as info:
        fleetpipe.parse_config('{"device_id": "cart-7", "pipeline": {"poll_budget": -1}}')
    err = info.value
    assert err.json_pointer == "/pipeline/poll_budget"
    assert str(err) == "/pipeline/poll_budget: must be > 0 s, got -1"
    assert err.reason == "invalid configuration"
    assert err.code == 1
    # picklable, e.g. across multiprocessing
    again = pickle.loads(pickle.dumps(err))
    assert again.json_pointer == err.json_pointer
    assert again.code == err.code


def test_unknown_key_is_rejected_with_its_pointer():
    with pytest.raises(fleetpipe.Error) as info:
        fleetpipe.parse_config({"device_id": "x", "uploader": {"bukket": "typo"}})
    assert info.value.json_pointer == "/uploader/bukket"


def test_nested_config_error_pointer_in_a_list():
    with pytest.raises(fleetpipe.Error) as info:
        fleetpipe.parse_config({"device_id": "x", "streams": [{"name": "imu", "channels": ["a"]}],
                                "triggers": [{"name": "t", "type": "threshold", "stream": "nope",
                                              "channel": "a", "above": 1}]})
    assert info.value.json_pointer.startswith("/triggers/0")


def test_invalid_json_points_at_the_root():
    with pytest.raises(fleetpipe.Error) as info:
        fleetpipe.parse_config("{not json")
    assert info.value.json_pointer == "/"
    assert info.value.reason == "invalid configuration"


def test_missing_config_file_is_io_error(tmp_path):
    with pytest.raises(fleetpipe.Error) as info:
        fleetpipe.load_config(str(tmp_path / "absent.json"))
    assert info.value.reason == "I/O error"
    assert info.value.json_pointer == ""


def test_load_config_reads_a_path_object(tmp_path):
    p = tmp_path / "c.json"
    p.write_text(json.dumps({"device_id": "cart-9"}))
    assert fleetpipe.load_config(p).device_id == "cart-9"


def test_config_of_the_wrong_type_is_a_type_error():
    with pytest.raises(TypeError):
        fleetpipe.parse_config(42)


def test_metrics_registry_exports_json_text_and_dict():
    reg = fleetpipe.MetricsRegistry()
    assert fleetpipe.metrics_dict(reg) == {}
    assert reg.to_dict() == {}
    assert reg.to_prometheus() == ""
    assert json.loads(reg.to_json()) == {}
    assert reg.value("fleetpipe_nothing_total") == -1


def test_time_helpers_round_trip():
    t = fleetpipe.parse_time("2026-11-01T10:20:30.5Z")
    assert fleetpipe.format_time(t) == "2026-11-01T10:20:30.500Z"
    assert fleetpipe.parse_time("2026-11-01") == fleetpipe.parse_time("20261101T000000Z")
    with pytest.raises(fleetpipe.Error) as info:
        fleetpipe.parse_time("yesterday")
    assert info.value.reason == "invalid argument"


def test_glob_is_fnmatch():
    assert fleetpipe.glob_match("cart-0*", "cart-0042")
    assert not fleetpipe.glob_match("cart-0*", "cart-1042")
    assert fleetpipe.glob_match("cart-00[1-3]", "cart-002")


def test_help_texts_are_readable():
    for obj in (fleetpipe.Pipeline, fleetpipe.Buffer, fleetpipe.Uploader, fleetpipe.Capture,
                fleetpipe.BucketReader, fleetpipe.sign_s3_request, fleetpipe.query):
        assert obj.__doc__ and len(obj.__doc__) > 80, obj


def test_event_decoder_is_reexported():
    assert fleetpipe.decode_events is fleetpipe.event.decode_events
    assert fleetpipe.decode_events(b"") == []


def test_type_stubs_cover_every_public_name_of_the_compiled_module():
    import ast
    import os
    from fleetpipe import _fleetpipe
    stub = os.path.join(os.path.dirname(fleetpipe.__file__), "_fleetpipe.pyi")
    tree = ast.parse(open(stub, encoding="utf-8").read())
    declared = {n.name for n in tree.body if isinstance(n, (ast.ClassDef, ast.FunctionDef))}
    declared |= {t.id for n in tree.body if isinstance(n, ast.AnnAssign) for t in [n.target]}
    public = {n for n in dir(_fleetpipe) if not n.startswith("_")} | {"__version__"}
    assert public <= declared, public - declared
