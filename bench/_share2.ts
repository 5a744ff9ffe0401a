import * as ort from "onnxruntime-node";
const [dir, resArg, roundsArg, bArg] = process.argv.slice(2);
const res = Number(resArg ?? 512), b = Number(bArg ?? 1);
const mk = (noprepack: boolean) => ort.InferenceSession.create(`${dir}/model.onnx`, { executionProviders: ["cpu"], intraOpNumThreads: 0, graphOptimizationLevel: "all", enableCpuMemArena: true, extra: noprepack ? { session: { disable_prepacking: "1" } } : {} });
const ss = { prepack: await mk(false), noprepack: await mk(true) };
const x = new Float32Array(b * 3 * res * res).map((_, i) => ((i * 2654435761) % 1000) / 1000);
const t: Record<string, number[]> = { prepack: [], noprepack: [] };
for (let r = 0; r <= Number(roundsArg ?? 3); r++) for (const [k, s] of Object.entries(ss)) { const t0 = performance.now(); await s.run({ pixels: new ort.Tensor("float32", x, [b, 3, res, res]) }); if (r > 0) t[k]!.push(performance.now() - t0); }
console.log(dir.split("/").slice(-1)[0], res, "B", b, JSON.stringify(Object.fromEntries(Object.entries(t).map(([k, v]) => [k, v.map(Math.round)]))), "ratio noprepack/prepack (median)", (t.noprepack!.sort()[1]! / t.prepack!.sort()[1]!).toFixed(3));
