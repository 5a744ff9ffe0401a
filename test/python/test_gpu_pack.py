"""The GPU device check's transport: bench/gpu/pack.py splits archives into parts spread over
stages (one per device call), bench/gpu/stage.py collects them call by call and reassembles them.
Every reassembled file must be byte-identical to its source; a damaged part or a part of another
pack must never be installed."""
from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import sys
from pathlib import Path

import pytest

GPU = Path(__file__).resolve().parents[2] / "bench" / "gpu"


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"gpu_{name}", GPU / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


pack = load("pack")
stage = load("stage")


def sources(root: Path, seed: int) -> dict[str, dict[str, Path]]:
    """Two archives of incompressible files (random bytes) so the parts are as big as the files."""
    rng = __import__("random").Random(seed)
    members: dict[str, dict[str, Path]] = {}
    for archive, sizes in (("runtime", [70_000, 5, 0, 40_000]), ("cuda-provider", [150_000, 1_000])):
        files = {}
        for i, size in enumerate(sizes):
            p = root / archive / f"f{i}.bin"
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(rng.randbytes(size))
            os.chmod(p, 0o755 if i == 0 else 0o644)
            files[f"{archive}/dir{i % 2}/f{i}.bin"] = p
        members[archive] = files
    return members


def carry(packed: Path, k: int, into: Path) -> Path:
    """What one device call brings: only stage k's folder."""
    shutil.rmtree(into, ignore_errors=True)
    into.mkdir(parents=True)
    shutil.copytree(packed / str(k), into / str(k))
    return into


@pytest.fixture()
def packed(tmp_path, monkeypatch):
    monkeypatch.setattr(pack, "CACHE", tmp_path / "cache")
    members = sources(tmp_path / "src", seed=1)
    manifest = pack.pack(tmp_path / "packed", 64_000, members, level=1, meta={"commit": "abc"})
    return tmp_path, members, manifest


def test_parts_spread_over_stages_and_reassemble_byte_for_byte(packed):
    tmp, members, manifest = packed
    assert manifest["stages"] >= 4  # 115 kB + 151 kB of random bytes in parts of at most 64 kB
    for k in range(1, manifest["stages"] + 1):
        parts = [p for p in (tmp / "packed" / str(k)).iterdir() if ".part" in p.name]
        assert parts and sum(p.stat().st_size for p in parts) <= 64_000
    stage_dir = tmp / "device"
    seen = []
    for k in range(1, manifest["stages"] + 1):
        status = stage.stage(stage_dir, carry(tmp / "packed", k, tmp / "carried"))
        seen.append(dict(status["archives"]))
    assert seen[0]["cuda-provider"].startswith("waiting")
    assert seen[-1] == {"runtime": "installed", "cuda-provider": "installed"}
    assert status["commit"] == "abc"
    for files in members.values():
        for name, src in files.items():
            got = stage_dir / "root" / name
            assert hashlib.sha256(got.read_bytes()).digest() == hashlib.sha256(src.read_bytes()).digest(), name
            assert got.stat().st_mode & 0o777 == src.stat().st_mode & 0o777
    # Parts are dropped once installed; a later call with nothing new leaves everything as it is.
    assert not list((stage_dir / "parts").iterdir())
    assert stage.stage(stage_dir, tmp / "nothing")["archives"] == seen[-1]


def test_a_damaged_part_is_refused(packed):
    tmp, _, manifest = packed
    carried = carry(tmp / "packed", 1, tmp / "carried")
    part = next(p for p in (carried / "1").iterdir() if ".part" in p.name)
    data = bytearray(part.read_bytes())
    data[len(data) // 2] ^= 0x01
    part.write_bytes(bytes(data))
    with pytest.raises(stage.StageError, match="sha256"):
        stage.stage(tmp / "device", carried)


def test_parts_of_another_pack_are_never_mixed(packed, monkeypatch):
    tmp, _, manifest = packed
    stage_dir = tmp / "device"
    stage.stage(stage_dir, carry(tmp / "packed", 1, tmp / "carried"))
    # A new pack (other file contents): its stage 2 arrives on a machine holding the old stage 1.
    other = pack.pack(tmp / "packed2", 64_000, sources(tmp / "src2", seed=2), level=1, meta={"commit": "def"})
    status = stage.stage(stage_dir, carry(tmp / "packed2", 2, tmp / "carried"))
    assert status["commit"] == "def"
    assert all(v.startswith("waiting") for v in status["archives"].values())
    kept = {p.name for p in (stage_dir / "parts").iterdir()}
    assert kept == {p["file"] for a in other["archives"] for p in a["parts"] if p["stage"] == 2}
