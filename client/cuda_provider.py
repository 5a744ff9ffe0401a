"""Installs onnxruntime-node's CUDA execution provider (``libonnxruntime_providers_{shared,cuda}.so``
beside its ``libonnxruntime.so.1``) and checks that the sidecar can load it. One implementation for
``scripts/setup.sh`` (``python -m client.cuda_provider install --auto``), the zoo's first-use set-up
(``ensure_for_zoo``) and users (``python -m client.cuda_provider check|install``).

The routes, tried in order until one puts the files of onnxruntime-node's exact version in place:
  (a) npm:  onnxruntime-node's own install script (a NuGet download of Microsoft.ML.OnnxRuntime.Gpu.Linux;
            fails offline, behind some proxies and on redirects; none for linux/arm64). Skipped when
            ONNXRUNTIME_NODE_INSTALL=skip.
  (b) pypi: the same files from PyPI's onnxruntime-gpu wheel of that version (ort_gpu_wheel.py); an
            already downloaded wheel can be passed with --wheel / RADIO_ORT_GPU_WHEEL.
The CUDA and cuDNN libraries themselves come from pip wheels in the Python environment that starts
the sidecar (gpu_libs.py); a missing one is named with the pip command that installs it.

When: RADIO_CUDA_PROVIDER=auto (default) installs on hosts where `nvidia-smi -L` lists a GPU,
=install always (and failures are errors), =skip never.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .gpu_libs import CUDA_LIBRARIES, DRIVER_LIBRARY, OPTIONAL_LIBRARIES, cuda_library_dirs, ldd_unresolved, library_env, pip_install_hint, unresolved_libraries
from .node_runtime import node_executable
from .ort_gpu_wheel import cached_wheel, child_output, default_cache_dir, download_wheel, install_from_wheel, sha256_of
from .provider_files import (
    CUDA,
    PROVIDER_FILES,
    RECORD_FILE,
    CudaProviderError,
    OrtNode,
    VersionMismatchError,
    find_ort_node,
    inspect,
    mismatch_message,
    read_record,
    write_record,
)

REPO = Path(__file__).resolve().parent.parent
ROUTES = ("npm", "pypi")
_LABEL = {"npm": "(a) npm", "pypi": "(b) pypi"}
INSTALL_VALUES = {"install", "1", "true", "yes", "on"}
SKIP_VALUES = {"skip", "0", "false", "no", "off"}
NPM_TIMEOUT_S = 1800  # a stalled NuGet download (proxy) must not hang set-up forever
Log = Callable[[str], None]


def _log(message: str) -> None:
    print(f"[cuda-provider] {message}", file=sys.stderr, flush=True)


def nvidia_gpus(env: Mapping[str, str] | None = None) -> list[str]:
    """The GPUs `nvidia-smi -L` lists (none without the NVIDIA driver's tool)."""
    exe = shutil.which("nvidia-smi", path=(os.environ if env is None else env).get("PATH"))
    if exe is None:
        return []
    try:
        out = subprocess.run([exe, "-L"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line for line in out.stdout.splitlines() if line.startswith("GPU ")] if out.returncode == 0 else []


@dataclass(frozen=True)
class Decision:
    install: bool
    explicit: bool  # asked for (RADIO_CUDA_PROVIDER=install): failures are errors, not warnings
    reason: str


def wanted(env: Mapping[str, str] | None = None) -> Decision:
    env = os.environ if env is None else env
    value = env.get("RADIO_CUDA_PROVIDER", "auto").strip().lower() or "auto"
    if value in INSTALL_VALUES:
        return Decision(True, True, f"RADIO_CUDA_PROVIDER={value}")
    if value in SKIP_VALUES:
        return Decision(False, False, f"RADIO_CUDA_PROVIDER={value}")
    if value != "auto":
        raise CudaProviderError(f"RADIO_CUDA_PROVIDER={value!r} is not valid; use auto (install on NVIDIA GPU hosts), "
                                "install or skip")
    gpus = nvidia_gpus(env)
    if gpus:
        return Decision(True, False, f"NVIDIA GPU found: {gpus[0]}")
    return Decision(False, False, "no NVIDIA GPU found (`nvidia-smi -L`); RADIO_CUDA_PROVIDER=install installs anyway")


@dataclass(frozen=True)
class Outcome:
    route: str  # "npm" | "pypi" | "present" (nothing to do)
    bin_dir: Path
    unresolved: list[str] = field(default_factory=list)  # CUDA/cuDNN libraries the sidecar would not find

    def missing_message(self) -> str:
        return (f"the CUDA provider is in {self.bin_dir}, but the sidecar would not find {', '.join(self.unresolved)} "
                f"(from no pip wheel of {sys.executable}, no LD_LIBRARY_PATH folder, not in the ldconfig cache). "
                f"Install them into this Python environment: {pip_install_hint(self.unresolved)}")


def _route_npm(ort: OrtNode, log: Log) -> None:
    if os.environ.get("ONNXRUNTIME_NODE_INSTALL", "").strip().lower() == "skip":
        raise CudaProviderError("skipped: ONNXRUNTIME_NODE_INSTALL=skip")
    script = ort.package_dir / "script" / "install.js"
    if not script.exists():
        raise CudaProviderError(f"needs {script}")
    try:
        node = node_executable()
    except RuntimeError as e:
        raise CudaProviderError(str(e)) from None
    log("(a) npm: onnxruntime-node's install script: NuGet Microsoft.ML.OnnxRuntime.Gpu.Linux "
        f"{ort.version} (several hundred MB, no progress bar)")
    # Outside npm the script takes its default path: fetch the files when they are missing. npm's own
    # variables would make it think this is onnxruntime's own checkout and do nothing.
    env = {k: v for k, v in os.environ.items() if not k.startswith("npm_")}
    out = child_output()
    try:
        rc = subprocess.run([node, str(script)], cwd=ort.package_dir, env=env, stdin=subprocess.DEVNULL,
                            stdout=out, stderr=out, timeout=NPM_TIMEOUT_S).returncode
    except subprocess.TimeoutExpired as e:
        raise CudaProviderError(f"onnxruntime-node's install script did not finish in {NPM_TIMEOUT_S} s "
                                "(a proxy or firewall holding the connection?)") from e
    if rc != 0:
        raise CudaProviderError(f"onnxruntime-node's install script failed (exit {rc}; its output is above): "
                                "api.nuget.org unreachable, a proxy it was not told about (GLOBAL_AGENT_HTTPS_PROXY), "
                                "or a redirect it does not follow")


def _route_pypi(ort: OrtNode, wheel: Path | None, cache_dir: Path | None, log: Log) -> dict[str, dict[str, object]]:
    cache = cache_dir or default_cache_dir()
    chosen = wheel or cached_wheel(cache, ort.version, ort.machine)
    if chosen is not None:
        log(f"(b) pypi: using {chosen}")
    else:
        chosen = download_wheel(ort.version, cache, ort.machine, log)
    return install_from_wheel(chosen, ort, log)


def _file_record(ort: OrtNode) -> dict[str, dict[str, object]]:
    return {n: {"size": (ort.bin_dir / n).stat().st_size, "sha256": sha256_of(ort.bin_dir / n)} for n in PROVIDER_FILES}


def _run_routes(ort: OrtNode, routes: Sequence[str], wheel: Path | None, cache_dir: Path | None, log: Log) -> str:
    failures: list[str] = []
    for route in routes:
        try:
            files: dict[str, dict[str, object]] | None = None  # npm: recorded from the files it put there
            if route == "npm":
                _route_npm(ort, log)
            else:
                files = _route_pypi(ort, wheel, cache_dir, log)
        except VersionMismatchError:
            raise
        except CudaProviderError as e:
            failures.append(f"{_LABEL[route]}: {e}")
            log(f"{_LABEL[route]}: {e}")
            continue
        (ort.bin_dir / RECORD_FILE).unlink(missing_ok=True)  # a failure record must not vouch for new files
        state = inspect(ort)
        if state.mismatched:
            raise VersionMismatchError(mismatch_message(ort, state))
        if state.installed:
            write_record(ort.bin_dir, {"onnxruntime": ort.version, "route": route, "files": files or _file_record(ort)})
            log(f"{_LABEL[route]}: installed the onnxruntime {ort.version} CUDA provider in {ort.bin_dir}")
            return route
        failures.append(f"{_LABEL[route]}: finished, but put no CUDA provider beside libonnxruntime.so.1 "
                        f"(onnxruntime-node has no CUDA download for linux/{ort.bin_dir.name})")
        log(failures[-1])
    raise CudaProviderError("no install route worked:\n  " + "\n  ".join(failures) +
                            "\nFix one of them and run `python -m client.cuda_provider install` again "
                            "(README: 'GPU: installing the CUDA provider')")


def install(source: Path = REPO, routes: Sequence[str] = ROUTES, wheel: Path | None = None,
            cache_dir: Path | None = None, log: Log = _log) -> Outcome:
    """Puts onnxruntime-node's CUDA provider in place by the first route that works (nothing to do when
    the right version is there); refuses provider files of another onnxruntime version."""
    wheel = wheel or (Path(os.environ["RADIO_ORT_GPU_WHEEL"]) if os.environ.get("RADIO_ORT_GPU_WHEEL") else None)
    if wheel is not None:
        routes = ("pypi",)  # a wheel handed over means route (b), with no NuGet attempt first
    ort = find_ort_node(source)
    state = inspect(ort)
    if state.mismatched:
        raise VersionMismatchError(mismatch_message(ort, state))
    route = "present" if state.installed else _run_routes(ort, routes, wheel, cache_dir, log)
    return Outcome(route, ort.bin_dir, unresolved_libraries())


def ensure_for_zoo(source: Path, log: Log = _log) -> Outcome | None:
    """The zoo's first-use step. On hosts with an NVIDIA GPU (or when asked) installs the provider once
    per onnxruntime-node install: a failed attempt is recorded and reported, not retried on every
    load (RADIO_CUDA_PROVIDER=install or `python -m client.cuda_provider install` retries), and the
    sidecar then reports why it cannot use CUDA. Asked-for installs and version mismatches raise."""
    decision = wanted()
    if not decision.install:
        return None
    ort = find_ort_node(source)
    record = read_record(ort.bin_dir) or {}
    if not decision.explicit and record.get("failed") and record.get("onnxruntime") == ort.version \
            and not inspect(ort).installed:
        lines = str(record["failed"]).splitlines()
        why = "; ".join(line.strip() for line in lines if line.startswith("  ")) or lines[0]  # the routes' errors
        log(f"WARNING: the CUDA provider is not installed; an earlier attempt failed ({why}). Retry with "
            f"RADIO_CUDA_PROVIDER=install, or `python -m client.cuda_provider install` in {source}")
        return None
    try:
        outcome = install(source, log=log)
    except VersionMismatchError as e:
        raise VersionMismatchError(f"{e} (or set RADIO_CUDA_PROVIDER=skip to leave the CUDA provider alone)") from e
    except CudaProviderError as e:
        if decision.explicit:
            raise
        write_record(ort.bin_dir, {"onnxruntime": ort.version, "failed": str(e)})
        log(f"WARNING: the CUDA provider could not be installed ({decision.reason}), so the sidecar cannot use "
            f"CUDA:\n{e}")
        return None
    if outcome.unresolved:
        log(f"WARNING: {outcome.missing_message()}")
    return outcome


def check(source: Path = REPO, log: Log = _log) -> bool:
    """Reports what the sidecar needs for CUDA and whether it is there; True when all of it is."""
    gpus = nvidia_gpus()
    log(f"NVIDIA GPU: {gpus[0] if gpus else 'none found (`nvidia-smi -L`)'}")
    try:
        ort = find_ort_node(source)
    except CudaProviderError as e:
        log(f"onnxruntime-node: {e}")
        return False
    state = inspect(ort)
    record = read_record(ort.bin_dir) or {}
    log(f"onnxruntime-node {ort.version}: {ort.bin_dir}")
    if state.mismatched:
        log(f"CUDA provider: REFUSED: {mismatch_message(ort, state)}")
    elif state.installed:
        how = f"route {_LABEL[record['route']]}" if record.get("route") in _LABEL else "onnxruntime-node's npm postinstall"
        log(f"CUDA provider: onnxruntime {state.version} ({how})")
    else:
        missing = [n for n in PROVIDER_FILES if n not in state.present]
        log(f"CUDA provider: missing {', '.join(missing)}: `python -m client.cuda_provider install`")
    env = library_env()
    found = cuda_library_dirs()
    unresolved = unresolved_libraries(env)
    every = CUDA_LIBRARIES + OPTIONAL_LIBRARIES
    outside = set(every) - set(unresolved_libraries(env, names=every))
    for name in every:
        where = found.get(name) or ("outside pip (LD_LIBRARY_PATH or ldconfig)" if name in outside else "missing")
        log(f"  {name}{'' if name in CUDA_LIBRARIES else ' (optional)'}: {where}")
    if unresolved:
        log(f"CUDA/cuDNN libraries the sidecar would not find: {', '.join(unresolved)}; "
            f"install: {pip_install_hint(unresolved)}")
    driver = not unresolved_libraries(env, names=(DRIVER_LIBRARY,))
    log(f"NVIDIA driver ({DRIVER_LIBRARY}): " + ("found" if driver else "missing: it comes with the NVIDIA driver, not pip"))
    linked: list[str] = []
    if state.installed:
        try:
            linked = ldd_unresolved(ort.bin_dir / CUDA, env)
            log(f"ldd {CUDA}: " + (f"not found: {', '.join(linked)}" if linked else "every library resolves"))
        except RuntimeError as e:
            log(f"ldd {CUDA}: not checked: {e}")
    ok = state.installed and not unresolved and driver and not linked
    log("ready for --provider cuda" if ok else "not ready for --provider cuda (see above)")
    return ok


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m client.cuda_provider", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=Path, default=REPO, help="folder holding node_modules (default: this repo)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("check", help="report whether the sidecar can use CUDA; exit 0 when it can")
    p = sub.add_parser("install", help="install the CUDA provider (exit 0: done; 1: failed or refused; "
                                       "2: installed, but CUDA/cuDNN libraries are missing)")
    p.add_argument("--auto", action="store_true",
                   help="only where RADIO_CUDA_PROVIDER says so (default auto: on hosts with an NVIDIA GPU)")
    p.add_argument("--route", choices=ROUTES, action="append",
                   help="try only this route (repeatable; default: npm, then pypi)")
    p.add_argument("--wheel", type=Path, help="an onnxruntime-gpu wheel already downloaded (route b only)")
    p.add_argument("--cache-dir", type=Path, help=f"where route (b) keeps the wheel (default: {default_cache_dir()})")
    args = parser.parse_args(argv)
    source = args.source.resolve()
    if args.command == "check":
        return 0 if check(source) else 1
    try:
        if args.auto:
            decision = wanted()
            if not decision.install:
                _log(f"not installing the CUDA provider: {decision.reason}")
                return 0
        outcome = install(source, routes=tuple(args.route or ROUTES), wheel=args.wheel, cache_dir=args.cache_dir)
    except CudaProviderError as e:
        _log(f"ERROR: {e}")
        return 1
    if outcome.route == "present":
        _log(f"the CUDA provider is already in {outcome.bin_dir}")
    if outcome.unresolved:
        _log(f"WARNING: {outcome.missing_message()}")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
