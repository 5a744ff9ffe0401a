"""Text search in the FiftyOne App, in a real browser: the App server (`fo.launch_app(remote=True)`)
for a dataset with a text-capable similarity index (`embedding_space="text"`, served from a generated
tiny-text C-RADIOv4-H checkpoint and a generated SigLIP2 repo on the loopback hub), driven by
Debian's Chromium through playwright-core (test/node/support/app-text-search.mjs): the grid's "Sort
by text similarity" action, a typed prompt, Enter, then "Show results" on the run's card in the
Similarity Search panel (FiftyOne 1.22 runs the search as an operator and lists it there). The grid
must show the order that `sort_by_similarity(prompt)` gives, the session's view must become it, and
the App server must start one sidecar and reuse it. The last screenshot goes to out/, or to
docs/images/ with RADIO_DOC_IMAGES=1 (the README's picture).
Random weights: the order is meaningless as semantics, but it is a definite order to compare."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import fiftyone as fo
import fiftyone.brain as fob
import fiftyone.zoo as foz
import numpy as np
import psutil
import pytest
from PIL import Image, ImageDraw
from sidecar_cli import REPO, sidecar

sys.path.insert(0, str(REPO / "scripts"))
from loopback import fake_hub, source_archive  # noqa: E402

H = "nv_labs/c-radio_v4-h"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
DRIVER = REPO / "test" / "node" / "support" / "app-text-search.mjs"
# The README's picture is refreshed only when asked (RADIO_DOC_IMAGES=1); otherwise it goes to out/.
SCREENSHOT = REPO / ("docs/images" if os.environ.get("RADIO_DOC_IMAGES") == "1" else "out") / "app-text-search.png"
PROMPTS = ["a photo of a dog", "a red car"]
K = 25  # the App's default k for a text search

pytestmark = [
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"no Chromium at {CHROMIUM}"),
    pytest.mark.skipif(not (REPO / "node_modules" / "playwright-core").exists(), reason="playwright-core is not installed"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _images(root: Path, n: int = 12) -> list[str]:
    rng = np.random.default_rng(11)
    paths = []
    for i in range(n):
        img = Image.new("RGB", (320, 240), tuple(int(c) for c in rng.integers(0, 256, 3)))
        d = ImageDraw.Draw(img)
        for _ in range(4):
            x, y, r = int(rng.integers(0, 320)), int(rng.integers(0, 240)), int(rng.integers(15, 60))
            color = tuple(int(c) for c in rng.integers(0, 256, 3))
            (d.ellipse if i % 2 else d.rectangle)([x - r, y - r, x + r, y + r], fill=color)
        p = root / f"img{i:02d}.jpg"
        img.save(p, quality=92)
        paths.append(str(p))
    return paths


def _sidecars_under(pid: int) -> set[int]:
    """The C-RADIOv4 sidecars (`cli.js serve`) among a process's descendants."""
    try:
        kids = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return set()
    out = set()
    for k in kids:
        try:
            cmd = k.cmdline()
        except psutil.Error:
            continue
        if any(c.endswith("cli.js") for c in cmd) and "serve" in cmd:
            out.add(k.pid)
    return out


def _app_server(port: int) -> psutil.Process:
    """The App server's own process (fiftyone/server/main.py --port PORT)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for p in psutil.process_iter(["cmdline"]):
            cmd = p.info["cmdline"] or []
            if "main.py" in cmd and "--port" in cmd and str(port) in cmd and not any("service" in c for c in cmd):
                return p
        time.sleep(0.5)
    raise AssertionError(f"no App server process for port {port}")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("app-text")
    sidecar("make-checkpoint", "--preset", "tiny-text", "--siglip", str(root / "siglip"), "--out", str(root / "radio"))
    repos = {"nvidia/C-RADIOv4-H": root / "radio", "google/siglip2-giant-opt-patch16-384": root / "siglip"}
    with pytest.MonkeyPatch.context() as mp, fake_hub(repos) as endpoint, source_archive() as url:
        mp.setattr(fo.config, "model_zoo_dir", str(root / "zoo"))
        # The App server is another process: it reads the zoo folder (with the registered source) and the
        # hub from its environment, which it inherits from this one.
        mp.setenv("FIFTYONE_MODEL_ZOO_DIR", str(root / "zoo"))
        mp.setenv("HF_HUB_CACHE", str(root / "hf"))
        mp.setenv("HF_ENDPOINT", endpoint)  # inherited by the App server, which loads the model by name
        foz.register_zoo_model_source(url, overwrite=True)
        (root / "images").mkdir()
        ds = fo.Dataset()
        ds.add_samples([fo.Sample(filepath=p) for p in _images(root / "images")])
        fob.compute_similarity(ds, model=H, model_kwargs={"embedding_space": "text", "device": "cpu"},
                               brain_key="txt", embeddings="txt_emb")
        ds.persistent = True  # the App server process opens it by name
        try:
            yield ds
        finally:
            ds.delete()


def test_text_search_in_the_app(served, tmp_path: Path) -> None:
    ds = served
    assert ds.load_brain_results("txt").config.supports_prompts
    port = _free_port()
    session = fo.launch_app(ds, remote=True, port=port, auto=False)
    try:
        server = _app_server(port)
        assert not _sidecars_under(server.pid)  # no model loaded before the first search
        seen: set[int] = set()
        changes: list[tuple[float, list[int]]] = []  # (wall time, the sidecars then) at each change
        stop = threading.Event()

        def watch() -> None:  # every sidecar the App server starts, however briefly
            last = None
            while not stop.is_set():
                now = _sidecars_under(server.pid)
                seen.update(now)
                if now != last:
                    changes.append((time.time(), sorted(now)))
                    last = now
                time.sleep(0.1)

        t0 = time.monotonic()
        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        proc = subprocess.run([shutil.which("node") or "node", str(DRIVER), f"http://localhost:{port}/",
                               str(tmp_path / "app.png"), *PROMPTS], cwd=REPO, capture_output=True, text=True,
                              timeout=900, env={**os.environ, "CHROMIUM": CHROMIUM})
        elapsed = time.monotonic() - t0
        stop.set()
        watcher.join()
        (tmp_path / "driver.log").write_text(proc.stderr)
        shutil.copytree(tmp_path, REPO / "out" / "app-text-search-run", dirs_exist_ok=True)  # for a look after a failure
        assert proc.returncode == 0, f"the browser driver failed ({proc.returncode}):\n{proc.stderr[-4000:]}"
        searches = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
        assert [s["prompt"] for s in searches] == PROMPTS
        for s in searches:
            want = ds.sort_by_similarity(s["prompt"], k=K, brain_key="txt").values("id")
            assert s["ids"] == want, (s["prompt"], s["ids"], want)
            print(f"App search {s['prompt']!r}: {len(s['ids'])} samples in the grid, {s['ms'] / 1000:.1f} s")
        # The two prompts rank differently (otherwise the check above would not tell them apart).
        assert searches[0]["ids"] != searches[1]["ids"]
        # The App's session now shows the last search's result, in the grid's order.
        assert session.view is not None and session.view.values("id") == searches[-1]["ids"]
        # One sidecar, started for the first search and reused for the second: a second search that
        # found the model gone would have started another. (After the last search the App server may
        # stop it: the model lives in FiftyOne's cached brain results on the App server's Dataset
        # object, and once that object is unreachable Python's cyclic GC collects it, the model's
        # close() releases the sidecar; seen ~1-2 s after the second search in every run so far.)
        wall0 = changes[0][0]
        timeline = ", ".join(f"{t - wall0:.1f}s: {pids or 'none'}" for t, pids in changes)
        print(f"sidecars under the App server: {timeline}; searches submitted at "
              + ", ".join(f"{s['submitted'] / 1000 - wall0:.1f}s" for s in searches))
        assert len(seen) == 1, f"the App server started {len(seen)} sidecars: {sorted(seen)} ({timeline})"
        # ... and it was up without a break from its start until the second search was submitted (a
        # search holds its model while it runs, so it found this one and no other started).
        (pid,) = seen
        started = next(t for t, pids in changes if pids)
        assert all(pids == [pid] for t, pids in changes if started <= t <= searches[-1]["submitted"] / 1000), timeline
        print(f"browser run: {elapsed:.1f} s; App server pid {server.pid}, sidecar pid {pid}")
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(tmp_path / "app.png", SCREENSHOT)
    finally:
        session.close()
