/**
 * Sidecar overhead, measured: images/s through the gRPC sidecar vs a bare onnxruntime-node session
 * on the same tensors and batch size, and the p50 latency of one 640×480 JPEG (path input, default
 * resolution policy).
 *
 *   npm run build && node --import tsx bench/sidecar-overhead.ts [--preset vit-b] [--batch 8] [--rounds 5] [--batches 3]
 *
 * Makes (once) a random checkpoint of the preset under .cache/bench/ and compiles it. The sidecar
 * is the built CLI in a child process (1 worker × all cores as intra-op threads: the 2-core
 * defaults) and this process is its client; the bare session lives in this process. They never run
 * at once but alternate round by round, so both see the same background load; the overhead is the
 * median over rounds of sidecar time / bare time.
 */
import { spawn } from "node:child_process";
import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { createInterface } from "node:readline";
import { parseArgs } from "node:util";

import sharp from "sharp";

import { generateCheckpoint, PRESETS, type PresetName } from "../server/src/synthetic/generate.js";
import { compileCheckpoint } from "../server/src/compiler/compile.js";
import { defaultResolution } from "../server/src/preprocess/index.js";
import { loadGraph, type PixelDims, runGraph } from "../server/src/runtime/session.js";
import { batchOf, RadioClient, randomPixels, rawUint8 } from "../test/node/support/server.js";

const { values: args } = parseArgs({
  options: {
    preset: { type: "string", default: "vit-b" },
    batch: { type: "string", default: "8" },
    batches: { type: "string", default: "3" },
    rounds: { type: "string", default: "5" },
    size: { type: "string", default: "224" },
    threads: { type: "string", default: String(os.availableParallelism()) },
    "latency-runs": { type: "string", default: "3" },
  },
});
const preset = args.preset as PresetName;
const B = Number(args.batch);
const BATCHES = Number(args.batches);
const ROUNDS = Number(args.rounds);
const SIZE = Number(args.size);
const THREADS = Number(args.threads);
const LATENCY_RUNS = Number(args["latency-runs"]);
const ROOT = path.resolve(import.meta.dirname, "..");
const CACHE = path.join(ROOT, ".cache", "bench");

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const pct = (xs: number[], q: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(xs.length * q))]!;
const log = (s: string) => process.stderr.write(`${s}\n`);

async function ensureGraph(): Promise<string> {
  const ckpt = path.join(CACHE, `${preset}-ckpt`);
  const graph = path.join(CACHE, preset);
  if (!existsSync(path.join(graph, "metadata.json"))) {
    mkdirSync(CACHE, { recursive: true });
    log(`making a random ${preset} checkpoint and compiling it into ${graph}`);
    await generateCheckpoint(ckpt, PRESETS[preset]);
    await compileCheckpoint({ checkpointDir: ckpt, outDir: graph });
  }
  return graph;
}

interface Bare {
  runBatch(): Promise<void>;
  runOne(): Promise<void>;
  release(): Promise<void>;
}

async function openBare(graph: string, images: Uint8Array[], latencySize: { height: number; width: number }): Promise<Bare> {
  const g = await loadGraph(graph, { intraOpThreads: THREADS });
  const x = batchOf(images);
  // One image at the resolution the default policy picks for 640×480.
  const one = new Uint8Array(latencySize.height * latencySize.width * 3).fill(128);
  const oneDims: PixelDims = [1, latencySize.height, latencySize.width, 3];
  const bare: Bare = {
    runBatch: async () => void (await runGraph(g, x, [B, SIZE, SIZE, 3])),
    runOne: async () => void (await runGraph(g, one, oneDims)),
    release: () => g.session.release(),
  };
  await bare.runBatch();
  await bare.runOne();
  return bare;
}

async function startSidecar(graph: string, jpegPath: string) {
  const cli = path.join(ROOT, "server", "dist", "cli.js");
  if (!existsSync(cli)) throw new Error("build first: npm run build");
  const proc = spawn(
    process.execPath,
    [
      cli,
      "serve",
      "--graph",
      `bench=${graph}`,
      "--max-batch",
      String(B),
      "--threads",
      String(THREADS),
      "--allowed-root",
      path.dirname(jpegPath),
      "--log-level",
      "warn",
    ],
    { stdio: ["ignore", "pipe", "inherit"] },
  );
  const ready = await new Promise<{ address: string }>((resolve, reject) => {
    createInterface({ input: proc.stdout! }).once("line", (l) => resolve(JSON.parse(l)));
    proc.once("exit", (c) => reject(new Error(`serve exited with ${c}`)));
  });
  return { proc, client: new RadioClient(ready.address) };
}

const timed = async (f: () => Promise<unknown>) => {
  const t = performance.now();
  await f();
  return (performance.now() - t) / 1000;
};

async function main(): Promise<void> {
  const graph = await ensureGraph();
  const images = Array.from({ length: B }, (_, i) => randomPixels(SIZE, SIZE, i + 1));
  const jpegDir = path.join(CACHE, "photos");
  mkdirSync(jpegDir, { recursive: true });
  const jpegPath = path.join(jpegDir, "photo-640x480.jpg");
  const noise = Buffer.from(randomPixels(480, 640, 42));
  writeFileSync(
    jpegPath,
    await sharp(noise, { raw: { width: 640, height: 480, channels: 3 } })
      .jpeg({ quality: 90 })
      .toBuffer(),
  );
  const latencySize = defaultResolution(480, 640, { patchSize: 16, windowSize: null, maxResolution: 2048, preferred: [512, 512] });

  log(`${preset} at ${SIZE}², batch ${B}, ${ROUNDS} rounds of ${BATCHES} batches, ${THREADS} intra-op threads; bare and sidecar alternate`);
  const bare = await openBare(graph, images, latencySize);
  const { proc, client: c } = await startSidecar(graph, jpegPath);
  const ratios = { bare: [] as number[], seq: [] as number[], pipe: [] as number[], overSeq: [] as number[], overPipe: [] as number[] };
  const lat = { sidecar: [] as number[], bare: [] as number[] };
  let inputSize = "";
  try {
    const req = { images: images.map((im, i) => rawUint8(`i${i}`, im, SIZE, SIZE)), options: { resolution: "native" } };
    const check = (r: { output?: unknown; error?: { message: string } }[]) => {
      if (r.length !== B || r.some((x) => !x.output)) throw new Error(`bad reply: ${JSON.stringify(r.find((x) => x.error)?.error)}`);
    };
    const jreq = { images: [{ id: "photo", path: jpegPath }] };
    for (let i = 0; i < 2; i++) check(await c.embed(req).done);
    for (let i = 0; i < 2; i++) await c.embed(jreq).done;

    for (let round = 0; round < ROUNDS; round++) {
      const bareS = await timed(async () => {
        for (let i = 0; i < BATCHES; i++) await bare.runBatch();
      });
      // Sequential: one call of B images at a time (the client waits for each reply).
      const seqS = await timed(async () => {
        for (let i = 0; i < BATCHES; i++) check(await c.embed(req).done);
      });
      // Pipelined: two calls in flight, so the next batch is decoded and queued while one runs.
      let next = 0;
      const lane = async () => {
        while (next < BATCHES) {
          next++;
          check(await c.embed(req).done);
        }
      };
      const pipeS = await timed(() => Promise.all([lane(), lane()]));
      const ips = (secs: number) => (B * BATCHES) / secs;
      ratios.bare.push(ips(bareS));
      ratios.seq.push(ips(seqS));
      ratios.pipe.push(ips(pipeS));
      ratios.overSeq.push(seqS / bareS);
      ratios.overPipe.push(pipeS / bareS);
      log(`round ${round + 1}: bare ${ips(bareS).toFixed(2)} img/s, sidecar ${ips(seqS).toFixed(2)} (sequential) ${ips(pipeS).toFixed(2)} (pipelined)`);

      for (let i = 0; i < LATENCY_RUNS; i++) {
        lat.bare.push(1000 * (await timed(() => bare.runOne())));
        const t = performance.now();
        const [r] = await c.embed(jreq).done;
        lat.sidecar.push(performance.now() - t);
        inputSize = `${r!.output!.inputHeight}x${r!.output!.inputWidth}`;
      }
    }
  } finally {
    c.close();
    proc.kill("SIGTERM");
    await bare.release();
  }
  const r2 = (x: number) => +x.toFixed(2);
  const result = {
    machine: `${os.cpus()[0]?.model ?? "cpu"} × ${os.availableParallelism()}, load average at end ${os.loadavg()[0]!.toFixed(2)}`,
    preset,
    size: SIZE,
    batch: B,
    rounds: ROUNDS,
    batchesPerRound: BATCHES,
    threads: THREADS,
    bareImagesPerSecond: r2(median(ratios.bare)),
    sidecarImagesPerSecondSequential: r2(median(ratios.seq)),
    sidecarImagesPerSecondPipelined: r2(median(ratios.pipe)),
    // Median over rounds of (sidecar time / bare time) for the same images: 1.00 = no overhead.
    overheadSequential: +median(ratios.overSeq).toFixed(3),
    overheadPipelined: +median(ratios.overPipe).toFixed(3),
    jpeg640x480: {
      inputSize,
      sidecarP50Ms: +median(lat.sidecar).toFixed(1),
      sidecarP90Ms: +pct(lat.sidecar, 0.9).toFixed(1),
      bareOrtSameSizeP50Ms: +median(lat.bare).toFixed(1),
    },
  };
  process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
}

await main();
