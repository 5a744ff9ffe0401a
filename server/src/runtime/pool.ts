// The inference pool: piscina worker threads, each holding one onnxruntime session per served model.
// Batches go in as one transferred Float32Array and come back as transferred outputs. A worker that
// dies is replaced by piscina (the new one loads and warms before it takes work); the batch it held
// fails, and the caller turns that into per-image INTERNAL errors.
import { EventEmitter } from "node:events";
import { BroadcastChannel } from "node:worker_threads";
import { Piscina } from "piscina";
import type { ExecutionProvider } from "./session.js";
import type { InferResult, InferTask, ReadyModel, WorkerAnnouncement, WorkerConfig, WorkerModel } from "./protocol.js";
import { workerEntry } from "./worker-entry.js";

export type { InferResult } from "./protocol.js";
export type { ExecutionProvider } from "./session.js";

export interface PoolOptions {
  models: WorkerModel[];
  workers: number;
  /** ORT intra-op threads per worker (0 = ORT's default, one per core). */
  intraOpThreads: number;
  provider: ExecutionProvider;
  warmup?: boolean;
}

export interface PoolReady {
  ortVersion: string;
  /** Per model: the provider that runs it and the first worker's warm-up time. */
  models: ReadyModel[];
  loadMs: number;
}

let poolCounter = 0;

/**
 * Events: 'workerReady' (announcement) when a replacement worker has loaded; 'fatal' (Error) when a
 * replacement worker cannot load its models (the server cannot recover from that on its own).
 */
export class InferencePool extends EventEmitter {
  private inFlight = 0;
  private busyMs = 0;
  private closed = false;

  private constructor(
    private readonly piscina: Piscina,
    private readonly channel: BroadcastChannel,
    readonly options: Readonly<PoolOptions>,
    readonly ready: PoolReady,
  ) {
    super();
  }

  /** Starts the workers and resolves once every one of them has loaded (and warmed) every model. */
  static async start(o: PoolOptions): Promise<InferencePool> {
    const channelName = `radio-inference-${process.pid}-${++poolCounter}`;
    const entry = workerEntry("worker", import.meta.url);
    const config: WorkerConfig = {
      entry: entry.entry,
      channel: channelName,
      models: o.models,
      provider: o.provider,
      intraOpThreads: o.intraOpThreads,
      warmup: o.warmup ?? true,
    };
    const channel = new BroadcastChannel(channelName);
    const piscina = new Piscina({
      filename: entry.filename,
      minThreads: o.workers,
      maxThreads: o.workers,
      concurrentTasksPerWorker: 1,
      // A worker blocks inside session.run anyway; atomics only save microseconds per ~100 ms task.
      atomics: "disabled",
      workerData: config,
    });
    // Until every worker is ready, a worker error (e.g. its module failed to load) fails the start.
    let failStart: (err: Error) => void = () => undefined;
    const onError = (err: Error) => failStart(err);
    piscina.on("error", onError);

    const announcements = new Map<number, Extract<WorkerAnnouncement, { type: "ready" }>>();
    let ready: Extract<WorkerAnnouncement, { type: "ready" }>;
    try {
      ready = await new Promise((resolve, reject) => {
        failStart = (err) => reject(new Error(`an inference worker failed to start: ${err.message}`));
        channel.onmessage = (ev) => {
          const msg = (ev as { data: WorkerAnnouncement }).data;
          if (msg.type === "failed") reject(new Error(msg.message));
          else {
            announcements.set(msg.threadId, msg);
            if (announcements.size >= o.workers) resolve(msg);
          }
        };
      });
    } catch (err) {
      channel.close();
      await piscina.destroy();
      throw err;
    }
    const pool = new InferencePool(piscina, channel, o, {
      ortVersion: ready.ortVersion,
      models: ready.models,
      loadMs: Math.max(...[...announcements.values()].map((a) => a.loadMs)),
    });
    piscina.off("error", onError);
    // Errors not tied to a task (a worker failing between tasks) must not crash the process.
    piscina.on("error", (err: Error) => pool.emit("workerError", err));
    channel.onmessage = (ev) => {
      const msg = (ev as { data: WorkerAnnouncement }).data;
      if (msg.type === "ready") pool.emit("workerReady", msg);
      else pool.emit("fatal", new Error(`a replacement inference worker failed to load: ${msg.message}`));
    };
    channel.unref();
    return pool;
  }

  get workers(): number {
    return this.options.workers;
  }

  /** Batches running now. */
  get running(): number {
    return this.inFlight;
  }

  /** Total worker time spent in batches, in seconds (rate / workers = utilisation). */
  get busySeconds(): number {
    return this.busyMs / 1000;
  }

  /** Live worker threads (for diagnostics and tests). */
  get threads(): readonly import("node:worker_threads").Worker[] {
    return this.piscina.threads;
  }

  /** Runs pixels [B, 3, H, W] through `model`. The pixels' buffer is transferred: do not reuse it. */
  async run(model: string, pixels: Float32Array, dims: InferTask["dims"]): Promise<InferResult> {
    if (this.closed) throw new Error("the inference pool is closed");
    const task: InferTask = { model, pixels, dims };
    const t = performance.now();
    this.inFlight++;
    try {
      return (await this.piscina.run(task, { transferList: [pixels.buffer as ArrayBuffer] })) as InferResult;
    } finally {
      this.inFlight--;
      this.busyMs += performance.now() - t;
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.channel.close();
    await this.piscina.destroy();
  }
}
