// Path (c): a bare onnxruntime-node session on our compiled graph, pixels already in memory (the
// ceiling for anything built on that graph). Driven by bench/run.py over JSON lines on stdin/stdout:
//   {"cmd":"load","graph":DIR,"provider":"cpu"|"cuda","threads":N}
//   {"cmd":"pixels","npy":FILE}                  uint8 [N, R, R, 3] (RGB, the graph's input)
//   {"cmd":"run","batch":B,"outputs":[...]}      runs all N images in batches of B, fetching
//                                                `outputs` (default ["summary"]: what path d's
//                                                embedding calls fetch)
//   {"cmd":"gpu-buffer","batch":B}              a second session on the loaded graph asking onnxruntime
//                                                to leave `features` on the device (IO binding,
//                                                preferredOutputLocation "gpu-buffer"): images/s of
//                                                B-image runs fetching the summary, or the error (a
//                                                probe: does onnxruntime-node offer it beyond WebGPU?)
//   {"cmd":"exit"}
// Run with: node --import tsx bench/ort_bare.ts
import { createInterface } from "node:readline";
import * as ort from "onnxruntime-node";
import { type GraphOutputName, loadGraph, runGraph, type LoadedGraph } from "../server/src/runtime/session.js";
import { readNpy } from "../server/src/runtime/npy.js";

// Everything but protocol lines goes to stderr.
const reply = (o: Record<string, unknown>) => process.stdout.write(`${JSON.stringify(o)}\n`);
console.log = console.error;

let graph: LoadedGraph | null = null;
let graphDir = "";
let pixels: { data: Uint8Array; shape: number[] } | null = null;

async function handle(msg: Record<string, unknown>): Promise<Record<string, unknown>> {
  switch (msg.cmd) {
    case "load": {
      const t0 = performance.now();
      graphDir = String(msg.graph);
      graph = await loadGraph(graphDir, {
        provider: (msg.provider as "cpu" | "cuda") ?? "cpu",
        intraOpThreads: Number(msg.threads ?? 0),
      });
      return { load_s: (performance.now() - t0) / 1000, ort: ort.env.versions?.common ?? "", provider: graph.provider };
    }
    case "pixels": {
      const a = readNpy(String(msg.npy));
      if (a.dtype !== "|u1" || a.shape.length !== 4 || a.shape[3] !== 3) throw new Error(`pixels must be uint8 [N,H,W,3], got ${a.dtype} [${a.shape}]`);
      pixels = { data: a.data as Uint8Array, shape: a.shape };
      return { shape: a.shape };
    }
    case "run": {
      if (!graph || !pixels) throw new Error("load a graph and pixels first");
      const batch = Number(msg.batch ?? 1);
      const limit = msg.limit === undefined ? pixels.shape[0]! : Number(msg.limit);
      const [n, h, w, c] = pixels.shape as [number, number, number, number];
      const per = h * w * c;
      const fetch = (msg.outputs as GraphOutputName[] | undefined) ?? ["summary"];
      const lat: number[] = [];
      const cpu0 = process.cpuUsage();
      const t0 = performance.now();
      for (let i = 0; i < Math.min(n, limit); i += batch) {
        const b = Math.min(batch, Math.min(n, limit) - i);
        const ta = performance.now();
        await runGraph(graph, pixels.data.subarray(i * per, (i + b) * per), [b, h, w, c], fetch);
        const dt = (performance.now() - ta) / 1000;
        for (let k = 0; k < b; k++) lat.push(dt);
      }
      const cpu = process.cpuUsage(cpu0);
      // cpu_s: this process's CPU time (onnxruntime's threads included), what the run takes from the host.
      return { images: lat.length, wall_s: (performance.now() - t0) / 1000, cpu_s: (cpu.user + cpu.system) / 1e6, lat };
    }
    case "gpu-buffer": {
      if (!graph || !pixels) throw new Error("load a graph and pixels first");
      const [, h, w] = pixels.shape as [number, number, number, number];
      const b = Number(msg.batch ?? 8);
      const session = await ort.InferenceSession.create(`${graphDir}/model.onnx`, {
        executionProviders: [graph.provider, "cpu"],
        preferredOutputLocation: { features: "gpu-buffer" },
      });
      try {
        const x = new ort.Tensor("uint8", pixels.data.subarray(0, b * h * w * 3), [b, h, w, 3]);
        let out = await session.run({ pixels: x });
        const location = out.features?.location;
        out.features?.dispose();
        const t0 = performance.now();
        for (let i = 0; i < 4; i++) {
          out = await session.run({ pixels: x });
          out.features?.dispose();
        }
        return { images_per_s: (4 * b) / ((performance.now() - t0) / 1000), features_location: location };
      } finally {
        await session.release();
      }
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
