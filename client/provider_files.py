"""onnxruntime-node's binary folder and the CUDA provider files beside its ``libonnxruntime.so.1``:
where the folder is, which onnxruntime version the package is, which version the provider files
there are, and the record our installer keeps of what it put there.

onnxruntime loads ``libonnxruntime_providers_shared.so`` and ``libonnxruntime_providers_cuda.so``
from the folder of ``libonnxruntime.so.1``, and provider libraries only work with the onnxruntime
version they were built with.
"""
from __future__ import annotations

import json
import mmap
import os
import platform
import re
import struct
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SHARED = "libonnxruntime_providers_shared.so"
CUDA = "libonnxruntime_providers_cuda.so"
PROVIDER_FILES = (CUDA, SHARED)
RECORD_FILE = ".radio-cuda-provider.json"
# Node's names for the Linux CPU architectures (onnxruntime-node's bin/napi-v6/linux/<arch>).
NODE_ARCH = {"x86_64": "x64", "aarch64": "arm64"}
# The CUDA provider's only NUL-delimited "x.y.z" string is its ORT_VERSION (checked on 1.30.0).
_VERSION = re.compile(rb"\x00(\d+\.\d+\.\d+)\x00")


class CudaProviderError(RuntimeError):
    """The CUDA provider cannot be installed or used as asked; the message says what to do."""


class VersionMismatchError(CudaProviderError):
    """Provider files or a wheel of another onnxruntime version than onnxruntime-node's."""


@dataclass(frozen=True)
class OrtNode:
    """The installed onnxruntime-node package."""

    package_dir: Path
    version: str
    bin_dir: Path  # holds libonnxruntime.so.1; the provider files go here
    machine: str  # x86_64 | aarch64, as wheel platform tags spell it


def find_ort_node(source: Path) -> OrtNode:
    """onnxruntime-node under ``source``/node_modules (this repo or the zoo's copy of it)."""
    pkg = source / "node_modules" / "onnxruntime-node"
    if not (pkg / "package.json").exists():
        raise CudaProviderError(f"{pkg} is missing: install the Node packages first (`npm ci` in {source})")
    version = str(json.loads((pkg / "package.json").read_text())["version"])
    machine = platform.machine()
    if not sys.platform.startswith("linux") or machine not in NODE_ARCH:
        raise CudaProviderError(f"the CUDA provider can be installed on Linux x86_64 or aarch64 only; this is "
                                f"{sys.platform} {machine}")
    bin_dir = pkg / "bin" / "napi-v6" / "linux" / NODE_ARCH[machine]
    if not (bin_dir / "libonnxruntime.so.1").exists():
        raise CudaProviderError(f"{bin_dir}/libonnxruntime.so.1 is missing: reinstall the Node packages "
                                f"(`npm ci` in {source})")
    return OrtNode(pkg, version, bin_dir, machine)


def provider_version(path: Path) -> str | None:
    """The onnxruntime version compiled into a CUDA provider library; None if it names none or several."""
    if path.stat().st_size == 0:
        return None
    with path.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        found = {v.decode() for v in _VERSION.findall(m)}
    return found.pop() if len(found) == 1 else None


def cut_short(path: Path) -> bool:
    """An ELF64 file whose section header table, which ends a linked library, lies past its end: a copy
    cut short (a kill, a full disk), though its first part holds the version string provider_version reads."""
    with path.open("rb") as f:
        head = f.read(64)
    if len(head) < 64 or head[:6] != b"\x7fELF\x02\x01":  # not a 64-bit little-endian ELF: not judged here
        return False
    (shoff,), (shentsize, shnum) = struct.unpack_from("<Q", head, 0x28), struct.unpack_from("<HH", head, 0x3A)
    return shoff + shentsize * shnum > path.stat().st_size


def read_record(bin_dir: Path) -> dict[str, Any] | None:
    try:
        record = json.loads((bin_dir / RECORD_FILE).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def write_record(bin_dir: Path, record: dict[str, Any]) -> None:
    tmp = bin_dir / f"{RECORD_FILE}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    tmp.replace(bin_dir / RECORD_FILE)


@dataclass(frozen=True)
class ProviderState:
    present: tuple[str, ...]  # which of PROVIDER_FILES are in the folder
    version: str | None  # the CUDA provider's onnxruntime version, None if absent or unreadable
    expected: str  # onnxruntime-node's version

    @property
    def installed(self) -> bool:
        return set(self.present) == set(PROVIDER_FILES) and self.version == self.expected

    @property
    def mismatched(self) -> bool:
        """A CUDA provider is there, and it is not of onnxruntime-node's version (or names none)."""
        return CUDA in self.present and self.version != self.expected


def inspect(ort: OrtNode) -> ProviderState:
    """What is beside libonnxruntime.so.1. Files our record lists, with the sizes it lists, are taken at
    the record's word; anything else is read (the CUDA provider, ~270 MB, in ~0.2 s)."""
    present = tuple(n for n in PROVIDER_FILES if (ort.bin_dir / n).exists() and not cut_short(ort.bin_dir / n))
    if CUDA not in present:
        return ProviderState(present, None, ort.version)
    record = read_record(ort.bin_dir) or {}
    files = record.get("files") or {}
    if set(files) == set(present) and all((ort.bin_dir / n).stat().st_size == files[n].get("size") for n in present):
        return ProviderState(present, record.get("onnxruntime"), ort.version)
    return ProviderState(present, provider_version(ort.bin_dir / CUDA), ort.version)


def mismatch_message(ort: OrtNode, state: ProviderState) -> str:
    found = f"onnxruntime {state.version}" if state.version else "an unknown onnxruntime version (it names none)"
    files = " ".join(str(ort.bin_dir / n) for n in state.present)
    return (f"{ort.bin_dir / CUDA} is from {found}, but onnxruntime-node here is {ort.version}: provider "
            f"libraries only work with the onnxruntime they were built with. Remove them (rm {files}) or "
            f"reinstall the Node packages (`npm ci`), then install the {ort.version} provider "
            f"(onnxruntime-gpu=={ort.version}): `python -m client.cuda_provider install`")
