// Batching defaults that depend on where inference runs: their one home. serve.ts applies them once
// the provider is known (auto decides at startup); cli.ts quotes them in --help. No heavy imports:
// the CLI loads this for every command.
import type { ExecutionProvider } from "./runtime/session.js";

export interface BatchDefaults {
  /** Largest inference batch. */
  maxBatch: number;
  /** Most patch tokens per batch; 0 = no limit (batches sized by images only). */
  maxBatchTokens: number;
  /** Longest a partial batch waits for images of the same calls still being decoded. */
  batchHoldMs: number;
  /** Prompts per text-tower run (64 tokens each, no padding to trim: cost is linear in the batch). */
  textBatch: number;
}

export const BATCH_DEFAULTS = {
  // On a CPU, batches beyond ~1024 patch tokens are slower per image than running images one by one
  // (one image at 512², five at 224²); holding for decodes measured no gain (tiny graph, calls of
  // 4–16: batches of 4 instead of 2 but no faster, since decoding then stops overlapping inference
  // on the same cores).
  cpu: { maxBatch: 8, maxBatchTokens: 1024, batchHoldMs: 0, textBatch: 16 },
  // On a GPU (cuda, webgpu) bigger batches are what fill it: sized by images, and a call's images
  // should run as one batch, not as the few that were decoded first.
  gpu: { maxBatch: 32, maxBatchTokens: 0, batchHoldMs: 50, textBatch: 128 },
} as const satisfies Record<"cpu" | "gpu", BatchDefaults>;

export function batchDefaults(provider: ExecutionProvider): BatchDefaults {
  return provider === "cpu" ? BATCH_DEFAULTS.cpu : BATCH_DEFAULTS.gpu;
}

/** "8 on cpu, 32 on cuda/webgpu": for --help texts. */
export function describeBatchDefault(key: keyof BatchDefaults, noneAt0 = false): string {
  const v = (n: number): string => (noneAt0 && n === 0 ? "no limit" : String(n));
  return `${v(BATCH_DEFAULTS.cpu[key])} on cpu, ${v(BATCH_DEFAULTS.gpu[key])} on cuda/webgpu`;
}

/** Text limits that do not depend on the provider. */
export const TEXT_DEFAULTS = {
  /** Most prompts one EmbedText call may carry (clients send more as several calls). */
  maxPrompts: 4096,
  /** Per graph: normalised embeddings kept for prompts asked again (~11k prompts at 1536 dims). */
  cacheBytes: 64 * 1024 * 1024,
} as const;
