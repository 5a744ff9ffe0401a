"""Worker process for the sidecar paths, driven by bench/run.py over JSON lines.

  d       the sidecar called directly: client/grpc_client.py RadioClient.embed with JPEG file paths,
          one call per batch, calls one after another (summary output)
  e.emb   FiftyOne compute_embeddings through the zoo model (zoo.RadioModel)
  e.heat  FiftyOne apply_model (PCA heatmaps, fo.Heatmap) through the zoo model

The zoo package is imported from this working tree (the code the zoo source serves, imported as a
package the way FiftyOne imports a remote source) and its model is built the way ``load_model``
builds it (``make_local_model``: a LocalSidecar from the process-wide registry, shared by the summary
and the spatial model), with one addition: the sidecar's HTTP port is on, so the harness can read its
stage timings from /metrics. d and e share that one sidecar. (``foz.load_zoo_model`` through the
loopback hub reaches the same classes; it would add a 2.6 GB download and compile per run.)
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import socket
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, import_client, protocol_channel, serve_commands, setup_images  # noqa: E402


def import_zoo() -> Any:
    """The repo root as a package (FiftyOne imports a zoo source's __init__.py the same way)."""
    spec = importlib.util.spec_from_file_location("c_radio_zoo", REPO / "__init__.py",
                                                  submodule_search_locations=[str(REPO)])
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["c_radio_zoo"] = mod
    spec.loader.exec_module(mod)
    return mod


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(port: int) -> dict[str, float]:
    """radio_* histogram sums and counts from the sidecar's /metrics."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    vals: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("radio_") and ("_sum" in line.split(" ")[0] or "_count" in line.split(" ")[0]
                                          or line.startswith("radio_worker_busy_seconds_total")):
            key, _, v = line.rpartition(" ")
            vals[key] = vals.get(key, 0.0) + float(v)
    return vals


def main() -> None:
    out = protocol_channel()
    ap = argparse.ArgumentParser()
    ap.add_argument("--graph", required=True, help="compiled graph folder")
    ap.add_argument("--model-name", default="nv_labs/c-radio_v4-h")
    ap.add_argument("--provider", default="cpu")
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--no-fiftyone", action="store_true", help="only path d")
    ap.add_argument("--sidecar-arg", action="append", default=[], help="extra `serve` option (repeatable)")
    args = ap.parse_args()

    # Path d alone needs only the client package: machines without FiftyOne (a lent GPU) run it too.
    zoo_pkg = import_client("c_radio_zoo") if args.no_fiftyone else import_zoo()
    from c_radio_zoo.client.grpc_client import EmbedOptions
    from c_radio_zoo.client.options import parse_options
    from c_radio_zoo.client.sidecar import SidecarSpec, registry

    notes: list[str] = []
    if not args.no_fiftyone:
        from c_radio_zoo.zoo import RadioModel
    if not args.no_fiftyone and "preprocess" not in RadioModel.__dict__:
        # An older zoo.py assigned self.preprocess in __init__ without defining the property, and
        # fom.Model's raises: the model could not be constructed. Inert once zoo.py defines it.
        class RadioModel(RadioModel):  # type: ignore[no-redef]
            @property
            def preprocess(self) -> bool:
                return getattr(self, "_bench_preprocess", True)

            @preprocess.setter
            def preprocess(self, value: bool) -> None:
                self._bench_preprocess = value
        notes.append("zoo.RadioModel lacks a preprocess property (its __init__ fails); the bench adds one")

    http_port = free_port()
    graph_name = Path(args.graph).name
    spec = SidecarSpec(graphs=((graph_name, str(args.graph)),), provider=args.provider,
                       workers=args.workers, threads=args.threads, extra_args=("--http-port", str(http_port), *args.sidecar_arg))
    t0 = time.perf_counter()
    sidecar = registry.acquire(spec)
    start_s = time.perf_counter() - t0

    fo = None
    if not args.no_fiftyone:
        import fiftyone as fo  # noqa: F811

        fo.config.show_progress_bars = False
    state: dict[str, Any] = {"res": None, "images": [], "dataset": None, "models": {}}

    def model_for(kind: str) -> Any:
        key = (kind, state["res"])
        if key not in state["models"]:
            kw: dict[str, Any] = {"image_size": (state["res"], state["res"])}
            if args.workers:
                kw["workers"] = args.workers
            if args.threads:
                kw["threads"] = args.threads
            if kind == "heat":
                kw.update(output_type="spatial", apply_smoothing=True)
            options = parse_options(args.model_name, kw)
            # zoo.make_local_model, with the HTTP port added to the sidecar spec
            state["models"][key] = RadioModel(args.model_name, options, sidecar=registry.acquire(spec),
                                              graph_name=graph_name)
        return state["models"][key]

    def setup(msg: dict) -> dict:
        return setup_images(state, msg, fo)

    def run_d(batch: int, limit: int | None = None) -> dict:
        client = sidecar.client
        opts = EmbedOptions(output="SUMMARY", resolution=f"{state['res']}x{state['res']}", graph=graph_name)
        paths = state["images"][:limit]
        lat: list[float] = []
        t0 = time.perf_counter()
        for i in range(0, len(paths), batch):
            chunk = paths[i:i + batch]
            ta = time.perf_counter()
            results = client.embed([{"id": p, "path": p} for p in chunk], opts)
            _ = [r.array for r in results if r.ok]
            if not all(r.ok for r in results):
                raise RuntimeError(f"sidecar failed: {[r.error for r in results if not r.ok]}")
            lat += [time.perf_counter() - ta] * len(chunk)
        return {"images": len(lat), "wall_s": time.perf_counter() - t0, "lat": lat}

    def run_e(kind: str, batch: int) -> dict:
        model = model_for(kind)
        ends: list[float] = []
        inner = model._image_results

        def timed(a: Any, k: str) -> Any:
            r = inner(a, k)
            ends.extend([time.perf_counter()] * len(a))
            return r

        model._image_results = timed
        ds = state["dataset"]
        try:
            t0 = time.perf_counter()
            if kind == "emb":
                ds.compute_embeddings(model, embeddings_field="e_emb", batch_size=batch, progress=False)
            else:
                ds.apply_model(model, "e_heatmap", batch_size=batch, progress=False)
            wall = time.perf_counter() - t0
        finally:
            del model._image_results
        # An image's latency: from the end of the previous batch (or the start) to the end of its own,
        # i.e. FiftyOne's loading of the batch plus the sidecar call.
        lat, prev = [], t0
        for i in range(0, len(ends), batch):
            group = ends[i:i + batch]
            lat += [group[-1] - prev] * len(group)
            prev = group[-1]
        if model.failures:
            raise RuntimeError(f"zoo model failures: {model.failures[:3]}")
        return {"images": len(lat), "wall_s": wall, "lat": lat}

    def run(msg: dict) -> dict:
        path, batch = msg["path"], int(msg.get("batch", 1))
        before = scrape(http_port)
        if path == "d":
            r = run_d(batch)
        elif path == "e.emb":
            r = run_e("emb", batch)
        elif path == "e.heat":
            r = run_e("heat", batch)
        else:
            raise ValueError(f"unknown path {path}")
        after = scrape(http_port)
        r["server"] = {k: after[k] - before.get(k, 0.0) for k in after}
        return r

    def warmup(msg: dict) -> dict:
        """One call at the case's resolution: the first run of a new input shape allocates ORT's arena."""
        t0 = time.perf_counter()
        batch = int(msg.get("batch", 1))
        run_d(batch, limit=batch)
        return {"wall_s": time.perf_counter() - t0}

    assert sidecar.process is not None
    out.write(json.dumps({"ready": True, "pid": os.getpid(), "sidecar_pid": sidecar.process.pid,
                          "http_port": http_port, "sidecar_start_s": start_s,
                          "notes": notes}) + "\n")
    try:
        serve_commands(out, {"setup": setup, "run": run, "warmup": warmup})
    finally:
        for m in state["models"].values():
            m.close()
        registry.release(sidecar)
        if state["dataset"] is not None:
            state["dataset"].delete()
        _ = zoo_pkg


if __name__ == "__main__":
    main()
