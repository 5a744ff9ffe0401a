/**
 * Adaptor heads (siglip2-g, dino_v3_7b, sam3) read from the torch.hub checkpoint and compiled into
 * the image graph, checked against upstream RADIO's outputs on the shared golden fixture (a tiny
 * C-RADIOv4-H-shaped model built and run with upstream code); and the restricted .pth reader.
 */
import assert from "node:assert/strict";
import { existsSync, readFileSync, symlinkSync, writeFileSync, mkdirSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { crc32 } from "node:zlib";
import { after, before, describe, it } from "node:test";

import { extractAdaptors } from "../../server/src/checkpoint/adaptors.js";
import { SafetensorsFile } from "../../server/src/checkpoint/safetensors.js";
import { type TorchTensor, TorchZipCheckpoint } from "../../server/src/checkpoint/torch-zip.js";
import { compileCheckpoint } from "../../server/src/compiler/compile.js";
import { readGraphMetadata } from "../../server/src/compiler/metadata.js";
import { loadGraph, type LoadedGraph, type PixelDims, runAdaptors, runGraph } from "../../server/src/runtime/session.js";
import { tempDir } from "./support/server.js";
import { relL2 } from "./support/compare.js";

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");
const FIXTURE = path.resolve(REPO, "..", "shared", "fixtures", "upstream-adaptor-golden");
const CKPT = path.join(FIXTURE, "C-RADIOv4-H");
const PTH = path.join(CKPT, "c-radio_v4-h_half.pth.tar");
const ADAPTORS = ["siglip2-g", "dino_v3_7b", "sam3"];
const CASES = [
  { name: "b2_224x224", dims: [2, 224, 224, 3] },
  { name: "b1_256x384", dims: [1, 256, 384, 3] },
  { name: "image_jpeg_256x384", dims: [1, 256, 384, 3] },
] as const;
const haveFixture = existsSync(PTH);

/** Mean cosine over rows of `width` values. */
function meanCosine(a: Float32Array, ref: Float32Array, width: number): number {
  let total = 0;
  const rows = ref.length / width;
  for (let r = 0; r < rows; r++) {
    let ab = 0,
      aa = 0,
      bb = 0;
    for (let i = r * width; i < (r + 1) * width; i++) {
      ab += a[i]! * ref[i]!;
      aa += a[i]! ** 2;
      bb += ref[i]! ** 2;
    }
    total += ab / Math.sqrt(aa * bb);
  }
  return total / rows;
}

/** All outputs for one case: backbone summary/features and every adaptor's, by output name. */
async function runAll(g: LoadedGraph, pixels: Uint8Array, dims: readonly number[]): Promise<Map<string, { data: Float32Array; dims: number[] }>> {
  const d = dims as PixelDims;
  const out = new Map<string, { data: Float32Array; dims: number[] }>();
  const bb = await runGraph(g, pixels, d);
  out.set("backbone.summary", { data: bb.summary, dims: bb.summaryDims });
  out.set("backbone.features", { data: bb.features, dims: bb.featureDims });
  for (const [name, t] of Object.entries(await runAdaptors(g, pixels, d))) out.set(name, t);
  return out;
}

describe("adaptor heads vs upstream RADIO (shared golden fixture)", { skip: haveFixture ? false : `fixture missing: ${FIXTURE}` }, () => {
  const tmp = tempDir("radio-adaptors-");
  const ref = haveFixture ? SafetensorsFile.open(path.join(FIXTURE, "reference.safetensors")) : null;
  /** The case's uint8 input, stored NCHW as upstream takes it, in the graph's layout [B, H, W, 3]. */
  const input = (name: string, [B, H, W]: readonly number[]) => {
    const nchw = ref!.readBytes(`${name}.input_u8`);
    const nhwc = new Uint8Array(nchw.length);
    const plane = H! * W!;
    for (let b = 0; b < B!; b++) for (let c = 0; c < 3; c++) for (let i = 0; i < plane; i++) nhwc[(b * plane + i) * 3 + c] = nchw[(b * 3 + c) * plane + i]!;
    return nhwc;
  };
  const expected = (key: string) => ref!.readFloat32(key);
  let fp32 = "";
  let fp16 = "";
  let int8 = "";
  before(async () => {
    fp32 = path.join(tmp.dir, "fp32");
    fp16 = path.join(tmp.dir, "fp16");
    int8 = path.join(tmp.dir, "int8");
    await compileCheckpoint({ checkpointDir: CKPT, outDir: fp32, adaptors: ADAPTORS });
    // fp16 with the fused attention op the CLI picks for fp16 (--attention auto), heads included.
    await compileCheckpoint({ checkpointDir: CKPT, outDir: fp16, adaptors: ADAPTORS, precision: "fp16", attention: "mha" });
    await compileCheckpoint({ checkpointDir: CKPT, outDir: int8, adaptors: ADAPTORS, precision: "int8" });
  });
  after(() => {
    ref?.close();
    tmp.cleanup();
  });

  it("records the adaptors in metadata.json", () => {
    const m = readGraphMetadata(fp32);
    assert.deepEqual(
      m.adaptors.map((a) => [a.name, a.tokenSlot, a.summaryDim, a.featureDim, a.summaryHead.type, a.featureHead.type]),
      [
        ["siglip2-g", 0, 40, 40, "v2", "attn"],
        ["dino_v3_7b", 1, 56, 56, "v2", "v2"],
        ["sam3", 2, 24, 24, "v2", "v2"],
      ],
    );
    assert.deepEqual(m.adaptors[0]!.outputs, { summary: "siglip2-g.summary", features: "siglip2-g.features" });
    assert.deepEqual(m.adaptors[0]!.summaryHead, { type: "v2", inputDim: 64, hiddenDim: 72, outputDim: 40, numBlocks: 1 });
    const f = m.adaptors[0]!.featureHead;
    assert.equal(f.type, "attn");
    if (f.type === "attn") assert.deepEqual([f.numAttnBlocks, f.numHeads, f.blockMlpDim, f.layerNormEps, f.mlp.hiddenDim], [2, 16, 256, 1e-6, 48]);
    assert.equal(m.adaptorSource?.file, "c-radio_v4-h_half.pth.tar");
    assert.ok(m.weights.files.includes("adaptors.safetensors"), `fp32 graphs link the extracted heads: ${m.weights.files}`);
    assert.ok(!existsSync(path.join(fp32, ".adaptors.tmp")), "the scratch folder is removed");
  });

  it("fp32: every adaptor summary and dense output within relative L2 1e-6 of upstream", async () => {
    const g = await loadGraph(fp32, { intraOpThreads: 1 });
    const worst = new Map<string, number>();
    for (const c of CASES) {
      const out = await runAll(g, input(c.name, c.dims), c.dims);
      for (const name of ["backbone", ...ADAPTORS]) {
        for (const kind of ["summary", "features"]) {
          const key = `${name}.${kind}`;
          const want = expected(`${c.name}.${key}`);
          const got = out.get(key)!;
          assert.equal(got.data.length, want.length, `${c.name} ${key} dims [${got.dims}]`);
          const r = relL2(got.data, want);
          console.log(`fp32 ${c.name} ${key}: rel L2 ${r.toExponential(2)}`);
          worst.set(key, Math.max(worst.get(key) ?? 0, r));
          assert.ok(r <= 1e-6, `${c.name} ${key}: rel L2 ${r}`);
        }
      }
    }
    console.log(`fp32 worst rel L2: ${JSON.stringify(Object.fromEntries([...worst].map(([k, v]) => [k, Number(v.toExponential(2))])))}`);
  });

  it("fp16: every adaptor output at cosine >= 0.999 to upstream", async (t) => {
    let g: LoadedGraph;
    try {
      g = await loadGraph(fp16, { intraOpThreads: 1 });
    } catch (err) {
      if (!/NOT_IMPLEMENTED|Could not find an implementation/.test((err as Error).message)) throw err;
      t.skip(`onnxruntime's CPU provider cannot load this fp16 graph: ${(err as Error).message.slice(0, 200)}`);
      return;
    }
    for (const c of CASES) {
      const out = await runAll(g, input(c.name, c.dims), c.dims);
      for (const name of ["backbone", ...ADAPTORS]) {
        for (const kind of ["summary", "features"]) {
          const key = `${name}.${kind}`;
          const want = expected(`${c.name}.${key}`);
          const got = out.get(key)!;
          const width = got.dims[got.dims.length - 1]!;
          const cos = meanCosine(got.data, want, width);
          console.log(`fp16 ${c.name} ${key}: cosine ${cos.toFixed(6)}, rel L2 ${relL2(got.data, want).toExponential(2)}`);
          assert.ok(cos >= 0.999, `${c.name} ${key}: cosine ${cos}`);
        }
      }
    }
  });

  it("int8 (head linears quantized like the backbone's): every output at cosine >= 0.995 to upstream", async () => {
    const g = await loadGraph(int8, { intraOpThreads: 1 });
    const c = CASES[1];
    const out = await runAll(g, input(c.name, c.dims), c.dims);
    for (const name of ["backbone", ...ADAPTORS]) {
      for (const kind of ["summary", "features"]) {
        const key = `${name}.${kind}`;
        const got = out.get(key)!;
        const cos = meanCosine(got.data, expected(`${c.name}.${key}`), got.dims[got.dims.length - 1]!);
        console.log(`int8 ${c.name} ${key}: cosine ${cos.toFixed(5)}`);
        assert.ok(cos >= 0.995, `${c.name} ${key}: cosine ${cos}`);
      }
    }
  });

  it("a checkpoint folder without a .pth.tar says which file to download", async () => {
    const dir = path.join(tmp.dir, "hf-only");
    mkdirSync(dir);
    for (const f of ["config.json", "model.safetensors"]) symlinkSync(path.join(CKPT, f), path.join(dir, f));
    await assert.rejects(
      compileCheckpoint({ checkpointDir: dir, outDir: path.join(tmp.dir, "never"), adaptors: ["siglip2-g"] }),
      /c-radio_v4-h_half\.pth\.tar.*--torchhub-checkpoint/,
    );
    // Given explicitly, the .pth may live anywhere.
    const r = await compileCheckpoint({ checkpointDir: dir, outDir: path.join(tmp.dir, "explicit"), adaptors: ["sam3"], torchhubCheckpoint: PTH });
    assert.deepEqual(
      r.metadata.adaptors.map((a) => a.name),
      ["sam3"],
    );
  });

  it("an adaptor the checkpoint lacks is named with the ones it has", async () => {
    await assert.rejects(
      extractAdaptors(PTH, ["clip"], path.join(tmp.dir, "x.safetensors")),
      /no adaptor "clip"; its teachers are siglip2-g, dino_v3_7b, sam3/,
    );
  });
});

// --- the restricted reader -------------------------------------------------------------------------

/** A minimal STORED zip (local headers, central directory, end record); zip64 records when asked. */
function zipStored(files: { name: string; data: Buffer }[], zip64 = false): Buffer {
  const parts: Buffer[] = [];
  const central: Buffer[] = [];
  let offset = 0;
  for (const f of files) {
    const name = Buffer.from(f.name);
    const crc = crc32(f.data);
    const local = Buffer.alloc(30);
    local.writeUInt32LE(0x04034b50, 0);
    local.writeUInt16LE(20, 4);
    local.writeUInt32LE(crc, 14);
    local.writeUInt32LE(f.data.length, 18);
    local.writeUInt32LE(f.data.length, 22);
    local.writeUInt16LE(name.length, 26);
    // zip64: sizes and offset saturated in the central entry, the real values in extra field 0x0001.
    const extra = Buffer.alloc(zip64 ? 28 : 0);
    if (zip64) {
      extra.writeUInt16LE(0x0001, 0);
      extra.writeUInt16LE(24, 2);
      extra.writeBigUInt64LE(BigInt(f.data.length), 4);
      extra.writeBigUInt64LE(BigInt(f.data.length), 12);
      extra.writeBigUInt64LE(BigInt(offset), 20);
    }
    const cd = Buffer.alloc(46);
    cd.writeUInt32LE(0x02014b50, 0);
    cd.writeUInt16LE(45, 4);
    cd.writeUInt16LE(45, 6);
    cd.writeUInt32LE(crc, 16);
    cd.writeUInt32LE(zip64 ? 0xffffffff : f.data.length, 20);
    cd.writeUInt32LE(zip64 ? 0xffffffff : f.data.length, 24);
    cd.writeUInt16LE(name.length, 28);
    cd.writeUInt16LE(extra.length, 30);
    cd.writeUInt32LE(zip64 ? 0xffffffff : offset, 42);
    parts.push(local, name, f.data);
    central.push(cd, name, extra);
    offset += 30 + name.length + f.data.length;
  }
  const cdBuf = Buffer.concat(central);
  const tail: Buffer[] = [];
  if (zip64) {
    const rec = Buffer.alloc(56);
    rec.writeUInt32LE(0x06064b50, 0);
    rec.writeBigUInt64LE(44n, 4);
    rec.writeUInt16LE(45, 12);
    rec.writeUInt16LE(45, 14);
    rec.writeBigUInt64LE(BigInt(files.length), 24);
    rec.writeBigUInt64LE(BigInt(files.length), 32);
    rec.writeBigUInt64LE(BigInt(cdBuf.length), 40);
    rec.writeBigUInt64LE(BigInt(offset), 48);
    const loc = Buffer.alloc(20);
    loc.writeUInt32LE(0x07064b50, 0);
    loc.writeBigUInt64LE(BigInt(offset + cdBuf.length), 8);
    loc.writeUInt32LE(1, 16);
    tail.push(rec, loc);
  }
  const end = Buffer.alloc(22);
  end.writeUInt32LE(0x06054b50, 0);
  end.writeUInt16LE(zip64 ? 0xffff : files.length, 8);
  end.writeUInt16LE(zip64 ? 0xffff : files.length, 10);
  end.writeUInt32LE(zip64 ? 0xffffffff : cdBuf.length, 12);
  end.writeUInt32LE(zip64 ? 0xffffffff : offset, 16);
  return Buffer.concat([...parts, cdBuf, ...tail, end]);
}

describe("torch.save zip reader", () => {
  const tmp = tempDir("radio-torchzip-");
  after(() => tmp.cleanup());

  it("refuses a pickle that references an unexpected global, naming it and the file", () => {
    // {'state_dict': posix.system('ls')} in protocol 2.
    const pkl = Buffer.concat([
      Buffer.from([0x80, 0x02, 0x7d, 0x28]), // PROTO 2, EMPTY_DICT, MARK
      Buffer.from("X"),
      Buffer.from([10, 0, 0, 0]),
      Buffer.from("state_dict"),
      Buffer.from("cposix\nsystem\n"),
      Buffer.from("X"),
      Buffer.from([2, 0, 0, 0]),
      Buffer.from("ls"),
      Buffer.from([0x85, 0x52, 0x75, 0x2e]), // TUPLE1, REDUCE, SETITEMS, STOP
    ]);
    const file = path.join(tmp.dir, "evil.pth.tar");
    writeFileSync(
      file,
      zipStored([
        { name: "evil/data.pkl", data: pkl },
        { name: "evil/version", data: Buffer.from("3\n") },
      ]),
    );
    assert.throws(
      () => TorchZipCheckpoint.open(file),
      (err: Error) => {
        assert.match(err.message, /evil\.pth\.tar/);
        assert.match(err.message, /global posix\.system/);
        return true;
      },
    );
  });

  it("reads a hand-made zip (plain and zip64) with an allowed pickle and a tensor", () => {
    // {'d': OrderedDict(), 'dtype': torch.float32, 't': _rebuild_tensor_v2(storage 0 (HalfStorage, 4), 1, (3,), (1,), False, OrderedDict())}
    const u = (s: string) => Buffer.concat([Buffer.from("X"), Buffer.from(Uint32Array.of(s.length).buffer), Buffer.from(s)]);
    const pkl = Buffer.concat([
      Buffer.from([0x80, 0x02, 0x7d, 0x28]),
      u("d"),
      Buffer.from("ccollections\nOrderedDict\n"),
      Buffer.from([0x29, 0x52]),
      u("dtype"),
      Buffer.from("ctorch\nfloat32\n"),
      u("t"),
      Buffer.from("ctorch._utils\n_rebuild_tensor_v2\n"),
      Buffer.from([0x28]),
      Buffer.from([0x28]),
      u("storage"),
      Buffer.from("ctorch\nHalfStorage\n"),
      u("0"),
      u("cpu"),
      Buffer.from([0x4b, 4, 0x74, 0x51]),
      Buffer.from([0x4b, 1, 0x4b, 3, 0x85, 0x4b, 1, 0x85, 0x89]),
      Buffer.from("ccollections\nOrderedDict\n"),
      Buffer.from([0x29, 0x52, 0x74, 0x52]),
      Buffer.from([0x75, 0x2e]),
    ]);
    const halves = Buffer.from(Uint16Array.of(0x3c00, 0xc000, 0x3555, 0x7bff).buffer); // 1, -2, 0.333, 65504
    for (const zip64 of [false, true]) {
      const file = path.join(tmp.dir, `ok${zip64 ? "64" : ""}.pth`);
      writeFileSync(
        file,
        zipStored(
          [
            { name: "ok/data.pkl", data: pkl },
            { name: "ok/byteorder", data: Buffer.from("little") },
            { name: "ok/data/0", data: halves },
          ],
          zip64,
        ),
      );
      const c = TorchZipCheckpoint.open(file);
      const root = c.root as Map<string, unknown>;
      assert.ok(root.get("d") instanceof Map);
      assert.equal((root.get("dtype") as { dtype: string }).dtype, "F32");
      assert.deepEqual(Array.from(c.readFloat32(root.get("t") as TorchTensor)), [-2, 0.333251953125, 65504]);
      c.close();
    }
  });

  it("a truncated or non-zip file gets a clear error", { skip: !haveFixture }, () => {
    const truncated = path.join(tmp.dir, "truncated.pth.tar");
    writeFileSync(truncated, readFileSync(PTH).subarray(0, 100_000));
    assert.throws(
      () => TorchZipCheckpoint.open(truncated),
      /truncated\.pth\.tar: not a PyTorch zip checkpoint \(no end-of-central-directory record\); was it downloaded completely\?/,
    );
    const text = path.join(tmp.dir, "notes.pth.tar");
    writeFileSync(text, "this is not a checkpoint\n".repeat(10));
    assert.throws(() => TorchZipCheckpoint.open(text), /notes\.pth\.tar: not a PyTorch zip checkpoint/);
    const tiny = path.join(tmp.dir, "empty.pth.tar");
    writeFileSync(tiny, "");
    assert.throws(() => TorchZipCheckpoint.open(tiny), /empty\.pth\.tar: not a PyTorch zip checkpoint \(only 0 bytes\)/);
  });

  it("reads the fixture: fp16 storages upcast exactly, args and teachers", { skip: !haveFixture }, () => {
    const c = TorchZipCheckpoint.open(PTH);
    try {
      const root = c.root as Map<string, unknown>;
      assert.deepEqual([...root.keys()], ["state_dict", "args", "arch", "epoch", "version"]);
      const sd = root.get("state_dict") as Map<string, TorchTensor>;
      const mean = c.readFloat32(sd.get("input_conditioner.norm_mean")!);
      // The HF file holds the same fp16-rounded values as float32.
      const hf = SafetensorsFile.open(path.join(CKPT, "model.safetensors"));
      assert.deepEqual(Array.from(mean), Array.from(hf.readFloat32("radio_model.input_conditioner.norm_mean")));
      const qkv = c.readFloat32(sd.get("base_model.blocks.1.attn.qkv.weight")!);
      assert.deepEqual(qkv, hf.readFloat32("radio_model.model.blocks.1.attn.qkv.weight"));
      hf.close();
    } finally {
      c.close();
    }
  });
});
