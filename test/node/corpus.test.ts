/**
 * The bad-input corpus (test/corpus/make-corpus.ts) through a real sidecar process over gRPC: every
 * item in one mixed call gets its expected result or its own clear error, its neighbours get theirs,
 * the SVGs' external references are never fetched, the server stays up, and its memory comes back
 * down after rounds of the corpus.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import path from "node:path";
import { after, before, describe, it } from "node:test";

import { makeCorpus, rawBytes, type Corpus, type CorpusItem } from "../corpus/make-corpus.js";
import { spawnSidecar, MB, type Sidecar } from "./support/sidecar.js";
import { compileTinyModel, floats, maxAbsDiff, metricValue, RadioClient, tempDir, type ImageInputMsg, type ImageResult } from "./support/server.js";

const ROUNDS = Number(process.env.RADIO_CORPUS_ROUNDS ?? 6);
/** RSS may grow this much between the first and the last round (allocator slack, not a leak). */
const RSS_TOLERANCE = 48 * MB;

function requestFor(c: Corpus): { images: ImageInputMsg[]; items: { item: CorpusItem; via: "path" | "bytes" | "raw" }[] } {
  const images: ImageInputMsg[] = [];
  const items: { item: CorpusItem; via: "path" | "bytes" | "raw" }[] = [];
  for (const item of c.items) {
    if (item.source === "raw") {
      const r = item.raw!;
      images.push({ id: item.name, raw: { data: rawBytes(r), height: r.height, width: r.width, channels: r.channels, dtype: "DTYPE_UINT8" } });
      items.push({ item, via: "raw" });
      continue;
    }
    images.push({ id: item.name, path: item.path! });
    items.push({ item, via: "path" });
    if (item.bytes) {
      images.push({ id: `${item.name} (bytes)`, encoded: readFileSync(item.path!) });
      items.push({ item, via: "bytes" });
    }
  }
  return { images, items };
}

describe("bad-input corpus through a sidecar process", () => {
  const tmp = tempDir("radio-corpus-");
  let corpus: Corpus;
  let sidecar: Sidecar;
  let client: RadioClient;
  const probeHits: string[] = [];
  let probe: http.Server;

  before(async () => {
    probe = http.createServer((req, res) => {
      probeHits.push(`${req.method} ${req.url}`);
      res.writeHead(404).end();
    });
    await new Promise<void>((r) => probe.listen(0, "127.0.0.1", r));
    const probeUrl = `http://127.0.0.1:${(probe.address() as AddressInfo).port}`;
    corpus = await makeCorpus(path.join(tmp.dir, "corpus"), { probeUrl });
    const graph = await compileTinyModel(tmp.dir);
    sidecar = spawnSidecar([
      "--graph",
      `tiny=${graph}`,
      "--allowed-root",
      corpus.root,
      "--http-port",
      "auto",
      "--max-batch",
      "8",
      "--max-queue",
      "512",
      "--threads",
      "2",
    ]);
    const ready = await sidecar.ready;
    client = new RadioClient(`unix:${ready.socket}`);
  });

  after(async () => {
    client?.close();
    sidecar?.kill();
    await new Promise<void>((r) => probe.close(() => r()));
    tmp.cleanup();
  });

  it("has at least 20 kinds of input, valid and invalid", () => {
    assert.ok(corpus.items.length >= 20, `${corpus.items.length} items`);
    assert.ok(corpus.items.filter((i) => i.expect.ok).length >= 10);
    assert.ok(corpus.items.filter((i) => !i.expect.ok).length >= 20);
  });

  it("every input gets its expected result or its own error, in one mixed call", async () => {
    const { images, items } = requestFor(corpus);
    // 'native': no resampling for these small images, so the exotic encodings must match exactly.
    // (With resizing, sharp applies an EXIF flip after the resize, which shifts the resampling
    // phase: a flipped file then differs from its pre-flipped twin by up to ~34/255 at edges.)
    const results = await client.embed({ images, options: { resolution: "native" } }).done;
    assert.deepEqual(
      results.map((r) => r.index),
      images.map((_, i) => i),
      "one result per image",
    );
    const byName = new Map<string, ImageResult>();
    for (const [i, r] of results.entries()) {
      const { item, via } = items[i]!;
      const what = `${item.name} via ${via} (${item.kind})`;
      assert.equal(r.id, images[i]!.id);
      if (item.expect.ok) {
        assert.ok(r.output, `${what}: expected a result, got ${r.error?.code}: ${r.error?.message}`);
        assert.deepEqual([r.output.originalHeight, r.output.originalWidth], item.expect.originalSize, `${what}: original size`);
        assert.deepEqual(r.output.tensor.shape, [128]);
        if (via !== "bytes") byName.set(item.name, r);
        else assert.ok(maxAbsDiff(floats(r.output.tensor), floats(byName.get(item.name)!.output!.tensor)) <= 1e-5, `${what}: same as by path`);
      } else {
        assert.ok(r.error, `${what}: expected ${item.expect.code}, got a result`);
        assert.equal(r.error.code, item.expect.code, `${what}: ${r.error.message}`);
        assert.match(r.error.message, new RegExp(item.expect.message), what);
        assert.ok(r.error.message.includes(JSON.stringify(r.id)), `${what}: the message names the input: ${r.error.message}`);
      }
    }
    // Valid exotic encodings embed exactly like the picture they display.
    for (const item of corpus.items) {
      if (!item.expect.ok || !item.expect.sameAs) continue;
      const got = floats(byName.get(item.name)!.output!.tensor);
      const want = floats(byName.get(item.expect.sameAs)!.output!.tensor);
      assert.ok(maxAbsDiff(got, want) <= 1e-4, `${item.name} embeds like ${item.expect.sameAs} (max diff ${maxAbsDiff(got, want)})`);
    }
    // Nothing fetched the SVG's or the HTML page's external references.
    await new Promise((r) => setTimeout(r, 200));
    assert.deepEqual(probeHits, [], "the probe server got no request");
  });

  it(`survives ${ROUNDS} rounds of the corpus; its memory comes back down`, async () => {
    const { images, items } = requestFor(corpus);
    const expectedFailures = items.filter((x) => !x.item.expect.ok).length;
    const before = await sidecar.metrics();
    let rssFirst = 0;
    const rss: number[] = [];
    for (let round = 0; round < ROUNDS; round++) {
      // Four concurrent copies of the corpus per round: failures and successes interleave in batches.
      const calls = await Promise.all([0, 1, 2, 3].map(() => client.embed({ images, options: { resolution: "native" } }).done));
      for (const results of calls) {
        assert.equal(results.length, images.length);
        assert.equal(results.filter((r) => r.error).length, expectedFailures);
      }
      assert.equal(await client.healthCheck(""), "SERVING");
      rss.push(await sidecar.rss());
      if (round === 0) rssFirst = rss[0]!;
    }
    const last = rss.at(-1)!;
    const afterText = await sidecar.metrics();
    const failed = metricValue(afterText, "radio_image_failures_total") - metricValue(before, "radio_image_failures_total");
    assert.equal(failed, 4 * ROUNDS * expectedFailures, "every failure counted by code");
    assert.ok(sidecar.alive(), "the sidecar is still running");
    const mb = (b: number) => (b / MB).toFixed(1);
    process.stderr.write(
      `corpus: ${corpus.items.length} items, ${images.length} inputs per call (${expectedFailures} failing), ${4 * ROUNDS} calls; ` +
        `sidecar RSS after round 1 ${mb(rssFirst)} MB, after round ${ROUNDS} ${mb(last)} MB (rounds: ${rss.map(mb).join(", ")})\n`,
    );
    assert.ok(last - rssFirst <= RSS_TOLERANCE, `RSS grew ${mb(last - rssFirst)} MB over ${ROUNDS} rounds`);
  });
});
