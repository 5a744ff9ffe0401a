/**
 * Heatmap post-processing: every stage is checked against a float64 Python oracle
 * (numpy / scikit-learn / scipy / torch, test/python/heatmap_reference.py) on fixed
 * pseudo-random features, plus invariance properties that need no oracle.
 *
 * Python: $RADIO_TEST_PYTHON, else <repo>/.venv/bin/python. Without it (or without one of
 * its modules) the oracle comparisons are skipped, the property tests still run.
 */
import { HEATMAP_DEFAULTS } from "../../server/src/defaults.js";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { after, before, describe, it, type TestContext } from "node:test";

import { sanitizeAndClip } from "../../server/src/postprocess/clip.js";
import {
  computeHeatmap,
  computeScoreMaps,
  defaultHeatmapSize,
  HEATMAP_PCA1_LOW,
  type FeatureDims,
  type HeatmapMode,
} from "../../server/src/postprocess/heatmap.js";
import { lanczosTopEigenpairs } from "../../server/src/postprocess/lanczos.js";
import { orientComponent, positionNorms } from "../../server/src/postprocess/orientation.js";
import { clampToInlierRange, highNormTokens } from "../../server/src/postprocess/outliers.js";
import { principalComponents } from "../../server/src/postprocess/pca.js";
import { numpyLerp, percentileIndex, percentilePair } from "../../server/src/postprocess/percentile.js";
import { minMaxToUint8 } from "../../server/src/postprocess/quantize.js";
import { resizeBilinear } from "../../server/src/postprocess/resize.js";
import { gaussianFilter2d, gaussianKernel1d } from "../../server/src/postprocess/smoothing.js";
import { symmetricTridiagonalEigen } from "../../server/src/postprocess/tridiagonal-eigen.js";
import { gaussian, makeFeatures, makeRegionFeatures, mulberry32 } from "./support/features.js";

const REPO = fileURLToPath(new URL("../..", import.meta.url));
const SCRIPT = path.join(REPO, "test/python/heatmap_reference.py");
const PYTHON = process.env.RADIO_TEST_PYTHON ?? path.join(REPO, ".venv/bin/python");

// ---------------------------------------------------------------------------
// Deterministic data
// ---------------------------------------------------------------------------

/**
 * All positions have the same norm, so the correlation rule is void and the fallback
 * must decide. 'exact': integer vectors of length 5 (covariance exactly 0).
 * 'rounded': (0.5, 0) and (0.3, 0.4) in float32, whose norms differ by rounding only
 * (~2e-8 relative), in unbalanced counts so the covariance is tiny but not 0.
 */
function makeConstantNormFeatures(kind: "exact" | "rounded"): { x: Float32Array; dims: FeatureDims } {
  const a = kind === "exact" ? [5, 0] : [0.5, 0];
  const b = kind === "exact" ? [3, 4] : [0.3, 0.4];
  const neg = (v: number[]) => v.map((t) => -t);
  // 4×A, 4×−A, 5×B, 3×−B, shuffled over a 4×4 grid.
  const order = [a, b, neg(a), b, neg(b), a, b, neg(a), a, neg(b), b, neg(a), neg(b), a, b, neg(a)];
  const h = 4;
  const w = 4;
  const n = h * w;
  const x = new Float32Array(2 * n);
  order.forEach((v, p) => {
    x[p] = v[0]!;
    x[n + p] = v[1]!;
  });
  return { x, dims: { channels: 2, height: h, width: w } };
}

function pearson(a: ArrayLike<number>, b: ArrayLike<number>): number {
  const n = a.length;
  let ma = 0;
  let mb = 0;
  for (let i = 0; i < n; i++) {
    ma += a[i]!;
    mb += b[i]!;
  }
  ma /= n;
  mb /= n;
  let sab = 0;
  let saa = 0;
  let sbb = 0;
  for (let i = 0; i < n; i++) {
    sab += (a[i]! - ma) * (b[i]! - mb);
    saa += (a[i]! - ma) ** 2;
    sbb += (b[i]! - mb) ** 2;
  }
  return sab / Math.sqrt(saa * sbb);
}

function randomMap(h: number, w: number, seed: number): Float64Array {
  const g = gaussian(mulberry32(seed));
  return Float64Array.from({ length: h * w }, (_, i) => g() + Math.sin(i / 3));
}

// ---------------------------------------------------------------------------
// Comparison helpers
// ---------------------------------------------------------------------------

/** max |a − b| / max |b|: relative to the reference's scale. */
function relErr(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length, "length mismatch");
  let num = 0;
  let den = 0;
  for (let i = 0; i < a.length; i++) {
    num = Math.max(num, Math.abs(a[i]! - b[i]!));
    den = Math.max(den, Math.abs(b[i]!));
  }
  return den === 0 ? num : num / den;
}

function assertClose(a: ArrayLike<number>, b: ArrayLike<number>, tol: number, what: string): number {
  const e = relErr(a, b);
  assert.ok(e <= tol, `${what}: relative error ${e.toExponential(3)} > ${tol}`);
  return e;
}

function dot(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i]! * b[i]!;
  return s;
}

/** Largest |a − b| over two byte arrays, and how many bytes differ. */
function byteDiff(a: Uint8Array, b: Uint8Array): { max: number; differing: number } {
  assert.equal(a.length, b.length, "length mismatch");
  let max = 0;
  let differing = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i]! - b[i]!);
    if (d > 0) differing++;
    if (d > max) max = d;
  }
  return { max, differing };
}

function scaled(x: Float32Array, s: number): Float32Array {
  return x.map((v) => v * s);
}

// ---------------------------------------------------------------------------
// Python oracle
// ---------------------------------------------------------------------------

interface ArrayInfo {
  file: string;
  dtype: "<f8" | "u1";
  shape: number[];
}
type Manifest = Record<string, { arrays: Record<string, ArrayInfo>; scalars: Record<string, unknown> }>;

interface PipelineCase {
  name: string;
  dims: FeatureDims;
  features: Float32Array;
  components: 1 | 3;
  sigma: number | null;
  outH: number;
  outW: number;
}

const constantNorm = makeConstantNormFeatures("exact");
const roundedNorm = makeConstantNormFeatures("rounded");
const PIPELINES: PipelineCase[] = [
  // C < h·w: the solver runs on the C×C covariance side.
  { name: "cov", dims: { channels: 48, height: 20, width: 24 }, components: 3, sigma: HEATMAP_DEFAULTS.sigma, outH: 157, outW: 203 },
  // C > h·w: Gram side.
  { name: "gram", dims: { channels: 160, height: 9, width: 11 }, components: 3, sigma: 0.9, outH: 40, outW: 33 },
  // No smoothing, downscaling.
  { name: "nosmooth", dims: { channels: 32, height: 16, width: 16 }, components: 1, sigma: null, outH: 12, outW: 10 },
  // Kernel radius (12) larger than the map: reflect must wrap periodically. Same-size output.
  { name: "bigsigma", dims: { channels: 24, height: 6, width: 5 }, components: 3, sigma: 3, outH: 6, outW: 5 },
].map((c, i) => ({ ...c, features: makeFeatures(c.dims.channels, c.dims.height, c.dims.width, 1000 + i) }) as PipelineCase);
const planted = makeRegionFeatures(64, 16, 16, { shift: 0.6, count: 5, times: 20, seed: 41 });
PIPELINES.push(
  // Planted high-norm tokens: left out of the fit, their scores clamped.
  { name: "highnorm", dims: { channels: 64, height: 16, width: 16 }, features: planted.x, components: 3, sigma: HEATMAP_DEFAULTS.sigma, outH: 40, outW: 40 },
  { name: "fallback", dims: constantNorm.dims, features: constantNorm.x, components: 1, sigma: 1.51, outH: 8, outW: 8 },
  { name: "fallback_rounded", dims: roundedNorm.dims, features: roundedNorm.x, components: 1, sigma: 1.51, outH: 8, outW: 8 },
);

const SMOOTH_CASES: [number, number, number][] = [
  [1, 1, 1.51],
  [1, 7, 1.51],
  [5, 4, 3],
  [32, 32, 1.51],
  [17, 9, 0.7],
  [3, 40, 2.2],
];
const RESIZE_CASES: [number, number, number, number][] = [
  [32, 32, 512, 384],
  [64, 48, 20, 13],
  [7, 3, 1, 1],
  [1, 5, 3, 7],
  [10, 10, 10, 10],
  [5, 9, 13, 4],
];

let tmpDir = "";
let manifest: Manifest | null = null;
let skipReason: string | null = null;

function readArray(info: ArrayInfo): Float64Array | Uint8Array {
  const buf = readFileSync(info.file);
  if (info.dtype === "u1") return new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
  const out = new Float64Array(buf.byteLength / 8);
  for (let i = 0; i < out.length; i++) out[i] = buf.readDoubleLE(i * 8);
  return out;
}

function ref(caseName: string, key: string): Float64Array {
  const info = manifest![caseName]!.arrays[key];
  assert.ok(info, `oracle has no ${caseName}.${key}`);
  const a = readArray(info);
  assert.ok(a instanceof Float64Array);
  return a;
}

function refU8(caseName: string, key: string): { data: Uint8Array; shape: number[] } {
  const info = manifest![caseName]!.arrays[key]!;
  const a = readArray(info);
  assert.ok(a instanceof Uint8Array);
  return { data: a, shape: info.shape };
}

/** Row i of a row-major (rows, len) array. */
function row(a: Float64Array, i: number, len: number): Float64Array {
  return a.subarray(i * len, (i + 1) * len);
}

function needOracle(t: TestContext): boolean {
  if (manifest) return true;
  t.skip(skipReason ?? "python oracle unavailable");
  return false;
}

function writeF64(file: string, a: Float64Array): void {
  const b = Buffer.alloc(a.length * 8);
  a.forEach((v, i) => b.writeDoubleLE(v, i * 8));
  writeFileSync(file, b);
}

before(() => {
  if (!existsSync(PYTHON)) {
    skipReason = `python not found at ${PYTHON} (set RADIO_TEST_PYTHON)`;
    return;
  }
  tmpDir = mkdtempSync(path.join(os.tmpdir(), "heatmap-test-"));
  const cases: object[] = [];
  for (const c of PIPELINES) {
    const file = path.join(tmpDir, `${c.name}.features.f32`);
    const b = Buffer.alloc(c.features.length * 4);
    c.features.forEach((v, i) => b.writeFloatLE(v, i * 4));
    writeFileSync(file, b);
    cases.push({
      name: c.name,
      kind: "pipeline",
      features: file,
      channels: c.dims.channels,
      height: c.dims.height,
      width: c.dims.width,
      components: c.components,
      sigma: c.sigma,
      out_height: c.outH,
      out_width: c.outW,
    });
  }
  SMOOTH_CASES.forEach(([h, w, sigma], i) => {
    const file = path.join(tmpDir, `smooth${i}.f64`);
    writeF64(file, randomMap(h, w, 50 + i));
    cases.push({ name: `smooth${i}`, kind: "smooth", input: file, height: h, width: w, sigma });
  });
  RESIZE_CASES.forEach(([h, w, oh, ow], i) => {
    const file = path.join(tmpDir, `resize${i}.f64`);
    writeF64(file, randomMap(h, w, 80 + i));
    cases.push({ name: `resize${i}`, kind: "resize", input: file, height: h, width: w, out_height: oh, out_width: ow });
  });
  const jobFile = path.join(tmpDir, "job.json");
  writeFileSync(jobFile, JSON.stringify({ out_dir: tmpDir, cases }));
  const r = spawnSync(PYTHON, [SCRIPT, jobFile], { encoding: "utf8", maxBuffer: 64 << 20 });
  if (r.error) {
    skipReason = `cannot run ${PYTHON}: ${r.error.message}`;
    return;
  }
  if (r.status === 3) {
    skipReason = `python oracle lacks a module: ${r.stderr.trim()}`;
    return;
  }
  assert.equal(r.status, 0, `heatmap_reference.py failed:\n${r.stderr}`);
  manifest = JSON.parse(r.stdout) as Manifest;
});

after(() => {
  if (tmpDir) rmSync(tmpDir, { recursive: true, force: true });
});

// ---------------------------------------------------------------------------
// Stage-by-stage against the oracle
// ---------------------------------------------------------------------------

describe("heatmap stages vs numpy / sklearn / scipy / torch", () => {
  for (const c of PIPELINES) {
    const n = c.dims.height * c.dims.width;
    const C = c.dims.channels;

    describe(`case ${c.name} (C=${C}, ${c.dims.height}×${c.dims.width}, k=${c.components})`, () => {
      it("sanitise + percentile clip matches numpy", (t) => {
        if (!needOracle(t)) return;
        const clip = sanitizeAndClip(c.features, c.dims);
        // Bounds are computed in float64 from identical values with numpy's formula.
        assertClose(clip.lower, ref(c.name, "lower"), 1e-14, "lower bounds");
        assertClose(clip.upper, ref(c.name, "upper"), 1e-14, "upper bounds");
        // Clipped data are stored as float32 (bounds rounded to float32).
        assertClose(clip.data, ref(c.name, "clipped"), 1e-7, "clipped data");
        assertClose(positionNorms(clip.data, C, n), ref(c.name, "norms"), 1e-7, "per-position norms");
        // The clip pass's own norms are the same numbers, bit for bit.
        assert.deepEqual(clip.norms, positionNorms(clip.data, C, n));
        assertClose(clip.rawNorms, ref(c.name, "raw_norms"), 1e-12, "unclipped per-position norms");
        for (const v of clip.data) assert.ok(Number.isFinite(v));
      });

      it("finds the same high-norm tokens as numpy", (t) => {
        if (!needOracle(t)) return;
        const { mask, count } = highNormTokens(sanitizeAndClip(c.features, c.dims).rawNorms);
        const want = refU8(c.name, "outliers").data;
        assert.deepEqual(mask ?? new Uint8Array(n), Uint8Array.from(want));
        assert.equal(
          count,
          want.reduce((a, v) => a + v, 0),
        );
      });

      it("principal components match sklearn PCA up to sign", (t) => {
        if (!needOracle(t)) return;
        const clip = sanitizeAndClip(c.features, c.dims);
        const { mask } = highNormTokens(clip.rawNorms);
        const pca = principalComponents(clip.data, c.dims, c.components, {}, { exclude: mask });
        assert.equal(pca.converged, true);
        assert.equal(pca.side, C > n ? "gram" : "covariance");
        assertClose(pca.mean, ref(c.name, "mean"), 1e-7, "channel means");
        assertClose(pca.explainedVariance, ref(c.name, "explained_variance"), 1e-6, "explained variance");
        const scores = ref(c.name, "scores");
        const comps = ref(c.name, "components");
        for (let i = 0; i < c.components; i++) {
          const want = row(scores, i, n);
          const s = Math.sign(dot(pca.scores[i]!, want));
          assert.notEqual(s, 0);
          assertClose(
            pca.scores[i]!.map((v) => s * v),
            want,
            1e-6,
            `PC${i + 1} scores`,
          );
          assertClose(
            pca.components[i]!.map((v) => s * v),
            row(comps, i, C),
            1e-6,
            `PC${i + 1} loadings`,
          );
        }
      });

      it("oriented score maps match the numpy sign rule exactly (sign and values)", (t) => {
        if (!needOracle(t)) return;
        // The solver at its own default precision: this checks the rule, not where the
        // heatmap's looser tolerance stops (that is covered end to end below).
        const sm = computeScoreMaps(c.features, c.dims, c.components, { solver: { tolerance: 1e-10 } });
        const want = ref(c.name, "oriented");
        const rules = manifest![c.name]!.scalars.rules as string[];
        for (let i = 0; i < c.components; i++) {
          assert.equal(sm.orientation[i]!.rule, rules[i], `PC${i + 1} rule`);
          assert.ok(dot(sm.maps[i]!, row(want, i, n)) > 0, `PC${i + 1} sign differs from the numpy rule`);
          assertClose(sm.maps[i]!, row(want, i, n), 1e-6, `oriented PC${i + 1}`);
        }
        assertClose(sm.pca.components[0]!, row(ref(c.name, "oriented_components"), 0, C), 1e-5, "oriented PC1 loading");
      });

      it("smoothing matches scipy.ndimage.gaussian_filter (on the oracle scores)", (t) => {
        if (!needOracle(t)) return;
        const oriented = ref(c.name, "oriented");
        const want = ref(c.name, "smoothed");
        for (let i = 0; i < c.components; i++) {
          const got = c.sigma === null ? row(oriented, i, n) : gaussianFilter2d(row(oriented, i, n), c.dims.height, c.dims.width, c.sigma);
          assertClose(got, row(want, i, n), 1e-12, `smoothed PC${i + 1}`);
        }
      });

      it("resize matches torch bilinear (on the oracle smoothed maps)", (t) => {
        if (!needOracle(t)) return;
        const smoothed = ref(c.name, "smoothed");
        const want = ref(c.name, "resized");
        for (let i = 0; i < c.components; i++) {
          const got = resizeBilinear(row(smoothed, i, n), c.dims.height, c.dims.width, c.outH, c.outW);
          assertClose(got, row(want, i, c.outH * c.outW), 1e-12, `resized PC${i + 1}`);
        }
      });

      it("uint8 quantisation matches exactly (on the oracle resized maps)", (t) => {
        if (!needOracle(t)) return;
        const resized = ref(c.name, "resized");
        const want = refU8(c.name, "uint8");
        const got = new Uint8Array(want.data.length);
        for (let i = 0; i < c.components; i++) {
          minMaxToUint8(row(resized, i, c.outH * c.outW), got, c.components, i);
        }
        assert.deepEqual(byteDiff(got, want.data), { max: 0, differing: 0 });
        // pca1's mapping, [1, 255] (HEATMAP_PCA1_LOW), against the oracle's same mapping.
        const want1 = refU8(c.name, "uint8_pca1");
        const got1 = new Uint8Array(want1.data.length);
        minMaxToUint8(row(resized, 0, c.outH * c.outW), got1, 1, 0, HEATMAP_PCA1_LOW);
        assert.deepEqual(byteDiff(got1, want1.data), { max: 0, differing: 0 });
      });

      it("computeHeatmap end to end is within ±1 of the oracle", (t) => {
        if (!needOracle(t)) return;
        const want = refU8(c.name, "uint8");
        const modes: [HeatmapMode, number][] =
          c.components === 3
            ? [
                ["pca1", 1],
                ["pca3", 3],
              ]
            : [["pca1", 1]];
        const want1 = refU8(c.name, "uint8_pca1");
        for (const [mode, ch] of modes) {
          const hm = computeHeatmap(c.features, c.dims, { mode, sigma: c.sigma, outputHeight: c.outH, outputWidth: c.outW });
          assert.equal(hm.height, c.outH);
          assert.equal(hm.width, c.outW);
          assert.equal(hm.channels, ch);
          // Oracle layout is (H, W, k); take the first `ch` channels.
          const expected = new Uint8Array(c.outH * c.outW * ch);
          for (let p = 0; p < c.outH * c.outW; p++) {
            for (let j = 0; j < ch; j++) expected[p * ch + j] = mode === "pca1" ? want1.data[p]! : want.data[p * c.components + j]!;
          }
          if (mode === "pca1")
            assert.ok(
              hm.data.every((v) => v >= HEATMAP_PCA1_LOW),
              "no 0 in a pca1 map",
            );
          const d = byteDiff(hm.data, expected);
          assert.ok(d.max <= 1, `${mode}: max byte difference ${d.max}`);
          assert.ok(d.differing <= expected.length / 100, `${mode}: ${d.differing} bytes differ`);
        }
      });
    });
  }

  it("smoothing matches scipy on assorted shapes and sigmas", (t) => {
    if (!needOracle(t)) return;
    SMOOTH_CASES.forEach(([h, w, sigma], i) => {
      const got = gaussianFilter2d(randomMap(h, w, 50 + i), h, w, sigma);
      assertClose(got, ref(`smooth${i}`, "out"), 1e-12, `smooth ${h}×${w} σ=${sigma}`);
    });
  });

  it("resize matches torch on up-, down- and odd-scale cases", (t) => {
    if (!needOracle(t)) return;
    RESIZE_CASES.forEach(([h, w, oh, ow], i) => {
      const got = resizeBilinear(randomMap(h, w, 80 + i), h, w, oh, ow);
      assertClose(got, ref(`resize${i}`, "out"), 1e-12, `resize ${h}×${w}→${oh}×${ow}`);
    });
  });
});

// ---------------------------------------------------------------------------
// Properties (no oracle needed)
// ---------------------------------------------------------------------------

describe("heatmap properties", () => {
  const dims: FeatureDims = { channels: 64, height: 14, width: 18 };
  const x = makeFeatures(dims.channels, dims.height, dims.width, 7);
  const opts = { outputHeight: 70, outputWidth: 90 };

  it("is deterministic across runs", () => {
    for (const mode of ["pca1", "pca3"] as const) {
      const a = computeHeatmap(x, dims, { ...opts, mode });
      const b = computeHeatmap(Float32Array.from(x), dims, { ...opts, mode });
      assert.deepEqual(a, b);
    }
  });

  it("does not modify its input", () => {
    const copy = Float32Array.from(x);
    computeHeatmap(x, dims, { ...opts, mode: "pca3" });
    assert.deepEqual(Buffer.from(x.buffer), Buffer.from(copy.buffer));
  });

  it("sign is stable under positive scaling of the features", () => {
    const base = computeScoreMaps(x, dims, 3);
    for (const s of [2.5, 1e-3, 1000]) {
      const other = computeScoreMaps(scaled(x, s), dims, 3);
      for (let i = 0; i < 3; i++) {
        assertClose(
          other.maps[i]!.map((v) => v / s),
          base.maps[i]!,
          1e-6,
          `PC${i + 1} ×${s}`,
        );
      }
      const d = byteDiff(computeHeatmap(scaled(x, s), dims, { ...opts, mode: "pca3" }).data, computeHeatmap(x, dims, { ...opts, mode: "pca3" }).data);
      assert.ok(d.max <= 1, `×${s}: max byte difference ${d.max}`);
    }
  });

  it("sign is stable under channel permutation", () => {
    const n = dims.height * dims.width;
    const rnd = mulberry32(99);
    const perm = Array.from({ length: dims.channels }, (_, i) => i);
    for (let i = perm.length - 1; i > 0; i--) {
      const j = Math.floor(rnd() * (i + 1));
      [perm[i], perm[j]] = [perm[j]!, perm[i]!];
    }
    const xp = new Float32Array(x.length);
    perm.forEach((src, dst) => xp.set(x.subarray(src * n, (src + 1) * n), dst * n));
    const a = computeScoreMaps(x, dims, 3);
    const b = computeScoreMaps(xp, dims, 3);
    for (let i = 0; i < 3; i++) assertClose(b.maps[i]!, a.maps[i]!, 1e-6, `PC${i + 1} permuted`);
    const d = byteDiff(computeHeatmap(xp, dims, { ...opts, mode: "pca3" }).data, computeHeatmap(x, dims, { ...opts, mode: "pca3" }).data);
    assert.ok(d.max <= 1);
  });

  it("negating the features leaves the map unchanged (the rule, not the solver, picks the sign)", () => {
    const a = computeScoreMaps(x, dims, 3);
    const b = computeScoreMaps(scaled(x, -1), dims, 3);
    for (let i = 0; i < 3; i++) {
      assert.equal(a.orientation[i]!.rule, "norm-correlation");
      assertClose(b.maps[i]!, a.maps[i]!, 1e-6, `PC${i + 1} negated`);
    }
  });

  it("falls back to the largest loading when all positions have the same norm", () => {
    for (const { x: xc, dims: dc } of [constantNorm, roundedNorm]) {
      for (const s of [1, -1, 3]) {
        const sm = computeScoreMaps(scaled(xc, s), dc, 1);
        assert.equal(sm.orientation[0]!.rule, "max-loading");
        const l = sm.pca.components[0]!;
        assert.ok(Math.abs(l[0]!) > Math.abs(l[1]!) && l[0]! > 0, `loading ${Array.from(l)}`);
      }
    }
    // Direct check of the rule with a hand-made component.
    const scores = Float64Array.of(1, -1, 2, -2);
    const loading = Float64Array.of(0.2, -0.9, 0.3);
    const res = orientComponent(scores, loading, Float64Array.of(4, 4, 4, 4));
    assert.deepEqual(res, { rule: "max-loading", flipped: true });
    assert.deepEqual(Array.from(loading), [-0.2, 0.9, -0.3]);
    assert.deepEqual(Array.from(scores), [-1, 1, -2, 2]);
    const res2 = orientComponent(Float64Array.of(1, 2, 3), Float64Array.of(1), Float64Array.of(3, 2, 1));
    assert.deepEqual(res2, { rule: "norm-correlation", flipped: true });
    // Correlation with the norm itself (negative here), not with the squared norm (positive).
    const res3 = orientComponent(Float64Array.of(1.1, -2, 0.9), Float64Array.of(1), Float64Array.of(1, 2, 3));
    assert.deepEqual(res3, { rule: "norm-correlation", flipped: true });
  });

  it("constant, all-NaN and single-position inputs give flat maps at the lowest value (pca1: 1, pca3: 0)", () => {
    const d = { channels: 5, height: 4, width: 6 };
    for (const fill of [0, 3.5, Number.NaN, Number.POSITIVE_INFINITY]) {
      for (const [mode, low] of [
        ["pca1", HEATMAP_PCA1_LOW],
        ["pca3", 0],
      ] as const) {
        const hm = computeHeatmap(new Float32Array(5 * 24).fill(fill), d, { mode, outputHeight: 8, outputWidth: 12 });
        assert.ok(
          hm.data.every((v) => v === low),
          `fill ${fill} ${mode}`,
        );
      }
    }
    const one = computeHeatmap(Float32Array.of(1, 2, 3), { channels: 3, height: 1, width: 1 }, { outputHeight: 2, outputWidth: 2 });
    assert.deepEqual(Array.from(one.data), [1, 1, 1, 1]);
  });

  it("pca1 maps span [1, 255]: no pixel is 0, which the FiftyOne App would leave unpainted", () => {
    const hm = computeHeatmap(x, dims, { ...opts, mode: "pca1" });
    assert.equal(HEATMAP_PCA1_LOW, 1);
    assert.deepEqual([Math.min(...hm.data), Math.max(...hm.data)], [1, 255]);
  });

  it("pca3 on rank-1 data leaves the missing components black", () => {
    const d = { channels: 6, height: 5, width: 5 };
    const n = 25;
    const f = new Float32Array(6 * n);
    for (let c = 0; c < 6; c++) for (let p = 0; p < n; p++) f[c * n + p] = (c + 1) * Math.sin(p);
    const hm = computeHeatmap(f, d, { mode: "pca3", sigma: null, outputHeight: 5, outputWidth: 5 });
    let r = 0;
    for (let p = 0; p < n; p++) {
      r = Math.max(r, hm.data[p * 3]!);
      assert.equal(hm.data[p * 3 + 1], 0);
      assert.equal(hm.data[p * 3 + 2], 0);
    }
    assert.equal(r, 255);
  });

  it("pca1 output equals the R channel of pca3", () => {
    const a = computeHeatmap(x, dims, { ...opts, mode: "pca1" });
    const b = computeHeatmap(x, dims, { ...opts, mode: "pca3" });
    assert.equal(a.channels, 1);
    assert.equal(b.channels, 3);
    assert.equal(b.data.length, a.data.length * 3);
    const r = b.data.filter((_, i) => i % 3 === 0);
    assert.ok(byteDiff(a.data, r).max <= 1);
  });

  it("uses the defaults: sigma 1.51, feature-grid size or defaultHeatmapSize(source)", () => {
    const a = computeHeatmap(x, dims);
    assert.deepEqual([a.height, a.width, a.channels], [dims.height, dims.width, 1]);
    const b = computeHeatmap(x, dims, { sigma: HEATMAP_DEFAULTS.sigma });
    assert.deepEqual(a, b);
    const c = computeHeatmap(x, dims, { sigma: null });
    assert.notDeepEqual(a.data, c.data);
    assert.deepEqual(computeHeatmap(x, dims, { sigma: 0 }), c);
    const d = computeHeatmap(x, dims, { sourceHeight: 1080, sourceWidth: 1920 });
    assert.deepEqual([d.height, d.width], [288, 512]);
  });

  it("defaultHeatmapSize keeps the aspect with the longest side ≤ maxSide", () => {
    assert.deepEqual(defaultHeatmapSize(1080, 1920), { height: 288, width: 512 });
    assert.deepEqual(defaultHeatmapSize(3000, 2000), { height: 512, width: 341 });
    assert.deepEqual(defaultHeatmapSize(1024, 1024), { height: 512, width: 512 });
    assert.deepEqual(defaultHeatmapSize(300, 200), { height: 300, width: 200 });
    assert.deepEqual(defaultHeatmapSize(4000, 3), { height: 512, width: 1 });
    assert.deepEqual(defaultHeatmapSize(600, 800, 256), { height: 192, width: 256 });
    assert.throws(() => defaultHeatmapSize(0, 10), RangeError);
  });

  it("rejects inconsistent input", () => {
    assert.throws(() => computeHeatmap(new Float32Array(10), { channels: 2, height: 2, width: 2 }), RangeError);
    assert.throws(() => computeHeatmap(x, { ...dims, channels: 0 }), RangeError);
    assert.throws(() => computeHeatmap(x, dims, { sigma: -1 }), RangeError);
    assert.throws(() => computeHeatmap(x, dims, { outputHeight: 10 }), RangeError);
    assert.throws(() => computeHeatmap(x, dims, { outputHeight: 10, outputWidth: 0 }), RangeError);
    assert.throws(() => computeHeatmap(x, dims, { mode: "pca2" as HeatmapMode }), RangeError);
  });
});

// ---------------------------------------------------------------------------
// High-norm tokens (registers): the map must follow the image, not the outliers
// ---------------------------------------------------------------------------

describe("heatmaps with high-norm outlier tokens", () => {
  // H's width and grid at 512²; the region is weak enough (it explains ~1–4 % of the
  // variance) that a few clipped outliers outweigh it when they are fitted too.
  const C = 1280;
  const h = 32;
  const w = 32;
  const dims: FeatureDims = { channels: C, height: h, width: w };
  const grid = { outputHeight: h, outputWidth: w };
  const cases = [
    { shift: 0.25, count: 3, times: 10, seed: 1 },
    { shift: 0.5, count: 8, times: 50, seed: 2 },
  ];

  for (const o of cases) {
    it(`${o.count} tokens at ${o.times}× the median norm: the map still follows the region`, (t) => {
      const { x, region, spots } = makeRegionFeatures(C, h, w, o);
      const sm = computeScoreMaps(x, dims, 1);
      assert.equal(sm.outliers.count, o.count);
      assert.deepEqual(spots.filter((p) => sm.outliers.mask![p] === 1).length, o.count, "the planted tokens are the ones found");

      const plain = computeHeatmap(x, dims, { ...grid, sigma: null });
      const smooth = computeHeatmap(x, dims, grid);
      const rPlain = pearson(plain.data, region);
      const rSmooth = pearson(smooth.data, region);
      assert.ok(rPlain >= 0.9, `correlation with the region ${rPlain.toFixed(3)} (unsmoothed)`);
      assert.ok(rSmooth >= 0.9, `correlation with the region ${rSmooth.toFixed(3)} (sigma 1.51)`);
      // The outliers' pixels are clamped: the inliers alone span the full 1..255 range.
      const inliers = Array.from(plain.data).filter((_, p) => !sm.outliers.mask![p]);
      assert.deepEqual([Math.min(...inliers), Math.max(...inliers)], [1, 255]);

      // The previous algorithm (fit on every position) loses the region to the outliers.
      const old = computeHeatmap(x, dims, { ...grid, sigma: null, highNorm: false });
      const rOld = pearson(old.data, region);
      assert.ok(rOld < 0.5, `fitting the outliers too should fail here (correlation ${rOld.toFixed(3)})`);
      t.diagnostic(`region correlation: ${rPlain.toFixed(3)} (sigma 1.51: ${rSmooth.toFixed(3)}); fitting every position: ${rOld.toFixed(3)}`);
    });
  }

  it("without outliers nothing is excluded and the map is unchanged", () => {
    const { x, region } = makeRegionFeatures(C, h, w, { shift: 0.5, count: 0, times: 0, seed: 3 });
    const sm = computeScoreMaps(x, dims, 3);
    assert.equal(sm.outliers.count, 0);
    assert.equal(sm.outliers.mask, null);
    for (const mode of ["pca1", "pca3"] as const) {
      assert.deepEqual(computeHeatmap(x, dims, { ...grid, mode }), computeHeatmap(x, dims, { ...grid, mode, highNorm: false }));
    }
    assert.ok(pearson(computeHeatmap(x, dims, { ...grid, sigma: null }).data, region) >= 0.9);
  });

  it("a genuinely high-norm region is capped, not dropped, and still shown", () => {
    // The disc's tokens are ~3.6× the background's norm: all pass the norm test, but at
    // most 5 % of the positions (the longest first) are left out of the fit.
    const { x, region } = makeRegionFeatures(C, h, w, { shift: 4, count: 0, times: 0, seed: 4 });
    const sm = computeScoreMaps(x, dims, 1);
    assert.equal(sm.outliers.count, Math.floor(0.05 * h * w));
    const r = pearson(computeHeatmap(x, dims, { ...grid, sigma: null }).data, region);
    assert.ok(r >= 0.9, `correlation ${r.toFixed(3)}`);
  });

  it("the NLC layout gives the same map as CHW", () => {
    const { x } = makeRegionFeatures(C, h, w, { shift: 0.5, count: 8, times: 50, seed: 2 });
    const n = h * w;
    const nlc = new Float32Array(x.length);
    for (let c = 0; c < C; c++) for (let p = 0; p < n; p++) nlc[p * C + c] = x[c * n + p]!;
    nlc[5 * C + 7] = Number.NaN;
    const chw = Float32Array.from(x);
    chw[7 * n + 5] = Number.NaN;
    for (const mode of ["pca1", "pca3"] as const) {
      assert.deepEqual(
        computeHeatmap(nlc, dims, { mode, layout: "nlc", outputHeight: 64, outputWidth: 48 }),
        computeHeatmap(chw, dims, { mode, outputHeight: 64, outputWidth: 48 }),
      );
    }
  });

  it("highNormTokens: thresholds, cap and ties", () => {
    const norms = Float64Array.from({ length: 100 }, (_, i) => 10 + (i % 10) * 0.1);
    assert.equal(highNormTokens(norms).count, 0);
    norms[3] = 35; // > 3 × median (≈ 10.45) and far beyond the MAD
    norms[50] = 33;
    const r = highNormTokens(norms);
    assert.equal(r.count, 2);
    assert.deepEqual([r.mask![3], r.mask![50]], [1, 1]);
    // Cap 5 % = 5 of 100; equal norms are taken by position.
    for (const p of [10, 20, 30, 40, 60, 70]) norms[p] = 33;
    const capped = highNormTokens(norms);
    assert.equal(capped.count, 5);
    assert.deepEqual(
      [3, 10, 20, 30, 40].map((p) => capped.mask![p]),
      [1, 1, 1, 1, 1],
    );
    assert.equal(capped.mask![50], 0);
    // A mostly-zero map has nothing to stand out from.
    assert.equal(highNormTokens(Float64Array.of(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9)).count, 0);
    assert.throws(() => highNormTokens(norms, { ratio: 0.5 }), RangeError);
    const s = Float64Array.of(1, 5, -2, 100, -50);
    clampToInlierRange(s, Uint8Array.of(0, 0, 0, 1, 1));
    assert.deepEqual(Array.from(s), [1, 5, -2, 5, -2]);
  });
});

// ---------------------------------------------------------------------------
// Building blocks
// ---------------------------------------------------------------------------

describe("heatmap building blocks", () => {
  it("percentilePair equals numpy linear percentiles computed by sorting", () => {
    const rnd = mulberry32(5);
    for (let trial = 0; trial < 3000; trial++) {
      const n = 1 + Math.floor(rnd() * 70);
      const levels = trial % 3 === 0 ? 3 : 1000; // many ties every third trial
      const a = Float64Array.from({ length: n }, () => Math.floor(rnd() * levels) - levels / 2);
      const q1 = Math.floor(rnd() * 101);
      const q2 = q1 + rnd() * (100 - q1);
      const sorted = Float64Array.from(a).sort();
      const exact = (q: number) => {
        const { prev, next, gamma } = percentileIndex(n, q);
        return numpyLerp(sorted[prev]!, sorted[next]!, gamma);
      };
      const before = Float64Array.from(a);
      assert.deepEqual(percentilePair(a, 0, n, q1, q2), [exact(q1), exact(q2)], `n=${n} q=${q1},${q2}`);
      assert.deepEqual(a, before, "input modified");
    }
  });

  it("gaussianKernel1d has scipy radius int(4σ + 0.5) and unit sum", () => {
    assert.equal(gaussianKernel1d(1.51).length, 2 * 6 + 1);
    assert.equal(gaussianKernel1d(0.1).length, 1);
    assert.equal(gaussianKernel1d(3).length, 25);
    const k = gaussianKernel1d(2.2);
    assert.ok(Math.abs(k.reduce((s, v) => s + v, 0) - 1) < 1e-15);
  });

  it("symmetricTridiagonalEigen solves the 1-D Laplacian", () => {
    const m = 12;
    const eig = symmetricTridiagonalEigen(new Float64Array(m).fill(2), new Float64Array(m - 1).fill(-1), m, [0, m - 1]);
    for (let j = 0; j < m; j++) {
      const want = 2 - 2 * Math.cos(((m - j) * Math.PI) / (m + 1));
      assert.ok(Math.abs(eig.values[j]! - want) < 1e-13, `eigenvalue ${j}`);
      // Eigenvector components are ∝ sin(i·k·π/(m+1)); check |first| = |last| (symmetry).
      assert.ok(Math.abs(Math.abs(eig.rows[j]!) - Math.abs(eig.rows[m + j]!)) < 1e-12);
    }
  });

  it("lanczos finds the top eigenpairs of a diagonal operator with close eigenvalues", () => {
    const dim = 200;
    const diag = Float64Array.from({ length: dim }, (_, i) => 1 + i / dim);
    diag[17] = 3;
    diag[120] = 2.999; // gap 3e-4 relative
    const res = lanczosTopEigenpairs((v, y) => v.forEach((x, i) => (y[i] = diag[i]! * x)), dim, 3);
    assert.equal(res.converged, true);
    assert.ok(Math.abs(res.values[0]! - 3) < 1e-9 && Math.abs(res.values[1]! - 2.999) < 1e-9);
    assert.ok(Math.abs(Math.abs(res.vectors[0]![17]!) - 1) < 1e-6);
    assert.ok(Math.abs(Math.abs(res.vectors[1]![120]!) - 1) < 1e-6);
    assert.ok(Math.abs(res.values[2]! - diag[dim - 1]!) < 1e-9);
  });

  it("resizeBilinear is the identity at the same size and constant-preserving", () => {
    const m = randomMap(6, 7, 1);
    assert.deepEqual(resizeBilinear(m, 6, 7, 6, 7), m);
    const c = resizeBilinear(new Float64Array(12).fill(2.5), 3, 4, 11, 5);
    assert.ok(c.every((v) => Math.abs(v - 2.5) < 1e-15));
  });

  it("minMaxToUint8 rounds half up and maps constants to the lowest value", () => {
    const out = new Uint8Array(4);
    minMaxToUint8(Float64Array.of(0, 0.5 / 255, 1.5 / 255, 1), out);
    assert.deepEqual(Array.from(out), [0, 1, 2, 255]);
    minMaxToUint8(Float64Array.of(7, 7, 7, 7), out);
    assert.deepEqual(Array.from(out), [0, 0, 0, 0]);
    // low = 1 (pca1 heatmaps): [1, 255], rounding half up over 254 steps.
    minMaxToUint8(Float64Array.of(0, 0.5 / 254, 1.5 / 254, 1), out, 1, 0, 1);
    assert.deepEqual(Array.from(out), [1, 2, 3, 255]);
    minMaxToUint8(Float64Array.of(7, 7, 7, 7), out, 1, 0, 1);
    assert.deepEqual(Array.from(out), [1, 1, 1, 1]);
    assert.throws(() => minMaxToUint8(Float64Array.of(1, 2), out, 1, 0, 255), RangeError);
  });
});
