"""Options checked against what a sidecar serves (its Info), once, at load_model: which served graph
the zoo model uses, whether it has the embedding space asked for, and whether `image_size` is a
size it takes (server/src/preprocess/resolution.ts has the same rules). Each error lists the valid
choices, so a bad option fails at load_model and not at the first batch."""
from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from .options import EMBEDDING_SPACES, MODELS, RadioOptions


def _describe(graph: Any) -> str:
    spaces = ["backbone", *[s for s, a in EMBEDDING_SPACES.items()
                            if a and a in {x.name for x in graph.adaptors} and (s != "text" or graph.HasField("text"))]]
    window = f", ViTDet window {graph.window_size}" if graph.window_size else ""
    return f"{graph.name!r} ({graph.variant}, {graph.precision}{window}; spaces: {', '.join(spaces)})"


def _zoo_name(variant: str) -> str | None:
    return next((name for name, spec in MODELS.items() if spec["checkpoint"] == variant), None)


def same_revision(asked: str, have: str) -> bool:
    """Whether `revision=` names the commit a graph was compiled from: the full sha, or a prefix of
    7+ characters (git's short form)."""
    return asked == have or (len(asked) >= 7 and have.startswith(asked))


def select_graph(model_name: str, options: RadioOptions, info: Any, where: str,
                 graph_name: str | None = None) -> Any:
    """The GraphInfo this zoo model runs on. Local: the graph compiled for it (`graph_name`). Remote:
    a served graph of the same variant with the embedding space (and ViTDet window, and the commit
    `revision=` names) asked for, the server's default graph first. Raises ValueError listing what the
    server serves."""
    graphs: Sequence[Any] = list(info.graphs)
    served = "; ".join(_describe(g) for g in graphs) or "nothing"
    if graph_name:
        chosen = next((g for g in graphs if g.name == graph_name), None)
        if chosen is None:
            raise ValueError(f"the sidecar at {where} does not serve the graph {graph_name!r}; it serves {served}")
        candidates = [chosen]
    else:
        want = MODELS[model_name]["checkpoint"]
        candidates = [g for g in graphs if g.variant == want]
        if not candidates:
            others = sorted({z for z in (_zoo_name(g.variant) for g in graphs) if z})
            hint = f"load {' or '.join(repr(z) for z in others)} instead, or " if others else ""
            raise ValueError(f"the sidecar at {where} does not serve {model_name} ({want}); it serves {served}. "
                             f"{hint}point server= at a sidecar serving {want}")
    space, adaptor = options.space, options.adaptor
    if adaptor:
        fit = [g for g in candidates if adaptor in {a.name for a in g.adaptors} and (space != "text" or g.HasField("text"))]
        if not fit:
            need = f"the {adaptor} adaptor" + (" and its text tower" if space == "text" else "")
            raise ValueError(f"embedding_space={space!r} needs {need}, which the sidecar at {where} does not serve for "
                             f"{model_name}: it serves {served}. Use one of the spaces listed, or serve a graph compiled "
                             f"with --adaptors {adaptor}" + (" --text" if space == "text" else ""))
        candidates = fit
    w = options.vitdet_window_size
    if w and not graph_name:
        fit = [g for g in candidates if g.window_size == w]
        if not fit:
            raise ValueError(f"vitdet_window_size={w}: the sidecar at {where} serves {model_name} with no ViTDet window "
                             f"of {w} patches; it serves {served}. Leave vitdet_window_size unset or use a window listed")
        candidates = fit
    elif not graph_name:
        candidates = sorted(candidates, key=lambda g: g.window_size != 0)  # global attention first
    if options.revision and not graph_name:  # (local graphs are checked against their set-up's revision)
        fit = [g for g in candidates if same_revision(options.revision, g.source_revision)]
        if not fit:
            have = ", ".join(sorted({f"{g.name!r} from {g.source_repo or '(a local folder)'} at "
                                     f"{g.source_revision or '(unknown commit)'}" for g in candidates}))
            raise ValueError(f"revision={options.revision!r}: the sidecar at {where} serves {model_name} compiled from "
                             f"other commits: {have}. Serve a graph compiled with --revision {options.revision}, or "
                             "leave revision unset")
        candidates = fit
    return next((g for g in candidates if g.name == info.default_graph), candidates[0])


def resolution_step(graph: Any) -> int:
    return int(graph.resolution_step or graph.patch_size * (graph.window_size or 1))


def _nearest(v: int, step: int, top: int) -> int:
    return min(top, max(step, round(v / step) * step))


def check_image_size(options: RadioOptions, graph: Any) -> None:
    """Raises ValueError when `image_size` is not a size the served `graph` takes: a fixed size must
    be multiples of its resolution step (patch size × ViTDet window) up to its maximum; a maximum
    side must be at least one step."""
    step, top_res = resolution_step(graph), int(graph.max_resolution)
    top = max(step, top_res // step * step)
    what = f"{graph.variant} as served ({graph.name!r}: patch {graph.patch_size}" + (
        f", ViTDet window {graph.window_size} → steps of {step}" if graph.window_size else "") + f", at most {top_res})"
    res = options.resolution
    if res in ("default", "native"):
        return
    mx = re.fullmatch(r"max:(\d+)", res)
    if mx:
        n = int(mx.group(1))
        if n < step:
            raise ValueError(f"image_size={options.image_size!r}: a longest side of {n} is below the resolution step of "
                             f"{what}; use an int from {step} (sides above {top} are capped at {top}), "
                             f"'native', 'default' or (height, width) in multiples of {step}")
        return
    fx = re.fullmatch(r"(\d+)x(\d+)", res)
    if fx:
        h, w = int(fx.group(1)), int(fx.group(2))
        if h % step or w % step or not (step <= h <= top_res) or not (step <= w <= top_res):
            near = (_nearest(h, step, top), _nearest(w, step, top))
            raise ValueError(f"image_size={options.image_size!r} is not a size {what} takes: height and width must be "
                             f"multiples of {step} from {step} to {top}; the nearest is {near}. Or use an int N "
                             "(longest side <= N), 'native' or 'default'")
