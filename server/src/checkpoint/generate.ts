// Writes random RADIO checkpoints in exactly the Hugging Face layout (same key names, same config.json
// fields, same token structure: 3 cls tokens + 7 registers, summary from cls 0 and 1). Tiny ones drive
// the tests and the demo; full-size ones (H- or SO400M-shaped) drive benchmarks. The weights are random:
// outputs mean nothing, but every tensor is non-trivial so a wrong wiring shows up in parity tests.
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { ARCHITECTURES } from "./architectures.js";
import { writeSafetensors, type TensorToWrite } from "./safetensors.js";

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
}

export const PRESETS = {
  /** The test checkpoint: H-shaped name, width 64, depth 8, 2 heads, 128² position grid. */
  tiny: { architecture: "vit_huge_patch16_224", version: "c-radio_v4-h", modelKwargs: { embed_dim: 64, depth: 8, num_heads: 2 }, cpeMaxSize: 2048, seed: 1234 },
  "tiny-so400m": { architecture: "vit_so400m_patch16_224", version: "c-radio_v4-so400m", modelKwargs: { embed_dim: 72, depth: 4, num_heads: 3 }, cpeMaxSize: 2048, seed: 4321 },
  /** ViT-B-shaped: a mid-size model for server benchmarks. */
  "vit-b": { architecture: "vit_huge_patch16_224", version: "c-radio_v4-h", modelKwargs: { embed_dim: 768, depth: 12, num_heads: 12 }, cpeMaxSize: 2048, seed: 77 },
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
export function makeConfig(o: GenerateOptions): Record<string, unknown> {
  return {
    adaptor_configs: {},
    adaptor_names: null,
    architectures: ["RADIOModel"],
    args: {
      aa: null, amp: true, amp_dtype: "bfloat16", amp_impl: "native", aug_repeats: 0, aug_splits: 0,
      batch_size: 32, bn_eps: null, bn_momentum: null, cache_dir: null, channels_last: false,
      checkpoint_hist: 10, class_map: "", cls_token_per_teacher: true, color_jitter: 0.4,
      cooldown_epochs: 0, cpe_max_size: o.cpeMaxSize, cpe_num_registers: null, crop_pct: null, cutmix: 0.0,
      decay_rate: 0.1, distributed: true, drop: 0.0, drop_block: null, drop_path: null, dtype: "float32",
      epoch: 299, eval_metric: "knn_top1", fast_norm: false, fd_loss_fn: "MSE",
      feature_normalization: "PHI_STANDARDIZE", feature_summarizer: "cls_token", gp: null, in_chans: null,
      initial_checkpoint: "", input_size: null, model: o.architecture, model_kwargs: o.modelKwargs,
      model_norm: o.finalNorm ?? false, num_classes: null, pretrained: false, register_multiple: 10,
      spectral_reparam: false, teachers: TEACHERS, torchscript: false,
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
    version: o.version,
    vitdet_window_size: null,
  };
}

const f32 = (a: Float32Array) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);

/** Writes config.json, preprocessor_config.json and model.safetensors into dir. */
export async function generateCheckpoint(dir: string, o: GenerateOptions): Promise<void> {
  const base = ARCHITECTURES[o.architecture];
  if (!base) throw new Error(`unknown architecture ${o.architecture}`);
  const C = o.modelKwargs.embed_dim ?? base.width;
  const depth = o.modelKwargs.depth ?? base.depth;
  const M = Math.floor(C * (base.mlpWidth / base.width));
  const p = 16;
  const G = Math.round(o.cpeMaxSize / p);
  const numCls = new Set(TEACHERS.map((t) => t.name)).size;
  const prefix = numCls + (10 - (numCls % 10));
  const rng = new Rng(o.seed);
  const t = (name: string, shape: number[], gen: () => Float32Array): TensorToWrite => ({ name, dtype: "F32", shape, data: () => f32(gen()) });
  const n = (shape: number[]) => shape.reduce((a, b) => a * b, 1);
  const randn = (shape: number[], scale: number, mean = 0) => () => rng.fill(n(shape), scale, mean);

  const tensors: TensorToWrite[] = [
    {
      name: "radio_model.summary_idxs", dtype: "I64", shape: [2],
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
    const b = `radio_model.model.blocks.${i}`;
    tensors.push(
      t(`${b}.norm1.weight`, [C], randn([C], 0.1, 1)),
      t(`${b}.norm1.bias`, [C], randn([C], 0.05)),
      t(`${b}.attn.qkv.weight`, [3 * C, C], randn([3 * C, C], C ** -0.5)),
      t(`${b}.attn.qkv.bias`, [3 * C], randn([3 * C], 0.02)),
      t(`${b}.attn.proj.weight`, [C, C], randn([C, C], C ** -0.5 * 0.5)),
      t(`${b}.attn.proj.bias`, [C], randn([C], 0.02)),
      t(`${b}.norm2.weight`, [C], randn([C], 0.1, 1)),
      t(`${b}.norm2.bias`, [C], randn([C], 0.05)),
      t(`${b}.mlp.fc1.weight`, [M, C], randn([M, C], C ** -0.5)),
      t(`${b}.mlp.fc1.bias`, [M], randn([M], 0.02)),
      t(`${b}.mlp.fc2.weight`, [C, M], randn([C, M], M ** -0.5 * 0.5)),
      t(`${b}.mlp.fc2.bias`, [C], randn([C], 0.02)),
    );
  }
  if (o.finalNorm) {
    tensors.push(t("radio_model.model.norm.weight", [C], randn([C], 0.1, 1)), t("radio_model.model.norm.bias", [C], randn([C], 0.05)));
  }
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, "config.json"), JSON.stringify(makeConfig(o), null, 2) + "\n");
  writeFileSync(
    join(dir, "preprocessor_config.json"),
    JSON.stringify({ crop_size: null, do_center_crop: false, do_convert_rgb: true, do_normalize: false, do_resize: true, image_processor_type: "CLIPImageProcessor", resample: 3, size: { height: 512, width: 512 } }, null, 2) + "\n",
  );
  // Tensors are generated in the order written (sorted by name), so the bytes depend only on the seed.
  await writeSafetensors(join(dir, "model.safetensors"), tensors);
}
