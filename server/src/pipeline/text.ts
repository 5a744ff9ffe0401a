// Prompts through a graph's text tower: canonicalise + tokenise (preprocess/text.ts), look each
// canonical prompt up in a per-graph cache, run the misses in batches on the inference pool, and
// L2-normalise. Every prompt ends in exactly one outcome. Transport-agnostic, like pipeline.ts.
import { l2NormalizeRows } from "../runtime/normalize.js";
import type { ServedGraph } from "./graphs.js";
import { RequestError, type FailureKind } from "./errors.js";
import type { DropReason } from "./types.js";

/** What the pipeline needs from the tokenizer (preprocess/text.ts). */
export interface PromptTokenizer {
  readonly contextLength: number;
  /** Canonical form of prompt `index`, or throws a PromptError whose message names it ("prompt <index>: …"). */
  canonicalize(prompt: string, index: number): string;
  /** Token ids [n, contextLength] for canonical prompts. */
  encodeCanonical(canonical: readonly string[]): BigInt64Array;
}

/** A text request stopped because its caller went away (cancelled, or past its deadline): nobody is left to answer. */
export class PromptsDropped extends Error {
  override readonly name = "PromptsDropped";
  constructor(
    readonly reason: Exclude<DropReason, "shutdown">,
    message: string,
  ) {
    super(message);
  }
}

/** What the pipeline needs from the runtime: token ids through a graph's text tower. */
export interface TextBackend {
  inferText(graph: string, ids: BigInt64Array, dims: [number, number]): Promise<{ embeds: Float32Array; dims: number[]; runMs: number }>;
}

export type TextOutcome =
  | { index: number; canonical: string; embedding: Float32Array; error?: undefined }
  | { index: number; canonical: string; embedding?: undefined; error: { kind: FailureKind; message: string } };

/** A request's outcomes, and what comparing them with images needs: the space and SigLIP's logit scale and bias. */
export interface TextReply {
  outcomes: TextOutcome[];
  space: string;
  logitScale: number;
  logitBias: number;
}

export interface TextMetrics {
  promptsEmbedded(graph: string, cached: boolean, n: number): void;
  textBatchRan(graph: string, size: number, seconds: number): void;
}

/**
 * Canonical prompt → normalised embedding, least recently used first out, bounded by bytes: zero-shot
 * over the same classes, or the App re-running a search, costs the text tower nothing the second time.
 */
class EmbeddingCache {
  private readonly entries = new Map<string, Float32Array>();
  private bytes = 0;

  constructor(private readonly maxBytes: number) {}

  get(key: string): Float32Array | undefined {
    const hit = this.entries.get(key);
    if (hit) {
      this.entries.delete(key);
      this.entries.set(key, hit);
    }
    return hit;
  }

  set(key: string, value: Float32Array): void {
    if (value.byteLength > this.maxBytes) return;
    const old = this.entries.get(key);
    if (old) {
      this.bytes -= old.byteLength;
      this.entries.delete(key);
    }
    this.entries.set(key, value);
    this.bytes += value.byteLength;
    for (const [k, v] of this.entries) {
      if (this.bytes <= this.maxBytes) break;
      this.entries.delete(k);
      this.bytes -= v.byteLength;
    }
  }

  get size(): number {
    return this.entries.size;
  }
}

export interface TextEmbedderOptions {
  graph: ServedGraph;
  tokenizer: PromptTokenizer;
  backend: TextBackend;
  /** Prompts per text-tower run. */
  maxBatch: number;
  cacheBytes: number;
  metrics?: TextMetrics;
}

/** One served graph's text side. */
export class TextEmbedder {
  private readonly cache: EmbeddingCache;

  constructor(private readonly options: TextEmbedderOptions) {
    this.cache = new EmbeddingCache(options.cacheBytes);
  }

  /**
   * Stops before its next text-tower run once `signal` aborts (its reason a DropReason): rejects with a
   * RequestError (shutting_down) for "shutdown", else with a PromptsDropped (the caller is gone).
   */
  async embed(prompts: readonly unknown[], signal?: AbortSignal): Promise<TextOutcome[]> {
    const { graph, tokenizer } = this.options;
    const out: TextOutcome[] = new Array(prompts.length);
    // Canonical prompt → indices still waiting for it (a prompt asked twice runs once).
    const misses = new Map<string, number[]>();
    let hits = 0;
    prompts.forEach((prompt, index) => {
      let canonical: string;
      try {
        if (typeof prompt !== "string") throw new TypeError(`prompt ${index}: must be a string, got ${prompt === null ? "null" : typeof prompt}`);
        canonical = tokenizer.canonicalize(prompt, index);
      } catch (err) {
        // The message already names the prompt (PromptError: "prompt <index>: …").
        out[index] = { index, canonical: "", error: { kind: "invalid_prompt", message: (err as Error).message } };
        return;
      }
      const cached = this.cache.get(canonical);
      if (cached) {
        hits++;
        out[index] = { index, canonical, embedding: cached };
      } else {
        const waiting = misses.get(canonical);
        if (waiting) waiting.push(index);
        else misses.set(canonical, [index]);
      }
    });
    if (hits) this.options.metrics?.promptsEmbedded(graph.name, true, hits);

    const unique = [...misses.keys()];
    const contextLength = tokenizer.contextLength;
    for (let start = 0; start < unique.length; start += this.options.maxBatch) {
      if (signal?.aborted) {
        const left = `${unique.length - start} of ${unique.length} prompts were not embedded`;
        const reason = signal.reason as DropReason;
        if (reason === "shutdown") throw new RequestError("shutting_down", `the server is shutting down: ${left}; send them again`);
        throw new PromptsDropped(reason, `the request was ${reason === "deadline" ? "past its deadline" : "cancelled"}: ${left}`);
      }
      const chunk = unique.slice(start, start + this.options.maxBatch);
      try {
        const ids = tokenizer.encodeCanonical(chunk);
        const r = await this.options.backend.inferText(graph.name, ids, [chunk.length, contextLength]);
        this.options.metrics?.textBatchRan(graph.name, chunk.length, r.runMs / 1000);
        const D = r.dims[1]!;
        chunk.forEach((canonical, i) => {
          const embedding = l2NormalizeRows(r.embeds.subarray(i * D, (i + 1) * D), D);
          this.cache.set(canonical, embedding);
          for (const index of misses.get(canonical)!) out[index] = { index, canonical, embedding };
        });
        this.options.metrics?.promptsEmbedded(
          graph.name,
          false,
          chunk.reduce((n, c) => n + misses.get(c)!.length, 0),
        );
      } catch (err) {
        for (const canonical of chunk) {
          for (const index of misses.get(canonical)!) {
            out[index] = { index, canonical, error: { kind: "internal", message: `prompt ${index}: text encoding failed: ${(err as Error).message}` } };
          }
        }
      }
    }
    return out;
  }
}
