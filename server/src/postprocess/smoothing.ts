/**
 * Separable Gaussian smoothing of a 2-D map, matching
 * scipy.ndimage.gaussian_filter(input, sigma, mode='reflect', truncate=4.0) on float64:
 *   radius = int(truncate·sigma + 0.5), weights ∝ exp(−x²/(2σ²)) for x in [−radius, radius],
 *   normalised to sum 1, applied along axis 0 (rows) and then axis 1 (columns), with
 *   'reflect' = half-sample symmetric extension (d c b a | a b c d | d c b a), repeated
 *   periodically when the radius exceeds the map.
 * sigma is in map cells (feature-grid cells for heatmaps).
 */
const DEFAULT_GAUSSIAN_TRUNCATE = 4.0;

export function gaussianKernel1d(sigma: number, truncate = DEFAULT_GAUSSIAN_TRUNCATE): Float64Array {
  if (!(sigma > 0) || !Number.isFinite(sigma)) throw new RangeError(`sigma must be finite and > 0 (got ${sigma})`);
  const radius = Math.trunc(truncate * sigma + 0.5);
  const k = new Float64Array(2 * radius + 1);
  const c = -0.5 / (sigma * sigma);
  let sum = 0;
  for (let i = -radius; i <= radius; i++) {
    const v = Math.exp(c * i * i);
    k[i + radius] = v;
    sum += v;
  }
  for (let i = 0; i < k.length; i++) k[i] = k[i]! / sum;
  return k;
}

/** scipy 'reflect' boundary: index i (any integer) into [0, len). */
function reflectIndex(i: number, len: number): number {
  const period = 2 * len;
  let m = i % period;
  if (m < 0) m += period;
  return m < len ? m : period - 1 - m;
}

/**
 * Smooths the row-major `height`×`width` map. Returns `out` (allocated if omitted;
 * may not alias `src`). sigma ≤ 1e-15 (as in scipy) copies the input unchanged.
 */
export function gaussianFilter2d(
  src: Float64Array,
  height: number,
  width: number,
  sigma: number,
  opts: { truncate?: number; out?: Float64Array } = {},
): Float64Array {
  const size = height * width;
  if (src.length !== size) throw new RangeError(`map has ${src.length} values, expected ${height}*${width}`);
  const out = opts.out ?? new Float64Array(size);
  if (out === src) throw new RangeError("gaussianFilter2d cannot run in place");
  if (!(sigma >= 0) || !Number.isFinite(sigma)) throw new RangeError(`sigma must be finite and >= 0 (got ${sigma})`);
  if (sigma <= 1e-15) {
    out.set(src);
    return out;
  }
  const kernel = gaussianKernel1d(sigma, opts.truncate ?? DEFAULT_GAUSSIAN_TRUNCATE);
  const r = (kernel.length - 1) >> 1;
  const K = kernel.length;

  // Axis 0: out[y, :] = Σ_k kernel[k] · src[reflect(y + k − r), :]
  const rowIndex = new Int32Array(height + 2 * r);
  for (let i = 0; i < rowIndex.length; i++) rowIndex[i] = reflectIndex(i - r, height);
  out.fill(0);
  for (let y = 0; y < height; y++) {
    const o = y * width;
    for (let k = 0; k < K; k++) {
      const wk = kernel[k]!;
      const s = rowIndex[y + k]! * width;
      for (let x = 0; x < width; x++) out[o + x] = out[o + x]! + wk * src[s + x]!;
    }
  }

  // Axis 1, line by line through a padded buffer.
  const line = new Float64Array(width + 2 * r);
  const colIndex = new Int32Array(width + 2 * r);
  for (let i = 0; i < colIndex.length; i++) colIndex[i] = reflectIndex(i - r, width);
  for (let y = 0; y < height; y++) {
    const o = y * width;
    for (let i = 0; i < line.length; i++) line[i] = out[o + colIndex[i]!]!;
    for (let x = 0; x < width; x++) {
      let acc = 0;
      for (let k = 0; k < K; k++) acc += kernel[k]! * line[x + k]!;
      out[o + x] = acc;
    }
  }
  return out;
}
