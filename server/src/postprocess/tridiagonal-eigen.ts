/**
 * Eigen-decomposition of a small symmetric tridiagonal matrix by the implicit QL
 * method with Wilkinson shifts (the classic "tqli" algorithm). Used for the
 * Rayleigh–Ritz step of the Lanczos solver in pca.ts, where m is at most a few hundred.
 *
 * Eigenvector accumulation is restricted to a chosen set of rows of the
 * eigenvector matrix Z (Z starts as the identity; the rotations act on columns,
 * so every row evolves independently). Tracking only the last row costs O(m^2)
 * and is all that the Lanczos residual estimate needs.
 */

export interface TridiagonalEigen {
  /** Eigenvalues, sorted descending. */
  values: Float64Array;
  /**
   * Requested rows of the eigenvector matrix, row-major: `rows[r * m + j]` is
   * component `rowIndices[r]` of the eigenvector belonging to `values[j]`.
   */
  rows: Float64Array;
}

/**
 * @param alpha diagonal (length m)
 * @param beta off-diagonal: beta[i] = T[i+1][i] (length >= m - 1)
 * @param rowIndices which rows of the eigenvector matrix to return (e.g. all, or just m - 1)
 */
export function symmetricTridiagonalEigen(alpha: ArrayLike<number>, beta: ArrayLike<number>, m: number, rowIndices: readonly number[]): TridiagonalEigen {
  const d = new Float64Array(m);
  const e = new Float64Array(m);
  for (let i = 0; i < m; i++) d[i] = alpha[i]!;
  for (let i = 0; i < m - 1; i++) e[i] = beta[i]!;
  const R = rowIndices.length;
  const z = new Float64Array(R * m);
  for (let r = 0; r < R; r++) {
    const idx = rowIndices[r]!;
    if (!(idx >= 0 && idx < m)) throw new RangeError(`row index ${idx} out of range`);
    z[r * m + idx] = 1;
  }

  for (let l = 0; l < m; l++) {
    let iter = 0;
    for (;;) {
      let mm = l;
      for (; mm < m - 1; mm++) {
        const dd = Math.abs(d[mm]!) + Math.abs(d[mm + 1]!);
        if (Math.abs(e[mm]!) <= Number.EPSILON * dd) break;
      }
      if (mm === l) break;
      if (iter++ >= 100) throw new Error("tridiagonal eigen solver did not converge");
      let g = (d[l + 1]! - d[l]!) / (2 * e[l]!);
      let r = Math.hypot(g, 1);
      g = d[mm]! - d[l]! + e[l]! / (g + (g >= 0 ? r : -r));
      let s = 1;
      let c = 1;
      let p = 0;
      let i = mm - 1;
      let underflow = false;
      for (; i >= l; i--) {
        const f = s * e[i]!;
        const b = c * e[i]!;
        r = Math.hypot(f, g);
        e[i + 1] = r;
        if (r === 0) {
          d[i + 1] = d[i + 1]! - p;
          e[mm] = 0;
          underflow = true;
          break;
        }
        s = f / r;
        c = g / r;
        g = d[i + 1]! - p;
        r = (d[i]! - g) * s + 2 * c * b;
        p = s * r;
        d[i + 1] = g + p;
        g = c * r - b;
        for (let k = 0; k < R; k++) {
          const o = k * m;
          const zf = z[o + i + 1]!;
          const zi = z[o + i]!;
          z[o + i + 1] = s * zi + c * zf;
          z[o + i] = c * zi - s * zf;
        }
      }
      if (underflow) continue;
      d[l] = d[l]! - p;
      e[l] = g;
      e[mm] = 0;
    }
  }

  // Sort descending; ties keep their original order.
  const order = Array.from({ length: m }, (_, j) => j).sort((a, b) => d[b]! - d[a]! || a - b);
  const values = new Float64Array(m);
  const rows = new Float64Array(R * m);
  for (let j = 0; j < m; j++) {
    const src = order[j]!;
    values[j] = d[src]!;
    for (let k = 0; k < R; k++) rows[k * m + j] = z[k * m + src]!;
  }
  return { values, rows };
}
