"""The zoo model's options: defaults, validation with errors that list the valid values, and the
sidecar settings they imply."""
from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

#: A shared sidecar's idle timeout when neither idle_timeout_s nor RADIO_SHARED_IDLE_S sets one (client/shared.py).
DEFAULT_IDLE_S = 300

# The defaults the sidecar shares (heatmap smoothing and size, pixel and message limits): one home,
# read by both languages.
_ROOT = Path(__file__).resolve().parent.parent
SHARED_DEFAULTS = json.loads((_ROOT / "proto" / "radio" / "v1" / "defaults.json").read_text())

# What `embedding_space` names, and the adaptor head of the checkpoint that gives it ("" = the backbone).
EMBEDDING_SPACES = {
    "backbone": "",          # RADIO's own summary / dense features (default)
    "text": "siglip2-g",     # SigLIP2-g's image space: comparable with text prompts (zero-shot, text search)
    "dinov3": "dino_v3_7b",  # DINOv3-7B-like embeddings, from the same forward pass
}

# The zoo models of manifest.json, each with its checkpoint's short name (the name without nv_labs/),
# which the sidecar's catalogue (server/src/checkpoint/catalogue.ts) resolves to a Hugging Face repo.
_MANIFEST = json.loads((_ROOT / "manifest.json").read_text())
MODELS = {m["base_name"]: {"checkpoint": m["base_name"].split("/", 1)[1]} for m in _MANIFEST["models"]}


@dataclass(frozen=True)
class RadioOptions:
    output_type: str = "summary"            # summary | spatial
    feature_format: str = "NCHW"            # NCHW | NLC (dense features from compute_embeddings)
    use_mixed_precision: bool | None = None  # None: the provider's precision (providers.graph_precision): fp16 on
                                            # cuda and on webgpu with shader-f16, else fp32 (True on CPU: fp32, warned)
    quantize: bool = False                  # int8 linear layers (CPU only): faster, approximate
    use_external_preprocessor: bool = False  # accepted (the seed README shows it), no effect: the graph normalises
    apply_smoothing: bool = True
    smoothing_sigma: float = SHARED_DEFAULTS["heatmap"]["smoothing_sigma"]
    heatmap_mode: str = "pca1"              # pca1 (fo.Heatmap) | pca3 (RGB array)
    heatmap_max_side: int = SHARED_DEFAULTS["heatmap"]["max_side"]
    image_size: Any = None                  # None/"default" | "native" | int (max side) | (h, w) | "HxW"
    vitdet_window_size: int | None = None
    server: Any = None                      # None: local sidecar; "host:port" | "unix:/path" | "dns:///name:port" |
                                            # "ipv4:a:p,b:p" | "ipv6:[a]:p,..." (round_robin) | list of host:port (old way)
    device: str | None = None               # None/"auto" | "cpu" | "cuda" | "cuda:N" | "webgpu"
    revision: str | None = None             # the commit the graphs must come from: checked, never downloaded (set-up
                                            # uses RADIO_HF_REVISION, else the default); with server=, picks the graph
    token: str | None = None                # bearer token for a remote sidecar
    workers: int | None = None
    threads: int | None = None
    shared: bool = True                     # True: the host's shared local sidecar (started if none, outlives this
                                            # process, exits when idle); False: a private one tied to this process
    idle_timeout_s: int | None = None       # shared: seconds a sidecar this process starts waits with no client
                                            # before exiting (None: $RADIO_SHARED_IDLE_S or 300; 0: never)
    embedding_space: str | None = None      # None: "text" when classes are given, else "backbone"; see EMBEDDING_SPACES
    classes: Any = None                     # zero-shot apply_model: a list of class names (needs the text space)
    text_prompt: str | None = "A photo of a"  # each class becomes "<text_prompt> <class>" (FiftyOne's CLIP convention)
    prompt_templates: Any = None            # None | "openai" (80 ImageNet templates, averaged) | a list of "...{}..." strings
    zero_shot_scores: str = "softmax"       # softmax over exp(logit_scale)·cosine | sigmoid (SigLIP's, with logit_bias)

    @property
    def space(self) -> str:
        """The embedding space actually used ("backbone", "text", "dinov3")."""
        if self.embedding_space is not None:
            return self.embedding_space
        return "text" if self.classes else "backbone"

    @property
    def adaptor(self) -> str:
        """The adaptor whose outputs this model returns ("" = the backbone)."""
        return EMBEDDING_SPACES[self.space]

    @property
    def templates(self) -> tuple[str, ...] | None:
        from .prompts import TEMPLATE_SETS

        t = self.prompt_templates
        if t is None:
            return None
        return TEMPLATE_SETS[t] if isinstance(t, str) else tuple(t)

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


SERVER_FORMS = ("'host:port' (one sidecar; host a name, an IPv4 address or [IPv6]), "
                "'unix:/path/to.sock', "
                "'dns:///name:port' (every address the name resolves to, e.g. a Kubernetes headless Service, "
                "balanced round_robin), "
                "'ipv4:10.0.0.1:50051,10.0.0.2:50051' or 'ipv6:[fd00::1]:50051,[fd00::2]:50051' (fixed addresses, "
                "balanced round_robin), "
                "or a list of 'host:port' / 'unix:' addresses (the older way: one connection each, used in turn)")
_HOST = r"(?:[A-Za-z0-9](?:[A-Za-z0-9_-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9_-]*[A-Za-z0-9])?)*\.?)"
_IPV4 = r"(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_IPV6 = r"\[[0-9A-Fa-f:.]+(?:%[A-Za-z0-9_.-]+)?\]"
_PORT = r"(?P<port>\d{1,5})"


def _port_ok(m: re.Match[str] | None) -> bool:
    return m is not None and 0 < int(m.group("port")) < 65536


def _server_problem(s: str, in_list: bool) -> str | None:
    """Why one server string is not a valid address, or None."""
    if not s or s != s.strip():
        return "is empty or has spaces around it"
    low = s.lower()
    if low.startswith("unix:") or s.startswith("/"):
        path = s[5:] if low.startswith("unix:") else s
        return None if path.lstrip("/") else "names no socket path"
    if low.startswith(("dns:", "ipv4:", "ipv6:")):
        if in_list:
            return "is a resolver target (dns:/ipv4:/ipv6:), which already stands for many backends: give it alone, not in a list"
        scheme, rest = low.split(":", 1)[0], s.split(":", 1)[1]
        if scheme == "dns":
            name = re.sub(r"^//[^/]*/", "", rest)  # dns://[authority]/name:port or dns:name:port
            m = re.fullmatch(rf"(?:{_HOST}|{_IPV4}|{_IPV6}):{_PORT}", name)
            return None if _port_ok(m) else "is not 'dns:///name:port' (a port is required)"
        parts = rest.split(",")
        addr = _IPV4 if scheme == "ipv4" else _IPV6
        for part in parts:
            if not _port_ok(re.fullmatch(rf"{addr}:{_PORT}", part)):
                want = "a.b.c.d:port" if scheme == "ipv4" else "[v6-address]:port"
                return f"has {part!r}, which is not {want}"
        return None
    if "://" in s:
        return f"has the scheme {s.split('://')[0]!r}; the resolver schemes are dns:, ipv4:, ipv6: (and unix: for sockets)"
    if not _port_ok(re.fullmatch(rf"(?:{_HOST}|{_IPV4}|{_IPV6}):{_PORT}", s)):
        return "is not host:port (a port 1-65535 is required)"
    return None


def validate_server(server: Any) -> None:
    """Raises ValueError naming the bad address and every valid form."""
    if isinstance(server, str):
        problem = _server_problem(server, in_list=False)
        if problem:
            raise ValueError(f"server={server!r} is not valid: it {problem}. Use {SERVER_FORMS}")
        return
    if isinstance(server, (list, tuple)) and server and all(isinstance(x, str) for x in server):
        for x in server:
            problem = _server_problem(x, in_list=True)
            if problem:
                raise ValueError(f"server={list(server)!r} is not valid: {x!r} {problem}. Use {SERVER_FORMS}")
        return
    raise ValueError(f"server={server!r} is not valid. Use {SERVER_FORMS}")


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
    options = RadioOptions(**kwargs)
    _choice("output_type", options.output_type, ["summary", "spatial"])
    _choice("feature_format", options.feature_format, ["NCHW", "NLC"])
    _choice("heatmap_mode", options.heatmap_mode, ["pca1", "pca3"])
    _choice("use_mixed_precision", options.use_mixed_precision, [None, True, False])
    _choice("use_external_preprocessor", options.use_external_preprocessor, [True, False])
    _choice("quantize", options.quantize, [True, False])
    if options.quantize and (options.use_mixed_precision or (options.device or "").startswith(("cuda", "webgpu"))):
        raise ValueError("quantize=True makes an int8 graph for the CPU; it can't be combined with "
                         f"use_mixed_precision={options.use_mixed_precision!r} / device={options.device!r} (use fp16 on a GPU)")
    _choice("apply_smoothing", options.apply_smoothing, [True, False])
    top = SHARED_DEFAULTS["heatmap"]["max_smoothing_sigma"]
    sigma = options.smoothing_sigma
    if not isinstance(sigma, (int, float)) or isinstance(sigma, bool) or not 0 < sigma <= top:
        raise ValueError(f"smoothing_sigma={sigma!r} is not valid; use a positive number of feature-grid cells up to "
                         f"{top} (default {RadioOptions.smoothing_sigma})")
    if not isinstance(options.heatmap_max_side, int) or isinstance(options.heatmap_max_side, bool) or options.heatmap_max_side < 1:
        raise ValueError(f"heatmap_max_side={options.heatmap_max_side!r} is not valid; use a positive integer "
                         f"(default {RadioOptions.heatmap_max_side})")
    s = options.image_size
    ok = (s is None or s in ("default", "native")
          or (isinstance(s, int) and not isinstance(s, bool) and s >= 16)
          or (isinstance(s, (tuple, list)) and len(s) == 2 and all(isinstance(v, int) and v >= 16 for v in s))
          or (isinstance(s, str) and re.fullmatch(r"\d+x\d+|max:\d+", s) is not None))
    if not ok:
        raise ValueError(f"image_size={s!r} is not valid; use None/'default' (aspect-bucketed, near 512x512), "
                         "'native' (nearest supported size of the image), an int N (longest side <= N), "
                         "or (height, width) / 'HxW' in multiples of 16")
    w = options.vitdet_window_size
    if w is not None and (not isinstance(w, int) or isinstance(w, bool) or w < 1):
        raise ValueError(f"vitdet_window_size={w!r} is not valid; use None or a positive integer (window side in patches)")
    if options.server is not None:
        validate_server(options.server)
    d = options.device
    if d is not None and not (d in ("auto", "cpu", "cuda", "webgpu") or (isinstance(d, str) and re.fullmatch(r"cuda:\d+", d))):
        raise ValueError(f"device={d!r} is not valid; use None/'auto', 'cpu', 'cuda', 'cuda:N' or 'webgpu'")
    _choice("embedding_space", options.embedding_space, [None, *EMBEDDING_SPACES])
    if options.classes is not None:
        if isinstance(options.classes, str) or not isinstance(options.classes, (list, tuple)) or not options.classes:
            raise ValueError(f"classes={options.classes!r} is not valid; use a non-empty list of class names")
        bad = [c for c in options.classes if not isinstance(c, str) or not c.strip()]
        if bad:
            raise ValueError(f"classes: {bad[0]!r} is not a class name (each class must be a non-empty string)")
        dupes = sorted(c for c, n in Counter(options.classes).items() if n > 1)
        if dupes:
            raise ValueError(f"classes: {dupes[0]!r} appears more than once; each class must be listed once")
        if options.space != "text":
            raise ValueError(f"classes= needs the text-aligned space, but embedding_space={options.embedding_space!r}; "
                             "leave embedding_space unset or use 'text'")
        if options.output_type != "summary":
            raise ValueError("classes= (zero-shot classification) needs output_type='summary'")
    if options.text_prompt is not None and not isinstance(options.text_prompt, str):
        raise ValueError(f"text_prompt={options.text_prompt!r} is not valid; use a string such as 'A photo of a', or None")
    t = options.prompt_templates
    if t is not None and not (t == "openai" or (isinstance(t, (list, tuple)) and t and all(isinstance(x, str) and "{}" in x for x in t))):
        raise ValueError(f"prompt_templates={t!r} is not valid; use None, 'openai' (the 80 ImageNet templates), "
                         "or a list of strings each holding '{}' where the class name goes")
    _choice("zero_shot_scores", options.zero_shot_scores, ["softmax", "sigmoid"])
    _choice("shared", options.shared, [True, False])
    v = options.idle_timeout_s
    if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 0):
        raise ValueError(f"idle_timeout_s={v!r} is not valid; use None (default {DEFAULT_IDLE_S} s) or seconds >= 0 "
                         "(0 = never)")
    for name in ("workers", "threads"):
        v = getattr(options, name)
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
            raise ValueError(f"{name}={v!r} is not valid; use None or a positive integer")
    return options
