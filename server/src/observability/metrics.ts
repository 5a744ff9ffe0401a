// Prometheus metrics (prom-client), one registry per server so several servers (tests) can live in
// one process. Counters are updated as things happen; gauges of current state are read at scrape
// time from whoever owns that state.
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from "prom-client";
import type { FailureKind } from "../pipeline/errors.js";
import type { DropReason, OutputKind, PipelineMetrics } from "../pipeline/types.js";
import type { TextMetrics } from "../pipeline/text.js";

export interface LiveState {
  /** Images counted against the queue: admitted and not yet running, plus results not yet delivered. */
  admitted(): number;
  /** Results handed to the transport that their clients have not read yet. */
  undelivered(): number;
  /** Decoded images waiting in the batcher. */
  queueDepth(): number;
  /** Batches running now. */
  runningBatches(): number;
  workers(): number;
  /** Total worker time spent running batches, seconds. */
  workerBusySeconds(): number;
  /** gRPC calls open now, long-lived ones (a client's health Watch lease) included. */
  openCalls?(): number;
}

export interface ServerMetricsOptions {
  /**
   * The `code` label of radio_image_failures_total for a failure kind: serve.ts passes the code the
   * image is answered with on the wire (transport/grpc/codes.ts), the label's values since the metric
   * exists (dashboards and tests read them).
   */
  failureLabel: (kind: FailureKind) => string;
}

const SECONDS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

/** Gauges of current state, read from the running server at scrape time (0 before it runs). */
const LIVE_GAUGES: ReadonlyArray<{ name: string; help: string; read: (l: LiveState) => number }> = [
  {
    name: "radio_queue_admitted_images",
    help: "Images counted against the bounded queue (--max-queue): admitted and not yet running, plus finished results their clients have not read yet",
    read: (l) => l.admitted(),
  },
  {
    name: "radio_queue_undelivered_results",
    help: "Finished results waiting for their clients to read them (held in memory, counted in radio_queue_admitted_images; see --stall-timeout-s)",
    read: (l) => l.undelivered(),
  },
  { name: "radio_queue_depth", help: "Decoded images waiting in the batcher", read: (l) => l.queueDepth() },
  {
    name: "radio_grpc_open_calls",
    help: "gRPC calls open now, health Watch streams included (a shared sidecar's clients each hold one)",
    read: (l) => l.openCalls?.() ?? 0,
  },
  { name: "radio_workers", help: "Inference workers", read: (l) => l.workers() },
  {
    name: "radio_worker_utilization",
    help: "Fraction of inference workers running a batch right now (over time: rate(radio_worker_busy_seconds_total) / radio_workers)",
    read: (l) => (l.workers() > 0 ? l.runningBatches() / l.workers() : 0),
  },
];

export class ServerMetrics implements PipelineMetrics, TextMetrics {
  readonly registry = new Registry();
  private live: LiveState | null = null;

  private readonly requests = new Counter({
    name: "radio_grpc_requests_total",
    help: "gRPC calls finished, by method and status code",
    labelNames: ["method", "code"] as const,
    registers: [this.registry],
  });
  private readonly images = new Counter({
    name: "radio_images_total",
    help: "Images encoded successfully (images/s: rate of this)",
    labelNames: ["graph", "output"] as const,
    registers: [this.registry],
  });
  private readonly failures = new Counter({
    name: "radio_image_failures_total",
    help: "Images answered with an error, by reason code",
    labelNames: ["code"] as const,
    registers: [this.registry],
  });
  private readonly dropped = new Counter({
    name: "radio_images_dropped_total",
    help: "Queued images dropped before running because their call was cancelled, ran past its deadline, its client stopped reading results (stalled), or the server shut down",
    labelNames: ["reason"] as const,
    registers: [this.registry],
  });
  private readonly batchSize = new Histogram({
    name: "radio_batch_size",
    help: "Images per inference batch",
    labelNames: ["graph"] as const,
    buckets: [1, 2, 4, 8, 16, 32, 64, 128],
    registers: [this.registry],
  });
  private readonly batchCalls = new Histogram({
    name: "radio_batch_calls",
    help: "Calls (requests) whose images share one inference batch: above 1, batches mix callers (e.g. processes sharing a sidecar)",
    labelNames: ["graph"] as const,
    buckets: [1, 2, 3, 4, 8, 16],
    registers: [this.registry],
  });
  private readonly inference = new Histogram({
    name: "radio_inference_seconds",
    help: "Time a worker spent running one batch",
    labelNames: ["graph"] as const,
    buckets: SECONDS,
    registers: [this.registry],
  });
  private readonly queueTime = new Histogram({
    name: "radio_queue_time_seconds",
    help: "Time a decoded image waited for its batch",
    buckets: SECONDS,
    registers: [this.registry],
  });
  private readonly preprocessTime = new Histogram({
    name: "radio_preprocess_seconds",
    help: "Time to read, decode and resize one image",
    buckets: SECONDS,
    registers: [this.registry],
  });
  private readonly postprocessTime = new Histogram({
    name: "radio_postprocess_seconds",
    help: "Time to turn one image's features into its output (NCHW transpose or heatmap), queueing included",
    labelNames: ["output"] as const,
    buckets: SECONDS,
    registers: [this.registry],
  });

  private readonly prompts = new Counter({
    name: "radio_prompts_total",
    help: "Prompts embedded, by graph and whether the embedding came from the cache",
    labelNames: ["graph", "cached"] as const,
    registers: [this.registry],
  });
  private readonly textBatchSize = new Histogram({
    name: "radio_text_batch_size",
    help: "Prompts per text-tower run",
    labelNames: ["graph"] as const,
    buckets: [1, 2, 4, 8, 16, 32, 64, 128],
    registers: [this.registry],
  });
  private readonly textInference = new Histogram({
    name: "radio_text_inference_seconds",
    help: "Time a worker spent running one batch of prompts through the text tower",
    labelNames: ["graph"] as const,
    buckets: SECONDS,
    registers: [this.registry],
  });

  private readonly timeouts = new Counter({
    name: "radio_inference_timeouts_total",
    help: "Batches that ran past --inference-timeout-s and failed (their worker is replaced only if still stuck as long again)",
    registers: [this.registry],
  });
  private readonly replacements = new Counter({
    name: "radio_worker_replacements_total",
    help: "Inference workers started to replace one that crashed, ran out of memory or timed out",
    registers: [this.registry],
  });

  constructor(private readonly options: ServerMetricsOptions) {
    collectDefaultMetrics({ register: this.registry });
    const live = () => this.live;
    for (const g of LIVE_GAUGES) {
      new Gauge({
        name: g.name,
        help: g.help,
        registers: [this.registry],
        collect() {
          const l = live();
          this.set(l ? g.read(l) : 0);
        },
      });
    }
    let reported = 0;
    new Counter({
      name: "radio_worker_busy_seconds_total",
      help: "Worker time spent running batches",
      registers: [this.registry],
      collect() {
        const now = live()?.workerBusySeconds() ?? 0;
        if (now > reported) this.inc(now - reported);
        reported = Math.max(reported, now);
      },
    });
  }

  /** Connects the scrape-time gauges to the running server. */
  observe(state: LiveState): void {
    this.live = state;
  }

  request(method: string, code: string): void {
    this.requests.inc({ method, code });
  }

  imageSucceeded(graph: string, output: OutputKind): void {
    this.images.inc({ graph, output });
  }
  imageFailed(kind: FailureKind): void {
    this.failures.inc({ code: this.options.failureLabel(kind) });
  }
  imagesDropped(reason: DropReason, n: number): void {
    this.dropped.inc({ reason }, n);
  }
  batchRan(graph: string, size: number, inferenceSeconds: number, calls = 1): void {
    this.batchSize.observe({ graph }, size);
    this.batchCalls.observe({ graph }, calls);
    this.inference.observe({ graph }, inferenceSeconds);
  }
  queueWait(seconds: number): void {
    this.queueTime.observe(seconds);
  }
  preprocessed(seconds: number): void {
    this.preprocessTime.observe(seconds);
  }
  postprocessed(output: OutputKind, seconds: number): void {
    this.postprocessTime.observe({ output }, seconds);
  }
  promptsEmbedded(graph: string, cached: boolean, n: number): void {
    this.prompts.inc({ graph, cached: String(cached) }, n);
  }
  textBatchRan(graph: string, size: number, seconds: number): void {
    this.textBatchSize.observe({ graph }, size);
    this.textInference.observe({ graph }, seconds);
  }
  inferenceTimedOut(): void {
    this.timeouts.inc();
  }
  workerReplaced(): void {
    this.replacements.inc();
  }
}
