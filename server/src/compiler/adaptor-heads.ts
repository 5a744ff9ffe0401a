// The C-RADIOv4 adaptor heads as extra outputs of the image graph: for each adaptor, its summary
// head on the backbone's cls token at the adaptor's token slot, and its dense head on the patch
// tokens. They compute in the graph's precision, like the backbone, and output float32:
// `<name>.summary` [B, D_sum] and `<name>.features` [B, h·w, D_feat] (raster order).
import type { AdaptorSpec, AttnHead, Mlp2Head } from "../checkpoint/adaptors.js";
import { DataType, int, str } from "./onnx-graph.js";
import { layerNorm, linear, transformerBlock, type BackboneBuild, type VitTaps } from "./vit.js";

/** torch.nn.LayerNorm's default, used by the v2 MLP heads. */
const MLP_LAYER_NORM_EPS = 1e-5;

/**
 * LayerNorm eps inside the `attn` head's ViT blocks. Upstream builds them with timm's `Block`
 * default norm layer: timm ≥ 1.0.16 uses its own LayerNorm with eps 1e-6, timm ≤ 1.0.15 used
 * nn.LayerNorm (1e-5). 1e-6 matches the shared reference (timm 1.0.29); the two differ by ~2e-6
 * relative L2 on the dense siglip2-g output.
 */
export const ATTN_BLOCK_LAYER_NORM_EPS = 1e-6;

export const adaptorOutputNames = (name: string) => ({ summary: `${name}.summary`, features: `${name}.features` });

/** Adds every adaptor's two outputs to the graph. */
export function buildAdaptorHeads(taps: VitTaps, adaptors: readonly AdaptorSpec[]): void {
  const { build, tokens, features } = taps;
  const { graph, spec } = build;
  for (const a of adaptors) {
    if (a.tokenSlot < 0 || a.tokenSlot >= spec.numClsTokens) {
      throw new Error(`adaptor ${a.name} reads cls token ${a.tokenSlot}, but the backbone has ${spec.numClsTokens} cls tokens`);
    }
    for (const h of [a.summary, a.features]) {
      if (h.inputDim !== spec.width)
        throw new Error(`adaptor ${a.name}'s heads take width ${h.inputDim}, but the backbone is ${spec.width} wide (a .pth for another model?)`);
    }
    const out = adaptorOutputNames(a.name);
    const cls = graph.op("Gather", [tokens, graph.int64([a.tokenSlot], true)], { axis: int(1) }, { stem: `${a.name}.cls` }); // [B, C]
    const summary = mlp2(build, cls, a.summary, `${a.name}.summary`);
    graph.output(toFloat(build, summary), out.summary, DataType.FLOAT, ["batch", a.summary.outputDim]);
    const dense = denseHead(build, features, a.features, `${a.name}.features`);
    graph.output(toFloat(build, dense), out.features, DataType.FLOAT, ["batch", "patches", a.features.outputDim]);
  }
}

function toFloat(build: BackboneBuild, x: string): string {
  return build.dtype === DataType.FLOAT ? x : build.graph.op("Cast", [x], { to: int(DataType.FLOAT) });
}

const pair = (base: string) => ({ weight: `${base}.weight`, bias: `${base}.bias` });

function gelu(build: BackboneBuild, x: string, name: string): string {
  return build.graph.op("Gelu", [x], { approximate: str("none") }, { stem: name });
}

/** MLP2 on rows [n, in] → [n, out]: fc1, then x + Linear(GELU(LN(x))) per block, then Linear(GELU(LN(x))). */
function mlp2(build: BackboneBuild, x2d: string, h: Mlp2Head, name: string): string {
  const { graph } = build;
  const p = h.prefix;
  let x = linear(build, x2d, pair(`${p}fc1`), `${name}.fc1`);
  for (let i = 0; i < h.numBlocks; i++) {
    const n = `${name}.blocks.${i}`;
    const y = linear(
      build,
      gelu(build, layerNorm(build, x, pair(`${p}blocks.${i}.0`), `${n}.norm`, MLP_LAYER_NORM_EPS), `${n}.gelu`),
      pair(`${p}blocks.${i}.2`),
      `${n}.linear`,
    );
    x = graph.op("Add", [x, y], {}, { stem: `${n}.resid` });
  }
  const n = `${name}.final`;
  return linear(build, gelu(build, layerNorm(build, x, pair(`${p}final.0`), `${n}.norm`, MLP_LAYER_NORM_EPS), `${n}.gelu`), pair(`${p}final.2`), `${n}.linear`);
}

/** The dense head on patch tokens [B, N, C] → [B, N, D]. */
function denseHead(build: BackboneBuild, patches: string, h: Mlp2Head | AttnHead, name: string): string {
  const { graph } = build;
  let x = patches;
  if (h.type === "attn") x = attnBlocks(build, x, h, name);
  const rows = graph.op("Reshape", [x, graph.int64([-1, h.inputDim])], {}, { stem: `${name}.rows` });
  const y = mlp2(build, rows, h.type === "attn" ? h.mlp : h, h.type === "attn" ? `${name}.mlp` : name);
  const batch = graph.op("Slice", [graph.op("Shape", [patches]), graph.int64([0]), graph.int64([1])]);
  return graph.op("Reshape", [y, graph.op("Concat", [batch, graph.int64([-1, h.outputDim])], { axis: int(0) })], {}, { stem: `${name}.nlc` });
}

/** The `attn` head's pre-LN ViT blocks (bias-free qkv, LayerScale on both branches). */
function attnBlocks(build: BackboneBuild, x3d: string, h: AttnHead, name: string): string {
  let x = x3d;
  for (let b = 0; b < h.numAttnBlocks; b++) {
    const k = `${h.prefix}blocks.${b}.`;
    x = transformerBlock(build, x, {
      name: `${name}.blocks.${b}`,
      width: h.inputDim,
      numHeads: h.numHeads,
      eps: ATTN_BLOCK_LAYER_NORM_EPS,
      norm1: pair(`${k}norm1`),
      qkv: { weight: `${k}attn.qkv.weight` },
      proj: pair(`${k}attn.proj`),
      norm2: pair(`${k}norm2`),
      fc1: pair(`${k}mlp.fc1`),
      fc2: pair(`${k}mlp.fc2`),
      ls1: `${k}ls1.gamma`,
      ls2: `${k}ls2.gamma`,
    });
  }
  return x;
}
