// Where a compiled graph spends its time, by execution provider and ONNX op type, from onnxruntime's
// own profiler (per batch size: one warm-up run, then one profiled run, on one session):
//   npx tsx bench/profile_graph.ts <graph dir> [resolution=512] [provider=cpu] [batches=1, e.g. 8,32]
// On GPU providers a node's time is the host side of an asynchronous launch, not the kernel's time:
// read the provider column there (which nodes left the GPU), the slowest nodes (a node that waits
// for the device, e.g. a copy to the host, shows the kernels queued before it) and the run's time
// outside any node (input and output copies, allocation, the final wait for the device).
import * as ort from "onnxruntime-node";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir, cpus } from "node:os";
import { join } from "node:path";
import { readGraphMetadata } from "../server/src/compiler/metadata.js";
import { prepacks } from "../server/src/runtime/session.js";

const [dir, resArg, providerArg, batchArg] = process.argv.slice(2);
if (!dir) throw new Error("usage: bench/profile_graph.ts <graph dir> [resolution] [provider] [batches, e.g. 8,32]");
const res = Number(resArg ?? 512);
const provider = providerArg ?? "cpu";
const batches = (batchArg ?? "1").split(",").map(Number);
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
const wall: number[] = [];
for (const batch of batches) {
  const x = new Uint8Array(batch * res * res * 3).map((_, i) => (i * 2654435761) % 256);
  for (let i = 0; i < 2; i++) {
    const t0 = performance.now();
    await session.run({ pixels: new ort.Tensor("uint8", x, [batch, res, res, 3]) });
    if (i === 1) wall.push(performance.now() - t0);
  }
}
session.endProfiling();
const file = readFileSync(join(work, readdirSync(work)[0]!), "utf8");
rmSync(work, { recursive: true, force: true });

type Shapes = Record<string, number[]>[];
type Ev = {
  cat?: string;
  name: string;
  ts: number;
  dur: number;
  args?: { op_name?: string; provider?: string; input_type_shape?: Shapes; mem_arena_held?: string };
};
const events = JSON.parse(file) as Ev[];
const runs = events.filter((e) => e.name === "model_run");
const ms = (us: number) => (us / 1000).toFixed(1);
const shapes = (s: Shapes | undefined) => (s ?? []).map((t) => Object.entries(t).map(([ty, d]) => `${ty}[${d.join(",")}]`)[0]).join(" ");

console.log(`${meta.variant} ${meta.precision} on ${provider}, ${res}², ${cpus().length} × ${cpus()[0]?.model}`);
batches.forEach((batch, k) => {
  // Warm-up and profiled run alternate per batch size: the profiled one is the second of each pair.
  const run = runs[2 * k + 1]!;
  const nodes = events.filter((e) => e.cat === "Node" && e.name.endsWith("_kernel_time") && e.ts >= run.ts && e.ts <= run.ts + run.dur);
  const byOp = new Map<string, { us: number; n: number }>();
  for (const e of nodes) {
    const op = `${e.args?.provider ?? "?"} | ${e.args?.op_name ?? "?"}`;
    const o = byOp.get(op) ?? { us: 0, n: 0 };
    o.us += e.dur;
    o.n++;
    byOp.set(op, o);
  }
  const inNodes = nodes.reduce((a, e) => a + e.dur, 0);
  const held = nodes.at(-1)?.args?.mem_arena_held;
  console.log(
    `\nbatch ${batch}: run ${ms(run.dur)} ms (${wall[k]!.toFixed(1)} ms from JS), in nodes ${ms(inNodes)} ms, ` +
      `outside nodes ${ms(run.dur - inNodes)} ms${held ? `, CPU arena ${(Number(held) / 2 ** 20).toFixed(0)} MiB` : ""}`,
  );
  console.log("| provider | op | ms | share | nodes |\n|---|---|---|---|---|");
  for (const [op, o] of [...byOp].sort((a, b) => b[1].us - a[1].us)) {
    if (o.us / inNodes < 0.001) continue;
    console.log(`| ${op} | ${ms(o.us)} | ${((100 * o.us) / inNodes).toFixed(1)} % | ${o.n} |`);
  }
  console.log("slowest nodes:");
  for (const e of [...nodes].sort((a, b) => b.dur - a.dur).slice(0, 8)) {
    console.log(
      `  ${ms(e.dur)} ms  ${e.args?.provider ?? "?"} ${e.args?.op_name ?? "?"} ${e.name.replace(/_kernel_time$/, "")}  ${shapes(e.args?.input_type_shape)}`,
    );
  }
});
