"""CPU time per image outside inference, on a trivial graph: what the host pays to feed the model.

    .venv/bin/python bench/cpu_per_image.py --paths d          # the sidecar over gRPC (no FiftyOne)
    flock /tmp/fiftyone.lock .venv/bin/python bench/cpu_per_image.py --paths e   # through FiftyOne
    .venv/bin/python bench/cpu_per_image.py --trees before=/tmp/radio-base,after=.   # A/B, interleaved

Counts CPU time (user + sys), not wall time, of every process doing the work: the sidecar (split by
thread: main = gRPC, protobuf, batching, pixel conversion, output building, sharp's option
marshalling; vips = libvips's worker threads (JPEG decode, resize); pool = the libuv threads (sharp
calls, file reads) and V8's helper threads (GC); infer = the inference worker and its onnxruntime
threads, named "radio-infer"; post = "radio-post"), the Python process (main thread; gRPC's threads)
and, for FiftyOne, the MongoDB server it writes to. "Outside inference" is everything but the
inference threads. onnxruntime runs with 1 thread by default (--threads), as the inference on a GPU
host leaves the cores to the rest. After the warm-up the script checks that every tree returns
bit-identical embeddings for every input.

  d   client/grpc_client.py RadioClient.embed with JPEG paths, one call per batch, summary output
  e   FiftyOne dataset.compute_embeddings(model, batch_size=B) with the zoo model (zoo.RadioModel
      on a local sidecar, built as zoo.make_local_model builds it)

Inputs: photo-like JPEGs (quality 90) made from scikit-learn's sample photos (china.jpg,
flower.jpg): random crops, flips and colour gains, resized to each size, with mild sensor-like
noise so that big images carry detail. Target resolution: the default policy ("default") and a
fixed 512x512 ("512").

--trees runs several checkouts side by side in one invocation (each its own sidecar and Python
client, imported from that tree), in alternating order within each round, so ratios between them
come from runs made under the same conditions. A tree needs server/dist, proto/, package.json,
client/, zoo.py, __init__.py and node_modules (a symlink will do).

Per-thread CPU comes from /proc/<pid>/task/<tid>/stat (10 ms ticks); process totals from
/proc/<pid>/stat and getrusage. Writes bench/out/cpu/results.json (every run) and prints a table
of the medians over rounds, in CPU-ms per image.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import resource
import socket
import statistics
import sys
import threading
import time
import types
from pathlib import Path
from typing import Any

import numpy as np

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
CACHE = Path(os.environ.get("RADIO_BENCH_CACHE", Path.home() / ".cache" / "c-radio-bench"))
TICK_MS = 1000.0 / os.sysconf("SC_CLK_TCK")


# ----------------------------------------------------------------------------------------------
# CPU accounting
# ----------------------------------------------------------------------------------------------

def _stat_fields(path: str) -> tuple[str, list[str]]:
    text = Path(path).read_text()
    lp, rp = text.index("("), text.rindex(")")
    return text[lp + 1:rp], text[rp + 2:].split()


def proc_ms(pid: int) -> float:
    """utime + stime of a whole process (all its threads, dead ones included), ms."""
    _, f = _stat_fields(f"/proc/{pid}/stat")
    return (int(f[11]) + int(f[12])) * TICK_MS


def threads_ms(pid: int) -> dict[int, tuple[str, float]]:
    """tid → (thread name, utime + stime in ms) for the live threads of a process."""
    out: dict[int, tuple[str, float]] = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            name, f = _stat_fields(f"/proc/{pid}/task/{tid}/stat")
        except (OSError, ValueError):
            continue
        out[int(tid)] = (name, (int(f[11]) + int(f[12])) * TICK_MS)
    return out


def self_ms() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return (r.ru_utime + r.ru_stime) * 1000.0


def mongod_pids() -> list[int]:
    pids = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                if Path(f"/proc/{p}/comm").read_text().strip() == "mongod" and os.stat(f"/proc/{p}").st_uid == os.getuid():
                    pids.append(int(p))
            except OSError:
                pass
    return pids


def sidecar_group(pid: int, tid: int, name: str) -> str:
    if tid == pid:
        return "main"
    if name.startswith("radio-infer"):
        return "infer"
    if name.startswith("radio-post"):
        return "post"
    if name.startswith("libvips"):
        return "vips"
    return "pool"


class Snapshot:
    def __init__(self, sidecar_pid: int, mongods: list[int]) -> None:
        self.t = time.perf_counter()
        self.sidecar_pid = sidecar_pid
        self.sidecar_total = proc_ms(sidecar_pid)
        self.sidecar_threads = threads_ms(sidecar_pid)
        self.py_total = self_ms()
        self.py_main = time.thread_time() * 1000.0 if threading.current_thread() is threading.main_thread() else 0.0
        self.mongod = {p: proc_ms(p) for p in mongods}


def delta(a: Snapshot, b: Snapshot) -> dict[str, float]:
    """CPU ms spent between two snapshots, by component."""
    groups = {"main": 0.0, "pool": 0.0, "vips": 0.0, "infer": 0.0, "post": 0.0}
    pid = a.sidecar_pid
    for tid, (name, ms) in b.sidecar_threads.items():
        before = a.sidecar_threads.get(tid, (name, 0.0))[1]
        groups[sidecar_group(pid, tid, name)] += ms - before
    total = b.sidecar_total - a.sidecar_total
    # Threads that ended between the snapshots are only in the process total: count them as pool.
    groups["pool"] += total - sum(groups.values())
    py_total = b.py_total - a.py_total
    py_main = b.py_main - a.py_main
    mongo = sum(b.mongod[p] - a.mongod.get(p, b.mongod[p]) for p in b.mongod)
    return {
        "wall_ms": (b.t - a.t) * 1000.0,
        "sc_main": groups["main"], "sc_pool": groups["pool"], "sc_vips": groups["vips"], "sc_post": groups["post"],
        "sc_infer": groups["infer"], "sc_total": total,
        "py_main": py_main, "py_other": py_total - py_main, "py_total": py_total,
        "mongod": mongo,
    }


# ----------------------------------------------------------------------------------------------
# Inputs
# ----------------------------------------------------------------------------------------------

def photo_jpegs(root: Path, n: int, width: int, height: int, seed: int = 11) -> list[str]:
    """n photo-like JPEGs (quality 90) of width × height from scikit-learn's sample photos."""
    from PIL import Image
    from sklearn.datasets import load_sample_images

    root.mkdir(parents=True, exist_ok=True)
    paths = [root / f"photo{i:03d}_{width}x{height}.jpg" for i in range(n)]
    if all(p.exists() for p in paths):
        return [str(p) for p in paths]
    sources = [Image.fromarray(a) for a in load_sample_images().images]  # china.jpg, flower.jpg (640×427)
    rng = np.random.default_rng(seed)
    aspect = width / height
    for i, path in enumerate(paths):
        src = sources[i % len(sources)]
        sw, sh = src.size
        # A random crop of the target's aspect, 70–100 % of the largest that fits.
        cw = min(sw, int(sh * aspect))
        ch = int(cw / aspect)
        f = rng.uniform(0.7, 1.0)
        cw, ch = int(cw * f), int(ch * f)
        x, y = int(rng.integers(0, sw - cw + 1)), int(rng.integers(0, sh - ch + 1))
        img = src.crop((x, y, x + cw, y + ch))
        if rng.random() < 0.5:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        img = img.resize((width, height), Image.Resampling.BICUBIC)
        arr = np.asarray(img, dtype=np.float32) * rng.uniform(0.85, 1.15, 3)
        arr += rng.normal(0.0, 3.0, arr.shape)  # sensor-like noise: detail at every scale
        Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(path, quality=90)
    return [str(p) for p in paths]


def tiny_graph(root: Path = REPO, name: str = "") -> Path:
    """The tiny fp32 graph, compiled by the checkout at `root` (checkouts may write different graph formats)."""
    sys.path.insert(0, str(BENCH))
    from run import ensure_graph  # noqa: E402  (bench/run.py: make-checkpoint + compile, cached)

    return ensure_graph("tiny", "fp32", cli=root / "server" / "dist" / "cli.js", name=name)


# ----------------------------------------------------------------------------------------------
# Trees: a zoo package per checkout
# ----------------------------------------------------------------------------------------------

def import_tree(name: str, root: Path, fiftyone: bool) -> types.ModuleType:
    """The tree as package `cpu_<name>`; its __init__.py is not run (it imports FiftyOne)."""
    pkg_name = f"cpu_{name}"
    pkg = types.ModuleType(pkg_name)
    pkg.__path__ = [str(root)]  # type: ignore[attr-defined]
    sys.modules[pkg_name] = pkg
    for sub in ("client.grpc_client", "client.sidecar", "client.options") + (("zoo",) if fiftyone else ()):
        importlib.import_module(f"{pkg_name}.{sub}")
    return pkg


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Tree:
    def __init__(self, name: str, root: Path, graph: Path, args: argparse.Namespace, fiftyone: bool) -> None:
        self.name = name
        self.root = root
        self.pkg = import_tree(name, root, fiftyone)
        sidecar_mod = sys.modules[f"cpu_{name}.client.sidecar"]
        self.grpc = sys.modules[f"cpu_{name}.client.grpc_client"]
        self.options = sys.modules[f"cpu_{name}.client.options"]
        self.zoo = sys.modules.get(f"cpu_{name}.zoo")
        self.graph_name = graph.name
        extra = ("--http-port", str(free_port()))
        self.spec = sidecar_mod.SidecarSpec(graphs=((graph.name, str(graph)),), provider="cpu",
                                            workers=args.workers, threads=args.threads or None, extra_args=extra)
        self.registry = sidecar_mod.registry
        self.sidecar = self.registry.acquire(self.spec)
        self.models: dict[Any, Any] = {}
        self.args = args

    @property
    def pid(self) -> int:
        return self.sidecar.process.pid

    def model(self, res: str) -> Any:
        if res not in self.models:
            kw: dict[str, Any] = {}
            if res != "default":
                kw["image_size"] = (int(res), int(res))
            if self.args.workers:
                kw["workers"] = self.args.workers
            if self.args.threads:
                kw["threads"] = self.args.threads
            options = self.options.parse_options("nv_labs/c-radio_v4-h", kw)
            self.models[res] = self.zoo.RadioModel("nv_labs/c-radio_v4-h", options,
                                                   sidecar=self.registry.acquire(self.spec),
                                                   graph_name=self.graph_name)
        return self.models[res]

    def run_d(self, paths: list[str], res: str, batch: int, keep: list | None = None) -> dict[str, Any]:
        client = self.sidecar.client
        opts = self.grpc.EmbedOptions(output="SUMMARY", resolution="" if res == "default" else f"{res}x{res}",
                                      graph=self.graph_name)
        sizes = set()
        for i in range(0, len(paths), batch):
            results = client.embed([{"id": p, "path": p} for p in paths[i:i + batch]], opts)
            for r in results:
                if not r.ok:
                    raise RuntimeError(f"{r.id}: {r.error}")
                sizes.add(r.input_size)
                if keep is not None:
                    keep.append(np.array(r.array))
        return {"input_sizes": sorted(sizes)}

    def run_e(self, dataset: Any, res: str, batch: int) -> dict[str, Any]:
        model = self.model(res)
        dataset.compute_embeddings(model, embeddings_field="cpu_emb", batch_size=batch, progress=False)
        if model.failures:
            raise RuntimeError(f"zoo model failures: {model.failures[:3]}")
        return {}

    def close(self) -> None:
        for m in self.models.values():
            m.close()
        self.registry.release(self.sidecar)


# ----------------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------------

COMPONENTS = ("sc_main", "sc_pool", "sc_vips", "sc_post", "py_main", "py_other", "mongod")


def per_image(d: dict[str, float], n: int) -> dict[str, float]:
    out = {k: v / n for k, v in d.items()}
    out["outside"] = sum(out[k] for k in COMPONENTS)
    out["sidecar_outside"] = out["sc_total"] - out["sc_infer"]
    out["python_side"] = out["py_total"] + out["mongod"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trees", default=f"current={REPO}", help="name=root,... (checkouts to compare, interleaved)")
    ap.add_argument("--paths", default="d", help="d, e or d,e (e needs FiftyOne: run under flock /tmp/fiftyone.lock)")
    ap.add_argument("--sizes", default="640x480,4000x3000", help="JPEG sizes, WxH")
    ap.add_argument("--res", default="default,512", help="target resolutions: default and/or N (N×N)")
    ap.add_argument("--images", default="640x480=96,4000x3000=24", help="images per run for each size (SIZE=N,...)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--threads", type=int, default=1,
                    help="ORT intra-op threads (default 1: the inference leaves the other cores to the rest, as on a "
                         "GPU host, where it hardly uses the CPU; 0 = the sidecar's default, one per core)")
    ap.add_argument("--out", default=str(BENCH / "out" / "cpu" / "results.json"))
    args = ap.parse_args()

    paths = args.paths.split(",")
    use_fo = "e" in paths
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    counts = dict(kv.split("=") for kv in args.images.split(",")) if args.images else {}
    resolutions = args.res.split(",")
    images = {f"{w}x{h}": photo_jpegs(CACHE / "cpu-images", int(counts.get(f"{w}x{h}", 32)), w, h) for w, h in sizes}
    for key, ps in images.items():
        mb = statistics.mean(os.path.getsize(p) for p in ps) / 1e6
        print(f"[cpu] {len(ps)} JPEGs {key}, {mb:.2f} MB each on average", flush=True)

    fo = None
    datasets: dict[str, Any] = {}
    if use_fo:
        import fiftyone as fo  # noqa: F811

        fo.config.show_progress_bars = False
        for key, ps in images.items():
            ds = fo.Dataset()
            ds.add_samples([fo.Sample(filepath=p) for p in ps])
            datasets[key] = ds

    trees = []
    for item in args.trees.split(","):
        name, _, root = item.partition("=")
        root_dir = Path(root).resolve()
        graph = tiny_graph(root_dir, "" if root_dir == REPO.resolve() else name)
        trees.append(Tree(name, root_dir, graph, args, use_fo))
        print(f"[cpu] tree {name}: {Path(root).resolve()}, sidecar pid {trees[-1].pid}", flush=True)
    mongods = mongod_pids() if use_fo else []

    def one(tree: Tree, path: str, key: str, res: str) -> dict[str, Any]:
        snap = Snapshot(tree.pid, mongods)
        if path == "d":
            extra = tree.run_d(images[key], res, args.batch)
        else:
            extra = tree.run_e(datasets[key], res, args.batch)
        d = delta(snap, Snapshot(tree.pid, mongods))
        return {"tree": tree.name, "path": path, "size": key, "res": res, "images": len(images[key]),
                "ms": d, "per_image": per_image(d, len(images[key])), **extra}

    runs: list[dict[str, Any]] = []
    equal_outputs: list[dict[str, Any]] = []
    try:
        configs = [(p, k, r) for p in paths for k in images for r in resolutions]
        print("[cpu] warm-up", flush=True)
        for cfg in configs:
            for tree in trees:
                one(tree, *cfg)
        # Same outputs from every tree (the embeddings of each input, compared bit for bit).
        for key in images:
            for res in resolutions:
                outs = []
                for tree in trees:
                    outs.append([])
                    tree.run_d(images[key], res, args.batch, keep=outs[-1])
                for tree, o in zip(trees[1:], outs[1:]):
                    diff = max(float(np.max(np.abs(a - b))) for a, b in zip(outs[0], o))
                    same = all(np.array_equal(a, b) for a, b in zip(outs[0], o))
                    print(f"[cpu] {key} res={res}: {tree.name} vs {trees[0].name} embeddings "
                          f"{'bit-identical' if same else f'differ, max |Δ| {diff:.3g}'}", flush=True)
                    equal_outputs.append({"size": key, "res": res, "tree": tree.name, "identical": same, "max_abs_diff": diff})
        for rnd in range(args.rounds):
            order = trees if rnd % 2 == 0 else trees[::-1]
            for cfg in configs:
                for tree in order:
                    r = one(tree, *cfg)
                    r["round"] = rnd
                    runs.append(r)
                    pi = r["per_image"]
                    print(f"[cpu] round {rnd} {tree.name:>8} {cfg[0]} {cfg[1]:>9} res={cfg[2]:<7} "
                          f"outside {pi['outside']:6.2f}  sidecar main {pi['sc_main']:5.2f} pool {pi['sc_pool']:6.2f} vips {pi['sc_vips']:6.2f} "
                          f"python {pi['py_total']:5.2f} mongod {pi['mongod']:5.2f} | infer {pi['sc_infer']:6.2f} "
                          f"wall {pi['wall_ms']:6.2f} ms/image", flush=True)
    finally:
        for tree in trees:
            tree.close()
        for ds in datasets.values():
            ds.delete()

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "runs": runs, "outputs_vs_first_tree": equal_outputs}, indent=1))
    report(runs, [t.name for t in trees])


def report(runs: list[dict[str, Any]], names: list[str]) -> None:
    """Medians over rounds, CPU-ms per image; and per-round ratios of each tree to the first."""
    cols = ["outside", "sc_main", "sc_pool", "sc_vips", "sc_post", "py_main", "py_other", "mongod", "sc_infer", "wall_ms"]
    print("\n| path | JPEG | res | tree | " + " | ".join(cols) + " | input size |")
    print("|" + "---|" * (len(cols) + 5))
    keys = sorted({(r["path"], r["size"], r["res"]) for r in runs}, key=lambda k: (k[0], int(k[1].split("x")[0]), k[2]))
    for key in keys:
        for name in names:
            rs = [r for r in runs if (r["path"], r["size"], r["res"]) == key and r["tree"] == name]
            med = {c: statistics.median(r["per_image"][c] for r in rs) for c in cols}
            size = rs[0].get("input_sizes", "")
            print(f"| {key[0]} | {key[1]} | {key[2]} | {name} | " + " | ".join(f"{med[c]:.2f}" for c in cols) + f" | {size} |")
    if len(names) > 1:
        print("\nratio of CPU-ms outside inference per image, tree ÷ " + names[0] + " (median over rounds, min–max):")
        for key in keys:
            for name in names[1:]:
                ratios = []
                for rnd in sorted({r["round"] for r in runs}):
                    a = [r for r in runs if (r["path"], r["size"], r["res"], r["round"]) == (*key, rnd) and r["tree"] == names[0]]
                    b = [r for r in runs if (r["path"], r["size"], r["res"], r["round"]) == (*key, rnd) and r["tree"] == name]
                    if a and b:
                        ratios.append(b[0]["per_image"]["outside"] / a[0]["per_image"]["outside"])
                print(f"  {key[0]} {key[1]} res={key[2]} {name}/{names[0]}: {statistics.median(ratios):.3f} "
                      f"({min(ratios):.3f}–{max(ratios):.3f})")


if __name__ == "__main__":
    main()
