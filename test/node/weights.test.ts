/**
 * Weight memory across inference workers: fp32 GEMM weights stay memory-mapped from the graph's
 * weight file in every worker (one physical copy in the page cache) unless pre-packing is forced on,
 * which gives each worker its own anonymous copy instead.
 */
import assert from "node:assert/strict";
import { existsSync, readFileSync, statSync } from "node:fs";
import path from "node:path";
import { after, before, describe, it } from "node:test";

import { SafetensorsFile } from "../../server/src/checkpoint/safetensors.js";
import { compileCheckpoint } from "../../server/src/compiler/compile.js";
import { generateCheckpoint, PRESETS } from "../../server/src/synthetic/generate.js";
import { InferencePool, type PrepackPolicy } from "../../server/src/runtime/pool.js";
import { loadGraph, prepacks, runOutputs } from "../../server/src/runtime/session.js";
import { compileTinyModel, tempDir } from "./support/server.js";

/** Bytes of this process's address space mapped from `file` (smaps "Size" of its mappings). */
function mappedBytes(file: string): number {
  let total = 0;
  let inFile = false;
  for (const line of readFileSync("/proc/self/smaps", "utf8").split("\n")) {
    if (/^[0-9a-f]+-[0-9a-f]+ /.test(line)) inFile = line.endsWith(file);
    else if (inFile && line.startsWith("Size:")) total += Number(line.split(/\s+/)[1]) * 1024;
  }
  return total;
}

describe("weights shared between workers", () => {
  const tmp = tempDir();
  let graph = "";
  let weightsFile = "";
  before(async () => {
    graph = await compileTinyModel(tmp.dir);
    weightsFile = path.join(graph, "model.safetensors");
  });
  after(() => tmp.cleanup());

  async function withPool(prepackWeights: PrepackPolicy): Promise<number> {
    const pool = await InferencePool.start({ graphs: [{ name: "tiny", dir: graph }], workers: 2, intraOpThreads: 1, provider: "cpu", prepackWeights });
    try {
      return mappedBytes(weightsFile);
    } finally {
      await pool.close();
    }
  }

  it("auto: every worker maps the GEMM weights from the file; on: each worker copies them", { skip: process.platform !== "linux" }, async () => {
    const st = SafetensorsFile.open(weightsFile);
    const gemmBytes = [...st.tensors.entries()].filter(([k]) => /\.(qkv|proj|fc1|fc2)\.weight$/.test(k)).reduce((a, [, t]) => a + t.byteLength, 0);
    st.close();
    assert.ok(gemmBytes > 1_000_000, `the tiny checkpoint's linear weights: ${gemmBytes} bytes`);
    const shared = await withPool("auto");
    const copied = await withPool("on");
    // Two workers: with pre-packing off each keeps its linear weights mapped from the file (page
    // cache, one physical copy); with it on neither does (each holds a private packed copy).
    assert.ok(shared - copied >= 1.8 * gemmBytes, `mapped ${shared} (auto) vs ${copied} (on) bytes; linear weights ${gemmBytes}`);
    assert.ok(shared >= 2 * statSync(weightsFile).size * 0.9, `auto mapped ${shared} bytes`);
  });

  it("auto pre-packs only int8 graphs", () => {
    assert.deepEqual(
      ["fp32", "fp16", "int8"].map((p) => prepacks("auto", p as "fp32")),
      [false, false, true],
    );
    assert.equal(prepacks("on", "fp32"), true);
    assert.equal(prepacks("off", "int8"), false);
  });
});

describe("linked weights", () => {
  const tmp = tempDir();
  after(() => tmp.cleanup());

  it("compiling into the checkpoint's own folder (--out = --checkpoint-dir) keeps its weights, and the graph runs", async () => {
    const dir = path.join(tmp.dir, "ckpt");
    await generateCheckpoint(dir, PRESETS.tiny);
    const weights = path.join(dir, "model.safetensors");
    const size = statSync(weights).size;
    await compileCheckpoint({ checkpointDir: dir, outDir: dir });
    assert.ok(existsSync(weights), "the checkpoint's model.safetensors is still there");
    assert.equal(statSync(weights).size, size);
    const graph = await loadGraph(dir, { provider: "cpu", intraOpThreads: 1 });
    try {
      const out = await runOutputs(graph, new Uint8Array(32 * 32 * 3), [1, 32, 32, 3]);
      assert.deepEqual(out.summary!.dims.length, 2);
    } finally {
      await graph.session.release();
    }
  });
});
