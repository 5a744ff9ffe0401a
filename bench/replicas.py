"""Throughput of N sidecar replicas behind one round_robin target vs one replica, on loopback.

    .venv/bin/python bench/replicas.py --replicas 3 --clients 6 --images 240 --threads 1

Starts `radio-sidecar serve` on 127.0.0.2.. (a tiny test graph, or --graph DIR), then `--clients`
threads each embed their share of the images through ONE RadioClient on
"ipv4:127.0.0.2:P,127.0.0.3:P,..." (what server="ipv4:..." / "dns:///..." gives the zoo), in calls
of --batch images. Prints images/s for 1 replica and for N, and the ratio.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from client.grpc_client import EmbedOptions, RadioClient  # noqa: E402
from client.node_runtime import node_executable  # noqa: E402


def cli(*args: str) -> None:
    subprocess.run([node_executable(), str(REPO / "server/dist/cli.js"), *args], check=True, capture_output=True)


def start(graph: Path, host: str, threads: int) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([node_executable(), str(REPO / "server/dist/cli.js"), "serve", "--graph", f"m={graph}",
                             "--host", host, "--port", "0", "--threads", str(threads)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env={**os.environ, "RADIO_LOG_LEVEL": "warn"})
    assert proc.stdout is not None
    ready = json.loads(proc.stdout.readline())
    return proc, f"{host}:{ready['grpcPort']}"


def run(target: str, images: list[bytes], clients: int, batch: int) -> float:
    client = RadioClient(target, max_images_per_call=batch)
    client.embed([{"id": "warm", "encoded": images[0]}] * 4, EmbedOptions(resolution="224x224"))
    shares = [images[k::clients] for k in range(clients)]
    errors: list[BaseException] = []

    def work(share: list[bytes]) -> None:
        try:
            out = client.embed([{"id": str(i), "encoded": b} for i, b in enumerate(share)], EmbedOptions(resolution="224x224"))
            assert all(r.ok for r in out)
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    t0 = time.perf_counter()
    ts = [threading.Thread(target=work, args=(s,)) for s in shares]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    dt = time.perf_counter() - t0
    client.close()
    assert not errors, errors
    return len(images) / dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--replicas", type=int, default=3)
    ap.add_argument("--clients", type=int, default=6)
    ap.add_argument("--images", type=int, default=240)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1, help="ORT threads per replica")
    ap.add_argument("--graph", type=Path, help="compiled graph folder (default: a tiny test graph)")
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-replicas-"))
    graph = a.graph
    if graph is None:
        cli("make-checkpoint", "--preset", "tiny", "--out", str(tmp / "ckpt"))
        cli("compile", "--checkpoint-dir", str(tmp / "ckpt"), "--out", str(tmp / "graph"))
        graph = tmp / "graph"
    rng = np.random.default_rng(0)
    images = []
    for _ in range(a.images):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)).save(buf, format="JPEG", quality=90)
        images.append(buf.getvalue())
    procs = [start(graph, f"127.0.0.{2 + i}", a.threads) for i in range(a.replicas)]
    try:
        one = run(procs[0][1], images, a.clients, a.batch)
        many = run("ipv4:" + ",".join(addr for _, addr in procs), images, a.clients, a.batch)
    finally:
        for p, _ in procs:
            p.kill()
        shutil.rmtree(tmp, ignore_errors=True)
    cores = len(os.sched_getaffinity(0))
    print(json.dumps({"cores": cores, "replicas": a.replicas, "clients": a.clients, "images": a.images,
                      "threads_per_replica": a.threads, "one_replica_img_s": round(one, 1),
                      f"{a.replicas}_replicas_img_s": round(many, 1), "ratio": round(many / one, 2)}))


if __name__ == "__main__":
    main()
