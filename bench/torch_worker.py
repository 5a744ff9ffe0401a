"""Worker process for the torch paths, driven by bench/run.py over JSON lines.

  a.emb / a.heat  FiftyOne compute_embeddings / apply_model with bench/reference_model.py
                  (one image at a time, PIL + numpy preprocessing, eager torch reference forward)
  a.loop          the same model in a plain Python loop (PIL decode per image), for machines without
                  FiftyOne (the GPU script)
  b               torch batched: PIL decode + CLIP-style preprocessing of a batch, one batched
                  forward of the same reference (fp32 on CPU, bf16 weights on a GPU); with
                  --prep-threads N the next batch is decoded by N threads while this one runs
  bf              as b, with the reference's explicit attention / LayerNorm / GELU swapped for
                  torch's fused kernels (scaled_dot_product_attention etc.): what a torch user with a
                  modern model implementation gets
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import PRESET_SHAPES as SHAPES  # noqa: E402
from common import REPO, clip_preprocess, protocol_channel, serve_commands, setup_images

out = protocol_channel()
sys.path.insert(0, str(REPO / "test" / "python"))

import numpy as np  # noqa: E402
import radio_reference as rr  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402


def synthetic(preset: str, device: str, dtype: torch.dtype = torch.float32, seed: int = 0) -> Any:
    """A random RadioReference with a preset's shapes, made on `device` (no 2.6 GB file to write)."""
    width, depth, heads, mlp = SHAPES[preset]
    g = torch.Generator(device=device).manual_seed(seed)

    def rand(*shape: int, std: float = 0.02, mean: float = 0.0) -> torch.Tensor:
        return (torch.randn(*shape, generator=g, device=device) * std + mean).to(dtype)

    blocks = [{
        "norm1.weight": rand(width, mean=1.0), "norm1.bias": rand(width),
        "attn.qkv.weight": rand(3 * width, width), "attn.qkv.bias": rand(3 * width),
        "attn.proj.weight": rand(width, width), "attn.proj.bias": rand(width),
        "norm2.weight": rand(width, mean=1.0), "norm2.bias": rand(width),
        "mlp.fc1.weight": rand(mlp, width), "mlp.fc1.bias": rand(mlp),
        "mlp.fc2.weight": rand(width, mlp), "mlp.fc2.bias": rand(width),
    } for _ in range(depth)]
    return rr.RadioReference(
        patch_size=16, width=width, depth=depth, mlp_width=mlp, num_heads=heads, num_prefix=10, num_cls=3,
        grid_size=128, summary_idxs=[0, 1],
        norm_mean=torch.tensor([0.481, 0.458, 0.408], device=device, dtype=dtype),
        norm_std=torch.tensor([0.269, 0.261, 0.276], device=device, dtype=dtype),
        embedder=rand(width, 3 * 16 * 16), pos_embed=rand(128 * 128, width), prefix_tokens=rand(10, width),
        blocks=blocks)


def move(ref: Any, device: str, dtype: torch.dtype | None) -> Any:
    """A copy of the reference model with every tensor on `device` (cast to `dtype` if given)."""
    def mv(t: Any) -> Any:
        if isinstance(t, torch.Tensor):
            return t.to(device=device, dtype=dtype if (dtype is not None and t.is_floating_point()) else t.dtype)
        if isinstance(t, tuple):
            return tuple(mv(v) for v in t)
        if isinstance(t, dict):
            return {k: mv(v) for k, v in t.items()}
        if isinstance(t, list):
            return [mv(v) for v in t]
        return t
    return dataclasses.replace(ref, **{f.name: mv(getattr(ref, f.name)) for f in dataclasses.fields(ref)
                                       if f.name != "config"})


def fused_attention(x, qkv_w, qkv_b, proj_w, proj_b, num_heads, lin=F.linear):  # type: ignore[no-untyped-def]
    n, t, c = x.shape
    qkv = lin(x, qkv_w, qkv_b).reshape(n, t, 3, num_heads, c // num_heads).permute(2, 0, 3, 1, 4)
    o = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
    return lin(o.transpose(1, 2).reshape(n, t, c), proj_w, proj_b)


FUSED = {
    "attention": fused_attention,
    "layer_norm": lambda x, w, b, eps: F.layer_norm(x, (x.shape[-1],), w, b, eps),
    "gelu_erf": F.gelu,
    "linear": F.linear,
}


@contextlib.contextmanager
def fused_ops(on: bool):  # type: ignore[no-untyped-def]
    saved = {k: getattr(rr, k) for k in FUSED}
    if on:
        for k, v in FUSED.items():
            setattr(rr, k, v)
    try:
        yield
    finally:
        for k, v in saved.items():
            setattr(rr, k, v)


def main() -> None:
    ap = argparse.ArgumentParser()
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", help="checkpoint folder (make-checkpoint)")
    src.add_argument("--synthetic", choices=sorted(SHAPES), help="random weights made in memory")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--prep-threads", type=int, default=0, help="b/bf: decode the next batch in N threads meanwhile")
    ap.add_argument("--no-fiftyone", action="store_true", help="no FiftyOne (paths a.loop, b, bf)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cuda = args.device.startswith("cuda")
    t0 = time.perf_counter()
    if args.checkpoint:
        ref32 = rr.load_checkpoint(args.checkpoint)
        if cuda:
            ref32 = move(ref32, args.device, None)
    else:
        ref32 = synthetic(args.synthetic, args.device)
    # Path b's model: fp32 on the CPU, bf16 weights on a GPU.
    refb = move(ref32, args.device, torch.bfloat16) if cuda else ref32
    bdtype = torch.bfloat16 if cuda else torch.float32
    if cuda:
        torch.cuda.synchronize()
    load_s = time.perf_counter() - t0

    state: dict[str, Any] = {"res": None, "images": [], "dataset": None}
    fo = None
    if not args.no_fiftyone:
        import fiftyone as fo  # noqa: F811

        fo.config.show_progress_bars = False
    pool = ThreadPoolExecutor(args.prep_threads) if args.prep_threads else None

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    def setup(msg: dict) -> dict:
        return setup_images(state, msg, fo)

    def run_a(kind: str) -> dict:
        from PIL import Image
        from reference_model import ReferenceCore, fiftyone_model

        core = ReferenceCore(ref32, state["res"], device=args.device)
        t0 = time.perf_counter()
        if kind == "loop":  # what FiftyOne's loop does, minus FiftyOne: decode, call, next
            for p in state["images"]:
                core.embed(np.asarray(Image.open(p).convert("RGB")))
        elif kind == "emb":
            state["dataset"].compute_embeddings(fiftyone_model(core), embeddings_field="a_emb", progress=False)
        else:
            state["dataset"].apply_model(fiftyone_model(core, "spatial"), "a_heatmap", progress=False)
        wall = time.perf_counter() - t0
        ends = [t0] + core.ends
        lat = [b - a for a, b in zip(ends, ends[1:])]
        return {"images": len(lat), "wall_s": wall, "lat": lat, "breakdown": core.stats}

    def load_batch(chunk: list[str], res: int) -> np.ndarray:
        from PIL import Image

        if pool is not None:
            return np.stack(list(pool.map(lambda p: clip_preprocess(Image.open(p), res), chunk)))
        return np.stack([clip_preprocess(Image.open(p), res) for p in chunk])

    def run_b(batch: int, fused: bool) -> dict:
        paths = state["images"]
        res = state["res"]
        chunks = [paths[i:i + batch] for i in range(0, len(paths), batch)]
        lat: list[float] = []
        prep = fwd = 0.0
        with fused_ops(fused), torch.inference_mode():
            sync()
            t0 = time.perf_counter()
            ahead = pool.submit(load_batch, chunks[0], res) if pool is not None else None
            for k, chunk in enumerate(chunks):
                ta = time.perf_counter()
                if ahead is not None:
                    x = ahead.result()
                    ahead = pool.submit(load_batch, chunks[k + 1], res) if k + 1 < len(chunks) else None  # type: ignore[union-attr]
                else:
                    x = load_batch(chunk, res)
                xt = torch.from_numpy(x).to(args.device, non_blocking=True)
                tb = time.perf_counter()
                summary, _features = refb.forward(xt, dtype=bdtype)
                summary.float().cpu().numpy()  # waits for the GPU
                tc = time.perf_counter()
                prep += tb - ta
                fwd += tc - tb
                lat += [tc - ta] * len(chunk)
            wall = time.perf_counter() - t0
        return {"images": len(lat), "wall_s": wall, "lat": lat,
                "breakdown": {"prep_s": prep, "forward_s": fwd, "images": len(lat)}}

    def run(msg: dict) -> dict:
        path, batch = msg["path"], int(msg.get("batch", 1))
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        if path in ("a.emb", "a.heat", "a.loop"):
            r = run_a(path[2:])
        elif path in ("b", "bf"):
            r = run_b(batch, path == "bf")
        else:
            raise ValueError(f"unknown path {path}")
        if cuda:
            r["gpu_peak_bytes"] = torch.cuda.max_memory_allocated()
        return r

    out.write(json.dumps({"ready": True, "pid": os.getpid(), "load_s": load_s, "torch": torch.__version__,
                          "threads": torch.get_num_threads(),
                          "gpu": torch.cuda.get_device_name() if cuda else None}) + "\n")
    serve_commands(out, {"setup": setup, "run": run})
    if state["dataset"] is not None:
        state["dataset"].delete()


if __name__ == "__main__":
    main()
