"""The local sidecar's process lifetime.

Shared (the default; client/shared.py): one sidecar per host, user and key, started by the first
process that needs it and used by every later one; it outlives its starter and exits after an idle
timeout with no client left. This process holds a lease on it while a model uses it.

Private (``shared=False``): spawn it on a private unix socket, wait until it is SERVING, share it
between models of this process, restart it once if it dies, stop it when the last model using it is
released or Python exits. No orphans: the sidecar is told this process's pid (`--parent-pid`) and
exits by itself within a second once this process is gone, exit handlers run or not.
"""
from __future__ import annotations

import atexit
import json
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from . import shared
from .gpu_libs import library_env
from .grpc_client import RadioClient
from .node_runtime import MIN_NODE_MAJOR, node_executable  # noqa: F401 (one lookup: RADIO_NODE, PATH, PyPI)

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parent.parent

# V8 flags for the sidecar (V8 reads this one only from node's command line, not NODE_OPTIONS). With
# V8's defaults for a small heap (~22 MB live) the sidecar's main thread ran a full mark-compact
# every ~25 images, started by V8's heuristics long before the old space filled (it grows only ~6 KB
# an image); the marking cost ~2 CPU-ms an image. A 128 MB floor on the old-space limit stops that
# (none in 1,920 images; 64 MB still had one per ~40): 640x480 JPEGs at the default size, 10.5 -> 8.6
# CPU-ms an image outside inference (bench/cpu_per_image.py; docs/benchmarks.md). The cost: up to
# ~100 MB more heap before a collection, reached only after ~20,000 images.
NODE_FLAGS = ("--initial-old-space-size=128",)


def cli_path(repo: Path = REPO) -> Path:
    return repo / "server" / "dist" / "cli.js"


def spawn_private(cmd: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    """Starts a private sidecar process, its stdout and stderr piped to us. Nothing of Python runs in
    the child between fork and exec (no preexec_fn), so CPython spawns it with vfork and no fork
    handlers: with grpcio >= 1.80, a child forked from a process whose gRPC channels are in use crashes
    before exec in a few % of spawns when Python code runs there (grpc/grpc#43055; here 6 of 200 with
    a preexec_fn, while another model's calls ran). That is why the sidecar watches for its parent's
    death itself (`--parent-pid`) instead of Linux's parent-death signal, which needed a preexec_fn."""
    return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _sidecar_env(spec: SidecarSpec) -> dict[str, str]:
    """library_env() with the spec's own variables, plus a libuv thread pool with room for the
    sidecar's default of one image decode per core and the file reads beside them. libuv reads
    UV_THREADPOOL_SIZE once, at start; its default of 4 would cap decodes at 4 on any host (e.g. a
    16-core GPU host). A value set is kept."""
    env = {**library_env(), **dict(spec.env)}
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 4)
    env.setdefault("UV_THREADPOOL_SIZE", str(min(1024, cores + 4)))
    return env


def _allowed_roots() -> tuple[str, ...]:
    """Where the local sidecar may read path inputs: RADIO_ALLOWED_ROOT (os.pathsep-separated), else
    anywhere this user can read (the socket is private to this user)."""
    roots = tuple(r for r in os.environ.get("RADIO_ALLOWED_ROOT", "").split(os.pathsep) if r)
    return roots or ("/",)


@dataclass
class SidecarSpec:
    """What a sidecar serves and how; equal specs share one process."""

    graphs: tuple[tuple[str, str], ...]  # (name, compiled graph dir)
    provider: str = "cpu"
    workers: int | None = None
    threads: int | None = None
    extra_args: tuple[str, ...] = ()
    allowed_roots: tuple[str, ...] = field(default_factory=_allowed_roots)
    shared: bool = False
    # Shared only: the idle timeout a sidecar this process starts gets (None: RADIO_SHARED_IDLE_S or
    # 300 s); a running one keeps its own. Not part of the key.
    idle_timeout_s: int | None = None
    # Environment this sidecar gets beyond this process's (device="cuda:N": its CUDA_VISIBLE_DEVICES).
    # Part of the shared key, through the environment the key covers.
    env: tuple[tuple[str, str], ...] = ()

    def serve_args(self) -> list[str]:
        """The serve flags that follow from the spec (not the socket)."""
        cmd = ["--provider", self.provider]
        for root in self.allowed_roots:
            cmd += ["--allowed-root", root]
        for name, path in self.graphs:
            cmd += ["--graph", f"{name}={path}"]
        if self.workers:
            cmd += ["--workers", str(self.workers)]
        if self.threads:
            cmd += ["--threads", str(self.threads)]
        return cmd + list(self.extra_args)


@dataclass
class LocalSidecar:
    spec: SidecarSpec
    repo: Path = REPO
    startup_timeout_s: float = 180.0
    process: subprocess.Popen[str] | None = None
    socket_path: Path | None = None
    client: RadioClient | None = None
    refs: int = 0
    _tmpdir: Path | None = None
    _log_tail: list[str] = field(default_factory=list)
    restart_lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @property
    def address(self) -> str:
        assert self.socket_path is not None
        return f"unix:{self.socket_path}"

    def start(self) -> None:
        node = node_executable()
        cli = cli_path(self.repo)
        if not cli.exists():
            raise RuntimeError(f"{cli} is missing: the sidecar is not built (run `npm ci && npm run build` in {self.repo})")
        self._tmpdir = Path(tempfile.mkdtemp(prefix="radio-sidecar-"))
        os.chmod(self._tmpdir, 0o700)  # the socket is private to this user
        self.socket_path = self._tmpdir / "radio.sock"
        cmd = [node, *NODE_FLAGS, str(cli), "serve", "--socket", str(self.socket_path), "--http-port", "0",
               "--parent-pid", str(os.getpid()), *self.spec.serve_args()]
        logger.info("starting C-RADIOv4 sidecar: %s", " ".join(cmd))
        env = _sidecar_env(self.spec)  # the CUDA/cuDNN pip wheels' folders: the loader reads LD_LIBRARY_PATH only at exec
        self.process = spawn_private(cmd, env)
        ready = threading.Event()
        threading.Thread(target=self._read_stdout, args=(self.process, ready), daemon=True).start()
        threading.Thread(target=self._read_stderr, args=(self.process,), daemon=True).start()
        deadline = time.monotonic() + self.startup_timeout_s
        while not ready.wait(0.05):
            if self.process.poll() is not None:
                raise RuntimeError(f"the sidecar exited with code {self.process.returncode} while starting:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the sidecar was not ready after {self.startup_timeout_s:.0f} s:\n{self.log_tail()}")
        self.client = RadioClient(self.address)
        while not self.client.serving():
            if time.monotonic() > deadline or self.process.poll() is not None:
                self.stop()
                raise RuntimeError(f"the sidecar never reported SERVING:\n{self.log_tail()}")
            time.sleep(0.05)
        logger.info("sidecar ready on %s (pid %d)", self.address, self.process.pid)

    def _read_stdout(self, proc: subprocess.Popen[str], ready: threading.Event) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            try:
                if json.loads(line).get("event") == "ready":
                    ready.set()
            except (ValueError, AttributeError):
                self._remember(line)

    def _read_stderr(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            self._remember(line)

    def _remember(self, line: str) -> None:
        self._log_tail.append(line.rstrip())
        del self._log_tail[:-50]

    def log_tail(self) -> str:
        return "\n".join(self._log_tail[-20:])

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def restart(self) -> None:
        logger.warning("the sidecar (pid %s) died; restarting it. Last log lines:\n%s",
                       self.process.pid if self.process else "?", self.log_tail())
        self.stop()
        self.start()

    def stop(self, timeout_s: float = 15.0) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None
        proc, self.process = self.process, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # graceful: finishes in-flight work
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None


@dataclass
class SharedSidecar:
    """This process's handle on the host's shared sidecar for a spec (client/shared.py): a client
    and a lease. ``stop`` ends the lease (the sidecar lives on until idle); ``restart`` reconnects,
    starting a fresh sidecar if the old one is gone."""

    spec: SidecarSpec
    repo: Path = REPO
    startup_timeout_s: float = 180.0
    client: RadioClient | None = None
    refs: int = 0
    paths: shared.Paths | None = None
    info: Any = None
    _lease: shared.Lease | None = None
    restart_lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @property
    def address(self) -> str:
        assert self.paths is not None
        return f"unix:{self.paths.socket}"

    @property
    def pid(self) -> int | None:
        return int(self.info.pid) if self.info is not None else None

    @property
    def http_socket(self) -> Path | None:
        return self.paths.http_socket if self.paths is not None else None

    def start(self) -> None:
        node = node_executable()
        cli = cli_path(self.repo)
        if not cli.exists():
            raise RuntimeError(f"{cli} is missing: the sidecar is not built (run `npm ci && npm run build` in {self.repo})")
        env = _sidecar_env(self.spec)
        material = shared.key_material(self.spec, node, self.repo, env)
        self.paths = shared.Paths(shared.runtime_dir(), shared.sidecar_key(material))
        idle = self.spec.idle_timeout_s if self.spec.idle_timeout_s is not None else shared.default_idle_s()
        cmd = [node, *NODE_FLAGS, str(cli), "serve", "--socket", str(self.paths.socket), "--http-port", "0",
               "--http-socket", str(self.paths.http_socket), "--instance-key", self.paths.key,
               "--idle-timeout-s", str(idle), *self.spec.serve_args()]
        self.client, self.info = shared.connect_or_start(self.paths, cmd, env, material, idle,
                                                         self.startup_timeout_s)
        self._lease = shared.Lease(self.client)
        logger.info("using the shared sidecar on %s (pid %d)", self.address, self.pid)

    @property
    def alive(self) -> bool:
        return (self.client is not None and self._lease is not None and not self._lease.lost.is_set()
                and self.pid is not None and shared._pid_alive(self.pid))

    def log_tail(self) -> str:
        return shared._log_tail(self.paths) if self.paths is not None else ""

    def restart(self) -> None:
        logger.warning("lost the shared sidecar (pid %s); reconnecting (a new one is started if it is gone). "
                       "Last log lines:\n%s", self.pid, self.log_tail())
        self.stop()
        self.start()

    def stop(self, timeout_s: float = 15.0) -> None:
        """Ends this process's lease; the sidecar itself stays up for its other clients, or until idle."""
        if self._lease is not None:
            self._lease.cancel()
            self._lease = None
        if self.client is not None:
            self.client.close()
            self.client = None


def live_client(sc: LocalSidecar | SharedSidecar, failed: RadioClient | None = None) -> RadioClient:
    """The client of a live sidecar: restarted first when it is dead, or when ``failed`` (the client a call
    just failed on, SidecarUnavailable) is still its client. One thread restarts it; calls from others
    that found it dead meanwhile wait, then use the new one (never restart it again)."""
    with sc.restart_lock:
        if not sc.alive or (failed is not None and sc.client is failed):
            sc.restart()
        assert sc.client is not None
        return sc.client


class _Registry:
    """Process-wide: one sidecar handle per spec (private or shared), reference-counted by the
    models using it."""

    def __init__(self) -> None:
        self._lock = threading.RLock()  # reentrant: a model the collector closes (__del__) may release in here
        self._sidecars: dict[tuple, LocalSidecar | SharedSidecar] = {}
        atexit.register(self.stop_all)

    @staticmethod
    def _key(spec: SidecarSpec) -> tuple:
        # Every field but the idle timeout (a running sidecar keeps its own): a field added later
        # (as env was) cannot be left out by mistake.
        return tuple(getattr(spec, f.name) for f in fields(spec) if f.name != "idle_timeout_s")

    def acquire(self, spec: SidecarSpec) -> LocalSidecar | SharedSidecar:
        with self._lock:
            key = self._key(spec)
            sc = self._sidecars.get(key)
            if sc is None:
                sc = SharedSidecar(spec) if spec.shared else LocalSidecar(spec)
                sc.start()
                self._sidecars[key] = sc
            else:
                live_client(sc)  # restarted in place if it died: the models holding it use the new one too
            sc.refs += 1
            return sc

    def release(self, sc: LocalSidecar | SharedSidecar) -> None:
        with self._lock:
            sc.refs -= 1
            if sc.refs <= 0:
                sc.stop()
                self._sidecars = {k: v for k, v in self._sidecars.items() if v is not sc}

    def stop_all(self) -> None:
        with self._lock:
            for sc in self._sidecars.values():
                sc.stop()
            self._sidecars.clear()


registry = _Registry()
