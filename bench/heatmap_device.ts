/**
 * What a heatmap costs the host's CPU when the graph did the PCA's heavy half (compile --heatmap):
 * the postprocess step (outputs.ts heatmapTensor, 512² map) from the graph's heatmap outputs
 * (device-pca.ts) against the same step from the features (the CPU path), interleaved round by
 * round, CPU time of this process, medians; plus the head itself under onnxruntime's CPU provider
 * (on a GPU it is the GPU's work). Synthetic H- and SO400M-shaped maps (32×32 positions) with 4
 * high-norm tokens, as in bench/heatmap_speed.ts.
 *
 *   npx tsx bench/heatmap_device.ts [--rounds 9]
 */
import os from "node:os";
import { parseArgs } from "node:util";
import * as ort from "onnxruntime-node";

import { buildHeatmapHead, HEATMAP_LANCZOS_STEPS, HEATMAP_OUTPUTS } from "../server/src/compiler/heatmap-head.js";
import { DataType, GraphBuilder } from "../server/src/compiler/onnx-graph.js";
import { OPSET, type VitTaps } from "../server/src/compiler/vit.js";
import { devicePcaRow, heatmapTensor, type HeatmapSpec } from "../server/src/postprocess/outputs.js";
import { makeRegionFeatures } from "../test/node/support/features.js";

const { values: args } = parseArgs({ options: { rounds: { type: "string", default: "9" } } });
const ROUNDS = Number(args.rounds);
const SIDE = 32;
const OUT = 512;

const cpuMs = (f: () => unknown): number => {
  const t = process.cpuUsage();
  f();
  const d = process.cpuUsage(t);
  return (d.user + d.system) / 1000;
};
const median = (a: number[]) => [...a].sort((x, y) => x - y)[a.length >> 1]!;

console.log(`${os.cpus()[0]?.model ?? "cpu"}, node ${process.version}, ${ROUNDS} rounds, CPU ms per 512² heatmap (median)\n`);
console.log("| map | mode | from the features (CPU path) | from the graph's heatmap outputs | ratio | the head on the CPU provider (1 thread) |");
console.log("|---|---|---|---|---|---|");
for (const [name, C] of [
  ["H 1280×32×32", 1280],
  ["SO400M 1152×32×32", 1152],
] as const) {
  const n = SIDE * SIDE;
  const chw = makeRegionFeatures(C, SIDE, SIDE, { shift: 0.6, count: 4, times: 20, seed: 5 }).x;
  const nlc = new Float32Array(C * n);
  for (let c = 0; c < C; c++) for (let p = 0; p < n; p++) nlc[p * C + c] = chw[c * n + p]!;

  const graph = new GraphBuilder(OPSET);
  const input = graph.input("features", DataType.FLOAT, ["batch", "patches", C]);
  buildHeatmapHead({ build: { graph, dtype: DataType.FLOAT, spec: { width: C } }, tokens: input, features: input } as unknown as VitTaps);
  const session = await ort.InferenceSession.create(graph.build({ name: "bench", version: "0" }, {}), { intraOpNumThreads: 1 });
  const feed = { features: new ort.Tensor("float32", nlc, [1, n, C]) };
  await session.run(feed);
  const headMs: number[] = [];
  let out: ort.InferenceSession.OnnxValueMapType = {};
  for (let r = 0; r < 3; r++) {
    const t = performance.now();
    out = await session.run(feed);
    headMs.push(performance.now() - t);
  }
  await session.release();
  const data = (k: keyof typeof HEATMAP_OUTPUTS) => out[HEATMAP_OUTPUTS[k]]!.data as Float32Array;
  const device = devicePcaRow(
    {
      basis: data("basis"),
      tridiagonal: data("tridiagonal"),
      projections: data("projections"),
      outliers: data("outliers"),
      norms: data("norms"),
      steps: HEATMAP_LANCZOS_STEPS,
    },
    0,
    n,
  );
  for (const mode of ["pca1", "pca3"] as const) {
    const spec: HeatmapSpec = { mode, sigma: 1.51, outputHeight: OUT, outputWidth: OUT, maxSide: OUT };
    const fromFeatures = () => heatmapTensor({ nlc, channels: C }, SIDE, SIDE, spec, OUT, OUT);
    const fromDevice = () => heatmapTensor({ device }, SIDE, SIDE, spec, OUT, OUT);
    fromFeatures();
    fromDevice();
    const a: number[] = [];
    const b: number[] = [];
    for (let r = 0; r < ROUNDS; r++) {
      if (r % 2) b.push(cpuMs(fromDevice)), a.push(cpuMs(fromFeatures));
      else a.push(cpuMs(fromFeatures)), b.push(cpuMs(fromDevice));
    }
    console.log(
      `| ${name} | ${mode} | ${median(a).toFixed(1)} | ${median(b).toFixed(1)} | ${(median(a) / median(b)).toFixed(1)} | ${mode === "pca1" ? `${median(headMs).toFixed(0)} ms wall` : "same"} |`,
    );
  }
}
