// A checkpoint folder (config.json + safetensors) turned into a typed CheckpointSpec (the network it describes). Everything that the
// tensors state is read from them; config.json supplies only what shapes cannot (head count, how the
// prefix tokens split into cls tokens and registers, resolutions). Any disagreement is an error that
// names the key and what was expected: a silently misread checkpoint would give wrong embeddings.
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { resolveArchitecture } from "./architectures.js";
import { KNOWN_CHECKPOINTS } from "./catalogue.js";
import { CheckpointError, readRadioConfig, type RadioConfig } from "./config.js";
import { SafetensorsCheckpoint, type TensorInfo } from "./safetensors.js";

const PREFIX = "radio_model.";
const MODEL = `${PREFIX}model.`;

export interface BlockKeys {
  norm1: { weight: string; bias: string };
  qkv: { weight: string; bias: string };
  proj: { weight: string; bias: string };
  norm2: { weight: string; bias: string };
  fc1: { weight: string; bias: string };
  fc2: { weight: string; bias: string };
}

/** A backbone block's modules, by BlockKeys field: their names under `blocks.<i>.`, in timm's order; each has a weight and a bias. */
const BLOCK_MODULES: Readonly<Record<keyof BlockKeys, string>> = {
  norm1: "norm1",
  qkv: "attn.qkv",
  proj: "attn.proj",
  norm2: "norm2",
  fc1: "mlp.fc1",
  fc2: "mlp.fc2",
};

/** A backbone block's parameter names under `blocks.<i>.`, in timm's order (each module's weight, then its bias). */
export const BLOCK_PARAMS: readonly string[] = Object.values(BLOCK_MODULES).flatMap((m) => [`${m}.weight`, `${m}.bias`]);

/** The tensor names of the backbone block under `prefix` (e.g. `radio_model.model.blocks.3.`). */
export function blockKeys(prefix: string): BlockKeys {
  const pair = (module: string) => ({ weight: `${prefix}${module}.weight`, bias: `${prefix}${module}.bias` });
  const m = BLOCK_MODULES;
  return { norm1: pair(m.norm1), qkv: pair(m.qkv), proj: pair(m.proj), norm2: pair(m.norm2), fc1: pair(m.fc1), fc2: pair(m.fc2) };
}

export interface CheckpointSpec {
  version: string;
  architecture: string;
  patchSize: number;
  width: number;
  depth: number;
  numHeads: number;
  mlpWidth: number;
  numClsTokens: number;
  numRegisters: number;
  /** cls tokens + registers, prepended after the position embedding. */
  numPrefixTokens: number;
  summaryIdxs: number[];
  summaryDim: number;
  /** Side of the stored square CPE position grid, in patches. */
  posGrid: number;
  maxResolution: number;
  preferredResolution: [number, number];
  normMean: [number, number, number];
  normStd: [number, number, number];
  layerNormEps: number;
  finalNorm: boolean;
  featureNormalizer: boolean;
  /** The window size config.json asks for (only changes the input multiple upstream). */
  configWindowSize: number | null;
  ignoredTensors: string[];
  keys: {
    summaryIdxs: string;
    normMean: string;
    normStd: string;
    embedder: string;
    posEmbed: string;
    clsToken: string;
    blocks: BlockKeys[];
    finalNorm: { weight: string; bias: string } | null;
    featureNormalizer: { mean: string; tx: string } | null;
  };
}

export interface LoadedCheckpoint {
  dir: string;
  config: RadioConfig;
  spec: CheckpointSpec;
  weights: SafetensorsCheckpoint;
}

/** The safetensors files of a checkpoint folder: a single file or the shards an index lists. */
function safetensorsFiles(dir: string): string[] {
  const index = join(dir, "model.safetensors.index.json");
  if (existsSync(index)) {
    const json = JSON.parse(readFileSync(index, "utf8")) as { weight_map?: Record<string, string> };
    const shards = [...new Set(Object.values(json.weight_map ?? {}))].sort();
    if (shards.length === 0) throw new CheckpointError(`${index} lists no shards in weight_map`);
    return shards.map((s) => join(dir, s));
  }
  const single = join(dir, "model.safetensors");
  if (!existsSync(single)) throw new CheckpointError(`${dir} has neither model.safetensors nor model.safetensors.index.json`);
  return [single];
}

export function loadCheckpoint(dir: string): LoadedCheckpoint {
  const configPath = join(dir, "config.json");
  if (!existsSync(configPath)) throw new CheckpointError(`${dir} has no config.json`);
  const config = readRadioConfig(configPath);
  const weights = new SafetensorsCheckpoint(safetensorsFiles(dir));
  try {
    return { dir, config, spec: buildSpec(config, weights), weights };
  } catch (err) {
    weights.close();
    throw err;
  }
}

function shapeStr(s: readonly number[]): string {
  return `[${s.join(", ")}]`;
}

function buildSpec(config: RadioConfig, weights: SafetensorsCheckpoint): CheckpointSpec {
  const tensors = weights.tensors;
  const get = (name: string, dtype = "F32"): TensorInfo => {
    const t = tensors.get(name);
    if (!t) throw new CheckpointError(`checkpoint is missing tensor ${name}`);
    if (t.dtype !== dtype) throw new CheckpointError(`tensor ${name} is ${t.dtype}, expected ${dtype}`);
    return t;
  };
  const expectShape = (name: string, expected: readonly number[], why: string, dtype = "F32"): TensorInfo => {
    const t = get(name, dtype);
    if (t.shape.length !== expected.length || t.shape.some((d, i) => d !== expected[i])) {
      throw new CheckpointError(`tensor ${name} has shape ${shapeStr(t.shape)}, expected ${shapeStr(expected)} (${why})`);
    }
    return t;
  };

  const args = config.args;
  const version = config.version ?? "c-radio_v4-h";
  const vdef = KNOWN_CHECKPOINTS[version]?.configDefaults;
  const patchSize = config.patch_size ?? vdef?.patchSize;
  const maxResolution = config.max_resolution ?? vdef?.maxResolution;
  const preferred = (config.preferred_resolution ?? vdef?.preferred) as [number, number] | undefined;
  if (!patchSize || !maxResolution || !preferred) {
    throw new CheckpointError(
      `config.json leaves patch_size/max_resolution/preferred_resolution null and version ${JSON.stringify(version)} has no known defaults`,
    );
  }
  let arch: ReturnType<typeof resolveArchitecture>;
  try {
    arch = resolveArchitecture(args.model, (args.model_kwargs ?? {}) as Record<string, unknown>);
  } catch (err) {
    throw new CheckpointError(`config.json: ${(err as Error).message}`);
  }
  if (arch.patchSize !== patchSize) {
    throw new CheckpointError(`config.json patch_size ${patchSize} disagrees with ${args.model} (patch ${arch.patchSize})`);
  }

  // Widths and depth come from the tensors; the named architecture (with model_kwargs) must agree.
  const embedderKey = `${MODEL}patch_generator.embedder.weight`;
  const embedder = get(embedderKey);
  if (embedder.shape.length !== 2)
    throw new CheckpointError(`tensor ${embedderKey} has shape ${shapeStr(embedder.shape)}, expected [width, ${3 * patchSize * patchSize}]`);
  const width = embedder.shape[0]!;
  expectShape(embedderKey, [width, 3 * patchSize * patchSize], `3·${patchSize}·${patchSize} flattened patch pixels`);
  if (width !== arch.width) {
    throw new CheckpointError(
      `tensor ${embedderKey} gives width ${width}, but ${args.model} with model_kwargs ${JSON.stringify(args.model_kwargs ?? {})} expects embed_dim ${arch.width}`,
    );
  }
  if (tensors.has(`${MODEL}patch_generator.embedder.bias`)) {
    throw new CheckpointError(`tensor ${MODEL}patch_generator.embedder.bias is present: the patch embedding is expected to be bias-free`);
  }
  let depth = 0;
  while (tensors.has(`${MODEL}blocks.${depth}.norm1.weight`)) depth++;
  if (depth === 0) throw new CheckpointError(`checkpoint is missing tensor ${MODEL}blocks.0.norm1.weight (no transformer blocks found)`);
  if (depth !== arch.depth) {
    throw new CheckpointError(
      `checkpoint has ${depth} blocks (${MODEL}blocks.0 … ${depth - 1}), but ${args.model} with model_kwargs ${JSON.stringify(args.model_kwargs ?? {})} expects depth ${arch.depth}`,
    );
  }
  const numHeads = arch.numHeads;
  if (width % numHeads !== 0) throw new CheckpointError(`width ${width} is not divisible by num_heads ${numHeads}`);
  const fc1 = get(`${MODEL}blocks.0.mlp.fc1.weight`);
  const mlpWidth = fc1.shape[0]!;
  if (mlpWidth !== arch.mlpWidth) {
    throw new CheckpointError(
      `tensor ${MODEL}blocks.0.mlp.fc1.weight has shape ${shapeStr(fc1.shape)}, expected [${arch.mlpWidth}, ${width}] for ${args.model}`,
    );
  }

  const blocks: BlockKeys[] = [];
  for (let i = 0; i < depth; i++) {
    const keys = blockKeys(`${MODEL}blocks.${i}.`);
    expectShape(keys.norm1.weight, [width], "LayerNorm over width");
    expectShape(keys.norm1.bias, [width], "LayerNorm over width");
    expectShape(keys.qkv.weight, [3 * width, width], "fused q, k, v projection");
    expectShape(keys.qkv.bias, [3 * width], "qkv bias");
    expectShape(keys.proj.weight, [width, width], "attention output projection");
    expectShape(keys.proj.bias, [width], "projection bias");
    expectShape(keys.norm2.weight, [width], "LayerNorm over width");
    expectShape(keys.norm2.bias, [width], "LayerNorm over width");
    expectShape(keys.fc1.weight, [mlpWidth, width], "MLP in");
    expectShape(keys.fc1.bias, [mlpWidth], "MLP in bias");
    expectShape(keys.fc2.weight, [width, mlpWidth], "MLP out");
    expectShape(keys.fc2.bias, [width], "MLP out bias");
    blocks.push(keys);
  }

  // Prefix tokens: cls tokens (one per unique teacher) + registers, per the config; the tensor must agree.
  const clsKey = `${MODEL}patch_generator.cls_token.token`;
  const uniqueTeachers = new Set(args.teachers.map((t) => t.name)).size;
  const numClsTokens = args.cls_token_per_teacher ? uniqueTeachers : 1;
  let numRegisters = 0;
  if (args.cpe_num_registers) numRegisters = args.cpe_num_registers;
  else if (args.register_multiple) numRegisters = args.register_multiple - (numClsTokens % args.register_multiple);
  const numPrefixTokens = numClsTokens + numRegisters;
  expectShape(clsKey, [numPrefixTokens, width], `${numClsTokens} cls tokens + ${numRegisters} registers from config args`);

  // CPE grid: square, (cpe_max_size / patch)².
  const posKey = `${MODEL}patch_generator.pos_embed`;
  const pos = get(posKey);
  const posRows = pos.shape[1] ?? 0;
  const posGrid = Math.round(Math.sqrt(posRows));
  if (pos.shape.length !== 3 || pos.shape[0] !== 1 || posGrid * posGrid !== posRows || pos.shape[2] !== width) {
    throw new CheckpointError(`tensor ${posKey} has shape ${shapeStr(pos.shape)}, expected [1, G·G, ${width}] for a square G×G grid`);
  }
  if (args.cpe_max_size) {
    const expectedGrid = Math.round(args.cpe_max_size / patchSize);
    if (expectedGrid !== posGrid) {
      throw new CheckpointError(
        `tensor ${posKey} has a ${posGrid}×${posGrid} grid, expected ${expectedGrid}×${expectedGrid} from args.cpe_max_size=${args.cpe_max_size}`,
      );
    }
  } else {
    throw new CheckpointError("config.json args.cpe_max_size is null: only CPE (flexible-resolution) RADIO models are supported");
  }

  const summaryKey = `${PREFIX}summary_idxs`;
  const summaryInfo = get(summaryKey, "I64");
  if (summaryInfo.shape.length !== 1) throw new CheckpointError(`tensor ${summaryKey} has shape ${shapeStr(summaryInfo.shape)}, expected [n]`);
  const summaryIdxs = Array.from(weights.readInt64(summaryKey), (v) => Number(v));
  for (const i of summaryIdxs) {
    if (i < 0 || i >= numClsTokens) throw new CheckpointError(`tensor ${summaryKey} holds index ${i}, outside the ${numClsTokens} cls tokens`);
  }
  const teacherSummary = args.teachers.flatMap((t, i) => ((t.use_summary ?? true) ? [i] : []));
  if (teacherSummary.join(",") !== summaryIdxs.join(",")) {
    throw new CheckpointError(`tensor ${summaryKey} = [${summaryIdxs}] disagrees with the teachers' use_summary in config.json ([${teacherSummary}])`);
  }

  const meanKey = `${PREFIX}input_conditioner.norm_mean`;
  const stdKey = `${PREFIX}input_conditioner.norm_std`;
  expectShape(meanKey, [3, 1, 1], "per-channel mean");
  expectShape(stdKey, [3, 1, 1], "per-channel std");
  const mean = Array.from(weights.readFloat32(meanKey)) as [number, number, number];
  const std = Array.from(weights.readFloat32(stdKey)) as [number, number, number];
  if (std.some((s) => !(s > 0))) throw new CheckpointError(`tensor ${stdKey} = [${std}] must be positive`);

  const normW = `${MODEL}norm.weight`;
  const finalNorm = tensors.has(normW) ? { weight: normW, bias: `${MODEL}norm.bias` } : null;
  if (finalNorm) {
    expectShape(finalNorm.weight, [width], "final LayerNorm");
    expectShape(finalNorm.bias, [width], "final LayerNorm");
  }
  const fnMean = `${PREFIX}feature_normalizer.mean`;
  const featureNormalizer = tensors.has(fnMean) ? { mean: fnMean, tx: `${PREFIX}feature_normalizer.tx` } : null;
  if (featureNormalizer) {
    expectShape(featureNormalizer.mean, [width], "feature normalizer mean");
    expectShape(featureNormalizer.tx, [width, width], "feature normalizer transform");
  }

  // Nothing under the backbone may go unused: an unknown tensor means an architecture we don't build.
  const used = new Set<string>([embedderKey, clsKey, posKey, summaryKey, meanKey, stdKey]);
  for (const b of blocks)
    for (const p of Object.values(b)) {
      used.add(p.weight);
      used.add(p.bias);
    }
  if (finalNorm) {
    used.add(finalNorm.weight);
    used.add(finalNorm.bias);
  }
  if (featureNormalizer) {
    used.add(featureNormalizer.mean);
    used.add(featureNormalizer.tx);
  }
  const ignoredTensors: string[] = [];
  for (const name of tensors.keys()) {
    if (used.has(name)) continue;
    // Adaptor heads and the intermediate-layer normalizer are not part of the backbone's outputs.
    if (name.startsWith(`${PREFIX}adaptors.`) || name.startsWith(`${PREFIX}inter_feature_normalizer.`)) {
      ignoredTensors.push(name);
      continue;
    }
    throw new CheckpointError(`checkpoint has tensor ${name}, which a ${args.model} RADIO backbone does not have (unsupported architecture variant?)`);
  }

  return {
    version,
    architecture: args.model,
    patchSize,
    width,
    depth,
    numHeads,
    mlpWidth,
    numClsTokens,
    numRegisters,
    numPrefixTokens,
    summaryIdxs,
    summaryDim: width * summaryIdxs.length,
    posGrid,
    maxResolution,
    preferredResolution: [preferred[0], preferred[1]],
    normMean: mean,
    normStd: std,
    layerNormEps: 1e-6,
    finalNorm: finalNorm !== null,
    featureNormalizer: featureNormalizer !== null,
    configWindowSize: config.vitdet_window_size ?? null,
    ignoredTensors,
    keys: {
      summaryIdxs: summaryKey,
      normMean: meanKey,
      normStd: stdKey,
      embedder: embedderKey,
      posEmbed: posKey,
      clsToken: clsKey,
      blocks,
      finalNorm,
      featureNormalizer,
    },
  };
}
