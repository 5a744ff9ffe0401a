# SPDX-License-Identifier: Apache-2.0
"""Reference values for the TypeScript heatmap post-processing (test-only oracle).

Invoked by test/node/heatmap.test.ts as

    python heatmap_reference.py JOB.json

JOB.json: {"out_dir": DIR, "cases": [CASE, ...]} where CASE is one of

  {"name", "kind": "pipeline", "features": PATH(<f4 raw, (C, h, w)), "channels", "height",
   "width", "components": k, "sigma": float | null, "out_height", "out_width",
   "high_norm": {"ratio", "mads", "max_fraction"} | null (optional; null = fit on every position)}
  {"name", "kind": "smooth", "input": PATH(<f8 raw, (h, w)), "height", "width", "sigma"}
  {"name", "kind": "resize", "input": PATH(<f8 raw, (h, w)), "height", "width",
   "out_height", "out_width"}

Every array result is written to DIR/<name>.<key>.bin (little-endian float64, or uint8 for
the quantised maps) and described in the JSON manifest printed on stdout:
  {name: {"arrays": {key: {"file", "dtype", "shape"}}, "scalars": {...}}}

Everything is computed in float64 with the libraries the TypeScript code must agree with:
numpy.percentile (linear), sklearn PCA, scipy.ndimage.gaussian_filter(mode='reflect',
truncate=4.0), torch.nn.functional.interpolate(bilinear, align_corners=False,
antialias=False). The sign rule and the high-norm token test are re-implemented here in numpy.

Exit status 3 means a required module is missing (the node test then skips).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

try:
    import numpy as np
    import torch
    from scipy.ndimage import gaussian_filter
    from sklearn.decomposition import PCA
except ImportError as exc:  # pragma: no cover - environment dependent
    print(f"missing module: {exc}", file=sys.stderr)
    sys.exit(3)

ORIENTATION_ZERO_RELATIVE = 1e-6
HIGH_NORM_DEFAULTS = {"ratio": 3.0, "mads": 6.0, "max_fraction": 0.05}


def high_norm_mask(norms: np.ndarray, ratio: float, mads: float, max_fraction: float) -> np.ndarray:
    """Positions whose (unclipped) feature norm exceeds both ratio x median and
    median + mads x MAD; at most floor(max_fraction * n) of them, longest first."""
    n = norms.size
    median = float(np.median(norms))
    mad = float(np.median(np.abs(norms - median)))
    threshold = max(ratio * median, median + mads * mad)
    cap = int(np.floor(max_fraction * n))
    mask = np.zeros(n, dtype=bool)
    if cap == 0 or not median > 0:
        return mask
    over = np.flatnonzero(norms > threshold)
    order = over[np.lexsort((over, -norms[over]))]  # longest first, then by position
    mask[order[:cap]] = True
    return mask


def orient(scores: np.ndarray, loading: np.ndarray, norms: np.ndarray, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray, str]:
    """Sign rule: scores correlate positively with the per-position feature norm over the
    fitted positions `keep`; if that covariance vanishes (relative 1e-6), the largest-|.|
    loading is positive."""
    ds = scores[keep] - scores[keep].mean()
    r = norms[keep]
    cov = float(np.sum(ds * (r - r.mean())))
    scale = float(np.sqrt(np.sum(ds * ds)) * np.sqrt(np.sum(r * r)))
    if abs(cov) > ORIENTATION_ZERO_RELATIVE * scale:
        return (-scores, -loading, "norm-correlation") if cov < 0 else (scores, loading, "norm-correlation")
    idx = int(np.argmax(np.abs(loading)))  # first index on ties
    if loading[idx] == 0:
        return scores, loading, "none"
    return (-scores, -loading, "max-loading") if loading[idx] < 0 else (scores, loading, "max-loading")


def smooth(img: np.ndarray, sigma: float | None) -> np.ndarray:
    if sigma is None or sigma == 0:
        return img.copy()
    return gaussian_filter(img, sigma=sigma, mode="reflect", truncate=4.0)


def resize(img: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    t = torch.from_numpy(np.ascontiguousarray(img, dtype=np.float64))[None, None]
    r = torch.nn.functional.interpolate(t, size=(out_h, out_w), mode="bilinear", align_corners=False, antialias=False)
    return r[0, 0].numpy()


def quantize(img: np.ndarray, low: int = 0) -> np.ndarray:
    """Min-max to [low, 255]; low=1 for pca1 maps (the FiftyOne App paints no 0-valued pixel)."""
    lo, hi = float(img.min()), float(img.max())
    if not hi > lo:
        return np.full(img.shape, low, dtype=np.uint8)
    return (low + np.clip(np.floor((img - lo) / (hi - lo) * (255 - low) + 0.5), 0, 255 - low)).astype(np.uint8)


class Writer:
    def __init__(self, out_dir: Path, name: str) -> None:
        self.out_dir, self.name = out_dir, name
        self.entry: dict = {"arrays": {}, "scalars": {}}

    def array(self, key: str, arr: np.ndarray) -> None:
        arr = np.ascontiguousarray(arr)
        dtype = "u1" if arr.dtype == np.uint8 else "<f8"
        arr = arr.astype(dtype)
        path = self.out_dir / f"{self.name}.{key}.bin"
        arr.tofile(path)
        self.entry["arrays"][key] = {"file": str(path), "dtype": dtype, "shape": list(arr.shape)}

    def scalar(self, key: str, value) -> None:
        self.entry["scalars"][key] = value


def run_pipeline(case: dict, w: Writer) -> None:
    C, h, wd = case["channels"], case["height"], case["width"]
    k = case["components"]
    n = h * wd
    raw = np.fromfile(case["features"], dtype="<f4").astype(np.float64).reshape(C, n)
    x = np.where(np.isfinite(raw), raw, 0.0)
    raw_norms = np.sqrt(np.sum(x * x, axis=0))
    high_norm = case.get("high_norm", HIGH_NORM_DEFAULTS)
    outliers = high_norm_mask(raw_norms, **high_norm) if high_norm is not None else np.zeros(n, dtype=bool)
    keep = ~outliers
    w.array("raw_norms", raw_norms)
    w.array("outliers", outliers.astype(np.uint8))
    lower = np.percentile(x, 1, axis=1)
    upper = np.percentile(x, 99, axis=1)
    x = np.clip(x, lower[:, None], upper[:, None])
    w.array("lower", lower)
    w.array("upper", upper)
    w.array("clipped", x.reshape(C, h, wd))

    samples = x.T  # (n positions, C channels)
    pca = PCA(n_components=k, svd_solver="full")
    pca.fit(samples[keep])  # high-norm tokens are left out of the fit...
    scores = pca.transform(samples)  # ...but scored: (n, k) = (samples - mean) @ components.T
    w.array("mean", pca.mean_)
    w.array("components", pca.components_)
    w.array("scores", scores.T)
    w.array("explained_variance", pca.explained_variance_)

    norms = np.sqrt(np.sum(x * x, axis=0))
    w.array("norms", norms)
    oriented, loadings, rules = [], [], []
    for i in range(k):
        s, loading, rule = orient(scores[:, i].copy(), pca.components_[i].copy(), norms, keep)
        if outliers.any():  # their own pixels saturate instead of stretching the colour range
            s = np.where(keep, s, np.clip(s, s[keep].min(), s[keep].max()))
        oriented.append(s)
        loadings.append(loading)
        rules.append(rule)
    w.array("oriented", np.stack(oriented))
    w.array("oriented_components", np.stack(loadings))
    w.scalar("rules", rules)

    out_h, out_w = case["out_height"], case["out_width"]
    smoothed = [smooth(s.reshape(h, wd), case["sigma"]) for s in oriented]
    resized = [resize(s, out_h, out_w) for s in smoothed]
    w.array("smoothed", np.stack(smoothed))
    w.array("resized", np.stack(resized))
    w.array("uint8", np.stack([quantize(r) for r in resized], axis=-1))  # (H, W, k): pca3's mapping
    w.array("uint8_pca1", quantize(resized[0], low=1))  # (H, W): pca1's mapping, in [1, 255]


def main() -> None:
    job = json.loads(Path(sys.argv[1]).read_text())
    out_dir = Path(job["out_dir"])
    manifest = {}
    for case in job["cases"]:
        w = Writer(out_dir, case["name"])
        kind = case["kind"]
        if kind == "pipeline":
            run_pipeline(case, w)
        elif kind == "smooth":
            img = np.fromfile(case["input"], dtype="<f8").reshape(case["height"], case["width"])
            w.array("out", smooth(img, case["sigma"]))
        elif kind == "resize":
            img = np.fromfile(case["input"], dtype="<f8").reshape(case["height"], case["width"])
            w.array("out", resize(img, case["out_height"], case["out_width"]))
        else:
            raise ValueError(f"unknown case kind {kind!r}")
        manifest[case["name"]] = w.entry
    json.dump(manifest, sys.stdout)


if __name__ == "__main__":
    main()
