"""The CUDA and cuDNN libraries onnxruntime's CUDA provider loads, found in this Python
environment's pip wheels (``nvidia-cublas``, ``nvidia-cuda-runtime``, ``nvidia-cudnn-cu13``, …:
what a CUDA 13 torch already installed), and handed to the sidecar through ``LD_LIBRARY_PATH``.

The dynamic loader reads ``LD_LIBRARY_PATH`` once, when a process starts, so it must be set in the
environment the sidecar (node) is started with; setting it inside node would be too late.
"""
from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

# What libonnxruntime_providers_cuda.so (onnxruntime 1.30, CUDA 13 build) links against, and cuDNN,
# which it opens lazily. libcuda.so.1 is not here: it comes with the NVIDIA driver, never from pip.
CUDA_LIBRARIES = ("libcudart.so.13", "libcublas.so.13", "libcublasLt.so.13", "libcurand.so.10", "libcudnn.so.9")
# Opened on demand by cuDNN's runtime-compiled kernels and by FFT ops: put on the path when present.
OPTIONAL_LIBRARIES = ("libnvrtc.so.13", "libcufft.so.12")


def site_dirs() -> list[Path]:
    """This interpreter's site-packages folders (venv, user and system), in import order."""
    dirs = [Path(p) for p in sys.path if p.endswith(("site-packages", "dist-packages"))]
    try:
        dirs += [Path(p) for p in site.getsitepackages()]
    except AttributeError:  # some embedded interpreters lack it
        pass
    seen: list[Path] = []
    for d in dirs:
        if d.is_dir() and d not in seen:
            seen.append(d)
    return seen


def cuda_library_dirs(roots: list[Path] | None = None) -> dict[str, Path]:
    """Where each of CUDA_LIBRARIES was found: ``nvidia/<package>/lib`` folders of the pip wheels
    (CUDA 13 wheels share ``nvidia/cu13/lib``). The first hit per library wins."""
    found: dict[str, Path] = {}
    for root in roots if roots is not None else site_dirs():
        for lib_dir in sorted((root / "nvidia").glob("*/lib")):
            for name in CUDA_LIBRARIES + OPTIONAL_LIBRARIES:
                if name not in found and (lib_dir / name).exists():
                    found[name] = lib_dir
    return found


def library_env(base: Mapping[str, str] | None = None, roots: list[Path] | None = None) -> dict[str, str]:
    """``base`` (default: os.environ) with the folders holding the CUDA/cuDNN wheels' libraries put
    in front of LD_LIBRARY_PATH. Folders already listed keep their place."""
    env = dict(os.environ if base is None else base)
    current = [p for p in env.get("LD_LIBRARY_PATH", "").split(os.pathsep) if p]
    extra = [str(d) for d in dict.fromkeys(cuda_library_dirs(roots).values()) if str(d) not in current]
    if extra:
        env["LD_LIBRARY_PATH"] = os.pathsep.join(extra + current)
    return env


def missing_libraries(roots: list[Path] | None = None) -> list[str]:
    """CUDA_LIBRARIES that no pip wheel here provides (they may still come from a system CUDA)."""
    found = cuda_library_dirs(roots)
    return [name for name in CUDA_LIBRARIES if name not in found]


# The pip packages that provide each library, as onnxruntime-gpu's own `cuda`/`cudnn` extras specify
# them (those extras leave out cuBLAS, which the CUDA provider links against).
PIP_PACKAGES = {
    "libcudart.so.13": "nvidia-cuda-runtime~=13.0",
    "libcublas.so.13": "nvidia-cublas~=13.0",
    "libcublasLt.so.13": "nvidia-cublas~=13.0",
    "libcurand.so.10": "nvidia-curand~=10.0",
    "libcudnn.so.9": "nvidia-cudnn-cu13~=9.0",
    "libnvrtc.so.13": "nvidia-cuda-nvrtc~=13.0",
    "libcufft.so.12": "nvidia-cufft~=12.0",
}
DRIVER_LIBRARY = "libcuda.so.1"


def system_libraries() -> set[str]:
    """Library names the dynamic loader's cache knows (`ldconfig -p`): a system CUDA or the driver."""
    ldconfig = shutil.which("ldconfig") or next(
        (p for p in ("/sbin/ldconfig", "/usr/sbin/ldconfig") if os.path.exists(p)), None)
    if ldconfig is None:
        return set()
    out = subprocess.run([ldconfig, "-p"], capture_output=True, text=True).stdout
    return {line.split()[0] for line in out.splitlines()[1:] if line.strip()}


def unresolved_libraries(env: Mapping[str, str] | None = None, roots: list[Path] | None = None,
                         names: tuple[str, ...] = CUDA_LIBRARIES, system: set[str] | None = None) -> list[str]:
    """Of ``names``, those the sidecar's loader would not find: in no folder of library_env(env)'s
    LD_LIBRARY_PATH (the pip wheels' folders first) and not in ``system`` (default: the ldconfig cache)."""
    path = library_env(env, roots).get("LD_LIBRARY_PATH", "")
    dirs = [Path(p) for p in path.split(os.pathsep) if p]
    known = system_libraries() if system is None else system
    return [n for n in names if n not in known and not any((d / n).exists() for d in dirs)]


def pip_install_hint(names: list[str]) -> str:
    """The pip command that provides ``names`` in this interpreter's environment."""
    packages = list(dict.fromkeys(PIP_PACKAGES[n] for n in names if n in PIP_PACKAGES))
    return f"{sys.executable} -m pip install " + " ".join(f"'{p}'" for p in packages)


def ldd_unresolved(library: Path, env: Mapping[str, str]) -> list[str]:
    """The libraries `ldd` cannot resolve for ``library`` with ``env``'s LD_LIBRARY_PATH (its direct and
    indirect NEEDED entries; cuDNN is opened lazily and is not among them)."""
    ldd = shutil.which("ldd")
    if ldd is None:
        raise RuntimeError("`ldd` is not installed (Debian/Ubuntu: apt-get install libc-bin)")
    out = subprocess.run([ldd, str(library)], capture_output=True, text=True, env=dict(env))
    return sorted({line.split("=>")[0].strip() for line in out.stdout.splitlines() if "not found" in line})
