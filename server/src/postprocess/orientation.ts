/**
 * Deterministic sign for principal components.
 *
 * An eigenvector is only defined up to sign, and which sign a solver returns depends
 * on incidental details (start vector, channel order, rounding), so without a rule the
 * heatmap could come out inverted from one image to the next. We orient each component
 * so that its scores correlate positively with the per-position L2 norm of the
 * (clipped) feature vectors: positions with "more feature energy" end up bright. That
 * criterion is invariant to channel permutation, to positive scaling of the features
 * and to the solver's own sign choice.
 *
 * If the correlation vanishes (e.g. all positions have the same norm) we fall back to
 * making the loading entry with the largest |value| positive (first index on ties).
 * "Vanishes" is tested relative to the magnitudes involved,
 *   |Σ (s − s̄)(r − r̄)| ≤ 1e-6 · ‖s − s̄‖ · ‖r‖,
 * rather than as exact 0.0: a mathematically zero covariance evaluates to rounding
 * noise of either sign, which would make the "exactly 0" test itself non-deterministic.
 *
 * Positions left out of the PCA fit (high-norm tokens, outliers.ts) are left out of the
 * correlation too: their norms are the largest by construction and would decide it.
 */

/** Relative threshold below which the score/norm covariance counts as zero. */
const ORIENTATION_ZERO_RELATIVE = 1e-6;

/** Per-position L2 norm of the feature vectors of channel-major (C, n) data. */
export function positionNorms(data: Float32Array, channels: number, positions: number): Float64Array {
  const sq = new Float64Array(positions);
  for (let c = 0; c < channels; c++) {
    const b = c * positions;
    for (let p = 0; p < positions; p++) {
      const v = data[b + p]!;
      sq[p] = sq[p]! + v * v;
    }
  }
  for (let p = 0; p < positions; p++) sq[p] = Math.sqrt(sq[p]!);
  return sq;
}

export type OrientationRule = "norm-correlation" | "max-loading" | "none";

/**
 * Flips `scores` and `loading` in place if needed; returns which rule decided
 * ('none' for an all-zero component) and whether a flip happened.
 */
export function orientComponent(
  scores: Float64Array,
  loading: Float64Array,
  norms: Float64Array,
  exclude: Uint8Array | null = null,
): { rule: OrientationRule; flipped: boolean } {
  const n = scores.length;
  if (norms.length !== n) throw new RangeError("scores and norms differ in length");
  if (exclude && exclude.length !== n) throw new RangeError("scores and exclude differ in length");
  let sMean = 0;
  let rMean = 0;
  let kept = 0;
  for (let p = 0; p < n; p++) {
    if (exclude?.[p]) continue;
    sMean += scores[p]!;
    rMean += norms[p]!;
    kept++;
  }
  sMean /= kept;
  rMean /= kept;
  let cov = 0;
  let sSq = 0;
  let rSq = 0;
  for (let p = 0; p < n; p++) {
    if (exclude?.[p]) continue;
    const ds = scores[p]! - sMean;
    const r = norms[p]!;
    cov += ds * (r - rMean);
    sSq += ds * ds;
    rSq += r * r;
  }

  let rule: OrientationRule;
  let flip: boolean;
  if (Math.abs(cov) > ORIENTATION_ZERO_RELATIVE * Math.sqrt(sSq) * Math.sqrt(rSq)) {
    rule = "norm-correlation";
    flip = cov < 0;
  } else {
    let best = -1;
    let bestAbs = 0;
    for (let c = 0; c < loading.length; c++) {
      const a = Math.abs(loading[c]!);
      if (a > bestAbs) {
        bestAbs = a;
        best = c;
      }
    }
    if (best < 0) return { rule: "none", flipped: false };
    rule = "max-loading";
    flip = loading[best]! < 0;
  }
  if (flip) {
    for (let p = 0; p < n; p++) scores[p] = -scores[p]!;
    for (let c = 0; c < loading.length; c++) loading[c] = -loading[c]!;
  }
  return { rule, flipped: flip };
}
