"""Reliability and security from Python: the bad-input corpus (test/corpus/make-corpus.ts) in a
FiftyOne dataset with skip_failures; the sidecar SIGKILLed in the middle of a call; a full queue
(RESOURCE_EXHAUSTED) that the client rides out with backoff; token and TLS with the Python client and
the remote zoo model.

The model is this repository's own zoo code (the package at the repo root, imported directly) on a
tiny compiled graph, run by FiftyOne's compute_embeddings: the same RadioModel that
foz.load_zoo_model returns, without the zoo download machinery (test_fiftyone_zoo.py covers that).
"""
from __future__ import annotations

import http.server
import importlib.util
import json
import logging
import mimetypes
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import fiftyone as fo
import numpy as np
import pytest
from PIL import Image
from sidecar_cli import REPO, compile_graph, make_checkpoint

MODEL = "nv_labs/c-radio_v4-h"


def _import_repo_package() -> Any:
    """The repo root as a package (it is one: the zoo source), under a name of our own."""
    name = "radio_zoo_under_test"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, REPO / "__init__.py", submodule_search_locations=[str(REPO)])
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


radio = _import_repo_package()
from radio_zoo_under_test.client import grpc_client  # noqa: E402
from radio_zoo_under_test.client.options import parse_options  # noqa: E402
from radio_zoo_under_test.zoo import make_local_model, make_remote_model  # noqa: E402


@pytest.fixture(scope="module")
def graph(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("graph")
    return compile_graph(make_checkpoint(root / "ckpt", "tiny"), root / "fp32")


def local_model(graph: Path, **options: Any) -> Any:
    return make_local_model(MODEL, parse_options(MODEL, options), {"fp32": graph}, "fp32", "cpu")


# -- a sidecar process of our own (flags the local model does not pass) ------------------------------


@contextmanager
def sidecar(graph: Path, *args: str, env: dict[str, str] | None = None) -> Iterator[dict[str, Any]]:
    node = shutil.which("node")
    assert node, "node is not on PATH"
    proc = subprocess.Popen([node, str(REPO / "server" / "dist" / "cli.js"), "serve", "--graph", f"tiny={graph}", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "RADIO_LOG_LEVEL": "warn", **(env or {})})
    try:
        assert proc.stdout is not None and proc.stderr is not None
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the sidecar exited ({proc.wait()}):\n{proc.stderr.read()}")
        yield {**json.loads(line), "proc": proc}
    finally:
        proc.kill()
        proc.wait(10)


def metric(http_port: int, name: str, **labels: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=10).read().decode()
    total = 0.0
    for line in text.splitlines():
        head, _, value = line.rpartition(" ")
        if not (head == name or head.startswith(name + "{")):
            continue
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            total += float(value)
    return total


def jpeg_bytes(h: int, w: int, seed: int) -> bytes:
    import io

    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def compute_embeddings_counted(samples: fo.Dataset, model: Any, stream: Callable[..., Iterator[Any]], **kwargs: Any) -> dict[str, int]:
    """samples.compute_embeddings(model, **kwargs) with grpc_client.RadioClient._stream replaced by
    `stream` (a wrapper of the real one, e.g. one that kills a sidecar mid-call) for the run. Returns how
    many embeddings model.embed_all handed back for each input (by str(input): the filepath; a None does
    not count), for the tests' "every sample labelled exactly once"."""
    seen: dict[str, int] = {}
    real_stream = grpc_client.RadioClient._stream
    real_embed_all = model.embed_all

    def embed_all_counting(args: Any) -> Any:
        out = real_embed_all(args)
        for a, o in zip(args, out):
            seen[str(a)] = seen.get(str(a), 0) + (o is not None)
        return out

    grpc_client.RadioClient._stream = stream
    model.embed_all = embed_all_counting
    try:
        samples.compute_embeddings(model, **kwargs)
    finally:
        grpc_client.RadioClient._stream = real_stream
        model.embed_all = real_embed_all
    return seen


# -- the corpus ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Generated by the same script as the node test's; a loopback HTTP server stands where the
    SVGs' and the HTML page's external references point, and counts requests."""
    hits: list[str] = []

    class Probe(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            hits.append(self.path)
            self.send_response(404)
            self.end_headers()

        def log_message(self, *a: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Probe)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    out = tmp_path_factory.mktemp("corpus")
    tsx = REPO / "node_modules" / ".bin" / "tsx"
    subprocess.run([str(tsx), "test/corpus/make-corpus.ts", str(out), "--probe-url", f"http://127.0.0.1:{server.server_address[1]}"],
                   cwd=REPO, check=True, capture_output=True, timeout=120)
    manifest = json.loads((out / "manifest.json").read_text())
    try:
        yield {**manifest, "probe_hits": hits}
    finally:
        server.shutdown()


def test_corpus_through_fiftyone_with_skip_failures(graph: Path, corpus: dict[str, Any]) -> None:
    """Every valid file labelled (exotic encodings exactly like the picture they show), every invalid
    one None and in model.failures with its reason, the sidecar up throughout, nothing fetched.
    Formats the sidecar refuses but Pillow reads are labelled by the client (the items' `client`)."""
    os.environ["RADIO_ALLOWED_ROOT"] = corpus["root"]
    try:
        model = local_model(graph, image_size="native")
    finally:
        del os.environ["RADIO_ALLOWED_ROOT"]
    items = [i for i in corpus["items"] if i["source"] == "path"]
    mimetypes.add_type("image/x-tga", ".tga")  # FiftyOne takes media types from mimetypes, which lacks TGA
    ds = fo.Dataset()
    try:
        pid = model._sidecar.pid
        ds.add_samples([fo.Sample(filepath=i["path"], corpus_item=i["name"]) for i in items])
        ds.compute_embeddings(model, embeddings_field="e", batch_size=8, skip_failures=True)
        values = dict(zip(ds.values("corpus_item"), ds.values("e")))
        paths = dict(zip(ds.values("corpus_item"), ds.values("filepath")))
        failures: dict[str, list[tuple[str, str]]] = {}
        for fid, code, message in model.failures:
            failures.setdefault(fid, []).append((code, message))
        labelled = failed = 0
        for item in items:
            got, name = values[item["name"]], item["name"]
            expect = item.get("client", item["expect"])
            if expect["ok"]:
                assert got is not None, f"{name} ({item['kind']}): not labelled; failures: {failures.get(paths[name])}"
                assert np.asarray(got).shape == (128,)
                labelled += 1
            else:
                assert got is None, f"{name} ({item['kind']}): labelled, expected {expect['code']}"
                reported = failures.get(paths[name], [])
                assert reported, f"{name}: not in model.failures"
                code, message = reported[0]
                assert code == expect["code"], f"{name}: {code}: {message}"
                import re

                assert re.search(expect["message"], message), f"{name}: {message}"
                failed += 1
        for item in items:
            same = item["expect"].get("sameAs")
            if same:
                np.testing.assert_allclose(values[item["name"]], values[same], atol=1e-4, err_msg=item["name"])
            same = item.get("client", {}).get("sameAs")
            if same:  # decoded by Pillow, sent as raw pixels: like the same picture's PNG
                a, b = np.asarray(values[item["name"]]), np.asarray(values[same])
                assert a @ b / np.linalg.norm(a) / np.linalg.norm(b) >= 0.9999, f"{item['name']} vs {same}"
        assert not [f for f in model.failures if f[1] == "UNSUPPORTED_FORMAT" and "Pillow" not in f[2]], \
            "every UNSUPPORTED_FORMAT was tried with Pillow"
        assert labelled >= 10 and failed >= 20
        print(f"corpus through FiftyOne: {len(items)} samples, {labelled} labelled, {failed} None with their reasons")
        assert model._sidecar.pid == pid and model._sidecar.alive, "the sidecar stayed up (no restart)"
        time.sleep(0.2)
        assert corpus["probe_hits"] == [], "the SVG's external references were not fetched"

        # Raw pixels of a shape no image has: that input fails alone, its neighbours do not.
        good = next(i["path"] for i in items if i["name"] == "good-png")
        before = len(model.failures)
        out = model.embed_all([good, np.zeros((8, 8, 2), np.uint8), np.full((16, 16, 3), 128, np.uint8),
                               np.zeros((2, 4, 4, 3), np.float32), np.zeros((0, 16, 3), np.uint8)])
        assert [o is None for o in out] == [False, True, False, True, True]
        new = model.failures[before:]
        assert [f[1] for f in new] == ["INVALID_ARGUMENT"] * 3
        assert "got shape (8, 8, 2)" in new[0][2] and "got shape (2, 4, 4, 3)" in new[1][2]
    finally:
        ds.delete()
        model.close()


def _good_and_bad(tmp_path: Path, n: int = 6, bad_at: int = 2) -> list[str]:
    paths = []
    for i in range(n):
        p = tmp_path / f"img{i}.jpg"
        p.write_bytes(jpeg_bytes(48 + 8 * (i % 3), 64, i))
        paths.append(str(p))
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    paths[bad_at] = str(bad)
    return paths


def test_bad_image_when_compute_embeddings_returns_the_vectors(graph: Path, tmp_path: Path) -> None:
    """compute_embeddings without embeddings_field (what the Brain runs with model=) and a corrupt
    image: FiftyOne's list, None at the bad sample, the right vectors elsewhere. A None handed back
    for it made FiftyOne np.stack a None at the end and fail the whole run ("all input arrays must
    have the same shape"), every embedding lost, the bad file never named."""
    paths = _good_and_bad(tmp_path)
    ds = fo.Dataset()
    model = local_model(graph)
    try:
        ds.add_samples([fo.Sample(filepath=p) for p in paths])
        ref = {p: model.embed(p) for i, p in enumerate(paths) if i != 2}
        one_by_one = ds.compute_embeddings(model)
        assert [e is None for e in one_by_one] == [i == 2 for i in range(len(paths))]
        for p, e in zip(paths, one_by_one):
            if e is not None:
                np.testing.assert_array_equal(e, ref[p])
        # In batches FiftyOne can only give None for a whole batch here: the bad one's batch-mates too.
        batched = ds.compute_embeddings(model, batch_size=3)
        assert [e is None for e in batched] == [True, True, True, False, False, False]
        for p, e in zip(paths[3:], batched[3:]):
            np.testing.assert_array_equal(e, ref[p])
        import fiftyone.brain as fob

        fob.compute_similarity(ds, model=model, brain_key="sim")  # used to fail at the same np.stack
        assert len(ds.load_brain_results("sim").sample_ids) == len(paths) - 1
    finally:
        ds.delete()
        model.close()


def test_skip_failures_false_raises_naming_the_bad_image(graph: Path, tmp_path: Path) -> None:
    """skip_failures=False asks FiftyOne to raise when a sample fails: compute_embeddings and
    apply_model raise the bad file's error. They used to store None for it and go on, as if
    skip_failures=True."""
    paths = _good_and_bad(tmp_path)
    ds = fo.Dataset()
    model, spatial = local_model(graph), local_model(graph, output_type="spatial")
    try:
        ds.add_samples([fo.Sample(filepath=p) for p in paths])
        bad = r'input ".*broken\.jpg": image could not be decoded.*\[CORRUPT_IMAGE\]'
        with pytest.raises(ValueError, match=bad):
            ds.compute_embeddings(model, embeddings_field="e", batch_size=3, skip_failures=False)
        with pytest.raises(ValueError, match=bad):
            ds.apply_model(spatial, "heatmap", batch_size=3, skip_failures=False)
        # skip_failures=True (FiftyOne's default): None for the bad one, its batch-mates labelled.
        ds.compute_embeddings(model, embeddings_field="e", batch_size=3)
        ds.apply_model(spatial, "heatmap", batch_size=3)
        for field in ("e", "heatmap"):
            assert [v is None for v in ds.values(field)] == [i == 2 for i in range(len(paths))], field
    finally:
        ds.delete()
        model.close()
        spatial.close()


def test_pil_images_embed_like_their_files(graph: Path, tmp_path: Path) -> None:
    """model.embed(a PIL image) gives the embedding of the same file given by path: alpha flattened onto
    white and 16-bit scaled, as the sidecar does with files (and Pillow-decoded ones). PIL input used to
    go through convert("RGB"), which drops alpha (transparent pixels showed their hidden colour) and
    clips 16-bit values at 255 (a near-white picture), silently. A CMYK JPEG without a profile: the
    sidecar converts it as Pillow does (through libvips' CMYK profile, this one's cosine was 0.993)."""
    rng = np.random.default_rng(7)
    rgba = np.dstack([rng.integers(0, 256, (64, 96, 3), dtype=np.uint8), np.full((64, 96), 255, np.uint8)])
    rgba[:, :48, 3] = 0  # the left half transparent, its hidden colour random
    grey16 = (np.add.outer(np.arange(64), np.arange(96)) * 400).astype(np.uint16)
    cmyk = np.kron(rng.integers(0, 256, (8, 12, 4), dtype=np.uint8), np.ones((8, 8, 1), np.uint8))  # 8×8 blocks of inks
    files = {"rgba": tmp_path / "rgba.png", "grey16": tmp_path / "grey16.png", "cmyk": tmp_path / "cmyk.jpg"}
    Image.fromarray(rgba).save(files["rgba"])
    Image.fromarray(grey16).save(files["grey16"])
    Image.fromarray(cmyk, "CMYK").save(files["cmyk"], quality=100)
    assert "icc_profile" not in Image.open(files["cmyk"]).info
    model = local_model(graph)
    try:
        for name, path in files.items():
            a, b = model.embed(str(path)), model.embed(Image.open(path))
            cos = float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))
            assert cos >= 0.9999, f"{name} ({Image.open(path).mode}): cosine {cos} between the file and its PIL image"
    finally:
        model.close()


def test_a_resized_file_embeds_like_pil_resized_pixels(graph: Path, tmp_path: Path) -> None:
    """The sidecar's resize is PIL's BICUBIC (what Hugging Face image processors and PIL-based pipelines
    use): a file resized by the sidecar embeds like the same picture resized by Pillow and sent at the
    model's size (no resize then). Enlarging used to sample half an output pixel off PIL's grid
    (libvips' resize): cosine 0.992-0.994 here."""
    rng = np.random.default_rng(3)
    y, x, c = np.ogrid[:70, :100, :3]
    picture = np.clip(128 + 50 * np.sin(x / 3 + c) * np.cos(y / 4) + rng.normal(0, 12, (70, 100, 3)), 0, 255).astype(np.uint8)
    Image.fromarray(picture).save(tmp_path / "p.png")
    for size in [(64, 112), (96, 112), (80, 96)]:  # (h, w): one side down, one up; both up; both up
        model = local_model(graph, image_size=size)
        try:
            a = model.embed(str(tmp_path / "p.png"))
            b = model.embed(np.asarray(Image.fromarray(picture).resize(size[::-1], Image.Resampling.BICUBIC)))
            cos = float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))
            assert cos >= 0.99999, f"{size}: cosine {cos} between the sidecar's resize and Pillow's"
        finally:
            model.close()


def test_remote_model_a_file_it_cannot_read_fails_alone(graph: Path, tmp_path: Path) -> None:
    """A remote sidecar gets the files' bytes: a file that is gone (or a directory) fails on its own,
    as the local sidecar reports it (NOT_FOUND / NOT_A_FILE, naming the file); its batch-mates are
    labelled. The OSError of reading it used to take the whole batch down."""
    paths = _good_and_bad(tmp_path)
    paths[2] = str(tmp_path / "deleted.jpg")
    (tmp_path / "folder.jpg").mkdir()
    paths[4] = str(tmp_path / "folder.jpg")
    ds = fo.Dataset()
    with sidecar(graph, "--socket", str(tmp_path / "r.sock")) as sc:
        remote = make_remote_model(MODEL, parse_options(MODEL, {"server": f"unix:{sc['socket']}"}))
        try:
            ds.add_samples([fo.Sample(filepath=p) for p in paths])
            ds.compute_embeddings(remote, embeddings_field="e", batch_size=6)
            assert [v is None for v in ds.values("e")] == [i in (2, 4) for i in range(len(paths))]
            assert [f[:2] for f in remote.failures] == [(paths[2], "NOT_FOUND"), (paths[4], "NOT_A_FILE")]
            assert remote.failures[0][2] == f'input "{paths[2]}": file not found: {paths[2]} [NOT_FOUND]'
            assert remote.failures[1][2].startswith(f'input "{paths[4]}": path is a directory, not a file')
        finally:
            ds.delete()
            remote.close()


# -- faults -------------------------------------------------------------------------------------------


def test_sidecar_sigkilled_mid_call_every_sample_labelled_once(graph: Path, tmp_path: Path) -> None:
    """SIGKILL the sidecar while a call is streaming (some of its results in, the rest not): the model
    restarts it, re-runs that batch, and every sample gets exactly one embedding, the right one."""
    paths = []
    for i in range(40):
        p = tmp_path / f"img{i}.jpg"
        p.write_bytes(jpeg_bytes(48 + 8 * (i % 3), 64, i))
        paths.append(str(p))
    ds = fo.Dataset()
    ds.add_samples([fo.Sample(filepath=p) for p in paths])
    model = local_model(graph, image_size=(224, 224))
    try:
        ds.compute_embeddings(model, embeddings_field="ref", batch_size=20)
        first_pid = model._sidecar.pid
        calls: dict[str, Any] = {"stream": 0, "received": None, "asked": None, "error": None}
        real_stream = grpc_client.RadioClient._stream

        def stream_then_kill(self: Any, request: Any, timeout: float | None) -> Iterator[Any]:
            calls["stream"] += 1
            n = 0
            try:
                for result in real_stream(self, request, timeout):
                    n += 1
                    yield result
                    if calls["stream"] == 2 and n == 1:  # FiftyOne's second batch, after its first result
                        os.kill(model._sidecar.pid, signal.SIGKILL)
            except Exception as err:
                if calls["stream"] == 2:
                    calls.update(received=n, asked=len(request.images), error=err)
                raise

        seen = compute_embeddings_counted(ds, model, stream_then_kill, embeddings_field="e", batch_size=20)
        assert calls["error"] is not None, "the call in flight failed when the sidecar died"
        assert calls["received"] < calls["asked"], f"killed mid-call: {calls['received']} of {calls['asked']} results in"
        assert model._sidecar.pid != first_pid, "restarted"
        assert seen == {p: 1 for p in paths}, "every sample labelled exactly once"
        for ref, e in zip(ds.values("ref"), ds.values("e")):
            np.testing.assert_allclose(e, ref, atol=1e-5)
        print(f"SIGKILL mid-call: {calls['received']} of {calls['asked']} results in, then "
              f"{type(calls['error']).__name__}: {calls['error']}; restarted; {len(paths)} samples labelled once each")
    finally:
        ds.delete()
        model.close()


def test_private_sidecar_started_in_a_thread_outlives_the_thread(graph: Path, tmp_path: Path) -> None:
    """shared=False, the model loaded in a worker thread (the App server's executor, a notebook's) and
    used from others: its sidecar runs until the model is closed. When the sidecar relied on Linux's
    parent-death signal, which follows the thread that started the child, not the process, it got
    SIGTERM when that thread ended, and every later call found it dead and restarted it (then it died
    with that call's thread, in turn). It now watches the process (`serve --parent-pid`)."""
    import threading

    png = tmp_path / "a.png"
    Image.fromarray(np.full((32, 48, 3), 90, np.uint8)).save(png)
    loaded: list[Any] = []
    t = threading.Thread(target=lambda: loaded.append(local_model(graph, shared=False)))
    t.start()
    t.join(180)
    model = loaded[0]
    try:
        pid = model._sidecar.pid
        time.sleep(1.0)
        assert model._sidecar.alive, f"the sidecar died with the thread that started it:\n{model._sidecar.log_tail()}"
        assert model.embed(str(png)) is not None and model._sidecar.pid == pid
    finally:
        model.close()


def test_private_sidecars_spawn_while_grpc_calls_run(graph: Path, tmp_path: Path) -> None:
    """A private sidecar may start while this process has gRPC calls running (another model's, another
    library's). With grpcio >= 1.80, a child forked from such a process crashes (SIGABRT, before exec)
    in a few % of spawns if Python code runs between fork and exec (grpc/grpc#43055), as Linux's
    parent-death signal needed: 6 of 200 here. The spawn runs none now; 300 spawns of /bin/true stand in
    for 300 sidecar starts (the crash happens before exec, whatever is exec'd)."""
    from radio_zoo_under_test.client import sidecar as sidecar_module

    png = tmp_path / "a.png"
    Image.fromarray(np.full((32, 48, 3), 90, np.uint8)).save(png)
    model = local_model(graph, shared=False)
    stop = threading.Event()
    calls = [0]

    def busy() -> None:
        while not stop.is_set():
            model.embed(str(png))
            calls[0] += 1

    t = threading.Thread(target=busy, daemon=True)
    t.start()
    try:
        failed = []
        for _ in range(300):
            p = sidecar_module.spawn_private(["/bin/true"], os.environ.copy())
            _, err = p.communicate(timeout=30)
            if p.returncode != 0:
                failed.append((p.returncode, err[-300:]))
    finally:
        stop.set()
        t.join(60)
        model.close()
    assert calls[0] > 0, "gRPC calls ran during the spawns"
    assert not failed, f"{len(failed)} of 300 spawns died before exec: {failed[:3]}"


def test_a_model_collected_while_another_loads_does_not_hang(graph: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A model dropped in a reference cycle is closed by the garbage collector, which runs at whatever
    allocation comes next: here, while another model's sidecar starts, inside the registry's lock that
    closing takes too. The lock was not reentrant: that load hung for good (and Python's exit after it)."""
    import gc
    import threading

    from radio_zoo_under_test.client import sidecar as sidecar_module

    real_start = sidecar_module.LocalSidecar.start

    def start_after_a_collection(self: Any) -> None:
        gc.collect()  # what any allocation in here may set off
        real_start(self)

    dropped = local_model(graph, shared=False)
    dropped.itself = dropped  # a reference cycle: only the collector frees it
    del dropped
    monkeypatch.setattr(sidecar_module.LocalSidecar, "start", start_after_a_collection)
    loaded: list[Any] = []
    t = threading.Thread(target=lambda: loaded.append(local_model(graph, shared=False, threads=1)), daemon=True)
    t.start()
    t.join(60)
    assert loaded, "loading hung: the collector closed the dropped model inside the registry's lock"
    loaded[0].close()


def _serve_pids(marker: str) -> set[int]:
    out = subprocess.run(["pgrep", "-f", f"dist/cli.js serve .*{marker}"], capture_output=True, text=True)
    return {int(p) for p in out.stdout.split()}


def test_dead_sidecar_under_calls_from_threads_is_restarted_once(graph: Path, tmp_path: Path) -> None:
    """Calls from several threads at once (the App server's searches, an executor's runs) on a model
    whose private sidecar has died: one sidecar is started in its place, and every call gets the right
    vectors. Each thread used to restart it on its own: one sidecar each, all but the last left running
    unreferenced, or a later restart stopped the one an earlier had just started, closing the client a
    call was using ("Cannot invoke RPC: Channel closed!")."""
    import threading

    paths = []
    for i in range(4):
        p = tmp_path / f"img{i}.jpg"
        p.write_bytes(jpeg_bytes(48, 64, i))
        paths.append(str(p))
    model = local_model(graph, image_size=(224, 224), shared=False)
    try:
        ref = model.embed_all(paths)
        old = model._sidecar.pid
        os.kill(old, signal.SIGKILL)
        deadline = time.monotonic() + 20
        while model._sidecar.process.poll() is None and time.monotonic() < deadline:  # reaped
            time.sleep(0.05)
        start = threading.Barrier(4)
        got: dict[int, Any] = {}
        errors: list[BaseException] = []

        def work(k: int) -> None:
            start.wait(30)
            try:
                got[k] = model.embed_all(paths)
            except BaseException as err:  # noqa: BLE001
                errors.append(err)

        threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert errors == [], errors
        for k in range(4):
            for a, b in zip(got[k], ref):
                np.testing.assert_allclose(a, b, atol=1e-5)
        new = model._sidecar.pid
        assert new != old and model._sidecar.alive
        time.sleep(0.5)
        assert _serve_pids(f"radio-sidecar-.*fp32={graph}") == {new}, "one sidecar, alive, in the dead one's place"
    finally:
        model.close()


def test_model_loaded_after_its_sidecar_died_shares_the_restarted_one(graph: Path, tmp_path: Path) -> None:
    """shared=False: a sidecar dies (OOM, a crash); a model of the same graph is loaded before the first
    model calls again. Both then use one restarted sidecar. The load used to put a new handle in the
    registry's place, the first model restarted the old one on its own: two sidecars for one graph (two
    copies of the weights in memory), the old one out of the registry's reach."""
    png = tmp_path / "a.png"
    Image.fromarray(np.full((32, 48, 3), 90, np.uint8)).save(png)
    first = local_model(graph, shared=False)
    second = None
    try:
        old = first._sidecar.pid
        os.kill(old, signal.SIGKILL)
        first._sidecar.process.wait(20)
        second = local_model(graph, shared=False)
        assert first.embed(str(png)) is not None and second.embed(str(png)) is not None
        time.sleep(0.5)
        assert _serve_pids(f"radio-sidecar-.*fp32={graph}") == {first._sidecar.pid}, "one sidecar for the graph"
        assert second._sidecar is first._sidecar
    finally:
        first.close()
        if second is not None:
            second.close()


def test_queue_full_client_backs_off_and_retries(graph: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A sidecar with a 4-image queue and 6 clients: calls that do not fit get RESOURCE_EXHAUSTED, the
    client backs off and retries them, every image ends up computed exactly once."""
    images = [jpeg_bytes(64, 64, i) for i in range(12)]
    with sidecar(graph, "--socket", str(tmp_path / "s.sock"), "--max-queue", "4", "--max-batch", "2",
                 "--http-port", "auto", "--threads", "2") as sc:
        client = grpc_client.RadioClient(f"unix:{sc['socket']}", max_images_per_call=4, backoff_s=0.02, max_retries=12)
        errors: list[BaseException] = []
        results: list[list[Any]] = []

        def work(k: int) -> None:
            try:
                results.append(client.embed([{"id": f"c{k}-{i}", "encoded": b} for i, b in enumerate(images)],
                                            grpc_client.EmbedOptions(resolution="256x256")))
            except BaseException as err:  # noqa: BLE001
                errors.append(err)

        caplog.set_level(logging.INFO, logger=grpc_client.__name__)
        threads = [threading.Thread(target=work, args=(k,)) for k in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        client.close()
        assert errors == []
        assert len(results) == 6 and all(r.ok for rs in results for r in rs)
        refused = metric(sc["httpPort"], "radio_grpc_requests_total", method="Embed", code="RESOURCE_EXHAUSTED")
        retries = sum("queue full; retrying" in r.getMessage() for r in caplog.records)
        assert refused >= 1 and retries >= 1, (refused, retries)
        assert metric(sc["httpPort"], "radio_images_total") == 6 * len(images), "nothing computed twice"
        print(f"queue full: {int(refused)} calls refused, {retries} retries, {6 * len(images)} images all done")


# -- security -----------------------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
def test_token_and_tls_from_python(graph: Path, tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-days", "1", "-subj", "/CN=radio-test", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    token = "py-token-0c9d7e"
    png = tmp_path / "a.png"
    Image.fromarray(np.full((32, 48, 3), 90, np.uint8)).save(png)
    with sidecar(graph, "--port", "0", "--tls-cert", str(cert), "--tls-key", str(key), "--allowed-root", str(tmp_path),
                 env={"RADIO_TOKEN": token}) as sc:
        address = f"127.0.0.1:{sc['grpcPort']}"
        root_cert = cert.read_bytes()
        anonymous = grpc_client.RadioClient(address, root_certificates=root_cert)
        assert anonymous.serving(), "health needs no token"
        with pytest.raises(RuntimeError, match="UNAUTHENTICATED"):
            anonymous.embed([{"id": "x", "encoded": png.read_bytes()}], grpc_client.EmbedOptions())
        anonymous.close()
        authed = grpc_client.RadioClient(address, token=token, root_certificates=root_cert)
        out = authed.embed([{"id": "bytes", "encoded": png.read_bytes()}, {"id": "path", "path": str(png)}], grpc_client.EmbedOptions())
        assert out[0].ok
        assert out[1].error_code == "PERMISSION_DENIED" and "--allow-remote-paths" in (out[1].error or "")
        authed.close()

    # The remote zoo model sends bytes and its token (plaintext TCP here: the zoo option has no TLS).
    with sidecar(graph, "--port", "0", env={"RADIO_TOKEN": token}) as sc:
        ds = fo.Dataset()
        try:
            ds.add_sample(fo.Sample(filepath=str(png)))
            remote = make_remote_model(MODEL, parse_options(MODEL, {"server": f"127.0.0.1:{sc['grpcPort']}", "token": token}))
            ds.compute_embeddings(remote, embeddings_field="e")
            assert ds.first().e is not None and remote.failures == []
            remote.close()
            # A wrong token fails at load (one Info call), not per batch (test_load_checks.py has the rest).
            with pytest.raises(RuntimeError, match="UNAUTHENTICATED"):
                make_remote_model(MODEL, parse_options(MODEL, {"server": f"127.0.0.1:{sc['grpcPort']}", "token": "nope"}))
        finally:
            ds.delete()
