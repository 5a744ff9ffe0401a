// Writes a random SigLIP2 checkpoint folder in the layout of google/siglip2-giant-opt-patch16-384, the text
// tower paired with C-RADIOv4's siglip2-g adaptor: config.json (only non-default keys, as the real one),
// the weights in two shards + model.safetensors.index.json (shard 1: logit_scale, logit_bias, all of
// text_model.*, the first vision tensors; as HF shards the real repo in state-dict order), a small
// Gemma-style tokenizer (tokenizer.json, tokenizer_config.json, special_tokens_map.json) and
// preprocessor_config.json. Small enough for tests; the weights mean nothing.
//
// tokenizer.json is written directly: @huggingface/tokenizers (the JS port in node_modules) only loads
// and runs tokenizers, it cannot build or serialise one. The JSON follows Gemma's pipeline (see
// shared/docs/cradio-v4-adaptors-facts.md §6): normaliser ' ' → '▁' with no dummy prefix, no
// pre-tokeniser, BPE with byte_fallback and fuse_unk, a post-processor appending <eos>.
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { Rng } from "./generate.js";
import { writeSafetensors, type TensorToWrite } from "../checkpoint/safetensors.js";

export interface SiglipTowerDims {
  hidden: number;
  intermediate: number;
  layers: number;
  heads: number;
}

export interface GenerateSiglipOptions {
  /** text_config.projection_size: the output of the text head, = the siglip2-g summary head's output. */
  projectionSize: number;
  seed: number;
  text: SiglipTowerDims;
  vision: SiglipTowerDims & { imageSize: number; patchSize: number };
  /** Words the tokenizer's BPE merges are learnt from (other text falls back to bytes). */
  words?: readonly string[];
  /**
   * text_config.vocab_size: rows of the token embedding. Default: the tokenizer's size. Larger pads the
   * table with rows no prompt reaches (the real tower's 256000 rows, for benchmarks, with this small tokenizer).
   */
  vocabSize?: number;
}

/** Sizes like the shared fixture's; projectionSize 40 matches TINY_ADAPTOR_DIMS.siglipSummary.out. */
export const TINY_SIGLIP: GenerateSiglipOptions = {
  projectionSize: 40,
  seed: 2468,
  text: { hidden: 32, intermediate: 80, layers: 2, heads: 2 },
  vision: { hidden: 40, intermediate: 64, layers: 2, heads: 2, imageSize: 32, patchSize: 16 },
};

/**
 * google/siglip2-giant-opt-patch16-384's text tower at its real size (hidden 1152, MLP 4304, 27 layers,
 * 16 heads, 256000-row embedding, projection 1536): ~2.8 GB of float32, for benchmarks. The vision tower
 * stays tiny (compile --text reads only the text tensors); the tokenizer is the small one, padded.
 */
export const FULL_SIGLIP_TEXT: GenerateSiglipOptions = {
  projectionSize: 1536,
  seed: 2468,
  text: { hidden: 1152, intermediate: 4304, layers: 27, heads: 16 },
  vision: TINY_SIGLIP.vision,
  vocabSize: 256000,
};

/** SigLIP's text context (max_position_embeddings, a class default left out of config.json). */
const CONTEXT = 64;

/** Enough words for the prompts tests and the demo use: zoo templates, common classes, a few non-ASCII. */
const DEFAULT_WORDS: readonly string[] = [
  "a",
  "an",
  "the",
  "of",
  "in",
  "on",
  "with",
  "and",
  "is",
  "at",
  "by",
  "for",
  "to",
  "from",
  "this",
  "that",
  "photo",
  "picture",
  "image",
  "drawing",
  "painting",
  "sketch",
  "rendering",
  "close",
  "up",
  "view",
  "bad",
  "good",
  "large",
  "small",
  "big",
  "little",
  "dark",
  "bright",
  "old",
  "new",
  "blurry",
  "cropped",
  "clean",
  "dirty",
  "dog",
  "dogs",
  "cat",
  "cats",
  "bird",
  "horse",
  "cow",
  "sheep",
  "fish",
  "car",
  "truck",
  "bus",
  "train",
  "plane",
  "boat",
  "bicycle",
  "motorcycle",
  "person",
  "people",
  "man",
  "woman",
  "child",
  "tree",
  "flower",
  "house",
  "street",
  "road",
  "city",
  "beach",
  "mountain",
  "sky",
  "water",
  "snow",
  "grass",
  "food",
  "pizza",
  "apple",
  "banana",
  "chair",
  "table",
  "computer",
  "phone",
  "book",
  "cup",
  "bottle",
  "red",
  "green",
  "blue",
  "yellow",
  "black",
  "white",
  "one",
  "two",
  "three",
  "café",
  "naïve",
  "straße",
  "µ",
  "ελλάδα",
  "москва",
  "東京",
];

// Gemma's special tokens, in its id order (ids 0–11), then "\n" (id 12 here).
const SPECIALS = [
  "<pad>",
  "<eos>",
  "<bos>",
  "<unk>",
  "<mask>",
  "[multimodal]",
  "<unused0>",
  "<unused1>",
  "<unused2>",
  "<unused3>",
  "<start_of_turn>",
  "<end_of_turn>",
];
const SPACE = "\u2581";

/**
 * A deterministic BPE trainer: each word, with and without the '▁' that marks a preceding space (the
 * first word of a prompt has none), merged until every word is one token; each step merges the most
 * frequent adjacent pair, ties broken by lexical order of (left, right).
 */
function trainBpe(words: readonly string[]): { chars: string[]; merges: [string, string][] } {
  const corpus: { symbols: string[]; count: number }[] = [];
  for (const w of new Set(words)) {
    corpus.push({ symbols: [SPACE, ...w], count: 2 }, { symbols: [...w], count: 1 });
  }
  const chars = [...new Set(corpus.flatMap((c) => c.symbols))].sort((a, b) => a.codePointAt(0)! - b.codePointAt(0)!);
  const merges: [string, string][] = [];
  for (;;) {
    const counts = new Map<string, { pair: [string, string]; n: number }>();
    for (const { symbols, count } of corpus) {
      for (let i = 0; i + 1 < symbols.length; i++) {
        const key = `${symbols[i]}\u0000${symbols[i + 1]}`;
        const e = counts.get(key) ?? { pair: [symbols[i]!, symbols[i + 1]!] as [string, string], n: 0 };
        e.n += count;
        counts.set(key, e);
      }
    }
    let best: { pair: [string, string]; n: number } | null = null;
    for (const e of counts.values()) {
      if (!best || e.n > best.n || (e.n === best.n && (e.pair[0] < best.pair[0] || (e.pair[0] === best.pair[0] && e.pair[1] < best.pair[1])))) best = e;
    }
    if (!best) break;
    const [l, r] = best.pair;
    merges.push([l, r]);
    for (const c of corpus) {
      const out: string[] = [];
      for (let i = 0; i < c.symbols.length; i++) {
        if (c.symbols[i] === l && c.symbols[i + 1] === r) out.push(l + r), i++;
        else out.push(c.symbols[i]!);
      }
      c.symbols = out;
    }
  }
  return { chars, merges };
}

/** The tokenizer files' contents (tokenizer.json, tokenizer_config.json, special_tokens_map.json). */
export function makeGemmaTokenizer(words: readonly string[] = DEFAULT_WORDS): {
  tokenizer: Record<string, unknown>;
  tokenizerConfig: Record<string, unknown>;
  specialTokensMap: Record<string, unknown>;
  vocabSize: number;
} {
  const { chars, merges } = trainBpe(words.map((w) => w.toLowerCase()));
  const vocab: Record<string, number> = {};
  const add = (tok: string) => {
    if (!(tok in vocab)) vocab[tok] = Object.keys(vocab).length;
  };
  SPECIALS.forEach(add);
  add("\n");
  for (let b = 0; b < 256; b++) add(`<0x${b.toString(16).toUpperCase().padStart(2, "0")}>`);
  chars.forEach(add);
  for (const [l, r] of merges) add(l + r);
  const vocabSize = Object.keys(vocab).length;

  const special = (content: string) => ({ content, lstrip: false, normalized: false, rstrip: false, single_word: false });
  const tokenizer = {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: SPECIALS.map((content, id) => ({ id, ...special(content), special: true })),
    normalizer: { type: "Replace", pattern: { String: " " }, content: SPACE },
    pre_tokenizer: null,
    post_processor: {
      type: "TemplateProcessing",
      single: [{ Sequence: { id: "A", type_id: 0 } }, { SpecialToken: { id: "<eos>", type_id: 0 } }],
      pair: [
        { Sequence: { id: "A", type_id: 0 } },
        { SpecialToken: { id: "<eos>", type_id: 0 } },
        { Sequence: { id: "B", type_id: 1 } },
        { SpecialToken: { id: "<eos>", type_id: 1 } },
      ],
      special_tokens: { "<eos>": { id: "<eos>", ids: [vocab["<eos>"]], tokens: ["<eos>"] } },
    },
    decoder: {
      type: "Sequence",
      decoders: [{ type: "Replace", pattern: { String: SPACE }, content: " " }, { type: "ByteFallback" }, { type: "Fuse" }],
    },
    model: {
      type: "BPE",
      dropout: null,
      unk_token: "<unk>",
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: true,
      byte_fallback: true,
      ignore_merges: false,
      vocab,
      merges,
    },
  };
  // The settings HF's SigLIP2 conversion saved (convert_siglip_to_hf.py get_tokenizer).
  const tokenizerConfig = {
    add_bos_token: false,
    add_eos_token: true,
    added_tokens_decoder: Object.fromEntries(SPECIALS.map((content, id) => [String(id), { ...special(content), special: true }])),
    additional_special_tokens: ["<start_of_turn>", "<end_of_turn>"],
    bos_token: "<bos>",
    clean_up_tokenization_spaces: false,
    do_lower_case: true,
    eos_token: "<eos>",
    model_input_names: ["input_ids"],
    model_max_length: VERY_LARGE_INTEGER,
    pad_token: "<pad>",
    padding_side: "right",
    processor_class: "SiglipProcessor",
    sp_model_kwargs: {},
    spaces_between_special_tokens: false,
    tokenizer_class: "GemmaTokenizer",
    unk_token: "<unk>",
    use_default_system_prompt: false,
  };
  const specialTokensMap = {
    additional_special_tokens: ["<start_of_turn>", "<end_of_turn>"],
    bos_token: special("<bos>"),
    eos_token: special("<eos>"),
    pad_token: special("<pad>"),
    unk_token: special("<unk>"),
  };
  return { tokenizer, tokenizerConfig, specialTokensMap, vocabSize };
}

/** transformers' VERY_LARGE_INTEGER, int(1e30), written as the integer python writes (JSON.stringify would give 1e+30). */
const VERY_LARGE_INTEGER = 1e30;
const VERY_LARGE_INTEGER_TEXT = "1000000000000000019884624838656";

const f32 = (a: Float32Array) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);

/** Writes the folder; returns text_config.vocab_size (the tokenizer's size unless options.vocabSize pads it). */
export async function generateSiglip(dir: string, options: GenerateSiglipOptions = TINY_SIGLIP): Promise<{ vocabSize: number }> {
  const { text: T, vision: V } = options;
  if (T.hidden % T.heads || V.hidden % V.heads) throw new Error("hidden sizes must be divisible by the head counts");
  if (V.imageSize % V.patchSize) throw new Error("image size must be a multiple of the patch size");
  const tok = makeGemmaTokenizer(options.words ?? DEFAULT_WORDS);
  if (options.vocabSize !== undefined && options.vocabSize < tok.vocabSize)
    throw new Error(`vocabSize ${options.vocabSize} is below the tokenizer's ${tok.vocabSize} ids`);
  const vocabSize = options.vocabSize ?? tok.vocabSize;
  const rng = new Rng(options.seed);

  // State-dict order (own parameters first, then text_model, then vision_model), as HF shards it.
  type Kind = "weight" | "bias" | "norm_w" | "norm_b" | "embed";
  const order: { name: string; shape: number[]; kind: Kind | "scale" | "logit_bias" }[] = [
    { name: "logit_scale", shape: [1], kind: "scale" },
    { name: "logit_bias", shape: [1], kind: "logit_bias" },
  ];
  const linear = (name: string, out: number, inp: number) =>
    order.push({ name: `${name}.weight`, shape: [out, inp], kind: "weight" }, { name: `${name}.bias`, shape: [out], kind: "bias" });
  const norm = (name: string, w: number) =>
    order.push({ name: `${name}.weight`, shape: [w], kind: "norm_w" }, { name: `${name}.bias`, shape: [w], kind: "norm_b" });
  const encoder = (prefix: string, d: SiglipTowerDims) => {
    for (let i = 0; i < d.layers; i++) {
      const l = `${prefix}.encoder.layers.${i}`;
      for (const p of ["k_proj", "v_proj", "q_proj", "out_proj"]) linear(`${l}.self_attn.${p}`, d.hidden, d.hidden);
      norm(`${l}.layer_norm1`, d.hidden);
      linear(`${l}.mlp.fc1`, d.intermediate, d.hidden);
      linear(`${l}.mlp.fc2`, d.hidden, d.intermediate);
      norm(`${l}.layer_norm2`, d.hidden);
    }
  };
  order.push(
    { name: "text_model.embeddings.token_embedding.weight", shape: [vocabSize, T.hidden], kind: "embed" },
    { name: "text_model.embeddings.position_embedding.weight", shape: [CONTEXT, T.hidden], kind: "embed" },
  );
  encoder("text_model", T);
  norm("text_model.final_layer_norm", T.hidden);
  linear("text_model.head", options.projectionSize, T.hidden);
  const firstVision = order.length;
  const p = V.patchSize;
  order.push(
    { name: "vision_model.embeddings.patch_embedding.weight", shape: [V.hidden, 3, p, p], kind: "weight" },
    { name: "vision_model.embeddings.patch_embedding.bias", shape: [V.hidden], kind: "bias" },
    { name: "vision_model.embeddings.position_embedding.weight", shape: [(V.imageSize / p) ** 2, V.hidden], kind: "embed" },
  );
  encoder("vision_model", V);
  norm("vision_model.post_layernorm", V.hidden);
  order.push({ name: "vision_model.head.probe", shape: [1, 1, V.hidden], kind: "embed" });
  order.push(
    { name: "vision_model.head.attention.in_proj_weight", shape: [3 * V.hidden, V.hidden], kind: "weight" },
    { name: "vision_model.head.attention.in_proj_bias", shape: [3 * V.hidden], kind: "bias" },
  );
  linear("vision_model.head.attention.out_proj", V.hidden, V.hidden);
  norm("vision_model.head.layernorm", V.hidden);
  linear("vision_model.head.mlp.fc1", V.intermediate, V.hidden);
  linear("vision_model.head.mlp.fc2", V.hidden, V.intermediate);

  // Draw every tensor now, in state-dict order (small by design; FULL_SIGLIP_TEXT holds ~2.8 GB), so the values depend only on the seed.
  const tensors: TensorToWrite[] = order.map(({ name, shape, kind }) => {
    const n = shape.reduce((a, b) => a * b, 1);
    const fanIn = shape.slice(1).reduce((a, b) => a * b, 1);
    const values =
      kind === "scale"
        ? rng.fill(1, 0.1, Math.log(10))
        : kind === "logit_bias"
          ? rng.fill(1, 0.5, -5)
          : kind === "weight"
            ? rng.fill(n, fanIn ** -0.5)
            : kind === "bias"
              ? rng.fill(n, 0.05)
              : kind === "norm_w"
                ? rng.fill(n, 0.25, 1)
                : kind === "norm_b"
                  ? rng.fill(n, 0.1)
                  : rng.fill(n, 0.5);
    return { name, dtype: "F32", shape, data: () => f32(values) };
  });
  // Shard 1 ends after the first two vision tensors, as in the real repo.
  const shards = [tensors.slice(0, firstVision + 2), tensors.slice(firstVision + 2)];
  const shardName = (i: number) => `model-${String(i + 1).padStart(5, "0")}-of-${String(shards.length).padStart(5, "0")}.safetensors`;

  mkdirSync(dir, { recursive: true });
  const weightMap: Record<string, string> = {};
  let totalSize = 0;
  for (const [i, shard] of shards.entries()) {
    await writeSafetensors(join(dir, shardName(i)), shard);
    for (const t of shard) {
      weightMap[t.name] = shardName(i);
      totalSize += t.shape.reduce((a, b) => a * b, 1) * 4;
    }
  }
  const sortedMap = Object.fromEntries(
    Object.keys(weightMap)
      .sort()
      .map((k) => [k, weightMap[k]]),
  );
  const json = (name: string, v: unknown) => writeFileSync(join(dir, name), `${JSON.stringify(v, null, 2)}\n`);
  json("model.safetensors.index.json", { metadata: { total_size: totalSize }, weight_map: sortedMap });
  // Only non-default keys, as the real config.json (max_position_embeddings 64, gelu_pytorch_tanh,
  // layer_norm_eps 1e-6 and patch_size 16 are class defaults; patch_size is written when it differs).
  // initializer_factor must read back as a float (transformers 5 validates the type): JSON.stringify writes 1.
  const config = {
    initializer_factor: 1.0,
    model_type: "siglip",
    text_config: {
      hidden_size: T.hidden,
      intermediate_size: T.intermediate,
      model_type: "siglip_text_model",
      num_attention_heads: T.heads,
      num_hidden_layers: T.layers,
      projection_size: options.projectionSize,
      vocab_size: vocabSize,
    },
    transformers_version: "4.49.0.dev0",
    vision_config: {
      hidden_size: V.hidden,
      image_size: V.imageSize,
      intermediate_size: V.intermediate,
      model_type: "siglip_vision_model",
      num_attention_heads: V.heads,
      num_hidden_layers: V.layers,
      ...(p !== 16 ? { patch_size: p } : {}),
    },
  };
  writeFileSync(join(dir, "config.json"), `${JSON.stringify(config, null, 2).replace('"initializer_factor": 1,', '"initializer_factor": 1.0,')}\n`);
  json("tokenizer.json", tok.tokenizer);
  writeFileSync(
    join(dir, "tokenizer_config.json"),
    `${JSON.stringify(tok.tokenizerConfig, null, 2).replace(`"model_max_length": ${JSON.stringify(VERY_LARGE_INTEGER)}`, `"model_max_length": ${VERY_LARGE_INTEGER_TEXT}`)}\n`,
  );
  json("special_tokens_map.json", tok.specialTokensMap);
  json("preprocessor_config.json", {
    do_convert_rgb: null,
    do_normalize: true,
    do_rescale: true,
    do_resize: true,
    image_mean: [0.5, 0.5, 0.5],
    image_processor_type: "SiglipImageProcessor",
    image_std: [0.5, 0.5, 0.5],
    processor_class: "SiglipProcessor",
    resample: 2,
    rescale_factor: 1 / 255,
    size: { height: V.imageSize, width: V.imageSize },
  });
  return { vocabSize };
}
