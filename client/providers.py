"""Which execution provider the local sidecar runs on, and the graph precision that follows.

The choice itself is made in one place, the sidecar (``radio-sidecar providers``, server/src/runtime/
providers.ts): it probes cuda, webgpu and cpu in child processes and says which it would take and
why the better ones were not. The probe runs with ``gpu_libs.library_env()``, the environment the
sidecar itself gets, so it sees the same CUDA libraries. This module turns the zoo's ``device`` into
a request, runs the probe, and picks the graph precision from the answer and the zoo's options.
"""
from __future__ import annotations

import json
import os
import subprocess
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .gpu_libs import library_env
from .options import RadioOptions

GPU_PROVIDERS = ("cuda", "webgpu")
# What the probe's answer depends on besides the sidecar build: re-probe when any of these change.
_PROBE_ENV = ("LD_LIBRARY_PATH", "CUDA_VISIBLE_DEVICES", "VK_ICD_FILENAMES", "VK_DRIVER_FILES", "VK_ADD_DRIVER_FILES")
_cache: dict[tuple[Any, ...], ProviderChoice] = {}
_lock = threading.Lock()


class ProviderUnavailable(RuntimeError):
    """The device asked for cannot be used here; the message says why and what to do."""


@dataclass(frozen=True)
class ProviderChoice:
    requested: str  # auto | cuda | webgpu | cpu
    provider: str  # cuda | webgpu | cpu
    precision: str  # the graph precision the provider wants: fp16 | fp32
    not_taken: tuple[str, ...] = ()  # auto: why each better provider was not taken ("cuda: ...")
    providers: tuple[dict[str, Any], ...] = ()  # each probed provider's status (usable, reason, fp16, ...)


def provider_request(device: str | None) -> str:
    """The zoo's ``device`` as the sidecar's ``--provider``: None/"auto", "cpu", "cuda[:N]", "webgpu"."""
    if device is None or device == "auto":
        return "auto"
    return "cuda" if device.startswith("cuda") else device


def device_env(device: str | None, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment the probe and the sidecar get for ``device`` beyond this process's own: for
    "cuda:N", CUDA_VISIBLE_DEVICES naming the N-th GPU this process sees (CUDA's own numbering: the
    N-th entry of CUDA_VISIBLE_DEVICES when it is set). Only the sidecar's: this process's environment
    (torch's, once it initialises CUDA) is left as it is. Raises ValueError for a GPU not visible."""
    if not (device or "").startswith("cuda:"):
        return {}
    index = device.split(":", 1)[1]  # type: ignore[union-attr]  # digits: parse_options checked
    visible = (os.environ if base is None else base).get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return {"CUDA_VISIBLE_DEVICES": str(int(index))}
    gpus = [g.strip() for g in visible.split(",") if g.strip()]
    if int(index) >= len(gpus):
        seen = f"GPUs cuda:0..cuda:{len(gpus) - 1}" if gpus else "no GPU"
        raise ValueError(f"device={device!r}: CUDA_VISIBLE_DEVICES={visible!r} lets this process see {seen}; "
                         "use one of those, or change CUDA_VISIBLE_DEVICES")
    return {"CUDA_VISIBLE_DEVICES": gpus[int(index)]}


def probe(requested: str, node: str, cli: Path, timeout_s: float = 180.0,
          env_overrides: Mapping[str, str] | None = None) -> ProviderChoice:
    """Asks the sidecar which provider it takes for ``requested`` (cached per process, environment
    and build), in the environment the sidecar will get (``env_overrides``: device_env's). Raises
    ProviderUnavailable when an explicit provider cannot be used."""
    if requested == "cpu":
        return ProviderChoice("cpu", "cpu", "fp32")  # nothing to probe: the CPU provider ships with onnxruntime
    env = {**library_env(), **(env_overrides or {})}
    stamp = cli.stat().st_mtime_ns if cli.exists() else 0
    key = (requested, node, str(cli), stamp, *(env.get(k) for k in _PROBE_ENV))
    with _lock:
        if key in _cache:
            return _cache[key]
        proc = subprocess.run([node, str(cli), "providers", "--provider", requested], capture_output=True, text=True,
                              env=env, timeout=timeout_s)
        try:
            report = json.loads(proc.stdout)
        except ValueError:
            raise RuntimeError(f"the sidecar's provider probe failed (exit {proc.returncode}): "
                               f"{(proc.stderr or proc.stdout).strip()[-2000:]}") from None
        if report.get("error"):
            raise ProviderUnavailable(report["error"])
        choice = ProviderChoice(requested, report["chosen"], report["precision"], tuple(report.get("notTaken", [])),
                                tuple(report.get("providers", [])))
        _cache[key] = choice
        return choice


MIXED_PRECISION_ON_CPU = (
    "use_mixed_precision=True, but inference runs on the CPU, where fp16 graphs are slower than fp32 "
    "(onnxruntime's CPU provider has no fast fp16 kernels on most CPUs) and less exact: running the fp32 graph. "
    "For a faster, approximate CPU model use quantize=True (int8, ~1.5x fp32)")


def graph_precision(choice: ProviderChoice, options: RadioOptions, device: str | None) -> tuple[str, str | None]:
    """The graph precision to compile and serve (fp32 | fp16 | int8), and a warning to show once, if any.
    Raises ValueError for quantize=True when a GPU provider was chosen."""
    if options.quantize:
        if choice.provider in GPU_PROVIDERS:
            raise ValueError(f"quantize=True makes an int8 graph for the CPU, but this host has a GPU and device={device!r} "
                             f"chose {choice.provider}; pass device='cpu' to run int8 on the CPU, or drop quantize")
        return "int8", None
    if options.use_mixed_precision is False:
        return "fp32", None
    if options.use_mixed_precision is None:
        return choice.precision, None
    if choice.provider == "cpu":
        return "fp32", MIXED_PRECISION_ON_CPU
    if choice.precision != "fp16":
        return "fp32", (f"use_mixed_precision=True, but the {choice.provider} adapter here has no fp16 support "
                        "(no shader-f16): running the fp32 graph")
    return "fp16", None


def describe(choice: ProviderChoice, precision: str) -> str:
    """One line for the log: where inference runs, on which graph, and why not on a better provider."""
    how = "auto" if choice.requested == "auto" else "asked for"
    line = f"inference on {choice.provider} ({how}), {precision} graph"
    return f"{line}; not taken: {'; '.join(choice.not_taken)}" if choice.not_taken else line

