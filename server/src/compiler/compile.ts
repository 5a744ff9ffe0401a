// Checkpoint folder → compiled graph folder (model.onnx + weights + metadata.json). A pure function
// of the checkpoint and the options: the server only ever loads what this wrote.
import { createHash } from "node:crypto";
import { createReadStream, mkdirSync, readdirSync, realpathSync, rmSync, writeFileSync } from "node:fs";
import { basename, dirname, join, resolve } from "node:path";
import { extractAdaptors, type AdaptorSpec } from "../checkpoint/adaptors.js";
import { CheckpointError } from "../checkpoint/config.js";
import { SafetensorsCheckpoint } from "../checkpoint/safetensors.js";
import { loadCheckpoint } from "../checkpoint/spec.js";
import { ATTN_BLOCK_LAYER_NORM_EPS, adaptorOutputNames, buildAdaptorHeads } from "./adaptor-heads.js";
import { GraphBuilder } from "./onnx-graph.js";
import { METADATA_FILE, MODEL_FILE, type AdaptorMetadata, type GraphMetadata } from "./metadata.js";
import { buildVitGraph, OPSET, type AttentionImpl } from "./vit.js";
import { WeightStore, type Precision, type WeightsMode } from "./weights.js";
import { GRAPH_FORMAT, PRODUCT } from "../version.js";
import { buildHeatmapHead, HEATMAP_LANCZOS_STEPS, HEATMAP_OUTPUTS } from "./heatmap-head.js";

export interface CompileOptions {
  checkpointDir: string;
  outDir: string;
  precision?: Precision;
  windowSize?: number | null;
  attention?: AttentionImpl;
  weightsMode?: WeightsMode;
  /** Adaptor heads to compile in as extra outputs (e.g. siglip2-g, dino_v3_7b, sam3). */
  adaptors?: string[];
  /** The torch.hub checkpoint (.pth.tar) holding the adaptor heads; default: the one *.pth.tar in checkpointDir. */
  torchhubCheckpoint?: string;
  /** The heatmap PCA's heavy half as extra outputs (heatmap-head.ts): for GPU providers. */
  heatmap?: boolean;
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

/** Where each variant's torch.hub checkpoint (the only file with the adaptor heads) is published. */
const TORCHHUB_FILES: Record<string, { repo: string; file: string }> = {
  "c-radio_v4-h": { repo: "nvidia/C-RADIOv4-H", file: "c-radio_v4-h_half.pth.tar" },
  "c-radio_v4-so400m": { repo: "nvidia/C-RADIOv4-SO400M", file: "c-radio_v4-so400m_half.pth.tar" },
};

/** The torch.hub checkpoint to read adaptors from: the one given, else the single *.pth.tar beside the HF files. */
function findTorchhubCheckpoint(checkpointDir: string, given: string | undefined, variant: string): string {
  if (given) return resolve(given);
  const found = readdirSync(checkpointDir)
    .filter((f) => f.endsWith(".pth.tar"))
    .sort();
  if (found.length === 1) return join(checkpointDir, found[0]!);
  if (found.length > 1)
    throw new CheckpointError(`${checkpointDir} holds several torch.hub checkpoints (${found.join(", ")}): choose one with --torchhub-checkpoint`);
  const hub = TORCHHUB_FILES[variant];
  const hint = hub
    ? `download ${hub.file} from https://huggingface.co/${hub.repo}/resolve/main/${hub.file}`
    : "download the variant's torch.hub checkpoint (*.pth.tar)";
  throw new CheckpointError(
    `adaptor heads are only in the torch.hub checkpoint, and ${checkpointDir} has no *.pth.tar: ${hint} and pass it with --torchhub-checkpoint <path> (or put it in the checkpoint folder)`,
  );
}

function adaptorMetadata(a: AdaptorSpec): AdaptorMetadata {
  const mlp = ({ inputDim, hiddenDim, outputDim, numBlocks }: { inputDim: number; hiddenDim: number; outputDim: number; numBlocks: number }) => ({
    type: "v2" as const,
    inputDim,
    hiddenDim,
    outputDim,
    numBlocks,
  });
  const f = a.features;
  return {
    name: a.name,
    tokenSlot: a.tokenSlot,
    summaryDim: a.summary.outputDim,
    featureDim: f.outputDim,
    outputs: adaptorOutputNames(a.name),
    summaryHead: mlp(a.summary),
    featureHead:
      f.type === "attn"
        ? {
            type: "attn",
            inputDim: f.inputDim,
            outputDim: f.outputDim,
            numAttnBlocks: f.numAttnBlocks,
            numHeads: f.numHeads,
            blockMlpDim: f.blockMlpDim,
            layerNormEps: ATTN_BLOCK_LAYER_NORM_EPS,
            mlp: mlp(f.mlp),
          }
        : mlp(f),
  };
}

export async function compileCheckpoint(options: CompileOptions): Promise<CompileResult> {
  const t0 = performance.now();
  const precision = options.precision ?? "fp32";
  const windowSize = options.windowSize ?? null;
  const attention = options.attention ?? "matmul";
  const weightsMode = options.weightsMode ?? "link";
  if (precision === "int8" && attention !== "matmul") throw new Error("int8 graphs use MatMul/Softmax attention (--attention matmul or auto)");
  if (windowSize !== null && (!Number.isInteger(windowSize) || windowSize < 1)) throw new Error(`window size must be a positive integer, got ${windowSize}`);

  options.onStage?.("reading checkpoint");
  const ckpt = loadCheckpoint(resolve(options.checkpointDir));
  const outDir = resolve(options.outDir);
  const adaptorNames = options.adaptors ?? [];
  // The heads' tensors go to adaptors.safetensors, read through the same WeightStore: linked into
  // the output folder (fp32) or converted into the graph's own weight file. Written in a scratch
  // folder first, since the store (re)creates its links in the output folder.
  const scratch = join(outDir, ".adaptors.tmp");
  let weights = ckpt.weights;
  try {
    rmSync(join(outDir, MODEL_FILE), { force: true });
    mkdirSync(outDir, { recursive: true });
    let adaptors: AdaptorSpec[] = [];
    let pth: string | null = null;
    if (adaptorNames.length) {
      pth = findTorchhubCheckpoint(resolve(options.checkpointDir), options.torchhubCheckpoint, ckpt.spec.version);
      options.onStage?.(`reading adaptors ${adaptorNames.join(", ")} from ${basename(pth)}`);
      mkdirSync(scratch, { recursive: true });
      const file = join(scratch, "adaptors.safetensors");
      adaptors = await extractAdaptors(pth, adaptorNames, file);
      weights = new SafetensorsCheckpoint([...ckpt.weights.paths, file]);
    }
    const store = new WeightStore(weights, outDir, precision, weightsMode);
    const graph = new GraphBuilder(OPSET);
    options.onStage?.(precision === "fp32" ? "building graph" : `building graph (converting weights to ${precision})`);
    try {
      const taps = buildVitGraph(graph, store, ckpt.spec, { windowSize, attention });
      buildAdaptorHeads(taps, adaptors);
      if (options.heatmap) buildHeatmapHead(taps);
    } finally {
      store.close();
    }
    // A hard link can't cross filesystems: say so, since the copy costs a second 2.6 GB on disk.
    for (const f of store.linkFallbacks)
      options.onStage?.(`could not hard-link the weights (${f}): the checkpoint and the output folder are on different filesystems`);
    const { spec } = ckpt;
    const bytes = graph.build({ name: PRODUCT.name, version: PRODUCT.version }, { variant: spec.version, precision });
    writeFileSync(join(outDir, MODEL_FILE), bytes);

    options.onStage?.("hashing");
    const sha256: Record<string, string> = { [MODEL_FILE]: createHash("sha256").update(bytes).digest("hex") };
    for (const f of store.files) sha256[f] = await sha256Of(join(outDir, f));

    const metadata: GraphMetadata = {
      format: GRAPH_FORMAT,
      variant: spec.version,
      source: { repo: options.repo ?? null, revision: options.revision ?? null, dir: ckpt.dir },
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
      opset: OPSET,
      weights: { mode: precision === "fp16" ? "copy" : weightsMode, files: store.files },
      sha256,
      compiler: { name: PRODUCT.name, version: PRODUCT.version },
      ignoredTensors: spec.ignoredTensors,
      adaptors: adaptors.map(adaptorMetadata),
      adaptorSource: pth ? { file: basename(pth), dir: dirname(pth) } : null,
      heatmap: options.heatmap ? { steps: HEATMAP_LANCZOS_STEPS, outputs: { ...HEATMAP_OUTPUTS } } : null,
    };
    writeFileSync(join(outDir, METADATA_FILE), `${JSON.stringify(metadata, null, 2)}\n`);
    return { metadata, outDir, nodeCount: graph.nodeCount, seconds: (performance.now() - t0) / 1000 };
  } finally {
    if (weights !== ckpt.weights) weights.close();
    ckpt.weights.close();
    rmSync(scratch, { recursive: true, force: true });
  }
}
