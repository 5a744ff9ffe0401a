/** The dynamic batcher, admission and semaphore on their own (no server, no model). */
import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { Admission } from "../../server/src/batching/admission.js";
import { DynamicBatcher } from "../../server/src/batching/batcher.js";
import { Semaphore } from "../../server/src/batching/semaphore.js";
import { nlcToChw, resolveHeatmapSpec } from "../../server/src/postprocess/outputs.js";

interface It {
  key: string;
  enqueuedAt: number;
  n: number;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function harness(o: {
  maxBatch: number;
  maxDelayMs: number;
  concurrency: number;
  runMs?: number;
  limit?: (it: It) => number;
  pending?: () => number;
  maxHoldMs?: number;
}) {
  const runs: { key: string; ns: number[] }[] = [];
  let release: (() => void)[] = [];
  const b = new DynamicBatcher<It>({
    ...o,
    runBatch: async (key, items) => {
      runs.push({ key, ns: items.map((i) => i.n) });
      if (o.runMs === undefined) await new Promise<void>((r) => release.push(r));
      else await sleep(o.runMs);
    },
  });
  let n = 0;
  const add = (key = "a") => b.add({ key, enqueuedAt: performance.now(), n: n++ });
  const finishAll = () => {
    const r = release;
    release = [];
    r.forEach((f) => f());
  };
  return { b, runs, add, finishAll };
}

describe("DynamicBatcher", () => {
  it("runs a full batch at once, without waiting for the delay", async () => {
    const h = harness({ maxBatch: 3, maxDelayMs: 10_000, concurrency: 1, runMs: 0 });
    h.add();
    h.add();
    assert.equal(h.runs.length, 0);
    h.add();
    assert.deepEqual(h.runs, [{ key: "a", ns: [0, 1, 2] }]);
    await h.b.idle();
  });

  it("caps each key by its limit (a token budget), never above maxBatch nor below 1", async () => {
    // Keys stand for image sizes: 'small' allows 3 per batch, 'big' 0.5 (→ 1), 'huge' 99 (→ maxBatch).
    const budget: Record<string, number> = { small: 3, big: 0.5, huge: 99 };
    const h = harness({ maxBatch: 4, maxDelayMs: 10_000, concurrency: 1, runMs: 0, limit: (it) => budget[it.key]! });
    h.add("big");
    assert.deepEqual(h.runs, [{ key: "big", ns: [0] }]); // full at 1: no waiting for batch-mates
    await h.b.idle();
    for (let i = 0; i < 3; i++) h.add("small");
    await h.b.idle();
    assert.deepEqual(h.runs[1], { key: "small", ns: [1, 2, 3] });
    for (let i = 0; i < 4; i++) h.add("huge");
    await h.b.idle();
    assert.deepEqual(h.runs[2], { key: "huge", ns: [4, 5, 6, 7] });
    h.b.close();
  });

  it("holds a partial batch for items still being decoded, up to maxHoldMs", async () => {
    let decoding = 3;
    const h = harness({ maxBatch: 8, maxDelayMs: 5, concurrency: 1, runMs: 0, pending: () => decoding, maxHoldMs: 60 });
    h.add();
    await sleep(20); // past maxDelayMs: without the hold this batch of 1 would have run
    assert.equal(h.runs.length, 0);
    decoding--;
    h.add();
    decoding -= 2; // the other two failed to decode: nothing more is coming
    h.b.startReadyBatches();
    assert.deepEqual(h.runs, [{ key: "a", ns: [0, 1] }]);
    // Still decoding for good: the hold ends at maxHoldMs.
    decoding = 1;
    const t0 = performance.now();
    h.add();
    await h.b.idle();
    const waited = performance.now() - t0;
    assert.ok(waited >= 55 && waited < 500, `held ${waited.toFixed(0)} ms`);
    assert.deepEqual(h.runs[1], { key: "a", ns: [2] });
  });

  it("runs a partial batch once its oldest item waited maxDelayMs", async () => {
    const h = harness({ maxBatch: 8, maxDelayMs: 20, concurrency: 1, runMs: 0 });
    h.add();
    await sleep(5);
    h.add();
    assert.equal(h.runs.length, 0);
    await sleep(40);
    assert.deepEqual(h.runs, [{ key: "a", ns: [0, 1] }]);
  });

  it("keeps keys apart and accumulates while every slot is busy", async () => {
    const h = harness({ maxBatch: 4, maxDelayMs: 0, concurrency: 1 });
    h.add("a"); // runs alone at once (delay 0, slot free)
    for (let i = 0; i < 6; i++) h.add(i % 2 ? "b" : "a");
    assert.deepEqual(h.runs, [{ key: "a", ns: [0] }]);
    assert.equal(h.b.depth, 6);
    h.finishAll();
    await sleep(0);
    // The oldest waiting item's key goes first, with everything it has (up to maxBatch).
    assert.deepEqual(h.runs[1], { key: "a", ns: [1, 3, 5] });
    h.finishAll();
    await sleep(0);
    assert.deepEqual(h.runs[2], { key: "b", ns: [2, 4, 6] });
    h.finishAll();
    await h.b.idle();
  });

  it("splits more than maxBatch waiting items into several batches and respects concurrency", async () => {
    const h = harness({ maxBatch: 2, maxDelayMs: 0, concurrency: 2 });
    for (let i = 0; i < 5; i++) h.add();
    assert.equal(h.b.running, 2);
    assert.deepEqual(
      h.runs.map((r) => r.ns),
      [[0], [1]],
    );
    h.finishAll();
    await sleep(0);
    assert.deepEqual(
      h.runs.map((r) => r.ns),
      [[0], [1], [2, 3], [4]],
    );
    h.finishAll();
    await h.b.idle();
  });

  it("removes waiting items (a cancelled request)", async () => {
    const h = harness({ maxBatch: 8, maxDelayMs: 30, concurrency: 1, runMs: 0 });
    for (let i = 0; i < 5; i++) h.add();
    const removed = h.b.remove((it) => it.n % 2 === 0);
    assert.deepEqual(
      removed.map((r) => r.n),
      [0, 2, 4],
    );
    assert.equal(h.b.depth, 2);
    await sleep(60);
    assert.deepEqual(h.runs, [{ key: "a", ns: [1, 3] }]);
  });
});

describe("Admission and Semaphore", () => {
  it("admits all or nothing", () => {
    const a = new Admission(10);
    assert.equal(a.tryReserve(8), true);
    assert.equal(a.tryReserve(3), false);
    assert.equal(a.admitted, 8);
    a.release(5);
    assert.equal(a.tryReserve(7), true);
    assert.equal(a.admitted, 10);
  });

  it("counts unread results again: a hold never waits or fails, may pass the capacity, and makes new requests wait", () => {
    const a = new Admission(4);
    assert.equal(a.tryReserve(4), true);
    a.release(4); // running
    a.hold(3); // finished, not yet read by the client
    assert.deepEqual([a.admitted, a.held], [3, 3]);
    assert.equal(a.tryReserve(2), false);
    assert.equal(a.tryReserve(1), true);
    a.release(1);
    a.hold(2);
    assert.deepEqual([a.admitted, a.held], [5, 5], "above the capacity for a while");
    a.releaseHold(4);
    assert.equal(a.tryReserve(3), true);
    assert.deepEqual([a.admitted, a.held], [4, 1]);
  });

  it("hands permits out in order and lets aborted waiters go", async () => {
    const s = new Semaphore(1);
    assert.equal(await s.acquire(), true);
    const ac = new AbortController();
    const order: string[] = [];
    const w1 = s.acquire(ac.signal).then((ok) => order.push(`w1:${ok}`));
    const w2 = s.acquire().then((ok) => order.push(`w2:${ok}`));
    ac.abort();
    await w1;
    s.release();
    await w2;
    assert.deepEqual(order, ["w1:false", "w2:true"]);
    assert.equal(s.inUse, 1);
  });
});

describe("outputs", () => {
  it("transposes NLC to CHW", () => {
    const [n, C] = [70, 45]; // not multiples of the tile size
    const nlc = Float32Array.from({ length: n * C }, (_, i) => i);
    const chw = nlcToChw(nlc, n, C);
    for (let p = 0; p < n; p++) for (let c = 0; c < C; c++) assert.equal(chw[c * n + p], nlc[p * C + c]);
  });

  it("fills heatmap defaults and refuses bad options", () => {
    const base = { mode: "pca1" as const, smoothing: false, sigma: 0, outputHeight: 0, outputWidth: 0, maxSide: 0 };
    assert.deepEqual(resolveHeatmapSpec(base), { mode: "pca1", sigma: null, outputHeight: undefined, outputWidth: undefined, maxSide: 512 });
    assert.equal(resolveHeatmapSpec({ ...base, smoothing: true }).sigma, 1.51);
    assert.equal(resolveHeatmapSpec({ ...base, smoothing: true, sigma: 2 }).sigma, 2);
    assert.throws(() => resolveHeatmapSpec({ ...base, outputHeight: 5 }), /both/);
    assert.throws(() => resolveHeatmapSpec({ ...base, sigma: Number.NaN }), /sigma/);
    assert.throws(() => resolveHeatmapSpec({ ...base, maxSide: 100_000 }), /max_side/);
  });
});
