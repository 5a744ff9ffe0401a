"""What text costs next to images (issue 12): prompts, zero-shot classes and the siglip2-g head, on a
full-size random checkpoint, as a share of compute_embeddings over the same dataset. A benchmark,
not a test.

    .venv/bin/python bench/text_cost.py                       # C-RADIOv4-H, 4 images/round, 2 rounds
    .venv/bin/python bench/text_cost.py --preset so400m

Target: embedding 1,000 prompts, and zero-shot over 1,000 classes on a 1,000-image dataset, cost < 5 %
over compute_embeddings alone on this CPU. 1,000 full-size images at 512² take hours on 2 cores, so
this measures per-unit costs in one run and extrapolates linearly:

  image   wall ms per image, SUMMARY at 512×512, calls of --batch paths (the sidecar's CPU batching
          defaults: one 512² image per inference batch), on two graphs compiled from one checkpoint in
          one sidecar, interleaved round by round:
            backbone  `compile --checkpoint-dir` (the backbone alone, space "")
            text      `compile --checkpoint-dir --adaptors siglip2-g --text --siglip` (the graph the zoo builds
                      for embedding_space="text"; the heads run in every forward), space "siglip2-g"
  prompt  wall ms per prompt, EmbedText with prompts never sent before (the sidecar's text batch, 16 on
          a CPU; every prompt is padded to SigLIP's 64 tokens, so the cost does not depend on its words)
  hit     the same prompts again: the sidecar's per-(model, canonical prompt) cache
  math    client/prompts.py in this process: class_prompts + class_embeddings for 1,000 classes (1 and
          80 templates, the latter on random unit vectors), zero_shot_scores for 1,000 images × 1,000
          classes as the zoo calls it (per batch of --batch images; softmax and sigmoid)

  base(1,000 images)   = 1,000 × image(text graph)           compute_embeddings(embedding_space="text")
  extra(one template)  = 1,000 × prompt (the prompts) + 1,000 × prompt (the classes) + math
  extra(openai)        = 1,000 × prompt + 80,000 × prompt (80 templates × 1,000 classes) + math
  extra(cached)        = the same, every prompt a cache hit (a second run; the cache holds ~11k prompts)

The sidecar runs with its defaults (1 worker, one ORT thread per core). Random weights: the values
mean nothing, the shapes and so the costs are the real ones. The text tower is
google/siglip2-giant-opt-patch16-384's at its real size (1152 wide, MLP 4304, 27 layers, 16 heads,
256000-row embedding, projection 1536) with a small tokenizer (make-checkpoint --siglip-size full).
Checkpoints and graphs (~11 GB for H) are cached under $RADIO_BENCH_CACHE (default
~/.cache/c-radio-bench); --clean deletes this preset's after the run. Writes
bench/out/text_cost/<preset>.json and prints a table.
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(BENCH))

from common import import_client  # noqa: E402
from cpu_per_image import photo_jpegs, proc_ms  # noqa: E402
from run import CACHE, machine, sidecar_cli  # noqa: E402

client = import_client()
from c_radio_zoo.client import grpc_client  # noqa: E402
from c_radio_zoo.client import prompts as P
from c_radio_zoo.client import sidecar as sidecar_mod

N_DATASET = 1000
N_CLASSES = 1000
N_TEMPLATES = len(P.OPENAI_IMAGENET_TEMPLATES)


def log(msg: str) -> None:
    print(f"[text] {msg}", flush=True)


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# ----------------------------------------------------------------------------------------------
# Checkpoint and graphs
# ----------------------------------------------------------------------------------------------

def ensure_files(preset: str) -> tuple[Path, Path, list[Path]]:
    ckpt = CACHE / "ckpt" / f"{preset}-text"
    siglip = CACHE / "ckpt" / f"siglip2-g-full-{preset}"
    size = "tiny" if preset.startswith("tiny") else "full"  # tiny: a smoke run of this script, in seconds
    if not (ckpt / ".complete").exists():
        log(f"make-checkpoint --preset {preset} --with-adaptors --siglip-size {size} (random weights) → {ckpt}, {siglip}")
        t0 = time.perf_counter()
        shutil.rmtree(ckpt, ignore_errors=True)
        shutil.rmtree(siglip, ignore_errors=True)
        sidecar_cli("make-checkpoint", "--preset", preset, "--with-adaptors", "--siglip", str(siglip),
                    "--siglip-size", size, "--out", str(ckpt))
        (ckpt / ".complete").write_text("")
        log(f"  {time.perf_counter() - t0:.0f} s")
    graphs = {"backbone": CACHE / "graphs" / f"{preset}-backbone-fp32", "text": CACHE / "graphs" / f"{preset}-text-fp32"}
    for kind, out in graphs.items():
        if (out / ".complete").exists():
            continue
        args = ["compile", "--checkpoint-dir", str(ckpt), "--out", str(out), "--precision", "fp32"]
        if kind == "text":
            args += ["--adaptors", "siglip2-g", "--text", "--siglip", str(siglip)]
        log(f"{' '.join(args)}")
        t0 = time.perf_counter()
        shutil.rmtree(out, ignore_errors=True)
        sidecar_cli(*args)
        (out / ".complete").write_text("")
        log(f"  {time.perf_counter() - t0:.0f} s")
    return graphs["backbone"], graphs["text"], [ckpt, siglip, *graphs.values()]


def du_gb(paths: list[Path]) -> float:
    """GB on disk, each inode once (compile links the graphs' weights to the checkpoint's where it can)."""
    seen: dict[tuple[int, int], int] = {}
    for p in paths:
        for f in p.rglob("*"):
            if f.is_file() and not f.is_symlink():
                st = f.stat()
                seen[(st.st_dev, st.st_ino)] = st.st_blocks * 512
    return sum(seen.values()) / 1e9


# ----------------------------------------------------------------------------------------------
# Measurements
# ----------------------------------------------------------------------------------------------

def fresh_prompts(n: int, tag: str) -> list[str]:
    """n prompts never sent before (a per-run tag and a counter), CLIP-like in length."""
    words = ["dog", "cat", "bird", "car", "tree", "house", "flower", "boat", "train", "apple"]
    return [f"a photo of a {words[i % len(words)]}, number {i} of {tag}" for i in range(n)]


def timed(pid: int, fn: Any) -> tuple[float, float]:
    """(wall ms, sidecar CPU ms) of fn()."""
    c0, t0 = proc_ms(pid), time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1000.0, proc_ms(pid) - c0


def embed_images(cl: Any, graph: str, space: str, paths: list[str], res: int, batch: int) -> None:
    opts = grpc_client.EmbedOptions(output="SUMMARY", resolution=f"{res}x{res}", graph=graph, space=space)
    for i in range(0, len(paths), batch):
        for r in cl.embed([{"id": p, "path": p} for p in paths[i:i + batch]], opts):
            if not r.ok:
                raise RuntimeError(f"{r.id}: {r.error}")


def embed_text(cl: Any, graph: str, prompts: list[str]) -> Any:
    out = cl.embed_text(prompts, graph=graph)
    bad = [r for r in out.results if not r.ok]
    if bad:
        raise RuntimeError(f"{len(bad)} prompts failed; first: {bad[0].error}")
    return out


def zero_shot_math(dim: int, batch: int, rng: np.random.Generator) -> dict[str, float]:
    """ms for the client-side arithmetic of zero-shot over N_DATASET images × N_CLASSES classes."""
    classes = [f"class {i}" for i in range(N_CLASSES)]
    out: dict[str, float] = {}

    def unit(n: int) -> np.ndarray:
        x = rng.standard_normal((n, dim), dtype=np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    for name, templates in (("one", None), ("openai", P.OPENAI_IMAGENET_TEMPLATES)):
        t0 = time.perf_counter()
        per_class = P.class_prompts(classes, "A photo of", templates)
        flat = [p for ps in per_class for p in ps]
        out[f"prompts_{name}_ms"] = (time.perf_counter() - t0) * 1000.0
        emb = unit(len(flat))
        k = len(templates) if templates else 1
        t0 = time.perf_counter()
        matrix = P.class_embeddings([emb[i * k:(i + 1) * k] for i in range(N_CLASSES)])
        out[f"class_embeddings_{name}_ms"] = (time.perf_counter() - t0) * 1000.0
        del emb
    images = rng.standard_normal((N_DATASET, dim), dtype=np.float32)
    for scores in ("softmax", "sigmoid"):
        t0 = time.perf_counter()
        for i in range(0, N_DATASET, batch):
            logits, probs = P.zero_shot_scores(images[i:i + batch], matrix, 2.3, -10.0, scores)
            np.argmax(probs, axis=1)
        out[f"scores_{scores}_ms"] = (time.perf_counter() - t0) * 1000.0
    return out


# ----------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------

def summarize(runs: list[dict[str, Any]], math_ms: dict[str, float], key: str) -> dict[str, Any]:
    """Per-unit costs (medians over rounds) and the extrapolated scenarios, by wall_ms or cpu_ms."""
    rounds = sorted({r["round"] for r in runs})

    def per_unit(what: str) -> float:
        return statistics.median(r[key] / r["n"] for r in runs if r["what"] == what)

    def in_round(k: int, what: str) -> float:
        return next(r[key] / r["n"] for r in runs if r["round"] == k and r["what"] == what)

    img_bb, img_tx = per_unit("image_backbone"), per_unit("image_text")
    fresh, hit = per_unit("prompt_fresh"), per_unit("prompt_hit")
    # Ratios from units measured in the same round, then the median over rounds.
    head = statistics.median(in_round(k, "image_text") / in_round(k, "image_backbone") for k in rounds)
    per_prompt = statistics.median(in_round(k, "prompt_fresh") / in_round(k, "image_text") for k in rounds)
    per_hit = statistics.median(in_round(k, "prompt_hit") / in_round(k, "image_text") for k in rounds)
    base = N_DATASET * img_tx
    math_one = math_ms["prompts_one_ms"] + math_ms["class_embeddings_one_ms"] + math_ms["scores_softmax_ms"]
    math_openai = math_ms["prompts_openai_ms"] + math_ms["class_embeddings_openai_ms"] + math_ms["scores_softmax_ms"]
    scenarios = {
        "prompts_only": {"prompts": 1000, "per_image": per_prompt, "math_ms": 0.0},
        "zero_shot_only": {"prompts": N_CLASSES, "per_image": per_prompt, "math_ms": math_one},
        "one_template": {"prompts": 1000 + N_CLASSES, "per_image": per_prompt, "math_ms": math_one},
        "openai": {"prompts": 1000 + N_CLASSES * N_TEMPLATES, "per_image": per_prompt, "math_ms": math_openai},
        "one_template_cached": {"prompts": 1000 + N_CLASSES, "per_image": per_hit, "math_ms": math_one},
    }
    for s in scenarios.values():
        # prompts × (prompt ÷ image) × image: the per-round ratio carried to 1,000 images' cost.
        s["text_ms"] = s["prompts"] * s["per_image"] * img_tx
        s["extra_ms"] = s["text_ms"] + s["math_ms"]
        s["percent_of_images"] = 100.0 * s["extra_ms"] / base
    return {"image_backbone_ms": img_bb, "image_text_ms": img_tx, "siglip2_head_overhead": head - 1.0,
            "prompt_fresh_ms": fresh, "prompt_hit_ms": hit, "prompts_per_image": 1.0 / per_prompt,
            "base_1000_images_ms": base, "scenarios": scenarios}


def report(result: dict[str, Any]) -> dict[str, Any]:
    args, runs = result["args"], result["runs"]
    math_ms = result.get("math_ms") or result["summary"]["math_ms"]  # (the first saved runs kept it there)
    out = {key: summarize(runs, math_ms, key) for key in ("wall_ms", "cpu_ms")}
    w, c = out["wall_ms"], out["cpu_ms"]
    n_img = next(r["n"] for r in runs if r["what"] == "image_text")
    print(f"\nC-RADIOv4-{args['preset'].upper()} (random weights, fp32, sidecar CPU defaults), {args['res']}², "
          f"median over {args['rounds']} rounds of {n_img} images / {args['prompts']} prompts; "
          f"wall ms and the sidecar's CPU ms (user + sys, all threads):\n")
    print("| unit | wall ms | sidecar CPU ms |\n|---|---|---|")
    print(f"| image, backbone graph | {w['image_backbone_ms']:.0f} | {c['image_backbone_ms']:.0f} |")
    print(f"| image, text graph (siglip2-g heads) | {w['image_text_ms']:.0f} (+{100 * w['siglip2_head_overhead']:.1f} %) "
          f"| {c['image_text_ms']:.0f} (+{100 * c['siglip2_head_overhead']:.1f} %) |")
    print(f"| prompt, fresh | {w['prompt_fresh_ms']:.0f} (1 image = {w['prompts_per_image']:.1f} prompts) "
          f"| {c['prompt_fresh_ms']:.0f} (1 image = {c['prompts_per_image']:.1f} prompts) |")
    print(f"| prompt, cache hit | {w['prompt_hit_ms']:.2f} | {c['prompt_hit_ms']:.2f} |")
    print(f"| zero-shot scores, {N_DATASET} × {N_CLASSES}, softmax / sigmoid (Python) "
          f"| {math_ms['scores_softmax_ms']:.0f} / {math_ms['scores_sigmoid_ms']:.0f} | – |")
    print(f"| class_embeddings, {N_CLASSES} classes × 1 / × {N_TEMPLATES} templates (Python) "
          f"| {math_ms['class_embeddings_one_ms']:.0f} / {math_ms['class_embeddings_openai_ms']:.0f} | – |")
    print(f"\nextra over compute_embeddings(embedding_space=\"text\") of {N_DATASET} images "
          f"({w['base_1000_images_ms'] / 3.6e6:.1f} h wall here):\n")
    print("| scenario | prompts | extra, by wall | extra, by sidecar CPU |\n|---|---|---|---|")
    for name, s in w["scenarios"].items():
        print(f"| {name} | {s['prompts']:,} | {s['percent_of_images']:.2f} % | {c['scenarios'][name]['percent_of_images']:.2f} % |")
    return out


# ----------------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------------

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="h", choices=["h", "so400m", "tiny"],
                    help="tiny: the test-sized model and text tower, to check this script runs (its ratios mean nothing)")
    ap.add_argument("--images", type=int, default=4, help="images per graph per round")
    ap.add_argument("--prompts", type=int, default=32, help="fresh prompts per round (a multiple of 16 fills the CPU text batches)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--res", type=int, default=512)
    ap.add_argument("--batch", type=int, default=16, help="images per embed call (and per zero-shot scoring batch)")
    ap.add_argument("--clean", action="store_true", help="delete this preset's checkpoint and graphs afterwards")
    ap.add_argument("--out", default=None)
    ap.add_argument("--report-only", default=None, metavar="JSON", help="re-render the tables from a saved result")
    args = ap.parse_args()
    if args.report_only:
        report(json.loads(Path(args.report_only).read_text()))
        return

    t_setup = time.perf_counter()
    backbone, text, files = ensure_files(args.preset)
    log(f"checkpoint + graphs: {du_gb(files):.1f} GB on disk")
    paths = photo_jpegs(CACHE / "cpu-images", args.images, 640, 480)

    spec = sidecar_mod.SidecarSpec(graphs=(("backbone", str(backbone)), ("text", str(text))), provider="cpu")
    t0 = time.perf_counter()
    sc = sidecar_mod.registry.acquire(spec)
    pid, cl = sc.process.pid, sc.client
    log(f"sidecar pid {pid} ready in {time.perf_counter() - t0:.0f} s, RSS {rss_mib(pid):.0f} MiB")
    runs: list[dict[str, Any]] = []
    try:
        log("warm-up: one image per graph, one text batch")
        embed_images(cl, "backbone", "", paths[:1], args.res, args.batch)
        embed_images(cl, "text", "siglip2-g", paths[:1], args.res, args.batch)
        warm = embed_text(cl, "text", fresh_prompts(16, "warm-up"))
        dim = int(warm.results[0].embedding.shape[-1])
        log(f"text space {warm.space}, {dim} dims; sidecar RSS {rss_mib(pid):.0f} MiB")
        for rnd in range(args.rounds):
            order = [("backbone", ""), ("text", "siglip2-g")]
            if rnd % 2:
                order.reverse()
            for graph, space in order:
                wall, cpu = timed(pid, lambda: embed_images(cl, graph, space, paths, args.res, args.batch))  # noqa: B023 (run here)
                runs.append({"round": rnd, "what": f"image_{graph}", "n": len(paths), "wall_ms": wall, "cpu_ms": cpu})
                log(f"round {rnd} image {graph:>8}: {wall / len(paths):8.0f} ms/image (sidecar CPU {cpu / len(paths):.0f} ms)")
            prompts = fresh_prompts(args.prompts, f"round {rnd}")
            for what in ("prompt_fresh", "prompt_hit"):
                wall, cpu = timed(pid, lambda: embed_text(cl, "text", prompts))  # noqa: B023 (run here)
                runs.append({"round": rnd, "what": what, "n": len(prompts), "wall_ms": wall, "cpu_ms": cpu})
                log(f"round {rnd} {what:>12}: {wall / len(prompts):8.2f} ms/prompt (sidecar CPU {cpu / len(prompts):.2f} ms)")
        rss = rss_mib(pid)
    finally:
        sidecar_mod.registry.release(sc)

    log("zero-shot arithmetic (this process)")
    math_ms = zero_shot_math(dim, args.batch, np.random.default_rng(0))

    result = {"args": vars(args), "machine": machine(), "runs": runs, "math_ms": math_ms, "dim": dim,
              "sidecar_rss_mib": rss, "wall_s": time.perf_counter() - t_setup}
    result["summary"] = report(result)
    out = Path(args.out or BENCH / "out" / "text_cost" / f"{args.preset}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    log(f"wrote {out}")
    if args.clean:
        for p in files:
            shutil.rmtree(p, ignore_errors=True)
        log("deleted the checkpoint and graphs")


if __name__ == "__main__":
    main()
