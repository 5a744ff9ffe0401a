# SPDX-License-Identifier: Apache-2.0
"""What the heatmap's heavy stages would cost on the GPU: an estimate for "PCA in the graph".

The sidecar computes heatmaps on CPU threads (server/src/postprocess/, measured by
bench/heatmap_speed.ts). This runs the same stages batched in torch on the device that runs
inference, as a graph would: per-channel 1st/99th-percentile clip (top-k at both ends, numpy's
linear interpolation), high-norm tokens (median / MAD of the unclipped norms), inlier mean, the
top principal component(s) by subspace iteration on the inlier covariance, and the scores. Left
on the CPU would be smoothing, resize and quantisation (~5-7 ms a 512² map on one thread).
Random features with a few planted high-norm tokens; timings by CUDA events, after warm-up.

    python bench/heatmap_torch_gpu.py [--batch 32] [--channels 1280] [--grid 32] [--k 1] [--iters 30]
"""

from __future__ import annotations

import argparse
import time

import torch


def clip_bounds(x: torch.Tensor, q_low: float = 1.0, q_high: float = 99.0) -> tuple[torch.Tensor, torch.Tensor]:
    """numpy-'linear' percentiles over dim 1 of (B, n, C), from the few extreme values only."""
    n = x.shape[1]

    def at(q: float, largest: bool) -> torch.Tensor:
        v = (n - 1) * q / 100
        prev = int(v)
        nxt = min(prev + 1, n - 1)
        g = v - prev
        if largest:  # sorted[prev], sorted[nxt] counted from the top
            k = n - prev
            top = torch.topk(x, k, dim=1, largest=True, sorted=True).values
            a = top[:, k - 1]
            b = top[:, k - 2] if nxt > prev else a
        else:
            k = nxt + 1
            bot = torch.topk(x, k, dim=1, largest=False, sorted=True).values
            a, b = bot[:, prev], bot[:, nxt]
        return a + (b - a) * g

    return at(q_low, False), at(q_high, True)


def orthonormalize(v: torch.Tensor) -> torch.Tensor:
    """Gram-Schmidt on the k (<= 3) columns of (B, C, k): elementwise ops and reductions, as a graph would do it."""
    cols: list[torch.Tensor] = []
    for j in range(v.shape[2]):
        c = v[:, :, j]
        for q in cols:
            c = c - (c * q).sum(1, keepdim=True) * q
        cols.append(c / c.norm(dim=1, keepdim=True))
    return torch.stack(cols, 2)


def scores(x: torch.Tensor, k: int, iters: int) -> torch.Tensor:
    """(B, n, C) features -> (B, n, k) principal-component scores fitted on the inliers."""
    raw_norms = x.norm(dim=2)
    lo, hi = clip_bounds(x)
    xc = torch.maximum(torch.minimum(x, hi[:, None, :]), lo[:, None, :])
    med = raw_norms.median(dim=1, keepdim=True).values
    mad = (raw_norms - med).abs().median(dim=1, keepdim=True).values
    keep = (raw_norms <= torch.maximum(3 * med, med + 6 * mad)).to(x.dtype)  # (no 5 % cap here)
    mean = (xc * keep[..., None]).sum(1) / keep.sum(1, keepdim=True)
    xm = (xc - mean[:, None, :]) * keep[..., None]
    cov = xm.transpose(1, 2) @ xm  # (B, C, C)
    v = torch.randn(x.shape[0], x.shape[2], k, device=x.device, dtype=x.dtype)
    for _ in range(iters):
        v = orthonormalize(cov @ v)
    return (xc - mean[:, None, :]) @ v


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--channels", type=int, default=1280)
    ap.add_argument("--grid", type=int, default=32)
    ap.add_argument("--k", type=int, default=1)
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--reps", type=int, default=20)
    a = ap.parse_args()
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 arithmetic, as the CPU path's accuracy needs
    g = torch.Generator(device="cpu").manual_seed(0)
    B, n, C = a.batch, a.grid * a.grid, a.channels
    modes = torch.randn(20, C, generator=g)
    fields = torch.randn(B, n, 20, generator=g) * (3 / torch.arange(1, 21))
    x = fields @ modes + torch.randn(B, n, C, generator=g)
    x[:, :4] += 20 * x.norm(dim=2).median() * torch.nn.functional.normalize(torch.randn(C, generator=g), dim=0)
    x = x.to(dev)
    for _ in range(3):
        scores(x, a.k, a.iters)
    times = []
    for _ in range(a.reps):
        if dev == "cuda":
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record()
            scores(x, a.k, a.iters)
            e.record()
            torch.cuda.synchronize()
            times.append(s.elapsed_time(e))
        else:
            t0 = time.perf_counter()
            scores(x, a.k, a.iters)
            times.append((time.perf_counter() - t0) * 1000)
    times.sort()
    med = times[len(times) // 2]
    name = torch.cuda.get_device_name() if dev == "cuda" else "cpu"
    print(f"{name}: clip + high-norm + PCA{a.k} ({a.iters} subspace iterations) + scores, "
          f"batch {B} of {C}x{a.grid}x{a.grid} fp32: {med:.2f} ms a batch, {med / B * 1000:.0f} us an image")


if __name__ == "__main__":
    main()
