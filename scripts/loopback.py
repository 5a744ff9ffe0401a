"""Loopback stand-ins for the two remote services the zoo source talks to, for the demo and the
tests on a machine that can't reach them: a Hugging Face hub serving generated checkpoints, and an
HTTP server offering this working tree as a zoo-source archive."""
from __future__ import annotations

import http.server
import json
import subprocess
import tarfile
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@contextmanager
def fake_hub(repos: dict[str, Path]) -> Iterator[str]:
    """Serves each checkpoint folder as a Hugging Face repo; yields the endpoint (for HF_ENDPOINT)."""
    tsx = REPO / "node_modules" / ".bin" / "tsx"
    args = [f"{repo}={path}" for repo, path in repos.items()]
    proc = subprocess.Popen([str(tsx), "test/node/support/serve-fake-hub.ts", *args], cwd=REPO,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError("the loopback hub did not start")
        yield json.loads(line)["endpoint"]
    finally:
        proc.terminate()
        proc.wait(10)


@contextmanager
def source_archive() -> Iterator[str]:
    """The working tree (tracked and untracked files, not ignored ones) as a .tar.gz on loopback;
    yields its URL, which foz.register_zoo_model_source accepts."""
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                           capture_output=True, text=True, check=True).stdout.split("\n")
    with tempfile.TemporaryDirectory(prefix="radio-source-") as root:
        archive = Path(root) / "c-radio-fiftyone.tar.gz"
        with tarfile.open(archive, "w:gz") as tar:
            for f in files:
                if f and (REPO / f).is_file():
                    tar.add(REPO / f, arcname=f"c-radio-fiftyone/{f}")

        class Quiet(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *a, **k):  # type: ignore[no-untyped-def]
                super().__init__(*a, directory=root, **k)

            def log_message(self, *a):  # type: ignore[no-untyped-def]
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}/{archive.name}"
        finally:
            server.shutdown()


if __name__ == "__main__":
    # `python scripts/loopback.py`: serve this clone as a zoo-source archive until Ctrl-C, for
    # foz.register_zoo_model_source("<the URL printed>") from another Python (README: Quick start).
    with source_archive() as url:
        print(url, flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass
