// The Lanczos solver's fixed start vector, shared by the CPU solver (postprocess/lanczos.ts) and the
// graph's heatmap head (compiler/heatmap-head.ts), so both build the same Krylov space.

/** Deterministic start vector: xorshift32 stream mapped to [-1, 1), normalised. */
export function deterministicStartVector(dim: number, seed = 0x2545f491): Float64Array {
  const v = new Float64Array(dim);
  let s = seed >>> 0 || 1;
  for (let i = 0; i < dim; i++) {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    v[i] = s / 2147483648 - 1;
  }
  return v;
}
