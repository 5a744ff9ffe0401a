/**
 * Top-k eigenpairs of a symmetric positive semi-definite operator given only as a
 * matrix–vector product, by the Lanczos method with full reorthogonalisation.
 *
 * Why not plain power iteration: Lanczos needs the same one product per step, and
 * its Krylov space contains every power-iteration iterate, so it is never slower;
 * its convergence depends on the square root of the eigengap instead of the gap
 * itself, which matters for feature maps whose leading eigenvalues are close, and
 * it yields the top 3 components (pca3) from the same run. Everything is
 * deterministic: fixed pseudo-random start vector, fixed tolerance and step cap.
 *
 * Convergence test: for a Ritz pair (θ, y) of the m-step tridiagonal T_m the
 * residual ‖A y − θ y‖ equals β_m·|s_m| (s_m: last entry of the eigenvector of
 * T_m); all k wanted pairs must satisfy residual ≤ tolerance·θ_max.
 */
import { deterministicStartVector } from "../lanczos-start.js";
import { symmetricTridiagonalEigen } from "./tridiagonal-eigen.js";

/** y = A x (must not retain x or y). */
export type SymmetricOperator = (x: Float64Array, y: Float64Array) => void;

export interface LanczosOptions {
  /** Relative residual tolerance ‖A y − θ y‖ ≤ tolerance·θ_max; default 1e-10. */
  tolerance?: number;
  /** Maximum Krylov dimension (also capped by the operator dimension); default 300. */
  maxSteps?: number;
  /** Seed of the deterministic start vector; default 0x2545f491. */
  seed?: number;
  /** Explicit start vector (length dim); overrides `seed`. */
  start?: Float64Array;
}

export interface LanczosResult {
  /** Top-k eigenvalue estimates, descending (0 where the Krylov space had fewer than k dimensions). */
  values: Float64Array;
  /** Unit eigenvector estimates (all-zero where `values` is padded). */
  vectors: Float64Array[];
  /** Residual norm of each returned pair. */
  residuals: Float64Array;
  /** Krylov steps (operator applications) taken. */
  steps: number;
  converged: boolean;
}

const DEFAULT_LANCZOS_TOLERANCE = 1e-10;
const DEFAULT_LANCZOS_MAX_STEPS = 300;
/** A β this small against the running norm of T ends the Krylov space (an invariant subspace). */
export const BREAKDOWN_RELATIVE = 1e-12;

function dot(a: Float64Array, b: Float64Array, n: number): number {
  let s0 = 0;
  let s1 = 0;
  let i = 0;
  for (; i + 2 <= n; i += 2) {
    s0 += a[i]! * b[i]!;
    s1 += a[i + 1]! * b[i + 1]!;
  }
  if (i < n) s0 += a[i]! * b[i]!;
  return s0 + s1;
}

function axpy(alpha: number, x: Float64Array, y: Float64Array, n: number): void {
  for (let i = 0; i < n; i++) y[i] = y[i]! + alpha * x[i]!;
}

export function lanczosTopEigenpairs(apply: SymmetricOperator, dim: number, k: number, opts: LanczosOptions = {}): LanczosResult {
  if (!Number.isInteger(dim) || dim <= 0) throw new RangeError(`dim must be a positive integer (got ${dim})`);
  if (!Number.isInteger(k) || k <= 0) throw new RangeError(`k must be a positive integer (got ${k})`);
  const tol = opts.tolerance ?? DEFAULT_LANCZOS_TOLERANCE;
  const maxSteps = Math.min(dim, Math.max(k, opts.maxSteps ?? DEFAULT_LANCZOS_MAX_STEPS));

  const basis: Float64Array[] = [];
  const alpha = new Float64Array(maxSteps);
  const beta = new Float64Array(maxSteps);

  const q0 = opts.start ? Float64Array.from(opts.start) : deterministicStartVector(dim, opts.seed);
  if (q0.length !== dim) throw new RangeError(`start vector has length ${q0.length}, expected ${dim}`);
  const n0 = Math.sqrt(dot(q0, q0, dim));
  if (!(n0 > 0) || !Number.isFinite(n0)) throw new RangeError("start vector must be finite and non-zero");
  for (let i = 0; i < dim; i++) q0[i] = q0[i]! / n0;
  basis.push(q0);

  let w = new Float64Array(dim);
  let anorm = 0;
  let m = 0;
  let converged = false;

  for (let j = 0; j < maxSteps; j++) {
    const q = basis[j]!;
    apply(q, w);
    const a = dot(q, w, dim);
    alpha[j] = a;
    axpy(-a, q, w, dim);
    if (j > 0) axpy(-beta[j - 1]!, basis[j - 1]!, w, dim);
    // Full reorthogonalisation, two passes ("twice is enough").
    for (let pass = 0; pass < 2; pass++) {
      for (let i = 0; i <= j; i++) {
        const qi = basis[i]!;
        axpy(-dot(qi, w, dim), qi, w, dim);
      }
    }
    const b = Math.sqrt(dot(w, w, dim));
    beta[j] = b;
    m = j + 1;
    anorm = Math.max(anorm, Math.abs(a) + b + (j > 0 ? beta[j - 1]! : 0));

    if (b <= BREAKDOWN_RELATIVE * anorm) {
      // Invariant subspace found: the Ritz pairs are exact.
      beta[j] = 0;
      converged = true;
      break;
    }
    if (m >= k) {
      const { values, rows } = symmetricTridiagonalEigen(alpha, beta, m, [m - 1]);
      const thetaMax = Math.max(values[0]!, 0);
      let ok = true;
      for (let i = 0; i < k; i++) {
        if (b * Math.abs(rows[i]!) > tol * thetaMax) {
          ok = false;
          break;
        }
      }
      if (ok) {
        converged = true;
        break;
      }
    }
    if (m === maxSteps) {
      converged = m === dim;
      break;
    }
    const next = w;
    for (let i = 0; i < dim; i++) next[i] = next[i]! / b;
    basis.push(next);
    w = new Float64Array(dim);
  }

  const allRows = Array.from({ length: m }, (_, i) => i);
  const eig = symmetricTridiagonalEigen(alpha, beta, m, allRows);
  const bLast = beta[m - 1]!;
  const values = new Float64Array(k);
  const residuals = new Float64Array(k);
  const vectors: Float64Array[] = [];
  for (let i = 0; i < k; i++) {
    const y = new Float64Array(dim);
    if (i < m) {
      values[i] = eig.values[i]!;
      for (let r = 0; r < m; r++) axpy(eig.rows[r * m + i]!, basis[r]!, y, dim);
      residuals[i] = bLast * Math.abs(eig.rows[(m - 1) * m + i]!);
      const ny = Math.sqrt(dot(y, y, dim));
      if (ny > 0) for (let t = 0; t < dim; t++) y[t] = y[t]! / ny;
    }
    vectors.push(y);
  }
  return { values, vectors, residuals, steps: m, converged };
}
