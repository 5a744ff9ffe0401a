// metadata.json written beside every compiled graph: what the runtime and clients need to know about
// it without opening the ONNX file.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { z } from "zod";

export const METADATA_FILE = "metadata.json";
export const MODEL_FILE = "model.onnx";

export const GraphMetadataSchema = z.object({
  format: z.literal("radio-onnx/1"),
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
  externalPreprocessor: z.boolean(),
  opset: z.number().int(),
  weights: z.object({ mode: z.enum(["link", "copy"]), files: z.array(z.string()) }),
  sha256: z.record(z.string(), z.string()),
  compiler: z.object({ name: z.string(), version: z.string() }),
  ignoredTensors: z.array(z.string()),
  /** Adaptor heads compiled into the graph: outputs `<name>.summary` and `<name>.features`. */
  adaptors: z.array(z.looseObject({ name: z.string(), summaryDim: z.number().int(), featureDim: z.number().int() })).default([]),
});

export type GraphMetadata = z.infer<typeof GraphMetadataSchema>;

export function readGraphMetadata(dir: string): GraphMetadata {
  const path = join(dir, METADATA_FILE);
  let json: unknown;
  try {
    json = JSON.parse(readFileSync(path, "utf8"));
  } catch (err) {
    throw new Error(`${dir} is not a compiled RADIO graph folder (cannot read ${METADATA_FILE}: ${(err as Error).message}); compile one with \`radio-sidecar compile\``);
  }
  const r = GraphMetadataSchema.safeParse(json);
  if (!r.success) throw new Error(`${path} is invalid: ${r.error.issues.map((i) => `${i.path.join(".")}: ${i.message}`).join("; ")}`);
  return r.data;
}
