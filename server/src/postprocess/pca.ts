/**
 * Leading principal components of spatial features: positions (h·w) are samples,
 * channels are variables, data are centred by the per-channel mean.
 *
 * The eigenproblem is solved by Lanczos (lanczos.ts) on whichever of the two
 * equivalent operators is smaller, both applied matrix-free:
 *   C ≤ n: covariance side  A = Xcᵀ Xc  (C×C), eigenvectors are the loadings;
 *   C > n: Gram side        G = Xc Xcᵀ  (n×n), eigenvectors are normalised scores,
 *          loadings are recovered as Xcᵀ u / ‖Xcᵀ u‖.
 * Each operator application is two passes over the data (2·C·n multiply-adds).
 * Scores are always recomputed as Xc · loading.
 *
 * Signs are NOT fixed here (see orientation.ts).
 */
import { CenteredMatrix } from './centered-matrix.js';
import { type FeatureDims, validateFeatureDims } from './dims.js';
import { type LanczosOptions, lanczosTopEigenpairs } from './lanczos.js';

export interface PcaResult {
  /** Unit loading vectors (length C); all zeros for a component the data do not have. */
  components: Float64Array[];
  /** Scores (length h·w, row-major h×w) = centred data · component. */
  scores: Float64Array[];
  /** Variance along each component (eigenvalue / (n − 1)), like sklearn's explained_variance_. */
  explainedVariance: Float64Array;
  /** Per-channel mean used for centring. */
  mean: Float64Array;
  /** Which operator the solver ran on. */
  side: 'covariance' | 'gram';
  steps: number;
  converged: boolean;
}

/** Eigenvalues below this fraction of the largest are treated as zero variance. */
const ZERO_VARIANCE_RELATIVE = 1e-10;

export function principalComponents(
  data: Float32Array,
  dims: FeatureDims,
  k: number,
  opts: LanczosOptions = {},
): PcaResult {
  const n = validateFeatureDims(data, dims);
  const C = dims.channels;
  const X = new CenteredMatrix(data, C, n);
  const side = C > n ? 'gram' : 'covariance';
  const bufN = new Float64Array(n);
  const bufC = new Float64Array(C);

  const result =
    side === 'covariance'
      ? lanczosTopEigenpairs(
          (v, y) => {
            X.mulX(v, bufN);
            X.mulXt(bufN, y);
          },
          C,
          k,
          opts,
        )
      : lanczosTopEigenpairs(
          (u, y) => {
            X.mulXt(u, bufC);
            X.mulX(bufC, y);
          },
          n,
          k,
          opts,
        );

  const top = result.values[0]!;
  const components: Float64Array[] = [];
  const scores: Float64Array[] = [];
  const explainedVariance = new Float64Array(k);
  for (let i = 0; i < k; i++) {
    const theta = result.values[i]!;
    const loading = new Float64Array(C);
    const score = new Float64Array(n);
    if (top > 0 && theta > ZERO_VARIANCE_RELATIVE * top) {
      if (side === 'covariance') {
        loading.set(result.vectors[i]!);
      } else {
        X.mulXt(result.vectors[i]!, loading);
        let s = 0;
        for (let c = 0; c < C; c++) s += loading[c]! * loading[c]!;
        const inv = 1 / Math.sqrt(s);
        for (let c = 0; c < C; c++) loading[c] = loading[c]! * inv;
      }
      X.mulX(loading, score);
      explainedVariance[i] = n > 1 ? theta / (n - 1) : 0;
    }
    components.push(loading);
    scores.push(score);
  }
  return {
    components,
    scores,
    explainedVariance,
    mean: X.mean,
    side,
    steps: result.steps,
    converged: result.converged,
  };
}
