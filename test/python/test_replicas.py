"""Three sidecar replicas behind ONE balanced gRPC target, on loopback: the cluster shape of
docs/deploying.md without a cluster.

Three `radio-sidecar serve` processes on 127.0.0.2, 127.0.0.3 and 127.0.0.4 (all loopback on Linux,
so no token is required; they get one anyway, as in the cluster) serve the same tiny graph. The zoo
model is loaded with server="ipv4:127.0.0.2:P1,127.0.0.3:P2,127.0.0.4:P3": gRPC's static multi-address
target, one channel, round_robin. (In a cluster the target is dns:///<headless service>:50051; DNS
answers cannot be faked in-process, so the ipv4: resolver stands in for it: the same channel and the
same load-balancing policy, only the list of addresses comes from elsewhere.)

FiftyOne's compute_embeddings over 60 samples spreads its calls over the three; one replica is
SIGKILLed while a call to it is streaming. Every sample still gets exactly one embedding, equal to a
single-sidecar run's.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import fiftyone as fo
import numpy as np
import pytest
from test_reliability import MODEL, compute_embeddings_counted, jpeg_bytes, radio  # noqa: F401 — registers the radio_zoo_under_test package: first

# isort: split
from radio_zoo_under_test.client import grpc_client  # noqa: E402
from sidecar_cli import REPO, compile_graph, make_checkpoint

TOKEN = "replica-token-5a1f"
HOSTS = ("127.0.0.2", "127.0.0.3", "127.0.0.4")
pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="127.0.0.2-4 are loopback on Linux only")


@pytest.fixture(scope="module")
def graph(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("graph")
    return compile_graph(make_checkpoint(root / "ckpt", "tiny"), root / "fp32")


@contextmanager
def replica(graph: Path, host: str) -> Iterator[dict[str, Any]]:
    """`radio-sidecar serve` on host:any-port (gRPC) and host:any-port (HTTP metrics)."""
    node = shutil.which("node")
    assert node, "node is not on PATH"
    proc = subprocess.Popen([node, str(REPO / "server" / "dist" / "cli.js"), "serve", "--graph", f"tiny={graph}",
                             "--host", host, "--port", "0", "--http-port", "auto", "--threads", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "RADIO_LOG_LEVEL": "warn", "RADIO_TOKEN": TOKEN})
    try:
        assert proc.stdout is not None and proc.stderr is not None
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the sidecar on {host} exited ({proc.wait()}):\n{proc.stderr.read()}")
        ready = json.loads(line)
        yield {**ready, "host": host, "proc": proc, "address": f"{host}:{ready['grpcPort']}"}
    finally:
        proc.kill()
        proc.wait(10)


def images_done(r: dict[str, Any]) -> float:
    """The replica's radio_images_total, over its HTTP /metrics."""
    text = urllib.request.urlopen(f"http://{r['host']}:{r['httpPort']}/metrics", timeout=10).read().decode()
    return sum(float(line.rpartition(" ")[2]) for line in text.splitlines()
               if line.startswith("radio_images_total ") or line.startswith("radio_images_total{"))


def load(server: Any) -> Any:
    """The zoo's own load_model with server= (the path foz.load_zoo_model takes for remote sidecars)."""
    return radio.load_model(MODEL, "/nonexistent/unused-for-remote.json", server=server, token=TOKEN)


@pytest.fixture
def samples(tmp_path: Path) -> Iterator[fo.Dataset]:
    ds = fo.Dataset()
    paths = []
    for i in range(60):
        p = tmp_path / f"img{i:02d}.jpg"
        p.write_bytes(jpeg_bytes(48 + 8 * (i % 4), 64 + 8 * (i % 3), i))
        paths.append(str(p))
    ds.add_samples([fo.Sample(filepath=p) for p in paths])
    try:
        yield ds
    finally:
        ds.delete()


def test_three_replicas_one_target_one_killed_mid_call(graph: Path, samples: fo.Dataset) -> None:
    with ExitStack() as stack:
        replicas = [stack.enter_context(replica(graph, h)) for h in HOSTS]
        target = "ipv4:" + ",".join(r["address"] for r in replicas)
        victim = replicas[1]

        # The reference: the same samples through one sidecar (a plain host:port server=).
        single = load(replicas[0]["address"])
        samples.compute_embeddings(single, embeddings_field="ref", batch_size=5)
        single.close()
        before = [images_done(r) for r in replicas]
        assert before[1] == before[2] == 0 and before[0] == 60

        model = load(target)
        assert len(model._client._channels) == 1, "one channel for the three replicas"
        calls: list[dict[str, Any]] = []
        victim_images: dict[str, float] = {}
        real_stream = grpc_client.RadioClient._stream

        def stream_noting_peer(self: Any, request: Any, timeout: float | None) -> Iterator[Any]:
            """RadioClient._stream, plus: which replica answers (Python's client side has no peer(), and
            calls are one at a time: the replica whose radio_images_total moved), and a SIGKILL of the
            victim after the first result of its second call (its first call made its metrics > 0)."""
            live = [r for r in replicas if r["proc"].poll() is None]
            start = {r["host"]: images_done(r) for r in live}
            note: dict[str, Any] = {"asked": len(request.images), "received": 0, "peer": None, "error": None}
            calls.append(note)
            try:
                for result in real_stream(self, request, timeout):
                    note["received"] += 1
                    if note["peer"] is None:
                        moved = [r["host"] for r in live if images_done(r) > start[r["host"]]]
                        assert len(moved) == 1, moved
                        note["peer"] = moved[0]
                    yield result
                    if (note["peer"] == victim["host"] and not victim_images and note["received"] == 1
                            and sum(c["peer"] == victim["host"] for c in calls) == 2):
                        victim_images["before_kill"] = images_done(victim)
                        os.kill(victim["proc"].pid, signal.SIGKILL)
                        victim["proc"].wait(10)
            except Exception as err:
                note["error"] = err
                raise

        try:
            seen = compute_embeddings_counted(samples, model, stream_noting_peer, embeddings_field="e", batch_size=5)
        finally:
            model.close()

        # The kill happened mid-call: that call failed with some of its results in, and the images
        # without a result went to the other replicas.
        failed = [c for c in calls if c["error"] is not None]
        assert victim_images, f"the victim never got a second call: {[(c['peer'], c['asked']) for c in calls]}"
        assert len(failed) == 1 and failed[0]["peer"] == victim["host"], failed
        assert failed[0]["received"] < failed[0]["asked"], "killed while the call was still streaming"
        # Every replica did work: the victim (read just before the kill) and the two survivors.
        survivors = [images_done(r) - b for r, b in zip((replicas[0], replicas[2]), (before[0], before[2]))]
        assert victim_images["before_kill"] > 0 and all(n > 0 for n in survivors), (victim_images, survivors)
        assert {c["peer"] for c in calls} == set(HOSTS), [c["peer"] for c in calls]

        # Exactly one embedding per sample, none lost, none None, equal to the single-sidecar run's.
        paths = samples.values("filepath")
        assert seen == {p: 1 for p in paths}, "every sample labelled exactly once"
        refs, got = samples.values("ref"), samples.values("e")
        assert all(e is not None for e in got)
        np.testing.assert_allclose(np.stack(got), np.stack(refs), atol=1e-6, rtol=0)
        print(f"3 replicas behind {target}: {len(calls)} calls; victim {victim['host']} SIGKILLed after "
              f"{failed[0]['received']} of {failed[0]['asked']} results of its 2nd call "
              f"({int(victim_images['before_kill'])} images done before); survivors did {[int(n) for n in survivors]}; "
              f"60 samples labelled once each, max |diff| vs one sidecar "
              f"{float(np.max(np.abs(np.stack(got) - np.stack(refs)))):.2e}")
