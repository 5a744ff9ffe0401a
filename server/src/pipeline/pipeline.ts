// One request's images through the server: admission (bounded, all-or-nothing) → preprocessing
// (sharp on the libuv pool, a few decodes at a time) → the dynamic batcher (per graph × resolution)
// → an inference worker → per-image outputs (views, or a postprocess worker for NCHW / heatmaps).
// Every image ends in exactly one outcome for the sink, unless its request was cancelled first.
// An image counts against the queue (--max-queue) while it waits to run, and again from when its
// outcome is handed to the sink until the sink says it was delivered (the promise it returns): a
// client that stops reading its results cannot make the server hold more than the queue.
// Transport-agnostic: nothing here knows gRPC, nothing here knows onnxruntime.
import { setMaxListeners } from "node:events";
import type { Logger } from "pino";
import { Admission } from "../batching/admission.js";
import { DynamicBatcher, type Batchable } from "../batching/batcher.js";
import { Semaphore } from "../batching/semaphore.js";
import {
  decodeOpened,
  InputError,
  openImage,
  parseResolutionPolicy,
  resolveTargetResolution,
  type ImageInput,
  type PathPolicy,
  type PreprocessLimits,
  type ResolutionPolicy,
} from "../preprocess/index.js";
import { devicePcaRow, nlcRow, nlcTensor, resolveHeatmapSpec, summaryTensor, type HeatmapSpec, type OutputTensor } from "../postprocess/outputs.js";
import type { PostprocessTask } from "../postprocess/protocol.js";
import type { InferResult as WorkerInferResult } from "../runtime/protocol.js";
import type { GraphOutputName, PixelDims } from "../runtime/session.js";
import type { ServedGraph } from "./graphs.js";
import { TensorBuffers } from "./tensor-buffers.js";
import { TextEmbedder, type PromptTokenizer, type TextBackend, type TextMetrics, type TextReply } from "./text.js";
import { RequestError, type FailureKind } from "./errors.js";
import {
  NO_METRICS,
  type DropReason,
  type EmbedHandle,
  type EmbedJobSpec,
  type ImageOutcome,
  type OutcomeSink,
  type OutputKind,
  type PipelineMetrics,
} from "./types.js";

/** One batch's outputs, as the inference runtime returns them (which worker ran it is not the pipeline's business). */
export type InferResult = Omit<WorkerInferResult, "threadId">;

/** What the pipeline needs from the inference runtime. */
export interface InferenceBackend {
  readonly workers: number;
  /** Runs one batch of pixels [B, H, W, 3] (uint8 RGB) through the named graph. */
  infer(
    graph: string,
    pixels: Uint8Array,
    dims: PixelDims,
    /** Outputs to fetch (default summary and features); one left out may come back empty. */
    outputs?: readonly GraphOutputName[],
    /** An adaptor's outputs instead of the backbone's ("" = the backbone). */
    space?: string,
  ): Promise<InferResult>;
}

export interface PostprocessBackend {
  /** Turns one image's features into its output (an NCHW copy, a heatmap). */
  postprocess(task: PostprocessTask): Promise<OutputTensor>;
}

export interface PipelineOptions {
  graphs: readonly ServedGraph[];
  /** Defaults to the first graph. */
  defaultGraph?: string;
  inference: InferenceBackend;
  postprocess: PostprocessBackend;
  paths: PathPolicy;
  maxBatch: number;
  /**
   * Most patch tokens per batch (0 = no limit). On a CPU a batch only helps while the GEMMs are
   * small: measured on 2 cores, batches of 4 gain 3–40 % at 224² (196 tokens an image) while
   * batches of 2 lose 4–22 % at 512² (1024 tokens), so the CPU default is 1024.
   */
  maxBatchTokens?: number;
  /** Longest an image waits for batch-mates while a worker is free (--queue-delay-ms; the batcher's maxDelayMs). */
  maxQueueDelayMs: number;
  /** Longest a partial batch waits for images still being decoded (default 0; see DynamicBatcher). */
  maxHoldMs?: number;
  /** Images admitted and not yet running plus results not yet delivered, across requests; also the most one request may hold. */
  maxQueue: number;
  /** Decodes in flight at once. */
  decodeParallelism: number;
  /** Decoded images held while they wait for a batch (memory bound); default 2 × maxBatch × workers. */
  maxDecodedImages?: number;
  limits?: Partial<PreprocessLimits>;
  /** Text towers: a tokenizer per graph that has one, and the runtime that runs them. */
  text?: {
    tokenizers: ReadonlyMap<string, PromptTokenizer>;
    backend: TextBackend;
    /** Prompts per text-tower run. */
    maxBatch: number;
    /** Most prompts one request may carry. */
    maxPrompts: number;
    /** Per graph: bytes of normalised embeddings kept for prompts asked again. */
    cacheBytes: number;
    metrics?: TextMetrics;
  };
  metrics?: PipelineMetrics;
  logger?: Logger;
}

type ImageState = "queued" | "running" | "settled";

class Job {
  readonly abort = new AbortController();
  closed: DropReason | null = null;
  readonly state: ImageState[];
  unsettled: number;
  /** Outcomes handed to the sink whose delivery has not settled yet. */
  undelivered = 0;
  deadlineTimer: NodeJS.Timeout | null = null;
  readonly done: Promise<void>;
  resolveDone!: () => void;

  constructor(
    readonly seq: number,
    readonly graph: ServedGraph,
    readonly policy: ResolutionPolicy,
    readonly space: string,
    readonly output: OutputKind,
    readonly heatmap: HeatmapSpec | null,
    readonly images: readonly (ImageInput | InputError)[],
    readonly deadline: number | null,
    readonly sink: OutcomeSink,
  ) {
    this.state = images.map(() => "queued");
    // Each image waiting for a decode slot listens on this signal.
    setMaxListeners(0, this.abort.signal);
    this.unsettled = images.length;
    this.done = new Promise((r) => (this.resolveDone = r));
  }

  expired(now = Date.now()): boolean {
    return this.deadline !== null && now >= this.deadline;
  }

  /** Every image settled and every delivery too. */
  get over(): boolean {
    return this.unsettled === 0 && this.undelivered === 0;
  }
}

interface Item extends Batchable {
  job: Job;
  index: number;
  id: string;
  /** Decoded uint8 RGB, interleaved (height·width·3); null once in a batch or dropped. */
  pixels: Uint8Array | null;
  height: number;
  width: number;
  originalHeight: number;
  originalWidth: number;
}

/** Patch tokens of one image at its inference size. */
function tokensOf(it: Item): number {
  const p = it.job.graph.geometry.patchSize;
  return Math.max(1, Math.floor(it.height / p) * Math.floor(it.width / p));
}

export class Pipeline {
  private readonly graphs = new Map<string, ServedGraph>();
  readonly defaultGraph: string;
  private readonly admission: Admission;
  private readonly decodes: Semaphore;
  /** A slot per image decoded (or being decoded) and not yet copied into a batch tensor: bounds their memory. */
  private readonly decodedSlots: Semaphore;
  private readonly batcher: DynamicBatcher<Item>;
  private readonly tensors: TensorBuffers;
  private readonly jobs = new Set<Job>();
  private readonly textEmbedders = new Map<string, TextEmbedder>();
  private readonly textRequests = new Set<Promise<unknown>>();
  /** Aborted by cancelAll: text requests still running stop before their next text-tower run. */
  private readonly textAbort = new AbortController();
  private readonly metrics: PipelineMetrics;
  private seq = 0;
  private closing = false;
  /** Images holding a decode slot: a partial batch may wait for them (DynamicBatcher's hold). */
  private decoding = 0;

  constructor(private readonly options: PipelineOptions) {
    for (const graph of options.graphs) this.graphs.set(graph.name, graph);
    const first = options.graphs[0];
    if (!first) throw new Error("the pipeline needs at least one graph");
    this.defaultGraph = options.defaultGraph ?? first.name;
    if (!this.graphs.has(this.defaultGraph)) throw new Error(`default graph ${this.defaultGraph} is not served`);
    for (const [name, tokenizer] of options.text?.tokenizers ?? []) {
      const graph = this.graphs.get(name);
      if (!graph) throw new Error(`a tokenizer was given for ${name}, which is not served`);
      const t = options.text!;
      this.textEmbedders.set(
        name,
        new TextEmbedder({
          graph,
          tokenizer,
          backend: t.backend,
          maxBatch: t.maxBatch,
          cacheBytes: t.cacheBytes,
          ...(t.metrics ? { metrics: t.metrics } : {}),
        }),
      );
    }
    this.admission = new Admission(options.maxQueue);
    this.decodes = new Semaphore(options.decodeParallelism);
    this.decodedSlots = new Semaphore(Math.max(options.maxDecodedImages ?? 2 * options.maxBatch * options.inference.workers, options.decodeParallelism));
    this.metrics = options.metrics ?? NO_METRICS;
    // One buffer per worker in flight plus one being filled.
    this.tensors = new TensorBuffers(options.inference.workers + 1);
    this.batcher = new DynamicBatcher<Item>({
      maxBatch: options.maxBatch,
      ...(options.maxBatchTokens ? { limit: (it: Item) => options.maxBatchTokens! / tokensOf(it) } : {}),
      maxDelayMs: options.maxQueueDelayMs,
      pending: () => this.decoding,
      maxHoldMs: options.maxHoldMs ?? 0,
      concurrency: options.inference.workers,
      runBatch: (_key, items) => this.runBatch(items),
    });
  }

  /** Images counted against the queue: admitted and not yet running, plus results not yet delivered. */
  get admitted(): number {
    return this.admission.admitted;
  }

  /** Results handed to the sink and not yet delivered to their clients (counted in `admitted`). */
  get undelivered(): number {
    return this.admission.held;
  }

  /** Decoded images waiting in the batcher. */
  get queueDepth(): number {
    return this.batcher.depth;
  }

  get runningBatches(): number {
    return this.batcher.running;
  }

  get activeRequests(): number {
    return this.jobs.size;
  }

  /**
   * Starts a request. Throws RequestError when the request as a whole is refused (bad request, queue
   * full, shutting down); then nothing was started. Otherwise every image reaches `sink` once, in
   * completion order, until the request is cancelled.
   */
  submit(spec: EmbedJobSpec, sink: OutcomeSink): EmbedHandle {
    if (this.closing) throw new RequestError("shutting_down", "the server is shutting down");
    const graphName = spec.graph || this.defaultGraph;
    const graph = this.graphs.get(graphName);
    if (!graph) {
      throw new RequestError("invalid_request", `unknown graph ${JSON.stringify(graphName)}; served: ${[...this.graphs.keys()].join(", ")}`);
    }
    let policy: ResolutionPolicy;
    try {
      policy = parseResolutionPolicy(spec.resolution);
      // A fixed size or a max:N is checked against the graph once, for the whole request.
      resolveTargetResolution(graph.geometry.preferred[0], graph.geometry.preferred[1], graph.geometry, policy);
    } catch (err) {
      throw new RequestError("invalid_request", err instanceof InputError ? err.reason : (err as Error).message);
    }
    const space = spec.space ?? "";
    if (space && !graph.adaptors.some((a) => a.name === space)) {
      const have = graph.adaptors.map((a) => a.name);
      throw new RequestError(
        "invalid_request",
        `graph ${graph.name} has no embedding space ${JSON.stringify(space)}; ${have.length ? `its adaptors: ${have.join(", ")}` : "it was compiled without adaptors"} ("" = the backbone)`,
      );
    }
    let heatmap: HeatmapSpec | null = null;
    if (spec.output === "heatmap") {
      try {
        heatmap = resolveHeatmapSpec(spec.heatmap);
      } catch (err) {
        throw new RequestError("invalid_request", (err as Error).message);
      }
    }
    const n = spec.images.length;
    if (n > this.admission.capacity) {
      throw new RequestError(
        "invalid_request",
        `the request has ${n} images; at most ${this.admission.capacity} fit in the queue (--max-queue): send smaller requests`,
      );
    }
    if (!this.admission.tryReserve(n)) {
      const { admitted, held, capacity } = this.admission;
      const unread = held > 0 ? `, ${held} of them results not yet read by their clients` : "";
      throw new RequestError("queue_full", `the queue is full (${admitted} of ${capacity} images queued${unread}, ${n} asked for); retry later`);
    }
    const job = new Job(++this.seq, graph, policy, space, spec.output, heatmap, spec.images, spec.deadline, sink);
    this.jobs.add(job);
    if (n === 0) this.finishJob(job);
    const untilDeadline = job.deadline === null ? Infinity : job.deadline - Date.now();
    // (setTimeout overflows past ~24.8 days; such deadlines are still checked when a batch forms.)
    if (n > 0 && untilDeadline < 2 ** 31 - 1) {
      job.deadlineTimer = setTimeout(() => this.cancel(job, "deadline"), Math.max(0, untilDeadline));
    }
    for (let i = 0; i < n; i++) {
      this.prepare(job, i).catch((err: Error) => {
        this.options.logger?.error({ err }, "image pipeline failed unexpectedly");
        this.fail(job, i, "internal", `input ${JSON.stringify(this.idOf(job, i))}: ${err.message}`);
      });
    }
    return { done: job.done, cancel: (reason) => this.cancel(job, reason) };
  }

  /**
   * Embeds prompts with `graph`'s text tower (L2-normalised). Throws RequestError when the request as
   * a whole is refused; otherwise every prompt gets one outcome, in order, unless the request is
   * stopped first: by cancelAll (the promise rejects with a RequestError), or by `signal`, aborted
   * with the DropReason of a caller gone away (it rejects with a PromptsDropped before its next
   * text-tower run).
   */
  embedText(graphName: string, prompts: readonly unknown[], signal?: AbortSignal): Promise<TextReply> {
    if (this.closing) throw new RequestError("shutting_down", "the server is shutting down");
    const name = graphName || this.defaultGraph;
    const graph = this.graphs.get(name);
    if (!graph) throw new RequestError("invalid_request", `unknown graph ${JSON.stringify(name)}; served: ${[...this.graphs.keys()].join(", ")}`);
    const embedder = this.textEmbedders.get(name);
    if (!embedder) {
      throw new RequestError(
        "invalid_request",
        `graph ${name} has no text tower: compile it with --adaptors siglip2-g --text (the zoo does for embedding_space="text")`,
      );
    }
    const max = this.options.text!.maxPrompts;
    if (prompts.length > max)
      throw new RequestError("invalid_request", `the request has ${prompts.length} prompts; at most ${max} per call: send smaller requests`);
    const { space, logitScale, logitBias } = graph.text!.metadata;
    const running = embedder
      .embed(prompts, signal ? AbortSignal.any([this.textAbort.signal, signal]) : this.textAbort.signal)
      .then((outcomes) => ({ outcomes, space, logitScale, logitBias }));
    this.textRequests.add(running);
    void running.finally(() => this.textRequests.delete(running)).catch(() => undefined);
    return running;
  }

  /** Refuses new requests and resolves when every admitted one has finished (its results delivered too). */
  async drain(): Promise<void> {
    this.closing = true;
    await Promise.all([...[...this.jobs].map((j) => j.done), ...[...this.textRequests].map((p) => p.catch(() => undefined))]);
  }

  /** Drops everything not yet run (shutdown after the grace period). */
  cancelAll(reason: DropReason): void {
    for (const job of [...this.jobs]) this.cancel(job, reason);
    this.textAbort.abort(reason);
  }

  close(): void {
    this.closing = true;
    this.batcher.close();
  }

  // --- per image -------------------------------------------------------------------------------

  private idOf(job: Job, index: number): string {
    const input = job.images[index]!;
    return input instanceof InputError ? input.inputId : input.id;
  }

  /** Read, decode and resize one image, then queue it for a batch. */
  private async prepare(job: Job, index: number): Promise<void> {
    const input = job.images[index]!;
    if (input instanceof InputError) return this.fail(job, index, input.kind, input.message);
    // Bound the decoded images held in memory, then the decodes running at once.
    if (!(await this.decodedSlots.acquire(job.abort.signal))) return this.drop(job, index);
    if (!(await this.decodes.acquire(job.abort.signal))) {
      this.decodedSlots.release();
      return this.drop(job, index);
    }
    const t = performance.now();
    this.decoding++;
    let item: Item | undefined;
    try {
      const limits = this.options.limits ?? {};
      const opened = await openImage(input, { paths: this.options.paths, limits });
      const target = resolveTargetResolution(opened.originalHeight, opened.originalWidth, job.graph.geometry, job.policy, opened.id);
      const img = await decodeOpened(opened, target, { limits });
      item = {
        key: `${job.graph.name}|${job.space}|${img.height}x${img.width}`,
        enqueuedAt: performance.now(),
        job,
        index,
        id: input.id,
        pixels: img.pixels,
        height: img.height,
        width: img.width,
        originalHeight: img.originalHeight,
        originalWidth: img.originalWidth,
      };
    } catch (err) {
      this.decodedSlots.release();
      if (err instanceof InputError) return this.fail(job, index, err.kind, err.message);
      this.options.logger?.error({ err, id: input.id }, "preprocessing failed unexpectedly");
      return this.fail(job, index, "internal", `input ${JSON.stringify(input.id)}: preprocessing failed: ${(err as Error).message}`);
    } finally {
      this.decodes.release();
      this.decoding--;
      // A failed decode adds nothing: let a batch that was waiting for it go.
      if (item === undefined || job.closed) this.batcher.startReadyBatches();
    }
    this.metrics.preprocessed((performance.now() - t) / 1000);
    if (job.closed) {
      this.decodedSlots.release();
      return this.drop(job, index);
    }
    this.batcher.add(item);
  }

  /** One batch from the batcher (same graph, space and size): drop what was cancelled, assemble, infer, deliver each image's output. */
  private async runBatch(items: Item[]): Promise<void> {
    const live = this.stillWanted(items);
    const first = live[0];
    if (!first) return;
    const graph = first.job.graph;
    const { height: H, width: W } = first;
    const B = live.length;
    const pixels = this.assemble(live, H, W);
    if (!pixels) return;

    // Only what the batch's requests need leaves the graph: embeddings never copy out the features,
    // and heatmaps from a graph compiled with --heatmap take its heatmap outputs instead (~0.3 MB an image).
    const heatmapOnDevice = graph.metadata.heatmap !== null && first.job.space === "";
    const wants = (f: (output: Item["job"]["output"]) => boolean) => live.some((it) => f(it.job.output));
    const outputs: GraphOutputName[] = [];
    if (wants((o) => o === "summary")) outputs.push("summary");
    if (wants((o) => o === "features_nchw" || o === "features_nlc" || (o === "heatmap" && !heatmapOnDevice))) outputs.push("features");
    if (heatmapOnDevice && wants((o) => o === "heatmap")) outputs.push("heatmap");
    let out: InferResult;
    try {
      out = await this.options.inference.infer(graph.name, pixels, [B, H, W, 3], outputs, first.job.space);
    } catch (err) {
      this.options.logger?.error({ err, graph: graph.name, batch: B, height: H, width: W }, "inference failed");
      for (const it of live) {
        this.fail(it.job, it.index, "internal", `input ${JSON.stringify(it.id)}: inference failed: ${(err as Error).message}`);
      }
      return;
    }
    this.tensors.give(out.input?.buffer);
    this.metrics.batchRan(graph.name, B, out.runMs / 1000, new Set(live.map((it) => it.job)).size);
    const grid = { height: H / graph.metadata.patchSize, width: W / graph.metadata.patchSize };
    const positions = outputs.includes("features") ? out.featureDims[1]! : out.heatmap ? out.heatmap.norms.length / B : grid.height * grid.width;
    if (grid.height * grid.width !== positions) {
      for (const it of live) {
        this.fail(
          it.job,
          it.index,
          "internal",
          `input ${JSON.stringify(it.id)}: the graph returned ${positions} positions for a ${grid.height}×${grid.width} grid`,
        );
      }
      return;
    }
    live.forEach((it, b) => this.deliver(it, b, out, grid));
  }

  /** The batch's items whose calls still want them; the others are dropped (their decode slots freed). */
  private stillWanted(items: Item[]): Item[] {
    const live: Item[] = [];
    const now = Date.now();
    for (const it of items) {
      if (!it.job.closed && it.job.expired(now)) this.cancel(it.job, "deadline");
      if (it.job.closed) {
        it.pixels = null;
        this.decodedSlots.release();
        this.drop(it.job, it.index);
      } else {
        live.push(it);
      }
    }
    return live;
  }

  /** The batch tensor [B, H, W, 3]: the items' pixels one after the other; null (every item failed) if that fails. */
  private assemble(live: Item[], H: number, W: number): Uint8Array | null {
    const size = H * W * 3;
    const pixels = this.tensors.take(live.length * size);
    const t = performance.now();
    for (let b = 0; b < live.length; b++) {
      const it = live[b]!;
      const src = it.pixels!;
      try {
        // Every value of the image's slot is written, so a reused buffer needs no clearing.
        if (src.length !== size) throw new RangeError(`${src.length} values for a ${H}×${W}×3 slot`);
        pixels.set(src, b * size);
      } catch (err) {
        // Cannot happen for what preprocessing returns; if it did, no image of the batch would end.
        this.options.logger?.error({ err, id: it.id }, "batch assembly failed");
        for (const x of live) {
          if (x.pixels) this.decodedSlots.release();
          x.pixels = null;
          this.fail(x.job, x.index, "internal", `input ${JSON.stringify(x.id)}: batch assembly failed: ${(err as Error).message}`);
        }
        return null;
      }
      it.pixels = null;
      this.decodedSlots.release();
      this.markRunning(it.job, it.index);
      this.metrics.queueWait((t - it.enqueuedAt) / 1000);
    }
    return pixels;
  }

  /** Image b of the batch's output, as its call asked: a summary or NLC at once, NCHW or a heatmap from a postprocess worker. */
  private deliver(it: Item, b: number, out: InferResult, grid: { height: number; width: number }): void {
    const job = it.job;
    if (job.closed) {
      this.settle(job, it.index, null);
      return;
    }
    const positions = out.featureDims[1]!;
    const C = out.featureDims[2]!;
    const sizes = { inputHeight: it.height, inputWidth: it.width, originalHeight: it.originalHeight, originalWidth: it.originalWidth };
    if (job.output === "summary") {
      this.succeed(job, it.index, { tensor: summaryTensor(out.summary, b, out.summaryDims[1]!), ...sizes });
      return;
    }
    if (job.output === "features_nlc") {
      this.succeed(job, it.index, { tensor: nlcTensor(nlcRow(out.features, b, positions, C), positions, C), ...sizes });
      return;
    }
    // A copy of this image's share goes to a postprocess worker (transferred, not copied again).
    const task: PostprocessTask =
      job.output === "features_nchw"
        ? { op: "features_nchw", nlc: nlcRow(out.features, b, positions, C).slice(), gridHeight: grid.height, gridWidth: grid.width, channels: C }
        : {
            op: "heatmap",
            source: out.heatmap
              ? { device: devicePcaRow(out.heatmap, b, grid.height * grid.width) }
              : { nlc: nlcRow(out.features, b, positions, C).slice(), channels: C },
            gridHeight: grid.height,
            gridWidth: grid.width,
            spec: job.heatmap!,
            originalHeight: it.originalHeight,
            originalWidth: it.originalWidth,
          };
    const started = performance.now();
    this.options.postprocess.postprocess(task).then(
      (tensor) => {
        this.metrics.postprocessed(job.output, (performance.now() - started) / 1000);
        this.succeed(job, it.index, { tensor, ...sizes });
      },
      (err: Error) => {
        this.options.logger?.error({ err, id: it.id }, "postprocessing failed");
        const what = job.output === "heatmap" ? "heatmap" : "NCHW transpose";
        this.fail(job, it.index, "internal", `input ${JSON.stringify(it.id)}: ${what} failed: ${err.message}`);
      },
    );
  }

  // --- bookkeeping -----------------------------------------------------------------------------

  /** The image leaves the queue (its admission slot frees up): it is running now. */
  private markRunning(job: Job, index: number): void {
    if (job.state[index] === "queued") {
      job.state[index] = "running";
      this.admission.release(1);
    }
  }

  private succeed(job: Job, index: number, output: ImageOutcome["output"] & object): void {
    if (job.state[index] === "settled") return;
    if (!job.closed) this.metrics.imageSucceeded(job.graph.name, job.output);
    this.settle(job, index, { index, output });
  }

  private fail(job: Job, index: number, kind: FailureKind, message: string): void {
    if (job.state[index] === "settled") return;
    if (!job.closed) this.metrics.imageFailed(kind);
    this.settle(job, index, { index, error: { kind, message } });
  }

  /** The image was never run because its request went away. */
  private drop(job: Job, index: number): void {
    if (job.state[index] !== "queued") return this.settle(job, index, null);
    this.metrics.imagesDropped(job.closed ?? "cancelled", 1);
    this.settle(job, index, null);
  }

  private settle(job: Job, index: number, outcome: ImageOutcome | null): void {
    if (job.state[index] === "settled") return;
    this.markRunning(job, index);
    job.state[index] = "settled";
    job.unsettled--;
    if (outcome && !job.closed) this.handOver(job, outcome);
    if (job.over) this.finishJob(job);
  }

  /** Gives the outcome to the sink; until the delivery it returns settles, the image holds a queue slot again. */
  private handOver(job: Job, outcome: ImageOutcome): void {
    let delivery: Promise<void> | void;
    try {
      delivery = job.sink(outcome);
    } catch (err) {
      this.options.logger?.error({ err }, "result sink failed");
      return;
    }
    if (!(delivery instanceof Promise)) return;
    this.admission.hold();
    job.undelivered++;
    const delivered = () => {
      this.admission.releaseHold();
      job.undelivered--;
      if (job.over) this.finishJob(job);
    };
    // A rejected delivery is over all the same (the transport gave up on it).
    delivery.then(delivered, delivered);
  }

  private finishJob(job: Job): void {
    if (job.deadlineTimer) clearTimeout(job.deadlineTimer);
    job.deadlineTimer = null;
    this.jobs.delete(job);
    job.resolveDone();
  }

  private cancel(job: Job, reason: DropReason): void {
    if (job.closed || job.unsettled === 0) return;
    job.closed = reason;
    if (job.deadlineTimer) clearTimeout(job.deadlineTimer);
    job.deadlineTimer = null;
    // Waiting for a decode slot: those give up at once (and are dropped by prepare()).
    job.abort.abort();
    // Decoded and waiting for a batch: out of the queue now.
    for (const it of this.batcher.remove((x) => x.job === job)) {
      it.pixels = null;
      this.decodedSlots.release();
      this.drop(job, it.index);
    }
    // Being decoded: dropped when the decode ends. Running: the result is discarded.
    this.options.logger?.debug({ request: job.seq, reason }, "request cancelled");
  }
}
