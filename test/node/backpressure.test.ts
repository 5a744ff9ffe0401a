/**
 * Backpressure: a result the client has not read yet (HTTP/2 flow control holds it in the server's
 * memory) counts against the queue (--max-queue) until it is let out, and a call whose client
 * stopped reading is ended after --stall-timeout-s. A real server in this process on a real unix
 * socket, the tiny model, the real pipeline. The client that stops reading is a bare HTTP/2 client
 * (support/raw-h2.ts) that grants no window beyond the default 64 KB; the others are grpc-js clients.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";

import * as grpc from "@grpc/grpc-js";
import type { ServiceDefinition } from "@grpc/proto-loader";

import { loadPackageDefinition, RADIO_SERVICE } from "../../server/src/transport/grpc/proto.js";
import { DEFAULT_WINDOW, H2_ENHANCE_YOUR_CALM, rawCall } from "./support/raw-h2.js";
import {
  compileTinyModel,
  expectStatus,
  metricValue,
  randomPixels,
  rawUint8,
  scrape,
  startTestServer,
  tempDir,
  waitFor,
  type EmbedRequestMsg,
  type ImageResult,
  type TestServer,
} from "./support/server.js";

const QUEUE = 8;
const EMBED = (loadPackageDefinition()[RADIO_SERVICE] as ServiceDefinition).Embed!;

/** FEATURES_NLC at 512²: 1024 positions × 64 channels × 4 bytes, 256 KB a result (the window is 64 KB). */
function request(prefix: string, n: number, resolution = "512x512"): EmbedRequestMsg {
  return {
    images: Array.from({ length: n }, (_, i) => rawUint8(`${prefix}${i}`, randomPixels(32, 32, i + 1), 32, 32)),
    options: { output: "FEATURES_NLC", resolution },
  };
}

/** The queue as /metrics shows it: images counted against it, and of those the unread results. */
async function queue(ts: TestServer): Promise<{ admitted: number; undelivered: number }> {
  const text = await scrape(ts.server);
  assert.match(text, /^radio_queue_undelivered_results \d+$/m, "/metrics has the unread-results gauge");
  return { admitted: metricValue(text, "radio_queue_admitted_images"), undelivered: metricValue(text, "radio_queue_undelivered_results") };
}

/** Nothing holds a slot and no request is open in the pipeline. */
async function queueEmpty(ts: TestServer, what: string): Promise<void> {
  await waitFor(
    async () => {
      const q = await queue(ts);
      return q.admitted === 0 && q.undelivered === 0 && ts.server.pipeline.activeRequests === 0;
    },
    20_000,
    `no slot held ${what}`,
  );
}

async function embedCount(ts: TestServer, code: string): Promise<number> {
  return metricValue(await scrape(ts.server), "radio_grpc_requests_total", { method: "Embed", code });
}

function assertAllResults(results: ImageResult[], n: number): void {
  assert.equal(results.length, n);
  for (const r of results) assert.deepEqual(r.output?.tensor.shape, [1024, 64], `${r.id}: ${r.error?.message ?? "its features"}`);
}

describe("backpressure", () => {
  const tmp = tempDir();
  let graph: string;
  before(async () => {
    graph = await compileTinyModel(tmp.dir);
  });
  after(() => tmp.cleanup());

  describe("a client that stops reading (stall timeout: the default)", () => {
    let ts: TestServer;
    before(async () => {
      ts = await startTestServer({ graphs: [{ name: "tiny", dir: graph }], maxQueue: QUEUE, threads: 2 }, tmp.dir);
    });
    after(async () => {
      await ts?.close();
    });

    it("its unread results hold the queue: a call that does not fit beside them gets RESOURCE_EXHAUSTED saying so; its cancel frees them", async () => {
      const raw = await rawCall(ts.socket, EMBED.path, EMBED.requestSerialize(request("raw", QUEUE)));
      try {
        await waitFor(async () => (await queue(ts)).undelivered === QUEUE, 60_000, "every result to wait for the client");
        assert.equal((await queue(ts)).admitted, QUEUE, "the unread results fill the queue");
        assert.ok(raw.dataBytes <= DEFAULT_WINDOW, `${raw.dataBytes} bytes reached the client, no more than its window`);
        assert.equal(raw.messages.length, 0, "no whole result got through");

        await expectStatus(
          ts.client.embed(request("late", 1)).done,
          grpc.status.RESOURCE_EXHAUSTED,
          /^the queue is full \(8 of 8 images queued, 8 of them results not yet read by their clients, 1 asked for\); retry later$/,
        );

        const cancelled = await embedCount(ts, "CANCELLED");
        raw.cancel();
        await queueEmpty(ts, "after the client cancelled");
        assert.equal(await embedCount(ts, "CANCELLED"), cancelled + 1);
        assertAllResults(await ts.client.embed(request("after", QUEUE)).done, QUEUE);
      } finally {
        raw.destroy();
      }
    });

    it("a client that disconnects without reading frees its slots too", async () => {
      const raw = await rawCall(ts.socket, EMBED.path, EMBED.requestSerialize(request("raw", QUEUE)));
      try {
        await waitFor(async () => (await queue(ts)).undelivered === QUEUE, 60_000, "every result to wait for the client");
      } finally {
        raw.destroy();
      }
      await queueEmpty(ts, "after the client disconnected");
      assertAllResults(await ts.client.embed(request("after", QUEUE)).done, QUEUE);
    });

    it("a grpc-js client gets every result and leaves no slot held: after reading all, after a cancel mid-stream, after its deadline", async () => {
      assertAllResults(await ts.client.embed(request("all", QUEUE)).done, QUEUE);
      await queueEmpty(ts, "after a full read");

      const call = ts.client.embed(request("cancel", QUEUE));
      await call.first;
      call.call.cancel();
      await expectStatus(call.done, grpc.status.CANCELLED);
      await queueEmpty(ts, "after a cancel");

      // 1 MB results at 1024²: far more work than the deadline allows.
      await expectStatus(ts.client.embed(request("deadline", QUEUE, "1024x1024"), { deadlineMs: 300 }).done, grpc.status.DEADLINE_EXCEEDED);
      await queueEmpty(ts, "after a deadline");
    });
  });

  describe("the stall timeout", () => {
    const STALL_MS = 2000;
    let ts: TestServer;
    before(async () => {
      ts = await startTestServer({ graphs: [{ name: "tiny", dir: graph }], maxQueue: QUEUE, threads: 2, stallTimeoutMs: STALL_MS }, tmp.dir);
    });
    after(async () => {
      await ts?.close();
    });

    it("ends a call whose client stopped reading: its stream is reset (RESOURCE_EXHAUSTED to gRPC clients), its slots freed, the call counted", async () => {
      const exhausted = await embedCount(ts, "RESOURCE_EXHAUSTED");
      const raw = await rawCall(ts.socket, EMBED.path, EMBED.requestSerialize(request("raw", QUEUE)));
      try {
        await waitFor(() => raw.resetCode !== null, 60_000, "the server to reset the stream");
        assert.equal(raw.resetCode, H2_ENHANCE_YOUR_CALM, "RST_STREAM ENHANCE_YOUR_CALM, which gRPC clients read as RESOURCE_EXHAUSTED");
        assert.equal(raw.ended, false, "no trailers before the reset");
        await queueEmpty(ts, "after the stall timeout");
        assert.equal(await embedCount(ts, "RESOURCE_EXHAUSTED"), exhausted + 1);
        assertAllResults(await ts.client.embed(request("after", QUEUE)).done, QUEUE);
      } finally {
        raw.destroy();
      }
    });

    it("never cuts a client that reads slowly but steadily, however long the call takes", async (t) => {
      const ok = await embedCount(ts, "OK");
      const started = performance.now();
      const raw = await rawCall(ts.socket, EMBED.path, EMBED.requestSerialize(request("slow", QUEUE)));
      // 64 KB a tick, a tick every STALL_MS / 20: a 256 KB result every STALL_MS / 5, all eight in
      // 1.6 times the stall timeout, results waiting for the client all along.
      let peak = 0;
      const reader = setInterval(() => {
        peak = Math.max(peak, ts.server.pipeline.undelivered);
        raw.grant(64 * 1024);
      }, STALL_MS / 20);
      try {
        await waitFor(() => raw.ended || raw.resetCode !== null, 60_000, "the call to end");
      } finally {
        clearInterval(reader);
        raw.destroy();
      }
      t.diagnostic(`the call took ${Math.round(performance.now() - started)} ms (stall timeout ${STALL_MS} ms); at most ${peak} results waited for the client`);
      assert.ok(peak > 0, "results waited for the client (the stall clock ran)");
      assert.equal(raw.resetCode, null, "the stream was not reset");
      assert.equal(raw.messages.length, QUEUE);
      assertAllResults(
        raw.messages.flatMap((m) => (EMBED.responseDeserialize(m) as { results: ImageResult[] }).results),
        QUEUE,
      );
      assert.equal(await embedCount(ts, "OK"), ok + 1);
      await queueEmpty(ts, "after the slow read");
    });
  });
});
