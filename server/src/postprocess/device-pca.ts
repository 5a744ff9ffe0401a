/**
 * The heatmap PCA's light half, for graphs compiled with --heatmap (compiler/heatmap-head.ts ran
 * stages 1–4 on the device): the Rayleigh–Ritz step on the Lanczos tridiagonal, loadings and scores
 * from the basis and the projections, then stages 5–6 as computeScoreMaps does them (orientation.ts,
 * outliers.ts). O(m²·(C + n)) for m Lanczos steps, ~1 ms for H at 512², against ~40 ms for the
 * whole PCA on the features.
 */
import type { HeatmapOutputs } from "../runtime/session.js";
import { BREAKDOWN_RELATIVE } from "./lanczos.js";
import { orientComponent } from "./orientation.js";
import { clampToInlierRange } from "./outliers.js";
import { symmetricTridiagonalEigen } from "./tridiagonal-eigen.js";

/**
 * Eigenvalues below this fraction of the largest count as zero variance here (the CPU solver, in
 * float64, uses pca.ts's ZERO_VARIANCE_RELATIVE, 1e-10): the graph ran its Lanczos steps in float32,
 * whose rounding leaves Ritz values up to ~1e-7 of the largest where the data have none, e.g. the
 * third component of a grid of 3 positions (whose centred features have rank 2). Above 1e-10 such
 * noise became a component of its own: pca3 showed a speckled channel where the CPU path leaves it black.
 */
export const DEVICE_ZERO_VARIANCE_RELATIVE = 1e-6;

/** One image's heatmap outputs, and its feature width C. */
export interface DevicePca extends HeatmapOutputs {
  channels: number;
}

/** Oriented score maps (length n each) of the top `components`, high-norm tokens clamped. */
export function scoreMapsFromDevice(d: DevicePca, components: number): Float64Array[] {
  const { steps, channels: C } = d;
  const n = d.norms.length;
  if (d.basis.length !== steps * C || d.tridiagonal.length !== 2 * steps || d.projections.length !== n * steps || d.outliers.length !== n) {
    throw new RangeError(`heatmap outputs do not fit ${steps} steps × ${C} channels × ${n} positions`);
  }
  const alpha = Float64Array.from(d.tridiagonal.subarray(0, steps));
  const beta = Float64Array.from(d.tridiagonal.subarray(steps));
  // The Krylov space ends where the solver on the CPU would have stopped for breakdown.
  let m = steps;
  let anorm = 0;
  for (let j = 0; j < steps; j++) {
    anorm = Math.max(anorm, Math.abs(alpha[j]!) + beta[j]! + (j > 0 ? beta[j - 1]! : 0));
    if (beta[j]! <= BREAKDOWN_RELATIVE * anorm) {
      m = j + 1;
      break;
    }
  }
  const eig = symmetricTridiagonalEigen(
    alpha,
    beta,
    m,
    Array.from({ length: m }, (_, i) => i),
  );
  let mask: Uint8Array | null = null;
  for (let p = 0; p < n; p++) {
    if (d.outliers[p]! > 0.5) (mask ??= new Uint8Array(n))[p] = 1;
  }
  const norms = Float64Array.from(d.norms);
  const top = eig.values[0]!;
  const maps: Float64Array[] = [];
  for (let i = 0; i < components; i++) {
    const loading = new Float64Array(C);
    const score = new Float64Array(n);
    if (i < m && top > 0 && eig.values[i]! > DEVICE_ZERO_VARIANCE_RELATIVE * top) {
      const s = Array.from({ length: m }, (_, r) => eig.rows[r * m + i]!);
      for (let r = 0; r < m; r++) for (let c = 0; c < C; c++) loading[c] = loading[c]! + s[r]! * d.basis[r * C + c]!;
      let sq = 0;
      for (let c = 0; c < C; c++) sq += loading[c]! * loading[c]!;
      const inv = 1 / Math.sqrt(sq);
      for (let c = 0; c < C; c++) loading[c] = loading[c]! * inv;
      for (let p = 0; p < n; p++) {
        let v = 0;
        for (let r = 0; r < m; r++) v += s[r]! * d.projections[p * steps + r]!;
        score[p] = v * inv;
      }
      orientComponent(score, loading, norms, mask);
      if (mask) clampToInlierRange(score, mask);
    }
    maps.push(score);
  }
  return maps;
}
