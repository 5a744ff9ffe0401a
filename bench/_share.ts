import * as ort from "onnxruntime-node";
import { readFileSync } from "node:fs";
const [dir, mode, resArg] = process.argv.slice(2);
const res = Number(resArg ?? 512);
const mem = () => { const s = readFileSync("/proc/self/smaps_rollup", "utf8"); const g = (k: string) => Number(s.match(new RegExp(`^${k}:\\s+(\\d+)`, "m"))![1]) / 1048576; return `rss ${g("Rss").toFixed(2)} GiB pss ${g("Pss").toFixed(2)} anon ${g("Anonymous").toFixed(2)}`; };
const opts: ort.InferenceSession.SessionOptions = { executionProviders: ["cpu"], intraOpNumThreads: 0, graphOptimizationLevel: "all", enableCpuMemArena: true,
  extra: mode === "noprepack" ? { session: { disable_prepacking: "1" } } : {} };
console.log("start", mem());
const s1 = await ort.InferenceSession.create(`${dir}/model.onnx`, opts); console.log("1 session", mem());
const s2 = await ort.InferenceSession.create(`${dir}/model.onnx`, opts); console.log("2 sessions", mem());
const x = new Float32Array(3 * res * res).map((_, i) => ((i * 2654435761) % 1000) / 1000);
for (const s of [s1, s2, s1]) { const t = performance.now(); await s.run({ pixels: new ort.Tensor("float32", x, [1, 3, res, res]) }); console.log("run", (performance.now() - t).toFixed(0), "ms", mem()); }
