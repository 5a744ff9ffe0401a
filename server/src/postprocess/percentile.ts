/**
 * Percentiles with numpy's default ("linear") method, without sorting.
 *
 * numpy.percentile(a, q) with method='linear':
 *   virtual = (n − 1)·(q / 100); prev = floor(virtual); next = min(prev + 1, n − 1)
 *   gamma = virtual − prev
 *   result = lerp(sorted[prev], sorted[next], gamma)
 * where numpy's lerp is `a + (b − a)·t`, but `b − (b − a)·(1 − t)` when t ≥ 0.5.
 *
 * The two order statistics needed at each end come from two bounded max-heaps
 * filled in a single pass: the (next + 1) smallest values and the (n − prev)
 * largest (negated). O(n log k) worst case; for the 1st/99th percentile the heaps
 * hold ~1% of the values and most elements cost two comparisons.
 */

/** numpy's `_lerp`, reproduced so that results agree to the last bit where possible. */
export function numpyLerp(a: number, b: number, t: number): number {
  const diff = b - a;
  return t >= 0.5 ? b - diff * (1 - t) : a + diff * t;
}

/** Position of the q-th percentile of n sorted values in numpy's linear method. */
export function percentileIndex(n: number, q: number): { prev: number; next: number; gamma: number } {
  const virtual = (n - 1) * (q / 100);
  const prev = Math.min(Math.max(Math.floor(virtual), 0), n - 1);
  const next = Math.min(prev + 1, n - 1);
  return { prev, next, gamma: virtual - prev };
}

/** Reusable scratch space for percentile computations (grows on demand). */
export class PercentileScratch {
  heap = new Float64Array(64);
  ensure(size: number): Float64Array {
    if (this.heap.length < size) this.heap = new Float64Array(Math.max(size, this.heap.length * 2));
    return this.heap;
  }
}

function siftDownMax(h: Float64Array, size: number, start: number): void {
  let i = start;
  const v = h[i]!;
  for (;;) {
    let c = 2 * i + 1;
    if (c >= size) break;
    if (c + 1 < size && h[c + 1]! > h[c]!) c++;
    if (h[c]! <= v) break;
    h[i] = h[c]!;
    i = c;
  }
  h[i] = v;
}

function heapify(h: Float64Array, count: number): void {
  for (let i = (count >> 1) - 1; i >= 0; i--) siftDownMax(h, count, i);
}

/** Root and larger child of the root of a max-heap (the two largest entries). */
function topTwo(h: Float64Array, count: number): [number, number] {
  const root = h[0]!;
  return [root, count >= 3 ? Math.max(h[1]!, h[2]!) : count === 2 ? h[1]! : root];
}

/**
 * One pass over values[from, to) keeping the `lowCount` smallest values in a max-heap
 * (`low`) and the `highCount` largest, negated, in another (`high`).
 */
function boundaryHeaps(values: ArrayLike<number>, from: number, to: number, low: Float64Array, lowCount: number, high: Float64Array, highCount: number): void {
  for (let i = 0; i < lowCount; i++) low[i] = values[from + i]!;
  heapify(low, lowCount);
  for (let i = 0; i < highCount; i++) high[i] = -values[from + i]!;
  heapify(high, highCount);
  let rootLow = low[0]!;
  let negRootHigh = high[0]!;
  const start = from + Math.min(lowCount, highCount);
  const lowStart = from + lowCount;
  const highStart = from + highCount;
  for (let p = start; p < to; p++) {
    const v = values[p]!;
    if (v < rootLow && p >= lowStart) {
      low[0] = v;
      siftDownMax(low, lowCount, 0);
      rootLow = low[0]!;
    }
    if (-v < negRootHigh && p >= highStart) {
      high[0] = -v;
      siftDownMax(high, highCount, 0);
      negRootHigh = high[0]!;
    }
  }
}

/**
 * Percentiles `qLow <= qHigh` (0..100) of values[from, to), numpy 'linear' semantics.
 * Values must be NaN-free; the input is not modified.
 */
export function percentilePair(
  values: ArrayLike<number>,
  from: number,
  to: number,
  qLow: number,
  qHigh: number,
  scratch: PercentileScratch = new PercentileScratch(),
): [number, number] {
  const n = to - from;
  if (!(n > 0)) throw new RangeError("percentile of an empty range");
  if (!(qLow >= 0 && qLow <= qHigh && qHigh <= 100)) {
    throw new RangeError(`percentiles must satisfy 0 <= low <= high <= 100 (got ${qLow}, ${qHigh})`);
  }
  const lo = percentileIndex(n, qLow);
  const hi = percentileIndex(n, qHigh);

  // Smallest lo.next + 1 values: root = sorted[lo.next], larger child = sorted[lo.next − 1].
  // Largest n − hi.prev values (negated): root = sorted[hi.prev], larger child = sorted[hi.prev + 1].
  const lowCount = lo.next + 1;
  const highCount = n - hi.prev;
  const heaps = scratch.ensure(lowCount + highCount);
  const low = heaps.subarray(0, lowCount);
  const high = heaps.subarray(lowCount, lowCount + highCount);
  boundaryHeaps(values, from, to, low, lowCount, high, highCount);
  const [loNext, secondLo] = topTwo(low, lowCount);
  const loPrev = lo.next > lo.prev ? secondLo : loNext;
  const [negHiPrev, negSecondHi] = topTwo(high, highCount);
  const hiPrev = -negHiPrev;
  const hiNext = hi.next > hi.prev ? -negSecondHi : hiPrev;

  return [numpyLerp(loPrev, loNext, lo.gamma), numpyLerp(hiPrev, hiNext, hi.gamma)];
}
