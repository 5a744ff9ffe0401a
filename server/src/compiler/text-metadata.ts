// metadata.json beside a compiled text-tower graph: what a runtime needs to tokenise prompts and
// use the embeddings (context length, special ids, SigLIP's logit scale/bias) without opening the
// ONNX file or the checkpoint.
import { z } from "zod";
import { readMetadataFile } from "./metadata.js";

export const TEXT_FORMAT = "radio-text-onnx/1";

/** The text tower's folder when it ships inside an image graph's folder. */
export const TEXT_DIR = "text";

export const TextGraphMetadataSchema = z.object({
  format: z.literal(TEXT_FORMAT),
  /** The adaptor whose summary space the embeddings share (e.g. "siglip2-g"). */
  space: z.string(),
  source: z.object({ repo: z.string().nullable(), revision: z.string().nullable(), dir: z.string() }),
  /** Graph input `input_ids` int64 [batch, contextLength]; output `text_embeds` float32 [batch, embedDim]. */
  input: z.string(),
  output: z.string(),
  contextLength: z.number().int(),
  embedDim: z.number().int(),
  width: z.number().int(),
  depth: z.number().int(),
  numHeads: z.number().int(),
  vocabSize: z.number().int(),
  padId: z.number().int(),
  eosId: z.number().int(),
  /** SigLIP's sigmoid-loss parameters: logits = cos · exp(logitScale) + logitBias. */
  logitScale: z.number(),
  logitBias: z.number(),
  /** Prompts are canonicalised (big_vision canonicalize_text) before tokenising. */
  canonicalize: z.boolean(),
  tokenizerFiles: z.array(z.string()),
  precision: z.enum(["fp32", "fp16", "int8"]),
  opset: z.number().int(),
  weights: z.object({ mode: z.enum(["link", "copy"]), files: z.array(z.string()) }),
  sha256: z.record(z.string(), z.string()),
  compiler: z.object({ name: z.string(), version: z.string() }),
});

export type TextGraphMetadata = z.infer<typeof TextGraphMetadataSchema>;

export function readTextMetadata(dir: string): TextGraphMetadata {
  return readMetadataFile(dir, TextGraphMetadataSchema, "text graph", "compile-text");
}
