// The SigLIP / SigLIP2 text tower as an ONNX graph, in the order of the forward pass: token +
// position embedding, pre-LN encoder layers (no attention mask: every position, pads included,
// attends to all 64), final LayerNorm at the last position, head. Input `input_ids` int64
// [batch, context]; output `text_embeds` float32 [batch, projection] (unnormalised: the caller
// L2-normalises).
import { DataType, type GraphBuilder, float, int, ints, str } from "./onnx-graph.js";
import { linear, type GraphBuild } from "./vit.js";
import type { LinearKeys, TextLayerKeys, TextTowerSpec } from "../checkpoint/siglip.js";
import type { WeightStore } from "./weights.js";

export const TEXT_INPUT = "input_ids";
export const TEXT_OUTPUT = "text_embeds";

/** The text tower graph being built, as its helpers share it. */
interface TextTowerBuild extends GraphBuild {
  spec: TextTowerSpec;
}

export function buildTextGraph(graph: GraphBuilder, weights: WeightStore, spec: TextTowerSpec): void {
  const build: TextTowerBuild = { graph, weights, spec, dtype: weights.elemType };
  const { width: C, contextLength: L } = spec;
  const ids = graph.input(TEXT_INPUT, DataType.INT64, ["batch", L]);

  let x = embeddings(build, ids); // [B, L, C]
  x = graph.op("Reshape", [x, graph.int64([-1, C])], {}, { stem: "tokens" }); // [B·L, C]
  for (let i = 0; i < spec.depth; i++) x = encoderLayer(build, i, x);

  // SigLIP pools the last position (a pad for short prompts), not <eos>. LayerNorm is per token,
  // so only that row needs the final norm.
  const last = graph.op("Gather", [graph.op("Reshape", [x, graph.int64([-1, L, C])]), graph.int64([L - 1], true)], { axis: int(1) }, { stem: "pooled" });
  let out = linear(build, layerNorm(build, last, spec.keys.finalNorm, "final_layer_norm"), spec.keys.head, "head");
  if (build.dtype !== DataType.FLOAT) out = graph.op("Cast", [out], { to: int(DataType.FLOAT) });
  graph.output(out, TEXT_OUTPUT, DataType.FLOAT, ["batch", spec.projectionSize]);
}

/** Token embedding rows plus the learned position embedding for positions 0..L-1 (no scaling). */
function embeddings(build: TextTowerBuild, ids: string): string {
  const { graph, weights, spec } = build;
  // The 256000-row table stays external data pointing into the checkpoint (fp32) like every weight.
  const table = graph.initializer(weights.tensor(spec.keys.tokenEmbedding, "token_embedding"));
  const positions = graph.initializer(weights.tensor(spec.keys.positionEmbedding, "position_embedding"));
  const tokens = graph.op("Gather", [table, ids], { axis: int(0) }, { stem: "token_embeds" });
  return graph.op("Add", [tokens, positions], {}, { stem: "embeds" });
}

function layerNorm(build: TextTowerBuild, x: string, keys: LinearKeys, name: string): string {
  const { graph, weights, spec } = build;
  const scale = graph.initializer(weights.tensor(keys.weight, `${name}.weight`));
  const bias = graph.initializer(weights.tensor(keys.bias, `${name}.bias`));
  // stash_type 1: mean/variance in float32 even for fp16 inputs.
  return graph.op("LayerNormalization", [x, scale, bias], { axis: int(-1), epsilon: float(spec.layerNormEps), stash_type: int(1) }, { stem: name });
}

/** Pre-LN encoder layer on [B·L, C] rows: x + attn(ln1(x)), then x + mlp(ln2(x)). */
function encoderLayer(build: TextTowerBuild, i: number, x: string): string {
  const { graph, spec } = build;
  const k: TextLayerKeys = spec.keys.layers[i]!;
  const name = `layers.${i}`;
  const h = layerNorm(build, x, k.norm1, `${name}.layer_norm1`);
  x = graph.op("Add", [x, linear(build, selfAttention(build, h, k, name), k.out, `${name}.self_attn.out_proj`)], {}, { stem: `${name}.resid1` });
  const fc1 = linear(build, layerNorm(build, x, k.norm2, `${name}.layer_norm2`), k.fc1, `${name}.mlp.fc1`);
  // gelu_pytorch_tanh: the tanh approximation (exact GELU would be ~1e-4 off).
  const act = graph.op("Gelu", [fc1], { approximate: str("tanh") }, { stem: `${name}.mlp.gelu` });
  return graph.op("Add", [x, linear(build, act, k.fc2, `${name}.mlp.fc2`)], {}, { stem: `${name}.resid2` });
}

/** Multi-head self-attention over all L positions with no mask, [B·L, C] → [B·L, C]. */
function selfAttention(build: TextTowerBuild, h: string, k: TextLayerKeys, name: string): string {
  const { graph, spec, dtype } = build;
  const { width: C, numHeads: H, contextLength: L } = spec;
  const d = C / H;
  const shape = graph.int64([-1, L, H, d]);
  const heads = (t: string, perm: number[]) => graph.op("Transpose", [graph.op("Reshape", [t, shape])], { perm: ints(perm) });
  const q = heads(linear(build, h, k.q, `${name}.self_attn.q_proj`), [0, 2, 1, 3]); // [B, H, L, d]
  const kT = heads(linear(build, h, k.k, `${name}.self_attn.k_proj`), [0, 2, 3, 1]); // [B, H, d, L]
  const v = heads(linear(build, h, k.v, `${name}.self_attn.v_proj`), [0, 2, 1, 3]);
  // transformers scales the scores (q·kᵀ)·d^-0.5, so do the same rather than pre-scaling q.
  let scores = graph.op("Mul", [graph.op("MatMul", [q, kT]), graph.floatConst([d ** -0.5], [], dtype, "attn_scale")], {}, { stem: `${name}.self_attn.scores` });
  // Softmax in float32 even in fp16 graphs.
  if (dtype !== DataType.FLOAT) scores = graph.op("Cast", [scores], { to: int(DataType.FLOAT) });
  let probs = graph.op("Softmax", [scores], { axis: int(-1) }, { stem: `${name}.self_attn.softmax` });
  if (dtype !== DataType.FLOAT) probs = graph.op("Cast", [probs], { to: int(dtype) });
  const attended = graph.op("MatMul", [probs, v]); // [B, H, L, d]
  return graph.op("Reshape", [graph.op("Transpose", [attended], { perm: ints([0, 2, 1, 3]) }), graph.int64([-1, C])], {}, { stem: `${name}.self_attn.out` });
}
