// `run` and `embed-text`: one compiled graph on one input (a tensor, or prompts), no server; what
// the parity tests and benchmarks compare against upstream.
import { mkdirSync } from "node:fs";
import { join, resolve } from "node:path";
import { type Command, InvalidArgumentError, Option } from "commander";
import { readNpy, writeNpy } from "../runtime/npy.js";
import { PROVIDERS } from "../runtime/providers.js";
import { type ExecutionProvider, loadGraph, type PixelDims, runOutputs } from "../runtime/session.js";
import { nonNegativeInt } from "./args.js";

const providerOption = () => new Option("--provider <ep>", "execution provider").choices([...PROVIDERS]).default("cpu");
const threadsHelp = "ORT intra-op threads (0 = one per core)";

export function addRunCommands(program: Command): void {
  program
    .command("run")
    .description(
      "run a compiled graph on a uint8 .npy tensor [B,H,W,3] (RGB) and write summary.npy and features.npy (and <adaptor>.summary.npy / <adaptor>.features.npy for graphs compiled with --adaptors)",
    )
    .requiredOption("--graph <dir>", "compiled graph folder")
    .requiredOption("--input <file>", ".npy uint8 [B, H, W, 3]: RGB images, as decoders give them")
    .requiredOption("--out-dir <dir>", "where summary.npy, features.npy and the adaptor outputs go")
    .addOption(providerOption())
    .option("--threads <n>", threadsHelp, nonNegativeInt, 0)
    .action(async (options: { graph: string; input: string; outDir: string; provider: ExecutionProvider; threads: number }) => {
      const pixels = readNpy(options.input);
      if (pixels.dtype !== "|u1" || pixels.shape.length !== 4 || pixels.shape[3] !== 3)
        throw new InvalidArgumentError(`${options.input} must be uint8 [B, H, W, 3] (RGB), got ${pixels.dtype} [${pixels.shape}]`);
      const graph = await loadGraph(options.graph, { provider: options.provider, intraOpThreads: options.threads });
      // One pass for every output; each goes to <output name>.npy.
      const outputs = await runOutputs(graph, pixels.data as Uint8Array, pixels.shape as PixelDims);
      mkdirSync(options.outDir, { recursive: true });
      for (const [name, tensor] of Object.entries(outputs)) writeNpy(join(options.outDir, `${name}.npy`), tensor.data, tensor.dims);
      const written = Object.entries(outputs).map(([name, tensor]) => `${name} [${tensor.dims}]`);
      process.stderr.write(`run: ${written.join(" ")} → ${resolve(options.outDir)}\n`);
    });

  program
    .command("embed-text")
    .description(
      "run a compiled text graph on prompts: JSON on stdout ({prompts, canonical, dims, embeddings}), or text_embeds.npy + input_ids as JSON with --out-dir",
    )
    .requiredOption("--graph <dir>", "compiled text graph folder (compile-text)")
    .argument("<prompts...>", "prompts (canonicalised and tokenised as SigLIP2 does)")
    .option("--normalize", "L2-normalise the embeddings (upstream encode_text(normalize=True))", false)
    .option("--out-dir <dir>", "write text_embeds.npy there instead of printing the embeddings")
    .addOption(providerOption())
    .option("--threads <n>", threadsHelp, nonNegativeInt, 0)
    .action(async (prompts: string[], options: { graph: string; normalize: boolean; outDir?: string; provider: ExecutionProvider; threads: number }) => {
      const { loadTextGraph, embedText } = await import("../runtime/text-session.js");
      const graph = await loadTextGraph(options.graph, { provider: options.provider, intraOpThreads: options.threads });
      const text = await embedText(graph, prompts, { normalize: options.normalize });
      await graph.session.release();
      const { contextLength } = graph.metadata;
      const inputIds = Array.from({ length: text.dims[0] }, (_, i) => Array.from(text.ids.subarray(i * contextLength, (i + 1) * contextLength), Number));
      if (options.outDir) {
        mkdirSync(options.outDir, { recursive: true });
        writeNpy(join(options.outDir, "text_embeds.npy"), text.embeddings, text.dims);
        process.stdout.write(`${JSON.stringify({ prompts, canonical: text.canonical, dims: text.dims, inputIds })}\n`);
        process.stderr.write(`embed-text: text_embeds [${text.dims}] → ${resolve(options.outDir)}\n`);
        return;
      }
      const width = text.dims[1];
      const embeddings = Array.from({ length: text.dims[0] }, (_, i) => Array.from(text.embeddings.subarray(i * width, (i + 1) * width)));
      process.stdout.write(`${JSON.stringify({ prompts, canonical: text.canonical, dims: text.dims, inputIds, embeddings })}\n`);
    });
}
