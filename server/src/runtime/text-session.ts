// A compiled text-tower folder loaded for inference: an onnxruntime-node session (what an inference
// worker needs: the pipeline tokenises), and with its tokenizer for embedText, which turns prompts into
// SigLIP2 text embeddings (optionally L2-normalised, as upstream's encode_text(normalize=True) does).
import * as ort from "onnxruntime-node";
import { join } from "node:path";
import { MODEL_FILE } from "../compiler/metadata.js";
import { readTextMetadata, type TextGraphMetadata } from "../compiler/text-metadata.js";
import { PromptTokenizer } from "../preprocess/text.js";
import { l2NormalizeRows } from "./normalize.js";
import type { ExecutionProvider, SessionOptions } from "./session.js";

export interface LoadedTextTower {
  session: ort.InferenceSession;
  metadata: TextGraphMetadata;
  provider: ExecutionProvider;
}

export interface LoadedTextGraph extends LoadedTextTower {
  tokenizer: PromptTokenizer;
}

/** The text tower's session alone (token ids in, embeddings out). */
export async function loadTextTower(dir: string, options: Pick<SessionOptions, "provider" | "intraOpThreads"> = {}): Promise<LoadedTextTower> {
  const metadata = readTextMetadata(dir);
  const provider = options.provider ?? "cpu";
  if (provider !== "cpu" && metadata.precision === "int8") {
    throw new Error(`${dir} is an int8 text graph, made for the CPU provider; compile an fp16 one for ${provider}`);
  }
  const session = await ort.InferenceSession.create(join(dir, MODEL_FILE), {
    executionProviders: provider === "cpu" ? ["cpu"] : [provider, "cpu"],
    intraOpNumThreads: options.intraOpThreads ?? 0,
    interOpNumThreads: 1,
    executionMode: "sequential",
    graphOptimizationLevel: "all",
    enableCpuMemArena: true,
    // The embedding table and weights stay memory-mapped, one copy for every worker (see session.ts prepacks()).
    extra: { session: { disable_prepacking: "1" } },
  });
  return { session, metadata, provider };
}

/** The session and the tokenizer: prompts in (embedText). */
export async function loadTextGraph(dir: string, options: Pick<SessionOptions, "provider" | "intraOpThreads"> = {}): Promise<LoadedTextGraph> {
  const tower = await loadTextTower(dir, options);
  return { ...tower, tokenizer: PromptTokenizer.forTextGraph(dir, tower.metadata) };
}

export interface TextEmbeddings {
  /** Row-major [n, embedDim] float32. */
  embeddings: Float32Array;
  dims: [number, number];
  /** The token ids the tower saw, [n, contextLength]. */
  ids: BigInt64Array;
  canonical: string[];
}

/** Unnormalised embeddings [n, embedDim] for token ids [n, contextLength] (the inference worker's path: the pipeline tokenises). */
export async function runTextTower(g: LoadedTextTower, ids: BigInt64Array, dims: [number, number]): Promise<{ embeds: Float32Array; dims: number[] }> {
  if (ids.length !== dims[0] * dims[1]) throw new Error(`token ids hold ${ids.length} values, expected ${dims[0]}×${dims[1]}`);
  if (dims[1] !== g.metadata.contextLength) throw new Error(`token ids are ${dims[1]} wide; the text tower takes ${g.metadata.contextLength}`);
  const out = await g.session.run({ [g.metadata.input]: new ort.Tensor("int64", ids, dims) });
  const t = out[g.metadata.output]!;
  return { embeds: t.data as Float32Array, dims: [...t.dims] };
}

/** Prompts → text embeddings. Bad prompts throw a PromptError naming the first one. */
export async function embedText(g: LoadedTextGraph, prompts: readonly unknown[], options: { normalize?: boolean } = {}): Promise<TextEmbeddings> {
  const { ids, dims, canonical } = g.tokenizer.encode(prompts);
  const D = g.metadata.embedDim;
  if (dims[0] === 0) return { embeddings: new Float32Array(0), dims: [0, D], ids, canonical };
  const raw = (await runTextTower(g, ids, dims)).embeds;
  return { embeddings: options.normalize ? l2NormalizeRows(raw, D) : raw, dims: [dims[0], D], ids, canonical };
}
