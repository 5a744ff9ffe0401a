// The inference pool: piscina worker threads, each holding one onnxruntime session per served graph.
// Batches go in as one transferred Uint8Array and come back as transferred outputs. A worker that
// dies is replaced by piscina (the new one loads and warms before it takes work); the batch it held
// fails, and the caller turns that into per-image `internal` failures.
import { EventEmitter } from "node:events";
import { BroadcastChannel } from "node:worker_threads";
import { Piscina } from "piscina";
import type { ExecutionProvider, GraphOutputName, PrepackPolicy } from "./session.js";
import type { InferResult, InferTask, ReadyGraph, TextResult, TextTask, WorkerAnnouncement, WorkerConfig, WorkerGraph } from "./protocol.js";
import { workerEntry, workerEntryAt } from "./worker-entry.js";

export type { InferResult, TextResult } from "./protocol.js";
export type { ExecutionProvider, PrepackPolicy } from "./session.js";

export interface PoolOptions {
  graphs: WorkerGraph[];
  workers: number;
  /** ORT intra-op threads per worker (0 = ORT's default, one per core). */
  intraOpThreads: number;
  provider: ExecutionProvider;
  /** Pre-packed weight copies per worker (session.ts prepacks()). */
  prepackWeights?: PrepackPolicy;
  warmup?: boolean;
  /**
   * A batch still running this long after its worker started it fails; if its worker is still busy
   * with it as long again, the worker is terminated and replaced (0 = no limit). Caveat: a worker
   * stuck inside onnxruntime's native run cannot be interrupted, and if that run ever returns after
   * the worker was terminated, onnxruntime-node aborts the process. So this is for hangs: set it well
   * above the slowest batch.
   */
  inferenceTimeoutMs?: number;
  /** V8 old-generation limit per worker: a worker whose JS heap runs away dies alone (0 = Node's default). */
  workerHeapMb?: number;
  /** Tests only: the URL of a module to run instead of ./worker (e.g. one that wraps it to inject faults). */
  workerModule?: string;
}

/** A batch ran past PoolOptions.inferenceTimeoutMs (its worker is terminated if it stays stuck as long again). */
export class InferenceTimeoutError extends Error {
  override readonly name = "InferenceTimeoutError";
}

export interface PoolReady {
  ortVersion: string;
  /** Per graph: the provider that runs it and the first worker's warm-up time. */
  graphs: ReadyGraph[];
  loadMs: number;
}

let poolCounter = 0;

/**
 * Events: 'workerReady' (announcement) when a replacement worker has loaded; 'fatal' (Error) when a
 * replacement worker cannot load its graphs (the server cannot recover from that on its own);
 * 'timeout' (InferenceTimeoutError) when a batch ran past the inference timeout.
 */
export class InferencePool extends EventEmitter {
  private busyMs = 0;
  /** The in-flight tasks' start clocks (Date.now() stored by the worker that runs it; 0 while it waits in piscina's queue). */
  private readonly clocks = new Set<BigInt64Array>();
  private closed = false;

  private constructor(
    private readonly piscina: Piscina,
    private readonly channel: BroadcastChannel,
    readonly options: Readonly<PoolOptions>,
    readonly ready: PoolReady,
  ) {
    super();
  }

  /** Starts the workers and resolves once every one of them has loaded (and warmed) every graph. */
  static async start(options: PoolOptions): Promise<InferencePool> {
    const channelName = `radio-inference-${process.pid}-${++poolCounter}`;
    const entry = options.workerModule ? workerEntryAt(options.workerModule) : workerEntry("worker", import.meta.url);
    const config: WorkerConfig = {
      entry: entry.entry,
      channel: channelName,
      graphs: options.graphs,
      provider: options.provider,
      intraOpThreads: options.intraOpThreads,
      prepackWeights: options.prepackWeights ?? "auto",
      warmup: options.warmup ?? true,
    };
    const channel = new BroadcastChannel(channelName);
    const piscina = new Piscina({
      filename: entry.filename,
      minThreads: options.workers,
      maxThreads: options.workers,
      concurrentTasksPerWorker: 1,
      // A worker blocks inside session.run anyway; atomics only save microseconds per ~100 ms task.
      atomics: "disabled",
      workerData: config,
      ...(options.workerHeapMb ? { resourceLimits: { maxOldGenerationSizeMb: options.workerHeapMb } } : {}),
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
            if (announcements.size >= options.workers) resolve(msg);
          }
        };
      });
    } catch (err) {
      channel.close();
      await piscina.destroy();
      throw err;
    }
    const pool = new InferencePool(piscina, channel, options, {
      ortVersion: ready.ortVersion,
      graphs: ready.graphs,
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

  /** Tasks (batches, text-tower runs) handed to the pool and not finished: running, or waiting in piscina's queue. */
  get running(): number {
    return this.clocks.size;
  }

  /** Workers running a task now: a task waiting in piscina's queue (behind a text-tower run, a timed-out batch, a loading replacement) is not counted. */
  get busyWorkers(): number {
    let n = 0;
    for (const clock of this.clocks) if (Atomics.load(clock, 0) !== 0n) n++;
    return n;
  }

  /** Total worker time spent in batches, in seconds (rate / workers = utilisation); from when a worker started each. */
  get busySeconds(): number {
    return this.busyMs / 1000;
  }

  /** A task's start clock, counted until `done` is called. */
  private startClock(): { started: BigInt64Array; done: () => void } {
    const started = new BigInt64Array(new SharedArrayBuffer(8));
    this.clocks.add(started);
    return {
      started,
      done: () => {
        this.clocks.delete(started);
        const at = Number(Atomics.load(started, 0));
        if (at > 0) this.busyMs += Math.max(0, Date.now() - at);
      },
    };
  }

  /** Live worker threads (for diagnostics and tests). */
  get threads(): readonly import("node:worker_threads").Worker[] {
    return this.piscina.threads;
  }

  /**
   * Runs pixels [B, H, W, 3] (uint8 RGB) through `graph`, fetching `outputs` (default: all). The pixels' buffer
   * is transferred: do not reuse it (the result hands it back as `input`).
   */
  infer(graph: string, pixels: Uint8Array, dims: InferTask["dims"], outputs?: readonly GraphOutputName[], space = ""): Promise<InferResult> {
    if (this.closed) return Promise.reject(new Error("the inference pool is closed"));
    const limit = this.options.inferenceTimeoutMs ?? 0;
    // The clock starts when a worker starts the batch (it may first wait for a replacement worker
    // to load): the worker stores the time here.
    const { started, done } = this.startClock();
    const abort = limit > 0 ? new AbortController() : null;
    const task: InferTask = {
      graph,
      pixels,
      dims,
      ...(space ? { space } : {}),
      ...(outputs ? { outputs: [...outputs] } : {}),
      started,
    };
    // `running` counts the worker as busy until the batch is really over, even after a timeout.
    const running = (
      this.piscina.run(task, { transferList: [pixels.buffer as ArrayBuffer], ...(abort ? { signal: abort.signal } : {}) }) as Promise<InferResult>
    ).finally(done);
    if (!abort) return running;
    return new Promise<InferResult>((resolve, reject) => {
      let late: InferenceTimeoutError | null = null;
      let timer: NodeJS.Timeout;
      const check = () => {
        const at = Number(Atomics.load(started, 0));
        const left = at === 0 ? limit : at + limit - Date.now();
        if (left > 0) {
          timer = setTimeout(check, left);
          return;
        }
        const s = limit / 1000;
        late = new InferenceTimeoutError(`inference did not finish within ${s} s; its worker is replaced if it is still stuck ${s} s later`);
        this.emit("timeout", late);
        reject(late);
        // Aborting a running piscina task terminates its worker (piscina starts a replacement). A
        // worker inside onnxruntime's native run cannot be stopped there, and onnxruntime-node
        // aborts the process if that run returns after all: so a slow batch gets as long again to
        // come back (its worker is then kept), and only a worker still stuck is terminated.
        timer = setTimeout(() => abort.abort(late), limit);
      };
      timer = setTimeout(check, limit);
      running.then(
        (r) => {
          clearTimeout(timer);
          resolve(r);
        },
        (err: unknown) => {
          clearTimeout(timer);
          reject(late ?? err);
        },
      );
    });
  }

  /** Token ids [n, context] through `graph`'s text tower (the ids' buffer is transferred). */
  async inferText(graph: string, ids: BigInt64Array, dims: TextTask["dims"]): Promise<TextResult> {
    if (this.closed) throw new Error("the inference pool is closed");
    const { started, done } = this.startClock();
    const task: TextTask = { kind: "text", graph, ids, dims, started };
    try {
      return (await this.piscina.run(task, { transferList: [ids.buffer as ArrayBuffer] })) as TextResult;
    } finally {
      done();
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.channel.close();
    await this.piscina.destroy();
  }
}
