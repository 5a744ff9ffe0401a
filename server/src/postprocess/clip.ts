/**
 * Stage 1+2 of the heatmap pipeline: replace non-finite values by 0, then clip every
 * channel to its [low, high] percentile (default 1st/99th, numpy 'linear' method)
 * taken over the h·w spatial positions. The result is float32 (float64 input is
 * rounded to float32 first); bounds are computed in float64.
 */
import { type FeatureDims, type FloatArray, validateFeatureDims } from './dims.js';
import { PercentileScratch, percentilePair } from './percentile.js';

export const DEFAULT_CLIP_PERCENTILES: readonly [number, number] = [1, 99];

export interface ClipOptions {
  /** [low, high] percentiles in 0..100; default [1, 99]. */
  percentiles?: readonly [number, number];
  /** Destination (length C·h·w); may be `features` itself to clip in place. Allocated if omitted. */
  out?: Float32Array;
}

export interface ClipResult {
  /** Sanitized, clipped features, same (C, h, w) layout as the input. */
  data: Float32Array;
  /** Per-channel lower/upper clip bounds (float64, before rounding into `data`). */
  lower: Float64Array;
  upper: Float64Array;
}

export function sanitizeAndClip(features: FloatArray, dims: FeatureDims, opts: ClipOptions = {}): ClipResult {
  const n = validateFeatureDims(features, dims);
  const C = dims.channels;
  const [qLow, qHigh] = opts.percentiles ?? DEFAULT_CLIP_PERCENTILES;
  const out = opts.out ?? new Float32Array(C * n);
  if (out.length !== C * n) throw new RangeError(`out has length ${out.length}, expected ${C * n}`);
  const lower = new Float64Array(C);
  const upper = new Float64Array(C);
  const scratch = new PercentileScratch();

  for (let c = 0; c < C; c++) {
    const base = c * n;
    for (let p = 0; p < n; p++) {
      // Rounded to float32 first, so float64 input beyond float32 range also counts as non-finite.
      const v = Math.fround(features[base + p]!);
      // v - v is 0 for finite v and NaN for NaN/±Inf.
      const s = v - v === 0 ? v : 0;
      out[base + p] = s;
    }
    const [lo, hi] = percentilePair(out, base, base + n, qLow, qHigh, scratch);
    lower[c] = lo;
    upper[c] = hi;
    for (let p = base, end = base + n; p < end; p++) {
      const v = out[p]!;
      if (v < lo) out[p] = lo;
      else if (v > hi) out[p] = hi;
    }
  }
  return { data: out, lower, upper };
}
