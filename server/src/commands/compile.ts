// `compile`: a checkpoint (downloaded by name, or a local folder) → an ONNX graph folder, with
// adaptor heads and the SigLIP2 text tower on request. `compile-text`: a text tower alone.
import { existsSync, rmSync, statSync } from "node:fs";
import { join } from "node:path";
import { type Command, InvalidArgumentError, Option } from "commander";
import { KNOWN_CHECKPOINTS, resolveCheckpoint, SIGLIP2_G_TEXT_TOWER } from "../checkpoint/catalogue.js";
import { compileCheckpoint } from "../compiler/compile.js";
import { CACHE_DIR_HELP, commaList, type Precision, positiveInt } from "./args.js";

interface CompileOptions {
  checkpoint?: string;
  checkpointDir?: string;
  revision?: string;
  out: string;
  precision: Precision;
  windowSize?: number;
  attention: "auto" | "matmul" | "mha";
  copyWeights: boolean;
  cacheDir?: string;
  adaptors?: string[];
  torchhubCheckpoint?: string;
  text: boolean;
  heatmap: boolean;
  siglip?: string;
}

/** Where the text tower comes from: a download (with its provenance) or a local folder. */
interface TextSource {
  dir: string;
  repo: string | null;
  revision: string | null;
}

function checkFlags(options: CompileOptions): void {
  if (options.torchhubCheckpoint && !options.adaptors) throw new InvalidArgumentError("--torchhub-checkpoint is only read for --adaptors");
  const textSpace = SIGLIP2_G_TEXT_TOWER.adaptor;
  if (options.text && !options.adaptors?.includes(textSpace))
    throw new InvalidArgumentError(`--text embeds prompts into the ${textSpace} adaptor's space: add --adaptors ${textSpace}`);
  if (options.siglip && !options.text) throw new InvalidArgumentError("--siglip is only read for --text");
  if (options.text && options.checkpointDir && !options.siglip)
    throw new InvalidArgumentError("--text with --checkpoint-dir needs --siglip <dir> (a local SigLIP2 folder); with --checkpoint it is downloaded");
  if (!options.checkpoint && !options.checkpointDir) throw new InvalidArgumentError("give --checkpoint <name> or --checkpoint-dir <dir>");
  if (options.checkpoint && existsSync(join(options.checkpoint, "config.json")))
    throw new InvalidArgumentError(`--checkpoint names a checkpoint to download; ${options.checkpoint} is a local folder: use --checkpoint-dir`);
  if (existsSync(options.out) && !statSync(options.out).isDirectory())
    throw new InvalidArgumentError(`--out ${options.out} is a file: give a folder (it is created if missing)`);
}

/** Downloads what --checkpoint names (backbone, and the adaptor and text files asked for) into the hub cache. */
async function download(options: CompileOptions & { checkpoint: string }) {
  const { downloadCheckpoint } = await import("../hub/checkpoint.js");
  const known = resolveCheckpoint(options.checkpoint);
  const backbone = await downloadCheckpoint({ repo: known.repo, revision: options.revision ?? known.revision, cacheDir: options.cacheDir });
  let torchhubCheckpoint = options.torchhubCheckpoint;
  let text: TextSource | null = null;
  if (options.adaptors || options.text) {
    const { downloadAdaptorCheckpoint } = await import("../hub/adaptor-checkpoint.js");
    const { downloadTextTower } = await import("../hub/text-tower.js");
    // The heads live only in the torch.hub file of the same commit; the text tower in its own repo.
    if (options.adaptors && !torchhubCheckpoint)
      torchhubCheckpoint = (await downloadAdaptorCheckpoint({ checkpoint: options.checkpoint, revision: backbone.commit, cacheDir: options.cacheDir })).path;
    if (options.text) {
      const tower = await downloadTextTower({ checkpoint: options.checkpoint, cacheDir: options.cacheDir });
      text = { dir: tower.dir, repo: tower.repo, revision: tower.commit };
    }
  }
  return { dir: backbone.snapshotDir, repo: known.repo, revision: backbone.commit, torchhubCheckpoint, text };
}

async function compile(options: CompileOptions): Promise<void> {
  checkFlags(options);
  const source = options.checkpoint
    ? await download({ ...options, checkpoint: options.checkpoint })
    : { dir: options.checkpointDir!, repo: null, revision: null, torchhubCheckpoint: options.torchhubCheckpoint, text: null };
  const text: TextSource | null = options.siglip ? { dir: options.siglip, repo: null, revision: null } : source.text;
  // A text tower belongs to the graph beside it: never leave an older one next to a new graph.
  const { TEXT_DIR } = await import("../compiler/text-metadata.js");
  rmSync(join(options.out, TEXT_DIR), { recursive: true, force: true });
  const weightsMode = options.copyWeights ? "copy" : "link";
  // The text tower first: the graph's metadata.json, written last, is what says the folder is done
  // (the zoo takes a folder with a current one as compiled), so a text tower that fails leaves none.
  if (text) {
    const { compileTextTower } = await import("../compiler/compile-text.js");
    const tower = await compileTextTower({
      siglipDir: text.dir,
      outDir: join(options.out, TEXT_DIR),
      precision: options.precision,
      weightsMode,
      space: SIGLIP2_G_TEXT_TOWER.adaptor,
      repo: text.repo,
      revision: text.revision,
      onStage: (stage) => process.stderr.write(`compile (text): ${stage}\n`),
    });
    process.stderr.write(`compile: wrote ${tower.outDir} (text tower, ${tower.nodeCount} nodes, ${tower.seconds.toFixed(2)} s)\n`);
  }
  const graph = await compileCheckpoint({
    checkpointDir: source.dir,
    outDir: options.out,
    precision: options.precision,
    windowSize: options.windowSize ?? null,
    attention: options.attention === "auto" ? (options.precision === "fp16" ? "mha" : "matmul") : options.attention,
    weightsMode,
    adaptors: options.adaptors,
    heatmap: options.heatmap,
    torchhubCheckpoint: source.torchhubCheckpoint,
    repo: source.repo,
    revision: source.revision,
    onStage: (stage) => process.stderr.write(`compile: ${stage}\n`),
  });
  process.stderr.write(`compile: wrote ${graph.outDir} (${graph.nodeCount} nodes, ${graph.seconds.toFixed(2)} s)\n`);
  process.stdout.write(`${JSON.stringify(graph.metadata, null, 2)}\n`);
}

const precisionOption = (help: string) => new Option("--precision <p>", help).choices(["fp32", "fp16", "int8"]).default("fp32");

export function addCompileCommands(program: Command): void {
  program
    .command("compile")
    .description("compile a checkpoint (downloaded by name into the Hugging Face cache, or from a local folder) into an ONNX graph folder")
    .addOption(
      new Option("--checkpoint <name>", `checkpoint to download: ${Object.keys(KNOWN_CHECKPOINTS).join(", ")} or a Hugging Face repo id`).conflicts(
        "checkpointDir",
      ),
    )
    .addOption(new Option("--checkpoint-dir <dir>", "local checkpoint folder (config.json + safetensors)"))
    .option("--revision <rev>", "Hugging Face revision (branch, tag or commit) to download")
    .requiredOption("--out <dir>", "output folder for model.onnx + metadata.json")
    .addOption(precisionOption("graph precision: fp32 (exact), fp16 (GPU), int8 (CPU: int8 linear layers, approximate, faster: docs/benchmarks.md)"))
    .option("--window-size <n>", "ViTDet window size in patches (windowed attention)", positiveInt)
    .addOption(
      new Option(
        "--attention <impl>",
        "attention ops: auto = MatMul/Softmax for fp32 (as fast on CPU: see docs/how-it-works.md), com.microsoft.MultiHeadAttention for fp16 (fused kernels on GPU)",
      )
        .choices(["auto", "matmul", "mha"])
        .default("auto"),
    )
    .option("--copy-weights", "write the fp32 weights into the output folder instead of hard-linking the checkpoint", false)
    .option("--cache-dir <dir>", CACHE_DIR_HELP)
    .option(
      "--adaptors <names>",
      "adaptor heads to compile in as extra outputs <name>.summary / <name>.features, comma-separated (e.g. siglip2-g,dino_v3_7b,sam3); read from the torch.hub checkpoint",
      commaList,
    )
    .option(
      "--torchhub-checkpoint <path>",
      "the torch.hub checkpoint (*.pth.tar, e.g. c-radio_v4-h_half.pth.tar) with the adaptor heads (default: with --checkpoint, downloaded; else the one *.pth.tar in the checkpoint folder)",
    )
    .option(
      "--text",
      "also compile the SigLIP2 text tower (into <out>/text/) that embeds prompts into the siglip2-g adaptor's space; with --checkpoint only its text tensors are downloaded",
      false,
    )
    .option("--siglip <dir>", "with --text and --checkpoint-dir: a local SigLIP2 folder (config.json, safetensors + index, tokenizer files)")
    .option(
      "--heatmap",
      "also compute the heatmap PCA's heavy half in the graph (clip, high-norm tokens, Lanczos basis: heatmap.* outputs), so a GPU does it and heatmaps keep up with it; every run of the graph pays for it",
      false,
    )
    .action(compile);

  program
    .command("compile-text")
    .description(
      "compile the SigLIP2 text tower of a local google/siglip2-* folder (config.json, safetensors + index, tokenizer files) into an ONNX graph folder for embed-text",
    )
    .requiredOption("--siglip <dir>", "local SigLIP2 checkpoint folder")
    .requiredOption("--out <dir>", "output folder for model.onnx + tokenizer files + metadata.json")
    .addOption(precisionOption("graph precision: fp32 (exact), fp16 (GPU), int8 (CPU: int8 encoder linears, approximate)"))
    .option("--copy-weights", "write the fp32 weights into the output folder instead of hard-linking the checkpoint", false)
    .option("--space <adaptor>", "the RADIO adaptor whose summary space the text embeddings share", "siglip2-g")
    .option("--repo <id>", "Hugging Face repo id recorded in metadata.json (provenance only)")
    .option("--revision <rev>", "revision recorded in metadata.json (provenance only)")
    .action(async (options: { siglip: string; out: string; precision: Precision; copyWeights: boolean; space: string; repo?: string; revision?: string }) => {
      const { compileTextTower } = await import("../compiler/compile-text.js");
      const tower = await compileTextTower({
        siglipDir: options.siglip,
        outDir: options.out,
        precision: options.precision,
        weightsMode: options.copyWeights ? "copy" : "link",
        space: options.space,
        repo: options.repo ?? null,
        revision: options.revision ?? null,
        onStage: (stage) => process.stderr.write(`compile-text: ${stage}\n`),
      });
      process.stderr.write(`compile-text: wrote ${tower.outDir} (${tower.nodeCount} nodes, ${tower.seconds.toFixed(2)} s)\n`);
      process.stdout.write(`${JSON.stringify(tower.metadata, null, 2)}\n`);
    });
}
