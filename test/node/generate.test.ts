/**
 * The generator's text-feature files, from the sidecar's side: float16 rounding, the pickle writer's
 * opcodes, the torch.save zip written beside model.safetensors (tiny-text), and the tiny SigLIP2 folder
 * read by the sidecar's own loaders (text config, tokenizer) and compiled into a text graph.
 * test/python/test_generated_text_checkpoints.py checks the same files with torch and transformers.
 */
import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import { after, before, describe, it } from "node:test";

import { adaptorCheckpointName, generateCheckpoint, PRESETS } from "../../server/src/synthetic/generate.js";
import { generateSiglip, makeGemmaTokenizer, TINY_SIGLIP } from "../../server/src/synthetic/generate-siglip.js";
import { SafetensorsFile } from "../../server/src/checkpoint/safetensors.js";
import { loadSiglipText } from "../../server/src/checkpoint/siglip.js";
import {
  float16BitsToFloat32,
  float32ToFloat16Bits,
  pickle,
  PyFloat,
  PyGlobal,
  PyObject,
  PyTuple,
  roundToFloat16,
} from "../../server/src/synthetic/torch-save.js";
import { compileTextTower } from "../../server/src/compiler/compile-text.js";
import { PromptTokenizer } from "../../server/src/preprocess/text.js";
import { embedText, loadTextGraph } from "../../server/src/runtime/text-session.js";
import { tempDir } from "./support/server.js";

describe("float16 rounding", () => {
  it("rounds to nearest, ties to even, with subnormals, overflow and specials", () => {
    const cases: [number, number][] = [
      [0, 0x0000],
      [-0, 0x8000],
      [1, 0x3c00],
      [-2, 0xc000],
      [65504, 0x7bff],
      [65519.99, 0x7bff],
      [65520, 0x7c00],
      [1e9, 0x7c00],
      [Infinity, 0x7c00],
      [-Infinity, 0xfc00],
      [2 ** -24, 0x0001],
      [2 ** -25, 0x0000],
      [1.5 * 2 ** -25, 0x0001],
      [2 ** -14, 0x0400],
      [2 ** -14 - 2 ** -24, 0x03ff],
      [1 + 2 ** -11, 0x3c00],
      [1 + 3 * 2 ** -11, 0x3c02],
      [1 + 2 ** -11 + 2 ** -20, 0x3c01],
      [1 / 3, 0x3555],
    ];
    for (const [x, bits] of cases) assert.equal(float32ToFloat16Bits(x), bits, `${x}`);
    assert.ok(Number.isNaN(float16BitsToFloat32(float32ToFloat16Bits(NaN))));
    for (let h = 0; h < 0x7c00; h += 7) assert.equal(float32ToFloat16Bits(float16BitsToFloat32(h)), h);
    assert.equal(roundToFloat16(0.1), 0.0999755859375);
  });
});

describe("pickle writer (protocol 2)", () => {
  const bytes = (v: Parameters<typeof pickle>[0]) => [...pickle(v)];
  it("writes the opcodes python writes for scalars", () => {
    assert.deepEqual(bytes(null), [0x80, 2, 0x4e, 0x2e]);
    assert.deepEqual(bytes(true), [0x80, 2, 0x88, 0x2e]);
    assert.deepEqual(bytes(5), [0x80, 2, 0x4b, 5, 0x2e]);
    assert.deepEqual(bytes(2048), [0x80, 2, 0x4d, 0x00, 0x08, 0x2e]);
    assert.deepEqual(bytes(-1), [0x80, 2, 0x4a, 0xff, 0xff, 0xff, 0xff, 0x2e]);
    assert.deepEqual(bytes(2n ** 40n), [0x80, 2, 0x8a, 6, 0, 0, 0, 0, 0, 1, 0x2e]);
    assert.deepEqual(bytes(new PyFloat(0)), [0x80, 2, 0x47, 0, 0, 0, 0, 0, 0, 0, 0, 0x2e]);
    assert.deepEqual(bytes(0.5), [0x80, 2, 0x47, 0x3f, 0xe0, 0, 0, 0, 0, 0, 0, 0x2e]);
  });
  it("memoises strings and globals; tuples, dicts, NEWOBJ + BUILD", () => {
    // ('ab', 'ab'): BINUNICODE + BINPUT 0, then BINGET 0
    assert.deepEqual(bytes(new PyTuple(["ab", "ab"])), [0x80, 2, 0x58, 2, 0, 0, 0, 0x61, 0x62, 0x71, 0, 0x68, 0, 0x86, 0x2e]);
    const g = new PyGlobal("torch", "float32");
    assert.deepEqual(bytes([g, g]), [0x80, 2, 0x5d, 0x28, 0x63, ...Buffer.from("torch\nfloat32\n"), 0x71, 0, 0x68, 0, 0x65, 0x2e]);
    const ns = bytes(new PyObject(new PyGlobal("argparse", "Namespace"), new Map([["x", 1]])));
    // GLOBAL, BINPUT 0, EMPTY_TUPLE, NEWOBJ, EMPTY_DICT, MARK, 'x' BINPUT 1, 1, SETITEMS, BUILD
    assert.deepEqual(ns, [
      0x80,
      2,
      0x63,
      ...Buffer.from("argparse\nNamespace\n"),
      0x71,
      0,
      0x29,
      0x81,
      0x7d,
      0x28,
      0x58,
      1,
      0,
      0,
      0,
      0x78,
      0x71,
      1,
      0x4b,
      1,
      0x75,
      0x62,
      0x2e,
    ]);
  });
});

describe("generated tiny-text checkpoint and SigLIP2 folder", () => {
  const tmp = tempDir("radio-gen-");
  const radio = path.join(tmp.dir, "tiny-text");
  const siglip = path.join(tmp.dir, "siglip");
  before(async () => {
    await generateCheckpoint(radio, PRESETS["tiny-text"]);
    await generateSiglip(siglip, TINY_SIGLIP);
  });
  after(() => tmp.cleanup());

  it("writes the .pth as a stored zip with data.pkl first, and fp16-exact backbone values", () => {
    assert.equal(adaptorCheckpointName("c-radio_v4-h"), "c-radio_v4-h_half.pth.tar");
    const zip = readFileSync(path.join(radio, "c-radio_v4-h_half.pth.tar"));
    assert.equal(zip.readUInt32LE(0), 0x04034b50);
    assert.equal(zip.readUInt16LE(8), 0, "STORED");
    const nameLen = zip.readUInt16LE(26);
    assert.equal(zip.subarray(30, 30 + nameLen).toString(), "c-radio_v4-h_half.pth/data.pkl");
    assert.equal((30 + nameLen + zip.readUInt16LE(28)) % 64, 0, "data 64-byte aligned");
    const f = SafetensorsFile.open(path.join(radio, "model.safetensors"));
    try {
      for (const [name, info] of f.tensors) {
        if (info.dtype !== "F32") continue;
        const v = f.readFloat32(name);
        for (let i = 0; i < v.length; i += 97) assert.equal(roundToFloat16(v[i]!), v[i], name);
      }
    } finally {
      f.close();
    }
    const cfg = JSON.parse(readFileSync(path.join(radio, "config.json"), "utf8"));
    assert.equal(cfg.args.teachers[0].spatial_mlp_version, "attn");
    assert.deepEqual(cfg.adaptor_configs, {});
  });

  it("rejects adaptors on a width not divisible by 16", async () => {
    await assert.rejects(generateCheckpoint(path.join(tmp.dir, "bad"), { ...PRESETS["tiny-so400m"], adaptors: true }), /divisible by 16.*72/);
    assert.ok(!existsSync(path.join(tmp.dir, "bad", "model.safetensors")));
  });

  it("the tokenizer: Gemma layout, whole words for the word list, bytes for the rest", () => {
    const { tokenizer, vocabSize } = makeGemmaTokenizer();
    const vocab = (tokenizer.model as { vocab: Record<string, number> }).vocab;
    assert.deepEqual(Object.entries(vocab).slice(0, 5), [
      ["<pad>", 0],
      ["<eos>", 1],
      ["<bos>", 2],
      ["<unk>", 3],
      ["<mask>", 4],
    ]);
    assert.equal(vocab["<0x00>"], 13);
    assert.equal(vocab["<0xFF>"], 268);
    assert.equal(Object.keys(vocab).length, vocabSize);
    assert.deepEqual(new Set(Object.values(vocab)).size, vocabSize, "ids unique");
    const tok = PromptTokenizer.fromDir(siglip, { contextLength: 64 });
    assert.deepEqual([tok.padId, tok.eosId, tok.bosId], [0, 1, null]);
    const row = [...tok.encode(["A photo of a dog."]).ids].map(Number);
    const ids = ["a", "▁photo", "▁of", "▁a", "▁dog"].map((t) => vocab[t]);
    assert.deepEqual(row, [...ids, 1, ...new Array(58).fill(0)]);
    const emoji = [...tok.encode(["🐶"]).ids].map(Number).slice(0, 5);
    assert.deepEqual(emoji, [vocab["<0xF0>"], vocab["<0x9F>"], vocab["<0x90>"], vocab["<0xB6>"], 1]);
  });

  it("the sidecar loads the text tower, compiles it and embeds prompts into the siglip2-g size", async () => {
    const s = loadSiglipText(siglip);
    try {
      assert.deepEqual([s.spec.width, s.spec.depth, s.spec.numHeads, s.spec.projectionSize, s.spec.contextLength], [32, 2, 2, 40, 64]);
      assert.deepEqual(
        s.weights.paths.map((p) => path.basename(p)),
        ["model-00001-of-00002.safetensors"],
      );
      assert.ok(s.logitBias < 0);
    } finally {
      s.weights.close();
    }
    const out = path.join(tmp.dir, "text-graph");
    await compileTextTower({ siglipDir: siglip, outDir: out, precision: "fp32" });
    const g = await loadTextGraph(out, { intraOpThreads: 1 });
    try {
      const r = await embedText(g, ["a photo of a dog", "a photo of a cat"], { normalize: true });
      assert.deepEqual(r.dims, [2, 40]);
      let n = 0;
      for (let i = 0; i < 40; i++) n += r.embeddings[i]! ** 2;
      assert.ok(Math.abs(n - 1) < 1e-5);
    } finally {
      await g.session.release();
    }
  });

  it("vocabSize pads the token embedding past the tokenizer (the real tower's 256000 rows), and the tower still compiles", async () => {
    const dir = path.join(tmp.dir, "siglip-padded");
    const { vocabSize } = await generateSiglip(dir, { ...TINY_SIGLIP, vocabSize: 1000 });
    assert.equal(vocabSize, 1000);
    assert.equal(JSON.parse(readFileSync(path.join(dir, "config.json"), "utf8")).text_config.vocab_size, 1000);
    const s = loadSiglipText(dir);
    try {
      assert.equal(s.spec.vocabSize, 1000);
    } finally {
      s.weights.close();
    }
    await compileTextTower({ siglipDir: dir, outDir: path.join(tmp.dir, "padded-graph"), precision: "fp32" });
    await assert.rejects(generateSiglip(path.join(tmp.dir, "bad-vocab"), { ...TINY_SIGLIP, vocabSize: 10 }), /below the tokenizer/);
  });
});
