#!/usr/bin/env python3
"""The GPU device check: the same command on every device call (docs/gpu/README.md).

    python3 bench/gpu/check.py

Each call first stages the parts it carried (bench/gpu/stage.py), then does what the staged parts
allow and has not been done on this machine yet:
  prep   (once the runtime is staged: node, node_modules, photos) builds server/dist, writes the
         random H and SO400M checkpoints, compiles fp32 / fp16 / fp16-with-MatMul-attention graphs,
         takes the CPU fp32 sidecar outputs on real photos (the agreement reference) and runs WebGPU:
         agreement and bare-session speed.
  cuda   (once the CUDA provider is staged too): CUDA fp16 agreement (also of the adaptor heads and the
         text tower, on a small text checkpoint: text:*), the two fp16 attention variants
         timed on the bare session, its intra-op threads, onnxruntime's profile (H at 8 and 32), the
         bare session on the tiny graph (a run's fixed costs), gpu-buffer, heatmaps, then bench/run.py: a (reference-style loop), b′ (fused batched
         torch), c (bare onnxruntime-node session) and d (the sidecar over gRPC, JPEG paths) at 512²,
         batches 1/8/32/64, NVML utilisation and memory; then, time allowing, d with one inference
         worker and with two.
Results go to $OUT (device machine) or bench/out/gpu-check: check.json, report.md, the bench's
results.json and log.txt. State that must survive between calls lives in the stage folder.

Knobs for a dry run on a machine without a GPU (env): RADIO_CHECK_PROVIDER (cuda), RADIO_CHECK_TORCH
(cuda), RADIO_CHECK_PRESETS ("h so400m"), RADIO_CHECK_RES (512), RADIO_CHECK_IMAGES (128),
RADIO_CHECK_BATCHES (1,8,32,64), RADIO_CHECK_ROUNDS (2), RADIO_CHECK_DEADLINE_S (540); and
RADIO_CHECK_RETRY_FAILED=1 to run steps again that failed on an earlier call.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
import stage as staging  # noqa: E402

T0 = time.monotonic()
ENV = os.environ.get
PROVIDER = ENV("RADIO_CHECK_PROVIDER", "cuda")
TORCH_DEVICE = ENV("RADIO_CHECK_TORCH", "cuda")
PRESETS = ENV("RADIO_CHECK_PRESETS", "h so400m").split()
RES = int(ENV("RADIO_CHECK_RES", "512"))
IMAGES = int(ENV("RADIO_CHECK_IMAGES", "128"))
BATCHES = ENV("RADIO_CHECK_BATCHES", "1,8,32,64")
ROUNDS = int(ENV("RADIO_CHECK_ROUNDS", "2"))
DEADLINE_S = float(ENV("RADIO_CHECK_DEADLINE_S", "540"))
RETRY_FAILED = ENV("RADIO_CHECK_RETRY_FAILED", "") == "1"
TEXT_SPACES = "siglip2-g,dino_v3_7b"
OUT = Path(ENV("OUT") or REPO / "bench" / "out" / "gpu-check")


def log(msg: str) -> None:
    line = f"[check {time.monotonic() - T0:6.1f}s] {msg}"
    print(line, flush=True)
    with open(OUT / "log.txt", "a") as f:
        f.write(line + "\n")


def left_s() -> float:
    return DEADLINE_S - (time.monotonic() - T0)


class Check:
    def __init__(self, stage_dir: Path) -> None:
        self.stage_dir = stage_dir
        self.root = stage_dir / "root"
        self.work = stage_dir / "work"
        self.work.mkdir(parents=True, exist_ok=True)
        self.state_path = self.work / "check.json"
        self.state: dict[str, Any] = json.loads(self.state_path.read_text()) if self.state_path.exists() else {}
        self.cache = self.work / "cache"

    def save(self) -> None:
        self.state_path.write_text(json.dumps(self.state, indent=1))
        shutil.copyfile(self.state_path, OUT / "check.json")

    def step(self, key: str, fn: Callable[[], Any], need_s: float = 0) -> Any:
        """Runs fn once per machine (its result is kept in the state); failures are recorded, not fatal."""
        # A step that failed is not tried again on later calls (its failure is the finding), unless asked.
        if key in self.state and ("error" not in self.state[key] or not RETRY_FAILED):
            return self.state[key]
        if left_s() < need_s:
            log(f"{key}: skipped ({left_s():.0f} s left, needs ~{need_s:.0f})")
            return None
        log(f"{key} ...")
        t = time.monotonic()
        try:
            result = fn()
            if not isinstance(result, dict):
                result = {"value": result}
        except Exception as err:  # one failing step must not cost the others their device time
            result = {"error": f"{type(err).__name__}: {err}"[-3000:]}
        result["seconds"] = round(time.monotonic() - t, 1)
        self.state[key] = result
        self.save()
        log(f"{key}: {json.dumps(result)[:600]}")
        return result

    # --- environment ------------------------------------------------------------------------------

    def environment(self) -> dict[str, Any]:
        """Node from the stage, the CUDA/cuDNN pip libraries on LD_LIBRARY_PATH (client/gpu_libs.py,
        as the zoo does), the staged Vulkan loader if the system has none, NVIDIA's Vulkan driver."""
        sys.path.insert(0, str(REPO))
        from client.gpu_libs import library_env, missing_libraries, system_libraries

        env = library_env()
        if (self.root / "bin" / "node").exists():  # the staged node, also where one is installed (dry runs)
            env["PATH"] = f"{self.root / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        has_vulkan = {"libvulkan.so.1", "libGLdispatch.so.0"} <= system_libraries()
        if not has_vulkan and (self.root / "lib" / "libvulkan.so.1").exists():
            env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (str(self.root / "lib"), env.get("LD_LIBRARY_PATH")) if p)
        icd = next((p for p in ("/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json", "/usr/share/vulkan/icd.d/nvidia_icd.json",
                                "/etc/vulkan/icd.d/nvidia_icd.json") if Path(p).exists()), None)
        if icd and not env.get("VK_ICD_FILENAMES") and not env.get("VK_DRIVER_FILES"):
            env["VK_DRIVER_FILES"] = icd
        env["RADIO_BENCH_CACHE"] = str(self.cache)
        os.environ.update(env)
        return {"node": shutil.which("node"), "cuda_libs_missing": missing_libraries(), "vulkan_icd": icd,
                "system_libvulkan": has_vulkan, "LD_LIBRARY_PATH": env.get("LD_LIBRARY_PATH", "")}

    def link_runtime(self) -> None:
        """node_modules of the stage, seen from the repo (bench/ort_bare.ts is run with tsx from here)."""
        nm = REPO / "node_modules"
        if not nm.exists():
            nm.symlink_to(self.root / "node_modules")

    def build(self) -> dict[str, Any]:
        """server/dist from the source this call carried (no npm on the device: tsc directly)."""
        r = subprocess.run(["node", str(REPO / "node_modules/typescript/bin/tsc"), "-p", str(REPO / "tsconfig.json")],
                           cwd=REPO, capture_output=True, text=True, timeout=300)
        if r.returncode != 0:
            raise RuntimeError(f"tsc failed: {r.stdout[-2000:]}{r.stderr[-2000:]}")
        return {"node": subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()}

    # --- prep ------------------------------------------------------------------------------------

    def cli(self, *args: str, timeout: float = 600) -> str:
        r = subprocess.run(["node", str(REPO / "server/dist/cli.js"), *args], cwd=REPO, capture_output=True, text=True,
                           timeout=timeout)
        if r.returncode != 0:
            raise RuntimeError(f"radio-sidecar {' '.join(args)}: {r.stderr[-2000:]}")
        return r.stdout

    def checkpoint(self, preset: str, *args: str) -> float:
        """A random checkpoint of `preset` in the cache (kept once complete), `args` passed on to
        make-checkpoint; seconds it took (0: cached)."""
        ckpt = self.cache / "ckpt" / preset
        if (ckpt / ".complete").exists():
            return 0.0
        t = time.monotonic()
        shutil.rmtree(ckpt, ignore_errors=True)
        self.cli("make-checkpoint", "--preset", preset, *args, "--out", str(ckpt))
        (ckpt / ".complete").write_text("")
        return round(time.monotonic() - t, 1)

    def graph(self, name: str, args: list[str]) -> float:
        """Graph `name` compiled with `args` into the cache (kept once written); seconds it took (0: cached)."""
        out = self.cache / "graphs" / name
        if (out / "metadata.json").exists():
            return 0.0
        t = time.monotonic()
        self.cli("compile", *args, "--out", str(out))
        return round(time.monotonic() - t, 1)

    def checkpoints(self) -> dict[str, Any]:
        """Random checkpoints, written side by side (each writer is one JS thread)."""
        with ThreadPoolExecutor(len(PRESETS)) as pool:
            return dict(zip(PRESETS, pool.map(self.checkpoint, PRESETS)))

    def graphs(self) -> dict[str, Any]:
        """fp32 (CPU reference), fp16 (default attention: fused MultiHeadAttention), fp16 with
        MatMul/Softmax attention (the variant to time against it)."""
        jobs = []
        for p in PRESETS:
            ckpt = str(self.cache / "ckpt" / p)
            jobs += [(f"{p}-fp32", ["--checkpoint-dir", ckpt]), (f"{p}-fp16", ["--checkpoint-dir", ckpt, "--precision", "fp16"]),
                     (f"{p}-fp16-matmul", ["--checkpoint-dir", ckpt, "--precision", "fp16", "--attention", "matmul"])]
        jobs.append((f"{PRESETS[0]}-fp16-heatmap", ["--checkpoint-dir", str(self.cache / "ckpt" / PRESETS[0]), "--precision", "fp16", "--heatmap"]))
        with ThreadPoolExecutor(3) as pool:
            return dict(zip([j[0] for j in jobs], pool.map(lambda j: self.graph(*j), jobs)))

    def photos(self) -> Path:
        d = self.work / "photos"
        d.mkdir(exist_ok=True)
        for p in sorted((self.root / "photos").glob("*.jpg")):
            shutil.copyfile(p, d / p.name)
        return d

    def text_graphs(self) -> dict[str, Any]:
        """A small checkpoint with the adaptor heads and a SigLIP2 text tower, compiled fp32 (the CPU
        reference) and fp16: what the text features run on, checked for agreement, not speed."""
        ckpt, siglip = self.cache / "ckpt" / "tiny-text", self.cache / "ckpt" / "tiny-text-siglip"
        self.checkpoint("tiny-text", "--siglip", str(siglip))
        for precision in ("fp32", "fp16"):
            out = self.cache / "graphs" / f"text-{precision}"
            if not (out / "text" / "metadata.json").exists():
                self.cli("compile", "--checkpoint-dir", str(ckpt), "--adaptors", TEXT_SPACES, "--text", "--siglip", str(siglip),
                         "--precision", precision, "--out", str(out))
        return {"graphs": ["text-fp32", "text-fp16"]}

    def agreement_script(self, *args: str, timeout: int = 600) -> dict[str, Any]:
        """bench/gpu/agreement.py with `args`: its last line of output, as JSON."""
        r = subprocess.run([sys.executable, str(HERE / "agreement.py"), *args], capture_output=True, text=True, timeout=timeout)
        if r.returncode != 0:
            raise RuntimeError(r.stderr[-3000:])
        return json.loads(r.stdout.strip().splitlines()[-1])

    def outputs(self, graph: str, provider: str, tag: str, *extra: str) -> dict[str, Any]:
        out = self.work / "agree" / f"{tag}.npz"
        out.parent.mkdir(exist_ok=True)
        return self.agreement_script("outputs", "--graph", str(self.cache / "graphs" / graph), "--provider", provider,
                                     "--photos", str(self.photos()), "--res", str(RES), "--out", str(out), *extra)

    def compare(self, ref: str, other: str) -> dict[str, Any]:
        return self.agreement_script("compare", str(self.work / "agree" / f"{ref}.npz"), str(self.work / "agree" / f"{other}.npz"),
                                     timeout=120)

    def agreement(self, preset: str, graph: str, provider: str, *extra: str) -> dict[str, Any]:
        tag = f"{graph}-{provider}"
        run = self.outputs(graph, provider, tag, *extra)
        return {**self.compare(f"{preset}-fp32-cpu", tag), "sidecar_start_s": run["start_s"]}

    def heatmaps(self, preset: str, provider: str) -> dict[str, Any]:
        """Heatmaps through the sidecar with the PCA on the CPU (fp16 graph) and with its heavy half in
        the graph (fp16-heatmap, compile --heatmap): images/s of each, and how far their maps differ."""
        import numpy as np

        graphs = (f"{preset}-fp16", f"{preset}-fp16-heatmap")
        (self.work / "agree").mkdir(exist_ok=True)
        maps = {g: self.work / "agree" / f"heatmaps-{g}.npz" for g in graphs}
        out: dict[str, Any] = {
            g: self.agreement_script("heatmaps", "--graph", str(self.cache / "graphs" / g), "--provider", provider,
                                     "--photos", str(self.photos()), "--res", str(RES), "--images", str(IMAGES),
                                     "--batch", str(max(int(b) for b in BATCHES.split(","))), "--out", str(maps[g]))
            for g in graphs
        }
        a, b = (np.load(maps[g])["maps"].astype(int) for g in graphs)
        out["max_level_difference"] = int(np.abs(a - b).max())
        out["share_within_one_level"] = float((np.abs(a - b) <= 1).mean())
        return out

    def bare_session(self, name: str, graph: str, provider: str, threads: int, n: int) -> tuple[Any, dict[str, Any]]:
        """An ort_bare.ts worker (path c) with `graph` loaded and n random uint8 images [n, RES, RES, 3]
        (seed 0: the same images for every step), and its reply to the load. Its log stays on the
        machine: a call brings back at most 8 files."""
        import numpy as np
        from run import NODE, Worker

        npy = self.work / f"pixels-{RES}-{n}.npy"
        if not npy.exists():
            np.save(npy, np.random.default_rng(0).integers(0, 256, (n, RES, RES, 3), dtype=np.uint8))
        (self.work / "logs").mkdir(exist_ok=True)
        w = Worker(name, [NODE, "--import", "tsx", str(REPO / "bench" / "ort_bare.ts")], self.work / "logs")
        try:
            load = w.call("load", graph=str(self.cache / "graphs" / graph), provider=provider, threads=threads)
            w.call("pixels", npy=str(npy))
        except BaseException:
            w.close()
            raise
        return w, load

    def bare_threads(self, graph: str, provider: str, batch: int, n: int) -> dict[str, Any]:
        """The bare session with onnxruntime's intra-op threads at one per core (the sidecar's default)
        and at 1: images/s and host CPU-ms per image. On a GPU only shape ops run on the CPU, and idle
        intra-op threads spin, taking cores from decoding and heatmaps."""
        out: dict[str, Any] = {}
        for threads in (0, 1):
            w, _ = self.bare_session(f"threads-{threads}-{graph}", graph, provider, threads, n)
            try:
                w.call("run", batch=batch, limit=batch)
                r = w.call("run", batch=batch)
                out[f"threads={threads or 'cores'}"] = {"images_per_s": round(r["images"] / r["wall_s"], 2),
                                                        "cpu_ms_per_image": round(1000 * r["cpu_s"] / r["images"], 2)}
            finally:
                w.close()
        return out

    def bare_speed(self, graphs: list[str], provider: str, batches: list[int], n: int, rounds: int = 2) -> dict[str, Any]:
        """Path c (bare onnxruntime-node session, uint8 pixels in memory, summary fetched) for several
        graphs, interleaved."""
        workers = {}
        out: dict[str, Any] = {}
        try:
            for g in graphs:
                w, load = self.bare_session(f"bare-{g}-{provider}", g, provider, 0, n)
                workers[g] = w
                w.call("run", batch=max(batches), limit=max(batches))  # first run at this shape
                out[g] = {"load_s": round(load["load_s"], 1)}
            for b in batches:
                for g, w in workers.items():
                    ips = []
                    for _ in range(rounds):
                        r = w.call("run", batch=b)
                        ips.append(r["images"] / r["wall_s"])
                    out[g][f"B{b}"] = [round(v, 2) for v in ips]
            # The same, fetching the features too (B × 1024 × C floats off the device): what the
            # device-to-host copy costs, against the summary-only runs above.
            b = max(batches)
            for g, w in workers.items():
                r = w.call("run", batch=b, outputs=["summary", "features"])
                out[g][f"B{b}+features"] = round(r["images"] / r["wall_s"], 2)
        finally:
            for w in workers.values():
                w.close()
        return out

    def overhead(self, provider: str) -> dict[str, Any]:
        """Path c on the tiny graph (width 64, 8 blocks) at RES: its kernels take next to nothing, so its
        time per image is what a run costs whatever the model (the uint8 input copied in, ~250 node
        launches, the outputs copied out, the final wait for the device). Set beside the ~5 ms an H
        image during which the GPU waits in c (h200-check.md): is it the run's fixed costs, or the model's?"""
        self.checkpoint("tiny")
        self.graph("tiny-fp16", ["--checkpoint-dir", str(self.cache / "ckpt" / "tiny"), "--precision", "fp16"])
        return self.bare_speed(["tiny-fp16"], provider, [1, 8, 32], 64)

    def gpu_buffer(self, graph: str, provider: str, batch: int) -> dict[str, Any]:
        """Does onnxruntime-node leave an output on a CUDA device when asked (IO binding; documented
        for WebGPU only)? Images/s with the features left there, or onnxruntime's error."""
        w, _ = self.bare_session(f"gpu-buffer-{graph}-{provider}", graph, provider, 0, batch)
        try:
            return w.call("gpu-buffer", batch=batch)
        except RuntimeError as e:
            return {"refused": str(e)[-1500:]}
        finally:
            w.close()

    def profile(self, graph: str, provider: str, batches: str) -> dict[str, Any]:
        """onnxruntime's profile of one batch per size in `batches` ("8,32"): which nodes run on which
        provider (on a GPU the times are host-side launch times), the slowest nodes and the run's
        time outside nodes: for finding what leaves the GPU idle, and whether it grows with the batch."""
        r = subprocess.run(["node", "--import", "tsx", str(REPO / "bench" / "profile_graph.ts"), str(self.cache / "graphs" / graph),
                            str(RES), provider, batches], cwd=REPO, capture_output=True, text=True, timeout=300)
        if r.returncode != 0:
            raise RuntimeError(r.stderr[-2000:])
        return {"table": r.stdout.strip().splitlines()[:160]}

    def sidecar_workers(self, preset: str, call: int) -> dict[str, Any]:
        """Path d with one inference worker and with two, at the same ORT batch (half a call).
        onnxruntime-node runs a session synchronously on its worker's thread, so with one worker the
        GPU waits while that thread copies the batch in and the outputs out; two workers (two
        sessions, two streams) can overlap one's copies with the other's kernels. Images/s and NVML
        utilisation of each."""
        out: dict[str, Any] = {}
        (self.work / "logs").mkdir(exist_ok=True)
        for workers in (1, 2):
            tag = f"gpu-check-workers{workers}"
            argv = [sys.executable, str(REPO / "bench" / "run.py"), "--preset", preset, "--res", str(RES), "--images", str(IMAGES),
                    "--batches", str(call), "--rounds", "2", "--warmup-rounds", "1", "--paths", "d", "--provider", PROVIDER,
                    "--precision", "fp16" if PROVIDER != "cpu" else "fp32", "--threads", "0", "--no-workers-rss", "--no-doc",
                    "--max-wait", "2", "--retries", "0", "--tag", tag,
                    "--sidecar-args", f"--max-batch {max(1, call // 2)} --workers {workers}"]
            with open(self.work / "logs" / f"{tag}.txt", "w") as f:
                subprocess.run(argv, cwd=REPO, stdout=f, stderr=subprocess.STDOUT, timeout=max(30.0, left_s() - 10), check=True)
            runs = [r for r in json.loads((REPO / "bench" / "out" / tag / "results.json").read_text())["runs"] if r["path"] == "d"]
            out[f"workers={workers}"] = {"images_per_s": [round(r["images"] / r["wall_s"], 2) for r in runs],
                                         "gpu_util": [r.get("gpu_util") for r in runs]}
        return out

    # --- the bench --------------------------------------------------------------------------------

    def bench(self) -> dict[str, Any]:
        argv = [sys.executable, str(REPO / "bench" / "run.py")]
        for p in PRESETS:
            argv += ["--preset", p]
        argv += ["--res", str(RES), "--images", str(IMAGES), "--batches", BATCHES, "--bf-batches", BATCHES,
                 "--rounds", str(ROUNDS), "--warmup-rounds", "1", "--paths", "a.loop,bf,c,d", "--device", TORCH_DEVICE,
                 "--provider", PROVIDER, "--precision", "fp16" if PROVIDER != "cpu" else "fp32", "--synthetic",
                 "--threads", "0", "--prep-threads", "8", "--no-workers-rss", "--no-doc", "--max-wait", "2", "--retries", "0",
                 "--sidecar-args", f"--max-batch {max(int(b) for b in BATCHES.split(','))}", "--tag", "gpu-check"]
        if TORCH_DEVICE.startswith("cuda"):
            argv += ["--peak-tflops", "989"]
        # run.py names graphs <preset>-<precision>: the fp16 graphs compiled above are reused.
        with open(OUT / "bench-log.txt", "w") as f:
            r = subprocess.run(argv, cwd=REPO, stdout=f, stderr=subprocess.STDOUT, timeout=max(60.0, left_s() - 20))
        res = REPO / "bench" / "out" / "gpu-check"
        for name in ("results.json", "report.md", "bench-throughput.png"):
            if (res / name).exists():
                shutil.copyfile(res / name, OUT / (name if name.startswith("bench") else f"bench-{name}"))
        if r.returncode != 0:
            with open(OUT / "bench-log.txt", "a") as f:  # the workers' own logs stay on the machine: their tails
                for lg in sorted((res / "logs").glob("*.log")):
                    f.write(f"\n==== {lg.name} (tail)\n" + "\n".join(lg.read_text(errors="replace").splitlines()[-40:]) + "\n")
            raise RuntimeError(f"bench/run.py exit {r.returncode}; see bench-log.txt")
        return {"argv": argv[2:]}


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    status = staging.stage()
    log(f"stage: {json.dumps(status)}")
    src = Path(status["root"]) / "src"
    if status["archives"].get("source") == "installed" and REPO != src:
        # The packed commit runs, whatever this call's working tree holds.
        log(f"running the packed commit {status.get('commit', '?')[:12]} from {src}")
        sys.exit(subprocess.run([sys.executable, str(src / "bench" / "gpu" / "check.py")]).returncode)
    c = Check(Path(status["stage_dir"]))
    runtime = status["archives"].get("runtime") == "installed"
    provider_ready = status["archives"].get("cuda-provider", "installed") == "installed"
    c.state["stage"] = status
    c.save()
    if not runtime:
        log("the runtime is not staged yet: carry stage 1 first")
        return
    c.link_runtime()
    c.state["env"] = c.environment()
    if "error" in (c.step("build", c.build) or {"error": 1}):
        return
    c.step("checkpoints", c.checkpoints, need_s=60)
    c.step("graphs", c.graphs, need_s=60)
    for p in PRESETS:
        c.step(f"agree:{p}:cpu-fp32-ref", lambda p=p: c.outputs(f"{p}-fp32", "cpu", f"{p}-fp32-cpu"), need_s=60)
    webgpu_precision = "fp16"
    for p in PRESETS:
        r = c.step(f"agree:{p}:webgpu-fp16", lambda p=p: c.agreement(p, f"{p}-fp16", "webgpu"), need_s=60)
        err = (r or {}).get("error", "")
        if "shader-f16" in err or "requires f16" in err:  # an adapter without shader-f16 runs the fp32 graph
            webgpu_precision = "fp32"
            c.step(f"agree:{p}:webgpu-fp32", lambda p=p: c.agreement(p, f"{p}-fp32", "webgpu"), need_s=60)
    c.step("speed:webgpu", lambda: c.bare_speed([f"{PRESETS[0]}-{webgpu_precision}"], "webgpu", [1, 8], 16, rounds=1), need_s=90)
    if not provider_ready:
        log(f"CUDA provider: {status['archives'].get('cuda-provider')}; prep done, carry the next stage")
        return
    for p in PRESETS:
        c.step(f"agree:{p}:{PROVIDER}-fp16", lambda p=p: c.agreement(p, f"{p}-fp16", PROVIDER), need_s=60)
    text = ("--spaces", TEXT_SPACES, "--prompts")
    if "error" not in (c.step("text:graphs", c.text_graphs, need_s=60) or {"error": 1}):
        c.step("text:cpu-fp32-ref", lambda: c.outputs("text-fp32", "cpu", "text-fp32-cpu", *text), need_s=30)
        c.step(f"text:{PROVIDER}-fp16", lambda: c.agreement("text", "text-fp16", PROVIDER, *text), need_s=30)
    c.step(f"speed:{PROVIDER}:attention", lambda: c.bare_speed([f"{PRESETS[0]}-fp16", f"{PRESETS[0]}-fp16-matmul"], PROVIDER,
                                                              [8, 32], 64), need_s=120)
    c.step(f"speed:{PROVIDER}:threads", lambda: c.bare_threads(f"{PRESETS[0]}-fp16", PROVIDER, 32, 64), need_s=90)
    c.step(f"profile:{PROVIDER}", lambda: c.profile(f"{PRESETS[0]}-fp16", PROVIDER, "8,32"), need_s=90)
    c.step(f"overhead:{PROVIDER}", lambda: c.overhead(PROVIDER), need_s=45)
    c.step(f"gpu-buffer:{PROVIDER}", lambda: c.gpu_buffer(f"{PRESETS[0]}-fp16", PROVIDER, 8), need_s=60)
    c.step(f"heatmaps:{PROVIDER}", lambda: c.heatmaps(PRESETS[0], PROVIDER), need_s=90)
    c.step("bench", c.bench, need_s=200)
    c.step(f"d:{PROVIDER}:workers", lambda: c.sidecar_workers(PRESETS[0], max(int(b) for b in BATCHES.split(","))), need_s=60)
    log("done")


if __name__ == "__main__":
    main()
