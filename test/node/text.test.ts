/**
 * The SigLIP2 text path against the shared upstream golden fixture (tiny random SigLIP2 built and
 * run with upstream code): canonicalisation, Gemma tokenisation, the compiled text tower (fp32 to
 * relative L2 1e-6, fp16 cosine), logit scale/bias, and bad prompts.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";

import { SafetensorsFile } from "../../server/src/checkpoint/safetensors.js";
import { loadSiglipText } from "../../server/src/checkpoint/siglip.js";
import { compileTextTower } from "../../server/src/compiler/compile-text.js";
import { readTextMetadata } from "../../server/src/compiler/text-metadata.js";
import { canonicalizePrompt, MAX_PROMPT_CHARS, PromptError, PromptTokenizer } from "../../server/src/preprocess/text.js";
import { TextEmbedder } from "../../server/src/pipeline/text.js";
import { embedText, loadTextGraph, type LoadedTextGraph } from "../../server/src/runtime/text-session.js";
import { tempDir } from "./support/server.js";
import { CLI } from "./support/sidecar.js";
import { relL2, cosine } from "./support/compare.js";

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const FIXTURE = path.join(repoRoot, "../shared/fixtures/upstream-adaptor-golden");
const SIGLIP = path.join(FIXTURE, "siglip2-giant-opt-patch16-384");
const skip = existsSync(path.join(FIXTURE, "reference_index.json")) ? false : `fixture not found at ${FIXTURE}`;

interface Index {
  text: { prompts: string[]; canonical: string[]; logit_scale: number; logit_bias: number };
}

const rows = <T extends { subarray(a: number, b: number): T }>(x: T, n: number, cols: number): T[] =>
  Array.from({ length: n }, (_, i) => x.subarray(i * cols, (i + 1) * cols));

describe("SigLIP2 text: canonicalisation and tokenisation", { skip }, () => {
  const index = skip ? null : (JSON.parse(readFileSync(path.join(FIXTURE, "reference_index.json"), "utf8")) as Index);
  const ref = skip ? null : SafetensorsFile.open(path.join(FIXTURE, "reference.safetensors"));
  after(() => ref?.close());

  it("canonical forms equal upstream for all 13 prompts", () => {
    assert.deepEqual(index!.text.prompts.map(canonicalizePrompt), index!.text.canonical);
  });

  it("canonicalises like Python: string.punctuation only, str.isspace whitespace, final sigma", () => {
    assert.equal(canonicalizePrompt("a-b"), "ab");
    assert.equal(canonicalizePrompt("a_b"), "a b");
    assert.equal(canonicalizePrompt("!!!"), "");
    assert.equal(canonicalizePrompt("ΟΔΟΣ ΣΑΣ"), "οδος σας");
    assert.equal(canonicalizePrompt("x\u00a0y\u3000z\u2002w\u0085v\u001cu\u2028t\u202fs\u205fr\u1680q"), "x y z w v u t s r q");
    // Not whitespace in Python (U+FEFF, U+200B, U+180E), not ASCII punctuation (– “ ” ¿).
    assert.equal(canonicalizePrompt("a\ufeffb\u200bc\u180ed"), "a\ufeffb\u200bc\u180ed");
    assert.equal(canonicalizePrompt("“Ünïcödé” – ¿QUÉ?"), "“ünïcödé” – ¿qué");
  });

  it("token ids equal upstream (canonicalised, and the raw tokenizer path)", () => {
    const tok = PromptTokenizer.fromDir(SIGLIP, { contextLength: 64 });
    assert.deepEqual([tok.padId, tok.eosId, tok.bosId, tok.contextLength], [0, 1, null, 64]);
    const canon = tok.encode(index!.text.prompts);
    assert.deepEqual(canon.dims, [13, 64]);
    assert.deepEqual(canon.canonical, index!.text.canonical);
    assert.deepEqual([...canon.ids], [...ref!.readInt64("text.input_ids")]);
    const raw = tok.encode(index!.text.prompts, { canonicalize: false });
    assert.deepEqual([...raw.ids], [...ref!.readInt64("text.raw_input_ids")]);
  });

  it("bad prompts: a clear error per prompt; empty and over-long prompts are valid", () => {
    const tok = PromptTokenizer.fromDir(SIGLIP, { contextLength: 64 });
    assert.throws(
      () => tok.encode(["ok", 42]),
      (e: unknown) => e instanceof PromptError && e.index === 1 && /prompt 1: must be a string, got number/.test(e.message),
    );
    assert.throws(() => tok.encode([null]), /prompt 0: must be a string, got null/);
    assert.throws(() => tok.encode(["a", "b", "x\ud800y"]), /prompt 2: is not valid Unicode \(it holds a lone UTF-16 surrogate\)/);
    assert.throws(() => tok.encode(["\udc00"]), /lone UTF-16 surrogate/);
    assert.throws(() => tok.encode(["a".repeat(MAX_PROMPT_CHARS + 1)]), /prompt 0: is 10001 characters long; the limit is 10000/);
    // Surrogate pairs count as one character.
    assert.doesNotThrow(() => tok.encode(["🐕".repeat(MAX_PROMPT_CHARS)]));

    const t0 = performance.now();
    const long = tok.encode(["word ".repeat(MAX_PROMPT_CHARS / 5)]);
    const ms = performance.now() - t0;
    const row = [...long.ids];
    assert.equal(row.length, 64);
    assert.equal(row[63], 1n, "<eos> kept at position 63 after truncation");
    assert.ok(!row.slice(0, 63).includes(0n), "no pads in a truncated row");
    console.log(`10,000-character prompt tokenised in ${ms.toFixed(1)} ms`);

    const empty = tok.encode(["", "!!!", "   "]);
    for (const r of rows(empty.ids, 3, 64)) assert.deepEqual([...r], [1n, ...new Array(63).fill(0n)]);
    assert.deepEqual(tok.encode([]).dims, [0, 64]);
    // The pipeline's split API: canonicalize one prompt, then encode canonical forms.
    assert.throws(
      () => tok.canonicalize(7, 5),
      (e: unknown) => e instanceof PromptError && e.index === 5,
    );
    assert.deepEqual([...tok.encodeCanonical([tok.canonicalize("A photo of a Dog.")])], [...tok.encode(["A photo of a Dog."]).ids]);
  });

  it("the server's text path names each bad prompt by its own index, once", async () => {
    const tokenizer = PromptTokenizer.fromDir(SIGLIP, { contextLength: 64 });
    const backend = {
      inferText: async (_graph: string, _ids: BigInt64Array, dims: number[]) => ({
        embeds: new Float32Array(dims[0]! * 4).fill(1),
        dims: [dims[0]!, 4],
        runMs: 0,
      }),
    };
    const embedder = new TextEmbedder({ graph: { name: "g" } as never, tokenizer, backend: backend as never, maxBatch: 8, cacheBytes: 1 << 20 });
    const out = await embedder.embed(["ok", "a".repeat(MAX_PROMPT_CHARS + 1), "x\ud800y", 5, null]);
    assert.ok(out[0]!.embedding);
    assert.deepEqual(
      out.slice(1).map((o) => o.error?.message),
      [
        "prompt 1: is 10001 characters long; the limit is 10000",
        "prompt 2: is not valid Unicode (it holds a lone UTF-16 surrogate)",
        "prompt 3: must be a string, got number",
        "prompt 4: must be a string, got null",
      ],
    );
  });
});

describe("SigLIP2 text: checkpoint", { skip }, () => {
  it("reads the text config with defaults, through the shard index", () => {
    const s = loadSiglipText(SIGLIP);
    try {
      assert.deepEqual(
        {
          w: s.spec.width,
          mlp: s.spec.mlpWidth,
          depth: s.spec.depth,
          heads: s.spec.numHeads,
          vocab: s.spec.vocabSize,
          proj: s.spec.projectionSize,
          ctx: s.spec.contextLength,
          eps: s.spec.layerNormEps,
        },
        { w: 32, mlp: 80, depth: 2, heads: 2, vocab: 850, proj: 40, ctx: 64, eps: 1e-6 },
      );
      // Only shard 1 holds text_model.* and the logit parameters.
      assert.deepEqual(
        s.weights.paths.map((p) => path.basename(p)),
        ["model-00001-of-00002.safetensors"],
      );
    } finally {
      s.weights.close();
    }
  });
});

describe("SigLIP2 text: compiled tower vs upstream", { skip }, () => {
  const tmp = tempDir("radio-text-");
  const index = skip ? null : (JSON.parse(readFileSync(path.join(FIXTURE, "reference_index.json"), "utf8")) as Index);
  const ref = skip ? null : SafetensorsFile.open(path.join(FIXTURE, "reference.safetensors"));
  const graphs: Record<string, LoadedTextGraph> = {};
  before(async () => {
    for (const precision of ["fp32", "fp16", "int8"] as const) {
      const out = path.join(tmp.dir, precision);
      await compileTextTower({ siglipDir: SIGLIP, outDir: out, precision });
      graphs[precision] = await loadTextGraph(out, { intraOpThreads: 1 });
    }
  });
  after(async () => {
    for (const g of Object.values(graphs)) await g.session.release();
    ref?.close();
    tmp.cleanup();
  });

  it("metadata: format, dims, special ids, logit scale/bias equal the reference", () => {
    const m = readTextMetadata(path.join(tmp.dir, "fp32"));
    assert.equal(m.format, "radio-text-onnx/1");
    assert.equal(m.space, "siglip2-g");
    assert.deepEqual([m.contextLength, m.embedDim, m.vocabSize, m.padId, m.eosId, m.input, m.output], [64, 40, 850, 0, 1, "input_ids", "text_embeds"]);
    assert.equal(m.logitScale, ref!.readFloat32("siglip.logit_scale")[0]);
    assert.equal(m.logitBias, ref!.readFloat32("siglip.logit_bias")[0]);
    assert.ok(Math.abs(m.logitScale - index!.text.logit_scale) < 1e-6 && Math.abs(m.logitBias - index!.text.logit_bias) < 1e-6);
    assert.deepEqual(m.tokenizerFiles, ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"]);
    for (const f of ["model.onnx", ...m.weights.files, ...m.tokenizerFiles]) assert.match(m.sha256[f] ?? "", /^[0-9a-f]{64}$/, f);
  });

  it("fp32 embeddings within relative L2 1e-6 of upstream, per prompt (raw and normalised)", async () => {
    const want = ref!.readFloat32("text.embeddings");
    const wantN = ref!.readFloat32("text.embeddings_normalized");
    const got = await embedText(graphs.fp32!, index!.text.prompts);
    const gotN = await embedText(graphs.fp32!, index!.text.prompts, { normalize: true });
    assert.deepEqual(got.dims, [13, 40]);
    const r = rows(got.embeddings, 13, 40).map((g, i) => relL2(g, want.subarray(i * 40, (i + 1) * 40)));
    const rN = rows(gotN.embeddings, 13, 40).map((g, i) => relL2(g, wantN.subarray(i * 40, (i + 1) * 40)));
    console.log(
      `fp32 rel L2 per prompt: max ${Math.max(...r).toExponential(2)} [${r.map((v) => v.toExponential(1)).join(" ")}]; normalised max ${Math.max(...rN).toExponential(2)}`,
    );
    for (const v of [...r, ...rN]) assert.ok(v <= 1e-6, `rel L2 ${v}`);
    // One prompt at a time gives the same rows (no mask: rows are independent).
    const one = await embedText(graphs.fp32!, [index!.text.prompts[9]!]);
    assert.ok(relL2(one.embeddings, got.embeddings.subarray(9 * 40, 10 * 40)) <= 1e-6);
  });

  it("fp16 cosine ≥ 0.999 and int8 cosine ≥ 0.99 against upstream", async () => {
    const want = ref!.readFloat32("text.embeddings");
    for (const [precision, floor] of [
      ["fp16", 0.999],
      ["int8", 0.99],
    ] as const) {
      const got = await embedText(graphs[precision]!, index!.text.prompts);
      const c = rows(got.embeddings, 13, 40).map((g, i) => cosine(g, want.subarray(i * 40, (i + 1) * 40)));
      console.log(`${precision} cosine per prompt: min ${Math.min(...c).toFixed(8)}`);
      for (const v of c) assert.ok(v >= floor, `${precision} cosine ${v}`);
    }
  });
});

describe("SigLIP2 text: CLI", { skip }, () => {
  const tmp = tempDir("radio-text-cli-");
  after(() => tmp.cleanup());

  it("compile-text then embed-text reproduce upstream (normalised)", () => {
    const ref = SafetensorsFile.open(path.join(FIXTURE, "reference.safetensors"));
    const wantN = ref.readFloat32("text.embeddings_normalized");
    const ids = ref.readInt64("text.input_ids");
    ref.close();
    const out = path.join(tmp.dir, "g");
    const run = (...args: string[]) => execFileSync(process.execPath, [...CLI, ...args], { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
    const meta = JSON.parse(run("compile-text", "--siglip", SIGLIP, "--out", out, "--repo", "google/siglip2-giant-opt-patch16-384"));
    assert.equal(meta.source.repo, "google/siglip2-giant-opt-patch16-384");
    const r = JSON.parse(run("embed-text", "--graph", out, "--normalize", "--threads", "1", "A photo of a Dog.", ""));
    assert.deepEqual(r.canonical, ["a photo of a dog", ""]);
    assert.deepEqual(r.inputIds[0], [...ids.subarray(0, 64)].map(Number));
    assert.ok(relL2(r.embeddings[0], wantN.subarray(0, 40)) <= 1e-6);
    assert.ok(relL2(r.embeddings[1], wantN.subarray(3 * 40, 4 * 40)) <= 1e-6, "the empty prompt is fixture row 3");
  });
});
