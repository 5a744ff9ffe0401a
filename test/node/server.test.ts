/**
 * The sidecar end to end: a real server (in this process) on a real unix socket, tiny compiled
 * models, a real @grpc/grpc-js client. Outputs are checked against onnxruntime run directly on the
 * same pixels (raw float32 at the model resolution passes preprocessing unchanged).
 */
import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import path from "node:path";
import { after, before, describe, it } from "node:test";

import * as grpc from "@grpc/grpc-js";
import sharp from "sharp";

import { computeHeatmap } from "../../server/src/postprocess/heatmap.js";
import { nlcToChw } from "../../server/src/postprocess/outputs.js";
import { snapAspectBucket } from "../../server/src/preprocess/index.js";
import { loadGraph, runGraph, type LoadedGraph } from "../../server/src/runtime/session.js";
import { noiseRaw } from "./support/images.js";
// The worker with fault injection (tests only; not imported here: it loads models when imported).
const FAULT_WORKER = new URL("./support/fault-worker.ts", import.meta.url).href;
import {
  compileTinyModel,
  batchOf,
  expectStatus,
  floats,
  httpGet,
  maxAbsDiff,
  metricValue,
  RadioClient,
  randomPixels,
  rawFloat,
  rawUint8,
  scrape,
  startTestServer,
  tempDir,
  waitFor,
  type ImageInputMsg,
  type ImageResult,
  type TestServer,
} from "./support/server.js";

const CRASH_HEIGHT = 80; // a batch of this height makes the inference worker exit (test hook)
const TOL = 2e-5;

/** Inference batches the 'tiny' model ran between two metric scrapes. */
function tinyRunsBetween(before: string, after: string): number {
  return metricValue(after, "radio_batch_size_count", { graph: "tiny" }) - metricValue(before, "radio_batch_size_count", { graph: "tiny" });
}

describe("radio sidecar over a unix socket", () => {
  const tmp = tempDir();
  const root = path.join(tmp.dir, "images");
  let graph: string;
  let soGraph: string;
  let ts: TestServer;
  let client: RadioClient;
  let ref: LoadedGraph;
  let refSo: LoadedGraph;
  let pngBytes: Buffer;
  const pngPixels = noiseRaw(64, 64, 7);

  /** Runs the graph directly: uint8 RGB images of one size → summary [B, S], features [B, n, C]. */
  async function reference(g: LoadedGraph, images: Uint8Array[], h: number, w: number) {
    return runGraph(g, batchOf(images), [images.length, h, w, 3]);
  }

  before(async () => {
    const { mkdirSync } = await import("node:fs");
    mkdirSync(root);
    graph = await compileTinyModel(tmp.dir, "tiny");
    soGraph = await compileTinyModel(tmp.dir, "tiny-so400m");
    pngBytes = await sharp(pngPixels, { raw: { width: 64, height: 64, channels: 3 } })
      .png()
      .toBuffer();
    writeFileSync(path.join(root, "noise.png"), pngBytes);
    process.env.RADIO_TEST_WORKER_EXIT_ON_HEIGHT = String(CRASH_HEIGHT);
    ts = await startTestServer(
      {
        graphs: [
          { name: "tiny", dir: graph },
          { name: "so", dir: soGraph },
        ],
        allowedRoots: [root],
        httpPort: 0,
        maxBatch: 8,
        maxBatchTokens: 0, // batching itself is under test here; the CPU token budget has its own test
        queueDelayMs: 5,
        maxQueue: 64,
        threads: 2,
        workerModule: FAULT_WORKER,
      },
      tmp.dir,
    );
    delete process.env.RADIO_TEST_WORKER_EXIT_ON_HEIGHT;
    client = ts.client;
    ref = await loadGraph(graph, { intraOpThreads: 1 });
    refSo = await loadGraph(soGraph, { intraOpThreads: 1 });
  });

  after(async () => {
    await ts?.close();
    tmp.cleanup();
  });

  it("answers Info, health, reflection and the HTTP endpoints", async () => {
    const info = await client.info();
    assert.equal(info.defaultGraph, "tiny");
    const graphs = info.graphs as Record<string, unknown>[];
    assert.deepEqual(
      graphs.map((m) => m.name),
      ["tiny", "so"],
    );
    assert.equal(graphs[0]!.summaryDim, 128);
    assert.equal(graphs[0]!.featureDim, 64);
    assert.equal(graphs[0]!.patchSize, 16);
    assert.equal(graphs[0]!.executionProvider, "CPUExecutionProvider");
    assert.equal(info.maxBatchSize, 8);
    assert.equal(info.onnxruntimeVersion, "1.30.0");

    assert.equal(await client.healthCheck(""), "SERVING");
    assert.equal(await client.healthCheck("radio.v1.Radio"), "SERVING");

    const services = await client.listServices();
    assert.ok(services.includes("radio.v1.Radio"), `reflection lists ${services}`);
    assert.ok(services.includes("grpc.health.v1.Health"), `reflection lists ${services}`);

    const port = ts.server.httpPort!;
    assert.equal((await httpGet(port, "/healthz")).status, 200);
    const ready = await httpGet(port, "/readyz");
    assert.equal(ready.status, 200);
    assert.deepEqual(JSON.parse(ready.body), { status: "ready" });
    const httpInfo = await httpGet(port, "/v1/info");
    assert.equal(httpInfo.status, 200);
    assert.deepEqual(JSON.parse(httpInfo.body), info);
    const metrics = await httpGet(port, "/metrics");
    assert.equal(metrics.status, 200);
    for (const name of [
      "radio_grpc_requests_total",
      "radio_image_failures_total",
      "radio_queue_depth",
      "radio_batch_size",
      "radio_queue_time_seconds",
      "radio_inference_seconds",
      "radio_images_total",
      "radio_worker_utilization",
      "radio_worker_busy_seconds_total",
    ]) {
      assert.ok(metrics.body.includes(name), `/metrics has ${name}`);
    }
    assert.ok(metricValue(metrics.body, "radio_grpc_requests_total", { method: "Info", code: "OK" }) >= 1);
  });

  it("SUMMARY, FEATURES_NLC and FEATURES_NCHW equal onnxruntime on the same pixels", async () => {
    const [h, w] = [32, 48];
    const imgs = [randomPixels(h, w, 1), randomPixels(h, w, 2)];
    const want = await reference(ref, imgs, h, w);
    const [S, n, C] = [want.summaryDims[1]!, want.featureDims[1]!, want.featureDims[2]!];
    const request = (output: "SUMMARY" | "FEATURES_NLC" | "FEATURES_NCHW") =>
      client.embed({ images: imgs.map((im, i) => rawUint8(`img${i}`, im, h, w)), options: { output, resolution: "native" } }).done;

    const summary = await request("SUMMARY");
    const nlc = await request("FEATURES_NLC");
    const nchw = await request("FEATURES_NCHW");
    for (let b = 0; b < 2; b++) {
      const s = summary[b]!.output!;
      assert.equal(summary[b]!.id, `img${b}`);
      assert.deepEqual(s.tensor.shape, [S]);
      assert.equal(s.tensor.dtype, "DTYPE_FLOAT32");
      assert.deepEqual([s.inputHeight, s.inputWidth, s.originalHeight, s.originalWidth], [h, w, h, w]);
      assert.ok(maxAbsDiff(floats(s.tensor), want.summary.subarray(b * S, (b + 1) * S)) <= TOL, "summary matches");

      const wantNlc = want.features.subarray(b * n * C, (b + 1) * n * C);
      const f = nlc[b]!.output!.tensor;
      assert.deepEqual(f.shape, [n, C]);
      assert.ok(maxAbsDiff(floats(f), wantNlc) <= TOL, "NLC features match");

      const g = nchw[b]!.output!.tensor;
      assert.deepEqual(g.shape, [C, h / 16, w / 16]);
      const got = floats(g);
      // [C, h, w][c][y][x] == [h*w, C][y*w + x][c]
      for (const [c, y, x] of [
        [0, 0, 0],
        [5, 1, 2],
        [C - 1, h / 16 - 1, w / 16 - 1],
      ] as const) {
        const p = y * (w / 16) + x;
        assert.ok(Math.abs(got[c * n + p]! - wantNlc[p * C + c]!) <= TOL, `NCHW[${c},${y},${x}]`);
      }
      assert.ok(maxAbsDiff(got, nlcToChw(wantNlc, n, C)) <= TOL, "NCHW features match");
    }
  });

  it("HEATMAP (PCA1 and PCA3_RGB) equals computeHeatmap of the onnxruntime features", async () => {
    const [h, w] = [64, 96];
    const img = randomPixels(h, w, 3);
    const want = await reference(ref, [img], h, w);
    const [n, C] = [want.featureDims[1]!, want.featureDims[2]!];
    const chw = nlcToChw(want.features, n, C);
    const dims = { channels: C, height: h / 16, width: w / 16 };

    const [pca1] = await client.embed({ images: [rawUint8("a", img, h, w)], options: { output: "HEATMAP", resolution: "native" } }).done;
    const t1 = pca1!.output!.tensor;
    assert.equal(t1.dtype, "DTYPE_UINT8");
    assert.deepEqual(t1.shape, [h, w]); // default size: the image's own (longest side <= 512)
    const want1 = computeHeatmap(chw, dims, { mode: "pca1", sigma: null, outputHeight: h, outputWidth: w });
    assert.ok(maxAbsDiff(t1.data, want1.data) <= 1, "PCA1 heatmap matches");

    const [pca3] = await client.embed({
      images: [rawUint8("b", img, h, w)],
      options: { output: "HEATMAP", resolution: "native", heatmap: { mode: "PCA3_RGB", smoothing: true, outputHeight: 20, outputWidth: 30 } },
    }).done;
    const t3 = pca3!.output!.tensor;
    assert.deepEqual(t3.shape, [20, 30, 3]);
    const want3 = computeHeatmap(chw, dims, { mode: "pca3", sigma: 1.51, outputHeight: 20, outputWidth: 30 });
    assert.ok(maxAbsDiff(t3.data, want3.data) <= 1, "PCA3 heatmap matches");

    const [capped] = await client.embed({
      images: [rawUint8("c", img, h, w)],
      options: { output: "HEATMAP", resolution: "native", heatmap: { maxSide: 48 } },
    }).done;
    assert.deepEqual(capped!.output!.tensor.shape, [32, 48]);
  });

  it("mixes path, encoded and raw inputs in one call; each bad image gets its own error", async () => {
    const before = await scrape(ts.server);
    const truncatedJpeg = (
      await sharp(pngPixels, { raw: { width: 64, height: 64, channels: 3 } })
        .jpeg()
        .toBuffer()
    ).subarray(0, 300);
    const images: ImageInputMsg[] = [
      { id: "by-path", path: path.join(root, "noise.png") },
      { id: "by-bytes", encoded: pngBytes },
      rawUint8("by-raw", pngPixels, 64, 64),
      // float32 in [0, 1] is quantised to uint8 (the graph's input): v / 255 comes back as v.
      rawFloat(
        "by-raw-float",
        Float32Array.from(pngPixels, (v) => v / 255),
        64,
        64,
      ),
      { id: "outside", path: "/etc/hostname" },
      { id: "missing", path: path.join(root, "nope.png") },
      { id: "not-an-image", encoded: Buffer.from("hello, world: not an image") },
      { id: "truncated", encoded: truncatedJpeg },
      { id: "short-raw", raw: { data: Buffer.alloc(10), height: 64, width: 64, channels: 3, dtype: "DTYPE_UINT8" } },
      { id: "no-source" },
      rawFloat("out-of-range", new Float32Array(16 * 16 * 3).fill(3), 16, 16),
    ];
    const results = await client.embed({ images, options: { resolution: "native" } }).done;
    assert.deepEqual(
      results.map((r) => r.index),
      images.map((_, i) => i),
      "one result per image",
    );
    assert.deepEqual(
      results.map((r) => r.id),
      images.map((im) => im.id),
    );

    const ok = results.slice(0, 4).map((r) => floats(r.output!.tensor));
    assert.ok(maxAbsDiff(ok[0]!, ok[1]!) <= TOL && maxAbsDiff(ok[0]!, ok[2]!) <= TOL, "the same pixels by path, bytes and raw agree");
    assert.deepEqual(ok[3], ok[2], "float32 raw pixels v / 255 give what uint8 v gives");
    const want = await reference(ref, [pngPixels], 64, 64);
    assert.ok(maxAbsDiff(ok[0]!, want.summary) <= TOL, "and equal onnxruntime");

    const expected: Record<string, string> = {
      outside: "OUTSIDE_ALLOWED_ROOTS",
      missing: "NOT_FOUND",
      "not-an-image": "UNSUPPORTED_FORMAT",
      truncated: "CORRUPT_IMAGE",
      "short-raw": "INVALID_ARGUMENT",
      "no-source": "INVALID_ARGUMENT",
      "out-of-range": "INVALID_ARGUMENT",
    };
    for (const r of results.slice(4)) {
      assert.ok(r.error, `${r.id} failed`);
      assert.equal(r.error.code, expected[r.id], `${r.id}: ${r.error.message}`);
      assert.ok(r.error.message.includes(`"${r.id}"`), `the message names the input: ${r.error.message}`);
    }
    const afterText = await scrape(ts.server);
    const delta = (labels: Record<string, string>) =>
      metricValue(afterText, "radio_image_failures_total", labels) - metricValue(before, "radio_image_failures_total", labels);
    assert.equal(delta({ code: "INVALID_ARGUMENT" }), 3);
    assert.equal(delta({ code: "CORRUPT_IMAGE" }), 1);
  });

  it("batches images from concurrent clients into one run", async () => {
    // Keep the worker busy with a large image; meanwhile four clients send one image each. They
    // queue under one key and run as one batch when the worker frees up.
    const others = [0, 1, 2, 3].map(() => new RadioClient(`unix:${ts.socket}`));
    await Promise.all(others.map((c) => new Promise<void>((res, rej) => c.radio.waitForReady(Date.now() + 5000, (e) => (e ? rej(e) : res())))));
    const blocker = client.embed({ images: [rawUint8("big", noiseRaw(1024, 1024, 3), 1024, 1024)], options: { resolution: "native" } });
    await waitFor(() => ts.server.pool.running === 1, 5000, "the blocker to run");
    const before = await scrape(ts.server);
    try {
      const calls = others.map(
        (c, i) => c.embed({ images: [rawUint8(`c${i}`, randomPixels(32, 32, 10 + i), 32, 32)], options: { resolution: "native" } }).done,
      );
      const results = await Promise.all(calls);
      await blocker.done;
      for (const r of results) assert.ok(r[0]!.output, "each client got its output");
      const afterText = await scrape(ts.server);
      const d = (name: string) => metricValue(afterText, name, { graph: "tiny" }) - metricValue(before, name, { graph: "tiny" });
      // The blocker (observed when it finished, after `before`) plus one batch of four.
      assert.equal(d("radio_batch_size_count"), 2, "the four images ran as one batch");
      assert.equal(d("radio_batch_size_sum"), 5);
    } finally {
      others.forEach((c) => c.close());
    }
  });

  it("snaps mixed aspect ratios to a few resolutions (16 photos are not 16 runs)", async () => {
    // Photo aspect ratios at a tenth of their usual size: the resolution depends on the aspect only.
    const sizes: [number, number][] = [
      [48, 64],
      [64, 48],
      [108, 192],
      [72, 128],
      [60, 80],
      [77, 102],
      [50, 50],
      [30, 31],
      [64, 48],
      [120, 160],
      [96, 128],
      [45, 80],
      [80, 60],
      [51, 51],
      [70, 72],
      [48, 64],
    ];
    const jpegs = await Promise.all(
      sizes.map(([h, w], i) =>
        sharp(noiseRaw(w, h, 100 + i), { raw: { width: w, height: h, channels: 3 } })
          .jpeg()
          .toBuffer(),
      ),
    );
    // With the worker busy, all 16 decode and queue before anything of theirs runs, so the runs are
    // exactly the aspect buckets split into batches of at most maxBatch (8).
    const blocker = client.embed({ images: [rawUint8("big", noiseRaw(1024, 1024, 4), 1024, 1024)], options: { resolution: "native" } });
    await waitFor(() => ts.server.pool.running === 1, 5000, "the blocker to run");
    const before = await scrape(ts.server);
    const results = await client.embed({ images: jpegs.map((b, i) => ({ id: `photo${i}`, encoded: b })) }).done;
    await blocker.done;
    const afterText = await scrape(ts.server);
    const perBucket = new Map<string, number>();
    for (const [h, w] of sizes) perBucket.set(snapAspectBucket(h, w).name, (perBucket.get(snapAspectBucket(h, w).name) ?? 0) + 1);
    const resolutions = new Set(results.map((r) => `${r.output!.inputHeight}x${r.output!.inputWidth}`));
    assert.equal(resolutions.size, perBucket.size, `resolutions ${[...resolutions]}`);
    const runs = tinyRunsBetween(before, afterText) - 1;
    const expected = [...perBucket.values()].reduce((a, n) => a + Math.ceil(n / 8), 0);
    assert.equal(runs, expected, `${runs} runs for ${perBucket.size} aspect buckets (${JSON.stringify([...perBucket])})`);
    for (const r of results) {
      assert.deepEqual([r.output!.originalHeight, r.output!.originalWidth], sizes[r.index]);
      const area = r.output!.inputHeight * r.output!.inputWidth;
      assert.ok(Math.abs(area / (512 * 512) - 1) < 0.1, "near the preferred 512² area");
    }
  });

  /**
   * Small messages, much work: `count` 64² PNGs upscaled to 512² (with resolution BIG, ~50 ms each
   * for the tiny model on 2 cores), so a deadline is not spent uploading.
   */
  const BIG = "512x512";
  function bigRequest(prefix: string, count = 40): ImageInputMsg[] {
    return Array.from({ length: count }, (_, i) => ({ id: `${prefix}${i}`, encoded: pngBytes }));
  }

  async function queueEmpty(): Promise<void> {
    await waitFor(() => ts.server.pipeline.admitted === 0 && ts.server.pipeline.queueDepth === 0 && ts.server.pool.running === 0, 10_000, "the queue to empty");
  }

  it("answers DEADLINE_EXCEEDED and drops the queued images", async () => {
    const before = await scrape(ts.server);
    const call = client.embed({ images: bigRequest("d"), options: { resolution: BIG } }, { deadlineMs: 300 });
    await expectStatus(call.done, grpc.status.DEADLINE_EXCEEDED);
    await queueEmpty();
    const afterText = await scrape(ts.server);
    const dropped =
      metricValue(afterText, "radio_images_dropped_total", { reason: "deadline" }) - metricValue(before, "radio_images_dropped_total", { reason: "deadline" });
    assert.ok(dropped >= 20, `${dropped} queued images dropped at the deadline`);
    assert.ok(metricValue(afterText, "radio_grpc_requests_total", { method: "Embed", code: "DEADLINE_EXCEEDED" }) >= 1);
    const [r] = await client.embed({ images: [rawUint8("after", randomPixels(32, 32, 1), 32, 32)] }).done;
    assert.ok(r!.output, "the server still serves");
  });

  it("drops a cancelled call’s queued images", async () => {
    const before = await scrape(ts.server);
    const call = client.embed({ images: bigRequest("c"), options: { resolution: BIG } });
    await call.first;
    call.call.cancel();
    await expectStatus(call.done, grpc.status.CANCELLED);
    await queueEmpty();
    const afterText = await scrape(ts.server);
    const dropped =
      metricValue(afterText, "radio_images_dropped_total", { reason: "cancelled" }) -
      metricValue(before, "radio_images_dropped_total", { reason: "cancelled" });
    const ran = metricValue(afterText, "radio_batch_size_sum") - metricValue(before, "radio_batch_size_sum");
    assert.ok(dropped >= 20, `${dropped} images dropped`);
    assert.equal(dropped + ran, 40, "every image either ran or was dropped");
  });

  it("rejects a call that does not fit the queue with RESOURCE_EXHAUSTED, all or nothing", async () => {
    const first = client.embed({ images: bigRequest("q", 48), options: { resolution: BIG } });
    await call0Admitted();
    const before = await scrape(ts.server);
    // 60 images fit a 64-image queue, but not beside the first call's (more than 4 still queued).
    await expectStatus(client.embed({ images: bigRequest("r", 60), options: { resolution: BIG } }).done, grpc.status.RESOURCE_EXHAUSTED, /queue is full/);
    await expectStatus(client.embed({ images: bigRequest("s", 65) }).done, grpc.status.INVALID_ARGUMENT, /at most 64/);
    const afterText = await scrape(ts.server);
    assert.ok(metricValue(afterText, "radio_grpc_requests_total", { method: "Embed", code: "RESOURCE_EXHAUSTED" }) >= 1);
    assert.ok(
      metricValue(afterText, "radio_preprocess_seconds_count") - metricValue(before, "radio_preprocess_seconds_count") <= 48,
      "nothing of the refused call was decoded",
    );
    first.call.cancel();
    await first.done.catch(() => undefined);
    await queueEmpty();

    async function call0Admitted() {
      await waitFor(() => ts.server.pipeline.admitted > 24, 5000, "the first call to be admitted");
    }
  });

  it("refuses malformed requests as a whole with INVALID_ARGUMENT", async () => {
    const one = [rawUint8("x", randomPixels(32, 32, 1), 32, 32)];
    await expectStatus(client.embed({ images: one, options: { graph: "nope" } }).done, grpc.status.INVALID_ARGUMENT, /unknown graph "nope"/);
    await expectStatus(client.embed({ images: one, options: { resolution: "banana" } }).done, grpc.status.INVALID_ARGUMENT, /resolution policy/);
    await expectStatus(client.embed({ images: one, options: { resolution: "100x100" } }).done, grpc.status.INVALID_ARGUMENT, /multiple/);
    await expectStatus(client.embed({ images: one, options: { output: "HEATMAP", heatmap: { outputHeight: 10 } } }).done, grpc.status.INVALID_ARGUMENT, /both/);
    // A sigma past the largest feature grid: refused at once (1e7 used to tie up a postprocess worker for minutes).
    await expectStatus(
      client.embed({ images: one, options: { output: "HEATMAP", heatmap: { smoothing: true, sigma: 1e7 } } }).done,
      grpc.status.INVALID_ARGUMENT,
      /heatmap sigma must be a number of feature-grid cells in \[0, 128\], got 10000000/,
    );
    const empty = await client.embed({ images: [] }).done;
    assert.deepEqual(empty, []);
  });

  it("serves several models and picks one by name", async () => {
    const img = randomPixels(32, 32, 9);
    const [r] = await client.embed({ images: [rawUint8("so", img, 32, 32)], options: { graph: "so", resolution: "native" } }).done;
    const want = await reference(refSo, [img], 32, 32);
    assert.deepEqual(r!.output!.tensor.shape, [want.summaryDims[1]]);
    assert.ok(maxAbsDiff(floats(r!.output!.tensor), want.summary) <= TOL);
  });

  it("a crashed worker fails only its batch, with INTERNAL per image, and is replaced", async () => {
    const results = await client.embed({
      images: [rawUint8("crash", randomPixels(CRASH_HEIGHT, 32, 1), CRASH_HEIGHT, 32), rawUint8("fine", randomPixels(32, 32, 2), 32, 32)],
      options: { resolution: "native" },
    }).done;
    const [crash, fine] = results as [ImageResult, ImageResult];
    assert.equal(crash.error?.code, "INTERNAL");
    assert.match(crash.error!.message, /"crash".*inference failed/);
    assert.ok(fine.output, "its neighbour (another batch) succeeded");
    const [again] = await client.embed({ images: [rawUint8("again", randomPixels(32, 32, 3), 32, 32)] }).done;
    assert.ok(again!.output, "the replacement worker serves");
    assert.equal(ts.server.pool.threads.length, 1);
  });
});

describe("CPU batches stay within the token budget (default 1024 patch tokens)", () => {
  const tmp = tempDir();
  after(() => tmp.cleanup());

  it("runs 512² images one by one and 224² images five at a time", async () => {
    const graph = await compileTinyModel(tmp.dir);
    const ts = await startTestServer({ graphs: [{ name: "tiny", dir: graph }], maxBatch: 8, queueDelayMs: 5 }, tmp.dir);
    try {
      const px = noiseRaw(96, 96, 3);
      for (const [res, expectedRuns] of [
        ["512x512", 6],
        ["224x224", 2],
      ] as const) {
        // With the worker busy, all six images queue before any runs: the runs show the cap.
        const blocker = ts.client.embed({ images: [rawUint8("big", noiseRaw(1024, 1024, 4), 1024, 1024)], options: { resolution: "native" } });
        await waitFor(() => ts.server.pool.running === 1, 5000, "the blocker to run");
        const before = await scrape(ts.server);
        const results = await ts.client.embed({ images: Array.from({ length: 6 }, (_, i) => rawUint8(`i${i}`, px, 96, 96)), options: { resolution: res } })
          .done;
        await blocker.done;
        assert.ok(results.every((r) => r.output));
        const runs = tinyRunsBetween(before, await scrape(ts.server)) - 1;
        assert.equal(runs, expectedRuns, `${res}: 6 images ran as ${runs} batches`);
      }
    } finally {
      await ts.close();
    }
  });
});

describe("batch hold (the GPU default): a call runs as one batch, not as its first decoded images", () => {
  const tmp = tempDir();
  after(() => tmp.cleanup());

  it("runs 8 JPEGs of one call as one batch with the worker idle", async () => {
    const graph = await compileTinyModel(tmp.dir);
    const ts = await startTestServer({ graphs: [{ name: "tiny", dir: graph }], maxBatch: 8, maxBatchTokens: 0, queueDelayMs: 1, batchHoldMs: 2000 }, tmp.dir);
    try {
      const jpegs = await Promise.all(
        Array.from({ length: 8 }, (_, i) =>
          sharp(noiseRaw(640, 480, 200 + i), { raw: { width: 640, height: 480, channels: 3 } })
            .jpeg()
            .toBuffer(),
        ),
      );
      const before = await scrape(ts.server);
      const results = await ts.client.embed({ images: jpegs.map((b, i) => ({ id: `j${i}`, encoded: b })), options: { resolution: "224x224" } }).done;
      assert.ok(results.every((r) => r.output));
      const runs = tinyRunsBetween(before, await scrape(ts.server));
      assert.equal(runs, 1, `8 images of one call ran as ${runs} batches`);
    } finally {
      await ts.close();
    }
  });
});

describe("health transitions and graceful shutdown", () => {
  const tmp = tempDir();
  after(() => tmp.cleanup());

  it("NOT_SERVING while loading, SERVING when warm, NOT_SERVING and UNAVAILABLE while draining; in-flight work finishes", async () => {
    const graph = await compileTinyModel(tmp.dir);
    let early: RadioClient | null = null;
    const seen: string[] = [];
    const ts = await startTestServer({ graphs: [{ dir: graph }] }, tmp.dir, {
      async onListening(a) {
        early = new RadioClient(`unix:${a.socket}`);
        seen.push(await early.healthCheck(""));
        await expectStatus(early.embed({ images: [rawUint8("x", randomPixels(32, 32, 1), 32, 32)] }).done, grpc.status.UNAVAILABLE, /loading/);
      },
    });
    try {
      assert.deepEqual(seen, ["NOT_SERVING"]);
      const c = ts.client;
      assert.equal(await c.healthCheck(""), "SERVING");
      assert.equal(((await c.info()).graphs as { name: string }[])[0]!.name, "c-radio_v4-h-fp32", "named after variant and precision");

      const watch = c.watchHealth("");
      await watch.next("SERVING");
      const px = noiseRaw(512, 512, 1);
      const inflight = c.embed({ images: Array.from({ length: 12 }, (_, i) => rawUint8(`i${i}`, px, 512, 512)), options: { resolution: "native" } });
      await inflight.first;
      const stopping = ts.server.shutdown();
      await watch.next("NOT_SERVING");
      assert.equal(await c.healthCheck(""), "NOT_SERVING");
      await expectStatus(c.embed({ images: [rawUint8("late", randomPixels(32, 32, 1), 32, 32)] }).done, grpc.status.UNAVAILABLE, /shutting down/);
      const results = await inflight.done;
      assert.equal(results.length, 12);
      assert.ok(
        results.every((r) => r.output),
        "every admitted image finished",
      );
      watch.call.cancel();
      await stopping;
    } finally {
      (early as RadioClient | null)?.close();
      await ts.close();
    }
  });
});

describe("shutdown past its grace period", () => {
  const tmp = tempDir();
  after(() => tmp.cleanup());

  it("a call whose queued images were dropped ends UNAVAILABLE (the client retries those elsewhere), not OK with results missing", async () => {
    const graph = await compileTinyModel(tmp.dir);
    const ts = await startTestServer({ graphs: [{ dir: graph }], threads: 2, shutdownTimeoutMs: 200 }, tmp.dir);
    try {
      const px = noiseRaw(512, 512, 1);
      const n = 40;
      const inflight = ts.client.embed({ images: Array.from({ length: n }, (_, i) => rawUint8(`i${i}`, px, 512, 512)), options: { resolution: "native" } });
      await inflight.first;
      const stopping = ts.server.shutdown();
      await expectStatus(inflight.done, grpc.status.UNAVAILABLE, /shutting down/);
      await stopping;
      const got = inflight.received.map((r) => r.index);
      assert.ok(got.length < n, `${got.length} of ${n} images ran within the grace period`);
      assert.equal(new Set(got).size, got.length, "no image answered twice");
      assert.ok(inflight.received.every((r) => r.output));
    } finally {
      await ts.close();
    }
  });
});

describe("runGraph input validation", () => {
  const tmp = tempDir();
  let g: LoadedGraph;
  before(async () => {
    g = await loadGraph(await compileTinyModel(tmp.dir), { intraOpThreads: 1 });
  });
  after(async () => {
    await g.session.release();
    tmp.cleanup();
  });

  it("refuses an empty batch or negative sides with a clear error, not onnxruntime's Reshape failure", async () => {
    await assert.rejects(runGraph(g, new Uint8Array(0), [0, 32, 32, 3]), /positive/);
    await assert.rejects(runGraph(g, new Uint8Array(32 * 32 * 3), [1, -32, -32, 3]), /positive/);
  });
});
