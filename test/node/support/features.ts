// Deterministic feature maps (channel-major C × h·w) for the heatmap tests: planted spatial patterns,
// non-finite values, high-norm tokens.
import { positionNorms } from "../../../server/src/postprocess/orientation.js";

export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function gaussian(rnd: () => number): () => number {
  return () => {
    const u = 1 - rnd();
    const v = rnd();
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
  };
}

/**
 * Features with three spatial patterns of decreasing strength (so PC1..PC3 are well
 * separated), unit noise, per-channel offsets, and sprinkled outliers / NaN / ±Inf.
 */
export function makeFeatures(C: number, h: number, w: number, seed: number): Float32Array {
  const rnd = mulberry32(seed);
  const g = gaussian(rnd);
  const n = h * w;
  const patterns = [
    (y: number, x: number) => Math.sin((3 * y) / h + 0.3) * Math.cos((2 * x) / w),
    (_y: number, x: number) => (x / Math.max(1, w - 1) - 0.5) * 2,
    (y: number, x: number) => Math.cos((5 * y) / h) * Math.sin((4 * x) / w + 1),
  ];
  const amps = [9, 5, 3];
  const loads = patterns.map(() => Float64Array.from({ length: C }, g));
  const offsets = Float64Array.from({ length: C }, () => 2 * g());
  const x = new Float32Array(C * n);
  for (let c = 0; c < C; c++) {
    for (let p = 0; p < n; p++) {
      const yy = Math.floor(p / w);
      const xx = p % w;
      let v = offsets[c]! + 0.7 * g();
      for (let k = 0; k < patterns.length; k++) v += amps[k]! * loads[k]![c]! * patterns[k]!(yy, xx);
      x[c * n + p] = v;
    }
  }
  const specials = [Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY, 1e4, -3e3, 250];
  const count = Math.max(6, Math.floor(x.length / 200));
  for (let i = 0; i < count; i++) x[Math.floor(rnd() * x.length)] = specials[i % specials.length]!;
  return x;
}

/**
 * An image-like map with planted high-norm tokens: a disc (the "object", 24 % of the
 * positions) whose features are shifted by `shift` along a random direction, unit
 * noise, a per-channel offset, and `count` tokens (corners first, then the background)
 * pushed along one shared random direction to `times` × the median token norm, as
 * registers / high-norm patches are (NVlabs/RADIO issue #174). Returns the features,
 * the disc mask and the planted positions.
 */
export function makeRegionFeatures(
  C: number,
  h: number,
  w: number,
  o: { shift: number; count: number; times: number; seed: number },
): { x: Float32Array; region: Float64Array; spots: number[] } {
  const g = gaussian(mulberry32(o.seed));
  const n = h * w;
  const region = new Float64Array(n);
  for (let p = 0; p < n; p++) {
    const y = Math.floor(p / w);
    const x = p % w;
    region[p] = (y - 0.55 * h) ** 2 + (x - 0.45 * w) ** 2 < (0.28 * h) ** 2 ? 1 : 0;
  }
  const offset = Float64Array.from({ length: C }, () => 0.5 * g());
  const dir = Float64Array.from({ length: C }, g);
  const spike = Float64Array.from({ length: C }, g);
  const x = new Float32Array(C * n);
  for (let c = 0; c < C; c++) {
    for (let p = 0; p < n; p++) x[c * n + p] = offset[c]! + g() + o.shift * region[p]! * dir[c]!;
  }
  const norms = positionNorms(x, C, n);
  const median = Float64Array.from(norms).sort()[n >> 1]!;
  const corners = [0, w - 1, n - w, n - 1, 2 * w + 3, 6 * w - 4, (h - 3) * w + 2, 4 * w - 3];
  const spots: number[] = [];
  for (let i = 0; spots.length < o.count; i++) {
    const p = i < corners.length ? corners[i]! : (7 + 37 * i) % n;
    if (!region[p] && !spots.includes(p)) spots.push(p);
  }
  const scale = (o.times * median) / Math.sqrt(spike.reduce((a, v) => a + v * v, 0));
  for (const p of spots) for (let c = 0; c < C; c++) x[c * n + p] = x[c * n + p]! + scale * spike[c]!;
  return { x, region, spots };
}
