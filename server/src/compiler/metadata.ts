// metadata.json written beside every compiled graph: what the runtime and clients need to know about
// it without opening the ONNX file.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { z } from "zod";
import { GRAPH_FORMAT } from "../version.js";

export const METADATA_FILE = "metadata.json";
export const MODEL_FILE = "model.onnx";

const Mlp2HeadMetadata = z.object({
  type: z.literal("v2"),
  inputDim: z.number().int(),
  hiddenDim: z.number().int(),
  outputDim: z.number().int(),
  /** Residual blocks between fc1 and the final layer. */
  numBlocks: z.number().int(),
});

const AttnHeadMetadata = z.object({
  type: z.literal("attn"),
  inputDim: z.number().int(),
  outputDim: z.number().int(),
  numAttnBlocks: z.number().int(),
  numHeads: z.number().int(),
  blockMlpDim: z.number().int(),
  /** LayerNorm eps inside the ViT blocks (timm ≥ 1.0.16: 1e-6). */
  layerNormEps: z.number(),
  mlp: Mlp2HeadMetadata,
});

/** One adaptor compiled into the graph: its outputs `<name>.summary` and `<name>.features`. */
export const AdaptorMetadataSchema = z.object({
  name: z.string(),
  /** Which backbone cls token feeds the summary head. */
  tokenSlot: z.number().int(),
  summaryDim: z.number().int(),
  featureDim: z.number().int(),
  outputs: z.object({ summary: z.string(), features: z.string() }),
  summaryHead: Mlp2HeadMetadata,
  featureHead: z.discriminatedUnion("type", [Mlp2HeadMetadata, AttnHeadMetadata]),
});

export type AdaptorMetadata = z.infer<typeof AdaptorMetadataSchema>;

export const GraphMetadataSchema = z.object({
  format: z.literal(GRAPH_FORMAT, {
    error: (issue) =>
      `a ${String(issue.input)} graph, written by an earlier version (this one reads ${GRAPH_FORMAT}: uint8 pixels); compile it again with \`radio-sidecar compile\` (the zoo does so by itself)`,
  }),
  variant: z.string(),
  source: z.object({ repo: z.string().nullable(), revision: z.string().nullable(), dir: z.string() }),
  architecture: z.string(),
  patchSize: z.number().int(),
  width: z.number().int(),
  depth: z.number().int(),
  numHeads: z.number().int(),
  numPrefixTokens: z.number().int(),
  summaryIdxs: z.array(z.number().int()),
  summaryDim: z.number().int(),
  featureDim: z.number().int(),
  resolution: z.object({
    preferred: z.tuple([z.number().int(), z.number().int()]),
    max: z.number().int(),
    /** Inputs must be multiples of this (patch size × ViTDet window). */
    step: z.number().int(),
  }),
  normMean: z.array(z.number()).length(3),
  normStd: z.array(z.number()).length(3),
  windowSize: z.number().int().nullable(),
  precision: z.enum(["fp32", "fp16", "int8"]),
  attention: z.enum(["matmul", "mha"]),
  opset: z.number().int(),
  weights: z.object({ mode: z.enum(["link", "copy"]), files: z.array(z.string()) }),
  sha256: z.record(z.string(), z.string()),
  compiler: z.object({ name: z.string(), version: z.string() }),
  ignoredTensors: z.array(z.string()),
  /** Adaptor heads compiled in (graphs compiled before adaptors existed have none). */
  adaptors: z.array(AdaptorMetadataSchema).default([]),
  /** compile --heatmap: the heatmap PCA's heavy half as outputs (compiler/heatmap-head.ts); null without. */
  heatmap: z
    .object({
      steps: z.number().int(),
      outputs: z.object({ basis: z.string(), tridiagonal: z.string(), projections: z.string(), outliers: z.string(), norms: z.string() }),
    })
    .nullable()
    .default(null),
  /** The torch.hub checkpoint the adaptor heads came from (null without adaptors). */
  adaptorSource: z.object({ file: z.string(), dir: z.string() }).nullable().default(null),
});

export type GraphMetadata = z.infer<typeof GraphMetadataSchema>;

/** A compiled folder's metadata.json, parsed by `schema`; errors name the folder, what it should be and how to make one. */
export function readMetadataFile<T>(dir: string, schema: z.ZodType<T>, what: string, command: string): T {
  const path = join(dir, METADATA_FILE);
  let json: unknown;
  try {
    json = JSON.parse(readFileSync(path, "utf8"));
  } catch (err) {
    throw new Error(
      `${dir} is not a compiled ${what} folder (cannot read ${METADATA_FILE}: ${(err as Error).message}); compile one with \`radio-sidecar ${command}\``,
    );
  }
  const r = schema.safeParse(json);
  if (!r.success) throw new Error(`${path} is invalid: ${r.error.issues.map((i) => `${i.path.join(".")}: ${i.message}`).join("; ")}`);
  return r.data;
}

export function readGraphMetadata(dir: string): GraphMetadata {
  return readMetadataFile(dir, GraphMetadataSchema, "RADIO graph", "compile");
}
