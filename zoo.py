"""FiftyOne model for C-RADIOv4, backed by the TypeScript sidecar over gRPC.

Batches go to the sidecar whole, which decodes them: file paths go to a local sidecar (bytes to a
remote one); numpy/PIL inputs go as raw pixels. Only images in a format the sidecar can't decode
(BMP, PPM/PGM, TGA, ICO, JPEG 2000, ...) are then decoded here, with Pillow, and sent again as
pixels (client/pillow_fallback.py). With torch and torchvision installed, FiftyOne's data
loader hands this model file paths (``SupportsGetItem``); without them, FiftyOne's batch loop
would decode every image before calling ``predict_all``, so while the model is in use that loop's
image reader yields lazy file references instead (see ``_LazyImageReader``).
"""
from __future__ import annotations

import importlib.util
import inspect
import json
import logging
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

import fiftyone.core.labels as fol
import fiftyone.core.models as fom
import numpy as np

from .client.grpc_client import EmbedOptions, ImageResult, RadioClient, SidecarUnavailable, TextEmbeddings
from .client.options import RadioOptions
from .client.pillow_fallback import pixels, retry_unsupported
from .client.prompts import class_embeddings, class_prompts, zero_shot_scores
from .client.providers import GPU_PROVIDERS
from .client.served import check_image_size, select_graph
from .client.sidecar import LocalSidecar, SharedSidecar, SidecarSpec, live_client, registry

logger = logging.getLogger(__name__)
T = TypeVar("T")

def _data_loader_available() -> bool:
    """FiftyOne's data-loader path needs torch and torchvision (fiftyone.utils.torch imports both)."""
    if importlib.util.find_spec("torch") is None or importlib.util.find_spec("torchvision") is None:
        return False
    try:
        import fiftyone.utils.torch  # noqa: F401
    except Exception:
        return False
    return True


HAS_DATA_LOADER = _data_loader_available()


class LazyImage(str):
    """A file path standing in for a decoded image: what the batch loop gets instead of pixels."""


# FiftyOne (1.22) has no supported hook for how its batch loop reads images: it calls
# ``fiftyone.core.models.foui.read(path)`` (``foui`` being ``fiftyone.utils.image``). The swap below
# depends on that name and signature; check_image_reader_hook() checks both at load_model, so a
# FiftyOne that renames them fails there, loudly, instead of decoding every image in Python.
_READ_PARAMS = ("path_or_url", "include_alpha", "flag")


def check_image_reader_hook() -> None:
    """Raises RuntimeError unless ``fiftyone.core.models.foui.read(path_or_url, include_alpha=False,
    flag=None)`` exists, the reader this model swaps out while in use."""
    real = getattr(fom, "foui", None)
    if isinstance(real, _LazyImageReader):
        real = real._real
    read = getattr(real, "read", None) if real is not None else None
    problem = None
    if real is None:
        problem = "fiftyone.core.models has no `foui` (fiftyone.utils.image)"
    elif not callable(read):
        problem = "fiftyone.core.models.foui has no callable `read`"
    else:
        try:
            params = tuple(inspect.signature(read).parameters)
        except (TypeError, ValueError):
            params = ()
        if params[:len(_READ_PARAMS)] != _READ_PARAMS:
            problem = f"fiftyone.core.models.foui.read takes {params!r}, not {_READ_PARAMS!r}"
    if problem:
        import fiftyone

        raise RuntimeError(
            f"C-RADIOv4 cannot run under FiftyOne {getattr(fiftyone, '__version__', '?')}: {problem}. This model "
            "replaces that image reader while in use so that Python never decodes images; this FiftyOne has "
            "changed it. Install the FiftyOne this zoo source was made for (1.22), or update zoo.py "
            "(check_image_reader_hook, _LazyImageReader) to the new name")


def _fiftyone_caller(function: str, depth: int = 2) -> FrameType | None:
    """The frame of ``fiftyone.core.models.<function>`` when it is the code calling the caller of this
    (``depth`` frames up), else None: FiftyOne has no hook for what the zoo decides with it (the pixels
    a patch loop crops, ragged patch batches, a loop that can't run this model)."""
    caller = sys._getframe(depth)
    if caller.f_code.co_name == function and caller.f_globals.get("__name__") == "fiftyone.core.models":
        return caller
    return None


def _called_by_fiftyone(function: str) -> bool:
    """Whether the caller of the caller of this is ``fiftyone.core.models.<function>``."""
    return _fiftyone_caller(function, 3) is not None


def _check_frame_loop(samples: Any) -> None:
    """apply_model on a video collection runs an image model on its frames. FiftyOne 1.22's frame loops
    look up a class of ``fiftyone.utils.torch`` for every model, and that module needs torch and
    torchvision: without them each video failed on its own (a warning each, no labels)."""
    if getattr(samples, "media_type", None) != "video" or HAS_DATA_LOADER:
        return
    loops = (getattr(fom, "_apply_image_model_to_frames_single", None), getattr(fom, "_apply_image_model_to_frames_batch", None))
    if not any(loop is not None and "TorchImageModelWithPrompts" in loop.__code__.co_names for loop in loops):
        return  # a FiftyOne whose frame loops don't need torch
    import fiftyone

    raise ValueError(
        f"apply_model on video frames needs torch and torchvision installed under FiftyOne {fiftyone.__version__} "
        "(its frame loop imports fiftyone.utils.torch for every model; this model uses neither): "
        "pip install torch torchvision. compute_embeddings on frames works without them")


class _LazyImageReader:
    """Stands in for ``fiftyone.utils.image`` inside ``fiftyone.core.models`` while this model is
    entered: ``read(path)`` returns the path (pixels for the patch loop, which crops them), everything
    else is the real module."""

    def __init__(self, real: Any) -> None:
        self._real = real

    def read(self, path_or_url: str, include_alpha: bool = False, flag: Any = None) -> Any:
        if _called_by_fiftyone("_embed_patches"):
            # compute_patch_embeddings crops the image it reads (then sends the crops): it needs the pixels.
            return self._real.read(path_or_url, include_alpha=include_alpha, flag=flag)
        return LazyImage(path_or_url)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


# FiftyOne's reader is the lazy one while any run is in: every __enter__ of any model counts, from any
# thread (runs at once may leave in any order), and the last one out puts the real reader back.
_reader_lock = threading.RLock()  # reentrant: close() runs from __del__, maybe under it
_reader_runs = 0
_real_reader: Any = None


def _count_reader_run(delta: int) -> None:
    """Called with _reader_lock held: one run more (+1) or fewer (-1) in."""
    global _reader_runs, _real_reader
    if delta > 0 and _reader_runs == 0:
        check_image_reader_hook()
        _real_reader = fom.foui
        fom.foui = _LazyImageReader(fom.foui)
    _reader_runs += delta
    if delta < 0 and _reader_runs == 0:
        fom.foui, _real_reader = _real_reader, None


def _mixins() -> tuple[type, ...]:
    base = (fom.Model, fom.EmbeddingsMixin, fom.PromptMixin, fom.LogitsMixin)
    return (*base, fom.SupportsGetItem) if HAS_DATA_LOADER else base


class RadioModel(*_mixins()):  # type: ignore[misc]
    """C-RADIOv4 as a FiftyOne model: ``compute_embeddings`` gives summary vectors (or dense
    features with ``output_type="spatial"``) in the chosen ``embedding_space``; ``apply_model``
    gives PCA heatmaps (``fo.Heatmap``), or zero-shot ``fo.Classification`` with ``classes=``;
    in the text space, ``embed_prompts`` embeds text for ``sort_by_similarity`` and App search."""

    def __init__(self, model_name: str, options: RadioOptions, *, sidecar: LocalSidecar | SharedSidecar | None = None,
                 client: RadioClient | None = None, graph_name: str = "",
                 provider: str | None = None, precision: str | None = None, provider_notes: Sequence[str] = ()) -> None:
        if (sidecar is None) == (client is None):
            raise ValueError("give exactly one of a local sidecar or a client of remote sidecars")
        self.model_name = model_name
        self.options = options
        self.graph_name = graph_name
        self.served: Any = None  # the sidecar's GraphInfo for graph_name, read at load (check_served)
        self._sidecar = sidecar
        self._client = client
        self._runs_in = 0  # this model's runs (``with model:``) now in
        self.failures: list[tuple[str, str, str]] = []  # (id, code, message) of failed images
        self._preprocess = True
        self._store_logits = False
        # Zero-shot: the normalised class matrix and SigLIP's logit scale/bias, built on first use, once
        # (threads classifying at once wait for the first one's build instead of embedding the prompts again).
        self._zero_shot: tuple[np.ndarray, float, float] | None = None
        self._zero_shot_lock = threading.Lock()
        # Where inference runs (cuda | webgpu | cpu), on which graph precision, and why not on a better
        # provider; for remote sidecars, read from their Info at load (check_served).
        self._provider = provider
        self._batch_size_hinted = False
        self.precision = precision
        self.provider_notes = tuple(provider_notes)

    @property
    def provider(self) -> str | None:
        """The execution provider the sidecar runs this model on: "cuda", "webgpu" or "cpu"."""
        return self._provider

    def __repr__(self) -> str:
        where = "remote" if self._client is not None else f"provider={self._provider!r}, precision={self.precision!r}"
        return (f"RadioModel({self.model_name!r}, output_type={self.options.output_type!r}, "
                f"embedding_space={self.options.space!r}, {where})")

    # -- FiftyOne Model interface ---------------------------------------------------------------

    @property
    def config(self) -> RadioOptions:
        """The model's options, as FiftyOne's ``Model.config`` (every FiftyOne model has one:
        ``apply_model(confidence_thresh=..., classes=...)`` reads it to see whether the model filters
        by itself; this one doesn't, so FiftyOne filters the labels it returns)."""
        return self.options

    @property
    def media_type(self) -> str:
        # apply_model and compute_embeddings read this first, before their loops: a model with nothing to
        # predict stops there, once, instead of failing every batch (one warning each under FiftyOne's
        # skip_failures=True); a GPU left idle by one image per call is said there, once.
        caller = _fiftyone_caller("apply_model")
        if caller is not None:
            self._check_can_predict()
            _check_frame_loop(caller.f_locals.get("samples"))
        caller = caller or _fiftyone_caller("compute_embeddings")
        if caller is not None and caller.f_locals.get("batch_size") is None:
            self._hint_batch_size()
        return "image"

    def _hint_batch_size(self) -> None:
        import fiftyone

        if self._batch_size_hinted or self._provider not in GPU_PROVIDERS or fiftyone.config.default_batch_size is not None:
            return
        self._batch_size_hinted = True
        logger.warning("C-RADIOv4 runs on %s, and without batch_size FiftyOne sends it one image per call, which "
                       "leaves the GPU idle while each image is read and decoded (2.5x slower than batches of 8 "
                       "on an H200): pass batch_size=16 (or set fo.config.default_batch_size)", self._provider)

    @property
    def has_logits(self) -> bool:
        return bool(self.options.classes)

    @property
    def classes(self) -> list[str] | None:
        return list(self.options.classes) if self.options.classes else None

    @property
    def can_embed_prompts(self) -> bool:
        return self.options.space == "text"

    @property
    def ragged_batches(self) -> bool:
        # False, or FiftyOne ignores batch_size; our collate_fn keeps batches as lists of paths. True only
        # for the patch data loader (compute_patch_embeddings with torch + torchvision), which otherwise
        # np.stacks each image's crops, so an image whose boxes differ in size failed ("all input arrays
        # must have the same shape"): there it hands the crops as a list, which the sidecar takes as is.
        return _called_by_fiftyone("_make_patch_data_loader")

    @property
    def transforms(self) -> None:
        return None  # the sidecar decodes and resizes

    @property
    def preprocess(self) -> bool:
        return self._preprocess

    @preprocess.setter
    def preprocess(self, value: bool) -> None:
        self._preprocess = value

    @property
    def has_collate_fn(self) -> bool:
        return True

    @staticmethod
    def collate_fn(batch: list[Any]) -> list[Any]:
        return batch

    @property
    def has_embeddings(self) -> bool:
        return True

    def build_get_item(self, field_mapping: dict[str, str] | None = None) -> Any:
        from .client.get_item import FilepathGetItem

        return FilepathGetItem(field_mapping=field_mapping)

    def __enter__(self) -> RadioModel:
        self._check_open()
        with _reader_lock:
            _count_reader_run(+1)
            self._runs_in += 1
        return self

    def __exit__(self, *args: Any) -> None:
        with _reader_lock:
            if self._runs_in:
                self._runs_in -= 1
                _count_reader_run(-1)

    def _restore_image_reader(self) -> None:
        with _reader_lock:
            while self._runs_in:
                self._runs_in -= 1
                _count_reader_run(-1)

    def predict(self, arg: Any) -> Any:
        return self.predict_all([arg])[0]

    def _check_can_predict(self) -> None:
        if not self.options.classes and self.options.output_type != "spatial":
            raise ValueError(
                "a summary model has no labels to apply: use dataset.compute_embeddings(model, ...) for "
                "embeddings, load the model with classes=[...] for zero-shot classification, or with "
                "output_type='spatial' for heatmaps via apply_model")

    def predict_all(self, args: Sequence[Any]) -> list[Any]:
        self._check_can_predict()
        if self.options.classes:
            return self._classify(args)
        results = self._image_results(args, "HEATMAP")
        labels: list[Any] = []
        for r in results:
            if not r.ok:
                labels.append(None)
            elif self.options.heatmap_mode == "pca3":
                labels.append(np.asarray(r.array))
            else:
                # Values 1..255 in a [0, 255] range: the App paints no pixel whose value is 0, so the
                # sidecar never sends one; and with range (0, 255) FiftyOne writes a uint8 map to PNG as
                # is (output_dir), where [1, 255] would be stretched back to 0..255.
                labels.append(fol.Heatmap(map=np.array(r.array, dtype=np.uint8), range=[0, 255]))
        return labels

    def embed(self, arg: Any) -> np.ndarray | None:
        return self.embed_all([arg])[0]

    def embed_all(self, args: Sequence[Any]) -> list[np.ndarray | None]:
        if self.options.output_type == "summary":
            kind = "SUMMARY"
        else:
            kind = "FEATURES_NCHW" if self.options.feature_format == "NCHW" else "FEATURES_NLC"
        return [np.array(r.array, dtype=np.float32) if r.ok else None for r in self._image_results(args, kind)]

    def get_embeddings(self) -> None:
        raise NotImplementedError("use embed() / embed_all()")

    # -- text -------------------------------------------------------------------------------------

    def embed_prompt(self, arg: str) -> np.ndarray:
        return self.embed_prompts([arg])[0]

    def embed_prompts(self, args: Sequence[str]) -> np.ndarray:
        """L2-normalised text embeddings [n, D] in the text-aligned space (``embedding_space="text"``),
        comparable with this model's ``compute_embeddings`` vectors by cosine similarity."""
        out = self._embed_text(list(args))
        bad = [r for r in out.results if not r.ok]
        if bad:
            raise ValueError(f"{len(bad)} of {len(args)} prompts could not be embedded; first: {bad[0].error}")
        return _stack([r.embedding for r in out.results]) if out.results else np.zeros((0, 0), np.float32)

    def _embed_text(self, prompts: list[Any]) -> TextEmbeddings:
        if not self.can_embed_prompts:
            raise ValueError(f"this model embeds images in the {self.options.space!r} space, which text can't be "
                             "compared with: load it with embedding_space='text' to embed prompts")
        return self._call(lambda client: client.embed_text(prompts, graph=self.graph_name))

    def _class_matrix(self) -> tuple[np.ndarray, float, float]:
        with self._zero_shot_lock:
            if self._zero_shot is None:
                self._zero_shot = self._build_class_matrix()
            return self._zero_shot

    def _build_class_matrix(self) -> tuple[np.ndarray, float, float]:
        options = self.options
        per_class = class_prompts(list(options.classes), options.text_prompt, options.templates)
        flat = [p for ps in per_class for p in ps]
        text = self._embed_text(flat)
        bad = [r for r in text.results if not r.ok]
        if bad:
            raise ValueError(f"zero-shot: {len(bad)} class prompts could not be embedded; first: {bad[0].error}")
        rows, at = [], 0
        for ps in per_class:
            rows.append(_stack([r.embedding for r in text.results[at:at + len(ps)]]))
            at += len(ps)
        return class_embeddings(rows), text.logit_scale, text.logit_bias

    def _classify(self, args: Sequence[Any]) -> list[Any]:
        matrix, scale, bias = self._class_matrix()
        results = self._image_results(args, "SUMMARY")
        ok = [i for i, r in enumerate(results) if r.ok]
        labels: list[Any] = [None] * len(results)
        if not ok:
            return labels
        logits, probs = zero_shot_scores(_stack([results[i].array for i in ok]), matrix, scale, bias,
                                         self.options.zero_shot_scores)
        classes = self.options.classes
        for row, i in enumerate(ok):
            k = int(np.argmax(probs[row]))
            label = fol.Classification(label=classes[k], confidence=float(probs[row, k]))
            if self.store_logits:
                label.logits = logits[row]
            labels[i] = label
        return labels

    # -- transport --------------------------------------------------------------------------------

    def _inputs(self, args: Sequence[Any]) -> list[dict[str, Any]]:
        inputs: list[dict[str, Any]] = []
        for i, arg in enumerate(args):
            if isinstance(arg, (str, Path)):
                path = str(arg)
                if self._sidecar is not None:
                    inputs.append({"id": path, "path": path})
                else:
                    try:
                        with open(path, "rb") as f:  # a remote sidecar can't read our files: send bytes
                            inputs.append({"id": path, "encoded": f.read()})
                    except OSError as err:  # fails alone, worded as the local sidecar words it
                        inputs.append({"id": path, "unreadable": _unreadable(path, err)})
            elif isinstance(arg, (bytes, bytearray)):
                inputs.append({"id": f"image {i}", "encoded": bytes(arg)})
            else:
                inputs.append({"id": f"image {i}", "raw": _to_hwc(arg)})
        return inputs

    def _image_results(self, args: Sequence[Any], kind: str) -> list[ImageResult]:
        settings = self.options
        heatmap = {}
        if kind == "HEATMAP":
            heatmap = {"smoothing": settings.apply_smoothing, "sigma": settings.smoothing_sigma, "max_side": settings.heatmap_max_side,
                       "mode": "PCA3_RGB" if settings.heatmap_mode == "pca3" else "PCA1"}
        options = EmbedOptions(output=kind, resolution=settings.resolution, graph=self.graph_name, heatmap=heatmap, space=settings.adaptor)
        inputs = self._inputs(args)
        unread = {i: ImageResult(index=i, id=x["id"], error_code=x["unreadable"][0], error=x["unreadable"][1])
                  for i, x in enumerate(inputs) if "unreadable" in x}
        sent = iter(self._embed([x for x in inputs if "unreadable" not in x], options))
        results = [unread[i] if i in unread else next(sent) for i in range(len(inputs))]
        # What the sidecar can't decode (UNSUPPORTED_FORMAT only), Pillow decodes: one more call.
        results = retry_unsupported(inputs, results, lambda raw: self._embed(raw, options))
        for r in results:
            if not r.ok:
                self.failures.append((r.id, r.error_code or "", r.error or ""))
                logger.warning("C-RADIOv4: %s failed (%s): %s", r.id, r.error_code, r.error)
        bad = [r for r in results if not r.ok]
        if bad and _fiftyone_wants_it_raised():
            raise ValueError(f"C-RADIOv4: {len(bad)} of {len(results)} images failed: "
                             + "; ".join(r.error or r.id for r in bad)
                             + (". compute_embeddings without embeddings_field can give None only for a whole batch: "
                                "pass embeddings_field=... to keep the others" if len(results) > 1 else ""))
        return results

    def _embed(self, inputs: list[dict[str, Any]], options: EmbedOptions) -> list[ImageResult]:
        return self._call(lambda client: client.embed(inputs, options))

    def _call(self, fn: Callable[[RadioClient], T]) -> T:
        client = self._client_now()
        try:
            return fn(client)
        except SidecarUnavailable:
            if self._sidecar is None:
                raise
            # The local sidecar died (crash, OOM, killed): restart it once (unless a call of another thread
            # already has) and run the call again.
            return fn(live_client(self._sidecar, failed=client))

    def _client_now(self) -> RadioClient:
        if self._sidecar is not None:
            return live_client(self._sidecar)
        self._check_open()
        assert self._client is not None
        return self._client

    def _check_open(self) -> None:
        if self._sidecar is None and self._client is None:
            raise RuntimeError(f"this {self.model_name} model was closed (model.close()): load a new one, e.g. "
                               "foz.load_zoo_model(..., cache=False) (FiftyOne's model cache hands this closed one back "
                               "while it is referenced)")

    def info(self) -> Any:
        return self._client_now().info()

    def check_served(self) -> None:
        """One Info call, at load_model: the sidecar answers (and takes our token), serves this model
        in the embedding space asked for, and takes ``image_size``. Raises with what to fix; a remote
        model also learns which served graph to name in its calls."""
        client = self._client_now()
        where = ", ".join(client.addresses) if self._client is not None else "the local sidecar"
        info = client.info()
        served = select_graph(self.model_name, self.options, info, where, graph_name=self.graph_name or None)
        check_image_size(self.options, served)
        self.graph_name, self.served = served.name, served
        if self._client is not None:  # remote: what the server chose (a local model knows it from load_model)
            self._provider = info.provider or None
            self.precision = served.precision or None
            self.provider_notes = tuple(info.provider_not_taken)

    # -- lifetime ---------------------------------------------------------------------------------

    def close(self) -> None:
        """Releases the sidecar (a private one stops once no model of this process uses it; a shared one
        loses this process's lease and exits after its idle timeout once no process uses it) and puts
        FiftyOne's image reader back if this model still has it swapped."""
        self._restore_image_reader()
        if self._sidecar is not None:
            sc, self._sidecar = self._sidecar, None
            registry.release(sc)
        elif self._client is not None:
            self._client.close()
            self._client = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


def _fiftyone_wants_it_raised() -> bool:
    """Whether this call comes from a FiftyOne loop (apply_model, compute_embeddings) that needs a failed
    image raised, not None: one run with skip_failures=False (it must raise), or compute_embeddings without
    an embeddings_field (it np.stacks every embedding it got unless an image raised, so a None would fail
    the whole run at its end). FiftyOne records None for what is raised when skip_failures=True. FiftyOne
    has no hook for this; its loop's locals tell."""
    frame: FrameType | None = sys._getframe(1)
    while frame is not None:
        if frame.f_globals.get("__name__") == "fiftyone.core.models" and "skip_failures" in frame.f_code.co_varnames:
            local = frame.f_locals
            return local.get("skip_failures") is False or (
                "embeddings_field" in frame.f_code.co_varnames and local.get("embeddings_field") is None)
        frame = frame.f_back
    return False


def _stack(arrays: Sequence[np.ndarray | None]) -> np.ndarray:
    """Stacks the arrays of results already checked ok (every one has its array)."""
    present = [a for a in arrays if a is not None]
    assert len(present) == len(arrays), "a result checked ok has no array"
    return np.stack(present)


def _unreadable(path: str, err: OSError) -> tuple[str, str]:
    """(error code, message) for a file that can't be read to send it, as the sidecar words its own."""
    if isinstance(err, IsADirectoryError):
        code, reason = "NOT_A_FILE", f"path is a directory, not a file: {path}"
    elif isinstance(err, (FileNotFoundError, NotADirectoryError)):
        code, reason = "NOT_FOUND", f"file not found: {path}"
    else:
        code, reason = "NOT_FOUND", f"cannot read {path} ({err.strerror or type(err).__name__})"
    return code, f"input {json.dumps(path)}: {reason} [{code}]"


def _to_hwc(arg: Any) -> np.ndarray:
    """numpy (HxW, HxWxC) / PIL / torch CHW tensors → an HxWxC uint8 or float32 array."""
    if hasattr(arg, "mode") and hasattr(arg, "size") and hasattr(arg, "convert"):  # PIL: as a file of it would be
        return pixels(arg)  # alpha kept (the sidecar flattens it onto white), 16-bit scaled, EXIF orientation applied
    if type(arg).__module__.startswith("torch"):
        arr = arg.detach().cpu().numpy()
        return np.moveaxis(arr, 0, -1) if arr.ndim == 3 and arr.shape[0] in (1, 3, 4) else arr
    arr = np.asarray(arg)
    if arr.dtype != np.uint8:
        arr = arr.astype(np.float32)
    return arr


def make_local_model(model_name: str, options: RadioOptions, graphs: dict[str, Path], graph_name: str,
                     provider: str, *, precision: str | None = None, provider_notes: Sequence[str] = (),
                     env: dict[str, str] | None = None) -> RadioModel:
    """A model on a local sidecar started with this explicit provider (the choice is made before, in
    load_model, so the sidecar never chooses differently from the graph compiled for it) and the
    environment the probe had (``env``: providers.device_env's)."""
    spec = SidecarSpec(graphs=tuple(sorted((k, str(v)) for k, v in graphs.items())), provider=provider,
                       workers=options.workers, threads=options.threads, shared=options.shared,
                       idle_timeout_s=options.idle_timeout_s, env=tuple(sorted((env or {}).items())))
    model = RadioModel(model_name, options, sidecar=registry.acquire(spec), graph_name=graph_name, provider=provider,
                       precision=precision, provider_notes=provider_notes)
    return _checked(model)


def make_remote_model(model_name: str, options: RadioOptions) -> RadioModel:
    """A model on remote sidecars; fails here, not at the first batch, when they cannot be reached, want
    another token, or do not serve this model, its embedding space or its image_size."""
    client = RadioClient(options.servers, token=options.token)
    return _checked(RadioModel(model_name, options, client=client, graph_name=""))


def _checked(model: RadioModel) -> RadioModel:
    try:
        check_image_reader_hook()
        model.check_served()
    except BaseException:
        model.close()
        raise
    return model
