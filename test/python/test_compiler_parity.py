"""Parity of the compiled ONNX graph (run by onnxruntime-node through the CLI) with the independent
torch reference, and with the upstream model's own outputs where the golden fixture is present.

Bounds (fp32): cosine >= 0.99999, relative L2 <= 1e-5, max |diff| <= 1e-4 on summary and features.
"""
from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from radio_reference import compare, load_checkpoint, within_bounds
from safetensors.numpy import load_file
from sidecar_cli import compile_graph, make_checkpoint, run_graph

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
GOLDEN = SHARED / "fixtures" / "upstream-golden"


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("parity")


@pytest.fixture(scope="module")
def tiny(work: Path) -> Path:
    return make_checkpoint(work / "tiny", "tiny")


def pixels(shape: tuple[int, int, int, int], seed: int) -> np.ndarray:
    """Random uint8 RGB images, shape (B, H, W, 3): what the graph's `pixels` input takes."""
    assert len(shape) == 4 and shape[3] == 3, f"pixels takes (B, H, W, 3), got {shape}"
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def unit_float(u: np.ndarray) -> np.ndarray:
    """What the graph makes of uint8 images u [B, H, W, 3] before mean/std: float32 [B, 3, H, W] in [0, 1]."""
    return u.transpose(0, 3, 1, 2).astype(np.float32) / np.float32(255)


def reference(ckpt: Path, u: np.ndarray, **kw) -> tuple[np.ndarray, np.ndarray]:
    """The torch reference on the same uint8 images [B, H, W, 3] the graph is fed."""
    ref = load_checkpoint(ckpt)
    with torch.no_grad():
        s, f = ref.forward(torch.from_numpy(unit_float(u)), **kw)
    return s.numpy(), f.numpy()


def assert_parity(ours: tuple[np.ndarray, np.ndarray], truth: tuple[np.ndarray, np.ndarray], label: str,
                  **bounds: float) -> dict[str, dict[str, float]]:
    stats = {}
    for name, a, b in (("summary", ours[0], truth[0]), ("features", ours[1], truth[1])):
        assert a.shape == b.shape, f"{label} {name}: shape {a.shape} != {b.shape}"
        st = compare(torch.from_numpy(np.asarray(a, dtype=np.float64)), torch.from_numpy(np.asarray(b, dtype=np.float64)))
        print(f"{label} {name}: cos={st['cosine']:.8f} relL2={st['rel_l2']:.3e} maxabs={st['max_abs']:.3e}")
        assert within_bounds(st, **bounds), f"{label} {name} out of bounds: {st}"
        stats[name] = st
    return stats


CASES = [
    # name, images shape (B, H, W, 3), compile flags, reference kwargs
    ("square_224", (1, 224, 224, 3), [], {}),
    ("nonsquare_256x384", (1, 256, 384, 3), [], {}),
    ("batch3_320x192", (3, 320, 192, 3), [], {}),
    ("vitdet_w2_256x384", (2, 256, 384, 3), ["--window-size", "2"], {"vitdet_window_size": 2}),
    ("vitdet_w4_256", (1, 256, 256, 3), ["--window-size", "4"], {"vitdet_window_size": 4}),
]


@pytest.mark.parametrize("attention", ["matmul", "mha"])
@pytest.mark.parametrize("name,shape,flags,kw", CASES, ids=[c[0] for c in CASES])
def test_fp32_parity_with_reference(tiny: Path, work: Path, attention: str, name: str,
                                    shape: tuple[int, ...], flags: list[str], kw: dict) -> None:
    graph = compile_graph(tiny, work / f"g-{attention}-{'-'.join(flags) or 'global'}", "--attention", attention, *flags)
    x = pixels(shape, seed=zlib.crc32(name.encode()))  # not hash(): salted per process
    ours = run_graph(graph, x, work / f"run-{attention}-{name}")
    assert_parity(ours, reference(tiny, x, **kw), f"{name}/{attention}")


def test_exact_grid_and_upsampled_grid(work: Path) -> None:
    """Inputs whose patch grid equals the stored grid use it as is; larger ones upsample it.
    A 256-px position grid (16×16) keeps these cases small."""
    small = make_checkpoint(work / "tiny-grid16", "tiny", cpe_max_size=256)
    graph = compile_graph(small, work / "g-grid16")
    for shape in [(1, 256, 256, 3), (1, 384, 320, 3)]:
        x = pixels(shape, seed=shape[1])
        ours = run_graph(graph, x, work / f"run-grid16-{shape[1]}")
        assert_parity(ours, reference(small, x), f"grid16_{shape[1]}x{shape[2]}")


def test_final_norm_and_so400m_shape(work: Path) -> None:
    # A checkpoint with model.norm.* gets a final LayerNorm; SO400M's MLP ratio 4304/1152.
    so = make_checkpoint(work / "tiny-so400m", "tiny-so400m", final_norm=True)
    assert load_checkpoint(so).final_norm is not None
    x = pixels((2, 192, 160, 3), seed=9)
    ours = run_graph(compile_graph(so, work / "g-so"), x, work / "run-so")
    assert ours[0].shape == (2, 2 * 72)
    assert_parity(ours, reference(so, x), "so400m_tiny")


def test_layernorm_eps_1e5_breaks_the_bounds(tiny: Path, work: Path) -> None:
    """The bounds are tight: a reference with LayerNorm eps 1e-5 instead of 1e-6 must fail them."""
    graph = compile_graph(tiny, work / "g-eps", "--attention", "mha")
    x = pixels((1, 224, 224, 3), seed=11)
    ours = run_graph(graph, x, work / "run-eps")
    wrong = reference(tiny, x, ln_eps=1e-5)
    results = [within_bounds(compare(torch.from_numpy(a.astype(np.float64)), torch.from_numpy(b))) for a, b in zip(ours, wrong)]
    assert not all(results), "a LayerNorm epsilon of 1e-5 should not pass the parity bounds"


@pytest.mark.parametrize("attention", ["matmul", "mha"])
def test_fp16_graph(tiny: Path, work: Path, attention: str) -> None:
    graph = compile_graph(tiny, work / f"g-fp16-{attention}", "--precision", "fp16", "--attention", attention)
    x = pixels((2, 224, 224, 3), seed=13)
    try:
        ours = run_graph(graph, x, work / f"run-fp16-{attention}")
    except RuntimeError as err:
        pytest.skip(f"onnxruntime's CPU execution provider cannot run this fp16 graph: {str(err).splitlines()[-1][:300]}")
    truth = reference(tiny, x)
    for a, b in zip(ours, truth):
        st = compare(torch.from_numpy(a.astype(np.float64)), torch.from_numpy(b))
        print(f"fp16/{attention}: {st}")
        assert st["cosine"] >= 0.999


def test_int8_graph(tiny: Path, work: Path) -> None:
    """int8 graphs implement the documented scheme (matched against it written out in torch), stay close
    to the exact model, and give an image the same result whatever else is in its batch."""
    graph = compile_graph(tiny, work / "g-int8", "--precision", "int8")
    meta = json.loads((graph / "metadata.json").read_text())
    assert meta["precision"] == "int8" and "weights.int8.bin" in meta["weights"]["files"]
    x = pixels((3, 256, 384, 3), seed=17)
    ours = run_graph(graph, x, work / "run-int8")
    truth = reference(tiny, x)
    exact = assert_parity(ours, truth, "int8 vs exact", min_cosine=0.99, max_rel_l2=0.15, max_abs=10.0)
    # The approximation is real: an int8 graph that matched fp32 to fp32 precision would be suspect.
    assert exact["features"]["rel_l2"] > 1e-3
    # And it is the documented scheme: the graph's error is the scheme's error. Not to fp32 precision
    # (a float32 value within ~1e-6 of a rounding boundary may take the other code, and such flips
    # spread through attention), so the test compares error directions.
    scheme = reference(tiny, x, int8=True)
    for name, a, s_, t in zip(("summary", "features"), ours, scheme, truth):
        err, scheme_err = a.astype(np.float64) - t, s_ - t
        agreement = float((err * scheme_err).sum() / np.sqrt((err ** 2).sum() * (scheme_err ** 2).sum()))
        print(f"int8 {name}: cosine(graph error, scheme error) = {agreement:.3f}")
        assert agreement >= 0.8, f"{name}: the int8 graph's error does not follow the int8 scheme ({agreement:.3f})"
    alone = run_graph(graph, x[1:2], work / "run-int8-alone")
    for a, b in zip(alone, ours):
        np.testing.assert_allclose(a[0], b[1], rtol=0, atol=1e-5)
    # onnxruntime would run the int8 ops on the CPU beside a CUDA session without a word: refused.
    with pytest.raises(RuntimeError, match="int8 graph, made for the CPU provider"):
        run_graph(graph, x[:1], work / "run-int8-cuda", "--provider", "cuda")


@pytest.mark.skipif(not (GOLDEN / "reference_index.json").exists(), reason="upstream golden fixture not present")
def test_upstream_golden(work: Path) -> None:
    """The upstream model's own outputs on its own tiny checkpoint."""
    index = json.loads((GOLDEN / "reference_index.json").read_text())
    ref = load_file(str(GOLDEN / index["reference_file"]))
    graphs: dict[int | None, Path] = {}
    for case in index["cases"]:
        w = case["vitdet_window_size"]
        if w not in graphs:
            flags = ["--window-size", str(w)] if w else []
            graphs[w] = compile_graph(GOLDEN, work / f"golden-{w}", *flags)
        x = np.ascontiguousarray(ref[case["input_key"]].transpose(0, 2, 3, 1))  # uint8 [B, 3, H, W] → [B, H, W, 3]
        summary, features = run_graph(graphs[w], x, work / f"golden-run-{case['name']}")
        b, c, h, wd = case["outputs"]["features"]["shape"]
        nchw = features.reshape(b, h, wd, c).transpose(0, 3, 1, 2)
        assert_parity((summary, nchw), (ref[case["outputs"]["summary"]["key"]], ref[case["outputs"]["features"]["key"]]),
                      f"upstream/{case['name']}")


def test_bad_checkpoints_name_the_key(tiny: Path, work: Path) -> None:
    import shutil
    bad = work / "bad"
    shutil.copytree(tiny, bad)
    cfg = json.loads((bad / "config.json").read_text())
    cfg["args"]["model_kwargs"]["embed_dim"] = 80
    (bad / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(RuntimeError, match=r"embedder\.weight gives width 64.*expects embed_dim 80"):
        compile_graph(bad, work / "g-bad")
    cfg["args"]["model_kwargs"]["embed_dim"] = 64
    cfg["args"]["model"] = "vit_tiny_unknown"
    (bad / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(RuntimeError, match=r"unknown architecture args\.model=\"vit_tiny_unknown\""):
        compile_graph(bad, work / "g-bad")
    with pytest.raises(RuntimeError, match="ViTDet needs depth >= 8"):
        so = make_checkpoint(work / "tiny-so400m-2", "tiny-so400m")
        compile_graph(so, work / "g-bad-win", "--window-size", "2")
