"""FiftyOne remote zoo source for NVIDIA C-RADIOv4 (``nv_labs/c-radio_v4-h``,
``nv_labs/c-radio_v4-so400m``).

``download_model`` sets everything up on first use, with visible progress: checks Node >= 20,
installs and builds the TypeScript sidecar from this folder, downloads the checkpoint into the
Hugging Face cache and compiles it to ONNX in the model's folder. ``load_model`` validates the
options, compiles any extra graph variant they need (fp16, ViTDet window, external preprocessor)
and starts (or reuses) the local sidecar, or connects to remote ones (``server=``).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import types


def _register_parent_packages(name: str) -> None:
    # FiftyOne imports this folder as module "<source name with dots>" (e.g. nv_labs.c-radio_v4)
    # without importing its parents; relative imports below need them in sys.modules.
    parts = name.split(".")
    for i in range(1, len(parts)):
        parent = ".".join(parts[:i])
        if parent not in sys.modules:
            module = types.ModuleType(parent)
            module.__path__ = []
            sys.modules[parent] = module


_register_parent_packages(__name__)

from .client.options import MODELS, RadioOptions, parse_options  # noqa: E402
from .client.sidecar import cli_path, node_executable  # noqa: E402
from .zoo import RadioModel, make_local_model, make_remote_model  # noqa: E402

logger = logging.getLogger(__name__)

SOURCE_DIR = Path(__file__).resolve().parent
BASE_GRAPH = "fp32"


def _run(cmd: list[str], cwd: Path, what: str, env: dict[str, str] | None = None) -> None:
    """Runs a set-up step, passing its progress output through to the terminal."""
    logger.info("%s: %s", what, " ".join(cmd))
    print(f"[c-radio] {what}...", file=sys.stderr, flush=True)
    proc = subprocess.run(cmd, cwd=cwd, env={**os.environ, **(env or {})}, stdout=sys.stderr, stderr=sys.stderr)
    if proc.returncode != 0:
        raise RuntimeError(f"C-RADIOv4 set-up failed at '{what}' (exit {proc.returncode}): {' '.join(cmd)}")


def _gpu_available() -> bool:
    return shutil.which("nvidia-smi") is not None and subprocess.run(
        ["nvidia-smi", "-L"], capture_output=True).returncode == 0


def ensure_sidecar_built(source: Path = SOURCE_DIR) -> Path:
    """npm ci + build, once (again only when package-lock.json changed)."""
    node = node_executable()
    cli = cli_path(source)
    stamp = source / "server" / "dist" / ".built-from"
    lock = (source / "package-lock.json").read_bytes() if (source / "package-lock.json").exists() else b""
    digest = hashlib.sha256(lock).hexdigest()
    if cli.exists() and stamp.exists() and stamp.read_text() == digest:
        return cli
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError(f"npm is required to build the C-RADIOv4 sidecar (Node {node}); install npm with Node.js")
    env = {}
    if "ONNXRUNTIME_NODE_INSTALL" not in os.environ and not _gpu_available():
        env["ONNXRUNTIME_NODE_INSTALL"] = "skip"  # CUDA binaries are only fetched for GPU hosts
    _run([npm, "ci", "--no-audit", "--no-fund"], source, "installing the sidecar's Node packages", env)
    _run([npm, "run", "build"], source, "building the sidecar")
    stamp.write_text(digest)
    return cli


def _compile(model_name: str, out: Path, flags: list[str], checkpoint_dir: str | None = None,
             revision: str | None = None) -> None:
    node = node_executable()
    cli = ensure_sidecar_built()
    if checkpoint_dir:
        src = ["--checkpoint", checkpoint_dir]
    else:
        src = ["--model", MODELS[model_name]["checkpoint"]] + (["--revision", revision] if revision else [])
    _run([node, str(cli), "compile", *src, "--out", str(out), *flags], SOURCE_DIR,
         f"compiling {model_name} ({out.name})")


def _graphs_dir(model_path: str) -> Path:
    """model_path is a small JSON marker file (FiftyOne counts a model as downloaded when its path
    is a file); the compiled graphs live in the folder beside it, without the .json."""
    return Path(model_path).with_suffix("")


def download_model(model_name: str, model_path: str) -> None:
    """First-use set-up: build the sidecar, download the checkpoint, compile the fp32 graph."""
    if model_name not in MODELS:
        raise ValueError(f"unknown model {model_name!r}; this source has {', '.join(MODELS)}")
    graphs = _graphs_dir(model_path)
    graphs.mkdir(parents=True, exist_ok=True)
    _compile(model_name, graphs / BASE_GRAPH, [], revision=os.environ.get("RADIO_HF_REVISION"))
    meta = json.loads((graphs / BASE_GRAPH / "metadata.json").read_text())
    # Written last: its presence tells FiftyOne (and us) that set-up completed.
    Path(model_path).write_text(json.dumps({"model": model_name, "graphs": str(graphs), "source": meta["source"]}, indent=2))


def _variant(o: RadioOptions, fp16: bool) -> tuple[str, list[str]]:
    precision = "int8" if o.quantize else "fp16" if fp16 else "fp32"
    name, flags = precision, ([] if precision == "fp32" else ["--precision", precision])
    if o.vitdet_window_size:
        name += f"-w{o.vitdet_window_size}"
        flags += ["--window-size", str(o.vitdet_window_size)]
    if o.use_external_preprocessor:
        name += "-ext"
        flags += ["--external-preprocessor"]
    return name, flags


def load_model(model_name: str, model_path: str, **kwargs: Any) -> RadioModel:
    options = parse_options(model_name, kwargs)
    if options.remote:
        return make_remote_model(model_name, options)
    device = options.device or "auto"
    cuda = device.startswith("cuda") or (device == "auto" and _gpu_available())
    if options.quantize and cuda:
        raise ValueError("quantize=True makes an int8 graph for the CPU, but this host has a GPU and device="
                         f"{device!r} would use it; pass device='cpu' to run int8 on the CPU, or drop quantize")
    fp16 = options.use_mixed_precision if options.use_mixed_precision is not None else cuda
    path = _graphs_dir(model_path)
    base = path / BASE_GRAPH
    if not Path(model_path).is_file() or not (base / "metadata.json").exists():
        download_model(model_name, model_path)
    name, flags = _variant(options, fp16)
    graph = path / name
    if not (graph / "metadata.json").exists():
        source = json.loads((base / "metadata.json").read_text())["source"]
        checkpoint = source["dir"] if Path(source["dir"], "config.json").exists() else None
        _compile(model_name, graph, flags, checkpoint_dir=checkpoint, revision=source.get("revision"))
    if device.startswith("cuda:"):
        os.environ.setdefault("CUDA_VISIBLE_DEVICES", device.split(":", 1)[1])
    return make_local_model(model_name, options, {name: graph}, name, "cuda" if cuda else "cpu")


def resolve_input(model_name: str, ctx: Any) -> Any:
    """Inputs for the App's zoo operator: the options above, typed."""
    import fiftyone.operators.types as types

    inputs = types.Object()
    inputs.enum("output_type", ["summary", "spatial"], default="summary", label="Output",
                description="summary: global embeddings; spatial: dense features / PCA heatmaps")
    inputs.enum("feature_format", ["NCHW", "NLC"], default="NCHW", label="Dense feature layout")
    inputs.bool("apply_smoothing", default=True, label="Smooth heatmaps")
    inputs.float("smoothing_sigma", default=1.51, label="Smoothing sigma (feature cells)")
    inputs.str("image_size", default="default", label="Resolution policy",
               description="default | native | max:N | HxW")
    inputs.int("vitdet_window_size", label="ViTDet window (patches)", required=False)
    inputs.bool("use_mixed_precision", label="fp16 on GPU", required=False)
    inputs.bool("use_external_preprocessor", default=False, label="External preprocessor")
    inputs.bool("quantize", default=False, label="int8 on CPU",
                description="int8 linear layers: ~1.4x faster on a CPU, approximate (see README)")
    inputs.str("server", label="Remote sidecar address(es), comma-separated", required=False)
    return types.Property(inputs)


def parse_parameters(model_name: str, ctx: Any, params: dict[str, Any]) -> None:
    """Turns the operator's form values into load_model options (and validates them)."""
    for key in [k for k, v in params.items() if v in (None, "")]:
        params.pop(key)
    if params.get("image_size") == "default":
        params.pop("image_size")
    if isinstance(params.get("server"), str):
        servers = [s.strip() for s in params["server"].split(",") if s.strip()]
        params["server"] = servers[0] if len(servers) == 1 else servers
    known = {"output_type", "feature_format", "apply_smoothing", "smoothing_sigma", "image_size", "vitdet_window_size",
             "use_mixed_precision", "use_external_preprocessor", "quantize", "server"}
    parse_options(model_name, {k: v for k, v in params.items() if k in known})
