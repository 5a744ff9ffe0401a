// Text prompts → SigLIP2 token ids: big_vision's canonicalisation, then the Gemma tokenizer the
// SigLIP2 repos ship (tokenizer.json, run by Hugging Face's own JS port), then `<eos>` and right
// padding to the text tower's fixed context. No attention mask: the tower attends over the pads.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { Tokenizer } from "@huggingface/tokenizers";
import { z } from "zod";

/** Longest prompt accepted, in Unicode code points. Only the first 63 tokens count; this bounds the BPE work. */
export const MAX_PROMPT_CHARS = 10_000;

/** The tokenizer files a compiled text graph carries (special_tokens_map.json is optional). */
export const TOKENIZER_FILES = ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"] as const;

/** Python's string.punctuation: ASCII only, so – “ ” and other non-ASCII punctuation survive. */
const PUNCTUATION = /[!"#$%&'()*+,\-./:;<=>?@[\\\]^_`{|}~]/g;

/**
 * The characters Python's str.isspace() accepts (what str.split() splits on). JS's \s differs: it
 * includes U+FEFF and lacks U+001C–U+001F and U+0085.
 */
// biome-ignore lint/suspicious/noControlCharactersInRegex: U+001C–U+001F are Python whitespace
const PY_WHITESPACE = /[\t\n\v\f\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+/;

const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

/**
 * big_vision's canonicalize_text: `_` → space, delete ASCII punctuation, Unicode lower-case, collapse
 * whitespace runs to one space, strip. JS toLowerCase and Python str.lower() both apply the full
 * Unicode mapping including Final_Sigma ("ΟΔΟΣ" → "οδος").
 */
export function canonicalizePrompt(s: string): string {
  const lowered = s.replaceAll("_", " ").replace(PUNCTUATION, "").toLowerCase();
  return lowered
    .split(PY_WHITESPACE)
    .filter((w) => w !== "")
    .join(" ");
}

export class PromptError extends Error {
  override name = "PromptError";
  constructor(
    readonly index: number,
    message: string,
  ) {
    super(`prompt ${index}: ${message}`);
  }
}

/** Why a prompt can't be tokenised, or null. Empty prompts are valid (they become `<eos>` + pads). */
function promptProblem(p: unknown): string | null {
  if (typeof p !== "string") return `must be a string, got ${p === null ? "null" : typeof p}`;
  if (LONE_SURROGATE.test(p)) return "is not valid Unicode (it holds a lone UTF-16 surrogate)";
  if (p.length > MAX_PROMPT_CHARS) {
    const chars = [...p].length;
    if (chars > MAX_PROMPT_CHARS) return `is ${chars} characters long; the limit is ${MAX_PROMPT_CHARS}`;
  }
  return null;
}

/** A special token in tokenizer_config.json / special_tokens_map.json: a string or an AddedToken dict. */
const SpecialToken = z.union([z.string(), z.looseObject({ content: z.string() })]).transform((t) => (typeof t === "string" ? t : t.content));

const TokenizerConfigSchema = z.looseObject({
  add_bos_token: z.boolean().default(false),
  add_eos_token: z.boolean().default(true),
  padding_side: z.enum(["right", "left"]).default("right"),
  bos_token: SpecialToken.nullish(),
  eos_token: SpecialToken.nullish(),
  pad_token: SpecialToken.nullish(),
});

export interface TokenizedPrompts {
  /** Row-major [n, contextLength]. */
  ids: BigInt64Array;
  dims: [number, number];
  /** The canonical form of each prompt (the input itself when canonicalisation is off). */
  canonical: string[];
}

export interface PromptTokenizerOptions {
  /** The text tower's fixed input width (config max_position_embeddings). */
  contextLength: number;
}

/**
 * The Gemma tokenizer as SigLIP2's processor runs it (padding "max_length", truncation): content ids
 * cut to contextLength - (bos + eos), then the special tokens tokenizer_config.json asks for, then
 * `<pad>` on the right. Special tokens and their ids come from the tokenizer files.
 */
export class PromptTokenizer {
  readonly padId: number;
  readonly eosId: number;
  readonly bosId: number | null;
  readonly contextLength: number;
  readonly vocabSize: number;
  private readonly addEos: boolean;

  private constructor(
    private readonly tok: Tokenizer,
    cfg: z.infer<typeof TokenizerConfigSchema>,
    specials: Record<string, string>,
    o: PromptTokenizerOptions,
    source: string,
  ) {
    if (!Number.isInteger(o.contextLength) || o.contextLength < 2) throw new Error(`context length must be an integer ≥ 2, got ${o.contextLength}`);
    if (cfg.padding_side !== "right") throw new Error(`${source}: padding_side ${cfg.padding_side} is not supported (SigLIP pads on the right)`);
    const idOf = (role: "pad_token" | "eos_token" | "bos_token"): number => {
      const token = cfg[role] ?? specials[role];
      if (!token) throw new Error(`${source}: no ${role} in tokenizer_config.json or special_tokens_map.json`);
      const id = tok.token_to_id(token);
      if (id === undefined) throw new Error(`${source}: ${role} ${JSON.stringify(token)} is not in tokenizer.json's vocabulary`);
      return id;
    };
    this.padId = idOf("pad_token");
    this.eosId = idOf("eos_token");
    this.bosId = cfg.add_bos_token ? idOf("bos_token") : null;
    this.addEos = cfg.add_eos_token;
    this.contextLength = o.contextLength;
    this.vocabSize = tok.get_vocab(true).size;
    this.checkPostProcessor(source);
  }

  /**
   * The tokenizer a compiled text graph carries, checked against the ids its metadata.json recorded
   * at compile time (a tokenizer swapped since would tokenise for another embedding table).
   */
  static forTextGraph(dir: string, m: { contextLength: number; padId: number; eosId: number }): PromptTokenizer {
    const tokenizer = PromptTokenizer.fromDir(dir, { contextLength: m.contextLength });
    if (tokenizer.padId !== m.padId || tokenizer.eosId !== m.eosId) {
      throw new Error(`${dir}: the tokenizer files give pad/eos ids ${tokenizer.padId}/${tokenizer.eosId}, metadata.json says ${m.padId}/${m.eosId}`);
    }
    return tokenizer;
  }

  /** Loads tokenizer.json + tokenizer_config.json (+ special_tokens_map.json if present) from a folder. */
  static fromDir(dir: string, o: PromptTokenizerOptions): PromptTokenizer {
    const read = (f: string, optional = false): unknown => {
      try {
        return JSON.parse(readFileSync(join(dir, f), "utf8"));
      } catch (err) {
        if (optional && (err as NodeJS.ErrnoException).code === "ENOENT") return {};
        throw new Error(`cannot read ${join(dir, f)}: ${(err as Error).message}`);
      }
    };
    const tokJson = read("tokenizer.json") as object;
    const rawCfg = read("tokenizer_config.json") as object;
    const cfg = TokenizerConfigSchema.safeParse(rawCfg);
    if (!cfg.success)
      throw new Error(`${join(dir, "tokenizer_config.json")} is invalid: ${cfg.error.issues.map((i) => `${i.path.join(".")}: ${i.message}`).join("; ")}`);
    const specialsRaw = read("special_tokens_map.json", true) as Record<string, unknown>;
    const specials: Record<string, string> = {};
    for (const role of ["pad_token", "eos_token", "bos_token"]) {
      const r = SpecialToken.safeParse(specialsRaw[role]);
      if (r.success) specials[role] = r.data;
    }
    // The port reads a few settings from the config (e.g. do_lowercase_and_remove_accent); Gemma's
    // do_lower_case is inert in transformers, and the port ignores it too (checked against the fixture).
    return new PromptTokenizer(new Tokenizer(tokJson, rawCfg), cfg.data, specials, o, dir);
  }

  /**
   * tokenizer.json's post-processor and tokenizer_config.json's add_bos/eos flags must agree, so that
   * adding the specials ourselves (needed to truncate before them) gives what transformers gives.
   */
  private checkPostProcessor(source: string): void {
    const plain: number[] = this.tok.encode("a", { add_special_tokens: false }).ids;
    const full: number[] = this.tok.encode("a", { add_special_tokens: true }).ids;
    const ours = this.withSpecials(plain);
    if (full.length !== ours.length || full.some((v, i) => v !== ours[i])) {
      throw new Error(
        `${source}: tokenizer.json's post-processor gives [${full}] for "a" but tokenizer_config.json's add_bos_token/add_eos_token imply [${ours}]`,
      );
    }
  }

  private withSpecials(content: number[]): number[] {
    return [...(this.bosId !== null ? [this.bosId] : []), ...content, ...(this.addEos ? [this.eosId] : [])];
  }

  /** One prompt's ids (already checked/canonicalised): truncated, special tokens added, padded. */
  private row(text: string): number[] {
    const room = this.contextLength - (this.bosId !== null ? 1 : 0) - (this.addEos ? 1 : 0);
    const content = this.tok.encode(text, { add_special_tokens: false }).ids.slice(0, room);
    const ids = this.withSpecials(content);
    while (ids.length < this.contextLength) ids.push(this.padId);
    return ids;
  }

  /**
   * Token ids [n, contextLength] for the prompts. Throws a PromptError naming the first bad prompt
   * (not a string, a lone surrogate, longer than MAX_PROMPT_CHARS). `canonicalize: false` skips
   * big_vision's canonicalisation (a tokenizer-only check; upstream always canonicalises).
   */
  encode(prompts: readonly unknown[], o: { canonicalize?: boolean } = {}): TokenizedPrompts {
    const canonicalize = o.canonicalize ?? true;
    const texts = prompts.map((p, i) => (canonicalize ? this.canonicalize(p, i) : (this.check(p, i), p as string)));
    return { ids: this.encodeCanonical(texts), dims: [texts.length, this.contextLength], canonical: texts };
  }

  /** One prompt's canonical form; throws a PromptError (with `index`) for a bad prompt. */
  canonicalize(prompt: unknown, index = 0): string {
    this.check(prompt, index);
    return canonicalizePrompt(prompt as string);
  }

  /** Token ids [n, contextLength] for prompts already canonicalised (e.g. cache misses). */
  encodeCanonical(canonical: readonly string[]): BigInt64Array {
    const L = this.contextLength;
    const ids = new BigInt64Array(canonical.length * L);
    canonical.forEach((t, i) => this.row(t).forEach((v, j) => (ids[i * L + j] = BigInt(v))));
    return ids;
  }

  private check(prompt: unknown, index: number): void {
    const problem = promptProblem(prompt);
    if (problem) throw new PromptError(index, problem);
  }
}
