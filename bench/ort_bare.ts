// Path (c): a bare onnxruntime-node session on our compiled graph, pixels already in memory (the
// ceiling for anything built on that graph). Driven by bench/run.py over JSON lines on stdin/stdout:
//   {"cmd":"load","graph":DIR,"provider":"cpu"|"cuda","threads":N}
//   {"cmd":"pixels","npy":FILE}                  float32 [N, 3, R, R] in [0, 1]
//   {"cmd":"run","batch":B}                      runs all N images in batches of B
//   {"cmd":"exit"}
// Run with: node --import tsx bench/ort_bare.ts
import { createInterface } from "node:readline";
import * as ort from "onnxruntime-node";
import { loadGraph, runGraph, type LoadedGraph } from "../server/src/runtime/session.js";
import { readNpy } from "../server/src/runtime/npy.js";

// Everything but protocol lines goes to stderr.
const reply = (o: Record<string, unknown>) => process.stdout.write(`${JSON.stringify(o)}\n`);
console.log = console.error;

let graph: LoadedGraph | null = null;
let pixels: { data: Float32Array; shape: number[] } | null = null;

async function handle(msg: Record<string, unknown>): Promise<Record<string, unknown>> {
  switch (msg.cmd) {
    case "load": {
      const t0 = performance.now();
      graph = await loadGraph(String(msg.graph), {
        provider: (msg.provider as "cpu" | "cuda") ?? "cpu",
        intraOpThreads: Number(msg.threads ?? 0),
      });
      return { load_s: (performance.now() - t0) / 1000, ort: ort.env.versions?.common ?? "", provider: graph.provider };
    }
    case "pixels": {
      const a = readNpy(String(msg.npy));
      if (a.dtype !== "<f4" || a.shape.length !== 4) throw new Error(`pixels must be float32 [N,3,H,W], got ${a.dtype} [${a.shape}]`);
      pixels = { data: a.data as Float32Array, shape: a.shape };
      return { shape: a.shape };
    }
    case "run": {
      if (!graph || !pixels) throw new Error("load a graph and pixels first");
      const batch = Number(msg.batch ?? 1);
      const limit = msg.limit === undefined ? pixels.shape[0]! : Number(msg.limit);
      const [n, c, h, w] = pixels.shape as [number, number, number, number];
      const per = c * h * w;
      const lat: number[] = [];
      const t0 = performance.now();
      for (let i = 0; i < Math.min(n, limit); i += batch) {
        const b = Math.min(batch, Math.min(n, limit) - i);
        const ta = performance.now();
        await runGraph(graph, pixels.data.subarray(i * per, (i + b) * per), [b, c, h, w]);
        const dt = (performance.now() - ta) / 1000;
        for (let k = 0; k < b; k++) lat.push(dt);
      }
      return { images: lat.length, wall_s: (performance.now() - t0) / 1000, lat };
    }
    default:
      throw new Error(`unknown command ${String(msg.cmd)}`);
  }
}

reply({ ready: true, pid: process.pid });
const rl = createInterface({ input: process.stdin });
for await (const line of rl) {
  if (!line.trim()) continue;
  const msg = JSON.parse(line) as Record<string, unknown>;
  if (msg.cmd === "exit") {
    reply({ ok: true });
    break;
  }
  try {
    reply({ ok: true, ...(await handle(msg)) });
  } catch (err) {
    reply({ ok: false, error: err instanceof Error ? err.message : String(err) });
  }
}
process.exit(0);
