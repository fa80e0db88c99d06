"""fleetpipe.Uploader lifetimes: once an Uploader is shut down, closed, left by its `with` block
or garbage-collected, its Buffer can be closed. No server is needed: the endpoint is a closed
loopback port and nothing is queued, so no request is attempted."""
import gc

import pytest

import fleetpipe

SECTION = {"endpoint": "https://127.0.0.1:9", "bucket": "fp-lifetime",
           "credentials": {"source": "static", "access_key_id": "AKIDTEST",
                           "secret_access_key": "not-a-secret"}}


def open_buffer(tmp_path):
    return fleetpipe.Buffer({"path": str(tmp_path / "db"), "durability": "none"})


def test_buffer_refuses_to_close_while_an_uploader_uses_it(tmp_path):
    buf = open_buffer(tmp_path)
    up = fleetpipe.Uploader(SECTION, buf, device_id="cart-1")
    with pytest.raises(fleetpipe.Error, match="still used"):
        buf.close()
    assert not buf.closed
    up.close()
    buf.close()
    assert buf.closed


def test_buffer_closes_after_uploader_shutdown(tmp_path):
    buf = open_buffer(tmp_path)
    up = fleetpipe.Uploader(SECTION, buf, device_id="cart-1")
    assert up.idle()
    up.shutdown()
    assert up.closed
    up.shutdown()  # a second shutdown does nothing
    buf.close()
    assert buf.closed
    with pytest.raises(fleetpipe.Error, match="closed"):
        up.status()


def test_buffer_closes_after_the_uploader_context_manager(tmp_path):
    buf = open_buffer(tmp_path)
    with fleetpipe.Uploader(SECTION, buf, device_id="cart-1") as up:
        assert not up.closed
    assert up.closed
    buf.close()
    assert buf.closed


def test_buffer_closes_after_the_uploader_is_garbage_collected(tmp_path):
    buf = open_buffer(tmp_path)
    up = fleetpipe.Uploader(SECTION, buf, device_id="cart-1")
    del up
    gc.collect()
    buf.close()
    assert buf.closed


def test_config_labels_are_validated(tmp_path):
    c = fleetpipe.parse_config({"device_id": "cart-1",
                                "labels": {"site": "store-01", "model": "mk2"}})
    assert c.labels == {"site": "store-01", "model": "mk2"}
    c.labels = {"region": "eu-west-1"}
    assert c.labels == {"region": "eu-west-1"}
    with pytest.raises(fleetpipe.Error) as bad:
        c.labels = {"site": "store 01"}
    assert bad.value.json_pointer == "/labels/site"
    assert c.labels == {"region": "eu-west-1"}  # unchanged by the refused assignment
    with pytest.raises(fleetpipe.Error) as many:
        fleetpipe.parse_config({"device_id": "c", "labels": {"k%d" % i: "v" for i in range(17)}})
    assert many.value.json_pointer == "/labels"
