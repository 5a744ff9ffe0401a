/**
 * Server-side heatmaps from spatial features (C, h, w):
 *   1. non-finite → 0                                  (clip.ts)
 *   2. per-channel clip to the 1st/99th percentile      (clip.ts, percentile.ts)
 *   3. leading principal component(s) over positions   (pca.ts, lanczos.ts)
 *   4. deterministic sign per component                 (orientation.ts)
 *   5. optional Gaussian smoothing, sigma in grid cells (smoothing.ts)
 *   6. bilinear resize to the output size               (resize.ts)
 *   7. min–max to uint8                                 (quantize.ts)
 * 'pca1' gives one grey channel; 'pca3' maps the top three components to R, G, B,
 * each channel smoothed, resized and min–max scaled on its own, interleaved (H, W, 3).
 */
import { type ClipOptions, type ClipResult, sanitizeAndClip } from './clip.js';
import { type FeatureDims, type FloatArray, assertPositiveInt, validateFeatureDims } from './dims.js';
import type { LanczosOptions } from './lanczos.js';
import { type OrientationRule, orientComponent, positionNorms } from './orientation.js';
import { type PcaResult, principalComponents } from './pca.js';
import { minMaxToUint8 } from './quantize.js';
import { resizeBilinear } from './resize.js';
import { gaussianFilter2d } from './smoothing.js';

export type { FeatureDims } from './dims.js';

export type HeatmapMode = 'pca1' | 'pca3';

/** Default Gaussian sigma, in feature-grid cells. */
export const DEFAULT_HEATMAP_SIGMA = 1.51;
/** Default bound on the longest side of a heatmap. */
export const DEFAULT_HEATMAP_MAX_SIDE = 512;

export interface HeatmapOptions {
  /** 'pca1' (default): grey map of PC1. 'pca3': PC1..PC3 as RGB. */
  mode?: HeatmapMode;
  /** Gaussian sigma in feature-grid cells; undefined → 1.51; null or 0 → no smoothing. */
  sigma?: number | null;
  /** Output size. If omitted: defaultHeatmapSize(sourceHeight, sourceWidth) when those are given, else the feature grid size. */
  outputHeight?: number;
  outputWidth?: number;
  /** Original image size, used only for the default output size. */
  sourceHeight?: number;
  sourceWidth?: number;
  /** Clip percentiles, default [1, 99]. */
  clipPercentiles?: ClipOptions['percentiles'];
  /** Eigen-solver knobs (tolerance, step cap). */
  solver?: LanczosOptions;
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
export function defaultHeatmapSize(
  origHeight: number,
  origWidth: number,
  maxSide = DEFAULT_HEATMAP_MAX_SIDE,
): { height: number; width: number } {
  assertPositiveInt(origHeight, 'origHeight');
  assertPositiveInt(origWidth, 'origWidth');
  assertPositiveInt(maxSide, 'maxSide');
  const longest = Math.max(origHeight, origWidth);
  if (longest <= maxSide) return { height: origHeight, width: origWidth };
  const scale = maxSide / longest;
  return {
    height: origHeight >= origWidth ? maxSide : Math.min(maxSide, Math.max(1, Math.round(origHeight * scale))),
    width: origWidth >= origHeight ? maxSide : Math.min(maxSide, Math.max(1, Math.round(origWidth * scale))),
  };
}

export interface ScoreMaps {
  /** Oriented score maps (row-major h×w), one per component. */
  maps: Float64Array[];
  clip: ClipResult;
  pca: PcaResult;
  orientation: { rule: OrientationRule; flipped: boolean }[];
}

/** Stages 1–4: sanitised/clipped features → oriented principal-component score maps. */
export function computeScoreMaps(
  features: FloatArray,
  dims: FeatureDims,
  components: number,
  opts: { clipPercentiles?: ClipOptions['percentiles']; solver?: LanczosOptions } = {},
): ScoreMaps {
  const n = validateFeatureDims(features, dims);
  const clip = sanitizeAndClip(features, dims, opts.clipPercentiles ? { percentiles: opts.clipPercentiles } : {});
  const pca = principalComponents(clip.data, dims, components, opts.solver);
  const norms = positionNorms(clip.data, dims.channels, n);
  const orientation = pca.scores.map((s, i) => orientComponent(s, pca.components[i]!, norms));
  return { maps: pca.scores, clip, pca, orientation };
}

/** Stages 5–6 for one map: optional smoothing, then resize (skipped when sizes match). */
export function smoothAndResize(
  map: Float64Array,
  height: number,
  width: number,
  sigma: number | null,
  outputHeight: number,
  outputWidth: number,
): Float64Array {
  const smoothed = sigma !== null && sigma > 0 ? gaussianFilter2d(map, height, width, sigma) : map;
  if (outputHeight === height && outputWidth === width) return smoothed;
  return resizeBilinear(smoothed, height, width, outputHeight, outputWidth);
}

function resolveSigma(sigma: number | null | undefined): number | null {
  if (sigma === undefined) return DEFAULT_HEATMAP_SIGMA;
  if (sigma === null || sigma === 0) return null;
  if (!Number.isFinite(sigma) || sigma < 0) throw new RangeError(`sigma must be null or a finite number >= 0 (got ${sigma})`);
  return sigma;
}

export function computeHeatmap(features: FloatArray, dims: FeatureDims, opts: HeatmapOptions = {}): Heatmap {
  const mode = opts.mode ?? 'pca1';
  if (mode !== 'pca1' && mode !== 'pca3') throw new RangeError(`unknown heatmap mode ${String(mode)}`);
  const sigma = resolveSigma(opts.sigma);
  let outH = opts.outputHeight;
  let outW = opts.outputWidth;
  if ((outH === undefined) !== (outW === undefined)) throw new RangeError('give both outputHeight and outputWidth, or neither');
  if (outH === undefined || outW === undefined) {
    if (opts.sourceHeight !== undefined && opts.sourceWidth !== undefined) {
      ({ height: outH, width: outW } = defaultHeatmapSize(opts.sourceHeight, opts.sourceWidth));
    } else {
      outH = dims.height;
      outW = dims.width;
    }
  }
  assertPositiveInt(outH, 'outputHeight');
  assertPositiveInt(outW, 'outputWidth');

  const channels = mode === 'pca1' ? 1 : 3;
  const scoreOpts: { clipPercentiles?: ClipOptions['percentiles']; solver?: LanczosOptions } = {};
  if (opts.clipPercentiles) scoreOpts.clipPercentiles = opts.clipPercentiles;
  if (opts.solver) scoreOpts.solver = opts.solver;
  const { maps } = computeScoreMaps(features, dims, channels, scoreOpts);
  const data = new Uint8Array(outH * outW * channels);
  for (let ch = 0; ch < channels; ch++) {
    const resized = smoothAndResize(maps[ch]!, dims.height, dims.width, sigma, outH, outW);
    minMaxToUint8(resized, data, channels, ch);
  }
  return { data, height: outH, width: outW, channels };
}
