// The int8 choice, measured: one linear layer of H's shapes (1034 tokens = 512² + 10 prefix tokens)
// as onnxruntime runs it on this CPU, fp32 Gemm against int8 variants, interleaved, with each
// variant's relative L2 error against fp32:
//   per-tensor s8 8-bit  DynamicQuantizeMatMul, int8 weights in [-127, 127] (onnxruntime's default
//                        dynamic quantization; saturates int16 pair sums on CPUs without VNNI)
//   per-tensor s8 7-bit  the same with weights in [-63, 63] ("reduce_range")
//   per-token (ours)     what `compile --precision int8` emits: tokens quantized one by one,
//                        MatMulIntegerToFloat with 7-bit per-channel weights, × token scale, + bias
//   npx tsx bench/int8_kernels.ts [rounds=4]
import * as ort from "onnxruntime-node";
import { cpus } from "node:os";
import { DataType, GraphBuilder, int } from "../server/src/compiler/onnx-graph.js";

const M = 1034;
const rounds = Number(process.argv[2] ?? 4);
const shapes: [number, number][] = [
  [1280, 3840],
  [1280, 5120],
  [5120, 1280],
]; // qkv, fc1, fc2 (proj: 1280×1280)

function noise(n: number, scale: number, seed: number): Float32Array {
  const a = new Float32Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1103515245) + 12345) >>> 0;
    a[i] = (s / 2 ** 32 - 0.5) * scale;
  }
  return a;
}
const f32 = (g: GraphBuilder, stem: string, dims: number[], d: Float32Array) =>
  g.initializer({ name: g.fresh(stem), dataType: DataType.FLOAT, dims, rawData: new Uint8Array(d.buffer.slice(0)) });
/** [N, K] weights → int8 [K, N] with per-output-channel scales, |q| ≤ limit. */
function quantizeWeights(W: Float32Array, K: number, N: number, limit: number) {
  const q = new Int8Array(K * N);
  const scale = new Float32Array(N);
  for (let n = 0; n < N; n++) {
    let amax = 0;
    for (let k = 0; k < K; k++) amax = Math.max(amax, Math.abs(W[n * K + k]!));
    const s = Math.fround(amax / limit);
    scale[n] = s;
    for (let k = 0; k < K; k++) q[k * N + n] = Math.round(W[n * K + k]! / s);
  }
  return { q, scale };
}
const int8 = (g: GraphBuilder, dims: number[], q: Int8Array) =>
  g.initializer({ name: g.fresh("wq"), dataType: DataType.INT8, dims, rawData: new Uint8Array(q.buffer) });

type Build = (g: GraphBuilder, x: string, K: number, N: number, W: Float32Array, b: Float32Array) => string;
const variants: Record<string, Build> = {
  "fp32 Gemm": (g, x, K, N, W, b) => g.op("Gemm", [x, f32(g, "w", [N, K], W), f32(g, "b", [N], b)], { transB: int(1) }),
  "per-tensor s8 8-bit": (g, x, K, N, W, b) => {
    const { q, scale } = quantizeWeights(W, K, N, 127);
    return g.op("DynamicQuantizeMatMul", [x, int8(g, [K, N], q), f32(g, "s", [N], scale), "", f32(g, "b", [N], b)], {}, { domain: "ms" });
  },
  "per-tensor s8 7-bit": (g, x, K, N, W, b) => {
    const { q, scale } = quantizeWeights(W, K, N, 63);
    return g.op("DynamicQuantizeMatMul", [x, int8(g, [K, N], q), f32(g, "s", [N], scale), "", f32(g, "b", [N], b)], {}, { domain: "ms" });
  },
  "per-token (ours)": (g, x, K, N, W, b) => {
    const { q, scale } = quantizeWeights(W, K, N, 63);
    const amax = g.op("ReduceMax", [g.op("Abs", [x]), g.int64([-1])], { keepdims: int(0) });
    const ts = g.op("Where", [g.op("Greater", [amax, g.floatConst([0], [])]), g.op("Div", [amax, g.floatConst([127], [])]), g.floatConst([1], [])]);
    const zp = g.initializer({ name: g.fresh("zp"), dataType: DataType.UINT8, dims: [1], rawData: new Uint8Array([128]) });
    const codes = g.op("QuantizeLinear", [x, ts, g.op("Expand", [zp, g.op("Shape", [ts])])], { axis: int(0) });
    const y = g.op("MatMulIntegerToFloat", [codes, int8(g, [K, N], q), g.floatConst([1], []), f32(g, "s", [N], scale), zp], {}, { domain: "ms" });
    return g.op("Add", [g.op("Mul", [y, g.op("Unsqueeze", [ts, g.int64([1])])]), f32(g, "b", [N], b)]);
  },
};

const sessions = new Map<string, ort.InferenceSession>();
const inputs = new Map<string, Float32Array>();
for (const [K, N] of shapes) {
  const W = noise(K * N, 0.05, K + N);
  const b = noise(N, 0.1, N);
  inputs.set(`${K}`, noise(M * K, 2, K));
  for (const [name, build] of Object.entries(variants)) {
    const g = new GraphBuilder(20);
    const x = g.input("x", DataType.FLOAT, [M, K]);
    g.output(build(g, x, K, N, W, b), "y", DataType.FLOAT, [M, N]);
    sessions.set(
      `${name}|${K}x${N}`,
      await ort.InferenceSession.create(g.build({ name: "int8-kernels", version: "0" }, {}), { intraOpNumThreads: 0, graphOptimizationLevel: "all" }),
    );
  }
}
const times = new Map<string, number[]>();
const errors = new Map<string, number>();
const reference = new Map<string, Float32Array>();
for (let r = 0; r <= rounds; r++) {
  for (const [K, N] of shapes) {
    for (const name of Object.keys(variants)) {
      const key = `${name}|${K}x${N}`;
      const t0 = performance.now();
      const out = await sessions.get(key)!.run({ x: new ort.Tensor("float32", inputs.get(`${K}`)!, [M, K]) });
      const dt = performance.now() - t0;
      if (r === 0) {
        const y = out.y!.data as Float32Array;
        if (name === "fp32 Gemm") reference.set(`${K}x${N}`, y);
        const ref = reference.get(`${K}x${N}`)!;
        let d = 0;
        let n2 = 0;
        for (let i = 0; i < y.length; i++) {
          d += (y[i]! - ref[i]!) ** 2;
          n2 += ref[i]! ** 2;
        }
        errors.set(key, Math.sqrt(d / n2));
      } else {
        times.set(key, [...(times.get(key) ?? []), dt]);
      }
    }
  }
}
const median = (a: number[]) => [...a].sort((p, q) => p - q)[Math.floor(a.length / 2)]!;
console.log(
  `${cpus().length} × ${cpus()[0]?.model}, onnxruntime-node ${ort.env.versions.common}; [${M} × K] × [K × N], median of ${rounds} interleaved rounds`,
);
console.log("| K × N | variant | ms | speed-up vs fp32 | relative L2 vs fp32 |\n|---|---|---|---|---|");
for (const [K, N] of shapes) {
  const base = median(times.get(`fp32 Gemm|${K}x${N}`)!);
  for (const name of Object.keys(variants)) {
    const t = median(times.get(`${name}|${K}x${N}`)!);
    console.log(
      `| ${K} × ${N} | ${name} | ${t.toFixed(1)} | ${(base / t).toFixed(2)} | ${name === "fp32 Gemm" ? "–" : errors.get(`${name}|${K}x${N}`)!.toExponential(1)} |`,
    );
  }
}
