// A compiled text-tower folder loaded for inference: its tokenizer and an onnxruntime-node session.
// embedText turns prompts into SigLIP2 text embeddings (optionally L2-normalised, as upstream's
// encode_text(normalize=True) does).
import * as ort from "onnxruntime-node";
import { join } from "node:path";
import { MODEL_FILE } from "../compiler/metadata.js";
import { readTextMetadata, type TextGraphMetadata } from "../compiler/text-metadata.js";
import { PromptTokenizer } from "../preprocess/text.js";
import type { ExecutionProvider, SessionOptions } from "./session.js";

export interface LoadedTextGraph {
  session: ort.InferenceSession;
  metadata: TextGraphMetadata;
  tokenizer: PromptTokenizer;
  provider: ExecutionProvider;
}

export async function loadTextGraph(dir: string, o: Pick<SessionOptions, "provider" | "intraOpThreads"> = {}): Promise<LoadedTextGraph> {
  const metadata = readTextMetadata(dir);
  const provider = o.provider ?? "cpu";
  if (provider !== "cpu" && metadata.precision === "int8") {
    throw new Error(`${dir} is an int8 text graph, made for the CPU provider; compile an fp16 one for ${provider}`);
  }
  const tokenizer = PromptTokenizer.fromDir(dir, { contextLength: metadata.contextLength });
  if (tokenizer.padId !== metadata.padId || tokenizer.eosId !== metadata.eosId) {
    throw new Error(
      `${dir}: the tokenizer files give pad/eos ids ${tokenizer.padId}/${tokenizer.eosId}, metadata.json says ${metadata.padId}/${metadata.eosId}`,
    );
  }
  const session = await ort.InferenceSession.create(join(dir, MODEL_FILE), {
    executionProviders: provider === "cpu" ? ["cpu"] : [provider, "cpu"],
    intraOpNumThreads: o.intraOpThreads ?? 0,
    interOpNumThreads: 1,
    executionMode: "sequential",
    graphOptimizationLevel: "all",
    enableCpuMemArena: true,
    // The embedding table and weights stay memory-mapped, one copy for every worker (see session.ts prepacks()).
    extra: { session: { disable_prepacking: "1" } },
  });
  return { session, metadata, tokenizer, provider };
}

export interface TextEmbeddings {
  /** Row-major [n, embedDim] float32. */
  embeddings: Float32Array;
  dims: [number, number];
  /** The token ids the tower saw, [n, contextLength]. */
  ids: BigInt64Array;
  canonical: string[];
}

/** Divides each row by max(‖row‖₂, 1e-12), as torch.nn.functional.normalize does. */
export function l2NormalizeRows(x: Float32Array, cols: number): Float32Array {
  const out = new Float32Array(x.length);
  for (let r = 0; r < x.length / cols; r++) {
    let ss = 0;
    for (let c = 0; c < cols; c++) ss += x[r * cols + c]! ** 2;
    const n = Math.max(Math.sqrt(ss), 1e-12);
    for (let c = 0; c < cols; c++) out[r * cols + c] = x[r * cols + c]! / n;
  }
  return out;
}

/** Unnormalised embeddings [n, embedDim] for token ids [n, contextLength] (the inference worker's path: the pipeline tokenises). */
export async function runTextTower(g: LoadedTextGraph, ids: BigInt64Array, dims: [number, number]): Promise<{ embeds: Float32Array; dims: number[] }> {
  if (ids.length !== dims[0] * dims[1]) throw new Error(`token ids hold ${ids.length} values, expected ${dims[0]}×${dims[1]}`);
  if (dims[1] !== g.metadata.contextLength) throw new Error(`token ids are ${dims[1]} wide; the text tower takes ${g.metadata.contextLength}`);
  const out = await g.session.run({ [g.metadata.input]: new ort.Tensor("int64", ids, dims) });
  const t = out[g.metadata.output]!;
  return { embeds: t.data as Float32Array, dims: [...t.dims] };
}

/** Prompts → text embeddings. Bad prompts throw a PromptError naming the first one. */
export async function embedText(g: LoadedTextGraph, prompts: readonly unknown[], o: { normalize?: boolean } = {}): Promise<TextEmbeddings> {
  const { ids, dims, canonical } = g.tokenizer.encode(prompts);
  const D = g.metadata.embedDim;
  if (dims[0] === 0) return { embeddings: new Float32Array(0), dims: [0, D], ids, canonical };
  const out = await g.session.run({ [g.metadata.input]: new ort.Tensor("int64", ids, dims) });
  const raw = out[g.metadata.output]!.data as Float32Array;
  return { embeddings: o.normalize ? l2NormalizeRows(raw, D) : raw, dims: [dims[0], D], ids, canonical };
}
