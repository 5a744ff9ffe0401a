/**
 * High-norm tokens: a few patch tokens whose feature vector is many times longer than
 * the rest (the "registers" of Darcet et al.; on C-RADIOv4-SO400M, inherited from
 * SigLIP2, upstream NVlabs/RADIO issue #174). One such token carries more variance than
 * a whole image region, so a PCA fitted on every position spends PC1 on it and the map
 * shows a dot instead of the image. The per-channel percentile clip does not prevent
 * this: it pulls an outlier back only to the channel's extremes, which in all C
 * channels at once still make a token that deviates ~2.5× as far as a typical one,
 * and tokens beyond 1 % of the positions are not clipped at all. (Measured in
 * test/node/heatmap.test.ts: 3 such tokens in a 1280×32×32 map take PC1 away from a
 * region that explains ~1 % of the variance, 8 from one at ~4 %.)
 *
 * So positions are tested on the norms of the sanitised features before clipping:
 * an outlier is longer than both `ratio` × the median norm and the median + `mads` ×
 * the median absolute deviation (MAD). Median and MAD, unlike mean and standard
 * deviation, are not moved by the outliers themselves (upstream's visualiser also
 * uses median/MAD, there for the colour range). The ratio floor keeps an image whose
 * norms are very uniform (tiny MAD) from losing its ordinary bright patches; the
 * cap (`maxFraction` of the positions, the longest first) keeps a genuinely
 * high-norm region from being dropped wholesale.
 *
 * Outliers are left out of the PCA fit (mean, components, sign rule); they still get
 * scores, clamped to the inliers' range so their own pixels saturate instead of
 * stretching the colour scale (clampToInlierRange).
 */

import { HEATMAP_PCA_DEFAULTS } from "../defaults.js";

export interface HighNormOptions {
  /** Norm must exceed ratio × median; default 3. */
  ratio?: number;
  /** Norm must exceed median + mads × MAD; default 6. */
  mads?: number;
  /** At most this fraction of the positions (floored) are outliers, the longest first; default 0.05. */
  maxFraction?: number;
}

export interface HighNormTokens {
  /** 1 = outlier, per position (length h·w); null when there are none. */
  mask: Uint8Array | null;
  count: number;
  median: number;
  mad: number;
  /** Norms above this (strictly) qualify, before the cap. */
  threshold: number;
}

/** Median of a sorted array (mean of the two middle values for even length). */
function sortedMedian(s: Float64Array): number {
  const m = s.length >> 1;
  return s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

export function highNormTokens(norms: Float64Array, opts: HighNormOptions = {}): HighNormTokens {
  const ratio = opts.ratio ?? HEATMAP_PCA_DEFAULTS.highNorm.ratio;
  const mads = opts.mads ?? HEATMAP_PCA_DEFAULTS.highNorm.mads;
  const maxFraction = opts.maxFraction ?? HEATMAP_PCA_DEFAULTS.highNorm.maxFraction;
  if (!(ratio >= 1) || !(mads >= 0) || !(maxFraction >= 0 && maxFraction < 0.5)) {
    throw new RangeError(`high-norm options need ratio >= 1, mads >= 0, 0 <= maxFraction < 0.5 (got ${ratio}, ${mads}, ${maxFraction})`);
  }
  const n = norms.length;
  const sorted = Float64Array.from(norms).sort();
  const median = sortedMedian(sorted);
  const dev = new Float64Array(n);
  for (let p = 0; p < n; p++) dev[p] = Math.abs(norms[p]! - median);
  const mad = sortedMedian(dev.sort());
  const threshold = Math.max(ratio * median, median + mads * mad);
  const cap = Math.floor(maxFraction * n);
  const none = { mask: null, count: 0, median, mad, threshold };
  // Nothing stands out from a map whose median norm is 0 (mostly zeros): leave it alone.
  if (cap === 0 || !(median > 0)) return none;

  const over: number[] = [];
  for (let p = 0; p < n; p++) if (norms[p]! > threshold) over.push(p);
  if (over.length === 0) return none;
  // Longest first; equal norms by position, so the cut at the cap is deterministic.
  over.sort((a, b) => norms[b]! - norms[a]! || a - b);
  const mask = new Uint8Array(n);
  const count = Math.min(cap, over.length);
  for (let i = 0; i < count; i++) mask[over[i]!] = 1;
  return { mask, count, median, mad, threshold };
}

/** Clamps the outliers' scores to [min, max] of the inliers' (in place). */
export function clampToInlierRange(scores: Float64Array, mask: Uint8Array): void {
  let min = Infinity;
  let max = -Infinity;
  for (let p = 0; p < scores.length; p++) {
    if (mask[p]) continue;
    const v = scores[p]!;
    if (v < min) min = v;
    if (v > max) max = v;
  }
  if (!(min <= max)) return;
  for (let p = 0; p < scores.length; p++) {
    if (!mask[p]) continue;
    const v = scores[p]!;
    scores[p] = v < min ? min : Math.min(v, max);
  }
}
