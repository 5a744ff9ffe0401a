# SPDX-License-Identifier: Apache-2.0
"""Independent reference forward pass for C-RADIOv4 (test-only oracle).

Written from the architecture facts (see docs / shared cradio-v4-facts.md), with upstream read
only to settle details. Every op is explicit so the TypeScript ONNX compiler can be checked
against it op by op. Computes in float64 by default so the result is a clean truth.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file

PREFIX = "radio_model."
PG = PREFIX + "model.patch_generator."
BLOCKS = PREFIX + "model.blocks."

# Head counts of the named timm architectures (heads can't be read from tensor shapes).
ARCH_DEFAULT_HEADS: dict[str, int] = {
    "vit_base_patch16_224": 12,
    "vit_large_patch16_224": 16,
    "vit_huge_patch16_224": 16,
    "vit_so400m_patch16_224": 16,
    "vit_giant_patch16_224": 24,
}

DEFAULT_LN_EPS = 1e-6  # timm ViT uses LayerNorm(eps=1e-6) everywhere

BLOCK_PARAM_NAMES = (
    "norm1.weight", "norm1.bias",
    "attn.qkv.weight", "attn.qkv.bias",
    "attn.proj.weight", "attn.proj.bias",
    "norm2.weight", "norm2.bias",
    "mlp.fc1.weight", "mlp.fc1.bias",
    "mlp.fc2.weight", "mlp.fc2.bias",
)


# ----------------------------------------------------------------------------------------------
# Comparison helpers (reused by other tests)
# ----------------------------------------------------------------------------------------------

def compare(a: torch.Tensor, b: torch.Tensor) -> dict[str, float]:
    """Cosine similarity, relative L2 error (|a-b| / |b|, b = truth) and max |a-b|, in float64."""
    if tuple(a.shape) != tuple(b.shape):
        raise ValueError(f"shape mismatch: {tuple(a.shape)} vs {tuple(b.shape)}")
    a64 = a.detach().to(torch.float64).flatten()
    b64 = b.detach().to(torch.float64).flatten()
    diff = a64 - b64
    return {
        "cosine": float(torch.dot(a64, b64) / (a64.norm() * b64.norm())),
        "rel_l2": float(diff.norm() / b64.norm()),
        "max_abs": float(diff.abs().max()),
    }


def within_bounds(stats: dict[str, float], min_cosine: float = 0.99999,
                  max_rel_l2: float = 1e-5, max_abs: float = 1e-4) -> bool:
    return (stats["cosine"] >= min_cosine and stats["rel_l2"] <= max_rel_l2
            and stats["max_abs"] <= max_abs)


# ----------------------------------------------------------------------------------------------
# Elementary ops
# ----------------------------------------------------------------------------------------------

def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    y = x @ weight.T
    return y if bias is None else y + bias


def int8_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """The compiler's int8 scheme, written out: weights per output channel, symmetric, |q| <= 63 (7 bits);
    activations per token (row), symmetric, |q| <= 127; integer products summed exactly, then scaled."""
    w_amax = weight.abs().amax(dim=1)
    w_scale = torch.where(w_amax > 0, (w_amax / 63).to(torch.float32).to(weight.dtype), torch.ones_like(w_amax))
    w_q = torch.round(weight / w_scale[:, None])
    x_amax = x.abs().amax(dim=-1, keepdim=True)
    x_scale = torch.where(x_amax > 0, x_amax / 127, torch.ones_like(x_amax))
    x_q = torch.round(x / x_scale).clamp(-127, 127)
    y = (x_q.double() @ w_q.double().T).to(x.dtype) * w_scale * x_scale
    return y if bias is None else y + bias


def layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float) -> torch.Tensor:
    # Biased variance over the last axis, as nn.LayerNorm does.
    mean = x.mean(dim=-1, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * weight + bias


def gelu_erf(x: torch.Tensor) -> torch.Tensor:
    # Exact GELU (nn.GELU default), not the tanh approximation.
    return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))


def softmax(x: torch.Tensor) -> torch.Tensor:
    x = x - x.amax(dim=-1, keepdim=True)
    e = torch.exp(x)
    return e / e.sum(dim=-1, keepdim=True)


def bilinear_resize(grid: torch.Tensor, out_h: int, out_w: int) -> torch.Tensor:
    """Bilinear resize of [C, H, W], align_corners=False, no antialias (PyTorch/ONNX half-pixel).

    src = (dst + 0.5) * in / out - 0.5, clamped below at 0; the upper neighbour is clamped to
    the last index.
    """
    def axis(in_size: int, out_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # Source coordinates exactly as PyTorch computes them for the float32 grid upstream resizes:
        # scale = float32(in) / float32(out), src = fma(scale, dst + 0.5, -0.5) rounded once to
        # float32 (its CPU kernel contracts to a fused multiply-add). A float32 product times a
        # float32 is exact in float64, so float64 arithmetic then one rounding reproduces the FMA.
        # Plain float64 coordinates would put this ~3e-6 relative L2 away from upstream at 224².
        f32 = torch.float32
        scale = (torch.tensor(in_size, dtype=f32) / torch.tensor(out_size, dtype=f32)).double()
        dst = torch.arange(out_size, dtype=f32) + 0.5
        src = (scale * dst.double() - 0.5).to(f32).clamp(min=0.0)
        lo = src.floor().long().clamp(max=in_size - 1)
        hi = (lo + 1).clamp(max=in_size - 1)
        frac = (src - lo.to(f32)).clamp(0.0, 1.0).to(grid.dtype)
        return lo.to(grid.device), hi.to(grid.device), frac.to(grid.device)

    y0, y1, fy = axis(grid.shape[1], out_h)
    x0, x1, fx = axis(grid.shape[2], out_w)
    # Interpolate along y, then along x (bilinear is separable).
    rows = grid[:, y0, :] * (1 - fy)[None, :, None] + grid[:, y1, :] * fy[None, :, None]
    return rows[:, :, x0] * (1 - fx)[None, None, :] + rows[:, :, x1] * fx[None, None, :]


# ----------------------------------------------------------------------------------------------
# Model pieces
# ----------------------------------------------------------------------------------------------

def condition_input(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    return (x - mean.reshape(1, 3, 1, 1)) / std.reshape(1, 3, 1, 1)


def patchify(x: torch.Tensor, p: int) -> torch.Tensor:
    """[B, 3, H, W] -> [B, h*w, 3*p*p]; patches raster order, each flattened in (c, y, x) order."""
    b, c, hh, ww = x.shape
    h, w = hh // p, ww // p
    x = x.reshape(b, c, h, p, w, p)          # b c h yy w xx
    x = x.permute(0, 2, 4, 1, 3, 5)          # b h w c yy xx
    return x.reshape(b, h * w, c * p * p)


def position_embedding(pos_grid: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """CPE (eval mode): stored G x G grid [G*G, C] -> [h*w, C].

    Exact grid if (h, w) == (G, G); otherwise resize to a square m x m (m = max(h, w)) and
    take the top-left h x w crop (so non-square inputs keep the square's aspect).
    """
    g = math.isqrt(pos_grid.shape[0])
    c = pos_grid.shape[1]
    if (h, w) == (g, g):
        return pos_grid
    grid = pos_grid.reshape(g, g, c).permute(2, 0, 1)      # [C, G, G]
    m = max(h, w)
    grid = bilinear_resize(grid, m, m)[:, :h, :w]
    return grid.permute(1, 2, 0).reshape(h * w, c)


def attention(x: torch.Tensor, qkv_w: torch.Tensor, qkv_b: torch.Tensor,
              proj_w: torch.Tensor, proj_b: torch.Tensor, num_heads: int, lin=linear) -> torch.Tensor:
    """Multi-head self-attention on [N, T, C]. qkv rows are [q | k | v], heads contiguous."""
    n, t, c = x.shape
    hd = c // num_heads
    qkv = lin(x, qkv_w, qkv_b).reshape(n, t, 3, num_heads, hd).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]                       # [N, heads, T, hd]
    attn = softmax((q @ k.transpose(-2, -1)) * hd ** -0.5)
    out = (attn @ v).transpose(1, 2).reshape(n, t, c)
    return lin(out, proj_w, proj_b)


def mlp(x: torch.Tensor, fc1_w: torch.Tensor, fc1_b: torch.Tensor,
        fc2_w: torch.Tensor, fc2_b: torch.Tensor, lin=linear) -> torch.Tensor:
    return lin(gelu_erf(lin(x, fc1_w, fc1_b)), fc2_w, fc2_b)


def transformer_block(x: torch.Tensor, p: dict[str, torch.Tensor], num_heads: int,
                      eps: float, lin=linear) -> torch.Tensor:
    """Pre-LN block on [N, T, C]; no LayerScale, no drop path."""
    x = x + attention(layer_norm(x, p["norm1.weight"], p["norm1.bias"], eps),
                      p["attn.qkv.weight"], p["attn.qkv.bias"],
                      p["attn.proj.weight"], p["attn.proj.bias"], num_heads, lin)
    x = x + mlp(layer_norm(x, p["norm2.weight"], p["norm2.bias"], eps),
                p["mlp.fc1.weight"], p["mlp.fc1.bias"], p["mlp.fc2.weight"], p["mlp.fc2.bias"], lin)
    return x


def vitdet_windowed_blocks(depth: int) -> list[bool]:
    """Which blocks run windowed (upstream torch-hub apply_vitdet_arch, default 4 global).

    period = max(depth // 4, 1); for i < depth-1, i % period == 0 enters windows and
    i % period == period-1 returns to global before block i runs; the last block is global.
    """
    period = max(depth // 4, 1)
    if period == 1:
        raise ValueError(
            f"ViTDet needs depth >= 8 (period = max(depth // 4, 1) = 1 for depth {depth}); "
            "upstream would try to re-window every block and fail")
    windowed = []
    state = False
    for i in range(depth - 1):
        if i % period == 0:
            state = True
        elif i % period == period - 1:
            state = False
        windowed.append(state)
    windowed.append(False)
    return windowed


def to_windows(patches: torch.Tensor, h: int, w: int, win: int) -> torch.Tensor:
    """[B, h*w, C] raster -> [B * nWin, win*win, C]; windows row-major, patches row-major inside."""
    b, _, c = patches.shape
    x = patches.reshape(b, h // win, win, w // win, win, c)   # b wy py wx px c
    x = x.permute(0, 1, 3, 2, 4, 5)                            # b wy wx py px c
    return x.reshape(b * (h // win) * (w // win), win * win, c)


def from_windows(windows: torch.Tensor, b: int, h: int, w: int, win: int) -> torch.Tensor:
    """Inverse of to_windows: back to [B, h*w, C] raster order."""
    c = windows.shape[-1]
    x = windows.reshape(b, h // win, w // win, win, win, c)   # b wy wx py px c
    x = x.permute(0, 1, 3, 2, 4, 5)                            # b wy py wx px c
    return x.reshape(b, h * w, c)


# ----------------------------------------------------------------------------------------------
# Checkpoint + model
# ----------------------------------------------------------------------------------------------

@dataclass
class RadioReference:
    patch_size: int
    width: int
    depth: int
    mlp_width: int
    num_heads: int
    num_prefix: int          # cls tokens + registers
    num_cls: int
    grid_size: int           # G: stored position grid is G x G
    summary_idxs: list[int]
    norm_mean: torch.Tensor  # [3]
    norm_std: torch.Tensor   # [3]
    embedder: torch.Tensor   # [C, 3*p*p]
    pos_embed: torch.Tensor  # [G*G, C]
    prefix_tokens: torch.Tensor  # [num_prefix, C]
    blocks: list[dict[str, torch.Tensor]]
    final_norm: tuple[torch.Tensor, torch.Tensor] | None = None
    feature_normalizer: tuple[torch.Tensor, torch.Tensor] | None = None  # (mean [C], tx [C, C])
    ln_eps: float = DEFAULT_LN_EPS
    config: dict = field(default_factory=dict, repr=False)

    @property
    def summary_dim(self) -> int:
        return self.width * len(self.summary_idxs)

    def forward(self, x: torch.Tensor, vitdet_window_size: int | None = None,
                external_preprocessor: bool = False, dtype: torch.dtype = torch.float64,
                ln_eps: float | None = None, int8: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """x: [B, 3, H, W] in [0, 1] (or already normalised if external_preprocessor).
        int8: the blocks' linear layers follow the compiler's int8 scheme (`int8_linear`).

        Returns (summary [B, len(summary_idxs) * C], features [B, h*w, C]) in `dtype`.
        """
        eps = self.ln_eps if ln_eps is None else ln_eps
        lin = int8_linear if int8 else linear
        p = self.patch_size
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected [B, 3, H, W], got {tuple(x.shape)}")
        b, _, hh, ww = x.shape
        if hh % p or ww % p:
            raise ValueError(f"H and W must be multiples of {p}, got {hh}x{ww}")
        h, w = hh // p, ww // p
        windowed = [False] * self.depth
        if vitdet_window_size is not None:
            win = vitdet_window_size
            if win < 1 or h % win or w % win:
                raise ValueError(f"patch grid {h}x{w} not divisible by ViTDet window {win}")
            windowed = vitdet_windowed_blocks(self.depth)

        def cast(t: torch.Tensor) -> torch.Tensor:
            return t.to(dtype)

        x = cast(x)
        if not external_preprocessor:
            x = condition_input(x, cast(self.norm_mean), cast(self.norm_std))

        tokens = linear(patchify(x, p), cast(self.embedder))
        tokens = tokens + position_embedding(cast(self.pos_embed), h, w)
        prefix = cast(self.prefix_tokens).unsqueeze(0).expand(b, -1, -1)
        # Kept apart from the patch tokens so windowed blocks can skip the prefix.
        npre = self.num_prefix

        for i, block in enumerate(self.blocks):
            # Cast one block at a time: keeps peak memory low for the big checkpoints.
            params = {k: cast(v) for k, v in block.items()}
            if windowed[i]:
                win_tokens = to_windows(tokens, h, w, vitdet_window_size)
                win_tokens = transformer_block(win_tokens, params, self.num_heads, eps, lin)
                tokens = from_windows(win_tokens, b, h, w, vitdet_window_size)
            else:
                seq = transformer_block(torch.cat([prefix, tokens], dim=1), params,
                                        self.num_heads, eps, lin)
                prefix, tokens = seq[:, :npre], seq[:, npre:]

        if self.final_norm is not None:
            nw, nb = cast(self.final_norm[0]), cast(self.final_norm[1])
            prefix = layer_norm(prefix, nw, nb, eps)
            tokens = layer_norm(tokens, nw, nb, eps)

        summary = prefix[:, : self.num_cls][:, self.summary_idxs].reshape(b, -1)
        features = tokens
        if self.feature_normalizer is not None:
            fmean, tx = cast(self.feature_normalizer[0]), cast(self.feature_normalizer[1])
            features = (features - fmean) @ tx.T
        return summary, features

    __call__ = forward


def _num_heads(args: dict, width: int) -> int:
    kwargs = args.get("model_kwargs") or {}
    if "num_heads" in kwargs:
        heads = int(kwargs["num_heads"])
    else:
        arch = args.get("model")
        if arch not in ARCH_DEFAULT_HEADS:
            raise ValueError(f"unknown architecture {arch!r}: can't tell the head count "
                             f"(known: {sorted(ARCH_DEFAULT_HEADS)})")
        heads = ARCH_DEFAULT_HEADS[arch]
    if width % heads:
        raise ValueError(f"width {width} not divisible by {heads} heads")
    return heads


def _num_cls_tokens(args: dict) -> int:
    if args.get("cls_token_per_teacher"):
        names = {t["name"] for t in args.get("teachers") or []}
        if not names:
            raise ValueError("cls_token_per_teacher is set but args.teachers is empty")
        return len(names)
    return 1


def load_checkpoint(dir: str | Path) -> RadioReference:
    """Read a Hugging Face layout folder (config.json + model.safetensors)."""
    root = Path(dir)
    config = json.loads((root / "config.json").read_text())
    args = config.get("args") or {}
    sd = load_file(str(root / "model.safetensors"))

    def need(key: str) -> torch.Tensor:
        if key not in sd:
            raise ValueError(f"checkpoint lacks {key}")
        return sd[key]

    embedder = need(PG + "embedder.weight")
    width, in_features = embedder.shape
    p = int(config["patch_size"])
    if 3 * p * p != in_features:
        raise ValueError(f"patch_size {p} disagrees with embedder in-features {in_features}")
    if PG + "embedder.bias" in sd:
        raise ValueError("embedder has a bias; this reference assumes a bias-free patch linear")

    pos = need(PG + "pos_embed")
    pos = pos.reshape(-1, pos.shape[-1])
    g = math.isqrt(pos.shape[0])
    if g * g != pos.shape[0] or pos.shape[1] != width:
        raise ValueError(f"pos_embed {tuple(pos.shape)} is not a square grid of width {width}")

    prefix_tokens = need(PG + "cls_token.token")
    num_prefix = prefix_tokens.shape[0]
    num_cls = _num_cls_tokens(args)
    if num_cls > num_prefix:
        raise ValueError(f"{num_cls} cls tokens but only {num_prefix} prefix tokens")

    idx_re = re.compile(re.escape(BLOCKS) + r"(\d+)\.")
    block_ids = sorted({int(m.group(1)) for k in sd if (m := idx_re.match(k))})
    depth = len(block_ids)
    if depth == 0 or block_ids != list(range(depth)):
        raise ValueError(f"blocks must be numbered 0..N-1, got {block_ids}")
    blocks = [{n: need(f"{BLOCKS}{i}.{n}") for n in BLOCK_PARAM_NAMES} for i in range(depth)]
    mlp_width = blocks[0]["mlp.fc1.weight"].shape[0]

    # Anything else under the backbone (LayerScale, q/k norms, ...) would change the maths.
    known = {f"{BLOCKS}{i}.{n}" for i in range(depth) for n in BLOCK_PARAM_NAMES}
    known |= {PG + "embedder.weight", PG + "pos_embed", PG + "cls_token.token",
              PREFIX + "model.norm.weight", PREFIX + "model.norm.bias"}
    unknown = sorted(k for k in sd if k.startswith(PREFIX + "model.") and k not in known)
    if unknown:
        raise ValueError(f"unsupported backbone tensors: {unknown[:5]}")

    kwargs = args.get("model_kwargs") or {}
    if "embed_dim" in kwargs and int(kwargs["embed_dim"]) != width:
        raise ValueError(f"model_kwargs.embed_dim {kwargs['embed_dim']} != tensor width {width}")
    if "depth" in kwargs and int(kwargs["depth"]) != depth:
        raise ValueError(f"model_kwargs.depth {kwargs['depth']} != block count {depth}")

    summary_idxs = [int(i) for i in need(PREFIX + "summary_idxs").tolist()]
    if any(i < 0 or i >= num_cls for i in summary_idxs):
        raise ValueError(f"summary_idxs {summary_idxs} out of range for {num_cls} cls tokens")

    final_norm = None
    if PREFIX + "model.norm.weight" in sd:
        final_norm = (sd[PREFIX + "model.norm.weight"], need(PREFIX + "model.norm.bias"))

    feature_normalizer = None
    if PREFIX + "feature_normalizer.mean" in sd:
        feature_normalizer = (sd[PREFIX + "feature_normalizer.mean"],
                              need(PREFIX + "feature_normalizer.tx"))

    return RadioReference(
        patch_size=p,
        width=width,
        depth=depth,
        mlp_width=mlp_width,
        num_heads=_num_heads(args, width),
        num_prefix=num_prefix,
        num_cls=num_cls,
        grid_size=g,
        summary_idxs=summary_idxs,
        norm_mean=need(PREFIX + "input_conditioner.norm_mean").reshape(3),
        norm_std=need(PREFIX + "input_conditioner.norm_std").reshape(3),
        embedder=embedder,
        pos_embed=pos,
        prefix_tokens=prefix_tokens,
        blocks=blocks,
        final_norm=final_norm,
        feature_normalizer=feature_normalizer,
        config=config,
    )
