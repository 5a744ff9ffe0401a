// Writes random RADIO checkpoints in exactly the Hugging Face layout (same key names, same config.json
// fields, same token structure: 3 cls tokens + 7 registers, summary from cls 0 and 1). Tiny ones drive
// the tests and the demo; full-size ones (H- or SO400M-shaped) drive benchmarks. The weights are random:
// outputs mean nothing, but every tensor is non-trivial so a wrong wiring shows up in parity tests.
import { KNOWN_CHECKPOINTS } from "../checkpoint/catalogue.js";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { ARCHITECTURES } from "../checkpoint/architectures.js";
import { SafetensorsFile, writeSafetensors, type TensorToWrite } from "../checkpoint/safetensors.js";
import { BLOCK_PARAMS, blockKeys } from "../checkpoint/spec.js";
import { orderedDict, PyFloat, PyObject, roundToFloat16, TensorRef, toFloat16Bytes, torchGlobals, writeTorchSave, type PyValue } from "./torch-save.js";

export interface GenerateOptions {
  /** Named architecture written into args.model. */
  architecture: string;
  version: string;
  /** Overrides written into args.model_kwargs (the real checkpoints have none). */
  modelKwargs: { embed_dim?: number; depth?: number; num_heads?: number };
  cpeMaxSize: number;
  seed: number;
  /** Adds a final norm (model.norm.*), which v4 checkpoints don't have; for tests of that path. */
  finalNorm?: boolean;
  /**
   * Also writes the torch.hub checkpoint (adaptorCheckpointName(version), e.g. c-radio_v4-h_half.pth.tar)
   * with the backbone and the siglip2-g / dino_v3_7b / sam3 adaptor heads, all float16, as the real repos
   * have it. The backbone in model.safetensors then holds the same fp16-rounded values (as float32), so
   * the two files agree; that is why this is a separate preset and not a flag on `tiny`, whose values
   * the parity tests pin. `true` picks head sizes from the width (defaultAdaptorDims).
   */
  adaptors?: AdaptorDims | boolean;
}

/** A v2 ("MLP2") head: fc1 (in → hidden), `blocks` residual blocks, final (hidden → out). */
export interface Mlp2Dims {
  hidden: number;
  out: number;
  blocks: number;
}

/** Sizes of the adaptor heads; their input is always the backbone width. */
export interface AdaptorDims {
  /** siglip2-g summary head (v2); `out` is the SigLIP2 embedding size (the text tower's projection_size) */
  siglipSummary: Mlp2Dims;
  /** siglip2-g dense head: two ViT blocks (16 heads, MLP 4×width), then an MLP2 without residual blocks */
  siglipDense: { hidden: number; out: number };
  dinoSummary: Mlp2Dims;
  dinoDense: Mlp2Dims;
  sam3Summary: Mlp2Dims;
  sam3Dense: Mlp2Dims;
}

/** Head sizes like the shared upstream fixture's (width 64): any width divisible by 16. */
const TINY_ADAPTOR_DIMS: AdaptorDims = {
  siglipSummary: { hidden: 72, out: 40, blocks: 1 },
  siglipDense: { hidden: 48, out: 40 },
  dinoSummary: { hidden: 48, out: 56, blocks: 0 },
  dinoDense: { hidden: 48, out: 56, blocks: 1 },
  sam3Summary: { hidden: 32, out: 24, blocks: 0 },
  sam3Dense: { hidden: 40, out: 24, blocks: 1 },
};

/**
 * The real files' sizes where known (siglip2-g 1280 → 1520 → 1536 with 2 blocks; dino dense → 4096 via
 * 1520; sam3 dense → 1024); the block counts of the dino/sam3 heads and their summary sizes are guesses.
 */
const FULL_ADAPTOR_DIMS: AdaptorDims = {
  siglipSummary: { hidden: 1520, out: 1536, blocks: 2 },
  siglipDense: { hidden: 1520, out: 1536 },
  dinoSummary: { hidden: 1520, out: 4096, blocks: 2 },
  dinoDense: { hidden: 1520, out: 4096, blocks: 2 },
  sam3Summary: { hidden: 1520, out: 1024, blocks: 2 },
  sam3Dense: { hidden: 1520, out: 1024, blocks: 2 },
};

/** Head sizes for a backbone width: the real ones for full-size widths, the fixture's for tiny ones. */
function defaultAdaptorDims(width: number): AdaptorDims {
  return width >= 1024 ? FULL_ADAPTOR_DIMS : TINY_ADAPTOR_DIMS;
}

/** The torch.hub file a generated checkpoint writes: the catalogue's name for the variant (models.ts). */
export function adaptorCheckpointName(version: string): string {
  return KNOWN_CHECKPOINTS[version]?.adaptorCheckpoint ?? `${version}_half.pth.tar`;
}

/** The adaptor head sizes a generate call will use, or null when it writes no adaptors. */
export function resolveAdaptorDims(options: GenerateOptions): AdaptorDims | null {
  if (!options.adaptors) return null;
  if (options.adaptors !== true) return options.adaptors;
  const base = ARCHITECTURES[options.architecture];
  if (!base) throw new Error(`unknown architecture ${options.architecture}`);
  return defaultAdaptorDims(options.modelKwargs.embed_dim ?? base.width);
}

export const PRESETS = {
  /** The test checkpoint: H-shaped name, width 64, depth 8, 2 heads, 128² position grid. */
  tiny: { architecture: "vit_huge_patch16_224", version: "c-radio_v4-h", modelKwargs: { embed_dim: 64, depth: 8, num_heads: 2 }, cpeMaxSize: 2048, seed: 1234 },
  "tiny-so400m": {
    architecture: "vit_so400m_patch16_224",
    version: "c-radio_v4-so400m",
    modelKwargs: { embed_dim: 72, depth: 4, num_heads: 3 },
    cpeMaxSize: 2048,
    seed: 4321,
  },
  /**
   * `tiny` plus the torch.hub file with adaptor heads (fixture-sized, siglip2-g summary → 40): the same
   * random draws as `tiny`, with every backbone value rounded to float16 (as the real "_half" files are).
   */
  "tiny-text": {
    architecture: "vit_huge_patch16_224",
    version: "c-radio_v4-h",
    modelKwargs: { embed_dim: 64, depth: 8, num_heads: 2 },
    cpeMaxSize: 2048,
    seed: 1234,
    adaptors: TINY_ADAPTOR_DIMS,
  },
  /** SO400M-named, with adaptors; width 80, as the siglip2-g dense head's 16 attention heads need a multiple of 16. */
  "tiny-so400m-text": {
    architecture: "vit_so400m_patch16_224",
    version: "c-radio_v4-so400m",
    modelKwargs: { embed_dim: 80, depth: 4, num_heads: 4 },
    cpeMaxSize: 2048,
    seed: 4321,
    adaptors: TINY_ADAPTOR_DIMS,
  },
  /** ViT-B-shaped: a mid-size model for server benchmarks. */
  "vit-b": {
    architecture: "vit_huge_patch16_224",
    version: "c-radio_v4-h",
    modelKwargs: { embed_dim: 768, depth: 12, num_heads: 12 },
    cpeMaxSize: 2048,
    seed: 77,
  },
  /** Full-size shapes of the real checkpoints (random weights). */
  h: { architecture: "vit_huge_patch16_224", version: "c-radio_v4-h", modelKwargs: {}, cpeMaxSize: 2048, seed: 1 },
  so400m: { architecture: "vit_so400m_patch16_224", version: "c-radio_v4-so400m", modelKwargs: {}, cpeMaxSize: 2048, seed: 2 },
} satisfies Record<string, GenerateOptions>;

export type PresetName = keyof typeof PRESETS;

const TEACHERS = [
  { name: "siglip2-g", type: "siglip2", use_summary: true },
  { name: "dino_v3_7b", type: "dino_v3", use_summary: true },
  { name: "sam3", type: "sam3", use_summary: false },
];

/**
 * The teachers as a checkpoint with adaptors names them: the siglip2-g entry carries the SigLIP2 model id
 * upstream maps to google/siglip2-giant-opt-patch16-384 and its dense head type (`attn`).
 */
const ADAPTOR_TEACHERS = [
  { name: "siglip2-g", type: "siglip2", model: "siglip2-g-384", use_summary: true, spatial_mlp_version: "attn" },
  { name: "dino_v3_7b", type: "dino_v3", use_summary: true },
  { name: "sam3", type: "sam3", use_summary: false },
];

/** Deterministic normal samples: sfc32 (32-bit, fast enough for a 2.6 GB checkpoint) and Box–Muller. */
export class Rng {
  private a: number;
  private b: number;
  private c: number;
  private d: number;
  private spare: number | null = null;
  constructor(seed: number) {
    // splitmix32 spreads the seed over the four state words.
    let s = seed >>> 0;
    const next = () => {
      s = (s + 0x9e3779b9) | 0;
      let z = s;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
      return (z ^ (z >>> 16)) >>> 0;
    };
    this.a = next();
    this.b = next();
    this.c = next();
    this.d = next();
    for (let i = 0; i < 12; i++) this.u32();
  }
  private u32(): number {
    const t = (((this.a + this.b) | 0) + this.d) | 0;
    this.d = (this.d + 1) | 0;
    this.a = this.b ^ (this.b >>> 9);
    this.b = (this.c + (this.c << 3)) | 0;
    this.c = (this.c << 21) | (this.c >>> 11);
    this.c = (this.c + t) | 0;
    return t >>> 0;
  }
  /** Uniform in (0, 1). */
  uniform(): number {
    return (this.u32() + 0.5) / 4294967296;
  }
  normal(): number {
    if (this.spare !== null) {
      const s = this.spare;
      this.spare = null;
      return s;
    }
    const r = Math.sqrt(-2 * Math.log(this.uniform()));
    const theta = 2 * Math.PI * this.uniform();
    this.spare = r * Math.sin(theta);
    return r * Math.cos(theta);
  }
  /** n samples of mean + scale·N(0,1) as float32. */
  fill(n: number, scale: number, mean = 0): Float32Array {
    const out = new Float32Array(n);
    for (let i = 0; i < n; i++) out[i] = mean + scale * this.normal();
    return out;
  }
}

/** Standard config.json of a RADIO HF repo, with the given architecture overrides. */
function makeConfig(options: GenerateOptions): Record<string, unknown> {
  const config = {
    adaptor_configs: {},
    adaptor_names: null,
    architectures: ["RADIOModel"],
    args: {
      aa: null,
      amp: true,
      amp_dtype: "bfloat16",
      amp_impl: "native",
      aug_repeats: 0,
      aug_splits: 0,
      batch_size: 32,
      bn_eps: null,
      bn_momentum: null,
      cache_dir: null,
      channels_last: false,
      checkpoint_hist: 10,
      class_map: "",
      cls_token_per_teacher: true,
      color_jitter: 0.4,
      cooldown_epochs: 0,
      cpe_max_size: options.cpeMaxSize,
      cpe_num_registers: null,
      crop_pct: null,
      cutmix: 0.0,
      decay_rate: 0.1,
      distributed: true,
      drop: 0.0,
      drop_block: null,
      drop_path: null,
      dtype: "float32",
      epoch: 299,
      eval_metric: "knn_top1",
      fast_norm: false,
      fd_loss_fn: "MSE",
      feature_normalization: "PHI_STANDARDIZE",
      feature_summarizer: "cls_token",
      gp: null,
      in_chans: null,
      initial_checkpoint: "",
      input_size: null,
      model: options.architecture,
      model_kwargs: options.modelKwargs,
      model_norm: options.finalNorm ?? false,
      num_classes: null,
      pretrained: false,
      register_multiple: 10,
      spectral_reparam: false,
      teachers: TEACHERS,
      torchscript: false,
    },
    auto_map: { AutoConfig: "hf_model.RADIOConfig", AutoModel: "hf_model.RADIOModel" },
    dtype: "float32",
    feature_normalizer_config: null,
    inter_feature_normalizer_config: null,
    max_resolution: 2048,
    patch_size: 16,
    preferred_resolution: [512, 512],
    torch_dtype: "float32",
    transformers_version: "4.51.3",
    version: options.version,
    vitdet_window_size: null,
  };
  // As upstream's hf_hub.py writes config.json from the .pth's args (the HF model still gets no adaptors).
  if (options.adaptors) Object.assign(config.args, { mlp_version: "v2", teachers: ADAPTOR_TEACHERS });
  return config;
}

const f32 = (a: Float32Array) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);

/** Writes config.json, preprocessor_config.json and model.safetensors into dir. */
export async function generateCheckpoint(dir: string, options: GenerateOptions): Promise<void> {
  const base = ARCHITECTURES[options.architecture];
  if (!base) throw new Error(`unknown architecture ${options.architecture}`);
  const C = options.modelKwargs.embed_dim ?? base.width;
  const depth = options.modelKwargs.depth ?? base.depth;
  const M = Math.floor(C * (base.mlpWidth / base.width));
  const p = 16;
  const G = Math.round(options.cpeMaxSize / p);
  const numCls = new Set(TEACHERS.map((t) => t.name)).size;
  const prefix = numCls + (10 - (numCls % 10));
  const rng = new Rng(options.seed);
  const adaptors = resolveAdaptorDims(options);
  if (adaptors && C % 16) throw new Error(`adaptor heads need a width divisible by 16 (the siglip2-g dense head has 16 attention heads); this one is ${C}`);
  // With adaptors every value is rounded to float16 after it is drawn: the draws are those without.
  const half = (a: Float32Array) => (adaptors ? a.map(roundToFloat16) : a);
  const t = (name: string, shape: number[], gen: () => Float32Array): TensorToWrite => ({ name, dtype: "F32", shape, data: () => f32(half(gen())) });
  const n = (shape: number[]) => shape.reduce((a, b) => a * b, 1);
  const randn =
    (shape: number[], scale: number, mean = 0) =>
    () =>
      rng.fill(n(shape), scale, mean);

  const tensors: TensorToWrite[] = [
    {
      name: "radio_model.summary_idxs",
      dtype: "I64",
      shape: [2],
      data: () => new Uint8Array(BigInt64Array.from(TEACHERS.flatMap((x, i) => (x.use_summary ? [BigInt(i)] : []))).buffer),
    },
    // Near the OpenAI CLIP values, perturbed so a compiler that ignores the buffers is caught.
    t("radio_model.input_conditioner.norm_mean", [3, 1, 1], () => Float32Array.from([0.48145466, 0.4578275, 0.40821073], (v) => v + 0.02 * rng.normal())),
    t("radio_model.input_conditioner.norm_std", [3, 1, 1], () => Float32Array.from([0.26862954, 0.26130258, 0.27577711], (v) => v * (1 + 0.05 * rng.normal()))),
    t("radio_model.model.patch_generator.embedder.weight", [C, 3 * p * p], randn([C, 3 * p * p], (3 * p * p) ** -0.5)),
    t("radio_model.model.patch_generator.pos_embed", [1, G * G, C], randn([1, G * G, C], C ** -0.5)),
    t("radio_model.model.patch_generator.cls_token.token", [prefix, C], randn([prefix, C], C ** -0.5)),
  ];
  for (let i = 0; i < depth; i++) {
    const k = blockKeys(`radio_model.model.blocks.${i}.`);
    tensors.push(
      t(k.norm1.weight, [C], randn([C], 0.1, 1)),
      t(k.norm1.bias, [C], randn([C], 0.05)),
      t(k.qkv.weight, [3 * C, C], randn([3 * C, C], C ** -0.5)),
      t(k.qkv.bias, [3 * C], randn([3 * C], 0.02)),
      t(k.proj.weight, [C, C], randn([C, C], C ** -0.5 * 0.5)),
      t(k.proj.bias, [C], randn([C], 0.02)),
      t(k.norm2.weight, [C], randn([C], 0.1, 1)),
      t(k.norm2.bias, [C], randn([C], 0.05)),
      t(k.fc1.weight, [M, C], randn([M, C], C ** -0.5)),
      t(k.fc1.bias, [M], randn([M], 0.02)),
      t(k.fc2.weight, [C, M], randn([C, M], M ** -0.5 * 0.5)),
      t(k.fc2.bias, [C], randn([C], 0.02)),
    );
  }
  if (options.finalNorm) {
    tensors.push(t("radio_model.model.norm.weight", [C], randn([C], 0.1, 1)), t("radio_model.model.norm.bias", [C], randn([C], 0.05)));
  }
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, "config.json"), `${JSON.stringify(makeConfig(options), null, 2)}\n`);
  writeFileSync(
    join(dir, "preprocessor_config.json"),
    `${JSON.stringify({ crop_size: null, do_center_crop: false, do_convert_rgb: true, do_normalize: false, do_resize: true, image_processor_type: "CLIPImageProcessor", resample: 3, size: { height: 512, width: 512 } }, null, 2)}\n`,
  );
  // Tensors are generated in the order written (sorted by name), so the bytes depend only on the seed.
  await writeSafetensors(join(dir, "model.safetensors"), tensors);
  if (adaptors) writeAdaptorCheckpoint(dir, options, adaptors, C, depth);
}

/** args as the training script saved them: an argparse.Namespace (dtype a torch dtype, floats as floats). */
function torchHubArgs(options: GenerateOptions): PyObject {
  const args: Record<string, unknown> = {
    ...(makeConfig(options).args as Record<string, unknown>),
    clip_grad: null,
    clip_mode: "norm",
    cutmix: new PyFloat(0),
    drop: new PyFloat(0),
    dtype: torchGlobals.float32,
  };
  const state = new Map(
    Object.keys(args)
      .sort()
      .map((k) => [k, args[k] as PyValue]),
  );
  return new PyObject(torchGlobals.Namespace, state);
}

/**
 * Writes the torch.hub checkpoint beside model.safetensors: {state_dict (OrderedDict of float16 tensors:
 * base_model.*, input_conditioner.*, _heads.<teacher>.*, _feature_projections.<teacher>.*), args, arch,
 * epoch, version}. The backbone is read back from model.safetensors (already fp16-rounded); the heads are
 * drawn from their own generator (seed + 1), in the order written.
 */
function writeAdaptorCheckpoint(dir: string, options: GenerateOptions, dims: AdaptorDims, C: number, depth: number): void {
  const hf = SafetensorsFile.open(join(dir, "model.safetensors"));
  try {
    const entries: [string, TensorRef][] = [];
    const fromHf = (key: string, hfName: string) => {
      const info = hf.tensors.get(hfName);
      if (!info) throw new Error(`model.safetensors has no ${hfName}`);
      entries.push([key, new TensorRef({ dtype: "F16", shape: [...info.shape], data: () => toFloat16Bytes(hf.readFloat32(hfName)) })]);
    };
    // timm's module order: blocks, norm, then the patch generator; then the input conditioner.
    for (let i = 0; i < depth; i++) for (const p of BLOCK_PARAMS) fromHf(`base_model.blocks.${i}.${p}`, `radio_model.model.blocks.${i}.${p}`);
    if (options.finalNorm) for (const p of ["weight", "bias"]) fromHf(`base_model.norm.${p}`, `radio_model.model.norm.${p}`);
    for (const p of ["pos_embed", "embedder.weight", "cls_token.token"]) fromHf(`base_model.patch_generator.${p}`, `radio_model.model.patch_generator.${p}`);
    for (const p of ["norm_mean", "norm_std"]) fromHf(`input_conditioner.${p}`, `radio_model.input_conditioner.${p}`);

    const rng = new Rng((options.seed + 1) >>> 0);
    const head = (prefix: string, params: [string, number[], "weight" | "bias" | "norm_w" | "norm_b" | "gamma"][]) => {
      for (const [name, shape, kind] of params) {
        const n = shape.reduce((a, b) => a * b, 1);
        const gen = (): Float32Array => {
          switch (kind) {
            case "weight":
              return rng.fill(n, shape[1]! ** -0.5);
            case "bias":
              return rng.fill(n, 0.05);
            case "norm_w":
              return rng.fill(n, 0.25, 1);
            case "norm_b":
              return rng.fill(n, 0.1);
            case "gamma":
              return rng.fill(n, 0.25, 0.5); // not upstream's 1e-5 init, so the blocks matter
          }
        };
        entries.push([`${prefix}.${name}`, new TensorRef({ dtype: "F16", shape, data: () => toFloat16Bytes(gen()) })]);
      }
    };
    const linear = (name: string, out: number, inp: number, bias = true): [string, number[], "weight" | "bias"][] =>
      bias
        ? [
            [`${name}.weight`, [out, inp], "weight"],
            [`${name}.bias`, [out], "bias"],
          ]
        : [[`${name}.weight`, [out, inp], "weight"]];
    const norm = (name: string, w: number): [string, number[], "norm_w" | "norm_b"][] => [
      [`${name}.weight`, [w], "norm_w"],
      [`${name}.bias`, [w], "norm_b"],
    ];
    const mlp2 = (d: Mlp2Dims, pre = "") => [
      ...linear(`${pre}fc1`, d.hidden, C),
      ...Array.from({ length: d.blocks }, (_, i) => [...norm(`${pre}blocks.${i}.0`, d.hidden), ...linear(`${pre}blocks.${i}.2`, d.hidden, d.hidden)]).flat(),
      ...norm(`${pre}final.0`, d.hidden),
      ...linear(`${pre}final.2`, d.out, d.hidden),
    ];
    const attnBlock = (b: string): [string, number[], "weight" | "bias" | "norm_w" | "norm_b" | "gamma"][] => [
      ...norm(`${b}.norm1`, C),
      ...linear(`${b}.attn.qkv`, 3 * C, C, false),
      ...linear(`${b}.attn.proj`, C, C),
      [`${b}.ls1.gamma`, [C], "gamma"],
      ...norm(`${b}.norm2`, C),
      ...linear(`${b}.mlp.fc1`, 4 * C, C),
      ...linear(`${b}.mlp.fc2`, C, 4 * C),
      [`${b}.ls2.gamma`, [C], "gamma"],
    ];
    head("_heads.siglip2-g", mlp2(dims.siglipSummary));
    head("_heads.dino_v3_7b", mlp2(dims.dinoSummary));
    head("_heads.sam3", mlp2(dims.sam3Summary));
    head("_feature_projections.siglip2-g", [...attnBlock("blocks.0"), ...attnBlock("blocks.1"), ...mlp2({ ...dims.siglipDense, blocks: 0 }, "mlp.")]);
    head("_feature_projections.dino_v3_7b", mlp2(dims.dinoDense));
    head("_feature_projections.sam3", mlp2(dims.sam3Dense));

    const checkpoint = new Map<string, unknown>([
      ["state_dict", orderedDict(entries)],
      ["args", torchHubArgs(options)],
      ["arch", options.architecture],
      ["epoch", 299],
      ["version", 2],
    ]);
    const serializationId = String(options.seed >>> 0).padStart(40, "0");
    writeTorchSave(join(dir, adaptorCheckpointName(options.version)), checkpoint, { serializationId });
  } finally {
    hf.close();
  }
}
