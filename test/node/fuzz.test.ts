/**
 * Bounded, seeded fuzzing of a sidecar process: (1) request messages — mutated encodings of valid
 * EmbedRequests and plain random bytes, sent with a raw @grpc/grpc-js client (identity
 * serializers) to Embed and Info; (2) image bytes — mutated JPEG, PNG, GIF, WebP and TIFF files in
 * Embed calls. Nothing may crash the server or hang a call: each call ends with a status, every
 * image that reaches the pipeline gets a result or an input error (never INTERNAL), and the server
 * still answers health and a valid request afterwards.
 *
 * Bounds: RADIO_FUZZ_MESSAGES (default 400) and RADIO_FUZZ_IMAGES (default 240), each phase also
 * capped at RADIO_FUZZ_SECONDS (default 12); RADIO_FUZZ_SEED picks the sequence (default below).
 */
import assert from "node:assert/strict";
import { mkdirSync, writeFileSync } from "node:fs";
import path from "node:path";
import { after, before, describe, it } from "node:test";

import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import sharp from "sharp";

import { LOADER_OPTIONS, RADIO_PROTO } from "../../server/src/transport/grpc/proto.js";
import { noiseRaw, solid } from "./support/images.js";
import { spawnSidecar, type Sidecar } from "./support/sidecar.js";
import { compileTinyModel, metricValue, RadioClient, tempDir } from "./support/server.js";

const SEED = Number(process.env.RADIO_FUZZ_SEED ?? 0x5eed2026);
const MESSAGES = Number(process.env.RADIO_FUZZ_MESSAGES ?? 400);
const IMAGES = Number(process.env.RADIO_FUZZ_IMAGES ?? 240);
const SECONDS = Number(process.env.RADIO_FUZZ_SECONDS ?? 12);
const CONCURRENCY = 4;
const CALL_DEADLINE_MS = 8000;

/** xorshift32: a reproducible stream from the seed. */
function rng(seed: number) {
  let s = seed >>> 0 || 1;
  const next = () => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return (s >>> 0) / 4294967296;
  };
  return { next, int: (n: number) => Math.floor(next() * n), pick: <T>(a: readonly T[]): T => a[Math.floor(next() * a.length)]! };
}
type Rng = ReturnType<typeof rng>;

function randomBytes(r: Rng, n: number): Buffer {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = r.int(256);
  return b;
}

/** One random mutation of `src` (a copy). `skip` leading bytes are left alone (e.g. a magic number). */
function mutate(r: Rng, src: Buffer, skip = 0): Buffer {
  const b = Buffer.from(src);
  const at = () => skip + r.int(Math.max(1, b.length - skip));
  switch (r.int(7)) {
    case 0: // flip a few bytes
      for (let k = 1 + r.int(8); k > 0; k--) b[at()] = r.int(256);
      return b;
    case 1: // flip bits
      for (let k = 1 + r.int(16); k > 0; k--) b[at()]! ^= 1 << r.int(8);
      return b;
    case 2: // truncate
      return b.subarray(0, at());
    case 3: {
      // insert random bytes
      const i = at();
      return Buffer.concat([b.subarray(0, i), randomBytes(r, 1 + r.int(32)), b.subarray(i)]);
    }
    case 4: {
      // delete a range
      const i = at();
      return Buffer.concat([b.subarray(0, i), b.subarray(Math.min(b.length, i + 1 + r.int(64)))]);
    }
    case 5: {
      // duplicate a chunk
      const i = at();
      const chunk = b.subarray(i, i + 1 + r.int(64));
      return Buffer.concat([b.subarray(0, i), chunk, chunk, b.subarray(i + chunk.length)]);
    }
    default: // overwrite with 0xff / 0x00 runs (huge varints, zero lengths)
      b.fill(r.next() < 0.5 ? 0xff : 0x00, at(), Math.min(b.length, at() + 1 + r.int(8)));
      return b;
  }
}

/** Runs `work` for items 0..n-1, `CONCURRENCY` at a time, until done or the time cap. */
async function bounded(n: number, seconds: number, work: (i: number) => Promise<void>): Promise<number> {
  const end = Date.now() + seconds * 1000;
  let next = 0;
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      while (next < n && Date.now() < end) await work(next++);
    }),
  );
  return next;
}

describe(`fuzzing (seed ${SEED})`, () => {
  const tmp = tempDir("radio-fuzz-");
  const root = path.join(tmp.dir, "root");
  let sidecar: Sidecar;
  let address: string;
  let raw: grpc.Client;
  let embedRequest: (o: unknown) => Buffer;
  let embedResponse: (b: Buffer) => { results: { error?: { code: string } }[] };
  const seeds: Buffer[] = [];
  const images: Buffer[] = [];

  before(async () => {
    mkdirSync(root);
    const graph = await compileTinyModel(tmp.dir);
    const png = await sharp(noiseRaw(48, 32, 3), { raw: { width: 48, height: 32, channels: 3 } })
      .png()
      .toBuffer();
    writeFileSync(path.join(root, "a.png"), png);
    const pkg = protoLoader.loadSync(RADIO_PROTO, LOADER_OPTIONS);
    const def = pkg["radio.v1.Radio"] as Record<string, protoLoader.MethodDefinition<unknown, unknown>>;
    embedRequest = (o) => def.Embed!.requestSerialize(o);
    embedResponse = (b) => def.Embed!.responseDeserialize(b) as ReturnType<typeof embedResponse>;
    // Valid requests of every shape, to mutate.
    seeds.push(
      embedRequest({ images: [{ id: "a", encoded: png }] }),
      embedRequest({
        images: [
          { id: "p", path: path.join(root, "a.png") },
          { id: "q", path: "/etc/passwd" },
        ],
        options: { resolution: "native" },
      }),
      embedRequest({
        images: [{ id: "r", raw: { data: Buffer.alloc(16 * 16 * 3, 128), height: 16, width: 16, channels: 3, dtype: "DTYPE_UINT8" } }],
        options: { output: "FEATURES_NCHW", resolution: "32x32" },
      }),
      embedRequest({
        images: [{ id: "f", raw: { data: Buffer.alloc(16 * 16 * 4 * 4), height: 16, width: 16, channels: 4, dtype: "DTYPE_FLOAT32" } }],
        options: { output: "FEATURES_NLC", resolution: "max:64" },
      }),
      embedRequest({
        images: [{ id: "h", encoded: png }],
        options: { output: "HEATMAP", resolution: "native", heatmap: { mode: "PCA3_RGB", smoothing: true, sigma: 1.5, outputHeight: 20, outputWidth: 30 } },
      }),
      embedRequest({ images: [{ id: "m1", encoded: png }, { id: "m2", encoded: png }, { id: "m3" }], options: { graph: "tiny", resolution: "default" } }),
    );
    // Valid images of every format, to mutate.
    const noise = sharp(noiseRaw(40, 32, 9), { raw: { width: 40, height: 32, channels: 3 } });
    images.push(
      await noise.clone().jpeg({ quality: 80 }).toBuffer(),
      await noise.clone().jpeg({ progressive: true }).toBuffer(),
      png,
      await noise.clone().png({ palette: true }).toBuffer(),
      await noise.clone().webp().toBuffer(),
      await noise.clone().tiff({ compression: "lzw" }).toBuffer(),
      await sharp([await solid(24, 24, { r: 255, g: 0, b: 0 }).png().toBuffer(), await solid(24, 24, { r: 0, g: 0, b: 255 }).png().toBuffer()], {
        join: { animated: true },
      })
        .gif()
        .toBuffer(),
      await noise.clone().withMetadata({ orientation: 6 }).jpeg().toBuffer(),
    );
    sidecar = spawnSidecar(["--graph", `tiny=${graph}`, "--allowed-root", root, "--http-port", "auto", "--max-queue", "64", "--threads", "2"]);
    address = `unix:${(await sidecar.ready).socket}`;
    raw = new grpc.Client(address, grpc.credentials.createInsecure());
  });

  after(() => {
    raw?.close();
    sidecar?.kill();
    tmp.cleanup();
  });

  /** Sends bytes as an Embed request; resolves with the status code and any per-image error codes. */
  function sendEmbed(bytes: Buffer): Promise<{ code: grpc.status; details: string; imageCodes: string[]; results: number }> {
    const decode = (b: Buffer) => b;
    const imageCodes: string[] = [];
    let results = 0;
    return new Promise((resolve) => {
      const call = raw.makeServerStreamRequest("/radio.v1.Radio/Embed", (b: Buffer) => b, decode, bytes, new grpc.Metadata(), {
        deadline: Date.now() + CALL_DEADLINE_MS,
      });
      call.on("data", (b: Buffer) => {
        // The answers are decoded with the real message type, to look at per-image errors.
        for (const r of embedResponse(b).results) {
          results++;
          if (r.error) imageCodes.push(r.error.code);
        }
      });
      call.on("error", (e: grpc.ServiceError) => resolve({ code: e.code, details: e.details, imageCodes, results }));
      call.on("end", () => resolve({ code: grpc.status.OK, details: "", imageCodes, results }));
    });
  }

  function sendInfo(bytes: Buffer): Promise<grpc.status> {
    return new Promise((resolve) =>
      raw.makeUnaryRequest(
        "/radio.v1.Radio/Info",
        (b: Buffer) => b,
        (b: Buffer) => b,
        bytes,
        { deadline: Date.now() + CALL_DEADLINE_MS },
        (e) => resolve(e ? (e as grpc.ServiceError).code : grpc.status.OK),
      ),
    );
  }

  async function stillServing(): Promise<void> {
    assert.ok(sidecar.alive(), `the sidecar died:\n${sidecar.stderr()}`);
    const c = new RadioClient(address);
    try {
      assert.equal(await c.healthCheck(""), "SERVING");
      const [r] = await c.embed({ images: [{ id: "ok", encoded: images[2]! }] }).done;
      assert.ok(r!.output, "a valid request still works");
    } finally {
      c.close();
    }
  }

  const tally = (m: Map<string, number>, k: string) => m.set(k, (m.get(k) ?? 0) + 1);
  const show = (m: Map<string, number>) =>
    [...m]
      .sort((a, b) => b[1] - a[1])
      .map(([k, v]) => `${k} ${v}`)
      .join(", ");

  it("mutated and random request messages never crash the server", async () => {
    const r = rng(SEED);
    const statuses = new Map<string, number>();
    const imageCodes = new Map<string, number>();
    const problems: string[] = [];
    const sent = await bounded(MESSAGES, SECONDS, async (i) => {
      const kind = r.next();
      const bytes =
        kind < 0.15 ? randomBytes(r, r.int(512)) : kind < 0.25 ? Buffer.concat([r.pick(seeds), mutate(r, r.pick(seeds))]) : mutate(r, r.pick(seeds));
      if (i % 10 === 0) {
        const code = await sendInfo(bytes);
        tally(statuses, `Info ${grpc.status[code]}`);
        if (code !== grpc.status.OK && code !== grpc.status.INTERNAL) problems.push(`Info #${i}: ${grpc.status[code]}`);
        return;
      }
      const res = await sendEmbed(bytes);
      tally(statuses, `Embed ${grpc.status[res.code]}`);
      for (const c of res.imageCodes) tally(imageCodes, c);
      const fine =
        [grpc.status.OK, grpc.status.INVALID_ARGUMENT, grpc.status.RESOURCE_EXHAUSTED].includes(res.code) ||
        (res.code === grpc.status.INTERNAL && /deserializ/i.test(res.details));
      if (!fine) problems.push(`Embed #${i}: ${grpc.status[res.code]} ${res.details}`);
      if (res.imageCodes.includes("INTERNAL")) problems.push(`Embed #${i}: an image failed with INTERNAL`);
    });
    process.stderr.write(`fuzz messages (seed ${SEED}): ${sent} sent; calls: ${show(statuses)}; image errors: ${show(imageCodes)}\n`);
    assert.ok(sent >= Math.min(MESSAGES, 100), `only ${sent} messages in ${SECONDS} s`);
    assert.deepEqual(problems, []);
    await stillServing();
  });

  it("mutated image bytes give a result or an input error, never a crash", async () => {
    const r = rng(SEED ^ 0x9e3779b9);
    const outcomes = new Map<string, number>();
    const problems: string[] = [];
    const before = await sidecar.metrics();
    let tried = 0;
    const PER_CALL = 8;
    await bounded(Math.ceil(IMAGES / PER_CALL), SECONDS, async (i) => {
      const batch = Array.from({ length: PER_CALL }, (_, k) => {
        const src = r.pick(images);
        // Mostly keep the magic number, so the decoders (not the sniffer) see the damage.
        return { id: `img${i}-${k}`, encoded: r.next() < 0.8 ? mutate(r, src, 4) : mutate(r, src) };
      });
      tried += batch.length;
      const res = await sendEmbed(embedRequest({ images: batch, options: { resolution: r.next() < 0.5 ? "native" : "max:128" } }));
      if (res.code !== grpc.status.OK) problems.push(`call #${i}: ${grpc.status[res.code]} ${res.details}`);
      if (res.results !== PER_CALL) problems.push(`call #${i}: ${res.results} results for ${PER_CALL} images`);
      for (let k = 0; k < res.results - res.imageCodes.length; k++) tally(outcomes, "decoded");
      for (const c of res.imageCodes) tally(outcomes, c);
      if (res.imageCodes.includes("INTERNAL")) problems.push(`call #${i}: an image failed with INTERNAL`);
    });
    const afterText = await sidecar.metrics();
    process.stderr.write(`fuzz images (seed ${SEED}): ${tried} mutated images; ${show(outcomes)}\n`);
    assert.ok(tried >= Math.min(IMAGES, 80), `only ${tried} images in ${SECONDS} s`);
    assert.deepEqual(problems, []);
    assert.equal(
      metricValue(afterText, "radio_image_failures_total", { code: "INTERNAL" }) - metricValue(before, "radio_image_failures_total", { code: "INTERNAL" }),
      0,
    );
    await stillServing();
  });
});
