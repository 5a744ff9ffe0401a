// A SigLIP / SigLIP2 checkpoint folder (google/siglip2-*) seen as its text tower: config.json's
// text_config (with the class defaults a saved config leaves out), the shards that hold
// `text_model.*` and the logit scale/bias (found through the index, never by guessing), and every
// text tensor's shape checked against the config before a graph is built from it.
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { z } from "zod";
import { CheckpointError } from "./config.js";
import { SafetensorsCheckpoint, type TensorInfo } from "./safetensors.js";

const TEXT = "text_model.";

/** SiglipTextConfig; the defaults are transformers' class defaults, which config.json omits. */
const TextConfigSchema = z.looseObject({
  hidden_size: z.number().int().positive(),
  intermediate_size: z.number().int().positive(),
  num_hidden_layers: z.number().int().positive(),
  num_attention_heads: z.number().int().positive(),
  vocab_size: z.number().int().positive(),
  projection_size: z.number().int().positive().optional(),
  max_position_embeddings: z.number().int().positive().default(64),
  hidden_act: z.string().default("gelu_pytorch_tanh"),
  layer_norm_eps: z.number().positive().default(1e-6),
});

const SiglipConfigSchema = z.looseObject({
  model_type: z.literal("siglip"),
  text_config: TextConfigSchema,
});

export type SiglipConfig = z.infer<typeof SiglipConfigSchema>;

export interface LinearKeys {
  weight: string;
  bias: string;
}

export interface TextLayerKeys {
  norm1: LinearKeys;
  q: LinearKeys;
  k: LinearKeys;
  v: LinearKeys;
  out: LinearKeys;
  norm2: LinearKeys;
  fc1: LinearKeys;
  fc2: LinearKeys;
}

export interface TextTowerSpec {
  width: number;
  mlpWidth: number;
  depth: number;
  numHeads: number;
  vocabSize: number;
  projectionSize: number;
  contextLength: number;
  layerNormEps: number;
  /** Only the tanh approximation is built (every SigLIP2 text tower uses it). */
  hiddenAct: "gelu_pytorch_tanh";
  keys: {
    tokenEmbedding: string;
    positionEmbedding: string;
    layers: TextLayerKeys[];
    finalNorm: LinearKeys;
    head: LinearKeys;
    logitScale: string;
    logitBias: string;
  };
}

export interface LoadedSiglip {
  dir: string;
  config: SiglipConfig;
  spec: TextTowerSpec;
  /** Only the shards holding the text tower and the logit parameters. */
  weights: SafetensorsCheckpoint;
  logitScale: number;
  logitBias: number;
}

function parseSiglipConfig(json: unknown, source: string): SiglipConfig {
  const r = SiglipConfigSchema.safeParse(json);
  if (!r.success) {
    const issues = r.error.issues.map((i) => `  ${i.path.join(".") || "(root)"}: ${i.message}`).join("\n");
    throw new CheckpointError(`${source} is not a SigLIP config.json:\n${issues}`);
  }
  return r.data;
}

/** The tensors of SiglipModel the text tower uses: the text transformer and the logit scale/bias. */
export function isTextTowerTensor(key: string): boolean {
  return key.startsWith(TEXT) || key === "logit_scale" || key === "logit_bias";
}

/**
 * The text tower's tensors alone (text_model.*, logit_scale, logit_bias), as hub/subset.ts downloads
 * them from the full repo's shards; the compiler reads a folder holding it like a full checkpoint.
 */
export const TEXT_SUBSET_FILE = "text_model.safetensors";

/** The safetensors files holding the text tower: the index's shards for text_model.* and logit_*, or model.safetensors. */
function textShards(dir: string): string[] {
  const subset = join(dir, TEXT_SUBSET_FILE);
  if (existsSync(subset)) return [subset];
  const index = join(dir, "model.safetensors.index.json");
  if (existsSync(index)) {
    let json: { weight_map?: Record<string, string> };
    try {
      json = JSON.parse(readFileSync(index, "utf8"));
    } catch (err) {
      throw new CheckpointError(`cannot read ${index}: ${(err as Error).message}`);
    }
    const shards = new Set<string>();
    for (const [key, file] of Object.entries(json.weight_map ?? {})) if (isTextTowerTensor(key)) shards.add(file);
    if (shards.size === 0) throw new CheckpointError(`${index} lists no text_model.* tensors`);
    return [...shards].sort().map((s) => join(dir, s));
  }
  const single = join(dir, "model.safetensors");
  if (!existsSync(single)) throw new CheckpointError(`${dir} has none of ${TEXT_SUBSET_FILE}, model.safetensors, model.safetensors.index.json`);
  return [single];
}

export function loadSiglipText(dir: string): LoadedSiglip {
  const configPath = join(dir, "config.json");
  let json: unknown;
  try {
    json = JSON.parse(readFileSync(configPath, "utf8"));
  } catch (err) {
    throw new CheckpointError(`cannot read ${configPath}: ${(err as Error).message}`);
  }
  const config = parseSiglipConfig(json, configPath);
  const weights = new SafetensorsCheckpoint(textShards(dir));
  try {
    const spec = buildTextSpec(config, weights);
    const scalar = (key: string) => weights.readFloat32(key)[0]!;
    return { dir, config, spec, weights, logitScale: scalar(spec.keys.logitScale), logitBias: scalar(spec.keys.logitBias) };
  } catch (err) {
    weights.close();
    throw err;
  }
}

const shapeStr = (s: readonly number[]) => `[${s.join(", ")}]`;

function buildTextSpec(config: SiglipConfig, weights: SafetensorsCheckpoint): TextTowerSpec {
  const t = config.text_config;
  if (t.hidden_act !== "gelu_pytorch_tanh") throw new CheckpointError(`text_config.hidden_act ${t.hidden_act} is not supported (only gelu_pytorch_tanh)`);
  if (t.hidden_size % t.num_attention_heads !== 0) {
    throw new CheckpointError(`text_config.hidden_size ${t.hidden_size} is not a multiple of num_attention_heads ${t.num_attention_heads}`);
  }
  const C = t.hidden_size;
  const expect = (key: string, shape: readonly number[], why: string): string => {
    const info: TensorInfo | undefined = weights.tensors.get(key);
    if (!info) throw new CheckpointError(`checkpoint is missing tensor ${key}`);
    if (info.dtype !== "F32") throw new CheckpointError(`tensor ${key} is ${info.dtype}, expected F32`);
    if (info.shape.length !== shape.length || info.shape.some((d, i) => d !== shape[i])) {
      throw new CheckpointError(`tensor ${key} has shape ${shapeStr(info.shape)}, expected ${shapeStr(shape)} (${why})`);
    }
    return key;
  };
  const linear = (prefix: string, out: number, inp: number, what: string): LinearKeys => ({
    weight: expect(`${prefix}.weight`, [out, inp], `${what}: [out, in]`),
    bias: expect(`${prefix}.bias`, [out], `${what}: [out]`),
  });
  const norm = (prefix: string): LinearKeys => ({
    weight: expect(`${prefix}.weight`, [C], "hidden_size"),
    bias: expect(`${prefix}.bias`, [C], "hidden_size"),
  });

  const head = `${TEXT}head.weight`;
  const headInfo = weights.tensors.get(head);
  // projection_size is absent from older SigLIP configs: the head is then square (hidden_size).
  const projectionSize = t.projection_size ?? headInfo?.shape[0] ?? C;
  const layers: TextLayerKeys[] = [];
  for (let i = 0; i < t.num_hidden_layers; i++) {
    const p = `${TEXT}encoder.layers.${i}`;
    layers.push({
      norm1: norm(`${p}.layer_norm1`),
      q: linear(`${p}.self_attn.q_proj`, C, C, "hidden_size × hidden_size"),
      k: linear(`${p}.self_attn.k_proj`, C, C, "hidden_size × hidden_size"),
      v: linear(`${p}.self_attn.v_proj`, C, C, "hidden_size × hidden_size"),
      out: linear(`${p}.self_attn.out_proj`, C, C, "hidden_size × hidden_size"),
      norm2: norm(`${p}.layer_norm2`),
      fc1: linear(`${p}.mlp.fc1`, t.intermediate_size, C, "intermediate_size × hidden_size"),
      fc2: linear(`${p}.mlp.fc2`, C, t.intermediate_size, "hidden_size × intermediate_size"),
    });
  }
  const extra = `${TEXT}encoder.layers.${t.num_hidden_layers}.layer_norm1.weight`;
  if (weights.tensors.has(extra)) throw new CheckpointError(`checkpoint has tensor ${extra} but text_config.num_hidden_layers is ${t.num_hidden_layers}`);

  return {
    width: C,
    mlpWidth: t.intermediate_size,
    depth: t.num_hidden_layers,
    numHeads: t.num_attention_heads,
    vocabSize: t.vocab_size,
    projectionSize,
    contextLength: t.max_position_embeddings,
    layerNormEps: t.layer_norm_eps,
    hiddenAct: "gelu_pytorch_tanh",
    keys: {
      tokenEmbedding: expect(`${TEXT}embeddings.token_embedding.weight`, [t.vocab_size, C], "vocab_size × hidden_size"),
      positionEmbedding: expect(`${TEXT}embeddings.position_embedding.weight`, [t.max_position_embeddings, C], "max_position_embeddings × hidden_size"),
      layers,
      finalNorm: norm(`${TEXT}final_layer_norm`),
      head: linear(`${TEXT}head`, projectionSize, C, "projection_size × hidden_size"),
      logitScale: expect("logit_scale", [1], "a scalar parameter"),
      logitBias: expect("logit_bias", [1], "a scalar parameter"),
    },
  };
}
