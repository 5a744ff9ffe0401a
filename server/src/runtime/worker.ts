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
import { nameThisThread } from "../thread-name.js";
import {
  heatmapArrays,
  type InferResult,
  type InferTask,
  type ReadyGraph,
  type TextResult,
  type TextTask,
  type WorkerAnnouncement,
  type WorkerConfig,
} from "./protocol.js";

const config = workerData as WorkerConfig;
// Before the sessions exist, so their onnxruntime threads carry the name too.
nameThisThread("radio-infer");
const loadedGraphs = new Map<string, LoadedGraph>();
const loadedTextTowers = new Map<string, LoadedTextTower>();

function announce(msg: WorkerAnnouncement): void {
  const ch = new BroadcastChannel(config.channel);
  ch.postMessage(msg);
  ch.close();
}

async function load(): Promise<void> {
  const t0 = performance.now();
  const ready: ReadyGraph[] = [];
  for (const source of config.graphs) {
    let loaded: LoadedGraph;
    try {
      loaded = await loadGraph(source.dir, { provider: config.provider, intraOpThreads: config.intraOpThreads, prepackWeights: config.prepackWeights });
    } catch (err) {
      const msg = (err as Error).message;
      if (config.provider === "cuda") {
        // The provider passed its probe (providers.ts) but this graph did not load on it.
        throw new Error(
          `graph ${source.name}: the CUDA execution provider could not load ${source.dir} (${msg.split("\n", 1)[0]}). ` +
            `Check the provider and its libraries with \`node server/dist/cli.js providers --provider cuda\` (to install them: ${SETUP_HINT}); ` +
            "run with --provider cpu to use the CPU instead",
        );
      }
      throw new Error(`graph ${source.name}: cannot load ${source.dir}: ${msg}`);
    }
    loadedGraphs.set(source.name, loaded);
    if (source.textDir) {
      try {
        loadedTextTowers.set(source.name, await loadTextTower(source.textDir, { provider: config.provider, intraOpThreads: config.intraOpThreads }));
      } catch (err) {
        throw new Error(`graph ${source.name}: cannot load its text tower ${source.textDir}: ${(err as Error).message}`);
      }
    }
    let warmupMs = 0;
    if (config.warmup) {
      // One run at the preferred resolution: allocates the arenas and picks kernels before the first
      // real request, so health only says SERVING when a request would not pay for that.
      const [h, w] = loaded.metadata.resolution.preferred;
      const t = performance.now();
      await runGraph(loaded, new Uint8Array(h * w * 3).fill(128), [1, h, w, 3]);
      warmupMs = performance.now() - t;
    }
    ready.push({ name: source.name, provider: loaded.provider, warmupMs });
  }
  announce({
    type: "ready",
    threadId,
    ortVersion: ort.env.versions.node ?? ort.env.versions.common ?? "unknown",
    loadMs: performance.now() - t0,
    graphs: ready,
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
  const loaded = loadedGraphs.get(task.graph);
  if (!loaded) throw new Error(`graph ${task.graph} is not loaded in this worker`);
  if (task.started) Atomics.store(task.started, 0, BigInt(Date.now()));
  const t = performance.now();
  const out = await runGraph(loaded, task.pixels, task.dims, task.outputs, task.space ?? "");
  const runMs = performance.now() - t;
  // The input goes back too: the pipeline reuses its buffer for a later batch (already paged in).
  const result: InferResult = { ...out, runMs, threadId, input: task.pixels };
  const heatmapBuffers = out.heatmap ? heatmapArrays(out.heatmap).map((a) => a.buffer) : [];
  const buffers = new Set<ArrayBufferLike>([out.summary.buffer, out.features.buffer, task.pixels.buffer, ...heatmapBuffers]);
  return move({ [transferableSymbol]: [...buffers], [valueSymbol]: result } as never);
}

async function embedText(task: TextTask): Promise<unknown> {
  const loaded = loadedTextTowers.get(task.graph);
  if (!loaded) throw new Error(`graph ${task.graph} has no text tower in this worker`);
  if (task.started) Atomics.store(task.started, 0, BigInt(Date.now()));
  const t = performance.now();
  const out = await runTextTower(loaded, task.ids, task.dims);
  const result: TextResult = { ...out, runMs: performance.now() - t };
  return move({ [transferableSymbol]: [out.embeds.buffer], [valueSymbol]: result } as never);
}
