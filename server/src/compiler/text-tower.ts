// The SigLIP / SigLIP2 text tower as an ONNX graph, in the order of the forward pass: token +
// position embedding, pre-LN encoder layers (no attention mask: every position, pads included,
// attends to all 64), final LayerNorm at the last position, head. Input `input_ids` int64
// [batch, context]; output `text_embeds` float32 [batch, projection] (unnormalised: the caller
// L2-normalises).
import { DataType, type GraphBuilder, float, int, ints, str } from "./onnx-graph.js";
import { linear } from "./vit.js";
import type { LinearKeys, TextLayerKeys, TextTowerSpec } from "../checkpoint/siglip.js";
import type { WeightStore } from "./weights.js";

export const TEXT_INPUT = "input_ids";
export const TEXT_OUTPUT = "text_embeds";

interface Ctx {
  g: GraphBuilder;
  w: WeightStore;
  spec: TextTowerSpec;
  dt: number;
}

export function buildTextGraph(g: GraphBuilder, w: WeightStore, spec: TextTowerSpec): void {
  const ctx: Ctx = { g, w, spec, dt: w.elemType };
  const { width: C, contextLength: L } = spec;
  const ids = g.input(TEXT_INPUT, DataType.INT64, ["batch", L]);

  let x = embeddings(ctx, ids); // [B, L, C]
  x = g.op("Reshape", [x, g.int64([-1, C])], {}, { stem: "tokens" }); // [B·L, C]
  for (let i = 0; i < spec.depth; i++) x = encoderLayer(ctx, i, x);

  // SigLIP pools the last position (a pad for short prompts), not <eos>. LayerNorm is per token,
  // so only that row needs the final norm.
  const last = g.op("Gather", [g.op("Reshape", [x, g.int64([-1, L, C])]), g.int64([L - 1], true)], { axis: int(1) }, { stem: "pooled" });
  let out = linear(ctx, layerNorm(ctx, last, spec.keys.finalNorm, "final_layer_norm"), spec.keys.head, "head");
  if (ctx.dt !== DataType.FLOAT) out = g.op("Cast", [out], { to: int(DataType.FLOAT) });
  g.output(out, TEXT_OUTPUT, DataType.FLOAT, ["batch", spec.projectionSize]);
}

/** Token embedding rows plus the learned position embedding for positions 0..L-1 (no scaling). */
function embeddings(ctx: Ctx, ids: string): string {
  const { g, w, spec } = ctx;
  // The 256000-row table stays external data pointing into the checkpoint (fp32) like every weight.
  const table = g.initializer(w.tensor(spec.keys.tokenEmbedding, "token_embedding"));
  const positions = g.initializer(w.tensor(spec.keys.positionEmbedding, "position_embedding"));
  const tokens = g.op("Gather", [table, ids], { axis: int(0) }, { stem: "token_embeds" });
  return g.op("Add", [tokens, positions], {}, { stem: "embeds" });
}

function layerNorm(ctx: Ctx, x: string, keys: LinearKeys, name: string): string {
  const { g, w, spec } = ctx;
  const scale = g.initializer(w.tensor(keys.weight, `${name}.weight`));
  const bias = g.initializer(w.tensor(keys.bias, `${name}.bias`));
  // stash_type 1: mean/variance in float32 even for fp16 inputs.
  return g.op("LayerNormalization", [x, scale, bias], { axis: int(-1), epsilon: float(spec.layerNormEps), stash_type: int(1) }, { stem: name });
}

/** Pre-LN encoder layer on [B·L, C] rows: x + attn(ln1(x)), then x + mlp(ln2(x)). */
function encoderLayer(ctx: Ctx, i: number, x: string): string {
  const { g, spec } = ctx;
  const k: TextLayerKeys = spec.keys.layers[i]!;
  const name = `layers.${i}`;
  const h = layerNorm(ctx, x, k.norm1, `${name}.layer_norm1`);
  x = g.op("Add", [x, linear(ctx, selfAttention(ctx, h, k, name), k.out, `${name}.self_attn.out_proj`)], {}, { stem: `${name}.resid1` });
  const fc1 = linear(ctx, layerNorm(ctx, x, k.norm2, `${name}.layer_norm2`), k.fc1, `${name}.mlp.fc1`);
  // gelu_pytorch_tanh: the tanh approximation (exact GELU would be ~1e-4 off).
  const act = g.op("Gelu", [fc1], { approximate: str("tanh") }, { stem: `${name}.mlp.gelu` });
  return g.op("Add", [x, linear(ctx, act, k.fc2, `${name}.mlp.fc2`)], {}, { stem: `${name}.resid2` });
}

/** Multi-head self-attention over all L positions with no mask, [B·L, C] → [B·L, C]. */
function selfAttention(ctx: Ctx, h: string, k: TextLayerKeys, name: string): string {
  const { g, spec, dt } = ctx;
  const { width: C, numHeads: H, contextLength: L } = spec;
  const d = C / H;
  const shape = g.int64([-1, L, H, d]);
  const heads = (t: string, perm: number[]) => g.op("Transpose", [g.op("Reshape", [t, shape])], { perm: ints(perm) });
  const q = heads(linear(ctx, h, k.q, `${name}.self_attn.q_proj`), [0, 2, 1, 3]); // [B, H, L, d]
  const kT = heads(linear(ctx, h, k.k, `${name}.self_attn.k_proj`), [0, 2, 3, 1]); // [B, H, d, L]
  const v = heads(linear(ctx, h, k.v, `${name}.self_attn.v_proj`), [0, 2, 1, 3]);
  // transformers scales the scores (q·kᵀ)·d^-0.5, so do the same rather than pre-scaling q.
  let scores = g.op("Mul", [g.op("MatMul", [q, kT]), g.floatConst([d ** -0.5], [], dt, "attn_scale")], {}, { stem: `${name}.self_attn.scores` });
  // Softmax in float32 even in fp16 graphs.
  if (dt !== DataType.FLOAT) scores = g.op("Cast", [scores], { to: int(DataType.FLOAT) });
  let probs = g.op("Softmax", [scores], { axis: int(-1) }, { stem: `${name}.self_attn.softmax` });
  if (dt !== DataType.FLOAT) probs = g.op("Cast", [probs], { to: int(dt) });
  const o = g.op("MatMul", [probs, v]);
  return g.op("Reshape", [g.op("Transpose", [o], { perm: ints([0, 2, 1, 3]) }), g.int64([-1, C])], {}, { stem: `${name}.self_attn.out` });
}
