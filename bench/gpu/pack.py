#!/usr/bin/env python3
"""Packs what the GPU device check needs on a machine that has no Node.js, no npm registry and no
onnxruntime CUDA provider, into chunks that each fit one device call (64 MiB with the working tree).

    python3 bench/gpu/pack.py            # → .gpu-stage/1, .gpu-stage/2, … + .gpu-stage/manifest.json

Three archives, each split into parts and spread over stages (one stage per device call):
  source         the repository at one commit (`git archive`, default HEAD): the check runs that
                 code, not whatever the working tree holds when a call is made, and names it
  runtime        the node binary, node_modules (linux-x64 binaries only; the TypeScript compiler is
                 kept, so the device builds server/dist from the source that travels with the call), the
                 Vulkan loader and GL dispatch libraries (WebGPU needs libvulkan.so.1 and NVIDIA's
                 Vulkan driver needs glvnd; the device image lacks both) and a few
                 real photographs as JPEGs (the agreement check's inputs)
  cuda-provider  libonnxruntime_providers_{shared,cuda}.so of PyPI onnxruntime-gpu==<onnxruntime-
                 node's version> (272 MB, ~177 MB as xz: three parts)
The manifest holds the sha256 of every part, every archive and every file inside; bench/gpu/stage.py
checks each of them where it reassembles. Stage 1 holds the runtime, so the first call can already
prepare checkpoints, graphs and the CPU/WebGPU results while the provider's parts follow.
Standard library only (plus pip and apt-get, for what is not cached yet).
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
STAGE = REPO / ".gpu-stage"
CACHE = Path(os.environ.get("RADIO_GPU_PACK_CACHE", Path.home() / ".cache" / "c-radio-gpu-pack"))
MIB = 1024 * 1024
# A device call carries the working tree and the carried paths, 64 MiB in all.
CALL_LIMIT = 64 * MIB
# Not needed on the device: other platforms' onnxruntime builds (220 MB), and the dev tools that only
# lint (Biome, 97 MB) or drive a browser (playwright-core) here: with them the pack needs a fifth call.
NODE_MODULES_SKIP = ("node_modules/onnxruntime-node/bin/napi-v6/darwin", "node_modules/onnxruntime-node/bin/napi-v6/win32",
                     "node_modules/onnxruntime-node/bin/napi-v6/linux/arm64", "node_modules/@biomejs",
                     "node_modules/playwright-core")
# Room left in a call for the manifest (it lists every file: ~1.2 MB) and the transfer's own overhead.
MARGIN = 4 * MIB
sys.path.insert(0, str(Path(__file__).resolve().parent))
from stage import sha256  # noqa: E402  (one hashing helper for both sides)


def log(msg: str) -> None:
    print(f"[pack] {msg}", file=sys.stderr, flush=True)


def worktree_bytes() -> int:
    """What every device call sends besides the carried stage: tracked and untracked-not-ignored files."""
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                         capture_output=True, check=True).stdout
    return sum((REPO / p).stat().st_size for p in out.decode().split("\0") if p and (REPO / p).is_file())


def ort_version() -> str:
    return json.loads((REPO / "node_modules/onnxruntime-node/package.json").read_text())["version"]


def provider_files() -> dict[str, Path]:
    """The CUDA provider libraries for onnxruntime-node's version by archive name (beside
    libonnxruntime.so.1), got by the zoo's own PyPI route (client/ort_gpu_wheel.py: pip download,
    RECORD-checked copy) into a cache folder, not beside our libonnxruntime.so.1: this machine has no
    GPU, and the provider must stay absent here."""
    sys.path.insert(0, str(REPO))
    from client.ort_gpu_wheel import cached_wheel, default_cache_dir, download_wheel, install_from_wheel
    from client.provider_files import PROVIDER_FILES, find_ort_node

    ort = find_ort_node(REPO)
    out = CACHE / f"onnxruntime-gpu-{ort.version}"
    if not all((out / f).exists() for f in PROVIDER_FILES):
        out.mkdir(parents=True, exist_ok=True)
        wheels = default_cache_dir()
        wheel = cached_wheel(wheels, ort.version, ort.machine) or download_wheel(ort.version, wheels, ort.machine, log)
        install_from_wheel(wheel, dataclasses.replace(ort, bin_dir=out), log)
    where = ort.bin_dir.relative_to(REPO)
    return {f"{where}/{f}": out / f for f in PROVIDER_FILES}


# The Vulkan loader, and the GL vendor-neutral dispatch libraries that NVIDIA's Vulkan driver
# (libGLX_nvidia.so.0) needs: without them the H200 image's driver loads but gives no instance
# ("Could not get 'vkCreateInstance' via 'vk_icdGetInstanceProcAddr'", seen there 2026-12-01).
GL_PACKAGES = ("libvulkan1", "libglvnd0", "libglx0", "libegl1", "libgl1", "libopengl0", "libgles2")


def gl_libraries() -> dict[str, Path]:
    """Shared libraries of GL_PACKAGES (Debian's), by soname: lib/<soname> in the runtime archive."""
    out = CACHE / "gl-libs"
    if not out.exists():
        tmp = out.with_suffix(".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        subprocess.run(["apt-get", "download", *GL_PACKAGES], cwd=tmp, check=True, capture_output=True)
        for deb in tmp.glob("*.deb"):
            subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp / "x")], check=True)
        for lib in (tmp / "x").rglob("*.so.*"):
            if lib.is_symlink() and lib.resolve().is_file():  # soname links, e.g. libvulkan.so.1
                shutil.copyfile(lib.resolve(), tmp / lib.name)
        shutil.rmtree(tmp / "x")
        for deb in tmp.glob("*.deb"):
            deb.unlink()
        tmp.rename(out)
    return {f"lib/{p.name}": p for p in sorted(out.iterdir())}


def photos() -> list[tuple[str, bytes]]:
    """Real photographs as JPEGs: scikit-learn's sample images (china.jpg, flower.jpg) and, if
    scikit-image is importable, its colour photographs (re-encoded at quality 95)."""
    from PIL import Image

    found: list[tuple[str, bytes]] = []
    try:
        import sklearn.datasets

        root = Path(sklearn.datasets.__file__).parent / "images"
        found += [(p.name, p.read_bytes()) for p in sorted(root.glob("*.jpg"))]
    except ImportError:
        pass
    try:
        import skimage

        root = Path(skimage.__file__).parent / "data"
        for name in ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png", "hubble_deep_field.jpg"):
            if (root / name).exists():
                img = Image.open(root / name).convert("RGB")
                buf = io.BytesIO()
                img.save(buf, "JPEG", quality=95)
                found.append((Path(name).stem + ".jpg", buf.getvalue()))
    except ImportError:
        pass
    if len(found) < 2:
        raise SystemExit("no real photographs found: install scikit-learn (its sample images are JPEG photographs)")
    return found


def source_tree(rev: str) -> tuple[str, dict[str, Path]]:
    """The repository's files at rev (its commit id, and archive name → extracted file)."""
    commit = subprocess.run(["git", "rev-parse", rev], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()
    out = CACHE / "source" / commit
    if not out.exists():
        tmp = out.with_suffix(".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        tar = subprocess.run(["git", "archive", "--format=tar", commit], cwd=REPO, capture_output=True, check=True).stdout
        with tarfile.open(fileobj=io.BytesIO(tar)) as t:
            if hasattr(tarfile, "data_filter"):
                t.extractall(tmp, filter="data")
            else:
                t.extractall(tmp)
        tmp.rename(out)
    files: dict[str, Path] = {}
    add_tree(out, "src", (), files)
    return commit, files


def node_binary() -> Path:
    node = Path(shutil.which("node") or "").resolve()
    if not node.is_file():
        raise SystemExit("node is not on PATH")
    ldd = subprocess.run(["ldd", str(node)], capture_output=True, text=True).stdout
    if "libnode" in ldd or "not found" in ldd:
        raise SystemExit(f"{node} links shared Node/ICU libraries; it would not run elsewhere:\n{ldd}")
    return node


def add_tree(root: Path, arc: str, skip: tuple[str, ...], files: dict[str, Path]) -> None:
    """Adds root's regular files to files under the archive name arc/…, leaving out skip prefixes."""
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = Path(arc) / Path(dirpath).relative_to(root)
        dirnames[:] = sorted(d for d in dirnames if not str(rel_dir / d).startswith(skip))
        for f in sorted(filenames):
            p = Path(dirpath) / f
            if p.is_symlink() or not p.is_file():
                continue
            files[str(rel_dir / f)] = p


def write_archive(out: Path, members: dict[str, Path], level: int) -> dict[str, dict]:
    """xz tar of members (archive name → source file); returns each member's size and sha256. An
    archive of the same listing made before is reused from the cache (xz of 500 MB takes minutes)."""
    listing = {name: {"size": src.stat().st_size, "sha256": sha256(src), "mode": src.stat().st_mode & 0o777}
               for name, src in members.items()}
    key = hashlib.sha256(json.dumps([listing, level], sort_keys=True).encode()).hexdigest()[:16]
    cached = CACHE / "archives" / f"{out.name}.{key}"
    if not cached.exists():
        cached.parent.mkdir(parents=True, exist_ok=True)
        plain = cached.parent / f"{out.name}.{key}.tmp.tar"
        with tarfile.open(plain, "w") as tar:
            for name, src in members.items():
                tar.add(src, arcname=name, recursive=False)
        # xz on all cores: Python's lzma is single-threaded (minutes for the 272 MB provider).
        subprocess.run(["xz", "-T0", f"-{level}", "-f", str(plain)], check=True)
        Path(f"{plain}.xz").rename(cached)
    else:
        log(f"{out.name}: unchanged, reusing {cached}")
    shutil.copyfile(cached, out)
    return listing


def pack(stage: Path, part_bytes: int, members: dict[str, dict[str, Path]], level: int = 9,
         meta: dict | None = None) -> dict:
    """Writes the archives, their parts spread over stage/<n>/, and stage/manifest.json."""
    shutil.rmtree(stage, ignore_errors=True)
    work = stage / "work"
    work.mkdir(parents=True)
    manifest: dict = {**(meta or {}), "archives": [], "stages": 0}
    names = [n for files in members.values() for n in files]
    if len(names) != len(set(names)):
        raise SystemExit("two archives hold the same file name: one would overwrite the other where they are unpacked")
    # Stages are filled in order: an archive's first part takes what its stage has left.
    n_stage, used = 1, 0

    for name, files in members.items():
        archive = work / f"{name}.tar.xz"
        log(f"{name}: {len(files)} files, {sum(p.stat().st_size for p in files.values()) / MIB:.0f} MiB → xz")
        listing = write_archive(archive, files, level)
        parts = []
        with open(archive, "rb") as f:
            while True:
                if used >= part_bytes:
                    n_stage, used = n_stage + 1, 0
                block = f.read(part_bytes - used)
                if not block:
                    break
                file = f"{archive.name}.part{len(parts):02d}"
                (stage / str(n_stage)).mkdir(exist_ok=True)
                (stage / str(n_stage) / file).write_bytes(block)
                parts.append({"file": file, "size": len(block), "sha256": hashlib.sha256(block).hexdigest(), "stage": n_stage})
                used += len(block)
        manifest["archives"].append({"name": name, "file": archive.name, "size": archive.stat().st_size,
                                     "sha256": sha256(archive), "parts": parts, "files": listing})
        log(f"{name}: {archive.stat().st_size / MIB:.1f} MiB in {len(parts)} part(s)")
        archive.unlink()
    work.rmdir()
    manifest["stages"] = n_stage
    # Every stage carries the manifest, so the device side can check whatever arrives first.
    text = json.dumps(manifest, separators=(",", ":"))
    for k in range(1, n_stage + 1):
        (stage / str(k) / "manifest.json").write_text(text)
    (stage / "manifest.json").write_text(text)
    return manifest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=STAGE)
    ap.add_argument("--part-mib", type=float, default=None,
                    help="largest part (default: 64 MiB less the working tree and 4 MiB for the manifest and overhead)")
    ap.add_argument("--level", type=int, default=9, help="xz preset")
    ap.add_argument("--no-provider", action="store_true", help="leave the CUDA provider out (dry runs)")
    ap.add_argument("--source", default="HEAD", help="commit whose files the check runs (default HEAD)")
    args = ap.parse_args()
    CACHE.mkdir(parents=True, exist_ok=True)
    tree = worktree_bytes()
    part = int(args.part_mib * MIB) if args.part_mib else CALL_LIMIT - tree - MARGIN
    log(f"working tree {tree / MIB:.1f} MiB travels with every call; parts of at most {part / MIB:.1f} MiB")
    if not (REPO / "node_modules/typescript").exists():
        raise SystemExit("node_modules is missing: run `npm ci` first")
    runtime: dict[str, Path] = {"bin/node": node_binary(), **gl_libraries()}
    add_tree(REPO / "node_modules", "node_modules", NODE_MODULES_SKIP, runtime)
    photo_dir = CACHE / "photos"
    photo_dir.mkdir(parents=True, exist_ok=True)
    for name, data in photos():
        (photo_dir / name).write_bytes(data)
        runtime[f"photos/{name}"] = photo_dir / name
    commit, source = source_tree(args.source)
    members = {"source": source, "runtime": runtime}
    if not args.no_provider:
        members["cuda-provider"] = provider_files()
    manifest = pack(args.out, part, members, args.level, {"onnxruntime_node": ort_version(), "commit": commit})
    for k in range(1, manifest["stages"] + 1):
        size = sum(p.stat().st_size for p in (args.out / str(k)).iterdir())
        log(f"stage {k}: {size / MIB:.1f} MiB (+ {tree / MIB:.1f} MiB working tree)")
    print(json.dumps({"stages": manifest["stages"], "out": str(args.out)}))


if __name__ == "__main__":
    main()
