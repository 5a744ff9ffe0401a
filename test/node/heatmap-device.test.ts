/**
 * Heatmaps whose PCA the graph started (compile --heatmap; compiler/heatmap-head.ts, finished by
 * postprocess/device-pca.ts) against the CPU path (computeScoreMaps / computeHeatmap) on the same
 * features: the head alone under onnxruntime on planted maps (patterns, non-finite values,
 * high-norm tokens, covariance and Gram shapes), and a tiny graph compiled with --heatmap through
 * the sidecar.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import * as ort from "onnxruntime-node";

import { GraphBuilder, DataType } from "../../server/src/compiler/onnx-graph.js";
import { buildHeatmapHead, HEATMAP_LANCZOS_STEPS, HEATMAP_OUTPUTS } from "../../server/src/compiler/heatmap-head.js";
import { OPSET, type VitTaps } from "../../server/src/compiler/vit.js";
import { scoreMapsFromDevice } from "../../server/src/postprocess/device-pca.js";
import { computeHeatmap, computeScoreMaps, renderHeatmap, type FeatureDims } from "../../server/src/postprocess/heatmap.js";
import { devicePcaRow } from "../../server/src/postprocess/outputs.js";
import { relL2 } from "./support/compare.js";
import { makeFeatures, makeRegionFeatures } from "./support/features.js";
import { compileTinyModel, floats, randomPixels, rawUint8, startTestServer, tempDir, type TestServer } from "./support/server.js";

/** The head alone on a [B, n, C] float32 input: the graph's tail, without a backbone. */
async function headSession(C: number): Promise<ort.InferenceSession> {
  const graph = new GraphBuilder(OPSET);
  const features = graph.input("features", DataType.FLOAT, ["batch", "patches", C]);
  // Only what the head reads of a backbone build: its graph, element type and width.
  buildHeatmapHead({ build: { graph, dtype: DataType.FLOAT, spec: { width: C } }, tokens: features, features } as unknown as VitTaps);
  return ort.InferenceSession.create(graph.build({ name: "test", version: "0" }, {}), { intraOpNumThreads: 1 });
}

function chwToNlc(chw: Float32Array, C: number, n: number): Float32Array {
  const out = new Float32Array(C * n);
  for (let c = 0; c < C; c++) for (let p = 0; p < n; p++) out[p * C + c] = chw[c * n + p]!;
  return out;
}

/** The heatmap head's outputs of one run, as devicePcaRow takes them. */
function headOutputs(out: ort.InferenceSession.OnnxValueMapType) {
  const data = (name: string) => out[name]!.data as Float32Array;
  return {
    basis: data(HEATMAP_OUTPUTS.basis),
    tridiagonal: data(HEATMAP_OUTPUTS.tridiagonal),
    projections: data(HEATMAP_OUTPUTS.projections),
    outliers: data(HEATMAP_OUTPUTS.outliers),
    norms: data(HEATMAP_OUTPUTS.norms),
    steps: HEATMAP_LANCZOS_STEPS,
  };
}

function maxByteDiff(a: Uint8Array, b: Uint8Array): number {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

interface Case {
  name: string;
  dims: FeatureDims;
  maps: Float32Array[];
  /** Components whose eigengap makes them well defined (compared value by value). */
  components: number;
}

const planted = (seed: number) => makeRegionFeatures(64, 16, 16, { shift: 0.6, count: 5, times: 20, seed }).x;
const CASES: Case[] = [
  // Three patterns of decreasing strength, NaN / ±Inf / huge values sprinkled in; C < n.
  { name: "patterns", dims: { channels: 48, height: 20, width: 24 }, maps: [makeFeatures(48, 20, 24, 7), makeFeatures(48, 20, 24, 8)], components: 3 },
  // C > n: the CPU solver runs on the Gram side, the head always on the covariance side.
  { name: "gram", dims: { channels: 160, height: 9, width: 11 }, maps: [makeFeatures(160, 9, 11, 9)], components: 3 },
  // A disc and 5 tokens at 20× the median norm: left out of the fit, clamped.
  { name: "high-norm", dims: { channels: 64, height: 16, width: 16 }, maps: [planted(41), planted(42)], components: 1 },
];

describe("heatmap head (graph) + device-pca (CPU) vs the CPU path", () => {
  for (const c of CASES) {
    it(`${c.name}: same high-norm tokens, score maps within 1e-4, maps within ±1 level`, async (t) => {
      const { channels: C, height, width } = c.dims;
      const n = height * width;
      const session = await headSession(C);
      const B = c.maps.length;
      const nlc = new Float32Array(B * n * C);
      c.maps.forEach((m, b) => nlc.set(chwToNlc(m, C, n), b * n * C));
      const out = await session.run({ features: new ort.Tensor("float32", nlc, [B, n, C]) });
      await session.release();
      const heatmap = headOutputs(out);
      assert.deepEqual([...out[HEATMAP_OUTPUTS.basis]!.dims], [B, HEATMAP_LANCZOS_STEPS, C]);
      for (let b = 0; b < B; b++) {
        const device = devicePcaRow(heatmap, b, n);
        const cpu = computeScoreMaps(c.maps[b]!, c.dims, 3);
        const mask = cpu.outliers.mask ?? new Uint8Array(n);
        assert.deepEqual(
          Array.from(device.outliers, (v) => (v > 0.5 ? 1 : 0)),
          Array.from(mask),
          `${c.name}[${b}]: high-norm tokens`,
        );
        if (c.name === "high-norm") assert.equal(cpu.outliers.count, 5, "the planted tokens are found");
        const maps = scoreMapsFromDevice(device, 3);
        for (let i = 0; i < c.components; i++) {
          const e = relL2(maps[i]!, cpu.maps[i]!);
          t.diagnostic(`${c.name}[${b}] PC${i + 1}: relative L2 ${e.toExponential(2)}`);
          assert.ok(e <= 1e-4, `${c.name}[${b}] PC${i + 1}: relative L2 ${e.toExponential(2)}`);
        }
        for (const mode of ["pca1", "pca3"] as const) {
          if (mode === "pca3" && c.components < 3) continue;
          const opts = { mode, sigma: 1.51, outputHeight: 2 * height + 3, outputWidth: 2 * width - 1 };
          const want = computeHeatmap(c.maps[b]!, c.dims, opts);
          const got = renderHeatmap((k) => scoreMapsFromDevice(device, k), c.dims, opts);
          const diff = maxByteDiff(got.data, want.data);
          t.diagnostic(`${c.name}[${b}] ${mode}: max level difference ${diff}`);
          assert.ok(diff <= 1, `${c.name}[${b}] ${mode}: differs by ${diff} levels`);
        }
      }
    });
  }
});

describe("heatmap head on grids too small for three components", () => {
  it("pca3 leaves the components the data lack black, as the CPU path does (float32 rounding is no component)", async () => {
    const C = 64;
    const session = await headSession(C);
    try {
      // n positions: centred features of rank n − 1, so pca3 has n − 1 components and n − 1 ≤ 2.
      for (const [height, width] of [
        [1, 2],
        [2, 1],
        [1, 3],
        [3, 1],
      ] as const) {
        const n = height * width;
        const dims = { channels: C, height, width };
        const chw = makeFeatures(C, height, width, 60 + n + height);
        const out = await session.run({ features: new ort.Tensor("float32", chwToNlc(chw, C, n), [1, n, C]) });
        const device = devicePcaRow(headOutputs(out), 0, n);
        const opts = { mode: "pca3" as const, outputHeight: 4 * height, outputWidth: 4 * width };
        const want = computeHeatmap(chw, dims, opts);
        const got = renderHeatmap((k) => scoreMapsFromDevice(device, k), dims, opts);
        for (let ch = n - 1; ch < 3; ch++) {
          const channel = (m: Uint8Array) => m.filter((_, i) => i % 3 === ch);
          assert.ok(
            channel(want.data).every((v) => v === 0),
            `${height}×${width}: the CPU path leaves channel ${ch} black`,
          );
          assert.deepEqual([...new Set(channel(got.data))], [0], `${height}×${width}: channel ${ch} from the graph's outputs is black too`);
        }
        assert.ok(maxByteDiff(got.data, want.data) <= 1, `${height}×${width}: pca3 differs by ${maxByteDiff(got.data, want.data)} levels`);
      }
    } finally {
      await session.release();
    }
  });
});

describe("sidecar serving a graph compiled with --heatmap", () => {
  const tmp = tempDir();
  let ts: TestServer;
  before(async () => {
    const graph = await compileTinyModel(tmp.dir, "tiny", { heatmap: true });
    ts = await startTestServer({ graphs: [{ name: "tiny", dir: graph }], warmup: false, threads: 1 }, tmp.dir);
  });
  after(async () => {
    await ts?.close();
    tmp.cleanup();
  });

  it("HEATMAP from the graph's heatmap outputs equals computeHeatmap on its features (±1 level)", async () => {
    const [H, W] = [64, 96];
    const images = [randomPixels(H, W, 21), randomPixels(H, W, 22), randomPixels(H, W, 23)];
    const call = (output: "HEATMAP" | "FEATURES_NLC", heatmap?: object) =>
      ts.client.embed({
        images: images.map((im, i) => rawUint8(`img${i}`, im, H, W)),
        options: { output, resolution: "native", ...(heatmap ? { heatmap } : {}) },
      }).done;
    const features = await call("FEATURES_NLC");
    for (const mode of ["PCA1", "PCA3_RGB"] as const) {
      const maps = await call("HEATMAP", { mode, smoothing: true, outputHeight: H, outputWidth: W });
      maps.forEach((r, b) => {
        assert.ok(r.output, `img${b}: ${r.error?.message}`);
        const nlc = floats(features[b]!.output!.tensor);
        const C = nlc.length / ((H / 16) * (W / 16));
        const want = computeHeatmap(
          nlc,
          { channels: C, height: H / 16, width: W / 16 },
          {
            mode: mode === "PCA1" ? "pca1" : "pca3",
            outputHeight: H,
            outputWidth: W,
            layout: "nlc",
          },
        );
        const got = new Uint8Array(r.output!.tensor.data);
        assert.ok(maxByteDiff(got, want.data) <= 1, `img${b} ${mode}: differs by more than one level`);
      });
    }
  });
});
