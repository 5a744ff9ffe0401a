// The C-RADIOv4 backbone as an ONNX graph: one small function per concept (input conditioner, patch
// embedding, CPE position embedding, prefix tokens, pre-LN block, windowed/global switching, outputs),
// in the order of the forward pass. Input `pixels` [B, H, W, 3] uint8 RGB, as decoders give them;
// outputs `summary` [B, S] and `features` [B, h·w, C] (float32 in every precision).
import { DataType, type GraphBuilder, float, int, ints, str } from "./onnx-graph.js";
import type { CheckpointSpec } from "../checkpoint/spec.js";
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
function windowedBlocks(depth: number): boolean[] {
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

/** A graph being built: the builder, the weights it reads, its compute element type (a DataType). Shared with the text tower. */
export interface GraphBuild {
  graph: GraphBuilder;
  weights: WeightStore;
  dtype: number;
}

/** The backbone graph being built, as its helpers share it; adaptor heads (adaptor-heads.ts) build with the same one. */
export interface BackboneBuild extends GraphBuild {
  spec: CheckpointSpec;
  options: GraphOptions;
}

/**
 * The backbone's last values, in the graph's compute precision, for heads that read them:
 * `tokens` [B, P + N, C] (prefix first; patches possibly in window order) and `features`
 * [B, h·w, C] (patch tokens in raster order, after the feature normalizer).
 */
export interface VitTaps {
  build: BackboneBuild;
  tokens: string;
  features: string;
}

export function buildVitGraph(graph: GraphBuilder, weights: WeightStore, spec: CheckpointSpec, options: GraphOptions): VitTaps {
  const build: BackboneBuild = { graph, weights, spec, options, dtype: weights.elemType };
  const C = spec.width;
  const pixels = graph.input("pixels", DataType.UINT8, ["batch", "height", "width", 3]);

  let x = inputConditioner(build, pixels);
  if (build.dtype !== DataType.FLOAT) x = graph.op("Cast", [x], { to: int(build.dtype) });

  // Patch embedding: [B, C, h, w] grid, then tokens [B, h·w, C].
  const grid = patchEmbed(build, x);
  const gridShape = graph.op("Shape", [grid]);
  const batch = graph.op("Slice", [gridShape, graph.int64([0]), graph.int64([1])]);
  const hw = graph.op("Slice", [gridShape, graph.int64([2]), graph.int64([4])]); // [h, w]
  const flatGrid = graph.op("Concat", [batch, graph.int64([C, -1])], { axis: int(0) }); // [B, C, h·w]
  let patches = graph.op("Transpose", [graph.op("Reshape", [grid, flatGrid])], { perm: ints([0, 2, 1]) });
  patches = graph.op("Add", [patches, cpePositionEmbedding(build, hw)], {}, { stem: "patches_pos" });

  const prefix = prefixTokens(build, batch);
  const schedule = options.windowSize === null ? new Array<boolean>(spec.depth).fill(false) : windowedBlocks(spec.depth);
  const win = options.windowSize === null ? null : windowLayout(build, batch, hw, options.windowSize);
  if (win) patches = win.toWindowOrder(patches);

  // Tokens run as `prefix ++ patches` in global blocks; windowed blocks see only the patches, one
  // window per batch row, and leave the prefix tokens as they are.
  let tokens: string | null = null;
  let prefixNow = prefix;
  let patchesNow = patches;
  for (let i = 0; i < spec.depth; i++) {
    if (schedule[i]) {
      if (tokens !== null) {
        [prefixNow, patchesNow] = splitPrefix(build, tokens);
        tokens = null;
      }
      patchesNow = win!.fromWindows(block(build, i, win!.toWindows(patchesNow)));
    } else {
      if (tokens === null) tokens = graph.op("Concat", [prefixNow, patchesNow], { axis: int(1) }, { stem: "tokens" });
      tokens = block(build, i, tokens);
    }
  }
  if (tokens === null) tokens = graph.op("Concat", [prefixNow, patchesNow], { axis: int(1) });
  if (spec.finalNorm) tokens = layerNorm(build, tokens, spec.keys.finalNorm!, "final_norm");

  // Summary: the cls tokens at summary_idxs, concatenated.
  const summaryTokens = graph.op("Gather", [tokens, graph.int64(spec.summaryIdxs)], { axis: int(1) });
  let summary = graph.op("Reshape", [summaryTokens, graph.int64([0, -1])]);
  let features = graph.op("Slice", [tokens, graph.int64([spec.numPrefixTokens]), graph.int64([Number.MAX_SAFE_INTEGER]), graph.int64([1])]);
  if (win) features = win.toRasterOrder(features);
  if (spec.featureNormalizer) features = featureNormalizer(build, features);
  const taps: VitTaps = { build, tokens, features };
  if (build.dtype !== DataType.FLOAT) {
    summary = graph.op("Cast", [summary], { to: int(DataType.FLOAT) });
    features = graph.op("Cast", [features], { to: int(DataType.FLOAT) });
  }
  graph.output(summary, "summary", DataType.FLOAT, ["batch", spec.summaryDim]);
  graph.output(features, "features", DataType.FLOAT, ["batch", "patches", C]);
  return taps;
}

/**
 * uint8 [B, H, W, 3] → [B, 3, H, W] in [0, 1] (v / 255 in float32, torchvision's to_tensor), then
 * (x - mean) / std with the checkpoint's conditioner buffers, in float32 as upstream does. Taking
 * uint8 moves a quarter of the bytes to the device and leaves no per-value work to the host; the
 * transpose runs on the bytes, before they grow to floats.
 */
function inputConditioner(build: BackboneBuild, pixels: string): string {
  const { graph, spec } = build;
  const planes = graph.op("Transpose", [pixels], { perm: ints([0, 3, 1, 2]) });
  const unit = graph.op(
    "Div",
    [graph.op("Cast", [planes], { to: int(DataType.FLOAT) }), graph.floatConst([255], [], DataType.FLOAT, "u8_max")],
    {},
    { stem: "unit" },
  );
  const mean = graph.floatConst(spec.normMean, [3, 1, 1], DataType.FLOAT, "norm_mean");
  const std = graph.floatConst(spec.normStd, [3, 1, 1], DataType.FLOAT, "norm_std");
  return graph.op("Div", [graph.op("Sub", [unit, mean]), std], {}, { stem: "conditioned" });
}

/** 16×16 patches flattened (c, y, x) then a bias-free linear layer = a stride-16 convolution. */
function patchEmbed(build: BackboneBuild, x: string): string {
  const { graph, weights, spec } = build;
  const p = spec.patchSize;
  const weight = graph.initializer(weights.tensor(spec.keys.embedder, "patch_embed.weight", [spec.width, 3, p, p]));
  return graph.op("Conv", [x, weight], { kernel_shape: ints([p, p]), strides: ints([p, p]) }, { stem: "patch_grid" });
}

/**
 * CPE: the stored G×G grid, bilinearly resized (half-pixel, no antialias) to a square m×m with
 * m = max(h, w), then the top-left h×w crop; only the cropped rows and columns are computed. The
 * sample coordinates are PyTorch's, bit for bit: scale = f32(G) / f32(m) and src = fma(scale,
 * i + 0.5, -0.5) in float32 (float64 product, one rounding). ONNX Resize computes them as
 * (i + 0.5) / (m / G) - 0.5, which lands ~3e-6 relative L2 away from upstream at 224². At m = G
 * the weights are exactly 0/1, which covers upstream's "use the grid as is" case.
 */
function cpePositionEmbedding(build: BackboneBuild, hw: string): string {
  const { graph, weights, spec, dtype } = build;
  const G = spec.posGrid;
  const C = spec.width;
  const grid = graph.initializer(weights.tensor(spec.keys.posEmbed, "pos_embed", [G, G, C])); // a view, no copy
  const F32 = DataType.FLOAT;
  const F64 = DataType.DOUBLE;
  const m = graph.op("ReduceMax", [hw], { keepdims: int(1) });
  const scale = graph.op("Cast", [graph.op("Div", [graph.floatConst([G], [1]), graph.op("Cast", [m], { to: int(F32) })])], { to: int(F64) });
  const half = graph.floatConst([0.5], [], F32, "half");
  const half64 = graph.op("Cast", [half], { to: int(F64) });
  const maxIndex = graph.int64([G - 1]);
  /** Sample indices and the upper weight for the first n outputs along one axis. */
  const axis = (nIndex: number) => {
    const n = graph.op("Gather", [hw, graph.int64([nIndex], true)], { axis: int(0) });
    const i = graph.op("Cast", [graph.op("Range", [graph.int64([0], true), n, graph.int64([1], true)])], { to: int(F32) });
    const center = graph.op("Cast", [graph.op("Add", [i, half])], { to: int(F64) });
    const src = graph.op("Max", [
      graph.op("Cast", [graph.op("Sub", [graph.op("Mul", [scale, center]), half64])], { to: int(F32) }),
      graph.floatConst([0], [], F32),
    ]);
    const loF = graph.op("Floor", [src]);
    const lo = graph.op("Min", [graph.op("Cast", [loF], { to: int(DataType.INT64) }), maxIndex]);
    const hi = graph.op("Min", [graph.op("Add", [lo, graph.int64([1])]), maxIndex]);
    let w1 = graph.op("Sub", [src, graph.op("Cast", [lo], { to: int(F32) })]);
    let w0 = graph.op("Sub", [graph.floatConst([1], [], F32), w1]);
    if (dtype !== F32) [w0, w1] = [graph.op("Cast", [w0], { to: int(dtype) }), graph.op("Cast", [w1], { to: int(dtype) })];
    return { lo, hi, w0, w1 };
  };
  const y = axis(0);
  const x = axis(1);
  const col = (t: string) => graph.op("Unsqueeze", [t, graph.int64([0, 2])]); // [1, w, 1]
  const row = (t: string) => graph.op("Unsqueeze", [t, graph.int64([1, 2])]); // [h, 1, 1]
  const rowsLo = graph.op("Gather", [grid, y.lo], { axis: int(0) });
  const rowsHi = graph.op("Gather", [grid, y.hi], { axis: int(0) });
  // Interpolate along x, then y, in the order PyTorch's kernel does.
  const alongX = (rows: string) =>
    graph.op("Add", [
      graph.op("Mul", [col(x.w0), graph.op("Gather", [rows, x.lo], { axis: int(1) })]),
      graph.op("Mul", [col(x.w1), graph.op("Gather", [rows, x.hi], { axis: int(1) })]),
    ]);
  const pe = graph.op("Add", [graph.op("Mul", [row(y.w0), alongX(rowsLo)]), graph.op("Mul", [row(y.w1), alongX(rowsHi)])]);
  return graph.op("Reshape", [pe, graph.int64([1, -1, C])], {}, { stem: "pos_embed_hw" });
}

/** cls tokens + registers, the same for every image: [B, P, C]. */
function prefixTokens(build: BackboneBuild, batch: string): string {
  const { graph, weights, spec } = build;
  const P = spec.numPrefixTokens;
  const cls = graph.initializer(weights.tensor(spec.keys.clsToken, "cls_token", [1, P, spec.width]));
  return graph.op("Expand", [cls, graph.op("Concat", [batch, graph.int64([P, spec.width])], { axis: int(0) })], {}, { stem: "prefix" });
}

function splitPrefix(build: BackboneBuild, tokens: string): [string, string] {
  const { graph, spec } = build;
  const P = spec.numPrefixTokens;
  const prefix = graph.op("Slice", [tokens, graph.int64([0]), graph.int64([P]), graph.int64([1])]);
  const patches = graph.op("Slice", [tokens, graph.int64([P]), graph.int64([Number.MAX_SAFE_INTEGER]), graph.int64([1])]);
  return [prefix, patches];
}

/**
 * ViTDet layout. Patches are reordered once into window order (windows row-major, patches row-major
 * inside), so entering/leaving a windowed block is a plain reshape; they return to raster order at
 * the end. Global attention and the MLP are per-token/permutation-equivariant, so global blocks may
 * run in window order.
 */
function windowLayout(build: BackboneBuild, batch: string, hw: string, W: number) {
  const { graph, spec } = build;
  const C = spec.width;
  const h = graph.op("Slice", [hw, graph.int64([0]), graph.int64([1])]);
  const wd = graph.op("Slice", [hw, graph.int64([1]), graph.int64([2])]);
  const Wc = graph.int64([W]);
  const hW = graph.op("Div", [h, Wc]);
  const wW = graph.op("Div", [wd, Wc]);
  const shape6 = graph.op("Concat", [batch, hW, Wc, wW, Wc, graph.int64([C])], { axis: int(0) });
  const shape6t = graph.op("Concat", [batch, hW, wW, Wc, Wc, graph.int64([C])], { axis: int(0) });
  const flat = graph.op("Concat", [batch, graph.int64([-1, C])], { axis: int(0) });
  return {
    toWindowOrder: (x: string) =>
      graph.op("Reshape", [graph.op("Transpose", [graph.op("Reshape", [x, shape6])], { perm: ints([0, 1, 3, 2, 4, 5]) }), flat], {}, { stem: "window_order" }),
    toRasterOrder: (x: string) =>
      graph.op("Reshape", [graph.op("Transpose", [graph.op("Reshape", [x, shape6t])], { perm: ints([0, 1, 3, 2, 4, 5]) }), flat], {}, { stem: "raster_order" }),
    toWindows: (x: string) => graph.op("Reshape", [x, graph.int64([-1, W * W, C])], {}, { stem: "windows" }),
    fromWindows: (x: string) => graph.op("Reshape", [x, flat], {}, { stem: "unwindowed" }),
  };
}

export function layerNorm(build: BackboneBuild, x: string, keys: { weight: string; bias: string }, name: string, eps = build.spec.layerNormEps): string {
  const { graph, weights } = build;
  const scale = graph.initializer(weights.tensor(keys.weight, `${name}.weight`));
  const bias = graph.initializer(weights.tensor(keys.bias, `${name}.bias`));
  // stash_type 1: mean/variance in float32 even for fp16 inputs.
  return graph.op("LayerNormalization", [x, scale, bias], { axis: int(-1), epsilon: float(eps), stash_type: int(1) }, { stem: name });
}

/** A linear layer's checkpoint keys; `bias` absent for bias-free layers. */
export interface LinearKeys {
  weight: string;
  bias?: string;
}

/** x W^T + b on [tokens, in] rows, with W in the checkpoint's [out, in] layout (no transposed copy). */
export function linear(build: GraphBuild, x2d: string, keys: LinearKeys, name: string): string {
  const { graph, weights } = build;
  if (weights.precision === "int8") return int8Linear(build, x2d, keys, name);
  const weight = graph.initializer(weights.tensor(keys.weight, `${name}.weight`));
  const bias = keys.bias === undefined ? [] : [graph.initializer(weights.tensor(keys.bias, `${name}.bias`))];
  return graph.op("Gemm", [x2d, weight, ...bias], { transB: int(1) }, { stem: name });
}

/**
 * The int8 linear layer: each token (row) is quantized on its own, symmetric, to uint8 around 128
 * with scale max|x|/127, so a token's result never depends on the other tokens or images in the
 * batch, and a few high-norm tokens (cls, registers) don't coarsen every patch's quantization.
 * MatMulIntegerToFloat multiplies the codes with the per-output-channel int8 weights and scales the
 * int32 sums by the channel scale in its output stage; × token scale and + the fp32 bias follow.
 * Everything else (attention products, softmax, LayerNorm, GELU, patch embedding) stays float32.
 */
function int8Linear(build: GraphBuild, x2d: string, keys: LinearKeys, name: string): string {
  const { graph, weights } = build;
  const q = weights.int8Linear(keys.weight, name);
  const weight = graph.initializer(q.weight);
  const channelScale = graph.initializer(q.scale);
  const amax = graph.op("ReduceMax", [graph.op("Abs", [x2d]), graph.int64([-1])], { keepdims: int(0) }); // [tokens]
  // An all-zero row gets scale 1 (its codes are all 128 either way) instead of a division by zero.
  const tokenScale = graph.op(
    "Where",
    [graph.op("Greater", [amax, graph.floatConst([0], [])]), graph.op("Div", [amax, graph.floatConst([127], [])]), graph.floatConst([1], [])],
    {},
    { stem: `${name}.token_scale` },
  );
  const zeroPoint = graph.initializer({ name: graph.fresh(`${name}.x_zero_point`), dataType: DataType.UINT8, dims: [1], rawData: new Uint8Array([128]) });
  const zeroPoints = graph.op("Expand", [zeroPoint, graph.op("Shape", [tokenScale])]);
  const codes = graph.op("QuantizeLinear", [x2d, tokenScale, zeroPoints], { axis: int(0) }, { stem: `${name}.x_uint8` });
  // int32 sums × channel scale in the GEMM's output stage, then × token scale, + bias.
  const y = graph.op("MatMulIntegerToFloat", [codes, weight, graph.floatConst([1], []), channelScale, zeroPoint], {}, { domain: "ms", stem: `${name}.int8` });
  const scaled = graph.op("Mul", [y, graph.op("Unsqueeze", [tokenScale, graph.int64([1])])], {}, keys.bias === undefined ? { stem: name } : {});
  if (keys.bias === undefined) return scaled;
  return graph.op("Add", [scaled, graph.initializer(weights.tensor(keys.bias, `${name}.bias`))], {}, { stem: name });
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
function block(build: BackboneBuild, i: number, x3d: string): string {
  const { spec } = build;
  return transformerBlock(build, x3d, { name: `blocks.${i}`, width: spec.width, numHeads: spec.numHeads, eps: spec.layerNormEps, ...spec.keys.blocks[i]! });
}

/** Pre-LN transformer block on [b, n, C] tokens: x + ls1(attn(norm1(x))), then x + ls2(mlp(norm2(x))). */
export function transformerBlock(build: BackboneBuild, x3d: string, p: TransformerBlockParams): string {
  const { graph } = build;
  const { name, width: C } = p;
  const shape3 = graph.op("Shape", [x3d]);
  let x = graph.op("Reshape", [x3d, graph.int64([-1, C])], {}, { stem: `${name}.in` });

  const qkv = linear(build, layerNorm(build, x, p.norm1, `${name}.norm1`, p.eps), p.qkv, `${name}.attn.qkv`);
  const attn = attention(build, qkv, shape3, name, C, p.numHeads);
  x = graph.op("Add", [x, layerScale(build, linear(build, attn, p.proj, `${name}.attn.proj`), p.ls1, `${name}.ls1`)], {}, { stem: `${name}.resid1` });

  const hidden = graph.op(
    "Gelu",
    [linear(build, layerNorm(build, x, p.norm2, `${name}.norm2`, p.eps), p.fc1, `${name}.mlp.fc1`)],
    { approximate: str("none") },
    { stem: `${name}.mlp.gelu` },
  );
  x = graph.op("Add", [x, layerScale(build, linear(build, hidden, p.fc2, `${name}.mlp.fc2`), p.ls2, `${name}.ls2`)], {}, { stem: `${name}.resid2` });
  return graph.op("Reshape", [x, shape3], {}, { stem: `${name}.out` });
}

/** x · gamma (per channel), or x when the block has no LayerScale. */
function layerScale(build: BackboneBuild, x: string, gamma: string | undefined, name: string): string {
  if (gamma === undefined) return x;
  const { graph, weights } = build;
  return graph.op("Mul", [x, graph.initializer(weights.tensor(gamma, `${name}.gamma`))], {}, { stem: name });
}

/** Multi-head self-attention from fused qkv rows [b·n, 3C] to [b·n, C]. */
function attention(build: BackboneBuild, qkv: string, shape3: string, name: string, C: number, H: number): string {
  const { graph, options, dtype } = build;
  const d = C / H;
  const split = graph.opMulti("Split", [qkv, graph.int64([C, C, C])], { axis: int(1) }, { outputs: 3, stem: `${name}.attn.split` });
  const [q, k, v] = split as [string, string, string];
  const bn = graph.op("Slice", [shape3, graph.int64([0]), graph.int64([2])]);
  if (options.attention === "mha") {
    const bnc = graph.op("Concat", [bn, graph.int64([C])], { axis: int(0) });
    const [q3, k3, v3] = [q, k, v].map((t) => graph.op("Reshape", [t, bnc]));
    const attended = graph.op(
      "MultiHeadAttention",
      [q3!, k3!, v3!],
      { num_heads: int(H), scale: float(d ** -0.5) },
      { domain: "ms", stem: `${name}.attn.mha` },
    );
    return graph.op("Reshape", [attended, graph.int64([-1, C])]);
  }
  const bnhd = graph.op("Concat", [bn, graph.int64([H, d])], { axis: int(0) });
  const heads = (t: string, perm: number[]) => graph.op("Transpose", [graph.op("Reshape", [t, bnhd])], { perm: ints(perm) });
  const scale = graph.floatConst([d ** -0.5], [], dtype, "attn_scale");
  const qh = heads(graph.op("Mul", [q, scale]), [0, 2, 1, 3]); // [b, H, n, d]
  const kh = heads(k, [0, 2, 3, 1]); // [b, H, d, n]
  const vh = heads(v, [0, 2, 1, 3]);
  let scores = graph.op("MatMul", [qh, kh], {}, { stem: `${name}.attn.scores` });
  // Softmax in float32 even in fp16 graphs.
  if (dtype !== DataType.FLOAT) scores = graph.op("Cast", [scores], { to: int(DataType.FLOAT) });
  let probs = graph.op("Softmax", [scores], { axis: int(-1) }, { stem: `${name}.attn.softmax` });
  if (dtype !== DataType.FLOAT) probs = graph.op("Cast", [probs], { to: int(dtype) });
  const attended = graph.op("MatMul", [probs, vh]); // [b, H, n, d]
  return graph.op("Reshape", [graph.op("Transpose", [attended], { perm: ints([0, 2, 1, 3]) }), graph.int64([-1, C])], {}, { stem: `${name}.attn.out` });
}

/** (f - mean) @ tx^T, when the checkpoint carries a feature normalizer. */
function featureNormalizer(build: BackboneBuild, features: string): string {
  const { graph, weights, spec } = build;
  const C = spec.width;
  const keys = spec.keys.featureNormalizer!;
  const mean = graph.initializer(weights.tensor(keys.mean, "feature_normalizer.mean"));
  const tx = graph.initializer(weights.tensor(keys.tx, "feature_normalizer.tx"));
  const shape = graph.op("Shape", [features]);
  const centered = graph.op("Reshape", [graph.op("Sub", [features, mean]), graph.int64([-1, C])]);
  return graph.op("Reshape", [graph.op("Gemm", [centered, tx], { transB: int(1) }), shape], {}, { stem: "features_normalized" });
}
