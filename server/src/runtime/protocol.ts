// Messages between the inference pool (main thread) and its workers. Plain data only: typed arrays
// travel in transfer lists, so a batch tensor moves to a worker and its outputs move back without
// copies.
import type { ExecutionProvider, GraphOutputName, HeatmapOutputs, PixelDims, PrepackPolicy } from "./session.js";

/** HeatmapOutputs' arrays, for transfer lists (a batch's, or one image's share). */
export function heatmapArrays(h: HeatmapOutputs): Float32Array[] {
  return [h.basis, h.tridiagonal, h.projections, h.outliers, h.norms];
}

export interface WorkerGraph {
  name: string;
  dir: string;
  /** The graph's compiled text tower, when it embeds prompts. */
  textDir?: string;
}

/** Given to every worker as workerData. */
export interface WorkerConfig {
  /** Set when running from TypeScript source (see worker-entry.ts). */
  entry: string | undefined;
  /** BroadcastChannel on which each worker announces that it is ready (or failed to load). */
  channel: string;
  graphs: WorkerGraph[];
  provider: ExecutionProvider;
  intraOpThreads: number;
  prepackWeights: PrepackPolicy;
  /** One run per graph at its preferred resolution before announcing ready. */
  warmup: boolean;
}

export interface InferTask {
  kind?: "image";
  graph: string;
  /** An adaptor's outputs instead of the backbone's ("" or absent = the backbone). */
  space?: string;
  /** [B, H, W, 3] uint8 RGB; its buffer is transferred (detached on the sending side). */
  pixels: Uint8Array;
  dims: PixelDims;
  /** The outputs to fetch (default: all); the others come back empty. */
  outputs?: GraphOutputName[];
  /** Shared with the pool: the worker stores Date.now() here when it starts the batch (0 = queued). */
  started?: BigInt64Array;
}

export interface InferResult {
  /** [B, S] */
  summary: Float32Array;
  summaryDims: number[];
  /** [B, h*w, C] (NLC, as the graph writes it) */
  features: Float32Array;
  featureDims: number[];
  /** The heatmap outputs, when fetched (graphs compiled with --heatmap). */
  heatmap?: HeatmapOutputs;
  /** Wall time of session.run inside the worker. */
  runMs: number;
  threadId: number;
  /** The task's pixels, transferred back once the run is over, for the sender to reuse. */
  input?: Uint8Array;
}

/** Token ids through a graph's text tower. */
export interface TextTask {
  kind: "text";
  graph: string;
  /** [n, context] int64; its buffer is transferred. */
  ids: BigInt64Array;
  dims: [number, number];
  /** Shared with the pool: the worker stores Date.now() here when it starts the task (0 = queued). */
  started?: BigInt64Array;
}

export interface TextResult {
  /** [n, D], unnormalised. */
  embeds: Float32Array;
  dims: number[];
  runMs: number;
}

export interface ReadyGraph {
  name: string;
  provider: ExecutionProvider;
  warmupMs: number;
}

export type WorkerAnnouncement =
  | { type: "ready"; threadId: number; ortVersion: string; loadMs: number; graphs: ReadyGraph[] }
  | { type: "failed"; threadId: number; message: string };
