# SPDX-License-Identifier: Apache-2.0
"""Check our reference forward pass against outputs produced by the upstream RADIO code.

The golden fixture lives outside the repo (../shared/fixtures/upstream-golden, data produced by
non-commercial code: read it, never copy it in). Tests skip when it is absent.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from radio_reference import (
    RadioReference,
    bilinear_resize,
    compare,
    from_windows,
    load_checkpoint,
    to_windows,
    vitdet_windowed_blocks,
    within_bounds,
)
from safetensors.torch import load_file

MIN_COSINE = 0.99999
MAX_REL_L2 = 1e-5
MAX_ABS = 1e-4


def shared_dir() -> Path:
    env = os.environ.get("RADIO_SHARED_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2].parent / "shared"


GOLDEN = shared_dir() / "fixtures" / "upstream-golden"
needs_golden = pytest.mark.skipif(
    not (GOLDEN / "reference_index.json").is_file(),
    reason=f"upstream golden fixture not found at {GOLDEN} (set RADIO_SHARED_DIR)",
)


def _cases() -> list[dict]:
    index = GOLDEN / "reference_index.json"
    if not index.is_file():
        return []
    return json.loads(index.read_text())["cases"]


@pytest.fixture(scope="module")
def model() -> RadioReference:
    return load_checkpoint(GOLDEN)


@pytest.fixture(scope="module")
def golden() -> dict[str, torch.Tensor]:
    index = json.loads((GOLDEN / "reference_index.json").read_text())
    return load_file(str(GOLDEN / index["reference_file"]))


def _run_case(model: RadioReference, golden: dict[str, torch.Tensor], case: dict,
              **kwargs) -> dict[str, dict[str, float]]:
    u8 = golden[case["input_key"]]
    assert u8.dtype == torch.uint8
    x = u8.to(torch.float32) / 255.0  # exactly how the fixture fed upstream
    summary, features = model.forward(x, vitdet_window_size=case["vitdet_window_size"], **kwargs)

    want_summary = golden[case["outputs"]["summary"]["key"]]
    want_nchw = golden[case["outputs"]["features"]["key"]]
    assert case["outputs"]["features"]["layout"] == "NCHW"
    b, c, h, w = want_nchw.shape
    want_nlc = want_nchw.permute(0, 2, 3, 1).reshape(b, h * w, c)
    return {"summary": compare(summary, want_summary), "features": compare(features, want_nlc)}


def _fmt(stats: dict[str, float]) -> str:
    return (f"cos={stats['cosine']:.10f} relL2={stats['rel_l2']:.3e} "
            f"maxabs={stats['max_abs']:.3e}")


# ----------------------------------------------------------------------------------------------
# Against upstream
# ----------------------------------------------------------------------------------------------

@needs_golden
def test_checkpoint_derivation(model: RadioReference) -> None:
    # What the tiny fixture states (config.json model_kwargs and tensor shapes).
    assert (model.width, model.depth, model.num_heads, model.mlp_width) == (64, 8, 2, 256)
    assert model.patch_size == 16 and model.grid_size == 128
    assert model.num_prefix == 10 and model.num_cls == 3
    assert model.summary_idxs == [0, 1] and model.summary_dim == 128
    assert model.final_norm is None and model.feature_normalizer is None


@needs_golden
@pytest.mark.parametrize("case", _cases(), ids=lambda c: c["name"])
def test_matches_upstream(model: RadioReference, golden: dict[str, torch.Tensor],
                          case: dict) -> None:
    stats = _run_case(model, golden, case)
    for name, s in stats.items():
        print(f"\n{case['name']} {name}: {_fmt(s)}")
        assert s["cosine"] >= MIN_COSINE, (name, s)
        assert s["rel_l2"] <= MAX_REL_L2, (name, s)
        assert s["max_abs"] <= MAX_ABS, (name, s)


@needs_golden
@pytest.mark.parametrize("case", _cases(), ids=lambda c: c["name"])
def test_bounds_are_tight(model: RadioReference, golden: dict[str, torch.Tensor],
                          case: dict) -> None:
    # A small but real deviation (LayerNorm eps 1e-5 instead of 1e-6) must break the bounds,
    # otherwise they would be too loose to catch compiler mistakes of that size.
    stats = _run_case(model, golden, case, ln_eps=1e-5)
    for name, s in stats.items():
        print(f"\n{case['name']} {name} (ln_eps=1e-5): {_fmt(s)}")
    assert not all(within_bounds(s, MIN_COSINE, MAX_REL_L2, MAX_ABS) for s in stats.values())


@needs_golden
def test_external_preprocessor_and_float32(model: RadioReference,
                                           golden: dict[str, torch.Tensor]) -> None:
    case = _cases()[0]
    x = golden[case["input_key"]].to(torch.float32) / 255.0
    ref_s, ref_f = model.forward(x)
    pre = (x.double() - model.norm_mean.double().reshape(1, 3, 1, 1)) \
        / model.norm_std.double().reshape(1, 3, 1, 1)
    ext_s, ext_f = model.forward(pre, external_preprocessor=True)
    assert torch.allclose(ext_s, ref_s, rtol=0, atol=1e-12)
    assert torch.allclose(ext_f, ref_f, rtol=0, atol=1e-12)
    # float32 compute still lands well inside the upstream bounds.
    f32 = _run_case(model, golden, case, dtype=torch.float32)
    assert all(within_bounds(s, MIN_COSINE, MAX_REL_L2, MAX_ABS) for s in f32.values())


@needs_golden
def test_vitdet_changes_output(model: RadioReference, golden: dict[str, torch.Tensor]) -> None:
    # Guards against the windowed path silently degenerating into global attention.
    case = next(c for c in _cases() if c["vitdet_window_size"])
    x = golden[case["input_key"]].to(torch.float32) / 255.0
    _, windowed = model.forward(x, vitdet_window_size=case["vitdet_window_size"])
    _, plain = model.forward(x)
    assert compare(windowed, plain)["max_abs"] > 1e-2


# ----------------------------------------------------------------------------------------------
# Fixture-free unit checks of the building blocks
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("src,dst", [((128, 128), (14, 14)), ((128, 128), (20, 20)),
                                     ((128, 128), (160, 160)), ((7, 5), (3, 11))])
def test_bilinear_matches_torch(src: tuple[int, int], dst: tuple[int, int]) -> None:
    g = torch.Generator().manual_seed(0)
    # float32 grids, as upstream resizes them: the sample coordinates must be PyTorch's own.
    grid = torch.randn(4, *src, generator=g, dtype=torch.float32)
    ours = bilinear_resize(grid, *dst)
    theirs = F.interpolate(grid[None], size=dst, mode="bilinear", align_corners=False,
                           antialias=False)[0]
    # Same sample points and weights; only the order of the float32 lerp may differ (≤ 2 ulp).
    assert torch.allclose(ours, theirs, rtol=0, atol=5e-7)


def test_vitdet_schedule() -> None:
    def global_blocks(depth: int) -> list[int]:
        return [i for i, win in enumerate(vitdet_windowed_blocks(depth)) if not win]

    assert global_blocks(8) == [1, 3, 5, 7]
    assert global_blocks(32) == [7, 15, 23, 31]
    assert global_blocks(27) == [5, 11, 17, 23, 26]
    with pytest.raises(ValueError, match="period"):
        vitdet_windowed_blocks(7)


def test_window_order_roundtrip() -> None:
    b, h, w, win = 2, 4, 6, 2
    x = torch.arange(b * h * w, dtype=torch.float64).reshape(b, h * w, 1)
    windows = to_windows(x, h, w, win)
    assert windows.shape == (b * (h // win) * (w // win), win * win, 1)
    # First window holds raster patches (0,0), (0,1), (1,0), (1,1); the second starts at col 2.
    assert windows[0, :, 0].tolist() == [0, 1, 6, 7]
    assert windows[1, :, 0].tolist() == [2, 3, 8, 9]
    assert torch.equal(from_windows(windows, b, h, w, win), x)
