"""The sidecar path's fixed costs, model-independent: gRPC round trip, request / response
serialization in the Python client, and the sidecar's per-image stages for a few call shapes.

    .venv/bin/python bench/profile_sidecar.py [--graph DIR] [--res 512] [--images 16]

Uses a tiny graph by default (inference ~10 ms), so what is left is overhead. The stage timings
come from the sidecar's /metrics histograms, read before and after each call shape.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import numpy as np  # noqa: E402
from common import make_images  # noqa: E402
from run import CACHE, ensure_graph  # noqa: E402
from zoo_worker import free_port, import_zoo, scrape  # noqa: E402


def timeit(fn, n: int = 20) -> float:  # type: ignore[no-untyped-def]
    fn()
    ts = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--graph", help="compiled graph (default: the tiny preset's)")
    ap.add_argument("--res", type=int, default=512)
    ap.add_argument("--images", type=int, default=16)
    args = ap.parse_args()
    graph = Path(args.graph) if args.graph else ensure_graph("tiny", "fp32")
    images = make_images(CACHE / "images", args.images)

    import_zoo()
    from c_radio_zoo.client import messages as m
    from c_radio_zoo.client.grpc_client import EmbedOptions, RadioClient, _result
    from c_radio_zoo.client.sidecar import LocalSidecar, SidecarSpec

    port = free_port()
    sc = LocalSidecar(SidecarSpec(graphs=(("g", str(graph)),), extra_args=("--http-port", str(port))))
    sc.start()
    client = sc.client
    assert client is not None
    rows: list[tuple[str, float]] = []
    try:
        rows.append(("gRPC Info round trip (unix socket)", timeit(lambda: client.info())))
        opts = EmbedOptions(output="SUMMARY", resolution=f"{args.res}x{args.res}")
        inputs = [{"id": p, "path": p} for p in images[:16]]
        rows.append(("encode a 16-path request", timeit(lambda: RadioClient._request(inputs, opts).SerializeToString())))
        raw = [{"id": "x", "raw": np.zeros((480, 640, 3), np.uint8)} for _ in range(16)]
        rows.append(("encode a 16-image raw-pixel request (640×480 RGB)", timeit(lambda: RadioClient._request(raw, opts).SerializeToString(), 5)))
        for name, shape, dtype, code in [("summary 2560 × f32", (2560,), np.float32, "DTYPE_FLOAT32"),
                                         ("heatmap 512 × 512 u8", (512, 512), np.uint8, "DTYPE_UINT8"),
                                         ("features NCHW 1280 × 32 × 32 f32", (1280, 32, 32), np.float32, "DTYPE_FLOAT32")]:
            resp = m.EmbedResponse()
            r = resp.results.add()
            r.id = "x"
            t = r.output.tensor
            t.dtype = m.enum_value("radio.v1.DType", code)
            t.shape.extend(shape)
            t.data = np.zeros(shape, dtype).tobytes()
            wire = resp.SerializeToString()
            rows.append((f"decode one result: {name} ({len(wire) / 1e6:.2f} MB)",
                         timeit(lambda: [_result(x).array for x in m.EmbedResponse.FromString(wire).results])))  # noqa: B023 (run here)
        # Per-image stages for calls of 1 and 16 images.
        stage_rows = []
        for b in (1, 4, 16):
            client.embed(inputs[:b], opts)  # warm this shape
            before = scrape(port)
            t0 = time.perf_counter()
            calls = max(1, 16 // b)
            for _ in range(calls):
                client.embed(inputs[:b], opts)
            wall = time.perf_counter() - t0
            after = scrape(port)
            d = {k: after[k] - before.get(k, 0.0) for k in after}
            n = b * calls
            bs = d.get('radio_batch_size_sum{graph="g"}', 0)
            bc = d.get('radio_batch_size_count{graph="g"}', 1)
            stage_rows.append((b, wall / n, d.get('radio_inference_seconds_sum{graph="g"}', 0) / n,
                               d.get("radio_preprocess_seconds_sum", 0) / n, d.get("radio_queue_time_seconds_sum", 0) / n,
                               bs / bc))
    finally:
        sc.stop()
    print(f"graph {graph.name}; {args.res}² ; 640×480 JPEG paths\n")
    print("| what | median ms |\n|---|---|")
    for name, v in rows:
        print(f"| {name} | {v * 1000:.2f} |")
    print("\n| images per call | wall ms / image | inference | preprocess (decode + resize) | queue (batching wait) | mean ORT batch |")
    print("|---|---|---|---|---|---|")
    for b, wall, inf, pre, q, mb in stage_rows:
        print(f"| {b} | {wall * 1000:.1f} | {inf * 1000:.1f} | {pre * 1000:.1f} | {q * 1000:.1f} | {mb:.1f} |")


if __name__ == "__main__":
    main()
