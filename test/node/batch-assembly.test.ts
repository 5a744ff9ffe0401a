// How the pipeline builds a batch tensor and what it asks the inference backend for, with a fake
// backend: decoded images are copied into the batch as they are (uint8 RGB, [B, H, W, 3]), a
// batch's buffer handed back by the backend is reused for a later batch of the same size (and fully
// overwritten), and only the outputs the batch's requests need are fetched (summary-only calls
// never ask for the features).
import assert from "node:assert/strict";
import { describe, it } from "node:test";

import type { GraphMetadata } from "../../server/src/compiler/metadata.js";
import type { ServedGraph } from "../../server/src/pipeline/graphs.js";
import { Pipeline, type InferenceBackend } from "../../server/src/pipeline/pipeline.js";
import { TensorBuffers } from "../../server/src/pipeline/tensor-buffers.js";
import type { ImageOutcome, OutputKind } from "../../server/src/pipeline/types.js";
import { createPathPolicy } from "../../server/src/preprocess/index.js";

const SIDE = 32; // 2×2 patches of 16
const S = 6; // summary width
const C = 5; // feature channels

function graph(heatmap: GraphMetadata["heatmap"] = null): ServedGraph {
  const metadata = {
    heatmap,
    patchSize: 16,
    windowSize: null,
    normMean: [0.5, 0.25, 0.125],
    normStd: [0.5, 0.25, 0.75],
    resolution: { preferred: [SIDE, SIDE], max: 2048, step: 16 },
  } as unknown as GraphMetadata;
  return {
    name: "m",
    dir: "/nonexistent",
    metadata,
    adaptors: [],
    text: null,
    geometry: { patchSize: 16, windowSize: null, maxResolution: 2048, preferred: [SIDE, SIDE] },
  };
}

interface Call {
  pixels: Uint8Array;
  copy: Uint8Array;
  buffer: ArrayBufferLike;
  dims: number[];
  outputs: readonly string[] | undefined;
}

/** Records every batch; hands its input back like the real worker does. */
function fakeBackend(): InferenceBackend & { calls: Call[] } {
  const calls: Call[] = [];
  return {
    workers: 1,
    calls,
    async infer(_model, pixels, dims, outputs) {
      calls.push({ pixels, copy: pixels.slice(), buffer: pixels.buffer, dims: [...dims], outputs });
      const [B] = dims;
      const positions = (dims[1] / 16) * (dims[2] / 16);
      const wantS = !outputs || outputs.includes("summary");
      const wantF = !outputs || outputs.includes("features");
      return {
        summary: wantS ? new Float32Array(B * S).fill(1) : new Float32Array(0),
        summaryDims: wantS ? [B, S] : [],
        features: wantF ? new Float32Array(B * positions * C).fill(2) : new Float32Array(0),
        featureDims: wantF ? [B, positions, C] : [],
        runMs: 1,
        input: pixels,
      };
    },
  };
}

function image(seed: number): Uint8Array {
  const a = new Uint8Array(SIDE * SIDE * 3);
  for (let i = 0; i < a.length; i++) a[i] = (i * 31 + seed * 97) % 256;
  return a;
}

async function pipelineWith(backend: InferenceBackend, m: ServedGraph, maxBatch: number, maxQueueDelayMs = 0): Promise<Pipeline> {
  return new Pipeline({
    graphs: [m],
    inference: backend,
    postprocess: { postprocess: () => Promise.reject(new Error("no postprocess in this test")) },
    paths: await createPathPolicy([]),
    maxBatch,
    maxQueueDelayMs,
    maxQueue: 64,
    decodeParallelism: 2,
  });
}

async function submit(p: Pipeline, images: Uint8Array[], output: OutputKind = "summary"): Promise<ImageOutcome[]> {
  const outcomes: ImageOutcome[] = [];
  const handle = p.submit(
    {
      graph: "",
      resolution: `${SIDE}x${SIDE}`,
      output,
      heatmap: { mode: "pca1", smoothing: false, sigma: 0, outputHeight: 0, outputWidth: 0, maxSide: 0 },
      images: images.map((data, i) => ({ id: `img${i}`, raw: { data, height: SIDE, width: SIDE, channels: 3 as const, dtype: "uint8" as const } })),
      deadline: null,
    },
    (o) => {
      outcomes.push(o);
    },
  );
  await handle.done;
  return outcomes.sort((a, b) => a.index - b.index);
}

describe("batch assembly", () => {
  it("copies decoded images into the batch as they are, uint8 RGB [B, H, W, 3]", async () => {
    const backend = fakeBackend();
    const p = await pipelineWith(backend, graph(), 1);
    const imgs = [image(1), image(2), image(3)];
    const out = await submit(p, imgs);
    assert.ok(out.every((o) => o.output));
    assert.equal(backend.calls.length, 3);
    // One image a batch; decodes may finish in any order, so each batch is matched to its image by content.
    for (const c of backend.calls) {
      assert.deepEqual(c.dims, [1, SIDE, SIDE, 3]);
      assert.ok(
        imgs.some((e) => e.every((v, i) => v === c.copy[i])),
        "a batch holds exactly one image, its bytes unchanged",
      );
    }
    p.close();
  });

  it("reuses a batch buffer the backend handed back, overwriting all of it", async () => {
    const backend = fakeBackend();
    const p = await pipelineWith(backend, graph(), 1);
    await submit(p, [image(4)]);
    await submit(p, [image(5)]);
    await submit(p, [image(6)]);
    assert.equal(backend.calls.length, 3);
    assert.equal(backend.calls[1]!.buffer, backend.calls[0]!.buffer, "the second batch reuses the first one's buffer");
    assert.equal(backend.calls[2]!.buffer, backend.calls[0]!.buffer);
    assert.deepEqual(backend.calls[2]!.copy, image(6), "no value of the earlier image is left");
    p.close();
  });

  it("TensorBuffers: takes the smallest free buffer that fits (up to twice the size), keeps at most `max`", () => {
    const t = new TensorBuffers(2);
    const a = new ArrayBuffer(400);
    const b = new ArrayBuffer(160);
    const c = new ArrayBuffer(1000);
    t.give(a);
    t.give(b);
    t.give(c); // over max: the oldest (a) goes
    assert.equal(t.size, 2);
    const x = t.take(160); // fits b exactly
    assert.equal(x.buffer, b);
    assert.equal(x.length, 160);
    const y = t.take(400); // c (1000) is over twice the size, so a new one
    assert.notEqual(y.buffer, c);
    assert.equal(y.byteLength, 400);
    t.give(new SharedArrayBuffer(64)); // not reusable as an ORT input: ignored
    t.give(c); // already free: not twice
    assert.equal(t.size, 1);
  });

  it("fetches only the outputs the batch needs", async () => {
    const backend = fakeBackend();
    const p = await pipelineWith(backend, graph(), 8, 50);
    const summary = await submit(p, [image(8), image(9)], "summary");
    assert.deepEqual(backend.calls.at(-1)!.outputs, ["summary"]);
    assert.deepEqual(
      summary.map((o) => o.output!.tensor.shape),
      [[S], [S]],
    );
    const nlc = await submit(p, [image(10)], "features_nlc");
    assert.deepEqual(backend.calls.at(-1)!.outputs, ["features"]);
    assert.deepEqual(nlc[0]!.output!.tensor.shape, [4, C]);
    // Two requests whose images share a batch (same size, submitted together, 50 ms batching delay): both outputs.
    const before = backend.calls.length;
    const [a, b] = await Promise.all([submit(p, [image(11)], "summary"), submit(p, [image(12)], "features_nlc")]);
    assert.deepEqual(a[0]!.output!.tensor.shape, [S]);
    assert.deepEqual(b[0]!.output!.tensor.shape, [4, C]);
    assert.deepEqual(
      backend.calls.slice(before).map((c) => c.outputs),
      [["summary", "features"]],
    );
    p.close();
  });

  it("heatmaps from a graph compiled with --heatmap fetch its heatmap outputs, not the features", async () => {
    const outputs = { basis: "b", tridiagonal: "t", projections: "p", outliers: "o", norms: "n" };
    const backend = fakeBackend();
    const p = await pipelineWith(backend, graph({ steps: 2, outputs }), 8, 50);
    await submit(p, [image(13)], "heatmap");
    assert.deepEqual(backend.calls.at(-1)!.outputs, ["heatmap"]);
    await Promise.all([submit(p, [image(14)], "heatmap"), submit(p, [image(15)], "features_nlc")]);
    assert.deepEqual(backend.calls.at(-1)!.outputs, ["features", "heatmap"]);
    p.close();
    // Without the head, heatmaps need the features.
    const plain = fakeBackend();
    const q = await pipelineWith(plain, graph(), 8);
    await submit(q, [image(16)], "heatmap");
    assert.deepEqual(plain.calls.at(-1)!.outputs, ["features"]);
    q.close();
  });
});
