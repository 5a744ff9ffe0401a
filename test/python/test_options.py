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
    ({"image_size": "huge"}, "image_size='huge' is not valid"),
    ({"vitdet_window_size": 0}, "vitdet_window_size=0 is not valid"),
    ({"device": "tpu"}, "device='tpu' is not valid; use None/'auto', 'cpu', 'cuda', 'cuda:N' or 'webgpu'"),
    ({"server": 5}, "server=5 is not valid"),
    ({"quantize": "yes"}, "quantize='yes' is not valid; use one of True, False"),
    ({"quantize": True, "device": "cuda"}, "quantize=True makes an int8 graph for the CPU"),
    ({"quantize": True, "use_mixed_precision": True}, "quantize=True makes an int8 graph for the CPU"),
    ({"colour": "blue"}, "unknown option\\(s\\) colour .* valid options: .*output_type"),
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
