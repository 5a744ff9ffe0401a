/** Helpers for server tests: a tiny compiled model, an in-process server on a real unix socket, a real gRPC client. */

import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";

import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { protoPath as HEALTH_PROTO } from "grpc-health-check";
import { pino } from "pino";

import { generateCheckpoint, PRESETS } from "../../../server/src/synthetic/generate.js";
import { compileCheckpoint } from "../../../server/src/compiler/compile.js";
import { SERVE_DEFAULTS } from "../../../server/src/defaults.js";
import { serve, type RunningServer, type ServeConfig, type ServeHooks } from "../../../server/src/serve.js";
import { LOADER_OPTIONS, PROTO_DIR, RADIO_PROTO } from "../../../server/src/transport/grpc/proto.js";

export const MAX_MESSAGE = 256 * 1024 * 1024;

/** A temp dir removed by the returned cleanup. */
export function tempDir(prefix = "radio-test-"): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(path.join(os.tmpdir(), prefix));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/** Generates and compiles the tiny test checkpoint into `dir`/graph; returns the graph folder. */
export async function compileTinyModel(dir: string, preset: "tiny" | "tiny-so400m" = "tiny", options: { heatmap?: boolean } = {}): Promise<string> {
  const ckpt = path.join(dir, `${preset}-ckpt`);
  const graph = path.join(dir, `${preset}${options.heatmap ? "-heatmap" : ""}-graph`);
  await generateCheckpoint(ckpt, PRESETS[preset]);
  await compileCheckpoint({ checkpointDir: ckpt, outDir: graph, heatmap: options.heatmap ?? false });
  return graph;
}

export interface TestServer {
  server: RunningServer;
  socket: string;
  client: RadioClient;
  close(): Promise<void>;
}

export async function startTestServer(
  config: Partial<ServeConfig> & Pick<ServeConfig, "graphs">,
  socketDir: string,
  hooks: ServeHooks = {},
): Promise<TestServer> {
  const socket = path.join(socketDir, `s${Math.random().toString(36).slice(2, 8)}.sock`);
  const server = await serve(
    {
      ...SERVE_DEFAULTS,
      allowedRoots: [],
      // The CPU unless a test asks: results compared against CPU numerics, whatever this host has.
      provider: "cpu",
      listen: { socket },
      ...config,
    } as ServeConfig,
    pino({ level: process.env.RADIO_TEST_LOG_LEVEL ?? "silent" }),
    hooks,
  );
  const client = new RadioClient(`unix:${socket}`);
  return {
    server,
    socket,
    client,
    close: async () => {
      client.close();
      await server.shutdown();
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Client
// ---------------------------------------------------------------------------------------------

const REFLECTION_PROTO = path.join(
  path.dirname(new URL(import.meta.resolve("@grpc/reflection")).pathname),
  "..",
  "proto",
  "grpc",
  "reflection",
  "v1",
  "reflection.proto",
);

function loadClients(): {
  Radio: grpc.ServiceClientConstructor;
  Health: grpc.ServiceClientConstructor;
  Reflection: grpc.ServiceClientConstructor;
} {
  const pkg = protoLoader.loadSync([RADIO_PROTO, HEALTH_PROTO, REFLECTION_PROTO], { ...LOADER_OPTIONS, includeDirs: [PROTO_DIR] });
  const g = grpc.loadPackageDefinition(pkg) as unknown as {
    radio: { v1: { Radio: grpc.ServiceClientConstructor } };
    grpc: { health: { v1: { Health: grpc.ServiceClientConstructor } }; reflection: { v1: { ServerReflection: grpc.ServiceClientConstructor } } };
  };
  return { Radio: g.radio.v1.Radio, Health: g.grpc.health.v1.Health, Reflection: g.grpc.reflection.v1.ServerReflection };
}

const CLIENTS = loadClients();

export interface Tensor {
  dtype: "DTYPE_FLOAT32" | "DTYPE_UINT8";
  shape: number[];
  data: Buffer;
}

export interface ImageResult {
  index: number;
  id: string;
  output?: { tensor: Tensor; inputHeight: number; inputWidth: number; originalHeight: number; originalWidth: number };
  error?: { code: string; message: string };
  outcome?: string;
}

export type ImageInputMsg =
  | { id: string; path: string }
  | { id: string; encoded: Buffer }
  | { id: string; raw: { data: Buffer; height: number; width: number; channels: number; dtype: "DTYPE_UINT8" | "DTYPE_FLOAT32" | "DTYPE_UNSPECIFIED" } }
  | { id: string };

export interface EmbedRequestMsg {
  images: ImageInputMsg[];
  options?: {
    output?: "SUMMARY" | "FEATURES_NCHW" | "FEATURES_NLC" | "HEATMAP";
    resolution?: string;
    graph?: string;
    heatmap?: { smoothing?: boolean; sigma?: number; outputHeight?: number; outputWidth?: number; maxSide?: number; mode?: "PCA1" | "PCA3_RGB" };
  };
}

export interface EmbedCall {
  /** Resolves with every result (sorted by index) or rejects with the call's ServiceError. */
  done: Promise<ImageResult[]>;
  /** Results as they arrive. */
  received: ImageResult[];
  call: grpc.ClientReadableStream<{ results: ImageResult[] }>;
  /** Resolves at the first result. */
  first: Promise<void>;
}

export interface EmbedTextReply {
  results: { index: number; canonical: string; embedding?: Tensor; error?: { code: string; message: string }; outcome: string }[];
  space: string;
  logitScale: number;
  logitBias: number;
}

export class RadioClient {
  readonly radio: grpc.Client & Record<string, (...a: unknown[]) => unknown>;
  readonly health: grpc.Client & Record<string, (...a: unknown[]) => unknown>;
  readonly reflection: grpc.Client & Record<string, (...a: unknown[]) => unknown>;

  constructor(address: string, o: { credentials?: grpc.ChannelCredentials; options?: grpc.ChannelOptions } = {}) {
    const opts = { "grpc.max_receive_message_length": MAX_MESSAGE, "grpc.max_send_message_length": MAX_MESSAGE, ...o.options };
    const creds = o.credentials ?? grpc.credentials.createInsecure();
    this.radio = new CLIENTS.Radio(address, creds, opts) as never;
    this.health = new CLIENTS.Health(address, creds, opts) as never;
    this.reflection = new CLIENTS.Reflection(address, creds, opts) as never;
  }

  embed(req: EmbedRequestMsg, o: { deadlineMs?: number; metadata?: grpc.Metadata } = {}): EmbedCall {
    const callOpts: grpc.CallOptions = o.deadlineMs !== undefined ? { deadline: Date.now() + o.deadlineMs } : {};
    const call = (this.radio.Embed as (r: unknown, m: grpc.Metadata, o: grpc.CallOptions) => grpc.ClientReadableStream<{ results: ImageResult[] }>)(
      req,
      o.metadata ?? new grpc.Metadata(),
      callOpts,
    );
    const received: ImageResult[] = [];
    let firstResolve!: () => void;
    const first = new Promise<void>((r) => (firstResolve = r));
    const done = new Promise<ImageResult[]>((resolve, reject) => {
      call.on("data", (msg: { results: ImageResult[] }) => {
        received.push(...msg.results);
        firstResolve();
      });
      call.on("error", reject);
      call.on("end", () => resolve([...received].sort((a, b) => a.index - b.index)));
    });
    done.catch(() => undefined);
    return { done, received, call, first };
  }

  embedText(req: { prompts: string[]; graph?: string }, metadata: grpc.Metadata = new grpc.Metadata()): Promise<EmbedTextReply> {
    return new Promise((resolve, reject) =>
      (this.radio.EmbedText as (r: unknown, m: grpc.Metadata, cb: (e: Error | null, v: EmbedTextReply) => void) => void)(req, metadata, (e, v) =>
        e ? reject(e) : resolve(v),
      ),
    );
  }

  info(metadata: grpc.Metadata = new grpc.Metadata()): Promise<Record<string, unknown>> {
    return new Promise((resolve, reject) =>
      (this.radio.Info as (r: unknown, m: grpc.Metadata, cb: (e: Error | null, v: Record<string, unknown>) => void) => void)({}, metadata, (e, v) =>
        e ? reject(e) : resolve(v),
      ),
    );
  }

  healthCheck(service = ""): Promise<string> {
    return new Promise((resolve, reject) =>
      (this.health.Check as (r: unknown, cb: (e: Error | null, v: { status: string }) => void) => void)({ service }, (e, v) =>
        e ? reject(e) : resolve(v.status),
      ),
    );
  }

  /** Health.Watch: every status the server reports, as it reports it. */
  watchHealth(service = ""): { statuses: string[]; call: grpc.ClientReadableStream<{ status: string }>; next(status: string): Promise<void> } {
    const call = (this.health.Watch as (r: unknown) => grpc.ClientReadableStream<{ status: string }>)({ service });
    const statuses: string[] = [];
    const waiters: { status: string; resolve: () => void }[] = [];
    call.on("data", (m: { status: string }) => {
      statuses.push(m.status);
      for (const w of waiters.splice(0)) {
        if (w.status === m.status) w.resolve();
        else waiters.push(w);
      }
    });
    call.on("error", () => undefined);
    return {
      statuses,
      call,
      next: (status) => (statuses.at(-1) === status ? Promise.resolve() : new Promise<void>((resolve) => waiters.push({ status, resolve }))),
    };
  }

  /** Server reflection: the names of the services the server describes. */
  listServices(): Promise<string[]> {
    return new Promise((resolve, reject) => {
      const call = (
        this.reflection.ServerReflectionInfo as () => grpc.ClientDuplexStream<unknown, { listServicesResponse?: { service: { name: string }[] } }>
      )();
      call.on("data", (m: { listServicesResponse?: { service: { name: string }[] } }) => {
        resolve((m.listServicesResponse?.service ?? []).map((s) => s.name));
        call.end();
      });
      call.on("error", reject);
      call.write({ listServices: "*" });
    });
  }

  close(): void {
    this.radio.close();
    this.health.close();
    this.reflection.close();
  }
}

// ---------------------------------------------------------------------------------------------
// Inputs, outputs, metrics
// ---------------------------------------------------------------------------------------------

/** Deterministic uint8 HWC pixels (RGB for 3 channels): the graph's input layout. */
export function randomPixels(height: number, width: number, seed: number, channels = 3): Uint8Array {
  const a = new Uint8Array(height * width * channels);
  let s = seed >>> 0 || 1;
  for (let i = 0; i < a.length; i++) {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    a[i] = (s >>> 0) >>> 24;
  }
  return a;
}

export function rawFloat(id: string, pixels: Float32Array, height: number, width: number): ImageInputMsg {
  return { id, raw: { data: Buffer.from(pixels.buffer, pixels.byteOffset, pixels.byteLength), height, width, channels: 3, dtype: "DTYPE_FLOAT32" } };
}

export function rawUint8(id: string, pixels: Uint8Array, height: number, width: number, channels = 3): ImageInputMsg {
  return { id, raw: { data: Buffer.from(pixels), height, width, channels, dtype: "DTYPE_UINT8" } };
}

/** Images of one size, one after the other: a batch in the graph's layout [B, H, W, 3]. */
export function batchOf(images: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(images.reduce((n, im) => n + im.length, 0));
  let at = 0;
  for (const im of images) {
    out.set(im, at);
    at += im.length;
  }
  return out;
}

export function floats(t: Tensor): Float32Array {
  const copy = Buffer.from(t.data); // aligned copy
  return new Float32Array(copy.buffer, copy.byteOffset, copy.byteLength / 4);
}

export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) return Infinity;
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

export async function httpGet(port: number, p: string): Promise<{ status: number; body: string }> {
  const r = await fetch(`http://127.0.0.1:${port}${p}`);
  return { status: r.status, body: await r.text() };
}

/** Sum of a metric's samples whose labels include `labels` (Prometheus text format). */
export function metricValue(text: string, name: string, labels: Record<string, string> = {}): number {
  let total = 0;
  for (const line of text.split("\n")) {
    if (!line.startsWith(name)) continue;
    const m = /^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+(\S+)/.exec(line);
    if (!m || m[1] !== name) continue;
    const ls = Object.fromEntries([...(m[2] ?? "").matchAll(/(\w+)="([^"]*)"/g)].map((x) => [x[1], x[2]]));
    if (Object.entries(labels).every(([k, v]) => ls[k] === v)) total += Number(m[3]);
  }
  return total;
}

export async function scrape(s: RunningServer): Promise<string> {
  return s.metrics.registry.metrics();
}

export async function waitFor(cond: () => boolean | Promise<boolean>, timeoutMs = 5000, what = "condition"): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Awaits a call that must fail with `code` (and details matching `pattern`); returns its error. */
export async function expectStatus(p: Promise<unknown>, code: grpc.status, pattern?: RegExp): Promise<grpc.ServiceError> {
  const err = await p.then(
    () => assert.fail(`expected ${grpc.status[code]}, got success`),
    (e: unknown) => e as grpc.ServiceError,
  );
  assert.equal(err.code, code, `expected ${grpc.status[code]}, got ${grpc.status[err.code]}: ${err.details}`);
  if (pattern) assert.match(err.details, pattern);
  return err;
}
