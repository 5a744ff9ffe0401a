/**
 * Implicitly mean-centered data matrix for PCA. The data stay in the caller's
 * channel-major float32 buffer (C rows of n = h·w positions); centering is applied
 * on the fly, so no centered copy (and no C×C or n×n matrix) is ever materialised.
 *
 * With X the n×C matrix (positions × channels) and Xc = X − 1·meanᵀ:
 *   mulX:  u = Xc v   (v: C → u: n)   scores of a loading vector
 *   mulXt: w = Xcᵀ u  (u: n → w: C)
 * Accumulation is in float64; loops are unrolled over 8 channels so each pass over
 * the n-vector serves eight rows of the buffer.
 */
export class CenteredMatrix {
  readonly mean: Float64Array;

  constructor(
    readonly data: Float32Array,
    readonly channels: number,
    readonly positions: number,
    mean?: Float64Array,
  ) {
    if (data.length !== channels * positions) throw new RangeError("data length does not match channels*positions");
    this.mean = mean ?? channelMeans(data, channels, positions);
  }

  /** u = Xc v */
  mulX(v: Float64Array, u: Float64Array): void {
    const { data: x, channels: C, positions: n, mean } = this;
    let shift = 0;
    for (let c = 0; c < C; c++) shift += mean[c]! * v[c]!;
    u.fill(-shift, 0, n);
    let c = 0;
    for (; c + 8 <= C; c += 8) {
      const v0 = v[c]!;
      const v1 = v[c + 1]!;
      const v2 = v[c + 2]!;
      const v3 = v[c + 3]!;
      const v4 = v[c + 4]!;
      const v5 = v[c + 5]!;
      const v6 = v[c + 6]!;
      const v7 = v[c + 7]!;
      const b0 = c * n;
      const b1 = b0 + n;
      const b2 = b1 + n;
      const b3 = b2 + n;
      const b4 = b3 + n;
      const b5 = b4 + n;
      const b6 = b5 + n;
      const b7 = b6 + n;
      for (let p = 0; p < n; p++) {
        u[p] =
          u[p]! + x[b0 + p]! * v0 + x[b1 + p]! * v1 + x[b2 + p]! * v2 + x[b3 + p]! * v3 + x[b4 + p]! * v4 + x[b5 + p]! * v5 + x[b6 + p]! * v6 + x[b7 + p]! * v7;
      }
    }
    for (; c < C; c++) {
      const vc = v[c]!;
      const b = c * n;
      for (let p = 0; p < n; p++) u[p] = u[p]! + x[b + p]! * vc;
    }
  }

  /** w = Xcᵀ u */
  mulXt(u: Float64Array, w: Float64Array): void {
    const { data: x, channels: C, positions: n, mean } = this;
    let su = 0;
    for (let p = 0; p < n; p++) su += u[p]!;
    let c = 0;
    for (; c + 8 <= C; c += 8) {
      const b0 = c * n;
      const b1 = b0 + n;
      const b2 = b1 + n;
      const b3 = b2 + n;
      const b4 = b3 + n;
      const b5 = b4 + n;
      const b6 = b5 + n;
      const b7 = b6 + n;
      let d0 = 0;
      let d1 = 0;
      let d2 = 0;
      let d3 = 0;
      let d4 = 0;
      let d5 = 0;
      let d6 = 0;
      let d7 = 0;
      for (let p = 0; p < n; p++) {
        const up = u[p]!;
        d0 += x[b0 + p]! * up;
        d1 += x[b1 + p]! * up;
        d2 += x[b2 + p]! * up;
        d3 += x[b3 + p]! * up;
        d4 += x[b4 + p]! * up;
        d5 += x[b5 + p]! * up;
        d6 += x[b6 + p]! * up;
        d7 += x[b7 + p]! * up;
      }
      w[c] = d0 - mean[c]! * su;
      w[c + 1] = d1 - mean[c + 1]! * su;
      w[c + 2] = d2 - mean[c + 2]! * su;
      w[c + 3] = d3 - mean[c + 3]! * su;
      w[c + 4] = d4 - mean[c + 4]! * su;
      w[c + 5] = d5 - mean[c + 5]! * su;
      w[c + 6] = d6 - mean[c + 6]! * su;
      w[c + 7] = d7 - mean[c + 7]! * su;
    }
    for (; c < C; c++) {
      const b = c * n;
      let d = 0;
      for (let p = 0; p < n; p++) d += x[b + p]! * u[p]!;
      w[c] = d - mean[c]! * su;
    }
  }
}

/** Per-channel mean over the positions, accumulated in float64. */
export function channelMeans(data: Float32Array, channels: number, positions: number): Float64Array {
  const mean = new Float64Array(channels);
  for (let c = 0; c < channels; c++) {
    const b = c * positions;
    let s = 0;
    for (let p = 0; p < positions; p++) s += data[b + p]!;
    mean[c] = s / positions;
  }
  return mean;
}
