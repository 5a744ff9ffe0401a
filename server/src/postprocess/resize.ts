/**
 * Bilinear resize of a single-channel row-major map with half-pixel centres, matching
 * torch.nn.functional.interpolate(mode='bilinear', align_corners=False, antialias=False)
 * for an explicit output size:
 *   scale = in / out; src = max((dst + 0.5)·scale − 0.5, 0); i0 = floor(src);
 *   i1 = min(i0 + 1, in − 1); λ = src − i0.
 * No antialiasing, so downscaling samples (like torch) rather than averages.
 */
import { assertPositiveInt } from "./dims.js";

interface AxisWeights {
  i0: Int32Array;
  i1: Int32Array;
  l1: Float64Array;
}

function axisWeights(inSize: number, outSize: number): AxisWeights {
  const scale = inSize / outSize;
  const i0 = new Int32Array(outSize);
  const i1 = new Int32Array(outSize);
  const l1 = new Float64Array(outSize);
  for (let d = 0; d < outSize; d++) {
    const src = Math.max(scale * (d + 0.5) - 0.5, 0);
    const a = Math.min(Math.floor(src), inSize - 1);
    i0[d] = a;
    i1[d] = a < inSize - 1 ? a + 1 : a;
    l1[d] = Math.min(Math.max(src - a, 0), 1);
  }
  return { i0, i1, l1 };
}

export function resizeBilinear(src: Float64Array, inHeight: number, inWidth: number, outHeight: number, outWidth: number, out?: Float64Array): Float64Array {
  assertPositiveInt(inHeight, "inHeight");
  assertPositiveInt(inWidth, "inWidth");
  assertPositiveInt(outHeight, "outHeight");
  assertPositiveInt(outWidth, "outWidth");
  if (src.length !== inHeight * inWidth) throw new RangeError(`map has ${src.length} values, expected ${inHeight}*${inWidth}`);
  const dst = out ?? new Float64Array(outHeight * outWidth);
  if (dst.length !== outHeight * outWidth) throw new RangeError("out has the wrong length");
  const ry = axisWeights(inHeight, outHeight);
  const rx = axisWeights(inWidth, outWidth);
  // Separable: every source row interpolated along x once, then each output row is a
  // blend of two of those. Same products in the same order as the 2-D formula
  // ly0·(lx0·a + lx1·b) + ly1·(lx0·c + lx1·d), so bit-identical, at 2 instead of 6
  // multiplications per output pixel.
  const rows = new Float64Array(inHeight * outWidth);
  for (let r = 0; r < inHeight; r++) {
    const s = r * inWidth;
    const o = r * outWidth;
    for (let x = 0; x < outWidth; x++) {
      const lx1 = rx.l1[x]!;
      rows[o + x] = (1 - lx1) * src[s + rx.i0[x]!]! + lx1 * src[s + rx.i1[x]!]!;
    }
  }
  for (let y = 0; y < outHeight; y++) {
    const r0 = ry.i0[y]! * outWidth;
    const r1 = ry.i1[y]! * outWidth;
    const ly1 = ry.l1[y]!;
    const ly0 = 1 - ly1;
    const o = y * outWidth;
    for (let x = 0; x < outWidth; x++) dst[o + x] = ly0 * rows[r0 + x]! + ly1 * rows[r1 + x]!;
  }
  return dst;
}
