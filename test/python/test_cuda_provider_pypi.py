"""Opt-in (RADIO_TEST_CUDA_PYPI=1; not in CI: it downloads ~1.5 GB): route (b) end to end, with no GPU.
Installs onnxruntime-gpu's provider files into a copy of onnxruntime-node, the CUDA/cuDNN wheels into a
private folder (pip --target), and shows that everything the CUDA provider needs resolves except the
NVIDIA driver's libcuda.so.1 (no pip wheel ships a stub of it): `ldd` finds every other library, and
creating a CUDA session from node fails on libcuda.so.1, not on a CUDA or cuDNN library.

RADIO_TEST_CUDA_CACHE=DIR keeps the downloaded wheels between runs (default: a temporary folder).
Needs `npm run build` first. Run with -s to see the outputs."""
from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
from client.cuda_provider import install  # noqa: E402
from client.gpu_libs import CUDA_LIBRARIES, OPTIONAL_LIBRARIES, PIP_PACKAGES, cuda_library_dirs, ldd_unresolved, library_env, unresolved_libraries  # noqa: E402
from client.provider_files import CUDA, NODE_ARCH, find_ort_node  # noqa: E402

pytestmark = pytest.mark.skipif(os.environ.get("RADIO_TEST_CUDA_PYPI") != "1",
                                reason="opt-in: downloads ~1.5 GB of wheels; RADIO_TEST_CUDA_PYPI=1 runs it")
CLI = REPO / "server" / "dist" / "cli.js"


def app_with_copied_onnxruntime_node(app: Path) -> Path:
    """A folder that runs server/dist with its own copy of onnxruntime-node (this platform's binaries
    only) and the repo's other Node packages, so the repo's own onnxruntime-node stays untouched."""
    ort = find_ort_node(REPO)
    modules = app / "node_modules"
    modules.mkdir(parents=True)
    for entry in (REPO / "node_modules").iterdir():
        if entry.name != "onnxruntime-node":
            (modules / entry.name).symlink_to(entry)
    napi = ort.package_dir / "bin" / "napi-v6"
    keep = {napi: "linux", napi / "linux": NODE_ARCH[platform.machine()]}

    def skip_other_platforms(folder: str, names: list[str]) -> list[str]:
        kept = keep.get(Path(folder))
        return [n for n in names if kept is not None and n != kept]

    shutil.copytree(ort.package_dir, modules / "onnxruntime-node", ignore=skip_other_platforms)
    shutil.copytree(REPO / "server" / "dist", app / "server" / "dist")
    shutil.copy(REPO / "package.json", app / "package.json")  # "type": "module", and the CLI's version
    return app


def run(cmd: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)


def test_the_pypi_route_resolves_every_library_but_the_driver(tmp_path: Path) -> None:
    assert CLI.exists(), "run `npm run build` first"
    cache = Path(os.environ.get("RADIO_TEST_CUDA_CACHE") or tmp_path / "cache")
    app = app_with_copied_onnxruntime_node(tmp_path / "app")

    # Route (b) into the copy: pip downloads onnxruntime-gpu==<onnxruntime-node's version> (or reuses it).
    outcome = install(app, routes=("pypi",), cache_dir=cache / "onnxruntime-gpu", log=print)
    assert outcome.route == "pypi"
    provider = find_ort_node(app).bin_dir / CUDA

    # The CUDA/cuDNN wheels, as a user's environment (or a CUDA 13 torch) would hold them.
    site, wheels = tmp_path / "site-packages", cache / "cuda-wheels"
    specs = sorted(set(PIP_PACKAGES.values()))
    for pip in (["download", "--dest", str(wheels)],
                ["install", "--no-index", "--find-links", str(wheels), "--target", str(site)]):
        done = run([sys.executable, "-m", "pip", *pip, "--no-deps", "--only-binary=:all:", *specs])
        assert done.returncode == 0, done.stdout + done.stderr
    print("\n".join(line for line in done.stdout.splitlines() if line.startswith("Successfully installed")))
    assert set(cuda_library_dirs([site])) == set(CUDA_LIBRARIES + OPTIONAL_LIBRARIES)
    assert unresolved_libraries({}, [site], system=set()) == []

    base = {k: v for k, v in os.environ.items() if k != "LD_LIBRARY_PATH"}
    env = library_env(base, [site])
    print("LD_LIBRARY_PATH handed to node:", env["LD_LIBRARY_PATH"])
    ldd = run(["ldd", str(provider)], env)
    print(f"ldd {provider.name}:\n{ldd.stdout}")
    assert ldd_unresolved(provider, env) == ["libcuda.so.1"]
    # cuDNN (opened lazily, so not in the provider's ldd) and the optional libraries resolve too.
    for lib in sorted(site.glob("nvidia/*/lib/lib*.so*")):
        assert set(ldd_unresolved(lib, env)) <= {"libcuda.so.1"}, lib

    # A tiny fp16 graph, then a CUDA session from node on it.
    ckpt, graph = tmp_path / "ckpt", tmp_path / "graph"
    for cmd in (["make-checkpoint", "--preset", "tiny", "--out", str(ckpt)],
                ["compile", "--checkpoint-dir", str(ckpt), "--out", str(graph), "--precision", "fp16"]):
        done = run(["node", str(CLI), *cmd])
        assert done.returncode == 0, done.stderr
    np.save(tmp_path / "x.npy", np.full((1, 64, 64, 3), 128, np.uint8))  # uint8 RGB [B, H, W, 3]
    cuda_run = ["node", str(app / "server" / "dist" / "cli.js"), "run", "--provider", "cuda", "--graph", str(graph),
                "--input", str(tmp_path / "x.npy"), "--out-dir", str(tmp_path / "out")]
    session = run(cuda_run, env)
    print(f"node ... run --provider cuda (exit {session.returncode}):\n{session.stdout}{session.stderr}")
    output = session.stdout + session.stderr
    assert session.returncode != 0
    assert "libcuda.so.1: cannot open shared object file" in output
    for name in CUDA_LIBRARIES:
        assert f"{name}: cannot open shared object file" not in output

    # Without the wheels' folders the same run stops at a CUDA library instead (unless a system CUDA has them).
    missing_here = unresolved_libraries(base, [], names=CUDA_LIBRARIES)
    if missing_here:
        control = run(cuda_run, base)
        print(f"the same without LD_LIBRARY_PATH (exit {control.returncode}):\n{control.stderr}")
        assert any(f"{name}: cannot open shared object file" in control.stderr for name in missing_here)
