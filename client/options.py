"""The zoo model's options: defaults, validation with errors that list the valid values, and the
sidecar settings they imply."""
from __future__ import annotations

import re
from dataclasses import dataclass, fields
from typing import Any, Sequence

MODELS = {
    "nv_labs/c-radio_v4-h": {"checkpoint": "c-radio_v4-h", "summary_dim": 2560},
    "nv_labs/c-radio_v4-so400m": {"checkpoint": "c-radio_v4-so400m", "summary_dim": 2304},
}


@dataclass(frozen=True)
class RadioOptions:
    output_type: str = "summary"            # summary | spatial
    feature_format: str = "NCHW"            # NCHW | NLC (dense features from compute_embeddings)
    use_mixed_precision: bool | None = None  # None: fp16 graph on a GPU provider, fp32 on CPU (True on CPU: fp32, warned)
    quantize: bool = False                  # int8 linear layers (CPU only): faster, approximate
    use_external_preprocessor: bool = False
    apply_smoothing: bool = True
    smoothing_sigma: float = 1.51
    heatmap_mode: str = "pca1"              # pca1 (fo.Heatmap) | pca3 (RGB array)
    heatmap_max_side: int = 512
    image_size: Any = None                  # None/"default" | "native" | int (max side) | (h, w) | "HxW"
    vitdet_window_size: int | None = None
    server: Any = None                      # None: local sidecar; "host:port" | "unix:/path" | list of them
    device: str | None = None               # None/"auto" | "cpu" | "cuda" | "cuda:N" | "webgpu"
    revision: str | None = None             # Hugging Face revision to download
    token: str | None = None                # bearer token for a remote sidecar
    workers: int | None = None
    threads: int | None = None

    @property
    def resolution(self) -> str:
        s = self.image_size
        if s is None or s == "default":
            return "default"
        if s == "native":
            return "native"
        if isinstance(s, int):
            return f"max:{s}"
        if isinstance(s, (tuple, list)):
            return f"{int(s[0])}x{int(s[1])}"
        return str(s)

    @property
    def remote(self) -> bool:
        return self.server is not None

    @property
    def servers(self) -> list[str]:
        if self.server is None:
            return []
        return [self.server] if isinstance(self.server, str) else list(self.server)


def _choice(name: str, value: Any, valid: Sequence[Any]) -> None:
    if value not in valid:
        raise ValueError(f"{name}={value!r} is not valid; use one of {', '.join(repr(v) for v in valid)}")


def parse_options(model_name: str, kwargs: dict[str, Any]) -> RadioOptions:
    if model_name not in MODELS:
        raise ValueError(f"unknown model {model_name!r}; this source has {', '.join(MODELS)}")
    known = {f.name for f in fields(RadioOptions)}
    unknown = sorted(set(kwargs) - known)
    if unknown:
        raise ValueError(f"unknown option(s) {', '.join(unknown)} for {model_name}; valid options: {', '.join(sorted(known))}")
    o = RadioOptions(**kwargs)
    _choice("output_type", o.output_type, ["summary", "spatial"])
    _choice("feature_format", o.feature_format, ["NCHW", "NLC"])
    _choice("heatmap_mode", o.heatmap_mode, ["pca1", "pca3"])
    _choice("use_mixed_precision", o.use_mixed_precision, [None, True, False])
    _choice("use_external_preprocessor", o.use_external_preprocessor, [True, False])
    _choice("quantize", o.quantize, [True, False])
    if o.quantize and (o.use_mixed_precision or (o.device or "").startswith(("cuda", "webgpu"))):
        raise ValueError("quantize=True makes an int8 graph for the CPU; it can't be combined with "
                         f"use_mixed_precision={o.use_mixed_precision!r} / device={o.device!r} (use fp16 on a GPU)")
    _choice("apply_smoothing", o.apply_smoothing, [True, False])
    if not isinstance(o.smoothing_sigma, (int, float)) or isinstance(o.smoothing_sigma, bool) or not o.smoothing_sigma > 0:
        raise ValueError(f"smoothing_sigma={o.smoothing_sigma!r} is not valid; use a positive number of feature-grid cells (default 1.51)")
    if not isinstance(o.heatmap_max_side, int) or o.heatmap_max_side < 1:
        raise ValueError(f"heatmap_max_side={o.heatmap_max_side!r} is not valid; use a positive integer (default 512)")
    s = o.image_size
    ok = (s is None or s in ("default", "native")
          or (isinstance(s, int) and not isinstance(s, bool) and s >= 16)
          or (isinstance(s, (tuple, list)) and len(s) == 2 and all(isinstance(v, int) and v >= 16 for v in s))
          or (isinstance(s, str) and re.fullmatch(r"\d+x\d+|max:\d+", s) is not None))
    if not ok:
        raise ValueError(f"image_size={s!r} is not valid; use None/'default' (aspect-bucketed, near 512x512), "
                         "'native' (nearest supported size of the image), an int N (longest side <= N), "
                         "or (height, width) / 'HxW' in multiples of 16")
    w = o.vitdet_window_size
    if w is not None and (not isinstance(w, int) or isinstance(w, bool) or w < 1):
        raise ValueError(f"vitdet_window_size={w!r} is not valid; use None or a positive integer (window side in patches)")
    if o.server is not None and not (isinstance(o.server, str) or (isinstance(o.server, (list, tuple)) and o.server and all(isinstance(x, str) for x in o.server))):
        raise ValueError(f"server={o.server!r} is not valid; use 'host:port', 'unix:/path/to.sock', or a list of them")
    d = o.device
    if d is not None and not (d in ("auto", "cpu", "cuda", "webgpu") or (isinstance(d, str) and re.fullmatch(r"cuda:\d+", d))):
        raise ValueError(f"device={d!r} is not valid; use None/'auto', 'cpu', 'cuda', 'cuda:N' or 'webgpu'")
    for name in ("workers", "threads"):
        v = getattr(o, name)
        if v is not None and (not isinstance(v, int) or v < 1):
            raise ValueError(f"{name}={v!r} is not valid; use None or a positive integer")
    return o
