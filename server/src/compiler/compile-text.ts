// SigLIP checkpoint folder → compiled text-tower folder: model.onnx + weights + the tokenizer files
// + metadata.json. Like compileCheckpoint, a pure function of the checkpoint and the options.
import { createHash } from "node:crypto";
import { copyFileSync, existsSync, mkdirSync, rmSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { loadSiglipText } from "../checkpoint/siglip.js";
import { PromptTokenizer, TOKENIZER_FILES } from "../preprocess/text.js";
import { PRODUCT } from "../version.js";
import { sha256Of } from "./compile.js";
import { METADATA_FILE, MODEL_FILE } from "./metadata.js";
import { GraphBuilder } from "./onnx-graph.js";
import { TEXT_FORMAT, type TextGraphMetadata } from "./text-metadata.js";
import { buildTextGraph, TEXT_INPUT, TEXT_OUTPUT } from "./text-tower.js";
import { OPSET } from "./vit.js";
import { WeightStore, type Precision, type WeightsMode } from "./weights.js";

export interface CompileTextOptions {
  /** A local google/siglip2-* folder: config.json, safetensors (+ index), tokenizer files. */
  siglipDir: string;
  outDir: string;
  /** fp32 (exact), fp16 (GPU), int8 (encoder linears and head int8; embeddings and the rest fp32). */
  precision?: Precision;
  weightsMode?: WeightsMode;
  /** The RADIO adaptor whose summary space these embeddings share (default "siglip2-g"). */
  space?: string;
  repo?: string | null;
  revision?: string | null;
  onStage?: (stage: string) => void;
}

export interface CompileTextResult {
  metadata: TextGraphMetadata;
  outDir: string;
  nodeCount: number;
  seconds: number;
}

export async function compileTextTower(options: CompileTextOptions): Promise<CompileTextResult> {
  const t0 = performance.now();
  const precision = options.precision ?? "fp32";
  const weightsMode = options.weightsMode ?? "link";
  const siglipDir = resolve(options.siglipDir);
  options.onStage?.("reading checkpoint");
  const ckpt = loadSiglipText(siglipDir);
  try {
    const { spec } = ckpt;
    // Load the tokenizer now: a folder whose tokenizer disagrees with the tower fails before any writing.
    const tokenizer = PromptTokenizer.fromDir(siglipDir, { contextLength: spec.contextLength });
    if (tokenizer.vocabSize > spec.vocabSize) {
      throw new Error(`${siglipDir}: tokenizer.json has ${tokenizer.vocabSize} ids but the text tower's embedding has ${spec.vocabSize} rows`);
    }
    const outDir = resolve(options.outDir);
    rmSync(join(outDir, MODEL_FILE), { force: true });
    mkdirSync(outDir, { recursive: true });
    const store = new WeightStore(ckpt.weights, outDir, precision, weightsMode);
    const graph = new GraphBuilder(OPSET);
    options.onStage?.(precision === "fp32" ? "building graph" : `building graph (converting weights to ${precision})`);
    try {
      buildTextGraph(graph, store, spec);
    } finally {
      store.close();
    }
    for (const f of store.linkFallbacks)
      options.onStage?.(`could not hard-link the weights (${f}): the checkpoint and the output folder are on different filesystems`);
    const bytes = graph.build({ name: PRODUCT.name, version: PRODUCT.version }, { variant: "siglip-text", precision });
    writeFileSync(join(outDir, MODEL_FILE), bytes);

    const tokenizerFiles = TOKENIZER_FILES.filter((f) => existsSync(join(siglipDir, f)));
    for (const f of tokenizerFiles) copyFileSync(join(siglipDir, f), join(outDir, f));

    options.onStage?.("hashing");
    const sha256: Record<string, string> = { [MODEL_FILE]: createHash("sha256").update(bytes).digest("hex") };
    for (const f of [...store.files, ...tokenizerFiles]) sha256[f] = await sha256Of(join(outDir, f));

    const metadata: TextGraphMetadata = {
      format: TEXT_FORMAT,
      space: options.space ?? "siglip2-g",
      source: { repo: options.repo ?? null, revision: options.revision ?? null, dir: siglipDir },
      input: TEXT_INPUT,
      output: TEXT_OUTPUT,
      contextLength: spec.contextLength,
      embedDim: spec.projectionSize,
      width: spec.width,
      depth: spec.depth,
      numHeads: spec.numHeads,
      vocabSize: spec.vocabSize,
      padId: tokenizer.padId,
      eosId: tokenizer.eosId,
      logitScale: ckpt.logitScale,
      logitBias: ckpt.logitBias,
      canonicalize: true,
      tokenizerFiles,
      precision,
      opset: OPSET,
      weights: { mode: precision === "fp16" ? "copy" : weightsMode, files: store.files },
      sha256,
      compiler: { name: PRODUCT.name, version: PRODUCT.version },
    };
    writeFileSync(join(outDir, METADATA_FILE), `${JSON.stringify(metadata, null, 2)}\n`);
    return { metadata, outDir, nodeCount: graph.nodeCount, seconds: (performance.now() - t0) / 1000 };
  } finally {
    ckpt.weights.close();
  }
}
