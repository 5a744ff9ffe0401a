"""Runs the sidecar's command-line program from tests: `radio-sidecar compile`, `run`, `make-checkpoint`.

Tests go through the CLI on purpose: these commands are how anyone checks fidelity from outside.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]


def sidecar_command() -> list[str]:
    """The built CLI (`npm run build`), or RADIO_SIDECAR_CMD (e.g. 'npx tsx server/src/cli.ts')."""
    override = os.environ.get("RADIO_SIDECAR_CMD")
    if override:
        return override.split()
    cli = REPO / "server" / "dist" / "cli.js"
    if not cli.exists():
        raise RuntimeError(f"{cli} is missing: run `npm run build` first")
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from client.node_runtime import node_executable  # noqa: PLC0415 (RADIO_NODE, PATH's node >= 20, or PyPI's)
    return [node_executable(), str(cli)]


def sidecar(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([*sidecar_command(), *args], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"radio-sidecar {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


def make_checkpoint(out: Path, preset: str = "tiny", seed: int | None = None, cpe_max_size: int | None = None,
                    final_norm: bool = False) -> Path:
    args = ["make-checkpoint", "--preset", preset, "--out", str(out)] + (["--final-norm"] if final_norm else [])
    if seed is not None:
        args += ["--seed", str(seed)]
    if cpe_max_size is not None:
        args += ["--cpe-max-size", str(cpe_max_size)]
    sidecar(*args)
    return out


def compile_graph(checkpoint: Path, out: Path, *extra: str) -> Path:
    sidecar("compile", "--checkpoint-dir", str(checkpoint), "--out", str(out), *extra)
    return out


def run_graph(model_dir: Path, x: np.ndarray, work: Path, *extra: str) -> tuple[np.ndarray, np.ndarray]:
    """`radio-sidecar run` on x, uint8 RGB images [B, H, W, 3] (the graph's `pixels` input); returns
    (summary, features) as the CLI writes them."""
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[3] != 3:
        raise ValueError(f"run_graph takes uint8 RGB images [B, H, W, 3], got {x.dtype} {list(x.shape)}")
    work.mkdir(parents=True, exist_ok=True)
    np.save(work / "input.npy", np.ascontiguousarray(x))
    sidecar("run", "--graph", str(model_dir), "--input", str(work / "input.npy"),
            "--out-dir", str(work), *extra)
    return np.load(work / "summary.npy"), np.load(work / "features.npy")
