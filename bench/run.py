#!/usr/bin/env python
"""C-RADIOv4 throughput / latency / memory benchmark: ONE command.

    .venv/bin/python bench/run.py --quick      # ~3.5 min on an idle 2-core machine: tiny + ViT-B-shaped
                                               # random checkpoints
    .venv/bin/python bench/run.py --full       # ~30–35 min on an idle 2-core machine: adds full-size H
                                               # (224², 512²) and SO400M (512²), and sidecar RSS at 1/2/4 workers

On the same random checkpoint and the same JPEGs it measures images/s, p50/p95 per-image latency and
peak RSS for

  a      reference-style FiftyOne model (bench/reference_model.py): per image PIL + numpy
         preprocessing, eager torch forward of test/python/radio_reference.py, one image at a time
  b      torch batched: the same reference forward on batches (decode + preprocessing included)
  bf     as b, with torch's fused attention / LayerNorm / GELU (what a modern torch model gets)
  c      bare onnxruntime-node session on our compiled graph, uint8 pixels already in memory, summary
         fetched as d's embedding calls do (ceiling)
  d      the sidecar over gRPC (client/grpc_client.py RadioClient, JPEG file paths)
  e.emb  FiftyOne compute_embeddings through our zoo model
  e.heat FiftyOne apply_model (PCA heatmaps) through our zoo model (a.heat is a's equivalent)
  c8, e8.emb  c and e.emb on the opt-in int8 graph (`--precision int8`, zoo option quantize=True),
         with its agreement to the fp32 graph on the same images

All paths of a case run interleaved in one invocation (round 1: a b c d e, round 2: a b c d e, …) and
every ratio is taken per round, then the median over rounds. Per-image latency = the duration of
the call (batch) the image was in; for FiftyOne paths, from the end of the previous batch to the
end of this one (FiftyOne's own per-batch work included). Peak RSS = VmHWM of the processes doing
the work (reset before each run via /proc/<pid>/clear_refs): a/b: the torch process; c: the node
process; d, e: the sidecar plus the Python client process.

Writes bench/out/<mode>/results.json (+ report.md, logs/), docs/images/bench-throughput[-quick].png and
the generated section of docs/benchmarks.md. Checkpoints and graphs are cached in $RADIO_BENCH_CACHE
(default ~/.cache/c-radio-bench; the H checkpoint is 2.6 GB).
"""
from __future__ import annotations

# The harness: cases, worker processes, measured runs, results.json. Tables, the plot and the
# docs/benchmarks.md section are rendered by bench/report.py (`--report-only DIR` re-renders).
import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (
    BENCH,
    PRESET_SHAPES,
    REPO,
    CpuMeter,
    checkpoint_shape,
    clip_resize_uint8,
    import_client,
    make_images,
    percentile,
    proc_memory,
    proc_status,
    reset_peak,
    vit_flops,
)
from report import finish  # noqa: E402  (tables, plot, docs/benchmarks.md: bench/report.py)
from results import ALL_PATHS, DEFAULT_PATHS, DISTURBED, GIB, Case, Run, case_configs  # noqa: E402,F401

sys.path.insert(0, str(REPO))
from client.node_runtime import node_executable  # noqa: E402  (the sidecar's: RADIO_NODE, PATH's, PyPI's)

CACHE = Path(os.environ.get("RADIO_BENCH_CACHE", Path.home() / ".cache" / "c-radio-bench"))
PY = sys.executable


def _node() -> str:
    try:
        return node_executable()
    except RuntimeError:
        return "node"  # machine() reports it absent; the paths needing node fail with their own error


NODE = _node()
CLI = REPO / "server" / "dist" / "cli.js"


def quick_cases() -> list[Case]:
    return [
        # ~3.5 min on an idle 2-core machine, ~1 min of it starting processes and FiftyOne's database
        Case("tiny-224", "tiny", 224, 16, [1, 4, 16], DEFAULT_PATHS, rounds=2),
        Case("tiny-512", "tiny", 512, 4, [1, 4], DEFAULT_PATHS, rounds=2),
        Case("vit-b-224", "vit-b", 224, 4, [1, 4], DEFAULT_PATHS, rounds=2, bf_batches=[4]),
    ]


def full_cases() -> list[Case]:
    # Sized for 2 CPU cores, where one forward of H takes ~4 s at 224² and ~20 s at 512² (SO400M
    # ~13 s at 512²): few images, and at 512² batch 2 (batch size barely matters to a CPU that is
    # compute-bound at batch 1) plus batch 1 for the bare-ORT ceiling and the reference.
    big = [("a.emb", 1), ("b", 2), ("bf", 2), ("c", 1), ("c", 2), ("d", 2), ("e.emb", 2), ("e.heat", 2), ("c8", 1),
           ("e8.emb", 2)]
    return quick_cases() + [
        Case("h-224", "h", 224, 4, [1, 4], DEFAULT_PATHS, rounds=2,
             configs=[("a.emb", 1), ("a.heat", 1), ("b", 1), ("b", 4), ("bf", 4), ("c", 1), ("c", 4), ("d", 4),
                      ("e.emb", 1), ("e.emb", 4), ("e.heat", 4)]),
        Case("h-512", "h", 512, 2, [1, 2], DEFAULT_PATHS + ["c8", "e8.emb"], rounds=2, configs=big),
        Case("so400m-512", "so400m", 512, 2, [1, 2], DEFAULT_PATHS + ["c8", "e8.emb"], rounds=2, configs=big),
    ]


# ----------------------------------------------------------------------------------------------
# Processes
# ----------------------------------------------------------------------------------------------

class Worker:
    """A child speaking JSON lines: commands on stdin, replies on stdout; stderr to a log file."""

    def __init__(self, name: str, cmd: list[str], log_dir: Path, env: dict[str, str] | None = None,
                 cwd: Path = REPO, timeout_s: float = 900) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(cmd, cwd=cwd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log,
                                     text=True, env={**os.environ, **(env or {})})
        self.hello = self._read(timeout_s)
        if not self.hello.get("ready"):
            raise RuntimeError(f"{name} did not start: {self.hello}\n{self.tail()}")

    def _read(self, timeout_s: float = 3600) -> dict:
        assert self.proc.stdout is not None
        box: list[str] = []
        t = threading.Thread(target=lambda: box.append(self.proc.stdout.readline()), daemon=True)  # type: ignore[union-attr]
        t.start()
        t.join(timeout_s)
        if not box or not box[0]:
            raise RuntimeError(f"{self.name} gave no answer (exit code {self.proc.poll()}):\n{self.tail()}")
        return json.loads(box[0])

    def call(self, cmd: str, **kw: Any) -> dict:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"cmd": cmd, **kw}) + "\n")
        self.proc.stdin.flush()
        reply = self._read()
        if not reply.get("ok"):
            raise RuntimeError(f"{self.name} {cmd} {kw} failed: {reply.get('error')}\n{reply.get('trace', '')}\n{self.tail()}")
        return reply

    def tail(self, n: int = 30) -> str:
        self.log.flush()
        try:
            return "\n".join(self.log_path.read_text().splitlines()[-n:])
        except OSError:
            return ""

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.call("exit")
            except Exception:
                pass
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.terminate()
                self.proc.wait(30)
        self.log.close()


def sidecar_cli(*args: str, cli: Path = CLI) -> str:
    """`radio-sidecar ARGS` (this checkout's, or another one's `cli`): its stdout."""
    proc = subprocess.run([NODE, str(cli), *args], cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{cli} {' '.join(args)} failed:\n{proc.stderr}")
    return proc.stdout


def ensure_checkpoint(preset: str) -> Path:
    ckpt = CACHE / "ckpt" / preset
    if not (ckpt / "model.safetensors").exists() or not (ckpt / ".complete").exists():
        print(f"[bench] make-checkpoint --preset {preset} (random weights) → {ckpt}", flush=True)
        t0 = time.perf_counter()
        shutil.rmtree(ckpt, ignore_errors=True)
        sidecar_cli("make-checkpoint", "--preset", preset, "--out", str(ckpt))
        (ckpt / ".complete").write_text("")
        print(f"[bench]   {time.perf_counter() - t0:.0f} s", flush=True)
    return ckpt


def ensure_graph(preset: str, precision: str, cli: Path = CLI, name: str = "") -> Path:
    """The cached graph of `preset` (compiled again when its checkpoint or this tree's graph format
    changed); `cli` and `name` compile one with another checkout's compiler, beside it."""
    ckpt = ensure_checkpoint(preset)
    graph = CACHE / "graphs" / f"{preset}-{precision}{f'-{name}' if name else ''}"
    meta = graph / "metadata.json"
    fmt = json.loads((cli.parents[2] / "package.json").read_text()).get("radioGraphFormat", "radio-onnx/1")
    old = json.loads(meta.read_text()) if meta.exists() else {}
    if old.get("source", {}).get("dir") != str(ckpt) or old.get("format") != fmt:
        print(f"[bench] compile {preset} ({precision}) → {graph}", flush=True)
        sidecar_cli("compile", "--checkpoint-dir", str(ckpt), "--out", str(graph), "--precision", precision, cli=cli)
    return graph


# ----------------------------------------------------------------------------------------------
# Machine
# ----------------------------------------------------------------------------------------------

def machine() -> dict[str, Any]:
    info: dict[str, Any] = {"cores": os.cpu_count(), "python": platform.python_version(), "kernel": platform.release()}
    try:
        cpu = Path("/proc/cpuinfo").read_text()
        info["cpu"] = re.search(r"model name\s*:\s*(.*)", cpu).group(1).strip()  # type: ignore[union-attr]
        flags = re.search(r"flags\s*:\s*(.*)", cpu).group(1).split()  # type: ignore[union-attr]
        info["simd"] = " ".join(f for f in ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16") if f in flags)
    except (OSError, AttributeError):
        pass
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        for key in ("Thread(s) per core", "Core(s) per socket", "Socket(s)", "Hypervisor vendor", "L3 cache"):
            m = re.search(rf"{re.escape(key)}:\s*(.*)", lscpu)
            if m:
                info[key] = m.group(1).strip()
    except OSError:
        pass
    mem = Path("/proc/meminfo").read_text()
    info["memory_gib"] = round(int(re.search(r"MemTotal:\s*(\d+)", mem).group(1)) * 1024 / GIB, 1)  # type: ignore[union-attr]
    try:
        info["node"] = subprocess.run([NODE, "--version"], capture_output=True, text=True).stdout.strip()
    except FileNotFoundError:
        info["node"] = "absent"
    try:
        ort_pkg = json.loads((REPO / "node_modules" / "onnxruntime-node" / "package.json").read_text())
        info["onnxruntime_node"] = ort_pkg["version"]
    except OSError:
        pass
    for mod in ("torch", "fiftyone", "numpy", "PIL"):
        try:
            info[mod] = __import__(mod).__version__
        except Exception:
            pass
    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
        if smi.returncode == 0:
            info["gpu"] = smi.stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        pass
    return info


# ----------------------------------------------------------------------------------------------
# The benchmark
# ----------------------------------------------------------------------------------------------

class GpuSampler:
    """GPU utilisation sampled every 50 ms (GPU runs only): NVML in a thread (nvidia-ml-py), else
    nvidia-smi's own timestamps (its output to a pipe is block-buffered, so arrival times lie)."""

    def __init__(self, index: int = 0) -> None:
        self.samples: list[tuple[float, float]] = []  # (time.time(), utilisation %)
        self.memory: list[tuple[float, dict[int, int]]] = []  # (time.time(), {pid: GPU bytes}), NVML only
        self.proc: subprocess.Popen[str] | None = None
        self.stop = threading.Event()
        self.source = "none"
        try:
            import pynvml  # nvidia-ml-py

            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            pynvml.nvmlDeviceGetUtilizationRates(handle)
            self.source = "nvml"

            def poll() -> None:
                while not self.stop.wait(0.05):
                    try:
                        self.samples.append((time.time(), float(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu)))
                        procs = pynvml.nvmlDeviceGetComputeRunningProcesses(handle)
                        self.memory.append((time.time(), {p.pid: int(p.usedGpuMemory or 0) for p in procs}))
                    except Exception:
                        pass
            threading.Thread(target=poll, daemon=True).start()
            return
        except Exception:
            pass
        if shutil.which("nvidia-smi"):
            self.source = "nvidia-smi"
            self.proc = subprocess.Popen(["nvidia-smi", "-i", str(index), "--query-gpu=timestamp,utilization.gpu",
                                          "--format=csv,noheader,nounits", "-lms", "50"],
                                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        import datetime

        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                stamp, util = (x.strip() for x in line.split(","))
                t = datetime.datetime.strptime(stamp, "%Y/%m/%d %H:%M:%S.%f").timestamp()
                self.samples.append((t, float(util)))
            except ValueError:
                pass

    def mean(self, t0: float, t1: float) -> float | None:
        """Mean utilisation between two time.time() instants."""
        xs = [u for t, u in list(self.samples) if t0 <= t <= t1]
        return sum(xs) / len(xs) if xs else None

    def peak_memory(self, pids: list[int], t0: float, t1: float) -> int | None:
        """Largest GPU memory NVML saw the processes pids hold together between t0 and t1."""
        xs = [sum(m.get(p, 0) for p in pids) for t, m in list(self.memory) if t0 <= t <= t1]
        return max(xs) if xs and max(xs) > 0 else None

    def close(self) -> None:
        self.stop.set()
        if self.proc is not None:
            self.proc.terminate()


class Bench:
    def __init__(self, args: argparse.Namespace, out_dir: Path) -> None:
        self.args = args
        self.out_dir = out_dir
        self.runs: list[Run] = []
        self.setup_times: dict[str, Any] = {}
        self.gpu = GpuSampler() if args.device.startswith("cuda") else None
        self.machine: dict[str, Any] = {}
        self.cases: list[Case] = []
        self.shapes: dict[str, Any] = {}
        self.workers_rss: list[dict[str, Any]] = []
        self.int8_agreement: dict[str, dict[str, float]] = {}
        self.cpu = CpuMeter()
        self.fo_env = {"FIFTYONE_DATABASE_DIR": str(out_dir / "fo-db"), "FIFTYONE_DO_NOT_TRACK": "true",
                       "FIFTYONE_DATABASE_VALIDATION": "false", "FIFTYONE_SHOW_PROGRESS_BARS": "false",
                       "PYTHONUNBUFFERED": "1"}

    def measure(self, worker: Worker, pids: list[int], case: Case, path: str, batch: int, rnd: int) -> Run:
        """One run; repeated (up to --retries times) when other processes took > 10 % of the CPUs."""
        best: Run | None = None
        retries = self.args.retries if rnd >= 0 else 0  # warm-up rounds: no waiting, no retries
        for attempt in range(1 + retries):
            waited = self.cpu.wait_quiet(max_wait_s=self.args.max_wait if rnd >= 0 else 0)
            if waited > 2:
                print(f"[bench]   (waited {waited:.0f} s for other processes to leave the CPUs)", flush=True)
            self.cpu.start()
            run = self._measure(worker, pids, case, path, batch, rnd)
            run.foreign = self.cpu.foreign()
            run.attempts = attempt + 1
            if best is None or run.foreign < best.foreign:
                best = run
            if run.foreign <= 0.10:
                break
            print(f"[bench]   other processes took {run.foreign * 100:.0f} % of the CPUs during {path} B={batch}; "
                  f"{'again' if attempt < retries else 'kept, flagged'}", flush=True)
        assert best is not None
        return best

    def _measure(self, worker: Worker, pids: list[int], case: Case, path: str, batch: int, rnd: int) -> Run:
        for pid in pids:
            reset_peak(pid)
        t0 = time.time()
        if worker.name == "ort":
            r = worker.call("run", batch=batch)
        else:
            r = worker.call("run", path=path.replace("e8.", "e.").replace("c8", "c"), batch=batch)  # same code, int8 graph
        t1 = time.time()
        rss = {str(pid): proc_status(pid)["VmHWM"] for pid in pids}
        run = Run(case.name, path, batch, rnd, r["images"], r["wall_s"], r["lat"], rss,
                  r.get("breakdown", {}), r.get("server", {}), r.get("gpu_peak_bytes"))
        if self.gpu is not None:
            run.gpu_util = self.gpu.mean(t0, t1)
            if run.gpu_peak_bytes is None:  # onnxruntime paths: what NVML saw the node processes hold
                run.gpu_peak_bytes = self.gpu.peak_memory(pids, t0, t1)
        return run

    def run_preset(self, preset: str, cases: list[Case], images: list[str]) -> None:
        args = self.args
        need = {p for c in cases for p, _ in case_configs(c)}
        graph = ensure_graph(preset, args.precision) if need & {"c", "d", "e.emb", "e.heat", "c8", "e8.emb"} else Path()
        threads = args.threads or os.cpu_count() or 1
        log_dir = self.out_dir / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        workers: dict[str, Worker] = {}
        try:
            t0 = time.perf_counter()
            if need & {"a.emb", "a.heat", "a.loop", "b", "bf"}:
                src = ["--synthetic", preset] if args.synthetic else ["--checkpoint", str(ensure_checkpoint(preset))]
                cmd = [PY, str(BENCH / "torch_worker.py"), *src, "--device", args.device,
                       "--threads", str(threads), "--prep-threads", str(args.prep_threads)]
                if not need & {"a.emb", "a.heat"}:
                    cmd.append("--no-fiftyone")
                workers["torch"] = Worker(f"{preset}-torch", cmd, log_dir, self.fo_env)
            graph8 = ensure_graph(preset, "int8") if need & {"c8", "e8.emb"} else Path()
            for key, path_, g in (("ort", "c", graph), ("ort8", "c8", graph8)):
                if path_ in need:
                    workers[key] = Worker(f"{preset}-{key}", [NODE, "--import", "tsx", str(BENCH / "ort_bare.ts")], log_dir)
                    load = workers[key].call("load", graph=str(g), provider=args.provider, threads=threads)
                    self.setup_times[f"{preset}:{key}_load_s"] = load["load_s"]
            for key, paths_, g in (("zoo", {"d", "e.emb", "e.heat"}, graph), ("zoo8", {"e8.emb"}, graph8)):
                if need & paths_:
                    cmd = [PY, str(BENCH / "zoo_worker.py"), "--graph", str(g), "--provider", args.provider,
                           "--model-name", "nv_labs/c-radio_v4-so400m" if preset.startswith("so400m") else "nv_labs/c-radio_v4-h"]
                    if args.threads:
                        cmd += ["--threads", str(args.threads)]
                    for a in (args.sidecar_args or "").split():
                        cmd.append(f"--sidecar-arg={a}")
                    if not need & (paths_ - {"d"}):
                        cmd.append("--no-fiftyone")
                    workers[key] = Worker(f"{preset}-{key}", cmd, log_dir, self.fo_env)
                    self.setup_times[f"{preset}:{key}_sidecar_start_s"] = workers[key].hello["sidecar_start_s"]
            self.setup_times[f"{preset}:processes_s"] = time.perf_counter() - t0
            if "torch" in workers:
                self.setup_times[f"{preset}:torch_load_s"] = workers["torch"].hello["load_s"]

            for case in cases:
                self.run_case(case, images[: case.n], workers, graph)
                if "ort8" in workers:
                    self.int8_agreement[case.name] = int8_agreement(graph, graph8, self.out_dir / f"pixels-{case.res}-{case.n}.npy",
                                                                    self.out_dir / "int8")
        finally:
            for w in workers.values():
                w.close()

    def run_case(self, case: Case, images: list[str], workers: dict[str, Worker], graph: Path) -> None:
        import numpy as np

        print(f"[bench] case {case.name}: {case.n} images at {case.res}², batches {case.batches}, "
              f"{case.rounds} rounds (+{case.warmup_rounds} warm-up), paths {' '.join(case.paths)}", flush=True)
        for key in ("torch", "zoo", "zoo8"):
            if key in workers:
                workers[key].call("setup", images=images, resolution=case.res)
        for key in ("ort", "ort8"):
            if key in workers:
                npy = self.out_dir / f"pixels-{case.res}-{case.n}.npy"
                # uint8 RGB [N, H, W, 3]: the graph scales and normalises inside (a float32 file left
                # in out_dir by an older run is remade).
                if not npy.exists() or np.load(npy, mmap_mode="r").dtype != np.uint8:
                    from PIL import Image
                    np.save(npy, np.stack([clip_resize_uint8(Image.open(p), case.res) for p in images]))
                workers[key].call("pixels", npy=str(npy))
                workers[key].call("run", batch=1, limit=1)  # first run at this shape
        for key in ("zoo", "zoo8"):
            if key in workers:
                workers[key].call("warmup", batch=1)

        configs = case_configs(case)
        wk = {"a.emb": "torch", "a.heat": "torch", "a.loop": "torch", "b": "torch", "bf": "torch", "c": "ort",
              "d": "zoo", "e.emb": "zoo", "e.heat": "zoo", "c8": "ort8", "e8.emb": "zoo8"}
        for rnd in range(case.warmup_rounds + case.rounds):
            t_round = time.perf_counter()
            for path, batch in configs:
                w = workers[wk[path]]
                pids = [w.proc.pid]
                if wk[path].startswith("zoo"):
                    pids.append(w.hello["sidecar_pid"])
                run = self.measure(w, pids, case, path, batch, rnd - case.warmup_rounds)
                if rnd >= case.warmup_rounds:
                    self.runs.append(run)
                    print(f"[bench]   r{run.round} {path:7s} B={batch:<3d} {run.ips:8.2f} img/s  "
                          f"p50 {percentile(run.lat, 50) * 1000:8.1f} ms  "
                          f"rss {sum(run.rss.values()) / GIB:5.2f} GiB  other CPU {run.foreign * 100:3.0f} %", flush=True)
            print(f"[bench]   round {rnd - case.warmup_rounds} took {time.perf_counter() - t_round:.0f} s", flush=True)
            self.save()

    def save(self) -> None:
        data = {"args": vars(self.args), "machine": self.machine, "setup": self.setup_times,
                "runs": [r.__dict__ for r in self.runs], "cases": [c.__dict__ for c in self.cases],
                "shapes": self.shapes, "workers_rss": self.workers_rss, "int8_agreement": self.int8_agreement}
        (self.out_dir / "results.json").write_text(json.dumps(data, indent=1))


def int8_agreement(graph: Path, graph8: Path, npy: Path, work: Path) -> dict[str, float]:
    """fp32 vs int8 graph on the case's first (at most 2) preprocessed images: cosine of the summary
    vectors (the embeddings) and of each patch's feature vector."""
    import numpy as np

    work.mkdir(parents=True, exist_ok=True)
    x = np.load(npy)[:2]  # uint8 RGB [N, H, W, 3], as `radio-sidecar run` takes it
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[3] != 3:
        raise ValueError(f"{npy}: expected uint8 images [N, H, W, 3], got {x.dtype} {list(x.shape)}")
    np.save(work / "input.npy", x)
    out = {}
    for name, g in (("fp32", graph), ("int8", graph8)):
        sidecar_cli("run", "--graph", str(g), "--input", str(work / "input.npy"), "--out-dir", str(work / name))
        out[name] = (np.load(work / name / "summary.npy").astype(np.float64), np.load(work / name / "features.npy").astype(np.float64))

    def cos(a: Any, b: Any) -> Any:
        return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)

    s, f = cos(out["fp32"][0], out["int8"][0]), cos(out["fp32"][1], out["int8"][1])
    rel = float(np.linalg.norm(out["fp32"][0] - out["int8"][0]) / np.linalg.norm(out["fp32"][0]))
    r = {"images": int(x.shape[0]), "summary_cos_min": float(s.min()), "summary_rel_l2": rel,
         "features_cos_mean": float(f.mean()), "features_cos_min": float(f.min())}
    print(f"[bench] int8 vs fp32 on {x.shape[0]} images: summary cosine ≥ {r['summary_cos_min']:.5f}, "
          f"patch features cosine mean {r['features_cos_mean']:.5f} (min {r['features_cos_min']:.4f})", flush=True)
    return r


# ----------------------------------------------------------------------------------------------
# Sidecar RSS vs --workers
# ----------------------------------------------------------------------------------------------

def workers_rss(preset: str, counts: list[tuple[int, str]], images: list[str], res: int, precision: str, out_dir: Path,
                provider: str) -> list[dict[str, Any]]:
    """Starts `serve --workers N --prepack-weights P` alone, reads VmRSS once SERVING (every worker has
    loaded and warmed up at 512²) and VmHWM, Pss and anonymous memory after 2 images per worker at
    `res` (--max-batch 2 spreads them over the workers)."""
    import_client("radio_bench")
    from radio_bench.client import grpc_client as gc
    graph = ensure_graph(preset, precision)
    rows = []
    for n, prepack in counts:
        sock_dir = Path(subprocess.check_output(["mktemp", "-d"], text=True).strip())
        cmd = [NODE, str(CLI), "serve", "--socket", str(sock_dir / "s.sock"), "--graph", f"m={graph}",
               "--workers", str(n), "--max-batch", "2", "--allowed-root", "/", "--provider", provider,
               "--prepack-weights", prepack, "--log-level", "warn"]
        t0 = time.perf_counter()
        log = open(out_dir / "logs" / f"workers-{preset}-{n}.log", "w")
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=log, text=True)
        try:
            assert proc.stdout is not None
            ready = json.loads(proc.stdout.readline() or "{}")
            if ready.get("event") != "ready":
                raise RuntimeError(f"serve --workers {n} did not start (see {log.name})")
            start_s = time.perf_counter() - t0
            time.sleep(1.0)
            idle = proc_status(proc.pid)
            client = gc.RadioClient(ready["address"])
            k = min(len(images), 2 * n)
            t1 = time.perf_counter()
            res_ = client.embed([{"id": p, "path": p} for p in images[:k]], gc.EmbedOptions(resolution=f"{res}x{res}"))
            assert all(r.ok for r in res_)
            busy_s = time.perf_counter() - t1
            peak = proc_status(proc.pid)
            mem = proc_memory(proc.pid)
            client.close()
            rows.append({"preset": preset, "workers": n, "prepack": prepack, "start_s": start_s, "idle_rss": idle["VmRSS"],
                         "peak_hwm": peak["VmHWM"], "rss_after": peak["VmRSS"], "pss_after": mem["Pss"],
                         "anon_after": mem["Anonymous"], "images": k, "res": res, "ips": k / busy_s})
            print(f"[bench] workers={n} prepack={prepack}: ready in {start_s:.0f} s, idle VmRSS {idle['VmRSS'] / GIB:.2f} GiB, "
                  f"VmHWM {peak['VmHWM'] / GIB:.2f} GiB, Pss {mem['Pss'] / GIB:.2f} GiB, anonymous {mem['Anonymous'] / GIB:.2f} GiB "
                  f"after {k} images ({k / busy_s:.2f} img/s)", flush=True)
        finally:
            proc.terminate()
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
            log.close()
            shutil.rmtree(sock_dir, ignore_errors=True)
    return rows


# ----------------------------------------------------------------------------------------------

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="tiny + ViT-B-shaped checkpoints (~3.5 min; default)")
    mode.add_argument("--full", action="store_true", help="quick + full-size H (224², 512²) and SO400M (512²) + workers RSS")
    ap.add_argument("--cases", help="comma-separated case names to keep (e.g. h-224,h-512)")
    ap.add_argument("--paths", help=f"comma-separated paths to keep ({','.join(ALL_PATHS)})")
    ap.add_argument("--res", type=int, help="override every case's resolution")
    ap.add_argument("--images", type=int, help="override images per case")
    ap.add_argument("--batches", help="override batch sizes, e.g. 1,4,16")
    ap.add_argument("--rounds", type=int, help="override rounds")
    ap.add_argument("--warmup-rounds", type=int, help="override discarded leading rounds")
    ap.add_argument("--bf-batches", help="batch sizes for b′ (default: the largest of a case's)")
    ap.add_argument("--preset", action="append", help="run these presets at --res instead of the named cases")
    ap.add_argument("--device", default="cpu", help="torch device for a/b (cpu | cuda)")
    ap.add_argument("--provider", default="cpu", help="onnxruntime execution provider for c/d/e (cpu | cuda)")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "fp16"], help="compiled graph precision for c/d/e")
    ap.add_argument("--sidecar-args", default="", help="extra `serve` options for d/e, e.g. '--max-batch 64'")
    ap.add_argument("--threads", type=int, default=0, help="intra-op threads (0 = all cores)")
    ap.add_argument("--prep-threads", type=int, default=0, help="b/bf: threads decoding the next batch meanwhile (0 = inline)")
    ap.add_argument("--synthetic", action="store_true", help="torch paths: random weights made in memory, no checkpoint file")
    ap.add_argument("--workers-rss", default=None, help="presets for the --workers 1,2,4 RSS probe (full: h)")
    ap.add_argument("--no-workers-rss", action="store_true")
    ap.add_argument("--peak-tflops", type=float, default=989.0, help="dense bf16/fp16 peak for MFU (H100/H200 SXM: 989)")
    ap.add_argument("--retries", type=int, default=1, help="re-runs of a measurement disturbed by other processes")
    ap.add_argument("--max-wait", type=float, default=300, help="longest wait (s) for a quiet machine before a run")
    ap.add_argument("--tag", default=None, help="results name (default: quick / full / custom)")
    ap.add_argument("--no-doc", action="store_true", help="don't touch docs/benchmarks.md")
    ap.add_argument("--report-only", metavar="DIR", help="re-render report, plot and doc section from DIR/results.json")
    args = ap.parse_args()
    if args.report_only:
        finish(json.loads((Path(args.report_only) / "results.json").read_text()), Path(args.report_only), args.no_doc)
        return
    if not CLI.exists():
        sys.exit(f"{CLI} is missing: run `npm run build` first")
    t_start = time.perf_counter()
    tag = args.tag or ("full" if args.full else "custom" if (args.preset or args.cases) and not args.quick else "quick")
    cases = full_cases() if args.full else quick_cases()
    if args.preset:
        res = args.res or 512
        cases = [Case(f"{p}-{res}", p, res, args.images or 4, [1, 4], DEFAULT_PATHS, rounds=args.rounds or 2) for p in args.preset]
    if args.cases:
        keep = args.cases.split(",")
        cases = [c for c in cases if c.name in keep]
    for c in cases:
        if args.res:
            c.res = args.res
            c.name = f"{c.preset}-{args.res}"
        if args.images:
            c.n = args.images
        if args.batches:
            c.batches = [int(b) for b in args.batches.split(",")]
            c.bf_batches = None
        if args.rounds:
            c.rounds = args.rounds
        if args.bf_batches:
            c.bf_batches = [int(b) for b in args.bf_batches.split(",")]
        if args.warmup_rounds is not None:
            c.warmup_rounds = args.warmup_rounds
        if args.paths:
            c.paths = [p for p in c.paths if p in args.paths.split(",")] + [
                p for p in args.paths.split(",") if p not in c.paths and p in ALL_PATHS]
        if c.configs and (args.paths or args.batches or args.bf_batches):
            c.configs = None if args.batches or args.bf_batches else [x for x in c.configs if x[0] in c.paths]
    out_dir = BENCH / "out" / tag
    out_dir.mkdir(parents=True, exist_ok=True)
    bench = Bench(args, out_dir)
    bench.machine = machine()
    if bench.gpu is not None:
        bench.machine["gpu_util_source"] = bench.gpu.source
    bench.cases = cases
    print(f"[bench] {tag}: {len(cases)} cases → {out_dir}", flush=True)
    print(f"[bench] machine: {json.dumps(bench.machine)}", flush=True)
    images = make_images(CACHE / "images", max(c.n for c in cases))
    graph_names = {}
    for c in cases:
        if args.synthetic:
            w_, d_, _h, m_ = PRESET_SHAPES[c.preset]
            shape = {"width": w_, "depth": d_, "mlp": m_, "prefix": 10}
        else:
            shape = checkpoint_shape(ensure_checkpoint(c.preset))
        bench.shapes[c.name] = {**shape, "gflop": vit_flops(shape["width"], shape["depth"], shape["mlp"],
                                                            shape["prefix"], c.res) / 1e9}
        graph_names[c.preset] = f"{c.preset}-{args.precision}"
    try:
        for preset in dict.fromkeys(c.preset for c in cases):
            bench.run_preset(preset, [c for c in cases if c.preset == preset], images)
        rss_presets = args.workers_rss.split(",") if args.workers_rss else (["h"] if args.full else [])
        if not args.no_workers_rss and not args.device.startswith("cuda"):
            for p in rss_presets:
                bench.workers_rss += workers_rss(p, [(1, "auto"), (2, "auto"), (4, "auto"), (1, "on"), (2, "on")], images,
                                                 224, args.precision, out_dir, args.provider)
    finally:
        if bench.gpu is not None:
            bench.gpu.close()
        bench.save()
    data = json.loads((out_dir / "results.json").read_text())
    data["graph_names"] = graph_names
    data["argv"] = sys.argv[1:]
    data["date"] = time.strftime("%Y-%m-%d %H:%M")
    data["elapsed_s"] = time.perf_counter() - t_start
    data["tag"] = tag
    (out_dir / "results.json").write_text(json.dumps(data, indent=1))
    finish(data, out_dir, args.no_doc)
    print(f"[bench] done in {(time.perf_counter() - t_start) / 60:.1f} min")


if __name__ == "__main__":
    main()
