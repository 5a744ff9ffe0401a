// The pipeline's request and result types: what a transport hands in and gets back. No gRPC here.
import type { ImageInput, InputError } from "../preprocess/index.js";
import type { HeatmapRequest, OutputKind, OutputTensor } from "../postprocess/outputs.js";
import type { FailureKind } from "./errors.js";

export type { OutputKind, OutputTensor, HeatmapRequest };

/** Why queued images were dropped without running ("stalled": the client stopped reading results). */
export type DropReason = "cancelled" | "deadline" | "shutdown" | "stalled";

export interface EmbedJobSpec {
  /** A served graph's name; "" = the default graph. */
  graph: string;
  /** Resolution policy text: "default", "native", "max:N", "HxW"; "" = default. */
  resolution: string;
  /** An adaptor of the graph whose outputs replace the backbone's ("" or absent = the backbone). */
  space?: string;
  output: OutputKind;
  heatmap: HeatmapRequest;
  /** An InputError stands for an image the transport could not even map (it is reported as is). */
  images: readonly (ImageInput | InputError)[];
  /** Date.now() milliseconds after which unfinished images are dropped; null = none. */
  deadline: number | null;
}

export interface ImageOutput {
  tensor: OutputTensor;
  inputHeight: number;
  inputWidth: number;
  originalHeight: number;
  originalWidth: number;
}

export type ImageOutcome =
  | { index: number; output: ImageOutput; error?: undefined }
  | { index: number; output?: undefined; error: { kind: FailureKind; message: string } };

/**
 * Where a request's outcomes go, one call per image. A promise means "delivered to the client when
 * it settles" (until then the image counts against the queue again); nothing means delivered at once.
 */
export type OutcomeSink = (outcome: ImageOutcome) => Promise<void> | void;

export interface EmbedHandle {
  /**
   * Resolves when every image has a result, was dropped, or was discarded after a cancel, and every
   * delivery the sink returned has settled.
   */
  readonly done: Promise<void>;
  /** Drops the request's images that have not run yet; nothing more reaches the sink. */
  cancel(reason: DropReason): void;
}

export interface PipelineMetrics {
  imageSucceeded(graph: string, output: OutputKind): void;
  imageFailed(kind: FailureKind): void;
  imagesDropped(reason: DropReason, n: number): void;
  /** calls: how many calls (requests) the batch's images came from. */
  batchRan(graph: string, size: number, inferenceSeconds: number, calls?: number): void;
  queueWait(seconds: number): void;
  preprocessed(seconds: number): void;
  postprocessed(output: OutputKind, seconds: number): void;
}

export const NO_METRICS: PipelineMetrics = {
  imageSucceeded: () => undefined,
  imageFailed: () => undefined,
  imagesDropped: () => undefined,
  batchRan: () => undefined,
  queueWait: () => undefined,
  preprocessed: () => undefined,
  postprocessed: () => undefined,
};
