/**
 * CPU time per image of the sidecar's preprocessing alone (read + probe + decode + resize + CHW
 * float), in this process, for variants of the sharp pipeline, interleaved round by round.
 *
 *   node --import tsx bench/cpu_decode.ts --dir ~/.cache/c-radio-bench/cpu-images --size 640x480 [--res default|512] [--rounds 5] [--parallel 2]
 *
 * Counts process.cpuUsage() (user + sys of every thread: the main thread, the libuv threads where
 * sharp runs, V8's helpers) over decoding every image of the size once, `--parallel` at a time as
 * the pipeline does. Variants that change pixels are marked; for those the max |Δ| (in 1/255) and
 * the mean |Δ| against "current" are printed too.
 */
import { readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { parseArgs } from "node:util";

import sharp, { type ResizeOptions } from "sharp";

import {
  configureSharp,
  createPathPolicy,
  decodeOpened,
  openImage,
  parseResolutionPolicy,
  resolveTargetResolution,
  type GraphGeometry,
} from "../server/src/preprocess/index.js";

const { values: args } = parseArgs({
  options: {
    dir: { type: "string", default: path.join(process.env.HOME ?? "", ".cache/c-radio-bench/cpu-images") },
    size: { type: "string", default: "640x480" },
    res: { type: "string", default: "default" },
    rounds: { type: "string", default: "5" },
    parallel: { type: "string", default: "2" },
    variants: { type: "string", default: "" },
  },
});

const GEOMETRY: GraphGeometry = { patchSize: 16, windowSize: null, maxResolution: 2048, preferred: [512, 512] };
const files = readdirSync(args.dir!)
  .filter((f) => f.endsWith(`_${args.size}.jpg`))
  .sort()
  .map((f) => path.join(args.dir!, f));
if (files.length === 0) throw new Error(`no *_${args.size}.jpg in ${args.dir}: run bench/cpu_per_image.py once to make them`);
const policy = parseResolutionPolicy(args.res === "default" ? "" : `${args.res}x${args.res}`);
const paths = await createPathPolicy(["/"]);
configureSharp();

type Decode = (file: string) => Promise<Float32Array | Uint8Array>;

/** The sidecar's own preprocessing (server/src/preprocess). */
const current: Decode = async (file) => {
  const opened = await openImage({ id: file, path: file }, { paths });
  const target = resolveTargetResolution(opened.originalHeight, opened.originalWidth, GEOMETRY, policy, file);
  return (await decodeOpened(opened, target)).pixels;
};

/** Only sharp's decode + resize to HWC uint8 (no probe), for the breakdown. */
function sharpOnly(opts: { sequentialRead?: boolean; fastShrinkOnLoad?: boolean; kernel?: NonNullable<ResizeOptions["kernel"]> }): Decode {
  return async (file) => {
    const opened = await openImage({ id: file, path: file }, { paths });
    const t = resolveTargetResolution(opened.originalHeight, opened.originalWidth, GEOMETRY, policy, file);
    const bytes = opened.kind === "encoded" ? opened.bytes : Buffer.alloc(0);
    return sharp(bytes, { failOn: "error", sequentialRead: opts.sequentialRead ?? true, pages: 1, page: 0 })
      .autoOrient()
      .flatten({ background: "#ffffff" })
      .resize({ width: t.width, height: t.height, fit: "fill", kernel: opts.kernel ?? "cubic", fastShrinkOnLoad: opts.fastShrinkOnLoad ?? true })
      .toColourspace("srgb")
      .raw({ depth: "uchar" })
      .toBuffer();
  };
}

/** Read + probe only. */
const openOnly: Decode = async (file) => {
  const opened = await openImage({ id: file, path: file }, { paths });
  return opened.kind === "encoded" ? opened.bytes : new Uint8Array(0);
};

const VARIANTS: Record<string, { fn: Decode; pixels: "same" | "hwc" | "none" }> = {
  current: { fn: current, pixels: "same" },
  open: { fn: openOnly, pixels: "none" },
  "sharp-hwc": { fn: sharpOnly({}), pixels: "hwc" },
  "sharp-hwc-random-access": { fn: sharpOnly({ sequentialRead: false }), pixels: "hwc" },
  "sharp-hwc-no-fast-shrink": { fn: sharpOnly({ fastShrinkOnLoad: false }), pixels: "hwc" },
  "sharp-hwc-linear": { fn: sharpOnly({ kernel: "linear" }), pixels: "hwc" },
};
const names = args.variants ? args.variants.split(",") : Object.keys(VARIANTS);

/** utime + stime of this process's main thread, ms (10 ms ticks). */
function mainThreadMs(): number {
  const text = readFileSync(`/proc/self/task/${process.pid}/stat`, "utf8");
  const f = text.slice(text.lastIndexOf(")") + 2).split(" ");
  return (Number(f[11]) + Number(f[12])) * 10;
}

async function runAll(fn: Decode, parallel: number): Promise<[number, number]> {
  const m0 = mainThreadMs();
  const u0 = process.cpuUsage();
  let next = 0;
  await Promise.all(
    Array.from({ length: parallel }, async () => {
      while (next < files.length) await fn(files[next++]!);
    }),
  );
  const u = process.cpuUsage(u0);
  return [(u.user + u.system) / 1000 / files.length, (mainThreadMs() - m0) / files.length];
}

const parallel = Number(args.parallel);
for (const n of names) await runAll(VARIANTS[n]!.fn, parallel); // warm-up
const results: Record<string, number[]> = Object.fromEntries(names.map((n) => [n, []]));
const mains: Record<string, number[]> = Object.fromEntries(names.map((n) => [n, []]));
for (let r = 0; r < Number(args.rounds); r++) {
  const order = r % 2 === 0 ? names : [...names].reverse();
  for (const n of order) {
    const [all, main] = await runAll(VARIANTS[n]!.fn, parallel);
    results[n]!.push(all);
    mains[n]!.push(main);
  }
}
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
console.log(
  `${files.length} JPEGs ${args.size} → res ${args.res}, ${parallel} in flight, sharp concurrency ${sharp.concurrency()}; CPU-ms per image (median of ${args.rounds} rounds, min–max; main = the main thread's share)`,
);
for (const n of names) {
  const xs = results[n]!;
  console.log(
    `${n.padEnd(28)} ${median(xs).toFixed(2).padStart(7)}  (${Math.min(...xs).toFixed(2)}–${Math.max(...xs).toFixed(2)})  main ${median(mains[n]!).toFixed(2)}`,
  );
}
