// An inference worker thread: loads every served graph once (top-level await, so piscina hands it no
// task before it is ready), warms each up, announces itself on a BroadcastChannel, then runs batches.
// onnxruntime's run() blocks this thread for the whole batch, which is why it lives here and not on
// the main thread.
import { BroadcastChannel, threadId, workerData } from "node:worker_threads";
import { move, transferableSymbol, valueSymbol } from "piscina";
import * as ort from "onnxruntime-node";
import { loadGraph, runGraph, type LoadedGraph } from "./session.js";
import { loadTextTower, runTextTower, type LoadedTextTower } from "./text-session.js";
import { SETUP_HINT } from "./providers.js";
import { nameThisThread } from "../observability/thread-name.js";
import type { InferResult, InferTask, ReadyModel, TextResult, TextTask, WorkerAnnouncement, WorkerConfig } from "./protocol.js";

const config = workerData as WorkerConfig;
// Before the sessions exist, so their onnxruntime threads carry the name too.
nameThisThread("radio-infer");
const graphs = new Map<string, LoadedGraph>();
const textGraphs = new Map<string, LoadedTextTower>();

function announce(msg: WorkerAnnouncement): void {
  const ch = new BroadcastChannel(config.channel);
  ch.postMessage(msg);
  ch.close();
}

async function load(): Promise<void> {
  const t0 = performance.now();
  const ready: ReadyModel[] = [];
  for (const m of config.models) {
    let g: LoadedGraph;
    try {
      g = await loadGraph(m.dir, { provider: config.provider, intraOpThreads: config.intraOpThreads, prepackWeights: config.prepackWeights });
    } catch (err) {
      const msg = (err as Error).message;
      if (config.provider === "cuda") {
        // The provider passed its probe (providers.ts) but this graph did not load on it.
        throw new Error(
          `model ${m.name}: the CUDA execution provider could not load ${m.dir} (${msg.split("\n", 1)[0]}). ` +
            `Check the provider and its libraries with \`node server/dist/cli.js providers --provider cuda\` (to install them: ${SETUP_HINT}); ` +
            "run with --provider cpu to use the CPU instead",
        );
      }
      throw new Error(`model ${m.name}: cannot load ${m.dir}: ${msg}`);
    }
    graphs.set(m.name, g);
    if (m.textDir) {
      try {
        textGraphs.set(m.name, await loadTextTower(m.textDir, { provider: config.provider, intraOpThreads: config.intraOpThreads }));
      } catch (err) {
        throw new Error(`model ${m.name}: cannot load its text tower ${m.textDir}: ${(err as Error).message}`);
      }
    }
    let warmupMs = 0;
    if (config.warmup) {
      // One run at the preferred resolution: allocates the arenas and picks kernels before the first
      // real request, so health only says SERVING when a request would not pay for that.
      const [h, w] = g.metadata.resolution.preferred;
      const t = performance.now();
      await runGraph(g, new Float32Array(3 * h * w).fill(0.5), [1, 3, h, w]);
      warmupMs = performance.now() - t;
    }
    ready.push({ name: m.name, provider: g.provider, warmupMs });
  }
  announce({
    type: "ready",
    threadId,
    ortVersion: ort.env.versions.node ?? ort.env.versions.common ?? "unknown",
    loadMs: performance.now() - t0,
    models: ready,
  });
}

try {
  await load();
} catch (err) {
  announce({ type: "failed", threadId, message: (err as Error).message });
  throw err;
}

/** Runs one batch; the outputs' buffers are transferred back, not copied. */
export default async function infer(task: InferTask | TextTask): Promise<unknown> {
  if (task.kind === "text") return embedText(task);
  const g = graphs.get(task.model);
  if (!g) throw new Error(`model ${task.model} is not loaded in this worker`);
  if (task.started) Atomics.store(task.started, 0, BigInt(Date.now()));
  const t = performance.now();
  const out = await runGraph(g, task.pixels, task.dims, task.outputs, task.space ?? "");
  const runMs = performance.now() - t;
  // The input goes back too: the pipeline reuses its buffer for a later batch (already paged in).
  const result: InferResult = { ...out, runMs, threadId, input: task.pixels };
  const buffers = new Set<ArrayBufferLike>([out.summary.buffer, out.features.buffer, task.pixels.buffer]);
  return move({ [transferableSymbol]: [...buffers], [valueSymbol]: result } as never);
}

async function embedText(task: TextTask): Promise<unknown> {
  const g = textGraphs.get(task.model);
  if (!g) throw new Error(`model ${task.model} has no text tower in this worker`);
  const t = performance.now();
  const out = await runTextTower(g, task.ids, task.dims);
  const result: TextResult = { ...out, runMs: performance.now() - t };
  return move({ [transferableSymbol]: [out.embeds.buffer], [valueSymbol]: result } as never);
}
