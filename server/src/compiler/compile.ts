// Checkpoint folder → compiled graph folder (model.onnx + weights + metadata.json). A pure function
// of the checkpoint and the options: the server only ever loads what this wrote.
import { createHash } from "node:crypto";
import { createReadStream, mkdirSync, realpathSync, rmSync, writeFileSync } from "node:fs";
import { basename, join, resolve } from "node:path";
import { loadCheckpoint } from "../checkpoint/spec.js";
import { GraphBuilder } from "./onnx-graph.js";
import { METADATA_FILE, MODEL_FILE, type GraphMetadata } from "./metadata.js";
import { buildVitGraph, OPSET, type AttentionImpl } from "./vit.js";
import { WeightStore, type Precision, type WeightsMode } from "./weights.js";
import { PRODUCT } from "../version.js";

export interface CompileOptions {
  checkpointDir: string;
  outDir: string;
  precision?: Precision;
  windowSize?: number | null;
  externalPreprocessor?: boolean;
  attention?: AttentionImpl;
  weightsMode?: WeightsMode;
  /** Provenance recorded in metadata.json. */
  repo?: string | null;
  revision?: string | null;
  onStage?: (stage: string) => void;
}

export interface CompileResult {
  metadata: GraphMetadata;
  outDir: string;
  nodeCount: number;
  seconds: number;
}

/** Hugging Face cache blobs of LFS files are named by their sha256, which the download verified. */
export async function sha256Of(path: string): Promise<string> {
  const real = realpathSync(path);
  const name = basename(real);
  if (/^[0-9a-f]{64}$/.test(name)) return name;
  const h = createHash("sha256");
  for await (const chunk of createReadStream(real)) h.update(chunk as Buffer);
  return h.digest("hex");
}

export async function compileCheckpoint(o: CompileOptions): Promise<CompileResult> {
  const t0 = performance.now();
  const precision = o.precision ?? "fp32";
  const windowSize = o.windowSize ?? null;
  const attention = o.attention ?? "matmul";
  const weightsMode = o.weightsMode ?? "link";
  const externalPreprocessor = o.externalPreprocessor ?? false;
  if (precision === "int8" && attention !== "matmul") throw new Error("int8 graphs use MatMul/Softmax attention (--attention matmul or auto)");
  if (windowSize !== null && (!Number.isInteger(windowSize) || windowSize < 1)) throw new Error(`window size must be a positive integer, got ${windowSize}`);

  o.onStage?.("reading checkpoint");
  const ckpt = loadCheckpoint(resolve(o.checkpointDir));
  const outDir = resolve(o.outDir);
  try {
    rmSync(join(outDir, MODEL_FILE), { force: true });
    mkdirSync(outDir, { recursive: true });
    const store = new WeightStore(ckpt.weights, outDir, precision, weightsMode);
    const g = new GraphBuilder(OPSET);
    o.onStage?.(precision === "fp32" ? "building graph" : `building graph (converting weights to ${precision})`);
    try {
      buildVitGraph(g, store, ckpt.spec, { externalPreprocessor, windowSize, attention });
    } finally {
      store.close();
    }
    // A hard link can't cross filesystems: say so, since the copy costs a second 2.6 GB on disk.
    for (const f of store.linkFallbacks) o.onStage?.(`could not hard-link the weights (${f}): the checkpoint and the output folder are on different filesystems`);
    const { spec } = ckpt;
    const bytes = g.build({ name: PRODUCT.name, version: PRODUCT.version }, { variant: spec.version, precision });
    writeFileSync(join(outDir, MODEL_FILE), bytes);

    o.onStage?.("hashing");
    const sha256: Record<string, string> = { [MODEL_FILE]: createHash("sha256").update(bytes).digest("hex") };
    for (const f of store.files) sha256[f] = await sha256Of(join(outDir, f));

    const metadata: GraphMetadata = {
      format: "radio-onnx/1",
      variant: spec.version,
      source: { repo: o.repo ?? null, revision: o.revision ?? null, dir: ckpt.dir },
      architecture: spec.architecture,
      patchSize: spec.patchSize,
      width: spec.width,
      depth: spec.depth,
      numHeads: spec.numHeads,
      numPrefixTokens: spec.numPrefixTokens,
      summaryIdxs: spec.summaryIdxs,
      summaryDim: spec.summaryDim,
      featureDim: spec.width,
      resolution: { preferred: spec.preferredResolution, max: spec.maxResolution, step: spec.patchSize * (windowSize ?? 1) },
      normMean: spec.normMean,
      normStd: spec.normStd,
      windowSize,
      precision,
      attention,
      externalPreprocessor,
      opset: OPSET,
      weights: { mode: precision === "fp16" ? "copy" : weightsMode, files: store.files },
      sha256,
      compiler: { name: PRODUCT.name, version: PRODUCT.version },
      ignoredTensors: spec.ignoredTensors,
      adaptors: [],
    };
    writeFileSync(join(outDir, METADATA_FILE), JSON.stringify(metadata, null, 2) + "\n");
    return { metadata, outDir, nodeCount: g.nodeCount, seconds: (performance.now() - t0) / 1000 };
  } finally {
    ckpt.weights.close();
  }
}
