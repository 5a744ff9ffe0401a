#!/usr/bin/env python3
"""Agreement between execution providers on real JPEGs, through the whole sidecar (decode, resize,
graph, outputs): the same photos at the same resolution, summary (the embedding) and patch features.

    python3 bench/gpu/agreement.py outputs --graph G --provider cpu --photos DIR --res 512 --out ref.npz
    python3 bench/gpu/agreement.py compare ref.npz other.npz          # prints one JSON line
    python3 bench/gpu/agreement.py heatmaps --graph G --provider cuda --photos DIR --images 128 --batch 32 --out maps.npz

With --spaces (adaptor names) it also takes each adaptor's summary and features, and with --prompts
the text tower's embeddings of those prompts (a graph compiled with --adaptors … --text).

Needs only the zoo's client package (no FiftyOne): it runs on a lent GPU machine too.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import types
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))
from common import import_client  # noqa: E402


def client_package() -> Any:
    """The zoo's client package, imported from this checkout without the zoo (no FiftyOne)."""
    import_client("radio_check")
    import radio_check.client.grpc_client as grpc_client
    import radio_check.client.sidecar as sidecar

    return types.SimpleNamespace(grpc_client=grpc_client, sidecar=sidecar)


PROMPTS = ["a photo of a dog", "A red car parked near the old river.", "", "an_image_of_a_cat!", "café crème brûlée – naïve"]


def outputs(graph: Path, provider: str, photos: list[Path], res: int, extra: tuple[str, ...] = (),
            spaces: tuple[str, ...] = (), prompts: list[str] | None = None) -> dict[str, Any]:
    """Summary [N, S] and patch features [N, h·w, C] of each photo, from a sidecar on provider (and
    `summary:<space>` / `features:<space>` per adaptor, `text` [P, D] for prompts)."""
    pkg = client_package()
    spec = pkg.sidecar.SidecarSpec(graphs=(("g", str(graph)),), provider=provider, extra_args=extra)
    t0 = time.perf_counter()
    sc = pkg.sidecar.LocalSidecar(spec, startup_timeout_s=600)
    sc.start()
    start_s = time.perf_counter() - t0
    try:
        got: dict[str, np.ndarray] = {}
        for space in ("", *spaces):
            for output, key in (("SUMMARY", "summary"), ("FEATURES_NLC", "features")):
                opts = pkg.grpc_client.EmbedOptions(output=output, resolution=f"{res}x{res}", graph="g", space=space)
                results = sc.client.embed([{"id": p.name, "path": str(p)} for p in photos], opts)
                bad = [f"{r.id}: {r.error}" for r in results if not r.ok]
                if bad:
                    raise RuntimeError(f"{provider}: {bad}")
                got[f"{key}:{space}" if space else key] = np.stack([np.asarray(r.array, dtype=np.float32) for r in results])
        if prompts:
            text = sc.client.embed_text(prompts, graph="g")
            bad = [r.error for r in text.results if not r.ok]
            if bad:
                raise RuntimeError(f"{provider}: {bad}")
            got["text"] = np.stack([r.embedding for r in text.results])
    finally:
        sc.stop()
    return {**got, "names": np.array([p.name for p in photos]), "start_s": start_s}


def heatmaps(graph: Path, provider: str, photos: list[Path], res: int, images: int, batch: int) -> dict[str, Any]:
    """PCA1 heatmaps (smoothed, 256²) of `images` photos (the set repeated) in calls of `batch`, as
    fast as the sidecar makes them: images/s after one warm-up call, and the maps of the photos."""
    pkg = client_package()
    sc = pkg.sidecar.LocalSidecar(pkg.sidecar.SidecarSpec(graphs=(("g", str(graph)),), provider=provider), startup_timeout_s=600)
    sc.start()
    try:
        opts = pkg.grpc_client.EmbedOptions(output="HEATMAP", resolution=f"{res}x{res}", graph="g",
                                             heatmap={"smoothing": True, "output_height": 256, "output_width": 256})
        paths = [photos[i % len(photos)] for i in range(images)]
        calls = [[{"id": f"{i}", "path": str(p)} for i, p in enumerate(paths[s:s + batch], s)] for s in range(0, images, batch)]
        sc.client.embed(calls[0], opts)
        t0 = time.perf_counter()
        maps = [r for call in calls for r in sc.client.embed(call, opts)]
        wall = time.perf_counter() - t0
        bad = [f"{r.id}: {r.error}" for r in maps if not r.ok]
        if bad:
            raise RuntimeError(f"{provider}: {bad[:3]}")
        return {"maps": np.stack([np.asarray(r.array) for r in maps[: len(photos)]]), "images_per_s": images / wall}
    finally:
        sc.stop()


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def compare(ref: dict[str, Any], other: dict[str, Any]) -> dict[str, Any]:
    """Summary cosine (min over photos) and relative L2; patch-feature cosine (mean and min)."""
    if list(ref["names"]) != list(other["names"]):
        raise ValueError("the two runs saw different photos")
    s, f = _cos(ref["summary"], other["summary"]), _cos(ref["features"], other["features"])
    rel = np.linalg.norm(other["summary"] - ref["summary"], axis=-1) / np.linalg.norm(ref["summary"], axis=-1)
    finite = bool(np.isfinite(other["summary"]).all() and np.isfinite(other["features"]).all())
    out = {"photos": int(len(ref["names"])), "summary_cos_min": float(s.min()), "summary_cos_mean": float(s.mean()),
           "summary_rel_l2_max": float(rel.max()), "features_cos_mean": float(f.mean()), "features_cos_min": float(f.min()),
           "finite": finite}
    # Adaptor spaces and text embeddings, where both runs have them: the worst cosine of each.
    for key in sorted(k for k in ref if (":" in k or k == "text") and k in other):
        out[f"{key}_cos_min"] = float(_cos(ref[key], other[key]).min())
        out["finite"] = out["finite"] and bool(np.isfinite(other[key]).all())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    o = sub.add_parser("outputs")
    o.add_argument("--graph", type=Path, required=True)
    o.add_argument("--provider", default="cpu")
    o.add_argument("--photos", type=Path, required=True)
    o.add_argument("--res", type=int, default=512)
    o.add_argument("--out", type=Path, required=True)
    o.add_argument("--spaces", default="", help="adaptor names, comma-separated (a graph compiled with --adaptors)")
    o.add_argument("--prompts", action="store_true", help="also embed a few prompts (a graph compiled with --text)")
    h = sub.add_parser("heatmaps")
    h.add_argument("--graph", type=Path, required=True)
    h.add_argument("--provider", default="cpu")
    h.add_argument("--photos", type=Path, required=True)
    h.add_argument("--res", type=int, default=512)
    h.add_argument("--images", type=int, default=128)
    h.add_argument("--batch", type=int, default=32)
    h.add_argument("--out", type=Path, required=True)
    c = sub.add_parser("compare")
    c.add_argument("ref", type=Path)
    c.add_argument("other", type=Path)
    args = ap.parse_args()
    if args.cmd == "outputs":
        photos = sorted(args.photos.glob("*.jpg"))
        spaces = tuple(s for s in args.spaces.split(",") if s)
        r = outputs(args.graph, args.provider, photos, args.res, spaces=spaces, prompts=PROMPTS if args.prompts else None)
        np.savez(args.out, **r)
        print(json.dumps({"photos": len(photos), "start_s": r["start_s"], "summary": list(r["summary"].shape),
                          "features": list(r["features"].shape)}))
    elif args.cmd == "heatmaps":
        r = heatmaps(args.graph, args.provider, sorted(args.photos.glob("*.jpg")), args.res, args.images, args.batch)
        np.savez(args.out, maps=r["maps"])
        print(json.dumps({"images_per_s": r["images_per_s"], "maps": list(r["maps"].shape)}))
    else:
        print(json.dumps(compare(dict(np.load(args.ref)), dict(np.load(args.other)))))


if __name__ == "__main__":
    main()
