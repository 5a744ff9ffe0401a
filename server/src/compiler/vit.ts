// The C-RADIOv4 backbone as an ONNX graph: one small function per concept (input conditioner, patch
// embedding, CPE position embedding, prefix tokens, pre-LN block, windowed/global switching, outputs),
// in the order of the forward pass. Input `pixels` [B, 3, H, W] float32; outputs `summary` [B, S] and
// `features` [B, h·w, C] (float32 in every precision).
import { DataType, type GraphBuilder, float, int, ints, str } from "./onnx-graph.js";
import type { ModelSpec } from "../checkpoint/spec.js";
import type { WeightStore } from "./weights.js";

export type AttentionImpl = "matmul" | "mha";

export interface GraphOptions {
  /** ViTDet window size in patches (null: global attention everywhere). */
  windowSize: number | null;
  /** com.microsoft.MultiHeadAttention or MatMul/Softmax/MatMul. */
  attention: AttentionImpl;
}

export const OPSET = 20;

/** Which blocks run windowed, following upstream's torch-hub ViTDet hook schedule. */
export function windowedBlocks(depth: number): boolean[] {
  const period = Math.max(Math.floor(depth / 4), 1);
  if (period === 1) {
    throw new Error(`ViTDet needs depth >= 8 (period = max(depth // 4, 1) = 1 for depth ${depth}: every block would re-enter windowed mode)`);
  }
  const out: boolean[] = [];
  let windowed = false;
  for (let i = 0; i < depth - 1; i++) {
    const ctr = i % period;
    if (ctr === 0) windowed = true;
    else if (ctr === period - 1) windowed = false;
    out.push(windowed);
  }
  out.push(false); // the last block is always global
  return out;
}

/** What the graph helpers share; adaptor heads (adaptor-heads.ts) build with the same one. */
export interface Ctx {
  g: GraphBuilder;
  w: WeightStore;
  spec: ModelSpec;
  opts: GraphOptions;
  dt: number;
}

/**
 * The backbone's last values, in the graph's compute precision, for heads that read them:
 * `tokens` [B, P + N, C] (prefix first; patches possibly in window order) and `features`
 * [B, h·w, C] (patch tokens in raster order, after the feature normalizer).
 */
export interface VitTaps {
  ctx: Ctx;
  tokens: string;
  features: string;
}

export function buildVitGraph(g: GraphBuilder, w: WeightStore, spec: ModelSpec, opts: GraphOptions): VitTaps {
  const ctx: Ctx = { g, w, spec, opts, dt: w.elemType };
  const C = spec.width;
  const pixels = g.input("pixels", DataType.FLOAT, ["batch", 3, "height", "width"]);

  let x = inputConditioner(ctx, pixels);
  if (ctx.dt !== DataType.FLOAT) x = g.op("Cast", [x], { to: int(ctx.dt) });

  // Patch embedding: [B, C, h, w] grid, then tokens [B, h·w, C].
  const grid = patchEmbed(ctx, x);
  const gridShape = g.op("Shape", [grid]);
  const batch = g.op("Slice", [gridShape, g.int64([0]), g.int64([1])]);
  const hw = g.op("Slice", [gridShape, g.int64([2]), g.int64([4])]); // [h, w]
  let patches = g.op("Transpose", [g.op("Reshape", [grid, g.op("Concat", [batch, g.int64([C, -1])], { axis: int(0) })])], { perm: ints([0, 2, 1]) });
  patches = g.op("Add", [patches, cpePositionEmbedding(ctx, hw)], {}, { stem: "patches_pos" });

  const prefix = prefixTokens(ctx, batch);
  const schedule = opts.windowSize === null ? new Array<boolean>(spec.depth).fill(false) : windowedBlocks(spec.depth);
  const win = opts.windowSize === null ? null : windowLayout(ctx, batch, hw, opts.windowSize);
  if (win) patches = win.toWindowOrder(patches);

  // Tokens run as `prefix ++ patches` in global blocks; windowed blocks see only the patches, one
  // window per batch row, and leave the prefix tokens as they are.
  let tokens: string | null = null;
  let prefixNow = prefix;
  let patchesNow = patches;
  for (let i = 0; i < spec.depth; i++) {
    if (schedule[i]) {
      if (tokens !== null) {
        [prefixNow, patchesNow] = splitPrefix(ctx, tokens);
        tokens = null;
      }
      patchesNow = win!.fromWindows(block(ctx, i, win!.toWindows(patchesNow)));
    } else {
      if (tokens === null) tokens = g.op("Concat", [prefixNow, patchesNow], { axis: int(1) }, { stem: "tokens" });
      tokens = block(ctx, i, tokens);
    }
  }
  if (tokens === null) tokens = g.op("Concat", [prefixNow, patchesNow], { axis: int(1) });
  if (spec.finalNorm) tokens = layerNorm(ctx, tokens, spec.keys.finalNorm!, "final_norm");

  // Summary: the cls tokens at summary_idxs, concatenated.
  const summaryTokens = g.op("Gather", [tokens, g.int64(spec.summaryIdxs)], { axis: int(1) });
  let summary = g.op("Reshape", [summaryTokens, g.int64([0, -1])]);
  let features = g.op("Slice", [tokens, g.int64([spec.numPrefixTokens]), g.int64([Number.MAX_SAFE_INTEGER]), g.int64([1])]);
  if (win) features = win.toRasterOrder(features);
  if (spec.featureNormalizer) features = featureNormalizer(ctx, features);
  const taps: VitTaps = { ctx, tokens, features };
  if (ctx.dt !== DataType.FLOAT) {
    summary = g.op("Cast", [summary], { to: int(DataType.FLOAT) });
    features = g.op("Cast", [features], { to: int(DataType.FLOAT) });
  }
  g.output(summary, "summary", DataType.FLOAT, ["batch", spec.summaryDim]);
  g.output(features, "features", DataType.FLOAT, ["batch", "patches", C]);
  return taps;
}

/** (x - mean) / std with the checkpoint's conditioner buffers, in float32 as upstream does. */
function inputConditioner(ctx: Ctx, pixels: string): string {
  const { g, spec } = ctx;
  const mean = g.floatConst(spec.normMean, [3, 1, 1], DataType.FLOAT, "norm_mean");
  const std = g.floatConst(spec.normStd, [3, 1, 1], DataType.FLOAT, "norm_std");
  return g.op("Div", [g.op("Sub", [pixels, mean]), std], {}, { stem: "conditioned" });
}

/** 16×16 patches flattened (c, y, x) then a bias-free linear layer = a stride-16 convolution. */
function patchEmbed(ctx: Ctx, x: string): string {
  const { g, w, spec } = ctx;
  const p = spec.patchSize;
  const weight = g.initializer(w.tensor(spec.keys.embedder, "patch_embed.weight", [spec.width, 3, p, p]));
  return g.op("Conv", [x, weight], { kernel_shape: ints([p, p]), strides: ints([p, p]) }, { stem: "patch_grid" });
}

/**
 * CPE: the stored G×G grid, bilinearly resized (half-pixel, no antialias) to a square m×m with
 * m = max(h, w), then the top-left h×w crop; only the cropped rows and columns are computed. The
 * sample coordinates are PyTorch's, bit for bit: scale = f32(G) / f32(m) and src = fma(scale,
 * i + 0.5, -0.5) in float32 (float64 product, one rounding). ONNX Resize computes them as
 * (i + 0.5) / (m / G) - 0.5, which lands ~3e-6 relative L2 away from upstream at 224². At m = G
 * the weights are exactly 0/1, which covers upstream's "use the grid as is" case.
 */
function cpePositionEmbedding(ctx: Ctx, hw: string): string {
  const { g, w, spec, dt } = ctx;
  const G = spec.posGrid;
  const C = spec.width;
  const grid = g.initializer(w.tensor(spec.keys.posEmbed, "pos_embed", [G, G, C])); // a view, no copy
  const F32 = DataType.FLOAT;
  const F64 = DataType.DOUBLE;
  const m = g.op("ReduceMax", [hw], { keepdims: int(1) });
  const scale = g.op("Cast", [g.op("Div", [g.floatConst([G], [1]), g.op("Cast", [m], { to: int(F32) })])], { to: int(F64) });
  const half = g.floatConst([0.5], [], F32, "half");
  const half64 = g.op("Cast", [half], { to: int(F64) });
  const maxIndex = g.int64([G - 1]);
  /** Sample indices and the upper weight for the first n outputs along one axis. */
  const axis = (nIndex: number) => {
    const n = g.op("Gather", [hw, g.int64([nIndex], true)], { axis: int(0) });
    const i = g.op("Cast", [g.op("Range", [g.int64([0], true), n, g.int64([1], true)])], { to: int(F32) });
    const center = g.op("Cast", [g.op("Add", [i, half])], { to: int(F64) });
    const src = g.op("Max", [g.op("Cast", [g.op("Sub", [g.op("Mul", [scale, center]), half64])], { to: int(F32) }), g.floatConst([0], [], F32)]);
    const loF = g.op("Floor", [src]);
    const lo = g.op("Min", [g.op("Cast", [loF], { to: int(DataType.INT64) }), maxIndex]);
    const hi = g.op("Min", [g.op("Add", [lo, g.int64([1])]), maxIndex]);
    let w1 = g.op("Sub", [src, g.op("Cast", [lo], { to: int(F32) })]);
    let w0 = g.op("Sub", [g.floatConst([1], [], F32), w1]);
    if (dt !== F32) [w0, w1] = [g.op("Cast", [w0], { to: int(dt) }), g.op("Cast", [w1], { to: int(dt) })];
    return { lo, hi, w0, w1 };
  };
  const y = axis(0);
  const x = axis(1);
  const col = (t: string) => g.op("Unsqueeze", [t, g.int64([0, 2])]); // [1, w, 1]
  const row = (t: string) => g.op("Unsqueeze", [t, g.int64([1, 2])]); // [h, 1, 1]
  const rowsLo = g.op("Gather", [grid, y.lo], { axis: int(0) });
  const rowsHi = g.op("Gather", [grid, y.hi], { axis: int(0) });
  // Interpolate along x, then y, in the order PyTorch's kernel does.
  const alongX = (rows: string) =>
    g.op("Add", [
      g.op("Mul", [col(x.w0), g.op("Gather", [rows, x.lo], { axis: int(1) })]),
      g.op("Mul", [col(x.w1), g.op("Gather", [rows, x.hi], { axis: int(1) })]),
    ]);
  const pe = g.op("Add", [g.op("Mul", [row(y.w0), alongX(rowsLo)]), g.op("Mul", [row(y.w1), alongX(rowsHi)])]);
  return g.op("Reshape", [pe, g.int64([1, -1, C])], {}, { stem: "pos_embed_hw" });
}

/** cls tokens + registers, the same for every image: [B, P, C]. */
function prefixTokens(ctx: Ctx, batch: string): string {
  const { g, w, spec } = ctx;
  const P = spec.numPrefixTokens;
  const cls = g.initializer(w.tensor(spec.keys.clsToken, "cls_token", [1, P, spec.width]));
  return g.op("Expand", [cls, g.op("Concat", [batch, g.int64([P, spec.width])], { axis: int(0) })], {}, { stem: "prefix" });
}

function splitPrefix(ctx: Ctx, tokens: string): [string, string] {
  const { g, spec } = ctx;
  const P = spec.numPrefixTokens;
  const prefix = g.op("Slice", [tokens, g.int64([0]), g.int64([P]), g.int64([1])]);
  const patches = g.op("Slice", [tokens, g.int64([P]), g.int64([Number.MAX_SAFE_INTEGER]), g.int64([1])]);
  return [prefix, patches];
}

/**
 * ViTDet layout. Patches are reordered once into window order (windows row-major, patches row-major
 * inside), so entering/leaving a windowed block is a plain reshape; they return to raster order at
 * the end. Global attention and the MLP are per-token/permutation-equivariant, so global blocks may
 * run in window order.
 */
function windowLayout(ctx: Ctx, batch: string, hw: string, W: number) {
  const { g, spec } = ctx;
  const C = spec.width;
  const h = g.op("Slice", [hw, g.int64([0]), g.int64([1])]);
  const wd = g.op("Slice", [hw, g.int64([1]), g.int64([2])]);
  const Wc = g.int64([W]);
  const hW = g.op("Div", [h, Wc]);
  const wW = g.op("Div", [wd, Wc]);
  const shape6 = g.op("Concat", [batch, hW, Wc, wW, Wc, g.int64([C])], { axis: int(0) });
  const shape6t = g.op("Concat", [batch, hW, wW, Wc, Wc, g.int64([C])], { axis: int(0) });
  const flat = g.op("Concat", [batch, g.int64([-1, C])], { axis: int(0) });
  return {
    toWindowOrder: (x: string) =>
      g.op("Reshape", [g.op("Transpose", [g.op("Reshape", [x, shape6])], { perm: ints([0, 1, 3, 2, 4, 5]) }), flat], {}, { stem: "window_order" }),
    toRasterOrder: (x: string) =>
      g.op("Reshape", [g.op("Transpose", [g.op("Reshape", [x, shape6t])], { perm: ints([0, 1, 3, 2, 4, 5]) }), flat], {}, { stem: "raster_order" }),
    toWindows: (x: string) => g.op("Reshape", [x, g.int64([-1, W * W, C])], {}, { stem: "windows" }),
    fromWindows: (x: string) => g.op("Reshape", [x, flat], {}, { stem: "unwindowed" }),
  };
}

export function layerNorm(ctx: Ctx, x: string, keys: { weight: string; bias: string }, name: string, eps = ctx.spec.layerNormEps): string {
  const { g, w } = ctx;
  const scale = g.initializer(w.tensor(keys.weight, `${name}.weight`));
  const bias = g.initializer(w.tensor(keys.bias, `${name}.bias`));
  // stash_type 1: mean/variance in float32 even for fp16 inputs.
  return g.op("LayerNormalization", [x, scale, bias], { axis: int(-1), epsilon: float(eps), stash_type: int(1) }, { stem: name });
}

/** A linear layer's checkpoint keys; `bias` absent for bias-free layers. */
export interface LinearKeys {
  weight: string;
  bias?: string;
}

/** What a linear layer needs of the build context (shared with the text tower). */
export type LinearCtx = Pick<Ctx, "g" | "w">;

/** x W^T + b on [tokens, in] rows, with W in the checkpoint's [out, in] layout (no transposed copy). */
export function linear(ctx: LinearCtx, x2d: string, keys: LinearKeys, name: string): string {
  const { g, w } = ctx;
  if (w.precision === "int8") return int8Linear(ctx, x2d, keys, name);
  const weight = g.initializer(w.tensor(keys.weight, `${name}.weight`));
  const bias = keys.bias === undefined ? [] : [g.initializer(w.tensor(keys.bias, `${name}.bias`))];
  return g.op("Gemm", [x2d, weight, ...bias], { transB: int(1) }, { stem: name });
}

/**
 * The int8 linear layer: each token (row) is quantized on its own, symmetric, to uint8 around 128
 * with scale max|x|/127, so a token's result never depends on the other tokens or images in the
 * batch, and a few high-norm tokens (cls, registers) don't coarsen every patch's quantization.
 * MatMulIntegerToFloat multiplies the codes with the per-output-channel int8 weights and scales the
 * int32 sums by the channel scale in its output stage; × token scale and + the fp32 bias follow.
 * Everything else (attention products, softmax, LayerNorm, GELU, patch embedding) stays float32.
 */
function int8Linear(ctx: LinearCtx, x2d: string, keys: LinearKeys, name: string): string {
  const { g, w } = ctx;
  const q = w.int8Linear(keys.weight, name);
  const weight = g.initializer(q.weight);
  const channelScale = g.initializer(q.scale);
  const amax = g.op("ReduceMax", [g.op("Abs", [x2d]), g.int64([-1])], { keepdims: int(0) }); // [tokens]
  // An all-zero row gets scale 1 (its codes are all 128 either way) instead of a division by zero.
  const tokenScale = g.op(
    "Where",
    [g.op("Greater", [amax, g.floatConst([0], [])]), g.op("Div", [amax, g.floatConst([127], [])]), g.floatConst([1], [])],
    {},
    { stem: `${name}.token_scale` },
  );
  const zeroPoint = g.initializer({ name: g.fresh(`${name}.x_zero_point`), dataType: DataType.UINT8, dims: [1], rawData: new Uint8Array([128]) });
  const zeroPoints = g.op("Expand", [zeroPoint, g.op("Shape", [tokenScale])]);
  const codes = g.op("QuantizeLinear", [x2d, tokenScale, zeroPoints], { axis: int(0) }, { stem: `${name}.x_uint8` });
  // int32 sums × channel scale in the GEMM's output stage, then × token scale, + bias.
  const y = g.op("MatMulIntegerToFloat", [codes, weight, g.floatConst([1], []), channelScale, zeroPoint], {}, { domain: "ms", stem: `${name}.int8` });
  const scaled = g.op("Mul", [y, g.op("Unsqueeze", [tokenScale, g.int64([1])])], {}, keys.bias === undefined ? { stem: name } : {});
  if (keys.bias === undefined) return scaled;
  return g.op("Add", [scaled, g.initializer(w.tensor(keys.bias, `${name}.bias`))], {}, { stem: name });
}

/** One pre-LN transformer block's parameters: the backbone's, or an adaptor head's (adaptor-heads.ts). */
export interface TransformerBlockParams {
  name: string;
  width: number;
  numHeads: number;
  /** LayerNorm epsilon of norm1/norm2. */
  eps: number;
  norm1: { weight: string; bias: string };
  qkv: LinearKeys;
  proj: LinearKeys;
  norm2: { weight: string; bias: string };
  fc1: LinearKeys;
  fc2: LinearKeys;
  /** LayerScale gammas [width] on the attention / MLP branch (timm's ls1/ls2), if any. */
  ls1?: string;
  ls2?: string;
}

/** Backbone block i. */
function block(ctx: Ctx, i: number, x3d: string): string {
  const { spec } = ctx;
  return transformerBlock(ctx, x3d, { name: `blocks.${i}`, width: spec.width, numHeads: spec.numHeads, eps: spec.layerNormEps, ...spec.keys.blocks[i]! });
}

/** Pre-LN transformer block on [b, n, C] tokens: x + ls1(attn(norm1(x))), then x + ls2(mlp(norm2(x))). */
export function transformerBlock(ctx: Ctx, x3d: string, p: TransformerBlockParams): string {
  const { g } = ctx;
  const { name, width: C } = p;
  const shape3 = g.op("Shape", [x3d]);
  let x = g.op("Reshape", [x3d, g.int64([-1, C])], {}, { stem: `${name}.in` });

  const qkv = linear(ctx, layerNorm(ctx, x, p.norm1, `${name}.norm1`, p.eps), p.qkv, `${name}.attn.qkv`);
  const attn = attention(ctx, qkv, shape3, name, C, p.numHeads);
  x = g.op("Add", [x, layerScale(ctx, linear(ctx, attn, p.proj, `${name}.attn.proj`), p.ls1, `${name}.ls1`)], {}, { stem: `${name}.resid1` });

  const hidden = g.op(
    "Gelu",
    [linear(ctx, layerNorm(ctx, x, p.norm2, `${name}.norm2`, p.eps), p.fc1, `${name}.mlp.fc1`)],
    { approximate: str("none") },
    { stem: `${name}.mlp.gelu` },
  );
  x = g.op("Add", [x, layerScale(ctx, linear(ctx, hidden, p.fc2, `${name}.mlp.fc2`), p.ls2, `${name}.ls2`)], {}, { stem: `${name}.resid2` });
  return g.op("Reshape", [x, shape3], {}, { stem: `${name}.out` });
}

/** x · gamma (per channel), or x when the block has no LayerScale. */
function layerScale(ctx: Ctx, x: string, gamma: string | undefined, name: string): string {
  if (gamma === undefined) return x;
  return ctx.g.op("Mul", [x, ctx.g.initializer(ctx.w.tensor(gamma, `${name}.gamma`))], {}, { stem: name });
}

/** Multi-head self-attention from fused qkv rows [b·n, 3C] to [b·n, C]. */
function attention(ctx: Ctx, qkv: string, shape3: string, name: string, C: number, H: number): string {
  const { g, opts } = ctx;
  const d = C / H;
  const [q, k, v] = g.opMulti("Split", [qkv, g.int64([C, C, C])], { axis: int(1) }, { outputs: 3, stem: `${name}.attn.split` }) as [string, string, string];
  const bn = g.op("Slice", [shape3, g.int64([0]), g.int64([2])]);
  if (opts.attention === "mha") {
    const bnc = g.op("Concat", [bn, g.int64([C])], { axis: int(0) });
    const [q3, k3, v3] = [q, k, v].map((t) => g.op("Reshape", [t, bnc]));
    const o = g.op("MultiHeadAttention", [q3!, k3!, v3!], { num_heads: int(H), scale: float(d ** -0.5) }, { domain: "ms", stem: `${name}.attn.mha` });
    return g.op("Reshape", [o, g.int64([-1, C])]);
  }
  const bnhd = g.op("Concat", [bn, g.int64([H, d])], { axis: int(0) });
  const heads = (t: string, perm: number[]) => g.op("Transpose", [g.op("Reshape", [t, bnhd])], { perm: ints(perm) });
  const scale = g.floatConst([d ** -0.5], [], ctx.dt, "attn_scale");
  const qh = heads(g.op("Mul", [q, scale]), [0, 2, 1, 3]); // [b, H, n, d]
  const kh = heads(k, [0, 2, 3, 1]); // [b, H, d, n]
  const vh = heads(v, [0, 2, 1, 3]);
  let scores = g.op("MatMul", [qh, kh], {}, { stem: `${name}.attn.scores` });
  // Softmax in float32 even in fp16 graphs.
  if (ctx.dt !== DataType.FLOAT) scores = g.op("Cast", [scores], { to: int(DataType.FLOAT) });
  let probs = g.op("Softmax", [scores], { axis: int(-1) }, { stem: `${name}.attn.softmax` });
  if (ctx.dt !== DataType.FLOAT) probs = g.op("Cast", [probs], { to: int(ctx.dt) });
  const o = g.op("MatMul", [probs, vh]);
  return g.op("Reshape", [g.op("Transpose", [o], { perm: ints([0, 2, 1, 3]) }), g.int64([-1, C])], {}, { stem: `${name}.attn.out` });
}

/** (f - mean) @ tx^T, when the checkpoint carries a feature normalizer. */
function featureNormalizer(ctx: Ctx, features: string): string {
  const { g, w, spec } = ctx;
  const C = spec.width;
  const keys = spec.keys.featureNormalizer!;
  const mean = g.initializer(w.tensor(keys.mean, "feature_normalizer.mean"));
  const tx = g.initializer(w.tensor(keys.tx, "feature_normalizer.tx"));
  const shape = g.op("Shape", [features]);
  const centered = g.op("Reshape", [g.op("Sub", [features, mean]), g.int64([-1, C])]);
  return g.op("Reshape", [g.op("Gemm", [centered, tx], { transB: int(1) }), shape], {}, { stem: "features_normalized" });
}
