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
 * `exclude` leaves positions out of the fit (high-norm tokens, outliers.ts): the mean
 * is the inliers' and the position-space vector inside each operator application is
 * zeroed at excluded positions, which is exactly the PCA of the inlier rows, with no
 * copy of the data. Scores are still computed for every position.
 *
 * Signs are NOT fixed here (see orientation.ts).
 */
import { CenteredMatrix, channelMeans } from "./centered-matrix.js";
import { type FeatureDims, validateFeatureDims } from "./dims.js";
import { deterministicStartVector } from "../lanczos-start.js";
import { type LanczosOptions, lanczosTopEigenpairs } from "./lanczos.js";

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
  side: "covariance" | "gram";
  steps: number;
  converged: boolean;
}

/** Eigenvalues below this fraction of the largest are treated as zero variance. */
export const ZERO_VARIANCE_RELATIVE = 1e-10;

export interface PcaFit {
  /** 1 = leave this position out of the fit (length h·w). */
  exclude?: Uint8Array | null;
  /** Per-channel mean of the fitted positions, if already known (saves a pass). */
  mean?: Float64Array;
}

/** Per-channel mean over the positions not excluded. */
function inlierMeans(data: Float32Array, C: number, n: number, exclude: Uint8Array): Float64Array {
  const mean = channelMeans(data, C, n);
  const out: number[] = [];
  for (let p = 0; p < n; p++) if (exclude[p]) out.push(p);
  for (let c = 0; c < C; c++) {
    let s = mean[c]! * n;
    for (const p of out) s -= data[c * n + p]!;
    mean[c] = s / (n - out.length);
  }
  return mean;
}

function zeroExcluded(u: Float64Array, exclude: Uint8Array | null): void {
  if (exclude) for (let p = 0; p < u.length; p++) if (exclude[p]) u[p] = 0;
}

export function principalComponents(data: Float32Array, dims: FeatureDims, k: number, opts: LanczosOptions = {}, fit: PcaFit = {}): PcaResult {
  const n = validateFeatureDims(data, dims);
  const C = dims.channels;
  const exclude = fit.exclude ?? null;
  if (exclude && exclude.length !== n) throw new RangeError(`exclude has length ${exclude.length}, expected ${n}`);
  let kept = n;
  if (exclude) for (let p = 0; p < n; p++) if (exclude[p]) kept--;
  if (kept < 1) throw new RangeError("every position is excluded from the fit");
  const mean = fit.mean ?? (exclude ? inlierMeans(data, C, n, exclude) : undefined);
  const X = new CenteredMatrix(data, C, n, mean);
  const side = C > n ? "gram" : "covariance";
  const bufN = new Float64Array(n);
  const bufC = new Float64Array(C);
  let solverOpts = opts;
  if (exclude && side === "gram") {
    // The Krylov space must stay inside the inlier positions.
    const start = opts.start ? Float64Array.from(opts.start) : deterministicStartVector(n, opts.seed);
    zeroExcluded(start, exclude);
    solverOpts = { ...opts, start };
  }

  const result =
    side === "covariance"
      ? lanczosTopEigenpairs(
          (v, y) => {
            X.mulX(v, bufN);
            zeroExcluded(bufN, exclude);
            X.mulXt(bufN, y);
          },
          C,
          k,
          solverOpts,
        )
      : lanczosTopEigenpairs(
          (u, y) => {
            X.mulXt(u, bufC);
            X.mulX(bufC, y);
            zeroExcluded(y, exclude);
          },
          n,
          k,
          solverOpts,
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
      if (side === "covariance") {
        loading.set(result.vectors[i]!);
      } else {
        X.mulXt(result.vectors[i]!, loading);
        let s = 0;
        for (let c = 0; c < C; c++) s += loading[c]! * loading[c]!;
        const inv = 1 / Math.sqrt(s);
        for (let c = 0; c < C; c++) loading[c] = loading[c]! * inv;
      }
      X.mulX(loading, score);
      explainedVariance[i] = kept > 1 ? theta / (kept - 1) : 0;
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
