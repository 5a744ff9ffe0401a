"""One local sidecar per host (per user, per key), shared by every Python process that needs it.

The first process that needs a graph starts a sidecar that outlives it; later processes (a notebook,
a script, the FiftyOne App server) connect to it, and their requests share its batches.

- Where: a private directory, mode 0700, owned by this user: $RADIO_RUNTIME_DIR, else
  $XDG_RUNTIME_DIR/c-radio, else <tempdir>/c-radio-<uid>. In it, per key: ``<key>.sock`` (gRPC),
  ``<key>.http.sock`` (health, Prometheus metrics, info), ``<key>.json`` (pid and what the key
  covers), ``<key>.log`` (the sidecar's output) and ``<key>.lock``.
- Which: the key is a hash of the sidecar build (package-lock.json and every file of server/dist),
  the node binary, each served graph (its path and its metadata.json, which holds the sha256 of
  every weight file; the text tower's too), the provider, workers, threads, extra flags, allowed
  roots and the environment the sidecar reads (RADIO_*, CUDA_VISIBLE_DEVICES, ...). A different
  build or graph is a different key, hence a different socket; before use, the client checks that
  Info reports the same key.
- Starting: under an exclusive flock on ``<key>.lock`` (released by the kernel if its holder dies, so
  a lock is never stale), so two processes starting together make one sidecar: the second waits,
  then finds it serving. A stale socket (a file nobody accepts connections on) and a pid file of a
  dead process are removed first; a sidecar of this key still starting (its starter was killed) or
  still draining (idle shutdown) is waited for instead.
- Lifetime: the sidecar runs in its own session (not tied to any client; Ctrl-C in a notebook's
  terminal does not reach it). Each client process holds a lease: a health Watch stream open for as
  long as it uses the sidecar. The kernel closes a killed client's socket, which ends its lease, so a
  crashed client never keeps the sidecar up, nor takes it down. With no call open (leases included)
  for the idle timeout (``RADIO_SHARED_IDLE_S``, default 300 s; the zoo option ``idle_timeout_s``)
  the sidecar shuts down gracefully; the next process that needs it starts a fresh one.
"""
from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import http.client
import json
import logging
import os
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc

from . import messages as m
from .grpc_client import RadioClient
from .options import DEFAULT_IDLE_S

logger = logging.getLogger(__name__)

HEALTH_WATCH = "/grpc.health.v1.Health/Watch"
# Environment the sidecar reads that changes what it computes or where it runs.
_KEY_ENV_PREFIXES = ("RADIO_", "CUDA_", "ORT_", "OMP_", "NVIDIA_")
_KEY_ENV_NAMES = ("UV_THREADPOOL_SIZE", "LD_LIBRARY_PATH", "VK_ICD_FILENAMES")
# Client-side settings, not the sidecar's: left out of the key.
_KEY_ENV_IGNORED = ("RADIO_RUNTIME_DIR", "RADIO_SHARED_IDLE_S", "RADIO_ALLOWED_ROOT", "RADIO_SHARED")


def default_idle_s() -> int:
    v = os.environ.get("RADIO_SHARED_IDLE_S", "")
    return int(v) if v.strip().isdigit() else DEFAULT_IDLE_S


def runtime_dir() -> Path:
    """This user's private directory for shared sidecars (created 0700; refused if another user owns it)."""
    explicit = os.environ.get("RADIO_RUNTIME_DIR")
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if explicit:
        d = Path(explicit)
    elif xdg and os.path.isdir(xdg) and os.stat(xdg).st_uid == os.getuid():
        d = Path(xdg) / "c-radio"
    else:
        d = Path(tempfile.gettempdir()) / f"c-radio-{os.getuid()}"
    try:
        d.mkdir(mode=0o700, parents=bool(explicit))
    except FileExistsError:
        pass
    st = os.lstat(d)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
        raise RuntimeError(f"{d} is not a directory owned by this user: refusing to put the shared sidecar's "
                           "socket there (set RADIO_RUNTIME_DIR to a private directory, or use shared=False)")
    if st.st_mode & 0o077:
        os.chmod(d, 0o700)
    return d


@functools.lru_cache(maxsize=8)
def _build_digest(repo: str, stamp: tuple[Any, ...]) -> str:
    h = hashlib.sha256()
    root = Path(repo)
    lock = root / "package-lock.json"
    h.update(lock.read_bytes() if lock.exists() else b"")
    dist = root / "server" / "dist"
    for path in sorted(p for p in dist.rglob("*") if p.is_file() and p.name != ".built-from"):
        h.update(str(path.relative_to(dist)).encode() + b"\0")
        h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


def build_digest(repo: Path) -> str:
    """sha256 of package-lock.json and every file of server/dist (cached while their mtimes hold)."""
    dist = repo / "server" / "dist"
    files = sorted(p for p in dist.rglob("*") if p.is_file()) if dist.exists() else []
    stamp = tuple((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in files)
    return _build_digest(str(repo), stamp)


def _graph_digest(graph_dir: str) -> str:
    h = hashlib.sha256()
    for meta in (Path(graph_dir) / "metadata.json", Path(graph_dir) / "text" / "metadata.json"):
        h.update(meta.read_bytes() if meta.exists() else b"-")
    return h.hexdigest()


def key_material(spec: Any, node: str, repo: Path, env: dict[str, str]) -> dict[str, Any]:
    """Everything the key covers (also written to <key>.json, to say what a sidecar serves); `env` is
    the environment the sidecar would start with."""
    return {
        "build": build_digest(repo),
        "node": os.path.realpath(node),
        "graphs": [[name, os.path.realpath(path), _graph_digest(path)] for name, path in spec.graphs],
        "provider": spec.provider,
        "workers": spec.workers,
        "threads": spec.threads,
        "extra_args": list(spec.extra_args),
        "allowed_roots": list(spec.allowed_roots),
        "env": {k: v for k, v in sorted(env.items())
                if (k.startswith(_KEY_ENV_PREFIXES) or k in _KEY_ENV_NAMES) and k not in _KEY_ENV_IGNORED},
    }


def sidecar_key(material: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()[:24]


class Paths:
    def __init__(self, directory: Path, key: str) -> None:
        self.dir = directory
        self.key = key
        self.socket = directory / f"{key}.sock"
        self.http_socket = directory / f"{key}.http.sock"
        self.lock = directory / f"{key}.lock"
        self.meta = directory / f"{key}.json"
        self.log = directory / f"{key}.log"


class KeyMismatch(RuntimeError):
    """A live sidecar on our socket reports another key (never used)."""


@contextlib.contextmanager
def _flock(path: Path, timeout_s: float) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"timed out after {timeout_s:.0f} s waiting for {path} (another process "
                                       "is starting the shared sidecar)") from None
                time.sleep(0.1)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())  # who holds it (diagnostics only: flock is the lock)
        yield
    finally:
        os.close(fd)  # releases the flock


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped by its parent) is not alive.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def _is_our_sidecar(pid: int, key: str) -> bool:
    """pid is alive and is a sidecar started for this key (where /proc says; elsewhere: alive)."""
    if not _pid_alive(pid):
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return sys.platform != "linux"
    return b"serve" in cmdline and key.encode() in cmdline


def _read_meta(paths: Paths) -> dict[str, Any]:
    try:
        return json.loads(paths.meta.read_text())
    except (OSError, ValueError):
        return {}


def _socket_accepts(path: Path) -> bool:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(2)
    try:
        s.connect(str(path))
        return True
    except OSError:
        return False
    finally:
        s.close()


def _try_connect(paths: Paths) -> tuple[RadioClient, Any] | None:
    """A client of the sidecar on paths.socket if it serves this key; None if nothing serves there."""
    if not paths.socket.exists() or not _socket_accepts(paths.socket):
        return None
    client = RadioClient(f"unix:{paths.socket}")
    try:
        if not client.serving():
            client.close()
            return None
        info = client.info(timeout=10)
    except Exception:
        client.close()
        return None
    if info.instance_key != paths.key:
        client.close()
        raise KeyMismatch(f"the sidecar on {paths.socket} (pid {info.pid}) reports key {info.instance_key!r}, not "
                          f"{paths.key!r}: refusing to use it")
    return client, info


def _log_tail(paths: Paths, n: int = 20) -> str:
    try:
        return "\n".join(paths.log.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


def _remove_stale(paths: Paths) -> None:
    for p in (paths.socket, paths.http_socket):
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISSOCK(os.lstat(p).st_mode) and not _socket_accepts(p):
                logger.info("removing the stale socket %s", p)
                p.unlink()
    with contextlib.suppress(FileNotFoundError):
        paths.meta.unlink()


def _spawn(paths: Paths, cmd: list[str], env: dict[str, str], material: dict[str, Any], idle_s: int,
           startup_timeout_s: float) -> tuple[RadioClient, Any]:
    log = os.open(paths.log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env,
                                start_new_session=True, close_fds=True)
    finally:
        os.close(log)
    # Reaps it if it exits while this process lives (else a zombie until we exit).
    threading.Thread(target=proc.wait, daemon=True, name=f"radio-sidecar-reaper-{proc.pid}").start()
    paths.meta.write_text(json.dumps({"pid": proc.pid, "key": paths.key, "started": time.time(), "idle_timeout_s": idle_s,
                                      "started_by": os.getpid(), "covers": material}, indent=1))
    os.chmod(paths.meta, 0o600)
    logger.info("starting the shared C-RADIOv4 sidecar (pid %d) on %s: %s", proc.pid, paths.socket, " ".join(cmd))
    deadline = time.monotonic() + startup_timeout_s
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"the shared sidecar exited with code {proc.returncode} while starting:\n{_log_tail(paths)}")
        got = _try_connect(paths)
        if got is not None:
            logger.info("shared sidecar ready on %s (pid %d)", paths.socket, proc.pid)
            return got
        if time.monotonic() > deadline:
            proc.terminate()
            raise RuntimeError(f"the shared sidecar was not ready after {startup_timeout_s:.0f} s:\n{_log_tail(paths)}")
        time.sleep(0.1)


def connect_or_start(paths: Paths, cmd: list[str], env: dict[str, str], material: dict[str, Any], idle_s: int,
                     startup_timeout_s: float = 180.0) -> tuple[RadioClient, Any]:
    """A client of the shared sidecar for paths.key: the one running, or one this call starts."""
    got = _try_connect(paths)
    if got is not None:
        return got
    with _flock(paths.lock, startup_timeout_s):
        got = _try_connect(paths)
        if got is not None:
            return got
        pid = _read_meta(paths).get("pid")
        if isinstance(pid, int) and _is_our_sidecar(pid, paths.key):
            # Still starting (its starter died) or draining after its idle timeout: serving soon, or gone soon.
            deadline = time.monotonic() + startup_timeout_s
            while _is_our_sidecar(pid, paths.key) and time.monotonic() < deadline:
                got = _try_connect(paths)
                if got is not None:
                    return got
                time.sleep(0.1)
            if _is_our_sidecar(pid, paths.key):
                raise RuntimeError(f"the shared sidecar (pid {pid}) on {paths.socket} neither serves nor exits:\n{_log_tail(paths)}")
        _remove_stale(paths)
        return _spawn(paths, cmd, env, material, idle_s, startup_timeout_s)


class Lease:
    """A health Watch stream held open while this process uses the sidecar: the sidecar counts it
    as an open call, so it does not idle out under a client; the kernel ends it if we die. ``lost``
    is set when the stream ends on its own (the sidecar stopped, or reported NOT_SERVING)."""

    def __init__(self, client: RadioClient) -> None:
        self.lost = threading.Event()
        self._cancelled = False
        watch = client._channel().unary_stream(HEALTH_WATCH, request_serializer=lambda r: r.SerializeToString(),
                                               response_deserializer=m.HealthCheckResponse.FromString)
        self._call = watch(m.HealthCheckRequest())
        self._first = threading.Event()
        threading.Thread(target=self._hold, daemon=True, name="radio-sidecar-lease").start()
        self._first.wait(5)

    def _hold(self) -> None:
        try:
            for resp in self._call:
                self._first.set()
                if resp.status != m.SERVING:
                    break
        except grpc.RpcError:
            pass
        finally:
            self._first.set()
            if not self._cancelled:
                self.lost.set()

    def cancel(self) -> None:
        self._cancelled = True
        self._call.cancel()


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float = 10.0) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self._path)
        self.sock = s


def http_get(socket_path: str | Path, path: str) -> str:
    """GET over the sidecar's HTTP unix socket (e.g. /metrics)."""
    conn = _UnixHTTPConnection(str(socket_path))
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        body = resp.read().decode()
        if resp.status != 200:
            raise RuntimeError(f"GET {path} on {socket_path}: HTTP {resp.status}: {body[:200]}")
        return body
    finally:
        conn.close()


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text → {'name{labels}': value} (sums over label sets under the bare name too)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name_labels, _, value = line.rpartition(" ")
        try:
            v = float(value)
        except ValueError:
            continue
        out[name_labels] = v
        bare = name_labels.split("{", 1)[0]
        if bare != name_labels:
            out[bare] = out.get(bare, 0.0) + v
    return out
