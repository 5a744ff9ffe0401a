/**
 * Heatmap postprocess speed, measured: one image's features in the graph's NLC layout → the uint8
 * heatmap the sidecar returns (outputs.ts heatmapTensor, 512×512), on one thread, for the previous
 * algorithm (the postprocess code at commit --base, read with `git show`, so the comparison stays
 * reproducible after this code changes) and the current one, interleaved round by round (order
 * alternating) so both see the same background load; ratios are medians of per-round ratios.
 * Single-thread times are CPU time of this process (getrusage; --clock cpu, the default), which a
 * busy shared machine inflates far less than wall time, or wall time (--clock wall) on an idle
 * machine with many cores, where V8's parallel GC helpers add CPU time that is not on the
 * heatmap's path. The pool's throughput is always wall time.
 * Then each version's stages, and throughput through the sidecar's postprocess pool (piscina,
 * `serve --postprocess-threads`) for each --threads value.
 *
 *   npx tsx bench/heatmap_speed.ts [--rounds 15] [--threads 1,2] [--clock cpu|wall] [--base 3412cc5] [--json FILE]
 *
 * Where there is no git checkout or tsx (a GPU host), bundle it first with esbuild (bench, the
 * postprocess worker, and the baseline's modules, see --base-module) and run it with plain node.
 *
 * Features are synthetic (no real checkpoint here): 20 spatial modes of decaying strength, unit
 * noise, per-channel offsets and 4 high-norm tokens at 20× the median norm, as registers are on
 * C-RADIOv4-SO400M. The eigen-solver's step count depends on the spectrum, so real maps may take a
 * few steps more or fewer (the table reports the steps).
 */
import { execFileSync } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";

import { sanitizeAndClip } from "../server/src/postprocess/clip.js";
import { HEATMAP_DEFAULTS } from "../server/src/defaults.js";
import { DEFAULT_HEATMAP_SOLVER_TOLERANCE, inlierMean } from "../server/src/postprocess/heatmap.js";
import { orientComponent } from "../server/src/postprocess/orientation.js";
import { clampToInlierRange, highNormTokens } from "../server/src/postprocess/outliers.js";
import { heatmapTensor, type HeatmapSpec } from "../server/src/postprocess/outputs.js";
import { principalComponents } from "../server/src/postprocess/pca.js";
import { PostprocessPool } from "../server/src/postprocess/pool.js";
import { minMaxToUint8 } from "../server/src/postprocess/quantize.js";
import { resizeBilinear } from "../server/src/postprocess/resize.js";
import { gaussianFilter2d } from "../server/src/postprocess/smoothing.js";

const { values: args } = parseArgs({
  options: {
    rounds: { type: "string", default: "15" },
    threads: {
      type: "string",
      default: [...new Set([1, 2, 4, 8, os.availableParallelism() - 2, os.availableParallelism()])]
        .filter((t) => t >= 1 && t <= os.availableParallelism())
        .join(","),
    },
    base: { type: "string", default: "3412cc50564ed1e9dba37a6ac538a59772a8d820" },
    /** An ES module exporting the baseline's modules by name ({ outputs, clip, pca, ... }), instead of git. */
    "base-module": { type: "string" },
    json: { type: "string" },
    clock: { type: "string", default: "cpu" },
  },
});
const ROUNDS = Number(args.rounds);
const THREADS = args.threads!.split(",").map(Number);
const ROOT = path.resolve(import.meta.dirname, "..");
const OUT = 512;
const SIGMA = HEATMAP_DEFAULTS.sigma;
const log = (s: string) => process.stderr.write(`${s}\n`);
const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

// --- features ----------------------------------------------------------------------------------

function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = Math.imul(a ^ (a >>> 15), a | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** NLC (h·w, C) features: 20 spatial modes, amplitude 3/(k+1), unit noise, offsets, 4 high-norm tokens. */
function makeNlc(C: number, h: number, w: number, seed: number): Float32Array {
  const r = rng(seed);
  const g = () => Math.sqrt(-2 * Math.log(1 - r())) * Math.cos(2 * Math.PI * r());
  const n = h * w;
  const modes = 20;
  const load = Array.from({ length: modes }, () => Float64Array.from({ length: C }, g));
  const field = Array.from({ length: modes }, (_, k) =>
    Float64Array.from({ length: n }, (_, p) => Math.sin(((k % 7) + 1) * 0.2 * (p % w) + k) * Math.cos(((k % 5) + 1) * 0.15 * Math.floor(p / w))),
  );
  const offset = Float64Array.from({ length: C }, () => 2 * g());
  const x = new Float32Array(n * C);
  for (let p = 0; p < n; p++) {
    for (let c = 0; c < C; c++) {
      let v = offset[c]! + g();
      for (let k = 0; k < modes; k++) v += (3 / (k + 1)) * load[k]![c]! * field[k]![p]!;
      x[p * C + c] = v;
    }
  }
  let sq = 0;
  for (let c = 0; c < C; c++) sq += x[c]! * x[c]!;
  for (const p of [0, w - 1, n - w + 3, (h >> 1) * w + 5])
    for (let c = 0; c < C; c++) x[p * C + c] = x[p * C + c]! + 20 * Math.sqrt(sq / C) * load[0]![(c * 7) % C]!;
  return x;
}

// --- the previous version, from git ------------------------------------------------------------

const BASE_FILES = [
  "outputs",
  "heatmap",
  "clip",
  "dims",
  "lanczos",
  "orientation",
  "pca",
  "quantize",
  "resize",
  "smoothing",
  "percentile",
  "centered-matrix",
  "tridiagonal-eigen",
];

// biome-ignore lint/suspicious/noExplicitAny: modules of an older commit, whatever they export
type Mod = any;
async function loadBase(commit: string): Promise<Record<string, Mod> | null> {
  if (args["base-module"]) return (await import(path.resolve(args["base-module"]))) as Record<string, Mod>;
  const dir = path.join(os.tmpdir(), `radio-heatmap-base-${commit.slice(0, 12)}`);
  try {
    mkdirSync(dir, { recursive: true });
    for (const f of BASE_FILES) {
      const src = execFileSync("git", ["-C", ROOT, "show", `${commit}:server/src/postprocess/${f}.ts`], { encoding: "utf8" });
      writeFileSync(path.join(dir, `${f}.ts`), src);
    }
  } catch (e) {
    log(`no baseline: cannot read the postprocess code at ${commit} (${(e as Error).message.split("\n")[0]})`);
    return null;
  }
  const mods: Record<string, Mod> = {};
  for (const f of BASE_FILES) mods[f] = await import(path.join(dir, `${f}.ts`));
  return mods;
}

// --- stages ------------------------------------------------------------------------------------

type Stages = Record<string, number>;
const wallClock = () => performance.now();
/** CPU ms of this process (all its threads; the single-thread parts run no others but V8's GC helpers). */
const cpuClock = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
};
if (args.clock !== "cpu" && args.clock !== "wall") throw new Error(`--clock must be cpu or wall, got ${args.clock}`);
const clock = args.clock === "wall" ? wallClock : cpuClock;

/** Time per named stage: lap(name) adds the time since the previous lap to t[name]. */
function stopwatch(): { t: Stages; lap: (name: string) => void } {
  const t: Stages = {};
  let t0 = clock();
  return {
    t,
    lap: (name: string) => {
      const t1 = clock();
      t[name] = (t[name] ?? 0) + t1 - t0;
      t0 = t1;
    },
  };
}

function stagesNew(nlc: Float32Array, C: number, h: number, w: number, k: number): { t: Stages; steps: number; outliers: number } {
  const n = h * w;
  const dims = { channels: C, height: h, width: w };
  const { t, lap } = stopwatch();
  const clip = sanitizeAndClip(nlc, dims, { layout: "nlc" });
  lap("transpose + sanitise + clip");
  const out = highNormTokens(clip.rawNorms);
  const mean = inlierMean(clip, C, n, out.mask);
  lap("high-norm tokens");
  const pca = principalComponents(clip.data, dims, k, { tolerance: DEFAULT_HEATMAP_SOLVER_TOLERANCE }, { exclude: out.mask, mean });
  lap("PCA");
  pca.scores.forEach((s, i) => orientComponent(s, pca.components[i]!, clip.norms, out.mask));
  if (out.mask) for (const s of pca.scores) clampToInlierRange(s, out.mask);
  lap("sign + clamp");
  const data = new Uint8Array(OUT * OUT * k);
  for (let i = 0; i < k; i++) {
    const sm = gaussianFilter2d(pca.scores[i]!, h, w, SIGMA);
    lap("smooth");
    const rs = resizeBilinear(sm, h, w, OUT, OUT);
    lap("resize");
    minMaxToUint8(rs, data, k, i);
    lap("quantize");
  }
  return { t, steps: pca.steps, outliers: out.count };
}

function stagesOld(b: Record<string, Mod>, nlc: Float32Array, C: number, h: number, w: number, k: number): { t: Stages; steps: number } {
  const n = h * w;
  const dims = { channels: C, height: h, width: w };
  const { t, lap } = stopwatch();
  const chw = b.outputs.nlcToChw(nlc, n, C);
  lap("transpose");
  const clip = b.clip.sanitizeAndClip(chw, dims);
  lap("sanitise + clip");
  const pca = b.pca.principalComponents(clip.data, dims, k);
  lap("PCA");
  const norms = b.orientation.positionNorms(clip.data, C, n);
  pca.scores.forEach((s: Float64Array, i: number) => b.orientation.orientComponent(s, pca.components[i], norms));
  lap("norms + sign");
  const data = new Uint8Array(OUT * OUT * k);
  for (let i = 0; i < k; i++) {
    const sm = b.smoothing.gaussianFilter2d(pca.scores[i], h, w, SIGMA);
    lap("smooth");
    const rs = b.resize.resizeBilinear(sm, h, w, OUT, OUT);
    lap("resize");
    b.quantize.minMaxToUint8(rs, data, k, i);
    lap("quantize");
  }
  return { t, steps: pca.steps };
}

// --- run ---------------------------------------------------------------------------------------

interface Case {
  name: string;
  C: number;
  h: number;
  w: number;
  mode: "pca1" | "pca3";
}
const CASES: Case[] = [
  { name: "H 1280×32×32 pca1", C: 1280, h: 32, w: 32, mode: "pca1" },
  { name: "SO400M 1152×32×32 pca1", C: 1152, h: 32, w: 32, mode: "pca1" },
  { name: "H 1280×32×32 pca3", C: 1280, h: 32, w: 32, mode: "pca3" },
];

const spec = (mode: "pca1" | "pca3"): HeatmapSpec => ({ mode, sigma: SIGMA, outputHeight: OUT, outputWidth: OUT, maxSide: OUT });

async function main(): Promise<void> {
  const base = await loadBase(args.base!);
  const results: Record<string, unknown>[] = [];
  log(`${os.cpus()[0]?.model ?? "cpu"} × ${os.availableParallelism()}, node ${process.version}, ${ROUNDS} rounds`);
  const lines: string[] = [];
  for (const c of CASES) {
    const nlc = makeNlc(c.C, c.h, c.w, 11);
    const k = c.mode === "pca1" ? 1 : 3;
    const runNew = () => heatmapTensor({ nlc, channels: c.C }, c.h, c.w, spec(c.mode), OUT, OUT);
    const runOld = base ? () => base.outputs.heatmapTensor(nlc, c.h, c.w, c.C, spec(c.mode), OUT, OUT) : null;
    for (let i = 0; i < 3; i++) {
      runNew();
      runOld?.();
    }
    const tNew: number[] = [];
    const tOld: number[] = [];
    const ratios: number[] = [];
    const sNew: Stages[] = [];
    const sOld: Stages[] = [];
    let steps = { new: 0, old: 0, outliers: 0 };
    for (let r = 0; r < ROUNDS; r++) {
      const order = r % 2 === 0 ? ["new", "old"] : ["old", "new"];
      const got: Record<string, number> = {};
      for (const which of order) {
        if (which === "old" && !runOld) continue;
        const t0 = clock();
        (which === "new" ? runNew : runOld!)();
        got[which] = clock() - t0;
      }
      tNew.push(got.new!);
      if (runOld) {
        tOld.push(got.old!);
        ratios.push(got.old! / got.new!);
      }
      const sn = stagesNew(nlc, c.C, c.h, c.w, k);
      sNew.push(sn.t);
      steps = { ...steps, new: sn.steps, outliers: sn.outliers };
      if (base) {
        const so = stagesOld(base, nlc, c.C, c.h, c.w, k);
        sOld.push(so.t);
        steps.old = so.steps;
      }
    }
    const med = (ss: Stages[]) => Object.fromEntries(Object.keys(ss[0] ?? {}).map((key) => [key, median(ss.map((s) => s[key]!))]));
    const res = {
      case: c.name,
      new_ms: median(tNew),
      old_ms: runOld ? median(tOld) : null,
      old_over_new: runOld ? median(ratios) : null,
      ratio_range: runOld ? [Math.min(...ratios), Math.max(...ratios)] : null,
      stages_new: med(sNew),
      stages_old: base ? med(sOld) : null,
      lanczos_steps: steps,
    };
    results.push(res);
    const fmt = (s: Stages | null) =>
      s
        ? Object.entries(s)
            .map(([key, v]) => `${key} ${v.toFixed(1)}`)
            .join(", ")
        : "–";
    lines.push(
      `| ${c.name} | ${res.old_ms?.toFixed(1) ?? "–"} | ${res.new_ms.toFixed(1)} | ${res.old_over_new ? `**${res.old_over_new.toFixed(2)}** (${res.ratio_range![0]!.toFixed(2)}–${res.ratio_range![1]!.toFixed(2)})` : "–"} | ${steps.old} → ${steps.new} |`,
    );
    lines.push(`|  stages, previous (ms) | ${fmt(res.stages_old)} ||||`);
    lines.push(`|  stages, current (ms; ${steps.outliers} high-norm tokens) | ${fmt(res.stages_new)} ||||`);
    log(`${c.name}: previous ${res.old_ms?.toFixed(1)} ms, current ${res.new_ms.toFixed(1)} ms`);
  }

  // Throughput through the postprocess pool, as the sidecar runs heatmaps.
  const pool: Record<string, unknown>[] = [];
  const nlc = makeNlc(1280, 32, 32, 11);
  const task = () => ({
    op: "heatmap" as const,
    source: { nlc: Float32Array.from(nlc), channels: 1280 },
    gridHeight: 32,
    gridWidth: 32,
    spec: spec("pca1"),
    originalHeight: OUT,
    originalWidth: OUT,
  });
  const poolLines: string[] = [];
  for (const T of THREADS) {
    const p = new PostprocessPool(T);
    await Promise.all(Array.from({ length: Math.max(1, T) * 2 }, () => p.postprocess(task())));
    // A call's worth of heatmaps at once, 3 times; the median run counts.
    const M = Math.max(1, T) * 8;
    const walls: number[] = [];
    for (let rep = 0; rep < 3; rep++) {
      const tasks = Array.from({ length: M }, task);
      const t0 = wallClock();
      await Promise.all(tasks.map((x) => p.postprocess(x)));
      walls.push(wallClock() - t0);
    }
    await p.close();
    const wall = median(walls);
    const ips = (M / wall) * 1000;
    pool.push({ threads: T, images: M, wall_ms: walls, images_per_s: ips });
    poolLines.push(`| ${T} | ${M} × 3 | ${ips.toFixed(1)} | ${((wall * Math.max(1, T)) / M).toFixed(1)} |`);
    log(`pool ${T} threads: ${ips.toFixed(1)} heatmaps/s`);
  }

  console.log(
    `\n${os.cpus()[0]?.model ?? "cpu"} × ${os.availableParallelism()}, node ${process.version}; ${ROUNDS} interleaved rounds; output ${OUT}×${OUT}, sigma ${SIGMA}\n`,
  );
  console.log(`| features → heatmap (one thread, ${args.clock === "wall" ? "wall" : "CPU"} ms) | previous | current | previous ÷ current | Lanczos steps |`);
  console.log("|---|---|---|---|---|");
  for (const l of lines) console.log(l);
  console.log("\n| postprocess threads | heatmaps (a call) | heatmaps/s (H pca1, wall) | thread-ms per heatmap |");
  console.log("|---|---|---|---|");
  for (const l of poolLines) console.log(l);
  if (args.json)
    writeFileSync(
      args.json,
      JSON.stringify(
        { machine: { cpu: os.cpus()[0]?.model, cores: os.availableParallelism(), node: process.version }, clock: args.clock, results, pool },
        null,
        2,
      ),
    );
}

await main();
