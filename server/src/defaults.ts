// Every default of the sidecar: their one home. serve.ts applies them, the CLI's flags default to
// them and quote them in --help, test servers start from them. The few the Python zoo shares
// (heatmap smoothing and size, the pixel and message limits) are read from
// proto/radio/v1/defaults.json, which client/options.py reads too. No heavy imports: the CLI loads this for every command.
import { readFileSync } from "node:fs";

/** proto/radio/v1/defaults.json (same depth from server/src and server/dist). */
const SHARED = JSON.parse(readFileSync(new URL("../../proto/radio/v1/defaults.json", import.meta.url), "utf8")) as {
  heatmap: { smoothing_sigma: number; max_smoothing_sigma: number; max_side: number };
  image: { max_pixels: number };
  message: { max_mb: number };
};

/** What a heatmap request leaves at 0 (radio.v1.HeatmapOptions), and the zoo's own defaults. */
export const HEATMAP_DEFAULTS = Object.freeze({
  /** Gaussian sigma, in feature-grid cells. */
  sigma: SHARED.heatmap.smoothing_sigma,
  /**
   * The largest sigma taken: 128 cells, a feature grid's longest side (2048 px / 16), beyond which a
   * map is flat anyway; the kernel grows with sigma (8σ + 1 taps), so 1e7 would tie up a
   * postprocess worker for minutes.
   */
  maxSigma: SHARED.heatmap.max_smoothing_sigma,
  /** Bound on the longest side of a heatmap, pixels. */
  maxSide: SHARED.heatmap.max_side,
});

/** The heatmap PCA's fixed choices, read by the CPU path (postprocess/) and the graph's heatmap head alike. */
export const HEATMAP_PCA_DEFAULTS = Object.freeze({
  /** Per-channel clip, percentiles over the positions. */
  clipPercentiles: Object.freeze([1, 99] as const),
  /** High-norm tokens (postprocess/outliers.ts): norm > ratio × median and > median + mads × MAD, at most maxFraction of the positions. */
  highNorm: Object.freeze({ ratio: 3, mads: 6, maxFraction: 0.05 }),
});

export const MiB = 1024 * 1024;

/** Per image, checked before or while decoding. */
export const IMAGE_LIMITS = Object.freeze({
  /** 100 MP: above any camera photo, far below a 30000² bomb. */
  limitInputPixels: SHARED.image.max_pixels,
  maxInputBytes: 256 * MiB,
  timeoutSeconds: 60,
});

/** serve's settings when not given (the CLI's flags and env vars default to these). */
export const SERVE_DEFAULTS = Object.freeze({
  httpPort: null,
  httpHost: "127.0.0.1",
  workers: 1,
  /** ORT intra-op threads per worker; 0 = cores / workers. */
  threads: 0,
  prepackWeights: "auto",
  /** null = the provider's default (postprocess/threads.ts). */
  postprocessThreads: null,
  /** null = the provider's default (BATCH_DEFAULTS). */
  maxBatch: null,
  /**
   * No wait for calls that have not arrived (Triton's default too): images of calls already here that
   * are still being decoded are waited for by the provider's batchHoldMs. 5 ms here made every
   * single-image call (FiftyOne without batch_size) wait 5 ms on an idle worker: 1.42× images/s with 0
   * for calls of 1, 1.19× for calls of 2, 0.95–1.05 (noise) for 4 and 16 (tiny graph, 2 cores); two
   * FiftyOne processes sharing one sidecar: unchanged (bench/shared_sidecar.py).
   */
  queueDelayMs: 0,
  maxQueue: 256,
  /**
   * An Embed call whose client has read none of its waiting results for this long is ended; 0 =
   * never. A client reading normally takes each result within milliseconds (the Python client reads
   * a call's results as they come), and a slow one still takes one every few seconds: 60 s lets a
   * link of 12 Mbit/s carry even an 84 MB result (C-RADIOv4-H NCHW at 2048²) in one go, while a
   * client that stopped reading holds its queue slots (unread results count) for at most a minute.
   */
  stallTimeoutMs: 60_000,
  /** 0 = one per core. */
  decodeParallelism: 0,
  allowedRoots: [],
  provider: "auto",
  shutdownTimeoutMs: 30_000,
  warmup: true,
  token: null,
  tls: null,
  allowRemotePaths: false,
  /** 0 = no limit. */
  inferenceTimeoutMs: 0,
  workerHeapMb: 1024,
  maxRequestBytes: SHARED.message.max_mb * MiB,
  maxImagePixels: IMAGE_LIMITS.limitInputPixels,
  /** 0 = never. */
  idleTimeoutMs: 0,
  logLevel: "info",
} as const);

/** Largest response message (not a flag): dense features at 2048² are ~84 MB an image. */
export const MAX_RESPONSE_BYTES = SHARED.message.max_mb * MiB;

export interface BatchDefaults {
  /** Largest inference batch. */
  maxBatch: number;
  /** Most patch tokens per batch; 0 = no limit (batches sized by images only). */
  maxBatchTokens: number;
  /** Longest a partial batch waits for images of the same calls still being decoded. */
  batchHoldMs: number;
  /** Prompts per text-tower run (64 tokens each, no padding to trim: cost is linear in the batch). */
  textBatch: number;
}

export const BATCH_DEFAULTS = {
  // On a CPU, batches beyond ~1024 patch tokens are slower per image than running images one by one
  // (one image at 512², five at 224²); a short hold for a call's images still being decoded keeps a
  // call of 2 one batch, a longer one measured no gain (tiny graph, calls of 4–16: batches of 4
  // instead of 2 but no faster, since decoding then stops overlapping inference on the same cores).
  cpu: { maxBatch: 8, maxBatchTokens: 1024, batchHoldMs: 5, textBatch: 16 },
  // On a GPU (cuda, webgpu) bigger batches are what fill it: sized by images, and a call's images
  // should run as one batch, not as the few that were decoded first.
  gpu: { maxBatch: 32, maxBatchTokens: 0, batchHoldMs: 50, textBatch: 128 },
} as const satisfies Record<"cpu" | "gpu", BatchDefaults>;

/** "8 on cpu, 32 on cuda/webgpu": for --help texts. */
export function describeBatchDefault(key: keyof BatchDefaults, noneAt0 = false): string {
  const v = (n: number): string => (noneAt0 && n === 0 ? "no limit" : String(n));
  return `${v(BATCH_DEFAULTS.cpu[key])} on cpu, ${v(BATCH_DEFAULTS.gpu[key])} on cuda/webgpu`;
}

/** Text limits that do not depend on the provider. */
export const TEXT_DEFAULTS = {
  /** Most prompts one EmbedText call may carry (clients send more as several calls). */
  maxPrompts: 4096,
  /** Per graph: normalised embeddings kept for prompts asked again (~11k prompts at 1536 dims). */
  cacheBytes: 64 * 1024 * 1024,
} as const;
