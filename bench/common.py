"""Shared helpers for the benchmark harness: the worker protocol (JSON lines on a private fd),
test images, CLIP-style preprocessing, FLOP counts, memory readings and statistics."""
from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
# The heatmap defaults the zoo and the sidecar share (their one home).
HEATMAP_DEFAULTS = json.loads((REPO / "proto" / "radio" / "v1" / "defaults.json").read_text())["heatmap"]


# ----------------------------------------------------------------------------------------------
# Worker protocol: commands arrive as JSON lines on stdin, answers leave as JSON lines on a copy of
# the original stdout; the worker's own stdout (FiftyOne progress bars, prints) goes to stderr.
# ----------------------------------------------------------------------------------------------

def protocol_channel() -> Any:
    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return out


def serve_commands(out: Any, handlers: dict[str, Callable[[dict], dict]]) -> None:
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        msg = json.loads(line)
        cmd = msg.pop("cmd")
        if cmd == "exit":
            out.write(json.dumps({"ok": True}) + "\n")
            return
        try:
            reply = handlers[cmd](msg)
            reply["ok"] = True
        except Exception as err:  # reported to the harness, which stops the run
            import traceback
            reply = {"ok": False, "error": f"{type(err).__name__}: {err}", "trace": traceback.format_exc()}
        out.write(json.dumps(reply) + "\n")


def import_client(package: str = "c_radio_zoo") -> Any:
    """The zoo's client package from this checkout as ``<package>.client``, without the zoo itself
    (no FiftyOne: paths c/d run on machines without it, a lent GPU among them). ``package`` is the
    name the zoo is imported under elsewhere, so both can share the client's classes."""
    import importlib.util
    import types

    if f"{package}.client" in sys.modules:
        return sys.modules[f"{package}.client"]
    if package not in sys.modules:
        root = types.ModuleType(package)
        root.__path__ = [str(REPO)]
        sys.modules[package] = root
    spec = importlib.util.spec_from_file_location(f"{package}.client", REPO / "client" / "__init__.py",
                                                  submodule_search_locations=[str(REPO / "client")])
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[f"{package}.client"] = mod
    spec.loader.exec_module(mod)
    return mod


# ----------------------------------------------------------------------------------------------
# Images and preprocessing
# ----------------------------------------------------------------------------------------------

def setup_images(state: dict, msg: dict, fo: Any) -> dict:
    """The workers' `setup` command: the case's resolution, and (when the image list changes) a
    fresh FiftyOne dataset of those images, if FiftyOne is loaded."""
    state["res"] = int(msg["resolution"])
    if msg.get("images") and msg["images"] != state["images"]:
        state["images"] = list(msg["images"])
        if fo is not None:
            if state["dataset"] is not None:
                state["dataset"].delete()
            ds = fo.Dataset()
            ds.add_samples([fo.Sample(filepath=p) for p in state["images"]])
            state["dataset"] = ds
    return {}


def make_images(root: Path, n: int, size: tuple[int, int] = (480, 640), seed: int = 7) -> list[str]:
    """n synthetic photo-like JPEGs (gradients, discs, bars), height × width = size."""
    from PIL import Image, ImageDraw

    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    h, w = size
    paths = []
    for i in range(n):
        path = root / f"img{i:03d}_{h}x{w}.jpg"
        paths.append(str(path))
        if path.exists():
            continue
        base = np.linspace(0, 1, w)[None, :, None] * rng.random(3) * 255
        noise = rng.normal(0, 12, (h, w, 3))
        img = Image.fromarray(np.clip(np.broadcast_to(base, (h, w, 3)) + noise, 0, 255).astype(np.uint8))
        d = ImageDraw.Draw(img)
        for _ in range(8):
            x, y, r = rng.integers(0, w), rng.integers(0, h), rng.integers(20, 90)
            color = tuple(int(c) for c in rng.integers(0, 256, 3))
            if rng.random() < 0.5:
                d.ellipse([x - r, y - r, x + r, y + r], fill=color)
            else:
                d.rectangle([x, 0, x + r // 2, h], fill=color)
        img.save(path, quality=90)
    return paths


def clip_resize_uint8(img: Any, size: int) -> np.ndarray:
    """What a CLIP image processor does before scaling, in PIL: resize the shorter side to `size`
    (bicubic), centre-crop size × size; uint8 RGB HWC [size, size, 3], what the compiled graph's
    `pixels` input takes (it scales and normalises inside)."""
    from PIL import Image

    if not isinstance(img, Image.Image):
        img = Image.fromarray(np.asarray(img))
    img = img.convert("RGB")
    w, h = img.size
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    img = img.resize((nw, nh), Image.BICUBIC)
    left, top = (nw - size) // 2, (nh - size) // 2
    img = img.crop((left, top, left + size, top + size))
    return np.ascontiguousarray(np.asarray(img, dtype=np.uint8))


def clip_preprocess(img: Any, size: int) -> np.ndarray:
    """clip_resize_uint8, then scaled to [0, 1]; CHW float32 (for the torch paths). (Mean/std
    normalisation is inside the model, as in C-RADIO's input conditioner.)"""
    arr = clip_resize_uint8(img, size).astype(np.float32) / np.float32(255)
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


def pca1_heatmap(features: np.ndarray, grid: tuple[int, int], out_max_side: int = HEATMAP_DEFAULTS["max_side"],
                 sigma: float = HEATMAP_DEFAULTS["smoothing_sigma"]) -> np.ndarray:
    """The Python integration's heatmap: first principal component of the patch features,
    Gaussian-smoothed on the feature grid, min-max scaled to uint8, resized (bilinear) so the
    longer side is out_max_side."""
    from PIL import Image

    h, w = grid
    x = features.reshape(h * w, -1).astype(np.float64)
    x = x - x.mean(axis=0, keepdims=True)
    # Top right-singular vector by power iteration on the C×C covariance (as sklearn's PCA would).
    cov = x.T @ x
    v = np.ones(cov.shape[0]) / math.sqrt(cov.shape[0])
    for _ in range(50):
        v = cov @ v
        v /= np.linalg.norm(v) + 1e-30
    pc = (x @ v).reshape(h, w)
    if sigma > 0:
        r = max(1, int(math.ceil(3 * sigma)))
        k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
        k /= k.sum()
        pad = np.pad(pc, r, mode="reflect")
        pc = np.apply_along_axis(lambda row: np.convolve(row, k, mode="valid"), 1, pad)
        pc = np.apply_along_axis(lambda col: np.convolve(col, k, mode="valid"), 0, pc)
    lo, hi = pc.min(), pc.max()
    u8 = ((pc - lo) / (hi - lo + 1e-12) * 255).round().astype(np.uint8)
    scale = out_max_side / max(h, w)
    return np.asarray(Image.fromarray(u8).resize((round(w * scale), round(h * scale)), Image.BILINEAR))


# ----------------------------------------------------------------------------------------------
# Model FLOPs (multiply-add = 2 FLOPs), for achieved GFLOP/s and model FLOP utilisation
# ----------------------------------------------------------------------------------------------

# (width, depth, heads, mlp) of the repo's make-checkpoint presets (server/src/synthetic/generate.ts);
# all have 10 prefix tokens (3 cls + 7 registers) and a 128 × 128 position grid.
PRESET_SHAPES = {"tiny": (64, 8, 2, 256), "vit-b": (768, 12, 12, 3072), "h": (1280, 32, 16, 5120),
                 "so400m": (1152, 27, 16, 4304)}


def vit_flops(width: int, depth: int, mlp: int, prefix: int, res: int, patch: int = 16) -> float:
    t = (res // patch) ** 2 + prefix
    per_block = 2 * t * width * 3 * width + 2 * t * width * width + 2 * 2 * t * width * mlp + 2 * 2 * t * t * width
    embed = 2 * (res // patch) ** 2 * 3 * patch * patch * width
    return float(depth * per_block + embed)


def checkpoint_shape(ckpt: Path) -> dict[str, int]:
    """width, depth, mlp, prefix tokens, read from the safetensors header (no weights loaded)."""
    import struct

    with open(ckpt / "model.safetensors", "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
    pg = "radio_model.model.patch_generator."
    width = header[pg + "embedder.weight"]["shape"][0]
    prefix = header[pg + "cls_token.token"]["shape"][0]
    blocks = {int(k.split(".")[3]) for k in header if k.startswith("radio_model.model.blocks.")}
    mlp = header["radio_model.model.blocks.0.mlp.fc1.weight"]["shape"][0]
    return {"width": width, "depth": len(blocks), "mlp": mlp, "prefix": prefix}


# ----------------------------------------------------------------------------------------------
# Memory: /proc/<pid>/status
# ----------------------------------------------------------------------------------------------

def _proc_kb_fields(path: str, keys: tuple[str, ...]) -> dict[str, int]:
    """`Key: N kB` lines of a /proc file, in bytes (0 for each when the process is gone)."""
    out = dict.fromkeys(keys, 0)
    try:
        for line in Path(path).read_text().splitlines():
            k, _, v = line.partition(":")
            if k in out:
                out[k] = int(v.split()[0]) * 1024
    except OSError:
        pass
    return out


def proc_memory(pid: int) -> dict[str, int]:
    """Rss / Pss / Anonymous from smaps_rollup. Pss splits shared pages (a weight file mapped by
    several workers, or by several processes) between their users: the memory really used."""
    return _proc_kb_fields(f"/proc/{pid}/smaps_rollup", ("Rss", "Pss", "Anonymous"))


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS / VmHWM in bytes (0 when the process is gone)."""
    return _proc_kb_fields(f"/proc/{pid}/status", ("VmRSS", "VmHWM"))


def reset_peak(pid: int) -> bool:
    """Resets VmHWM to the current RSS (Linux ≥ 4.0: echo 5 > /proc/<pid>/clear_refs)."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


# ----------------------------------------------------------------------------------------------
# Statistics
# ----------------------------------------------------------------------------------------------

def percentile(xs: Iterable[float], q: float) -> float:
    a = sorted(xs)
    if not a:
        return float("nan")
    pos = (len(a) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return a[lo] + (a[hi] - a[lo]) * (pos - lo)


def median(xs: Iterable[float]) -> float:
    return percentile(xs, 50)


class Timer:
    def __init__(self) -> None:
        self.t0 = time.perf_counter()

    def lap(self) -> float:
        t = time.perf_counter()
        d, self.t0 = t - self.t0, t
        return d


# ----------------------------------------------------------------------------------------------
# CPU accounting: this machine may be shared, so every run records how much CPU other processes
# took while it ran, and the harness waits for the machine to be quiet before each run.
# ----------------------------------------------------------------------------------------------

def _busy_jiffies() -> int:
    f = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, idle, iowait, irq, softirq, steal = (int(x) for x in f[:8])
    return user + nice + system + irq + softirq + steal


def _pid_jiffies(pid: int) -> int:
    try:
        s = Path(f"/proc/{pid}/stat").read_text()
        f = s[s.rindex(")") + 2:].split()
        return int(f[11]) + int(f[12]) + int(f[13]) + int(f[14])  # utime stime cutime cstime
    except (OSError, ValueError, IndexError):
        return 0


def descendants(root: int) -> list[int]:
    parent: dict[int, int] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                s = (d / "stat").read_text()
                parent[int(d.name)] = int(s[s.rindex(")") + 2:].split()[1])
            except (OSError, ValueError, IndexError):
                pass
    out, frontier = [], [root]
    while frontier:
        p = frontier.pop()
        kids = [c for c, pp in parent.items() if pp == p]
        out += kids
        frontier += kids
    return out


class CpuMeter:
    """Share of the machine's CPU used by processes outside this harness's tree during a run."""

    def __init__(self, root: int | None = None) -> None:
        self.root = root or os.getpid()
        self.hz = os.sysconf("SC_CLK_TCK")
        self.cores = os.cpu_count() or 1

    def _ours(self) -> dict[int, int]:
        pids = [self.root] + descendants(self.root)
        return {p: _pid_jiffies(p) for p in pids}

    def start(self) -> None:
        self.t0 = time.perf_counter()
        self.busy0 = _busy_jiffies()
        self.ours0 = self._ours()

    def foreign(self) -> float:
        dt = time.perf_counter() - self.t0
        busy = _busy_jiffies() - self.busy0
        ours1 = self._ours()
        ours = sum(v - self.ours0.get(p, 0) for p, v in ours1.items())
        return max(0.0, (busy - ours) / (self.hz * dt * self.cores)) if dt > 0 else 0.0

    def wait_quiet(self, threshold: float = 0.15, window_s: float = 1.0, max_wait_s: float = 300.0) -> float:
        """Waits until other processes use < threshold of the CPUs over window_s; returns seconds waited."""
        t0 = time.perf_counter()
        while True:
            self.start()
            time.sleep(window_s)
            if self.foreign() < threshold or time.perf_counter() - t0 > max_wait_s:
                return time.perf_counter() - t0
