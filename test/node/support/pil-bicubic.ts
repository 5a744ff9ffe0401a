/**
 * PIL's BICUBIC resize (Image.resize(size, Image.BICUBIC)) in plain TypeScript: the reference the
 * sidecar's resize is held to. Pixel centres at (i + ½): output x covers input centre (x + ½)·in/out;
 * Catmull-Rom (a = −½) taps, the kernel widened by in/out when shrinking (antialiasing), taps that
 * fall outside the image dropped and the rest renormalised; horizontal pass first, rounded to 8 bits
 * between passes, as PIL does. (Float weights, where PIL uses 22-bit fixed point: ±1 at most.)
 */

function cubic(x: number): number {
  const a = -0.5;
  const t = Math.abs(x);
  if (t < 1) return ((a + 2) * t - (a + 3)) * t * t + 1;
  if (t < 2) return (((t - 5) * t + 8) * t - 4) * a;
  return 0;
}

/** For each output index: the first input index and the normalised weights from there. */
function taps(inSize: number, outSize: number): Array<{ first: number; weights: number[] }> {
  const scale = inSize / outSize;
  const widen = Math.max(scale, 1);
  const support = 2 * widen;
  const out: Array<{ first: number; weights: number[] }> = [];
  for (let x = 0; x < outSize; x++) {
    const centre = (x + 0.5) * scale;
    const first = Math.max(Math.floor(centre - support + 0.5), 0);
    const last = Math.min(Math.floor(centre + support + 0.5), inSize);
    const weights: number[] = [];
    for (let i = first; i < last; i++) weights.push(cubic((i - centre + 0.5) / widen));
    const sum = weights.reduce((s, w) => s + w, 0);
    out.push({ first, weights: weights.map((w) => w / sum) });
  }
  return out;
}

const clip8 = (v: number): number => Math.min(255, Math.max(0, Math.round(v)));

/** Interleaved uint8 RGB, `inW`×`inH` → `outW`×`outH`. */
export function pilBicubic(src: Uint8Array, inW: number, inH: number, outW: number, outH: number): Uint8Array {
  const h = taps(inW, outW);
  const mid = new Uint8Array(outW * inH * 3);
  for (let y = 0; y < inH; y++) {
    for (let x = 0; x < outW; x++) {
      const { first, weights } = h[x]!;
      for (let c = 0; c < 3; c++) {
        let v = 0;
        for (let k = 0; k < weights.length; k++) v += weights[k]! * src[(y * inW + first + k) * 3 + c]!;
        mid[(y * outW + x) * 3 + c] = clip8(v);
      }
    }
  }
  const v = taps(inH, outH);
  const out = new Uint8Array(outW * outH * 3);
  for (let y = 0; y < outH; y++) {
    const { first, weights } = v[y]!;
    for (let x = 0; x < outW; x++) {
      for (let c = 0; c < 3; c++) {
        let s = 0;
        for (let k = 0; k < weights.length; k++) s += weights[k]! * mid[((first + k) * outW + x) * 3 + c]!;
        out[(y * outW + x) * 3 + c] = clip8(s);
      }
    }
  }
  return out;
}
