#!/usr/bin/env python3
"""Device side of bench/gpu/pack.py: collects the parts that this call carried (.gpu-stage/<n>/)
into a folder that outlives the call (it lasts while the device machine stays warm), and once all
parts of an archive are there, reassembles it, checks its sha256 and every extracted file's sha256,
and installs it. Safe to run on every call: parts already there are not copied again, archives
already installed are not extracted again.

    python3 bench/gpu/stage.py [--stage-dir DIR]      # prints a JSON status line

Standard library only: it runs under whatever python3 the device machine has.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tarfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CARRIED = REPO / ".gpu-stage"
DEFAULT_STAGE_DIR = Path(os.environ.get("RADIO_GPU_STAGE_DIR", "/root/radio-gpu-stage"))
MIB = 1024 * 1024


class StageError(RuntimeError):
    pass


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(MIB), b""):
            h.update(block)
    return h.hexdigest()


def log(msg: str) -> None:
    print(f"[stage] {msg}", file=sys.stderr, flush=True)


def load_manifest(stage_dir: Path, carried_dir: Path = CARRIED) -> dict:
    """The newest manifest: one carried now (each stage folder has a copy) replaces the kept one."""
    carried = sorted(carried_dir.glob("*/manifest.json"))
    kept = stage_dir / "manifest.json"
    if carried:
        text = carried[0].read_text()
        if kept.exists() and kept.read_text() != text:
            # Another pack: parts of the old one must not be mixed with the new one.
            log("a different pack arrived: clearing the staged parts and installs of the previous one")
            shutil.rmtree(stage_dir)
        stage_dir.mkdir(parents=True, exist_ok=True)
        kept.write_text(text)
    if not kept.exists():
        raise StageError("no manifest: carry a stage folder (.gpu-stage/<n>) made by bench/gpu/pack.py")
    return json.loads(kept.read_text())


def collect(manifest: dict, stage_dir: Path, carried_dir: Path = CARRIED) -> list[str]:
    """Copies the carried parts in, each checked against the manifest; returns their names."""
    wanted = {p["file"]: p for a in manifest["archives"] for p in a["parts"]}
    parts_dir = stage_dir / "parts"
    parts_dir.mkdir(parents=True, exist_ok=True)
    got = []
    for src in sorted(carried_dir.glob("*/*.part*")):
        part = wanted.get(src.name)
        if part is None:
            raise StageError(f"{src} is not in the manifest (a part of another pack?)")
        dst = parts_dir / src.name
        if dst.exists() and dst.stat().st_size == part["size"]:
            continue
        digest = sha256(src)
        if digest != part["sha256"]:
            raise StageError(f"{src.name}: sha256 {digest} ≠ {part['sha256']} (damaged in transfer: carry it again)")
        shutil.copyfile(src, dst)
        got.append(src.name)
    return got


def install(archive: dict, stage_dir: Path) -> None:
    """Reassembles, checks and extracts one archive into stage_dir/root."""
    parts_dir = stage_dir / "parts"
    joined = stage_dir / archive["file"]
    with open(joined, "wb") as out:
        for p in archive["parts"]:
            with open(parts_dir / p["file"], "rb") as f:
                shutil.copyfileobj(f, out, 16 * MIB)
    digest = sha256(joined)
    if digest != archive["sha256"]:
        joined.unlink()
        raise StageError(f"{archive['file']}: reassembled sha256 {digest} ≠ {archive['sha256']}")
    root = stage_dir / "root"
    root.mkdir(exist_ok=True)
    with tarfile.open(joined) as tar:
        names = set(tar.getnames())
        if names != set(archive["files"]):
            raise StageError(f"{archive['file']}: its members differ from the manifest's list")
        # Members are plain files with relative names (pack.py writes nothing else): refuse others.
        for m in tar.getmembers():
            if not m.isfile() or m.name.startswith("/") or ".." in Path(m.name).parts:
                raise StageError(f"{archive['file']}: unexpected member {m.name!r}")
        if hasattr(tarfile, "data_filter"):
            tar.extractall(root, filter="data")
        else:
            tar.extractall(root)
    bad = []
    for name, meta in archive["files"].items():
        path = root / name
        if path.stat().st_size != meta["size"] or sha256(path) != meta["sha256"]:
            bad.append(name)
        os.chmod(path, meta["mode"])
    if bad:
        raise StageError(f"{archive['file']}: {len(bad)} extracted file(s) differ from the manifest, e.g. {bad[:3]}")
    joined.unlink()
    for p in archive["parts"]:
        (parts_dir / p["file"]).unlink()
    (stage_dir / "installed").mkdir(exist_ok=True)
    (stage_dir / "installed" / archive["name"]).write_text(json.dumps({"sha256": archive["sha256"], "files": len(archive["files"])}))
    log(f"{archive['name']}: {len(archive['parts'])} part(s) reassembled, archive and {len(archive['files'])} file(s) match their sha256")


def stage(stage_dir: Path = DEFAULT_STAGE_DIR, carried_dir: Path = CARRIED) -> dict:
    manifest = load_manifest(stage_dir, carried_dir)
    got = collect(manifest, stage_dir, carried_dir)
    status: dict = {"stage_dir": str(stage_dir), "commit": manifest.get("commit"), "carried": got,
                    "stages": manifest["stages"], "archives": {}}
    for archive in manifest["archives"]:
        name = archive["name"]
        if (stage_dir / "installed" / name).exists():
            status["archives"][name] = "installed"
            continue
        missing = [p for p in archive["parts"] if not (stage_dir / "parts" / p["file"]).exists()]
        if missing:
            status["archives"][name] = f"waiting for stage(s) {sorted({p['stage'] for p in missing})}"
            continue
        install(archive, stage_dir)
        status["archives"][name] = "installed"
    status["root"] = str(stage_dir / "root")
    return status


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stage-dir", type=Path, default=DEFAULT_STAGE_DIR)
    args = ap.parse_args()
    try:
        print(json.dumps(stage(args.stage_dir)))
    except StageError as err:
        print(json.dumps({"error": str(err)}))
        sys.exit(1)


if __name__ == "__main__":
    main()
