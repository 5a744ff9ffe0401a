// Compiler benchmark on a full-size random checkpoint (make one with
// `node server/dist/cli.js make-checkpoint --preset h --out /tmp/radio/h/ckpt`):
// graph build time, ORT session-creation time, and CPU latency of MatMul/Softmax attention vs
// com.microsoft.MultiHeadAttention, measured interleaved (A B A B …) in one run.
//   npx tsx bench/compiler.ts <checkpoint dir> [resolution=224] [batch=1] [rounds=5]
import { compileCheckpoint } from "../server/src/compiler/compile.js";
import { loadGraph, runGraph } from "../server/src/runtime/session.js";
import { cpus } from "node:os";

const [ckpt, resArg, batchArg, roundsArg] = process.argv.slice(2);
if (!ckpt) throw new Error("usage: bench/compiler.ts <checkpoint dir> [resolution] [batch] [rounds]");
const res = Number(resArg ?? 224);
const batch = Number(batchArg ?? 1);
const rounds = Number(roundsArg ?? 5);
const impls = ["matmul", "mha"] as const;
const out: Record<string, { build: number; session: number; ms: number[] }> = {};
for (const attention of impls) {
  const r = await compileCheckpoint({ checkpointDir: ckpt, outDir: `${ckpt}-${attention}`, attention });
  const t0 = performance.now();
  const g = await loadGraph(`${ckpt}-${attention}`);
  const session = (performance.now() - t0) / 1000;
  out[attention] = { build: r.seconds, session, ms: [] };
  (globalThis as Record<string, unknown>)[attention] = g;
}
const x = new Uint8Array(batch * res * res * 3).map((_, i) => (i * 2654435761) % 256);
for (const attention of impls) await runGraph((globalThis as never)[attention], x, [batch, res, res, 3]); // warm-up
for (let i = 0; i < rounds; i++) {
  for (const attention of impls) {
    const t0 = performance.now();
    await runGraph((globalThis as never)[attention], x, [batch, res, res, 3]);
    out[attention]!.ms.push(performance.now() - t0);
  }
}
const median = (a: number[]) => [...a].sort((p, q) => p - q)[Math.floor(a.length / 2)]!;
console.log(`machine: ${cpus().length} × ${cpus()[0]?.model}; input ${batch}×${res}×${res}×3; ${rounds} interleaved rounds`);
for (const a of impls) {
  const o = out[a]!;
  console.log(
    `${a.padEnd(7)} build ${o.build.toFixed(2)} s  session ${o.session.toFixed(2)} s  median ${median(o.ms).toFixed(0)} ms/run  runs ${o.ms.map((v) => v.toFixed(0)).join(" ")}`,
  );
}
console.log(`mha / matmul latency ratio: ${(median(out.mha!.ms) / median(out.matmul!.ms)).toFixed(3)}`);
