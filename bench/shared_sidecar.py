"""Two Python processes running FiftyOne's compute_embeddings at the same time: on one shared
sidecar (shared=True, the default) vs each on its own private one (shared=False). Reports the mean
onnxruntime batch size (radio_batch_size: sum / count), the batches holding images of more than one
call (radio_batch_calls > 1), and the total throughput (both processes' images over the wall time
from the first start to the last finish).

    .venv/bin/python bench/shared_sidecar.py [--images 96] [--batch-size 2] [--image-size 224] [--graph DIR]

The model is this repository's zoo code (imported directly) on a compiled graph (default: the tiny
test checkpoint, compiled once into the work dir); FiftyOne runs on a private database.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

CHILD = r"""
import importlib.util, json, os, sys, time
from pathlib import Path
repo, graph, mode, paths, go, batch, size = sys.argv[1:8]
spec = importlib.util.spec_from_file_location("radio_zoo", Path(repo) / "__init__.py", submodule_search_locations=[repo])
mod = importlib.util.module_from_spec(spec); sys.modules["radio_zoo"] = mod; spec.loader.exec_module(mod)
from radio_zoo.client.options import parse_options
from radio_zoo.client.shared import http_get, parse_metrics
from radio_zoo.zoo import make_local_model
import fiftyone as fo
M = "nv_labs/c-radio_v4-h"
opts = parse_options(M, {"shared": mode == "shared", "image_size": (int(size), int(size))})
model = make_local_model(M, opts, {"fp32": Path(graph)}, "fp32", "cpu")
ds = fo.Dataset()
ds.add_samples([fo.Sample(filepath=p) for p in json.loads(Path(paths).read_text())])
print(json.dumps({"event": "loaded", "pid": model._sidecar.pid}), flush=True)
while not os.path.exists(go):
    time.sleep(0.005)
t0 = time.time()
ds.compute_embeddings(model, embeddings_field="e", batch_size=int(batch))
t1 = time.time()
out = {"event": "done", "start": t0, "end": t1, "n": len(ds), "labelled": sum(v is not None for v in ds.values("e")),
       "pid": model._sidecar.pid}
if mode == "private":
    out["metrics"] = parse_metrics(http_get(os.environ["RADIO_HTTP_SOCKET"], "/metrics"))
print(json.dumps(out), flush=True)
ds.delete()
model.close()
"""


def _events(proc: subprocess.Popen, want: str) -> dict:
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("{") and json.loads(line).get("event") == want:
            return json.loads(line)
    raise RuntimeError(f"child exited ({proc.wait()}) before {want}")


def _summary(m: dict[str, float]) -> tuple[float, float, float]:
    count, total = m["radio_batch_size_count"], m["radio_batch_size_sum"]
    single = sum(v for k, v in m.items() if k.startswith("radio_batch_calls_bucket{") and 'le="1"' in k)
    return count, total, count - single


def run(mode: str, work: Path, graph: Path, paths_file: Path, n: int, batch: int, size: int) -> dict:
    sys.path.insert(0, str(REPO))
    from client.shared import http_get, parse_metrics

    go = work / f"go-{mode}"
    runtime = Path(tempfile.mkdtemp(prefix="rr-bench-", dir="/tmp"))
    procs = []
    for i in range(2):
        env = {**os.environ, "RADIO_RUNTIME_DIR": str(runtime)}
        if mode == "private":
            env["RADIO_HTTP_SOCKET"] = str(runtime / f"private-{i}.http.sock")
        procs.append(subprocess.Popen([sys.executable, "-c", CHILD, str(REPO), str(graph), mode, str(paths_file), str(go),
                                       str(batch), str(size)], stdout=subprocess.PIPE, text=True, env=env))
    pids = [_events(p, "loaded")["pid"] for p in procs]
    go.touch()
    done = [_events(p, "done") for p in procs]
    for p in procs:
        p.wait(120)
    assert all(d["labelled"] == d["n"] == n for d in done), done
    wall = max(d["end"] for d in done) - min(d["start"] for d in done)
    if mode == "shared":
        (meta,) = runtime.glob("*.json")
        m = parse_metrics(http_get(runtime / f"{meta.stem}.http.sock", "/metrics"))
        count, total, mixed = _summary(m)
        pid = json.loads(meta.read_text())["pid"]
        os.kill(pid, 15)
    else:
        count = total = mixed = 0.0
        for d in done:
            c, t, x = _summary(d["metrics"])
            count, total, mixed = count + c, total + t, mixed + x
    return {"mode": mode, "sidecars": len(set(pids)), "images": int(total), "batches": int(count),
            "mean_batch": total / count, "mixed_batches": int(mixed), "wall_s": wall, "images_per_s": 2 * n / wall}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=96, help="images per process")
    ap.add_argument("--batch-size", type=int, default=2, help="compute_embeddings batch_size (images per call)")
    ap.add_argument("--image-size", type=int, default=224, help="square inference size")
    ap.add_argument("--graph", type=Path, help="a compiled graph folder (default: the tiny test checkpoint)")
    ap.add_argument("--repeats", type=int, default=1)
    a = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-shared-"))
    for k, v in {"FIFTYONE_DATABASE_DIR": work / "db", "FIFTYONE_DO_NOT_TRACK": "true",
                 "FIFTYONE_DATABASE_VALIDATION": "false", "FIFTYONE_SHOW_PROGRESS_BARS": "false",
                 "FIFTYONE_CONFIG_PATH": work / "fo.json"}.items():
        os.environ.setdefault(k, str(v))
    sys.path.insert(0, str(REPO / "test" / "python"))
    import numpy as np
    from PIL import Image
    from sidecar_cli import compile_graph, make_checkpoint

    graph = a.graph or compile_graph(make_checkpoint(work / "ckpt", "tiny"), work / "fp32")
    rng = np.random.default_rng(0)
    paths = []
    for i in range(a.images):
        p = work / f"img{i}.jpg"
        Image.fromarray(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)).save(p, quality=90)
        paths.append(str(p))
    paths_file = work / "paths.json"
    paths_file.write_text(json.dumps(paths))
    import fiftyone.core.odm as foo

    foo.get_db_conn()  # starts the private database once, before the children attach to it

    print(f"# two processes x {a.images} images (640x480 JPEG, inferred at {a.image_size}^2), "
          f"compute_embeddings(batch_size={a.batch_size}), graph {graph}, {os.cpu_count()} cores")
    for r in range(a.repeats):
        for mode in ("private", "shared"):
            res = run(mode, work, graph, paths_file, a.images, a.batch_size, a.image_size)
            print(json.dumps({**res, "repeat": r}), flush=True)


if __name__ == "__main__":
    main()
