/**
 * Server-side heatmaps from spatial features (C, h, w), or (h·w, C) with layout 'nlc':
 *   1. non-finite → 0                                  (clip.ts)
 *   2. per-channel clip to the 1st/99th percentile      (clip.ts, percentile.ts)
 *   3. high-norm tokens found on the unclipped norms    (outliers.ts)
 *   4. leading principal component(s) over positions,   (pca.ts, lanczos.ts)
 *      fitted on the other positions
 *   5. deterministic sign per component                 (orientation.ts)
 *   6. high-norm tokens' scores clamped to the others' range (outliers.ts)
 *   7. optional Gaussian smoothing, sigma in grid cells (smoothing.ts)
 *   8. bilinear resize to the output size               (resize.ts)
 *   9. min–max to uint8                                 (quantize.ts)
 * Graphs compiled with --heatmap run stages 1–4 (up to a Lanczos basis) themselves; device-pca.ts
 * finishes 4–6 from their outputs and renderHeatmap does 7–9 for both.
 * 'pca1' gives one grey channel in [1, 255] (HEATMAP_PCA1_LOW: the FiftyOne App paints no pixel
 * whose value is 0); 'pca3' maps the top three components to R, G, B in [0, 255], each channel
 * smoothed, resized and min–max scaled on its own, interleaved (H, W, 3).
 */
import { type ClipOptions, type ClipResult, type FeatureLayout, sanitizeAndClip } from "./clip.js";
import { type FeatureDims, type FloatArray, assertPositiveInt, validateFeatureDims } from "./dims.js";
import type { LanczosOptions } from "./lanczos.js";
import { type OrientationRule, orientComponent } from "./orientation.js";
import { type HighNormOptions, type HighNormTokens, clampToInlierRange, highNormTokens } from "./outliers.js";
import { type PcaResult, principalComponents } from "./pca.js";
import { minMaxToUint8 } from "./quantize.js";
import { resizeBilinear } from "./resize.js";
import { gaussianFilter2d } from "./smoothing.js";
import { HEATMAP_DEFAULTS } from "../defaults.js";

export type { FeatureDims } from "./dims.js";

export type HeatmapMode = "pca1" | "pca3";

/** The lowest value of a 'pca1' map: 1, not 0, since the FiftyOne App leaves 0-valued pixels unpainted. */
export const HEATMAP_PCA1_LOW = 1;
/**
 * Eigen-solver tolerance for heatmaps (relative residual). The maps end as 8-bit images,
 * so 1e-6 (score errors ~1e-7 relative) is ample; it saves 1–3 of ~10–14 Lanczos steps,
 * ~1.7 ms each at 1280×32×32, against the solver's own default of 1e-10.
 */
export const DEFAULT_HEATMAP_SOLVER_TOLERANCE = 1e-6;

export interface HeatmapOptions {
  /** 'pca1' (default): grey map of PC1. 'pca3': PC1..PC3 as RGB. */
  mode?: HeatmapMode;
  /** Gaussian sigma in feature-grid cells; undefined → HEATMAP_DEFAULTS.sigma; null or 0 → no smoothing. */
  sigma?: number | null;
  /** Output size. If omitted: defaultHeatmapSize(sourceHeight, sourceWidth) when those are given, else the feature grid size. */
  outputHeight?: number;
  outputWidth?: number;
  /** Original image size, used only for the default output size. */
  sourceHeight?: number;
  sourceWidth?: number;
  /** Clip percentiles, default [1, 99]. */
  clipPercentiles?: ClipOptions["percentiles"];
  /** Eigen-solver knobs (tolerance, step cap); tolerance defaults to DEFAULT_HEATMAP_SOLVER_TOLERANCE. */
  solver?: LanczosOptions;
  /** Layout of `features`: 'chw' (default) or the graph's position-major 'nlc'. */
  layout?: FeatureLayout;
  /** High-norm token thresholds (outliers.ts); false fits the PCA on every position. */
  highNorm?: HighNormOptions | false;
}

export interface Heatmap {
  /** Row-major uint8; for 3 channels interleaved RGB (H, W, 3). */
  data: Uint8Array;
  height: number;
  width: number;
  channels: 1 | 3;
}

/**
 * Output size with the source image's aspect ratio and the longest side ≤ maxSide.
 * Images already within the bound keep their size (no upscaling).
 */
export function defaultHeatmapSize(origHeight: number, origWidth: number, maxSide = HEATMAP_DEFAULTS.maxSide): { height: number; width: number } {
  assertPositiveInt(origHeight, "origHeight");
  assertPositiveInt(origWidth, "origWidth");
  assertPositiveInt(maxSide, "maxSide");
  const longest = Math.max(origHeight, origWidth);
  if (longest <= maxSide) return { height: origHeight, width: origWidth };
  const scale = maxSide / longest;
  return {
    height: origHeight >= origWidth ? maxSide : Math.min(maxSide, Math.max(1, Math.round(origHeight * scale))),
    width: origWidth >= origHeight ? maxSide : Math.min(maxSide, Math.max(1, Math.round(origWidth * scale))),
  };
}

export interface ScoreMaps {
  /** Oriented score maps (row-major h×w), one per component; high-norm tokens clamped. */
  maps: Float64Array[];
  clip: ClipResult;
  /** High-norm tokens left out of the fit (count 0 when none, or when disabled). */
  outliers: HighNormTokens;
  pca: PcaResult;
  orientation: { rule: OrientationRule; flipped: boolean }[];
}

export type ScoreMapOptions = Pick<HeatmapOptions, "clipPercentiles" | "solver" | "layout" | "highNorm">;

/** Per-channel mean of the clipped data over the inliers, from the clip pass's sums. */
export function inlierMean(clip: ClipResult, C: number, n: number, mask: Uint8Array | null): Float64Array {
  const out: number[] = [];
  if (mask) for (let p = 0; p < n; p++) if (mask[p]) out.push(p);
  const mean = new Float64Array(C);
  for (let c = 0; c < C; c++) {
    let s = clip.sums[c]!;
    for (const p of out) s -= clip.data[c * n + p]!;
    mean[c] = s / (n - out.length);
  }
  return mean;
}

/** Stages 1–6: sanitised/clipped features → oriented principal-component score maps. */
export function computeScoreMaps(features: FloatArray, dims: FeatureDims, components: number, opts: ScoreMapOptions = {}): ScoreMaps {
  const n = validateFeatureDims(features, dims);
  const clipOpts: ClipOptions = { layout: opts.layout ?? "chw" };
  if (opts.clipPercentiles) clipOpts.percentiles = opts.clipPercentiles;
  const clip = sanitizeAndClip(features, dims, clipOpts);
  const outliers: HighNormTokens =
    opts.highNorm === false ? { mask: null, count: 0, median: Number.NaN, mad: Number.NaN, threshold: Infinity } : highNormTokens(clip.rawNorms, opts.highNorm);
  const mean = inlierMean(clip, dims.channels, n, outliers.mask);
  const solver = { tolerance: DEFAULT_HEATMAP_SOLVER_TOLERANCE, ...opts.solver };
  const pca = principalComponents(clip.data, dims, components, solver, { exclude: outliers.mask, mean });
  const orientation = pca.scores.map((s, i) => orientComponent(s, pca.components[i]!, clip.norms, outliers.mask));
  if (outliers.mask) for (const s of pca.scores) clampToInlierRange(s, outliers.mask);
  return { maps: pca.scores, clip, outliers, pca, orientation };
}

/** Stages 7–8 for one map: optional smoothing, then resize (skipped when sizes match). */
function smoothAndResize(map: Float64Array, height: number, width: number, sigma: number | null, outputHeight: number, outputWidth: number): Float64Array {
  const smoothed = sigma !== null && sigma > 0 ? gaussianFilter2d(map, height, width, sigma) : map;
  if (outputHeight === height && outputWidth === width) return smoothed;
  return resizeBilinear(smoothed, height, width, outputHeight, outputWidth);
}

function resolveSigma(sigma: number | null | undefined): number | null {
  if (sigma === undefined) return HEATMAP_DEFAULTS.sigma;
  if (sigma === null || sigma === 0) return null;
  if (!Number.isFinite(sigma) || sigma < 0) throw new RangeError(`sigma must be null or a finite number >= 0 (got ${sigma})`);
  return sigma;
}

export function computeHeatmap(features: FloatArray, dims: FeatureDims, opts: HeatmapOptions = {}): Heatmap {
  return renderHeatmap((components) => computeScoreMaps(features, dims, components, opts).maps, dims, opts);
}

function resolveMode(mode: HeatmapMode | undefined): HeatmapMode {
  const m = mode ?? "pca1";
  if (m !== "pca1" && m !== "pca3") throw new RangeError(`unknown heatmap mode ${String(m)}`);
  return m;
}

/**
 * Stages 7–9 on score maps of a height×width grid: smoothing, resize, uint8. `scoreMaps` gives the
 * oriented maps of the top `components` (computeScoreMaps, or device-pca.ts for graphs that ran the
 * PCA's heavy half themselves); it is called once the options are known to be valid.
 */
export function renderHeatmap(
  scoreMaps: (components: number) => Float64Array[],
  grid: { height: number; width: number },
  opts: Pick<HeatmapOptions, "mode" | "sigma" | "outputHeight" | "outputWidth" | "sourceHeight" | "sourceWidth"> = {},
): Heatmap {
  const mode = resolveMode(opts.mode);
  const sigma = resolveSigma(opts.sigma);
  let outH = opts.outputHeight;
  let outW = opts.outputWidth;
  if ((outH === undefined) !== (outW === undefined)) throw new RangeError("give both outputHeight and outputWidth, or neither");
  if (outH === undefined || outW === undefined) {
    if (opts.sourceHeight !== undefined && opts.sourceWidth !== undefined) {
      ({ height: outH, width: outW } = defaultHeatmapSize(opts.sourceHeight, opts.sourceWidth));
    } else {
      outH = grid.height;
      outW = grid.width;
    }
  }
  assertPositiveInt(outH, "outputHeight");
  assertPositiveInt(outW, "outputWidth");

  const channels = mode === "pca1" ? 1 : 3;
  const maps = scoreMaps(channels);
  const data = new Uint8Array(outH * outW * channels);
  for (let ch = 0; ch < channels; ch++) {
    const resized = smoothAndResize(maps[ch]!, grid.height, grid.width, sigma, outH, outW);
    minMaxToUint8(resized, data, channels, ch, mode === "pca1" ? HEATMAP_PCA1_LOW : 0);
  }
  return { data, height: outH, width: outW, channels };
}
