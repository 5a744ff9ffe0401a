#!/usr/bin/env node
// radio-sidecar: compile checkpoints, run compiled graphs on tensors, make test checkpoints, serve.
import { Command, InvalidArgumentError, Option } from "commander";
import { mkdirSync, readFileSync, rmSync } from "node:fs";
import { join, resolve } from "node:path";
import { adaptorCheckpointName, generateCheckpoint, PRESETS, resolveAdaptorDims, type GenerateOptions, type PresetName } from "./checkpoint/generate.js";
import { FULL_SIGLIP_TEXT, generateSiglip, TINY_SIGLIP } from "./checkpoint/generate-siglip.js";
import { compileCheckpoint } from "./compiler/compile.js";
import { KNOWN_MODELS, resolveModelName, SIGLIP2_G_TEXT_TOWER } from "./checkpoint/models.js";
import { loadGraph, runOutputs, type ExecutionProvider } from "./runtime/session.js";
import { readNpy, writeNpy } from "./runtime/npy.js";
import type { LogLevel } from "./observability/logger.js";
import { PRODUCT } from "./version.js";
import { delimiter } from "node:path";
import { describeBatchDefault } from "./provider-defaults.js";
import { POSTPROCESS_THREADS_DEFAULT_TEXT } from "./postprocess/threads.js";
import { PROVIDER_REQUESTS, PROVIDERS, type ProviderRequest } from "./runtime/providers.js";

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

const commaList = (v: string): string[] => {
  const names = v
    .split(",")
    .map((s) => s.trim())
    .filter((s) => s !== "");
  if (names.length === 0) throw new InvalidArgumentError("give at least one name");
  return names;
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
  .addOption(
    new Option("--precision <p>", "graph precision: fp32 (exact), fp16 (GPU), int8 (CPU: int8 linear layers, approximate, ~1.3× faster)")
      .choices(["fp32", "fp16", "int8"])
      .default("fp32"),
  )
  .option("--window-size <n>", "ViTDet window size in patches (windowed attention)", positiveInt)
  .addOption(
    new Option(
      "--attention <impl>",
      "attention ops: auto = MatMul/Softmax for fp32 (as fast on CPU: see README), com.microsoft.MultiHeadAttention for fp16 (fused kernels on GPU)",
    )
      .choices(["auto", "matmul", "mha"])
      .default("auto"),
  )
  .option("--copy-weights", "write the fp32 weights into the output folder instead of hard-linking the checkpoint", false)
  .option("--cache-dir <dir>", "Hugging Face hub cache (default: $HF_HUB_CACHE or $HF_HOME/hub)")
  .option(
    "--adaptors <names>",
    "adaptor heads to compile in as extra outputs <name>.summary / <name>.features, comma-separated (e.g. siglip2-g,dino_v3_7b,sam3); read from the torch.hub checkpoint",
    commaList,
  )
  .option(
    "--torchhub-checkpoint <path>",
    "the torch.hub checkpoint (*.pth.tar, e.g. c-radio_v4-h_half.pth.tar) with the adaptor heads (default: with --model, downloaded; else the one *.pth.tar in the checkpoint folder)",
  )
  .option(
    "--text",
    "also compile the SigLIP2 text tower (into <out>/text/) that embeds prompts into the siglip2-g adaptor's space; with --model only its text tensors are downloaded",
    false,
  )
  .option("--siglip <dir>", "with --text and --checkpoint: a local SigLIP2 folder (config.json, safetensors + index, tokenizer files)")
  .action(
    async (o: {
      model?: string;
      checkpoint?: string;
      revision?: string;
      out: string;
      precision: "fp32" | "fp16" | "int8";
      windowSize?: number;
      attention: "auto" | "matmul" | "mha";
      copyWeights: boolean;
      cacheDir?: string;
      adaptors?: string[];
      torchhubCheckpoint?: string;
      text: boolean;
      siglip?: string;
    }) => {
      if (o.torchhubCheckpoint && !o.adaptors) throw new InvalidArgumentError("--torchhub-checkpoint is only read for --adaptors");
      const textSpace = SIGLIP2_G_TEXT_TOWER.adaptor;
      if (o.text && !o.adaptors?.includes(textSpace))
        throw new InvalidArgumentError(`--text embeds prompts into the ${textSpace} adaptor's space: add --adaptors ${textSpace}`);
      if (o.siglip && !o.text) throw new InvalidArgumentError("--siglip is only read for --text");
      if (o.text && o.checkpoint && !o.siglip)
        throw new InvalidArgumentError("--text with --checkpoint needs --siglip <dir> (a local SigLIP2 folder); with --model it is downloaded");
      let checkpointDir = o.checkpoint;
      let textSource: { dir: string; repo: string | null; revision: string | null } | null = null;
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
        if (o.adaptors || o.text) {
          const { downloadAdaptorCheckpoint, downloadTextTower } = await import("./checkpoint/hub-text.js");
          // The heads live only in the torch.hub file of the same commit; the text tower in its own repo.
          if (o.adaptors && !o.torchhubCheckpoint)
            o.torchhubCheckpoint = (await downloadAdaptorCheckpoint({ model: o.model, revision: dl.commit, cacheDir: o.cacheDir })).path;
          if (o.text) {
            const t = await downloadTextTower({ model: o.model, cacheDir: o.cacheDir });
            textSource = { dir: t.dir, repo: t.repo, revision: t.commit };
          }
        }
      }
      if (o.siglip) textSource = { dir: o.siglip, repo: null, revision: null };
      // A text tower belongs to the graph beside it: never leave an older one next to a new graph.
      const { TEXT_DIR } = await import("./compiler/text-metadata.js");
      rmSync(join(o.out, TEXT_DIR), { recursive: true, force: true });
      const r = await compileCheckpoint({
        checkpointDir: checkpointDir!,
        outDir: o.out,
        precision: o.precision,
        windowSize: o.windowSize ?? null,
        attention: o.attention === "auto" ? (o.precision === "fp16" ? "mha" : "matmul") : o.attention,
        weightsMode: o.copyWeights ? "copy" : "link",
        adaptors: o.adaptors,
        torchhubCheckpoint: o.torchhubCheckpoint,
        repo,
        revision,
        onStage: (s) => process.stderr.write(`compile: ${s}\n`),
      });
      process.stderr.write(`compile: wrote ${r.outDir} (${r.nodeCount} nodes, ${r.seconds.toFixed(2)} s)\n`);
      if (textSource) {
        const { compileTextTower } = await import("./compiler/compile-text.js");
        const t = await compileTextTower({
          siglipDir: textSource.dir,
          outDir: join(o.out, TEXT_DIR),
          precision: o.precision,
          weightsMode: o.copyWeights ? "copy" : "link",
          space: textSpace,
          repo: textSource.repo,
          revision: textSource.revision,
          onStage: (s) => process.stderr.write(`compile (text): ${s}\n`),
        });
        process.stderr.write(`compile: wrote ${t.outDir} (text tower, ${t.nodeCount} nodes, ${t.seconds.toFixed(2)} s)\n`);
      }
      process.stdout.write(`${JSON.stringify(r.metadata, null, 2)}\n`);
    },
  );

program
  .command("fetch-text")
  .description(
    "download what text features need into the Hugging Face cache: the SigLIP2 text tower's config and tokenizer, and only its text tensors (Range reads of the shards, resumable); prints JSON with the folder (dir) and file paths",
  )
  .option("--model <name>", `model whose text tower to fetch: ${Object.keys(KNOWN_MODELS).join(", ")} (or its repo id)`, "c-radio_v4-h")
  .option("--repo <id>", "text tower repo instead of the model's (a SigLIP checkpoint)")
  .option("--revision <rev>", "text tower revision (branch, tag or commit; default main)")
  .option("--with-adaptor", "also download the model's torch.hub checkpoint (the adaptor heads, ~1.3 GB for H)", false)
  .option("--adaptor-revision <rev>", "revision of the model repo for --with-adaptor (default main)")
  .option("--cache-dir <dir>", "Hugging Face hub cache (default: $HF_HUB_CACHE or $HF_HOME/hub)")
  .option("--offline", "use only the cache, no network (also HF_HUB_OFFLINE=1)")
  .action(
    async (o: { model: string; repo?: string; revision?: string; withAdaptor: boolean; adaptorRevision?: string; cacheDir?: string; offline?: boolean }) => {
      const { downloadTextTower, downloadAdaptorCheckpoint } = await import("./checkpoint/hub-text.js");
      const common = { cacheDir: o.cacheDir, ...(o.offline ? { offline: true } : {}) };
      const text = await downloadTextTower({ ...common, model: o.model, repo: o.repo, revision: o.revision });
      const adaptor = o.withAdaptor ? await downloadAdaptorCheckpoint({ ...common, model: o.model, revision: o.adaptorRevision }) : undefined;
      process.stderr.write(
        `fetch-text: ${text.repo}@${text.commit.slice(0, 7)} text tower in ${text.dir}${adaptor ? `; adaptor checkpoint ${adaptor.path}` : ""}\n`,
      );
      process.stdout.write(`${JSON.stringify({ ...text, ...(adaptor ? { adaptor } : {}) }, null, 2)}\n`);
    },
  );

program
  .command("fetch-adaptor")
  .description(
    "download a model's torch.hub checkpoint (c-radio_v4-*_half.pth.tar: the only file with the adaptor heads) into the Hugging Face cache; prints JSON with its path",
  )
  .option("--model <name>", `${Object.keys(KNOWN_MODELS).join(", ")} or a Hugging Face repo id`, "c-radio_v4-h")
  .option("--file <name>", "the .pth.tar in the repo (default: the model's, from the catalogue)")
  .option("--revision <rev>", "Hugging Face revision (branch, tag or commit; default main)")
  .option("--cache-dir <dir>", "Hugging Face hub cache (default: $HF_HUB_CACHE or $HF_HOME/hub)")
  .option("--offline", "use only the cache, no network (also HF_HUB_OFFLINE=1)")
  .action(async (o: { model: string; file?: string; revision?: string; cacheDir?: string; offline?: boolean }) => {
    const { downloadAdaptorCheckpoint } = await import("./checkpoint/hub-text.js");
    const r = await downloadAdaptorCheckpoint({
      model: o.model,
      file: o.file,
      revision: o.revision,
      cacheDir: o.cacheDir,
      ...(o.offline ? { offline: true } : {}),
    });
    process.stderr.write(`fetch-adaptor: ${r.repo}@${r.commit.slice(0, 7)} ${r.path}\n`);
    process.stdout.write(`${JSON.stringify(r, null, 2)}\n`);
  });

program
  .command("run")
  .description(
    "run a compiled graph on a float32 .npy tensor [B,3,H,W] and write summary.npy and features.npy (and <adaptor>.summary.npy / <adaptor>.features.npy for graphs compiled with --adaptors)",
  )
  .requiredOption("--model-dir <dir>", "compiled graph folder")
  .requiredOption("--input <file>", ".npy float32 [B, 3, H, W] (in [0, 1])")
  .requiredOption("--out-dir <dir>", "where summary.npy, features.npy and the adaptor outputs go")
  .addOption(new Option("--provider <ep>", "execution provider").choices([...PROVIDERS]).default("cpu"))
  .option("--threads <n>", "ORT intra-op threads (0 = one per core)", nonNegativeInt, 0)
  .action(async (o: { modelDir: string; input: string; outDir: string; provider: ExecutionProvider; threads: number }) => {
    const x = readNpy(o.input);
    if (x.dtype !== "<f4" || x.shape.length !== 4) throw new InvalidArgumentError(`${o.input} must be float32 [B, 3, H, W], got ${x.dtype} [${x.shape}]`);
    const g = await loadGraph(o.modelDir, { provider: o.provider, intraOpThreads: o.threads });
    // One pass for every output; each goes to <output name>.npy.
    const out = await runOutputs(g, x.data as Float32Array, x.shape as [number, number, number, number]);
    mkdirSync(o.outDir, { recursive: true });
    for (const [name, t] of Object.entries(out)) writeNpy(join(o.outDir, `${name}.npy`), t.data, t.dims);
    process.stderr.write(
      `run: ${Object.entries(out)
        .map(([n, t]) => `${n} [${t.dims}]`)
        .join(" ")} → ${resolve(o.outDir)}\n`,
    );
  });

program
  .command("compile-text")
  .description(
    "compile the SigLIP2 text tower of a local google/siglip2-* folder (config.json, safetensors + index, tokenizer files) into an ONNX graph folder for embed-text",
  )
  .requiredOption("--siglip <dir>", "local SigLIP2 checkpoint folder")
  .requiredOption("--out <dir>", "output folder for model.onnx + tokenizer files + metadata.json")
  .addOption(
    new Option("--precision <p>", "graph precision: fp32 (exact), fp16 (GPU), int8 (CPU: int8 encoder linears, approximate)")
      .choices(["fp32", "fp16", "int8"])
      .default("fp32"),
  )
  .option("--copy-weights", "write the fp32 weights into the output folder instead of hard-linking the checkpoint", false)
  .option("--space <adaptor>", "the RADIO adaptor whose summary space the text embeddings share", "siglip2-g")
  .option("--repo <id>", "Hugging Face repo id recorded in metadata.json (provenance only)")
  .option("--revision <rev>", "revision recorded in metadata.json (provenance only)")
  .action(
    async (o: { siglip: string; out: string; precision: "fp32" | "fp16" | "int8"; copyWeights: boolean; space: string; repo?: string; revision?: string }) => {
      const { compileTextTower } = await import("./compiler/compile-text.js");
      const r = await compileTextTower({
        siglipDir: o.siglip,
        outDir: o.out,
        precision: o.precision,
        weightsMode: o.copyWeights ? "copy" : "link",
        space: o.space,
        repo: o.repo ?? null,
        revision: o.revision ?? null,
        onStage: (s) => process.stderr.write(`compile-text: ${s}\n`),
      });
      process.stderr.write(`compile-text: wrote ${r.outDir} (${r.nodeCount} nodes, ${r.seconds.toFixed(2)} s)\n`);
      process.stdout.write(`${JSON.stringify(r.metadata, null, 2)}\n`);
    },
  );

program
  .command("embed-text")
  .description(
    "run a compiled text graph on prompts: JSON on stdout ({prompts, canonical, dims, embeddings}), or text_embeds.npy + input_ids as JSON with --out-dir",
  )
  .requiredOption("--graph <dir>", "compiled text graph folder (compile-text)")
  .argument("<prompts...>", "prompts (canonicalised and tokenised as SigLIP2 does)")
  .option("--normalize", "L2-normalise the embeddings (upstream encode_text(normalize=True))", false)
  .option("--out-dir <dir>", "write text_embeds.npy there instead of printing the embeddings")
  .addOption(new Option("--provider <ep>", "execution provider").choices([...PROVIDERS]).default("cpu"))
  .option("--threads <n>", "ORT intra-op threads (0 = one per core)", nonNegativeInt, 0)
  .action(async (prompts: string[], o: { graph: string; normalize: boolean; outDir?: string; provider: ExecutionProvider; threads: number }) => {
    const { loadTextGraph, embedText } = await import("./runtime/text-session.js");
    const g = await loadTextGraph(o.graph, { provider: o.provider, intraOpThreads: o.threads });
    const r = await embedText(g, prompts, { normalize: o.normalize });
    await g.session.release();
    const ids = Array.from({ length: r.dims[0] }, (_, i) =>
      Array.from(r.ids.subarray(i * g.metadata.contextLength, (i + 1) * g.metadata.contextLength), Number),
    );
    if (o.outDir) {
      mkdirSync(o.outDir, { recursive: true });
      writeNpy(join(o.outDir, "text_embeds.npy"), r.embeddings, r.dims);
      process.stdout.write(`${JSON.stringify({ prompts, canonical: r.canonical, dims: r.dims, inputIds: ids })}\n`);
      process.stderr.write(`embed-text: text_embeds [${r.dims}] → ${resolve(o.outDir)}\n`);
      return;
    }
    const embeddings = Array.from({ length: r.dims[0] }, (_, i) => Array.from(r.embeddings.subarray(i * r.dims[1], (i + 1) * r.dims[1])));
    process.stdout.write(`${JSON.stringify({ prompts, canonical: r.canonical, dims: r.dims, inputIds: ids, embeddings })}\n`);
  });

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
  .action(
    async (o: {
      preset: PresetName;
      seed?: number;
      cpeMaxSize?: number;
      finalNorm: boolean;
      withAdaptors: boolean;
      siglip?: string;
      siglipSize: "tiny" | "full";
      out: string;
    }) => {
      if (o.siglipSize !== "tiny" && !o.siglip) throw new InvalidArgumentError("--siglip-size is only read with --siglip <dir>");
      const preset: GenerateOptions = PRESETS[o.preset];
      const opts: GenerateOptions = {
        ...preset,
        seed: o.seed ?? preset.seed,
        cpeMaxSize: o.cpeMaxSize ?? preset.cpeMaxSize,
        finalNorm: o.finalNorm,
        adaptors: preset.adaptors || o.withAdaptors,
      };
      await generateCheckpoint(o.out, opts);
      const adaptors = opts.adaptors ? ` + ${adaptorCheckpointName(opts.version)}` : "";
      process.stderr.write(`make-checkpoint: wrote ${o.preset} checkpoint${adaptors} to ${resolve(o.out)} (random weights)\n`);
      if (o.siglip) {
        const projectionSize = resolveAdaptorDims({ ...opts, adaptors: opts.adaptors || true })!.siglipSummary.out;
        const base = o.siglipSize === "full" ? FULL_SIGLIP_TEXT : TINY_SIGLIP;
        const { vocabSize } = await generateSiglip(o.siglip, { ...base, projectionSize, seed: (opts.seed + 2) >>> 0 });
        process.stderr.write(
          `make-checkpoint: wrote a ${o.siglipSize} SigLIP2 folder (projection ${projectionSize}, vocabulary ${vocabSize}) to ${resolve(o.siglip)}\n`,
        );
      }
    },
  );

program
  .command("providers")
  .description(
    "probe the execution providers (cuda, webgpu, cpu), each in a child process: usable or why not, fp16 support, and the one serve --provider would take with the graph precision it wants; JSON on stdout (exit 1 when an explicit --provider cannot be used)",
  )
  .addOption(
    new Option("--provider <ep>", "what serve would be asked for: auto probes all three; an explicit one only itself")
      .choices([...PROVIDER_REQUESTS])
      .default("auto"),
  )
  .addOption(
    new Option("--precision <p>", "precision of the graphs to be served, if known: int8 runs on cpu only, fp16 needs fp16 kernels").choices([
      "fp32",
      "fp16",
      "int8",
    ]),
  )
  .action(async (o: { provider: ProviderRequest; precision?: "fp32" | "fp16" | "int8" }) => {
    const { chooseProvider, probeProviders, ProviderUnavailableError } = await import("./runtime/providers.js");
    const probes = await probeProviders(o.provider === "auto" ? PROVIDERS : [o.provider]);
    let choice = null;
    let error: string | null = null;
    try {
      choice = chooseProvider(o.provider, probes, o.precision ? [o.precision] : []);
    } catch (err) {
      if (!(err instanceof ProviderUnavailableError)) throw err;
      error = err.message;
    }
    const report = {
      requested: o.provider,
      chosen: choice?.provider ?? null,
      precision: choice?.precision ?? null,
      notTaken: choice?.notTaken ?? [],
      error,
      providers: probes,
    };
    process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
    if (error) process.exitCode = 1;
  });

// --- serve ---------------------------------------------------------------------------------------

const collect = (v: string, prev: string[] | undefined): string[] => [...(prev ?? []), v];
/** Repeatable options may also come from one env var, entries separated like PATH (":" on Unix). */
const envList = (name: string): string[] => (process.env[name] ?? "").split(delimiter).filter((s) => s !== "");
const portNumber = (v: string): number => {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0 || n > 65535) throw new InvalidArgumentError("must be a port number (0-65535)");
  return n;
};
const httpPortArg = (v: string): number | "auto" => (v === "auto" ? "auto" : portNumber(v));

function parseModelArg(v: string): { name?: string; dir: string } {
  const eq = v.indexOf("=");
  // NAME=DIR; a bare DIR is named after its metadata (variant-precision).
  if (eq > 0 && !v.slice(0, eq).includes("/")) return { name: v.slice(0, eq), dir: v.slice(eq + 1) };
  return { dir: v };
}

program
  .command("serve")
  .description("serve compiled graphs over gRPC (radio.v1.Radio + health + reflection); prints one JSON line to stdout when ready")
  .option(
    "--model <[name=]dir>",
    "compiled graph folder, repeatable; the first is the default model; name defaults to <variant>-<precision> [env RADIO_MODEL, ':'-separated]",
    collect,
  )
  .addOption(
    new Option("--socket <path>", "unix socket to listen on (default: a new private temp dir) [env RADIO_SOCKET]").env("RADIO_SOCKET").conflicts("port"),
  )
  .addOption(new Option("--port <n>", "listen on TCP instead of a unix socket (0 = any free port) [env RADIO_PORT]").env("RADIO_PORT").argParser(portNumber))
  .addOption(new Option("--host <addr>", "TCP / HTTP host [env RADIO_HOST]").env("RADIO_HOST").default("127.0.0.1"))
  .addOption(
    new Option("--http-port <n|auto>", "HTTP port for /healthz /readyz /metrics /v1/info (0 = off, auto = any free port) [env RADIO_HTTP_PORT]")
      .env("RADIO_HTTP_PORT")
      .argParser(httpPortArg)
      .default(0),
  )
  .addOption(
    new Option("--workers <n>", "inference workers; fp32 weights are shared between them through the page cache, see --prepack-weights [env RADIO_WORKERS]")
      .env("RADIO_WORKERS")
      .argParser(positiveInt)
      .default(1),
  )
  .addOption(
    new Option("--threads <n>", "ORT intra-op threads per worker (0 = cores / workers) [env RADIO_THREADS]")
      .env("RADIO_THREADS")
      .argParser(nonNegativeInt)
      .default(0),
  )
  .addOption(
    new Option(
      "--prepack-weights <when>",
      "onnxruntime's pre-packed copy of the GEMM weights, per worker: auto = only for int8 graphs (fp32 weights then stay memory-mapped and shared: one copy for all workers, same speed) [env RADIO_PREPACK_WEIGHTS]",
    )
      .choices(["auto", "on", "off"])
      .env("RADIO_PREPACK_WEIGHTS")
      .default("auto"),
  )
  .addOption(
    new Option(
      "--postprocess-threads <n>",
      `threads for heatmaps and NCHW transposes, 0 = main thread (default: ${POSTPROCESS_THREADS_DEFAULT_TEXT}: a 512² heatmap takes a thread ~35–55 ms) [env RADIO_POSTPROCESS_THREADS]`,
    )
      .env("RADIO_POSTPROCESS_THREADS")
      .argParser(nonNegativeInt),
  )
  .addOption(
    new Option("--max-batch <n>", `largest inference batch (default: ${describeBatchDefault("maxBatch")}) [env RADIO_MAX_BATCH]`)
      .env("RADIO_MAX_BATCH")
      .argParser(positiveInt),
  )
  .addOption(
    new Option(
      "--max-batch-tokens <n>",
      `most patch tokens per inference batch, 0 = no limit (default: ${describeBatchDefault("maxBatchTokens", true)}: bigger CPU batches are slower per image, GPU batches are sized by images) [env RADIO_MAX_BATCH_TOKENS]`,
    )
      .env("RADIO_MAX_BATCH_TOKENS")
      .argParser(nonNegativeInt),
  )
  .addOption(
    new Option("--queue-delay-ms <ms>", "longest an image waits for batch-mates when a worker is free [env RADIO_QUEUE_DELAY_MS]")
      .env("RADIO_QUEUE_DELAY_MS")
      .argParser(nonNegativeInt)
      .default(5),
  )
  .addOption(
    new Option(
      "--batch-hold-ms <ms>",
      `while images are still being decoded, longest a partial batch waits for them, 0 = only --queue-delay-ms (default: ${describeBatchDefault("batchHoldMs")}: on a CPU decoding beside inference beats bigger batches) [env RADIO_BATCH_HOLD_MS]`,
    )
      .env("RADIO_BATCH_HOLD_MS")
      .argParser(nonNegativeInt),
  )
  .addOption(
    new Option(
      "--max-queue <n>",
      "images admitted and not yet running, across calls; a call that does not fit gets RESOURCE_EXHAUSTED; also the most images per call [env RADIO_MAX_QUEUE]",
    )
      .env("RADIO_MAX_QUEUE")
      .argParser(positiveInt)
      .default(256),
  )
  .addOption(
    new Option("--decode-parallelism <n>", "image decodes in flight (0 = one per core) [env RADIO_DECODE_PARALLELISM]")
      .env("RADIO_DECODE_PARALLELISM")
      .argParser(nonNegativeInt)
      .default(0),
  )
  .option(
    "--allowed-root <dir>",
    "absolute directory that path inputs may be read from, repeatable (default: none, path inputs refused) [env RADIO_ALLOWED_ROOT, ':'-separated]",
    collect,
  )
  .addOption(
    new Option(
      "--provider <ep>",
      "execution provider: auto = cuda if its provider loads, else webgpu on a GPU's Vulkan adapter, else cpu (the choice and why is logged once; `providers` shows it); an explicit one fails with the reason when it cannot be used, never falling back [env RADIO_PROVIDER]",
    )
      .choices([...PROVIDER_REQUESTS])
      .env("RADIO_PROVIDER")
      .default("auto"),
  )
  .addOption(
    new Option(
      "--token <token>",
      "bearer token every call but health must carry (metadata authorization: Bearer <token>); required with a non-loopback --host; prefer the env var, which ps does not show [env RADIO_TOKEN]",
    ).env("RADIO_TOKEN"),
  )
  .addOption(new Option("--tls-cert <pem>", "TLS certificate chain (PEM) for the TCP listener; needs --tls-key [env RADIO_TLS_CERT]").env("RADIO_TLS_CERT"))
  .addOption(new Option("--tls-key <pem>", "TLS private key (PEM) [env RADIO_TLS_KEY]").env("RADIO_TLS_KEY"))
  .option(
    "--allow-remote-paths",
    "accept path inputs from TCP clients too (still confined to --allowed-root); unix-socket clients always may (no env var: only this flag turns it on)",
    false,
  )
  .addOption(
    new Option(
      "--inference-timeout-s <s>",
      "a batch still running this long after its worker started it fails; a worker still stuck on it as long again is replaced (0 = no limit); for hangs, set well above the slowest batch: see docs/reliability.md [env RADIO_INFERENCE_TIMEOUT_S]",
    )
      .env("RADIO_INFERENCE_TIMEOUT_S")
      .argParser(nonNegativeInt)
      .default(0),
  )
  .addOption(
    new Option("--max-message-mb <n>", "largest request message, MB [env RADIO_MAX_MESSAGE_MB]")
      .env("RADIO_MAX_MESSAGE_MB")
      .argParser(positiveInt)
      .default(256),
  )
  .addOption(
    new Option("--max-image-pixels <n>", "most pixels per image, checked from the header before decoding [env RADIO_MAX_IMAGE_PIXELS]")
      .env("RADIO_MAX_IMAGE_PIXELS")
      .argParser(positiveInt)
      .default(100_000_000),
  )
  .addOption(
    new Option("--shutdown-timeout-s <s>", "on SIGTERM/SIGINT, how long admitted work may take to finish [env RADIO_SHUTDOWN_TIMEOUT_S]")
      .env("RADIO_SHUTDOWN_TIMEOUT_S")
      .argParser(nonNegativeInt)
      .default(30),
  )
  .addOption(
    new Option(
      "--http-socket <path>",
      "also serve the HTTP side (/healthz /readyz /metrics /v1/info) on this unix socket, owner-only (a shared local sidecar's metrics without a TCP port) [env RADIO_HTTP_SOCKET]",
    ).env("RADIO_HTTP_SOCKET"),
  )
  .addOption(
    new Option(
      "--instance-key <key>",
      "a label Info reports as instanceKey: the zoo's shared local sidecar passes the hash of its build, graphs and settings, and clients check it before use",
    ).env("RADIO_INSTANCE_KEY"),
  )
  .addOption(
    new Option(
      "--idle-timeout-s <s>",
      "exit (gracefully, code 0) after this long with no gRPC call open and no image queued; a client holding a health Watch stream open counts as a call (0 = never) [env RADIO_IDLE_TIMEOUT_S]",
    )
      .env("RADIO_IDLE_TIMEOUT_S")
      .argParser(nonNegativeInt)
      .default(0),
  )
  .addOption(
    new Option("--log-level <level>", "pino log level (logs are JSON on stderr) [env RADIO_LOG_LEVEL]")
      .choices(["fatal", "error", "warn", "info", "debug", "trace", "silent"])
      .env("RADIO_LOG_LEVEL")
      .default("info"),
  )
  .action(
    async (o: {
      model?: string[];
      socket?: string;
      port?: number;
      host: string;
      httpPort: number | "auto";
      workers: number;
      threads: number;
      prepackWeights: "auto" | "on" | "off";
      postprocessThreads?: number;
      maxBatch?: number;
      maxBatchTokens?: number;
      queueDelayMs: number;
      batchHoldMs?: number;
      maxQueue: number;
      decodeParallelism: number;
      allowedRoot?: string[];
      provider: ProviderRequest;
      shutdownTimeoutS: number;
      logLevel: LogLevel;
      token?: string;
      tlsCert?: string;
      tlsKey?: string;
      allowRemotePaths: boolean;
      inferenceTimeoutS: number;
      maxMessageMb: number;
      maxImagePixels: number;
      httpSocket?: string;
      instanceKey?: string;
      idleTimeoutS: number;
    }) => {
      const { serve } = await import("./serve.js");
      const { createLogger } = await import("./observability/logger.js");
      const logger = createLogger(o.logLevel);
      const models = (o.model ?? envList("RADIO_MODEL")).map(parseModelArg);
      if (models.length === 0) throw new InvalidArgumentError("give at least one --model [name=]DIR (or RADIO_MODEL)");
      if (Boolean(o.tlsCert) !== Boolean(o.tlsKey)) throw new InvalidArgumentError("--tls-cert and --tls-key go together");
      const tls = o.tlsCert && o.tlsKey ? { cert: readFileSync(o.tlsCert), key: readFileSync(o.tlsKey) } : null;
      const running = await serve(
        {
          models,
          listen: o.port !== undefined ? { host: o.host, port: o.port } : { socket: o.socket ?? null },
          httpPort: o.httpPort === "auto" ? 0 : o.httpPort === 0 ? null : o.httpPort,
          httpHost: o.host,
          workers: o.workers,
          threads: o.threads,
          prepackWeights: o.prepackWeights,
          postprocessThreads: o.postprocessThreads ?? null,
          maxBatch: o.maxBatch ?? null,
          maxBatchTokens: o.maxBatchTokens ?? null,
          queueDelayMs: o.queueDelayMs,
          batchHoldMs: o.batchHoldMs ?? null,
          maxQueue: o.maxQueue,
          decodeParallelism: o.decodeParallelism,
          allowedRoots: o.allowedRoot ?? envList("RADIO_ALLOWED_ROOT"),
          provider: o.provider,
          shutdownTimeoutMs: o.shutdownTimeoutS * 1000,
          warmup: true,
          token: o.token || null,
          tls,
          allowRemotePaths: o.allowRemotePaths,
          inferenceTimeoutMs: o.inferenceTimeoutS * 1000,
          maxRequestBytes: o.maxMessageMb * 1024 * 1024,
          maxImagePixels: o.maxImagePixels,
          httpSocket: o.httpSocket ?? null,
          instanceKey: o.instanceKey ?? null,
          idleTimeoutMs: o.idleTimeoutS * 1000,
        },
        logger,
      );
      const stop = (code: number) => {
        const hard = setTimeout(() => process.exit(code), o.shutdownTimeoutS * 1000 + 5000);
        hard.unref();
        void running.shutdown().then(() => process.exit(code));
      };
      process.once("SIGTERM", () => stop(0));
      process.once("SIGINT", () => stop(0));
      void running.fatal.then(() => stop(1));
      void running.idle.then(() => stop(0));
      process.stdout.write(
        `${JSON.stringify({ event: "ready", socket: running.socket, grpcPort: running.grpcPort, httpPort: running.httpPort, httpSocket: running.httpSocket, address: running.address, pid: process.pid, models: running.info().models.map((m) => m.name) })}\n`,
      );
    },
  );

program.parseAsync(process.argv).catch((err: unknown) => {
  process.stderr.write(`radio-sidecar: error: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
