/**
 * Stage 1+2 of the heatmap pipeline: replace non-finite values by 0, then clip every
 * channel to its [low, high] percentile (default 1st/99th, numpy 'linear' method)
 * taken over the h·w spatial positions. The result is float32 (float64 input is
 * rounded to float32 first); bounds are computed in float64.
 *
 * The input may be channel-major (C, h, w) or the graph's own position-major (h·w, C)
 * layout ('nlc'); the output is always channel-major. Reading NLC here saves the
 * separate transpose (a full pass over 1.3M values for a 1280×32×32 map).
 *
 * The two passes that touch every value also collect what later stages need, so no
 * stage reads the whole map again for them: per-position norms of the sanitised
 * (unclipped) features for the high-norm token test (outliers.ts), per-position norms
 * of the clipped features for the sign rule (orientation.ts), and per-channel sums of
 * the clipped features for the PCA mean. Each is accumulated in the same order as a
 * separate pass would, so the values are bit-identical to computing them afterwards.
 */
import { type FeatureDims, type FloatArray, validateFeatureDims } from "./dims.js";
import { PercentileScratch, percentilePair } from "./percentile.js";
import { HEATMAP_PCA_DEFAULTS } from "../defaults.js";

/** Input layout: channel-major (C, h, w), or position-major (h·w, C) as the graph emits it. */
export type FeatureLayout = "chw" | "nlc";

export interface ClipOptions {
  /** [low, high] percentiles in 0..100; default [1, 99]. */
  percentiles?: readonly [number, number];
  /** Destination (length C·h·w); may be `features` itself to clip in place (CHW input only). Allocated if omitted. */
  out?: Float32Array;
  /** Layout of `features`; default 'chw'. */
  layout?: FeatureLayout;
}

export interface ClipResult {
  /** Sanitized, clipped features, (C, h, w) layout. */
  data: Float32Array;
  /** Per-channel lower/upper clip bounds (float64, before rounding into `data`). */
  lower: Float64Array;
  upper: Float64Array;
  /** Per-position L2 norm of the sanitised features before clipping (length h·w). */
  rawNorms: Float64Array;
  /** Per-position L2 norm of the clipped features, = positionNorms(data) (length h·w). */
  norms: Float64Array;
  /** Per-channel sum of the clipped features over all positions (length C). */
  sums: Float64Array;
}

/** Positions per tile of the NLC → CHW transpose: 16 output rows stay in cache while a tile is written. */
const TILE = 16;

/** Rounded to float32 first, so float64 input beyond float32 range also counts as non-finite; v − v is NaN for NaN/±Inf. */
function sanitize(x: number): number {
  const v = Math.fround(x);
  return v - v === 0 ? v : 0;
}

/** NLC → sanitised CHW, in tiles; accumulates squared values per position into `sq`. */
function sanitizeTransposed(nlc: FloatArray, C: number, n: number, out: Float32Array, sq: Float64Array): void {
  for (let c0 = 0; c0 < C; c0 += TILE) {
    const c1 = Math.min(C, c0 + TILE);
    for (let p0 = 0; p0 < n; p0 += TILE) {
      const p1 = Math.min(n, p0 + TILE);
      for (let c = c0; c < c1; c++) {
        const o = c * n;
        for (let p = p0, i = p0 * C + c; p < p1; p++, i += C) {
          const s = sanitize(nlc[i]!);
          out[o + p] = s;
          sq[p] = sq[p]! + s * s;
        }
      }
    }
  }
}

export function sanitizeAndClip(features: FloatArray, dims: FeatureDims, opts: ClipOptions = {}): ClipResult {
  const n = validateFeatureDims(features, dims);
  const C = dims.channels;
  const [qLow, qHigh] = opts.percentiles ?? HEATMAP_PCA_DEFAULTS.clipPercentiles;
  const layout = opts.layout ?? "chw";
  if (layout !== "chw" && layout !== "nlc") throw new RangeError(`unknown feature layout ${String(layout)}`);
  const out = opts.out ?? new Float32Array(C * n);
  if (out.length !== C * n) throw new RangeError(`out has length ${out.length}, expected ${C * n}`);
  if (layout === "nlc" && out === features) throw new RangeError("NLC input cannot be clipped in place");
  const lower = new Float64Array(C);
  const upper = new Float64Array(C);
  const rawSq = new Float64Array(n);
  const sq = new Float64Array(n);
  const sums = new Float64Array(C);
  const scratch = new PercentileScratch();

  if (layout === "nlc") sanitizeTransposed(features, C, n, out, rawSq);
  for (let c = 0; c < C; c++) {
    const base = c * n;
    if (layout === "chw") {
      for (let p = 0; p < n; p++) {
        const s = sanitize(features[base + p]!);
        out[base + p] = s;
        rawSq[p] = rawSq[p]! + s * s;
      }
    }
    const [lo, hi] = percentilePair(out, base, base + n, qLow, qHigh, scratch);
    lower[c] = lo;
    upper[c] = hi;
    // What the float32 buffer holds after clipping, so sums and norms see the stored values.
    const loF = Math.fround(lo);
    const hiF = Math.fround(hi);
    let sum = 0;
    for (let p = 0; p < n; p++) {
      let v = out[base + p]!;
      if (v < lo) out[base + p] = v = loF;
      else if (v > hi) out[base + p] = v = hiF;
      sum += v;
      sq[p] = sq[p]! + v * v;
    }
    sums[c] = sum;
  }
  for (let p = 0; p < n; p++) {
    rawSq[p] = Math.sqrt(rawSq[p]!);
    sq[p] = Math.sqrt(sq[p]!);
  }
  return { data: out, lower, upper, rawNorms: rawSq, norms: sq, sums };
}
