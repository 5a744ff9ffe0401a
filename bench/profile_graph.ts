// Where a compiled graph spends its time, by execution provider and ONNX op type, from onnxruntime's
// own profiler (one warm-up run, then one profiled run):
//   npx tsx bench/profile_graph.ts <graph dir> [resolution=512] [provider=cpu] [batch=1]
// On GPU providers a node's time is the host side of an asynchronous launch, not the kernel's time:
// read the provider column there (which nodes left the GPU, and how much host time they take).
import * as ort from "onnxruntime-node";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir, cpus } from "node:os";
import { join } from "node:path";
import { readGraphMetadata } from "../server/src/compiler/metadata.js";
import { prepacks } from "../server/src/runtime/session.js";

const [dir, resArg, providerArg, batchArg] = process.argv.slice(2);
if (!dir) throw new Error("usage: bench/profile_graph.ts <graph dir> [resolution] [provider] [batch]");
const res = Number(resArg ?? 512);
const provider = providerArg ?? "cpu";
const batch = Number(batchArg ?? 1);
const meta = readGraphMetadata(dir);
const work = mkdtempSync(join(tmpdir(), "radio-profile-"));
const session = await ort.InferenceSession.create(join(dir, "model.onnx"), {
  executionProviders: provider === "cpu" ? ["cpu"] : [provider, "cpu"],
  intraOpNumThreads: 0,
  interOpNumThreads: 1,
  executionMode: "sequential",
  graphOptimizationLevel: "all",
  enableCpuMemArena: true,
  enableProfiling: true,
  profileFilePrefix: join(work, "ort"),
  ...(prepacks("auto", meta.precision) ? {} : { extra: { session: { disable_prepacking: "1" } } }),
});
const x = new Uint8Array(batch * res * res * 3).map((_, i) => (i * 2654435761) % 256);
const ms: number[] = [];
for (let i = 0; i < 2; i++) {
  const t0 = performance.now();
  await session.run({ pixels: new ort.Tensor("uint8", x, [batch, res, res, 3]) });
  ms.push(performance.now() - t0);
}
session.endProfiling();
const file = readFileSync(join(work, (await import("node:fs")).readdirSync(work)[0]!), "utf8");
rmSync(work, { recursive: true, force: true });
type Ev = { cat?: string; name: string; ts: number; dur: number; args?: { op_name?: string; provider?: string } };
const events = JSON.parse(file) as Ev[];
const runs = events.filter((e) => e.name === "model_run");
const last = runs[runs.length - 1]!;
const byOp = new Map<string, { us: number; n: number }>();
for (const e of events) {
  if (e.cat !== "Node" || !e.name.endsWith("_kernel_time") || e.ts < last.ts || e.ts > last.ts + last.dur) continue;
  const op = `${e.args?.provider ?? "?"} | ${e.args?.op_name ?? "?"}`;
  const o = byOp.get(op) ?? { us: 0, n: 0 };
  o.us += e.dur;
  o.n++;
  byOp.set(op, o);
}
const total = [...byOp.values()].reduce((a, o) => a + o.us, 0);
console.log(
  `${meta.variant} ${meta.precision} on ${provider}, ${batch}×${res}×${res}×3, ${cpus().length} × ${cpus()[0]?.model}: runs ${ms.map((v) => v.toFixed(0)).join(", ")} ms`,
);
console.log("| provider | op | ms | share | nodes |\n|---|---|---|---|---|");
for (const [op, o] of [...byOp].sort((a, b) => b[1].us - a[1].us)) {
  if (o.us / total < 0.001) continue;
  console.log(`| ${op} | ${(o.us / 1000).toFixed(1)} | ${((100 * o.us) / total).toFixed(1)} % | ${o.n} |`);
}
