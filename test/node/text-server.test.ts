/**
 * Text and adaptor spaces through the real server on a unix socket: the shared upstream fixture's
 * C-RADIOv4 checkpoint compiled with its siglip2-g and dino_v3_7b heads and the SigLIP2 text tower
 * beside it. EmbedText against upstream's text embeddings, Embed in an adaptor space against
 * upstream's head outputs, zero-shot cosines, the prompt cache, and bad requests.
 */
import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";

import { SafetensorsFile } from "../../server/src/checkpoint/safetensors.js";
import { compileCheckpoint } from "../../server/src/compiler/compile.js";
import { compileTextTower } from "../../server/src/compiler/compile-text.js";
import { TEXT_DIR } from "../../server/src/compiler/text-metadata.js";
import { TEXT_DEFAULTS } from "../../server/src/defaults.js";
import { generateCheckpoint, PRESETS } from "../../server/src/synthetic/generate.js";
import { generateSiglip, TINY_SIGLIP } from "../../server/src/synthetic/generate-siglip.js";
import * as grpc from "@grpc/grpc-js";
import protobuf from "protobufjs";

import { PROTO_DIR, RADIO_PROTO } from "../../server/src/transport/grpc/proto.js";
import { floats, metricValue, scrape, startTestServer, tempDir, waitFor, type TestServer } from "./support/server.js";
import { relL2 } from "./support/compare.js";

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const FIXTURE = path.join(repoRoot, "../shared/fixtures/upstream-adaptor-golden");
const skip = existsSync(path.join(FIXTURE, "reference_index.json")) ? false : `fixture not found at ${FIXTURE}`;

function normalized(x: ArrayLike<number>): number[] {
  const n = Math.sqrt(Array.from(x).reduce((s, v) => s + v * v, 0));
  return Array.from(x, (v) => v / n);
}

const dot = (a: number[], b: number[]) => a.reduce((s, v, i) => s + v * b[i]!, 0);

/** uint8 [1, 3, H, W] planes → interleaved HWC bytes, as a client sends raw pixels. */
function chwToHwc(chw: Uint8Array, h: number, w: number): Buffer {
  const out = Buffer.alloc(h * w * 3);
  for (let c = 0; c < 3; c++) for (let i = 0; i < h * w; i++) out[i * 3 + c] = chw[c * h * w + i]!;
  return out;
}

describe("text and adaptor spaces through the server", { skip }, () => {
  const tmp = tempDir("radio-text-server-");
  let ts: TestServer;
  let ref: SafetensorsFile;
  let prompts: string[];
  let canonical: string[];

  before(async () => {
    const graph = path.join(tmp.dir, "graph");
    await compileCheckpoint({ checkpointDir: path.join(FIXTURE, "C-RADIOv4-H"), outDir: graph, adaptors: ["siglip2-g", "dino_v3_7b"] });
    await compileTextTower({ siglipDir: path.join(FIXTURE, "siglip2-giant-opt-patch16-384"), outDir: path.join(graph, TEXT_DIR), space: "siglip2-g" });
    ts = await startTestServer({ graphs: [{ name: "tiny", dir: graph }], warmup: false }, tmp.dir);
    ref = SafetensorsFile.open(path.join(FIXTURE, "reference.safetensors"));
    const index = JSON.parse(readFileSync(path.join(FIXTURE, "reference_index.json"), "utf8")) as { text: { prompts: string[]; canonical: string[] } };
    prompts = index.text.prompts;
    canonical = index.text.canonical;
  });
  after(async () => {
    await ts?.close();
    ref?.close();
    tmp.cleanup();
  });

  it("Info lists the adaptors and the text tower", async () => {
    const info = (await ts.client.info()) as {
      graphs: {
        adaptors: { name: string; summaryDim: number; featureDim: number; textAligned: boolean }[];
        text: { space: string; embedDim: number; contextLength: number; logitScale: number };
      }[];
    };
    const m = info.graphs[0]!;
    assert.deepEqual(
      m.adaptors.map((a) => [a.name, a.summaryDim, a.featureDim, a.textAligned]),
      [
        ["siglip2-g", 40, 40, true],
        ["dino_v3_7b", 56, 56, false],
      ],
    );
    assert.equal(m.text.space, "siglip2-g");
    assert.equal(m.text.embedDim, 40);
    assert.equal(m.text.contextLength, 64);
    assert.ok(Math.abs(m.text.logitScale - ref.readFloat32("siglip.logit_scale")[0]!) < 1e-6);
  });

  it("EmbedText gives upstream's normalised text embeddings (rel L2 <= 1e-6) and canonical forms", async () => {
    const r = await ts.client.embedText({ prompts });
    const want = ref.readFloat32("text.embeddings_normalized");
    assert.equal(r.space, "siglip2-g");
    assert.ok(Math.abs(r.logitBias - ref.readFloat32("siglip.logit_bias")[0]!) < 1e-6);
    let worst = 0;
    r.results.forEach((res, i) => {
      assert.equal(res.index, i);
      assert.equal(res.canonical, canonical[i]);
      const got = floats(res.embedding!);
      worst = Math.max(worst, relL2(got, want.subarray(i * 40, (i + 1) * 40)));
    });
    console.log(`EmbedText vs upstream: max rel L2 ${worst.toExponential(2)}`);
    assert.ok(worst <= 1e-6, `rel L2 ${worst}`);
  });

  it("asking again is served from the cache (same embeddings, counted as cached)", async () => {
    const before = metricValue(await scrape(ts.server), "radio_prompts_total", { graph: "tiny", cached: "true" });
    const a = await ts.client.embedText({ prompts: prompts.slice(0, 3) });
    const b = await ts.client.embedText({ prompts: [prompts[0]!, prompts[0]!.toUpperCase()] });
    assert.deepEqual(floats(b.results[0]!.embedding!), floats(a.results[0]!.embedding!));
    // "A photo of a Dog." and its upper-case form canonicalise alike: one embedding.
    assert.deepEqual(floats(b.results[1]!.embedding!), floats(a.results[0]!.embedding!));
    const after = metricValue(await scrape(ts.server), "radio_prompts_total", { graph: "tiny", cached: "true" });
    assert.equal(after - before, 5);
  });

  it("Embed in the siglip2-g and dino_v3_7b spaces gives upstream's head outputs", async () => {
    const [h, w] = [256, 384];
    const raw = chwToHwc(new Uint8Array(ref.readBytes("b1_256x384.input_u8")), h, w);
    const image = { id: "b1", raw: { data: raw, height: h, width: w, channels: 3, dtype: "DTYPE_UINT8" } };
    const run = async (space: string, output: string) => {
      const [res] = await ts.client.embed({ images: [image], options: { output, resolution: `${h}x${w}`, space } as never }).done;
      assert.ok(res!.output, JSON.stringify(res!.error));
      return floats(res!.output.tensor);
    };
    const cases: [string, string, string][] = [
      ["siglip2-g", "SUMMARY", "b1_256x384.siglip2-g.summary"],
      ["siglip2-g", "FEATURES_NLC", "b1_256x384.siglip2-g.features"],
      ["dino_v3_7b", "SUMMARY", "b1_256x384.dino_v3_7b.summary"],
      ["dino_v3_7b", "FEATURES_NLC", "b1_256x384.dino_v3_7b.features"],
      ["", "SUMMARY", "b1_256x384.backbone.summary"],
    ];
    for (const [space, output, key] of cases) {
      const e = relL2(await run(space, output), ref.readFloat32(key));
      console.log(`Embed space=${space || "backbone"} ${output}: rel L2 ${e.toExponential(2)}`);
      assert.ok(e <= 1e-6, `${key}: rel L2 ${e}`);
    }
  });

  it("zero-shot cosines from the two calls equal upstream's", async () => {
    const [h, w] = [256, 384];
    const raw = chwToHwc(new Uint8Array(ref.readBytes("image_jpeg_256x384.input_u8")), h, w);
    const [img] = await ts.client.embed({
      images: [{ id: "jpeg", raw: { data: raw, height: h, width: w, channels: 3, dtype: "DTYPE_UINT8" } }],
      options: { output: "SUMMARY", resolution: `${h}x${w}`, space: "siglip2-g" } as never,
    }).done;
    const text = await ts.client.embedText({ prompts });
    const x = normalized(floats(img!.output!.tensor));
    const want = ref.readFloat32("zeroshot.cosine").subarray(3 * 13, 4 * 13); // row 3: the JPEG
    const got = text.results.map((r) => dot(x, Array.from(floats(r.embedding!))));
    const worst = Math.max(...got.map((g, i) => Math.abs(g - want[i]!)));
    assert.ok(worst < 1e-5, `max |Δ cosine| ${worst}`);
  });

  it("invalid UTF-8 in a prompt is a defined result: decoded with U+FFFD, as protobuf decodes strings", async () => {
    const root = protobuf.loadSync(path.join(PROTO_DIR, RADIO_PROTO));
    const Response = root.lookupType("radio.v1.EmbedTextResponse");
    // Field 1 (prompts), two strings: "a\xff\xfeb" (not UTF-8) and "a\uFFFD\uFFFDb".
    const bad = Buffer.from([0x0a, 4, 0x61, 0xff, 0xfe, 0x62, 0x0a, 8, 0x61, 0xef, 0xbf, 0xbd, 0xef, 0xbf, 0xbd, 0x62]);
    const raw = new grpc.Client(`unix:${ts.socket}`, grpc.credentials.createInsecure());
    try {
      const reply = await new Promise<Record<string, unknown>>((resolve, reject) =>
        raw.makeUnaryRequest(
          "/radio.v1.Radio/EmbedText",
          (b: Buffer) => b,
          (b: Buffer) => Response.toObject(Response.decode(b)) as Record<string, unknown>,
          bad,
          (e, v) => (e ? reject(e) : resolve(v!)),
        ),
      );
      const results = reply.results as { canonical: string; embedding?: { data: Uint8Array } }[];
      assert.equal(results.length, 2);
      assert.equal(results[0]!.canonical, "a\uFFFD\uFFFDb");
      assert.deepEqual(results[0]!.embedding!.data, results[1]!.embedding!.data);
    } finally {
      raw.close();
    }
  });

  it("bad prompts fail alone; bad requests are refused whole", async () => {
    const long = "a".repeat(10_001);
    const r = await ts.client.embedText({ prompts: ["a dog", long, "", "!!!"] });
    assert.ok(r.results[0]!.embedding);
    assert.equal(r.results[1]!.error?.code, "INVALID_ARGUMENT");
    assert.match(r.results[1]!.error!.message, /prompt 1: .*10001 characters/);
    // Empty, and empty after canonicalisation: defined results (<eos> + pads), the same embedding.
    assert.deepEqual(floats(r.results[2]!.embedding!), floats(r.results[3]!.embedding!));
    await assert.rejects(ts.client.embedText({ prompts: new Array(TEXT_DEFAULTS.maxPrompts + 1).fill("x") }), /at most 4096 per call/);
    await assert.rejects(ts.client.embedText({ prompts: ["x"], graph: "nope" }), /unknown graph "nope"/);
    const [bad] = (await ts.client
      .embed({
        images: [{ id: "x", raw: { data: Buffer.alloc(16 * 16 * 3), height: 16, width: 16, channels: 3, dtype: "DTYPE_UINT8" } }],
        options: { output: "SUMMARY", space: "sam9" } as never,
      })
      .done.catch((e: Error) => [e])) as [Error];
    assert.match(String(bad), /no embedding space "sam9"; its adaptors: siglip2-g, dino_v3_7b/);
  });
});

describe("a model without a text tower", { skip }, () => {
  it("EmbedText is refused with what to do", async () => {
    const tmp = tempDir("radio-notext-");
    const graph = path.join(tmp.dir, "graph");
    await compileCheckpoint({ checkpointDir: path.join(FIXTURE, "C-RADIOv4-H"), outDir: graph });
    const ts = await startTestServer({ graphs: [{ name: "plain", dir: graph }], warmup: false }, tmp.dir);
    try {
      await assert.rejects(ts.client.embedText({ prompts: ["a dog"] }), /has no text tower: compile it with --adaptors siglip2-g --text/);
    } finally {
      await ts.close();
      tmp.cleanup();
    }
  });
});

describe("EmbedText past its deadline, and at shutdown (synthetic tiny model and text tower)", () => {
  const tmp = tempDir("radio-text-synthetic-");
  const graph = path.join(tmp.dir, "graph");
  // 4096 distinct prompts: 256 runs of the text tower (~1 s on 2 cores).
  const prompts = (tag: string) => Array.from({ length: TEXT_DEFAULTS.maxPrompts }, (_, i) => `a photo of ${tag} number ${i}`);

  before(async () => {
    const ckpt = path.join(tmp.dir, "ckpt");
    const siglip = path.join(tmp.dir, "siglip");
    await generateCheckpoint(ckpt, PRESETS["tiny-text"]);
    await generateSiglip(siglip, TINY_SIGLIP);
    await compileCheckpoint({ checkpointDir: ckpt, outDir: graph, adaptors: ["siglip2-g"] });
    await compileTextTower({ siglipDir: siglip, outDir: path.join(graph, TEXT_DIR), space: "siglip2-g" });
  });
  after(() => tmp.cleanup());

  const runs = async (ts: TestServer) => metricValue(await scrape(ts.server), "radio_text_batch_size_count");
  const textCall = (ts: TestServer, tag: string, options: grpc.CallOptions, done: (e: grpc.ServiceError | null) => void) =>
    (ts.client.radio.EmbedText as (r: unknown, m: grpc.Metadata, o: grpc.CallOptions, cb: (e: grpc.ServiceError | null) => void) => grpc.ClientUnaryCall)(
      { prompts: prompts(tag) },
      new grpc.Metadata(),
      options,
      done,
    );

  it("past its deadline: counted as DEADLINE_EXCEEDED, as the client sees it, and its remaining prompts do not run", async () => {
    const ts = await startTestServer({ graphs: [{ name: "tiny", dir: graph }], workers: 1, threads: 1 }, tmp.dir);
    try {
      const err = await new Promise<grpc.ServiceError | null>((resolve) => textCall(ts, "thing", { deadline: Date.now() + 200 }, resolve));
      assert.equal(err?.code, grpc.status.DEADLINE_EXCEEDED);
      const count = async (code: string) => metricValue(await scrape(ts.server), "radio_grpc_requests_total", { method: "EmbedText", code });
      await waitFor(async () => (await count("DEADLINE_EXCEEDED")) + (await count("CANCELLED")) > 0, 30_000, "the call to be counted");
      assert.equal(await count("DEADLINE_EXCEEDED"), 1);
      assert.equal(await count("CANCELLED"), 0);
      // It stopped before its next text-tower run (it used to run all 256 first).
      const ran = await runs(ts);
      await new Promise((r) => setTimeout(r, 300));
      assert.equal(await runs(ts), ran, "no text-tower run after the call was counted");
      assert.ok(ran < 256, `${ran} of 256 runs`);
    } finally {
      await ts.close();
    }
  });

  it("cancelled by its client: counted as CANCELLED, and its remaining prompts do not run", async () => {
    const ts = await startTestServer({ graphs: [{ name: "tiny", dir: graph }], workers: 1, threads: 1 }, tmp.dir);
    try {
      const ended = new Promise<grpc.ServiceError | null>((resolve) => {
        const call = textCall(ts, "cancelled", {}, resolve);
        void waitFor(async () => (await runs(ts)) > 0, 30_000, "the first text-tower run").then(() => call.cancel());
      });
      assert.equal((await ended)?.code, grpc.status.CANCELLED);
      const count = async (code: string) => metricValue(await scrape(ts.server), "radio_grpc_requests_total", { method: "EmbedText", code });
      await waitFor(async () => (await count("CANCELLED")) > 0, 30_000, "the call to be counted");
      const ran = await runs(ts);
      await new Promise((r) => setTimeout(r, 300));
      assert.equal(await runs(ts), ran, "no text-tower run after the call was counted");
      assert.ok(ran < 256, `${ran} of 256 runs`);
      // The server goes on serving text.
      const reply = await ts.client.embedText({ prompts: ["a photo of a dog"] });
      assert.equal(reply.results.length, 1);
      assert.equal(reply.results[0]!.error, undefined);
    } finally {
      await ts.close();
    }
  });

  it("a call still running when the grace period is over ends UNAVAILABLE (the client sends it again elsewhere), as image calls do", async () => {
    const ts = await startTestServer({ graphs: [{ name: "tiny", dir: graph }], workers: 1, threads: 1, shutdownTimeoutMs: 100 }, tmp.dir);
    try {
      // Four calls on one worker: several seconds of text-tower runs, far past the grace period.
      const calls = ["a", "b", "c", "d"].map((tag) => ts.client.embedText({ prompts: prompts(tag) }));
      for (const c of calls) c.catch(() => undefined);
      await waitFor(() => ts.server.pool.running > 0, 5000, "the prompts to run");
      const stopping = ts.server.shutdown();
      const errors = await Promise.all(
        calls.map((c) =>
          c.then(
            () => null,
            (e: grpc.ServiceError) => e,
          ),
        ),
      );
      await stopping;
      const unfinished = errors.filter((e) => e !== null);
      assert.ok(unfinished.length > 0, "some calls were still running when the grace period ended");
      for (const e of unfinished) {
        assert.equal(e.code, grpc.status.UNAVAILABLE, `${grpc.status[e.code]}: ${e.details}`);
        assert.match(e.details, /shutting down/);
      }
    } finally {
      await ts.close();
    }
  });
});
