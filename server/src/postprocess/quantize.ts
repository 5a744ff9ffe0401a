/**
 * Min–max normalisation to uint8: round((v − min) / (max − min) · 255), rounding
 * half up (Math.round). A constant map (max == min) becomes all zeros.
 * Writes element i to out[offset + i·stride], so channels can be interleaved.
 */
export function minMaxToUint8(src: Float64Array, out: Uint8Array, stride = 1, offset = 0): void {
  const n = src.length;
  if (n === 0) return;
  if (offset + (n - 1) * stride >= out.length) throw new RangeError('output buffer too small');
  let min = Infinity;
  let max = -Infinity;
  for (let i = 0; i < n; i++) {
    const v = src[i]!;
    if (v < min) min = v;
    if (v > max) max = v;
  }
  const range = max - min;
  if (!(range > 0) || !Number.isFinite(range)) {
    for (let i = 0; i < n; i++) out[offset + i * stride] = 0;
    return;
  }
  for (let i = 0; i < n; i++) {
    const q = Math.round(((src[i]! - min) / range) * 255);
    out[offset + i * stride] = q < 0 ? 0 : q > 255 ? 255 : q;
  }
}
