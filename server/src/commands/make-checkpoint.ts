// `make-checkpoint`: random checkpoints in the exact Hugging Face layouts (tiny ones for tests and
// the demo, full-size shapes for benchmarks), since no real weights can be downloaded in CI.
import { resolve } from "node:path";
import { type Command, InvalidArgumentError, Option } from "commander";
import { adaptorCheckpointName, type GenerateOptions, generateCheckpoint, PRESETS, type PresetName, resolveAdaptorDims } from "../synthetic/generate.js";
import { FULL_SIGLIP_TEXT, generateSiglip, TINY_SIGLIP } from "../synthetic/generate-siglip.js";
import { nonNegativeInt, positiveInt } from "./args.js";

interface MakeCheckpointOptions {
  preset: PresetName;
  seed?: number;
  cpeMaxSize?: number;
  finalNorm: boolean;
  withAdaptors: boolean;
  siglip?: string;
  siglipSize: "tiny" | "full";
  out: string;
}

async function makeCheckpoint(options: MakeCheckpointOptions): Promise<void> {
  if (options.siglipSize !== "tiny" && !options.siglip) throw new InvalidArgumentError("--siglip-size is only read with --siglip <dir>");
  const preset: GenerateOptions = PRESETS[options.preset];
  const generate: GenerateOptions = {
    ...preset,
    seed: options.seed ?? preset.seed,
    cpeMaxSize: options.cpeMaxSize ?? preset.cpeMaxSize,
    finalNorm: options.finalNorm,
    adaptors: preset.adaptors || options.withAdaptors,
  };
  await generateCheckpoint(options.out, generate);
  const adaptors = generate.adaptors ? ` + ${adaptorCheckpointName(generate.version)}` : "";
  process.stderr.write(`make-checkpoint: wrote ${options.preset} checkpoint${adaptors} to ${resolve(options.out)} (random weights)\n`);
  if (options.siglip) {
    const projectionSize = resolveAdaptorDims({ ...generate, adaptors: generate.adaptors || true })!.siglipSummary.out;
    const base = options.siglipSize === "full" ? FULL_SIGLIP_TEXT : TINY_SIGLIP;
    const { vocabSize } = await generateSiglip(options.siglip, { ...base, projectionSize, seed: (generate.seed + 2) >>> 0 });
    process.stderr.write(
      `make-checkpoint: wrote a ${options.siglipSize} SigLIP2 folder (projection ${projectionSize}, vocabulary ${vocabSize}) to ${resolve(options.siglip)}\n`,
    );
  }
}

export function addMakeCheckpointCommand(program: Command): void {
  program
    .command("make-checkpoint")
    .description("write a random checkpoint in the Hugging Face layout (tiny ones for tests and the demo; full-size shapes for benchmarks)")
    .addOption(new Option("--preset <name>", "shape").choices(Object.keys(PRESETS)).default("tiny"))
    .option("--seed <n>", "random seed", nonNegativeInt)
    .option("--cpe-max-size <px>", "position-grid size in pixels (grid side = this / 16; default 2048)", positiveInt)
    .option("--final-norm", "add a final LayerNorm (model.norm.*; real v4 checkpoints have none)", false)
    .option(
      "--with-adaptors",
      "also write the torch.hub checkpoint (e.g. c-radio_v4-h_half.pth.tar) with the siglip2-g, dino_v3_7b and sam3 adaptor heads; the backbone is then rounded to float16 in both files (the *-text presets do this already)",
      false,
    )
    .option(
      "--siglip <dir>",
      "also write a tiny SigLIP2 folder (google/siglip2-giant-opt-patch16-384's layout) whose text embeddings have the siglip2-g summary head's size",
    )
    .addOption(
      new Option(
        "--siglip-size <size>",
        "with --siglip: the text tower's size; full = the real one (1152 wide, 27 layers, 256000-row embedding, ~2.8 GB fp32; the tokenizer stays small), for benchmarks",
      )
        .choices(["tiny", "full"])
        .default("tiny"),
    )
    .requiredOption("--out <dir>", "output folder")
    .action(makeCheckpoint);
}
