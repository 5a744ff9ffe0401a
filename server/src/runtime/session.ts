// onnxruntime-node sessions for compiled graphs: execution provider and thread settings in one place.
import * as ort from "onnxruntime-node";
import { join } from "node:path";
import { MODEL_FILE, readGraphMetadata, type GraphMetadata } from "../compiler/metadata.js";

/** onnxruntime execution providers this server runs graphs on ("webgpu": Dawn over Vulkan, built into onnxruntime-node). */
export type ExecutionProvider = "cpu" | "cuda" | "webgpu";

export interface SessionOptions {
  provider?: ExecutionProvider;
  /** ORT intra-op threads (0: ORT's default, one per core). */
  intraOpThreads?: number;
  graphOptimizationLevel?: "disabled" | "basic" | "extended" | "all";
  /** Pre-packed weight copies (see prepacks()); "auto" by default. */
  prepackWeights?: PrepackPolicy;
}

/**
 * onnxruntime copies every GEMM weight into a pre-packed layout at session creation. Without that
 * copy, weights stored as external data stay memory-mapped from the weight file, so every worker
 * (and every process) that loads the graph shares one copy through the page cache: H fp32 costs
 * 2.6 GB once instead of 2.6 GB per worker. fp32 GEMMs pack their weights per call instead, at no
 * measurable cost at these sizes (H 512²: 0.99–1.00×); the int8 kernels lose ~8 %, so int8 graphs
 * (0.6 GB of weights) keep the copy. "on"/"off" force it.
 */
export type PrepackPolicy = "auto" | "on" | "off";

export function prepacks(policy: PrepackPolicy, precision: GraphMetadata["precision"]): boolean {
  return policy === "auto" ? precision === "int8" : policy === "on";
}

export interface LoadedGraph {
  session: ort.InferenceSession;
  metadata: GraphMetadata;
  provider: ExecutionProvider;
}

export async function loadGraph(dir: string, options: SessionOptions = {}): Promise<LoadedGraph> {
  const metadata = readGraphMetadata(dir);
  const provider = options.provider ?? "cpu";
  // onnxruntime would quietly run the int8 ops on the CPU beside a CUDA session: refuse instead.
  if (provider !== "cpu" && metadata.precision === "int8") {
    throw new Error(`${dir} is an int8 graph, made for the CPU provider; compile an fp16 graph (--precision fp16) for ${provider}`);
  }
  const session = await ort.InferenceSession.create(join(dir, MODEL_FILE), {
    // The CPU provider stays listed: onnxruntime places shape ops there on purpose.
    executionProviders: provider === "cpu" ? ["cpu"] : [provider, "cpu"],
    intraOpNumThreads: options.intraOpThreads ?? 0,
    interOpNumThreads: 1,
    executionMode: "sequential",
    graphOptimizationLevel: options.graphOptimizationLevel ?? "all",
    enableCpuMemArena: true,
    ...(prepacks(options.prepackWeights ?? "auto", metadata.precision) ? {} : { extra: { session: { disable_prepacking: "1" } } }),
  });
  return { session, metadata, provider };
}

/** The graph's heatmap outputs (compile --heatmap; compiler/heatmap-head.ts), float32, for a batch ([B, …]) or one image (B = 1). */
export interface HeatmapOutputs {
  /** Lanczos vectors, [B, m, C]. */
  basis: Float32Array;
  /** α then β, [B, 2, m]. */
  tridiagonal: Float32Array;
  /** Centred clipped features · basis, [B, n, m]. */
  projections: Float32Array;
  /** 1 = high-norm token left out of the fit, [B, n]. */
  outliers: Float32Array;
  /** Norms of the clipped features, [B, n]. */
  norms: Float32Array;
  /** m */
  steps: number;
}

export interface GraphOutputs {
  summary: Float32Array;
  summaryDims: number[];
  features: Float32Array;
  featureDims: number[];
  /** Fetched only when asked for ("heatmap"), from graphs compiled with --heatmap. */
  heatmap?: HeatmapOutputs;
}

/** The graph's outputs; a run can fetch a subset. "heatmap": the heatmap outputs of graphs compiled with --heatmap. */
export type GraphOutputName = "summary" | "features" | "heatmap";
const GRAPH_OUTPUTS: readonly GraphOutputName[] = ["summary", "features"];

/** A batch of pixels' dims: [B, H, W, 3], uint8 RGB interleaved (the graph's `pixels` input). */
export type PixelDims = [batch: number, height: number, width: number, channels: number];

function checkPixels(g: LoadedGraph, pixels: Uint8Array, dims: PixelDims): void {
  const [b, h, w, c] = dims;
  const step = g.metadata.resolution.step;
  if (c !== 3) throw new Error(`pixels must have 3 channels (RGB, interleaved), got ${c}`);
  // The graph cannot run an empty batch (its Reshapes fail): say so instead of onnxruntime.
  if (![b, h, w].every((d) => Number.isInteger(d) && d > 0)) throw new Error(`pixel dims must be positive integers, got [${dims.join(", ")}]`);
  if (h % step !== 0 || w % step !== 0) {
    throw new Error(
      `input ${h}×${w} is not a multiple of ${step} (patch ${g.metadata.patchSize}${g.metadata.windowSize ? ` × window ${g.metadata.windowSize}` : ""})`,
    );
  }
  if (pixels.length !== b * h * w * c) throw new Error(`pixels hold ${pixels.length} values, expected ${b}×${h}×${w}×${c}`);
}

/** Every output name of a graph: summary, features, each adaptor's two (metadata.adaptors), then the heatmap outputs (metadata.heatmap). */
function graphOutputNames(g: LoadedGraph): string[] {
  return [
    ...GRAPH_OUTPUTS,
    ...g.metadata.adaptors.flatMap((a) => [a.outputs.summary, a.outputs.features]),
    ...Object.values(g.metadata.heatmap?.outputs ?? {}),
  ];
}

/** Runs the graph once and returns the named outputs (any of graphOutputNames) with their dims. */
export async function runOutputs(
  g: LoadedGraph,
  pixels: Uint8Array,
  dims: PixelDims,
  names: readonly string[] = graphOutputNames(g),
): Promise<Record<string, { data: Float32Array; dims: number[] }>> {
  checkPixels(g, pixels, dims);
  const known = graphOutputNames(g);
  const unknown = names.filter((n) => !known.includes(n));
  if (unknown.length || names.length === 0) throw new Error(`outputs must name some of ${known.join(", ")}, got [${names.join(", ")}]`);
  const out = await g.session.run({ pixels: new ort.Tensor("uint8", pixels, dims) }, [...names]);
  return Object.fromEntries(names.map((n) => [n, { data: out[n]!.data as Float32Array, dims: [...out[n]!.dims] }]));
}

/**
 * The adaptor outputs of a graph compiled with adaptors (metadata.adaptors), by output name
 * (`<adaptor>.summary` [B, D_sum], `<adaptor>.features` [B, h·w, D_feat]); `names` picks some of
 * the adaptors (default: all). For the backbone outputs in the same pass, use runOutputs.
 */
export async function runAdaptors(
  g: LoadedGraph,
  pixels: Uint8Array,
  dims: PixelDims,
  names?: readonly string[],
): Promise<Record<string, { data: Float32Array; dims: number[] }>> {
  const known = g.metadata.adaptors;
  const unknown = (names ?? []).filter((n) => !known.some((a) => a.name === n));
  if (unknown.length) throw new Error(`the graph has no adaptor ${unknown.join(", ")} (compiled with: ${known.map((a) => a.name).join(", ") || "none"})`);
  const chosen = known.filter((a) => !names || names.includes(a.name));
  if (chosen.length === 0) return {};
  return runOutputs(
    g,
    pixels,
    dims,
    chosen.flatMap((a) => [a.outputs.summary, a.outputs.features]),
  );
}

/** The graph output holding `name` in an embedding space: the backbone's ("") or an adaptor's, as metadata.json names them. */
function spaceOutput(g: LoadedGraph, space: string, name: "summary" | "features"): string {
  if (!space) return name;
  const adaptor = g.metadata.adaptors.find((a) => a.name === space);
  if (!adaptor) throw new Error(`the graph has no adaptor ${JSON.stringify(space)} (adaptors: ${g.metadata.adaptors.map((a) => a.name).join(", ") || "none"})`);
  return adaptor.outputs[name];
}

/**
 * Runs pixels [B, H, W, 3] (uint8 RGB) through the graph; H and W must be multiples of the graph's step. Only
 * the outputs in `fetch` are copied out (an output left out comes back empty, dims []): summary-only
 * calls then never copy the features, B × 1024 × 1280 floats (5.2 MB an image) for H at 512², off a
 * GPU and into a JS buffer.
 */
export async function runGraph(
  g: LoadedGraph,
  pixels: Uint8Array,
  dims: PixelDims,
  fetch: readonly GraphOutputName[] = GRAPH_OUTPUTS,
  /** An adaptor's name: its outputs instead of the backbone's ("" = the backbone). */
  space = "",
): Promise<GraphOutputs> {
  checkPixels(g, pixels, dims);
  const known: readonly GraphOutputName[] = g.metadata.heatmap && !space ? [...GRAPH_OUTPUTS, "heatmap"] : GRAPH_OUTPUTS;
  if (fetch.length === 0 || fetch.some((n) => !known.includes(n))) throw new Error(`fetch must name some of ${known.join(", ")}, got [${fetch.join(", ")}]`);
  const heatmapNames = g.metadata.heatmap?.outputs;
  const names = fetch.flatMap((n) => (n === "heatmap" ? Object.values(heatmapNames ?? {}) : [spaceOutput(g, space, n)]));
  const out = await g.session.run({ pixels: new ort.Tensor("uint8", pixels, dims) }, names);
  const summary = fetch.includes("summary") ? out[spaceOutput(g, space, "summary")] : undefined;
  const features = fetch.includes("features") ? out[spaceOutput(g, space, "features")] : undefined;
  const data = (name: string) => out[name]!.data as Float32Array;
  return {
    summary: summary ? (summary.data as Float32Array) : new Float32Array(0),
    summaryDims: summary ? [...summary.dims] : [],
    features: features ? (features.data as Float32Array) : new Float32Array(0),
    featureDims: features ? [...features.dims] : [],
    ...(fetch.includes("heatmap") && heatmapNames
      ? {
          heatmap: {
            basis: data(heatmapNames.basis),
            tridiagonal: data(heatmapNames.tridiagonal),
            projections: data(heatmapNames.projections),
            outliers: data(heatmapNames.outliers),
            norms: data(heatmapNames.norms),
            steps: g.metadata.heatmap!.steps,
          },
        }
      : {}),
  };
}
