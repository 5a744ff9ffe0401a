"""The zoo model's option validation: every seed option accepted, bad values rejected with the
valid ones listed. (Pure Python: no sidecar needed.)"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from client.options import parse_options  # noqa: E402

H = "nv_labs/c-radio_v4-h"


def test_seed_options_are_accepted() -> None:
    o = parse_options(H, dict(output_type="spatial", apply_smoothing=True, smoothing_sigma=1.51, feature_format="NCHW",
                              use_mixed_precision=None, use_external_preprocessor=False, image_size="native",
                              vitdet_window_size=8, server=None, device="cpu"))
    assert o.output_type == "spatial" and o.resolution == "native" and not o.remote


@pytest.mark.parametrize("size,policy", [(None, "default"), ("default", "default"), ("native", "native"),
                                         (768, "max:768"), ((512, 768), "512x768"), ("448x592", "448x592")])
def test_image_size_policies(size, policy) -> None:
    assert parse_options(H, {"image_size": size}).resolution == policy


@pytest.mark.parametrize("kwargs,message", [
    ({"output_type": "dense"}, "output_type='dense' is not valid; use one of 'summary', 'spatial'"),
    ({"feature_format": "NHWC"}, "feature_format='NHWC' is not valid; use one of 'NCHW', 'NLC'"),
    ({"smoothing_sigma": 0}, "smoothing_sigma=0 is not valid"),
    ({"smoothing_sigma": 1e7}, "smoothing_sigma=10000000.0 is not valid; use a positive number of feature-grid cells up to 128"),
    ({"image_size": "huge"}, "image_size='huge' is not valid"),
    ({"vitdet_window_size": 0}, "vitdet_window_size=0 is not valid"),
    ({"device": "tpu"}, "device='tpu' is not valid; use None/'auto', 'cpu', 'cuda', 'cuda:N' or 'webgpu'"),
    ({"server": 5}, "server=5 is not valid"),
    ({"quantize": "yes"}, "quantize='yes' is not valid; use one of True, False"),
    ({"quantize": True, "device": "cuda"}, "quantize=True makes an int8 graph for the CPU"),
    ({"quantize": True, "use_mixed_precision": True}, "quantize=True makes an int8 graph for the CPU"),
    ({"colour": "blue"}, "unknown option\\(s\\) colour .* valid options: .*output_type"),
    # bool is an int to Python: True passed ("--workers True" to the sidecar; heatmaps of 1 pixel)
    ({"workers": True}, "workers=True is not valid; use None or a positive integer"),
    ({"threads": True}, "threads=True is not valid; use None or a positive integer"),
    ({"heatmap_max_side": True}, "heatmap_max_side=True is not valid; use a positive integer"),
])
def test_bad_options_are_rejected_with_the_valid_ones(kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        parse_options(H, kwargs)


def test_unknown_model() -> None:
    with pytest.raises(ValueError, match="nv_labs/c-radio_v4-h, nv_labs/c-radio_v4-so400m"):
        parse_options("nv_labs/c-radio_v3", {})


def test_servers_list() -> None:
    assert parse_options(H, {"server": ["a:1", "b:2"]}).servers == ["a:1", "b:2"]
    assert parse_options(H, {"server": "unix:/tmp/x.sock"}).servers == ["unix:/tmp/x.sock"]


@pytest.mark.parametrize("server", [
    "localhost:50051", "10.0.0.7:50051", "[::1]:50051", "radio.ns.svc.cluster.local:50051", "unix:/tmp/r.sock", "/tmp/r.sock",
    "dns:///radio-sidecar.default.svc.cluster.local:50051", "dns://10.96.0.10/radio-sidecar:50051", "dns:radio:50051",
    "ipv4:127.0.0.2:50051,127.0.0.3:50051,127.0.0.4:50051", "ipv4:127.0.0.1:1", "ipv6:[::1]:50051,[fd00::2]:50052",
    ["a:1", "b:2"], ("unix:/tmp/a.sock", "host:9"),
])
def test_server_forms_accepted(server) -> None:
    assert parse_options(H, {"server": server}).remote


@pytest.mark.parametrize("server,why", [
    ("localhost", "not host:port"), ("host:0", "not host:port"), ("host:70000", "not host:port"), (" a:1", "spaces"),
    ("dns:///radio-sidecar", "dns:///name:port"), ("ipv4:127.0.0.2:50051,127.0.0.3", "'127.0.0.3', which is not a.b.c.d:port"),
    ("ipv4:300.0.0.1:5", "not a.b.c.d:port"), ("ipv6:::1:50051", "not [v6-address]:port"),
    ("http://host:80", "scheme 'http'"), (["dns:///a:1", "b:2"], "give it alone, not in a list"), ([], "server=[] is not valid"),
    (["a:1", 2], "is not valid"), ("unix:", "names no socket path"),
])
def test_bad_server_shows_the_valid_forms(server, why) -> None:
    with pytest.raises(ValueError) as err:
        parse_options(H, {"server": server})
    message = str(err.value)
    assert why in message
    for form in ("'host:port'", "'unix:/path/to.sock'", "'dns:///name:port'", "'ipv4:", "'ipv6:", "a list of"):
        assert form in message, form


def test_balanced_targets_make_one_round_robin_channel() -> None:
    from client.grpc_client import RadioClient, is_balanced_target

    assert is_balanced_target("dns:///x:1") and is_balanced_target("ipv4:1.2.3.4:5,1.2.3.5:5") and not is_balanced_target("x:1")
    one = RadioClient("ipv4:127.0.0.2:50051,127.0.0.3:50051")
    assert len(one._channels) == 1 and one.failover
    plain = RadioClient("127.0.0.1:50051")
    assert not plain.failover, "one plain address: UNAVAILABLE goes up at once (the zoo restarts a local sidecar)"
    old = RadioClient(["127.0.0.1:1", "127.0.0.1:2"])
    assert len(old._channels) == 2 and old.failover
    for c in (one, plain, old):
        c.close()
