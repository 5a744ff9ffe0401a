/**
 * Injected faults, in-process server on a unix socket (test hooks in runtime/worker.ts pick the
 * batch by its height): a hung worker hits the per-batch inference timeout, an out-of-memory
 * worker dies alone; both fail only their batch, with a clear error, and are replaced. A client
 * that disconnects mid-request (its connection closed, no cancel sent) has its queued work dropped.
 * (A crashing worker: server.test.ts. Queue full + the Python client's backoff:
 * test/python/test_reliability.py. Sidecar SIGKILL mid-run: test_reliability.py too.)
 */
import assert from "node:assert/strict";
import http2 from "node:http2";
import net from "node:net";
import { after, before, describe, it } from "node:test";

import * as protoLoader from "@grpc/proto-loader";
import sharp from "sharp";

import { LOADER_OPTIONS, RADIO_PROTO } from "../../server/src/transport/grpc/proto.js";
import { noiseRaw } from "./support/images.js";
import { compileTinyModel, metricValue, randomPixels, rawUint8, scrape, startTestServer, tempDir, waitFor, type TestServer } from "./support/server.js";
// The worker with fault injection (tests only; not imported here: it loads models when imported).
const FAULT_WORKER = new URL("./support/fault-worker.ts", import.meta.url).href;

const HANG_HEIGHT = 96;
const OOM_HEIGHT = 112;
const SLOW_HEIGHT = 128;
const TIMEOUT_MS = 2000;

describe("injected faults", () => {
  const tmp = tempDir("radio-faults-");
  let ts: TestServer;

  before(async () => {
    const graph = await compileTinyModel(tmp.dir);
    // Set for this file's process while it runs: replacement workers get the hooks too.
    process.env.RADIO_TEST_WORKER_HANG_ON_HEIGHT = String(HANG_HEIGHT);
    process.env.RADIO_TEST_WORKER_OOM_ON_HEIGHT = String(OOM_HEIGHT);
    process.env.RADIO_TEST_WORKER_SLOW_ON_HEIGHT = `${SLOW_HEIGHT}:${1.5 * TIMEOUT_MS}`;
    ts = await startTestServer(
      {
        graphs: [{ name: "tiny", dir: graph }],
        workers: 1,
        threads: 2,
        maxBatch: 8,
        maxQueue: 64,
        inferenceTimeoutMs: TIMEOUT_MS,
        workerHeapMb: 128,
        workerModule: FAULT_WORKER,
      },
      tmp.dir,
    );
  });

  after(async () => {
    await ts?.close();
    delete process.env.RADIO_TEST_WORKER_HANG_ON_HEIGHT;
    delete process.env.RADIO_TEST_WORKER_OOM_ON_HEIGHT;
    delete process.env.RADIO_TEST_WORKER_SLOW_ON_HEIGHT;
    tmp.cleanup();
  });

  const replacements = async () => metricValue(await scrape(ts.server), "radio_worker_replacements_total");

  async function delta<T>(names: string[], body: () => Promise<T>): Promise<{ result: T; d: Record<string, number> }> {
    const before = await scrape(ts.server);
    const result = await body();
    const afterText = await scrape(ts.server);
    return { result, d: Object.fromEntries(names.map((n) => [n, metricValue(afterText, n) - metricValue(before, n)])) };
  }

  it("a hung worker: its batch fails at the inference timeout with a clear error, the worker is replaced", async () => {
    const t0 = performance.now();
    const replaced = await replacements();
    const { result, d } = await delta(["radio_inference_timeouts_total", "radio_worker_replacements_total"], async () => {
      const results = await ts.client.embed({
        images: [rawUint8("hangs", randomPixels(HANG_HEIGHT, 32, 1), HANG_HEIGHT, 32), rawUint8("neighbour", randomPixels(32, 32, 2), 32, 32)],
        options: { resolution: "native" },
      }).done;
      await waitFor(async () => (await replacements()) > replaced, 30_000, "the replacement worker");
      return results;
    });
    const [hung, neighbour] = result;
    assert.equal(hung!.error?.code, "INTERNAL");
    assert.match(hung!.error!.message, /"hangs".*did not finish within 2 s.*replaced/);
    assert.ok(neighbour!.output, "the neighbour (another batch) got its result");
    assert.ok(performance.now() - t0 >= TIMEOUT_MS);
    assert.equal(d.radio_inference_timeouts_total, 1);
    assert.equal(d.radio_worker_replacements_total, 1);
    const [again] = await ts.client.embed({ images: [rawUint8("again", randomPixels(32, 32, 3), 32, 32)] }).done;
    assert.ok(again!.output, "the replacement serves");
    assert.equal(ts.server.pool.threads.length, 1);
  });

  it("a slow batch fails at the timeout but its worker, back within the grace period, is kept", async () => {
    const threadId = ts.server.pool.threads[0]!.threadId;
    const { result, d } = await delta(["radio_inference_timeouts_total", "radio_worker_replacements_total"], async () => {
      const results = await ts.client.embed({
        images: [rawUint8("slow", randomPixels(SLOW_HEIGHT, 32, 1), SLOW_HEIGHT, 32)],
        options: { resolution: "native" },
      }).done;
      // The next batch waits for the same worker, which comes back after 1.5 × the timeout.
      const next = await ts.client.embed({ images: [rawUint8("next", randomPixels(32, 32, 2), 32, 32)] }).done;
      return [...results, ...next];
    });
    const [slow, next] = result;
    assert.equal(slow!.error?.code, "INTERNAL");
    assert.match(slow!.error!.message, /"slow".*did not finish within 2 s/);
    assert.ok(next!.output, "the next batch ran");
    assert.equal(d.radio_inference_timeouts_total, 1);
    assert.equal(d.radio_worker_replacements_total, 0, "no replacement");
    assert.equal(ts.server.pool.threads[0]!.threadId, threadId, "the same worker");
  });

  it("a batch waiting for a worker still busy with a timed-out one is not counted as running (utilization ≤ 1, busy ≤ wall time)", async () => {
    const t0 = performance.now();
    const before = await scrape(ts.server);
    const [slow] = await ts.client.embed({ images: [rawUint8("slow", randomPixels(SLOW_HEIGHT, 32, 1), SLOW_HEIGHT, 32)], options: { resolution: "native" } })
      .done;
    assert.equal(slow!.error?.code, "INTERNAL");
    // The worker stays busy with the slow batch for half the timeout more: the next batch waits for it.
    const next = ts.client.embed({ images: [rawUint8("next", randomPixels(32, 32, 2), 32, 32)] });
    await waitFor(() => ts.server.pool.running === 2, 5000, "the next batch to be sent to the pool");
    const during = await scrape(ts.server);
    const [r] = await next.done;
    assert.ok(r!.output);
    const wall = (performance.now() - t0) / 1000;
    const afterText = await scrape(ts.server);
    assert.equal(metricValue(during, "radio_worker_utilization"), 1, "one worker, running one batch");
    const busy = metricValue(afterText, "radio_worker_busy_seconds_total") - metricValue(before, "radio_worker_busy_seconds_total");
    assert.ok(busy <= wall, `one worker busy ${busy.toFixed(2)} s in ${wall.toFixed(2)} s`);
  });

  it("a worker that runs out of heap dies alone: its batch fails, it is replaced", async () => {
    const replaced = await replacements();
    const { result, d } = await delta(["radio_worker_replacements_total", "radio_inference_timeouts_total"], async () => {
      const results = await ts.client.embed({
        images: [rawUint8("oom", randomPixels(OOM_HEIGHT, 32, 1), OOM_HEIGHT, 32), rawUint8("fine", randomPixels(32, 32, 4), 32, 32)],
        options: { resolution: "native" },
      }).done;
      await waitFor(async () => (await replacements()) > replaced, 30_000, "the replacement worker");
      return results;
    });
    const [oom, fine] = result;
    assert.equal(oom!.error?.code, "INTERNAL");
    assert.match(oom!.error!.message, /"oom".*inference failed.*(memory|terminated|exited)/i);
    assert.ok(fine!.output);
    assert.equal(d.radio_worker_replacements_total, 1);
    assert.equal(d.radio_inference_timeouts_total, 0, "it died, it did not time out");
    const [again] = await ts.client.embed({ images: [rawUint8("again", randomPixels(32, 32, 5), 32, 32)] }).done;
    assert.ok(again!.output);
    assert.equal(await ts.client.healthCheck(""), "SERVING");
  });

  it("a client that disconnects mid-request: its queued work leaves the queue", async () => {
    const pkg = protoLoader.loadSync(RADIO_PROTO, LOADER_OPTIONS);
    const embed = (pkg["radio.v1.Radio"] as Record<string, protoLoader.MethodDefinition<unknown, unknown>>).Embed!;
    const png = await sharp(noiseRaw(64, 64, 7), { raw: { width: 64, height: 64, channels: 3 } })
      .png()
      .toBuffer();
    // 40 small uploads, each upscaled to 256².
    const message = embed.requestSerialize({
      images: Array.from({ length: 40 }, (_, i) => ({ id: `d${i}`, encoded: png })),
      options: { resolution: "256x256" },
    });
    const framed = Buffer.alloc(5 + message.length);
    framed.writeUInt32BE(message.length, 1);
    message.copy(framed, 5);

    const { d } = await delta(["radio_images_dropped_total", "radio_batch_size_sum"], async () => {
      const socket = net.connect(ts.socket);
      const session = http2.connect("http://localhost", { createConnection: () => socket });
      const req = session.request({ ":method": "POST", ":path": "/radio.v1.Radio/Embed", "content-type": "application/grpc", te: "trailers" });
      req.end(framed);
      await new Promise<void>((resolve, reject) => {
        req.once("data", () => resolve());
        req.once("error", reject);
      });
      // Gone: the connection closes without a RST_STREAM or a grpc cancel.
      socket.destroy();
      await waitFor(
        () => ts.server.pipeline.admitted === 0 && ts.server.pipeline.queueDepth === 0 && ts.server.pool.running === 0,
        10_000,
        "the queue to empty",
      );
      // (a batch that was running when the client left is counted when it ends, with the call)
      await waitFor(() => ts.server.pipeline.activeRequests === 0, 5000, "the call to end");
    });
    assert.ok(d.radio_images_dropped_total! >= 20, `${d.radio_images_dropped_total} images dropped`);
    assert.equal(d.radio_images_dropped_total! + d.radio_batch_size_sum!, 40, "every image either ran or was dropped");
    const text = await scrape(ts.server);
    assert.ok(metricValue(text, "radio_grpc_requests_total", { method: "Embed", code: "CANCELLED" }) >= 1);
    const [r] = await ts.client.embed({ images: [rawUint8("after", randomPixels(32, 32, 6), 32, 32)] }).done;
    assert.ok(r!.output, "still serving");
  });
});
