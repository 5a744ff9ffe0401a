#!/usr/bin/env node
// radio-sidecar: compile checkpoints, run compiled graphs on tensors, make test checkpoints, serve.
import { Command, InvalidArgumentError, Option } from "commander";
import { mkdirSync } from "node:fs";
import { join, resolve } from "node:path";
import { generateCheckpoint, PRESETS, type PresetName } from "./checkpoint/generate.js";
import { compileCheckpoint } from "./compiler/compile.js";
import { KNOWN_MODELS, resolveModelName } from "./checkpoint/models.js";
import { loadGraph, runGraph } from "./runtime/session.js";
import { readNpy, writeNpy } from "./runtime/npy.js";
import { PRODUCT } from "./version.js";

const positiveInt = (v: string): number => {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError("must be a positive integer");
  return n;
};
const nonNegativeInt = (v: string): number => {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0) throw new InvalidArgumentError("must be a non-negative integer");
  return n;
};

const program = new Command()
  .name("radio-sidecar")
  .description("C-RADIOv4 for FiftyOne: compile Hugging Face checkpoints to ONNX, run and serve them")
  .version(PRODUCT.version);

program
  .command("compile")
  .description("compile a checkpoint (by model name, downloaded into the Hugging Face cache, or from a local folder) into an ONNX graph folder")
  .addOption(new Option("--model <name>", `model to download: ${Object.keys(KNOWN_MODELS).join(", ")} or a Hugging Face repo id`).conflicts("checkpoint"))
  .addOption(new Option("--checkpoint <dir>", "local checkpoint folder (config.json + safetensors)"))
  .option("--revision <rev>", "Hugging Face revision (branch, tag or commit) to download")
  .requiredOption("--out <dir>", "output folder for model.onnx + metadata.json")
  .addOption(new Option("--precision <p>", "graph precision").choices(["fp32", "fp16"]).default("fp32"))
  .option("--window-size <n>", "ViTDet window size in patches (windowed attention)", positiveInt)
  .option("--external-preprocessor", "leave the (x - mean) / std normalisation out of the graph", false)
  .addOption(new Option("--attention <impl>", "attention ops").choices(["matmul", "mha"]).default("mha"))
  .option("--copy-weights", "write the fp32 weights into the output folder instead of hard-linking the checkpoint", false)
  .option("--cache-dir <dir>", "Hugging Face hub cache (default: $HF_HUB_CACHE or $HF_HOME/hub)")
  .action(async (o: {
    model?: string; checkpoint?: string; revision?: string; out: string; precision: "fp32" | "fp16"; windowSize?: number;
    externalPreprocessor: boolean; attention: "matmul" | "mha"; copyWeights: boolean; cacheDir?: string;
  }) => {
    let checkpointDir = o.checkpoint;
    let repo: string | null = null;
    let revision: string | null = null;
    if (!checkpointDir) {
      if (!o.model) throw new InvalidArgumentError("give --model <name> or --checkpoint <dir>");
      const { downloadCheckpoint } = await import("./checkpoint/hub.js");
      const m = resolveModelName(o.model);
      repo = m.repo;
      const dl = await downloadCheckpoint({ repo: m.repo, revision: o.revision ?? m.revision, cacheDir: o.cacheDir });
      checkpointDir = dl.snapshotDir;
      revision = dl.commit;
    }
    const r = await compileCheckpoint({
      checkpointDir: checkpointDir!, outDir: o.out, precision: o.precision, windowSize: o.windowSize ?? null,
      externalPreprocessor: o.externalPreprocessor, attention: o.attention, weightsMode: o.copyWeights ? "copy" : "link",
      repo, revision, onStage: (s) => process.stderr.write(`compile: ${s}\n`),
    });
    process.stderr.write(`compile: wrote ${r.outDir} (${r.nodeCount} nodes, ${r.seconds.toFixed(2)} s)\n`);
    process.stdout.write(JSON.stringify(r.metadata, null, 2) + "\n");
  });

program
  .command("run")
  .description("run a compiled graph on a float32 .npy tensor [B,3,H,W] and write summary.npy and features.npy")
  .requiredOption("--model-dir <dir>", "compiled graph folder")
  .requiredOption("--input <file>", ".npy float32 [B, 3, H, W] (in [0, 1], or normalised for external-preprocessor graphs)")
  .requiredOption("--out-dir <dir>", "where summary.npy and features.npy go")
  .addOption(new Option("--provider <ep>", "execution provider").choices(["cpu", "cuda"]).default("cpu"))
  .option("--threads <n>", "ORT intra-op threads (0 = one per core)", nonNegativeInt, 0)
  .action(async (o: { modelDir: string; input: string; outDir: string; provider: "cpu" | "cuda"; threads: number }) => {
    const x = readNpy(o.input);
    if (x.dtype !== "<f4" || x.shape.length !== 4) throw new InvalidArgumentError(`${o.input} must be float32 [B, 3, H, W], got ${x.dtype} [${x.shape}]`);
    const g = await loadGraph(o.modelDir, { provider: o.provider, intraOpThreads: o.threads });
    const out = await runGraph(g, x.data as Float32Array, x.shape as [number, number, number, number]);
    mkdirSync(o.outDir, { recursive: true });
    writeNpy(join(o.outDir, "summary.npy"), out.summary, out.summaryDims);
    writeNpy(join(o.outDir, "features.npy"), out.features, out.featureDims);
    process.stderr.write(`run: summary [${out.summaryDims}] features [${out.featureDims}] → ${resolve(o.outDir)}\n`);
  });

program
  .command("make-checkpoint")
  .description("write a random checkpoint in the Hugging Face layout (tiny ones for tests and the demo; full-size shapes for benchmarks)")
  .addOption(new Option("--preset <name>", "shape").choices(Object.keys(PRESETS)).default("tiny"))
  .option("--seed <n>", "random seed", nonNegativeInt)
  .requiredOption("--out <dir>", "output folder")
  .action(async (o: { preset: PresetName; seed?: number; out: string }) => {
    const preset = PRESETS[o.preset];
    await generateCheckpoint(o.out, { ...preset, seed: o.seed ?? preset.seed });
    process.stderr.write(`make-checkpoint: wrote ${o.preset} checkpoint to ${resolve(o.out)} (random weights)\n`);
  });

program.parseAsync(process.argv).catch((err: unknown) => {
  process.stderr.write(`radio-sidecar: error: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
