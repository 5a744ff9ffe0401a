// Wires the long-running server: transports (gRPC, HTTP) → pipeline (preprocess, batching,
// postprocess) → inference pool. Startup: listen with health NOT_SERVING, load and warm every graph
// in every worker, then SERVING. Shutdown: NOT_SERVING, refuse new calls, finish what was admitted
// (bounded), close.
import os from "node:os";
import type { Logger } from "pino";
import { configureSharp, createPathPolicy, DEFAULT_LIMITS, recommendedDecodeParallelism } from "./preprocess/index.js";
import { PostprocessPool } from "./postprocess/pool.js";
import { defaultPostprocessThreads } from "./postprocess/threads.js";
import { loadServedGraphs, type GraphSource } from "./pipeline/graphs.js";
import { Pipeline } from "./pipeline/pipeline.js";
import { InferencePool, type PrepackPolicy } from "./runtime/pool.js";
import { describeChoice, resolveProvider, type ProviderChoice, type ProviderRequest } from "./runtime/providers.js";
import { batchDefaults, TEXT_DEFAULTS } from "./provider-defaults.js";
import { PromptTokenizer } from "./preprocess/text.js";
import { ServerMetrics } from "./observability/metrics.js";
import { buildServerInfo, providerName, type ServerInfo } from "./server-info.js";
import { ERROR_CODES } from "./transport/grpc/codes.js";
import { startGrpcServer, type GrpcListen, type GrpcServer } from "./transport/grpc/server.js";
import { startHttpServer, type HttpServer } from "./transport/http/server.js";

export interface ServeConfig {
  graphs: GraphSource[];
  /** Unix socket ({ socket: null } = a fresh private temp dir) or TCP. */
  listen: GrpcListen;
  /** HTTP side port: null = off, 0 = any free port. */
  httpPort: number | null;
  httpHost: string;
  workers: number;
  /** ORT intra-op threads per worker; 0 = cores / workers. */
  threads: number;
  /** Pre-packed weight copies per worker ("auto": only for int8 graphs; see session.ts). */
  prepackWeights?: PrepackPolicy;
  /** Heatmap / NCHW threads; 0 = on the main thread; null/absent = the provider's default (postprocess/threads.ts). */
  postprocessThreads?: number | null;
  /** Largest inference batch; null/absent = the provider's default (provider-defaults.ts). */
  maxBatch?: number | null;
  /** Most patch tokens per batch; 0 = no limit; null/absent = the provider's default (a CPU budget; no limit on GPUs). */
  maxBatchTokens?: number | null;
  queueDelayMs: number;
  /** Longest a partial batch waits for images still being decoded; null/absent = the provider's default. */
  batchHoldMs?: number | null;
  maxQueue: number;
  /** Decodes in flight; 0 = one per core. */
  decodeParallelism: number;
  /** Roots that path inputs must lie under; empty = path inputs refused. */
  allowedRoots: string[];
  /** "auto": cuda, else webgpu on a GPU adapter, else cpu (runtime/providers.ts); an explicit provider never falls back. */
  provider: ProviderRequest;
  /** Grace period for in-flight work on shutdown. */
  shutdownTimeoutMs: number;
  warmup: boolean;
  /** Bearer token every call but health must carry; required to listen beyond loopback. */
  token?: string | null;
  /** PEM certificate chain and key: TLS on the TCP listener. */
  tls?: { cert: Buffer; key: Buffer } | null;
  /** Accept path inputs from TCP clients (unix-socket clients, the local user, always may). */
  allowRemotePaths?: boolean;
  /** A batch running this long after it started fails; a worker still stuck as long again is replaced (0 = no limit; see InferencePool). */
  inferenceTimeoutMs?: number;
  /** V8 heap limit per inference worker, MB (0 = Node's default). */
  workerHeapMb?: number;
  /** Tests only (never set by the CLI): a worker module to run instead of the real one, e.g.
   * test/node/support/fault-worker.ts, which wraps it to inject faults. */
  workerModule?: string;
  /** Largest request message, bytes. */
  maxRequestBytes?: number;
  /** Most pixels per image (from the header, before decoding; or raw height × width). */
  maxImagePixels?: number;
  /** Also serve the HTTP side (health, metrics, info) on this unix socket (owner-only), e.g. a shared sidecar's. */
  httpSocket?: string | null;
  /** Reported by Info: the key a shared local sidecar was started for (clients check it before use). */
  instanceKey?: string | null;
  /** Shut down after this long with no gRPC call open (health Watch leases included) and no image admitted; 0 = never. */
  idleTimeoutMs?: number;
}

export const SERVE_DEFAULTS = {
  httpPort: null,
  httpHost: "127.0.0.1",
  workers: 1,
  threads: 0,
  postprocessThreads: null,
  maxBatch: null,
  queueDelayMs: 5,
  maxQueue: 256,
  decodeParallelism: 0,
  allowedRoots: [],
  provider: "auto",
  shutdownTimeoutMs: 30_000,
  warmup: true,
  token: null,
  tls: null,
  allowRemotePaths: false,
  inferenceTimeoutMs: 0,
  workerHeapMb: 1024,
  maxRequestBytes: 256 * 1024 * 1024,
  maxImagePixels: DEFAULT_LIMITS.limitInputPixels,
} as const satisfies Partial<ServeConfig>;

export interface ServeHooks {
  /** Called once the transports listen and before graphs load (health is NOT_SERVING meanwhile). */
  onListening?(addresses: { socket: string | null; grpcPort: number | null; httpPort: number | null }): void | Promise<void>;
}

export interface RunningServer {
  socket: string | null;
  grpcPort: number | null;
  /** "unix:/path" or "host:port". */
  address: string;
  httpPort: number | null;
  metrics: ServerMetrics;
  pipeline: Pipeline;
  pool: InferencePool;
  /** Which execution provider runs the graphs, and why. */
  provider: ProviderChoice;
  info(): ServerInfo;
  /** Settles when a replacement worker cannot load (the server cannot heal itself). */
  fatal: Promise<Error>;
  /** Settles when the server has been idle for idleTimeoutMs (the caller then shuts it down). */
  idle: Promise<void>;
  /** The HTTP side's unix socket, when asked for. */
  httpSocket: string | null;
  /** Graceful shutdown; idempotent. */
  shutdown(): Promise<void>;
}

function timeout(ms: number): Promise<"timeout"> {
  return new Promise((r) => setTimeout(() => r("timeout"), ms).unref());
}

export async function serve(config: ServeConfig, logger: Logger, hooks: ServeHooks = {}): Promise<RunningServer> {
  if (os.endianness() !== "LE") throw new Error("this server writes little-endian tensors and needs a little-endian host");
  const cores = os.availableParallelism();
  const threads = config.threads > 0 ? config.threads : Math.max(1, Math.floor(cores / config.workers));
  const decodeParallelism = config.decodeParallelism > 0 ? config.decodeParallelism : recommendedDecodeParallelism(cores);
  // sharp decodes on libuv's thread pool, sized once from UV_THREADPOOL_SIZE (default 4) when the
  // process starts: decodes in flight beyond it only queue (measured: 4 at once whatever the setting).
  const uvThreads = Number(process.env.UV_THREADPOOL_SIZE) || 4;

  // Everything that can be checked without loading a graph fails here, before anything listens.
  const graphs = loadServedGraphs(config.graphs);
  // Tokenisation runs on the main thread (microseconds a prompt); the workers only run the towers.
  const tokenizers = new Map(
    graphs.flatMap((graph) => (graph.text ? [[graph.name, PromptTokenizer.forTextGraph(graph.text.dir, graph.text.metadata)] as const] : [])),
  );
  const paths = await createPathPolicy(config.allowedRoots);
  const sharp = configureSharp();
  // Probed in child processes before anything listens: an explicit provider that cannot run fails here.
  const choice = await resolveProvider(config.provider, { precisions: graphs.map((graph) => graph.metadata.precision) });
  const provider = choice.provider;
  logger.info(
    {
      requested: choice.requested,
      provider,
      precision: choice.precision,
      probes: choice.probes.map(({ provider, usable, fp16, software, ms }) => ({ provider, usable, fp16, software, ms })),
    },
    describeChoice(choice),
  );
  // An explicit webgpu on a software Vulkan driver runs, but slowly: say so.
  const chosen = choice.probes.find((p) => p.provider === provider);
  if (chosen?.software) logger.warn({ provider }, chosen.reason);
  if (choice.probes.some((p) => p.detail))
    logger.debug({ probes: choice.probes.map(({ provider, detail }) => ({ provider, detail })) }, "provider probe details");
  const batching = batchDefaults(provider);
  const maxBatch = config.maxBatch ?? batching.maxBatch;
  for (const graph of graphs) {
    if (provider === "cpu" && graph.metadata.precision === "fp16") {
      logger.warn({ graph: graph.name }, "fp16 graph on the CPU execution provider: expect it to be slower than fp32");
    }
  }

  const metrics = new ServerMetrics({ failureLabel: (kind) => ERROR_CODES[kind] });
  let pipeline: Pipeline | null = null;
  let pool: InferencePool | null = null;
  let shuttingDown = false;
  const providers = new Map<string, string>();
  let ortVersion = "";
  const info = (): ServerInfo =>
    buildServerInfo({
      graphs,
      defaultGraph: graphs[0]!.name,
      providers,
      onnxruntimeVersion: ortVersion,
      workers: config.workers,
      intraOpThreads: threads,
      maxBatchSize: maxBatch,
      provider: choice,
      instanceKey: config.instanceKey ?? "",
      idleTimeoutS: Math.round((config.idleTimeoutMs ?? 0) / 1000),
    });

  const grpc: GrpcServer = await startGrpcServer({
    listen: config.listen,
    state: { pipeline: () => pipeline, shuttingDown: () => shuttingDown, info, pathInputs: "socket" in config.listen || (config.allowRemotePaths ?? false) },
    recorder: metrics,
    logger: logger.child({ component: "grpc" }),
    maxRequestBytes: config.maxRequestBytes,
    token: config.token ?? null,
    tls: config.tls ?? null,
  });
  let http: HttpServer | null = null;
  let httpUnix: HttpServer | null = null;
  const postprocessThreads = config.postprocessThreads ?? defaultPostprocessThreads(provider, cores);
  const postprocess = new PostprocessPool(postprocessThreads);
  const closeEarly = async () => {
    await http?.close();
    await httpUnix?.close();
    await grpc.close(0);
    await postprocess.close();
  };
  try {
    if (config.httpPort !== null) {
      http = await startHttpServer({
        host: config.httpHost,
        port: config.httpPort,
        logger: logger.child({ component: "http" }),
        registry: metrics.registry,
        ready: () => pipeline !== null && !shuttingDown,
        shuttingDown: () => shuttingDown,
        info,
      });
    }
    if (config.httpSocket) {
      httpUnix = await startHttpServer({
        host: config.httpHost,
        port: 0,
        socket: config.httpSocket,
        logger: logger.child({ component: "http" }),
        registry: metrics.registry,
        ready: () => pipeline !== null && !shuttingDown,
        shuttingDown: () => shuttingDown,
        info,
      });
    }
    logger.info(
      { address: grpc.address, httpPort: http?.port ?? null, httpSocket: httpUnix?.socket ?? null },
      "listening (NOT_SERVING until the graphs are warm)",
    );
    await hooks.onListening?.({ socket: grpc.socket, grpcPort: grpc.port, httpPort: http?.port ?? null });

    logger.info(
      {
        graphs: graphs.map((graph) => ({ name: graph.name, dir: graph.dir, precision: graph.metadata.precision })),
        provider,
        workers: config.workers,
        threads,
      },
      "loading graphs",
    );
    pool = await InferencePool.start({
      graphs: graphs.map((graph) => ({ name: graph.name, dir: graph.dir, ...(graph.text ? { textDir: graph.text.dir } : {}) })),
      workers: config.workers,
      intraOpThreads: threads,
      provider,
      prepackWeights: config.prepackWeights ?? "auto",
      warmup: config.warmup,
      inferenceTimeoutMs: config.inferenceTimeoutMs ?? 0,
      workerHeapMb: config.workerHeapMb ?? SERVE_DEFAULTS.workerHeapMb,
      ...(config.workerModule ? { workerModule: config.workerModule } : {}),
    });
  } catch (err) {
    await closeEarly();
    throw err;
  }
  ortVersion = pool.ready.ortVersion;
  for (const ready of pool.ready.graphs) providers.set(ready.name, providerName(ready.provider));
  // The one line that says what runs where.
  logger.info(
    {
      provider: providerName(provider),
      onnxruntime: ortVersion,
      workers: config.workers,
      intraOpThreads: threads,
      graphs: pool.ready.graphs.map((ready) => `${ready.name} (warm-up ${ready.warmupMs.toFixed(0)} ms)`),
      loadMs: Math.round(pool.ready.loadMs),
    },
    `inference runs on ${providerName(provider)}: ${config.workers} worker(s) × ${threads} intra-op thread(s)`,
  );
  const maxBatchTokens = config.maxBatchTokens ?? batching.maxBatchTokens;
  logger.info(
    {
      maxBatch,
      maxBatchTokens,
      queueDelayMs: config.queueDelayMs,
      maxQueue: config.maxQueue,
      decodeParallelism,
      uvThreads,
      postprocessThreads,
      sharp,
      allowedRoots: paths.roots,
      // Never the token itself.
      auth: config.token ? "token" : "none",
      tls: Boolean(config.tls),
      pathInputs: "socket" in config.listen || Boolean(config.allowRemotePaths),
      inferenceTimeoutMs: config.inferenceTimeoutMs ?? 0,
      maxRequestBytes: config.maxRequestBytes,
      maxImagePixels: config.maxImagePixels,
    },
    "pipeline settings",
  );
  if (decodeParallelism > uvThreads) {
    logger.warn(
      { decodeParallelism, uvThreads },
      `${decodeParallelism} decodes in flight, but libuv's thread pool runs ${uvThreads} at a time: start the server with UV_THREADPOOL_SIZE=${decodeParallelism + 4} (the zoo does)`,
    );
  }

  const running = pool;
  let fatalResolve!: (e: Error) => void;
  const fatal = new Promise<Error>((r) => (fatalResolve = r));
  running.on("fatal", (err: Error) => {
    logger.fatal({ err }, "an inference worker cannot be replaced");
    fatalResolve(err);
  });
  running.on("workerReady", (worker: { threadId: number }) => {
    metrics.workerReplaced();
    logger.warn({ threadId: worker.threadId }, "a replacement inference worker is ready");
  });
  running.on("timeout", (err: Error) => {
    metrics.inferenceTimedOut();
    logger.error({ err }, "an inference batch timed out");
  });
  running.on("workerError", (err: Error) => logger.error({ err }, "an inference worker failed"));

  const pipe = new Pipeline({
    graphs,
    inference: running,
    postprocess,
    paths,
    maxBatch,
    maxBatchTokens,
    maxQueueDelayMs: config.queueDelayMs,
    maxHoldMs: config.batchHoldMs ?? batching.batchHoldMs,
    maxQueue: config.maxQueue,
    decodeParallelism,
    limits: { limitInputPixels: config.maxImagePixels ?? DEFAULT_LIMITS.limitInputPixels },
    text: { tokenizers, backend: running, maxBatch: batching.textBatch, maxPrompts: TEXT_DEFAULTS.maxPrompts, cacheBytes: TEXT_DEFAULTS.cacheBytes, metrics },
    metrics,
    logger: logger.child({ component: "pipeline" }),
  });
  metrics.observe({
    admitted: () => pipe.admitted,
    queueDepth: () => pipe.queueDepth,
    runningBatches: () => running.running,
    workers: () => running.workers,
    workerBusySeconds: () => running.busySeconds,
    openCalls: () => grpc.openCalls.open,
  });
  pipeline = pipe;
  grpc.setServing(true);
  logger.info("SERVING");

  let shutdownPromise: Promise<void> | null = null;
  const shutdown = (): Promise<void> => {
    shutdownPromise ??= (async () => {
      shuttingDown = true;
      grpc.setServing(false);
      logger.info({ active: pipe.activeRequests, admitted: pipe.admitted }, "shutting down: NOT_SERVING, refusing new calls, finishing admitted work");
      if ((await Promise.race([pipe.drain(), timeout(config.shutdownTimeoutMs)])) === "timeout") {
        logger.warn({ admitted: pipe.admitted }, "shutdown grace period over: dropping queued images");
        pipe.cancelAll("shutdown");
      }
      pipe.close();
      await grpc.close(1000); // only long-lived calls (health Watch) are left by now
      await http?.close();
      await httpUnix?.close();
      await postprocess.close();
      // Terminating a worker inside session.run aborts the process (onnxruntime-node), so a batch
      // still running after the grace period is left to the process exit instead.
      if (running.running === 0) await running.close();
      else logger.warn({ running: running.running }, "leaving running batches to process exit");
      logger.info("stopped");
    })();
    return shutdownPromise;
  };

  // Idle: no gRPC call open (a client holding a health Watch lease keeps the server up) and nothing
  // admitted, continuously for idleTimeoutMs. Checked a few times a second; the timer never keeps
  // the process alive on its own.
  let idleResolve!: () => void;
  const idle = new Promise<void>((r) => (idleResolve = r));
  const idleMs = config.idleTimeoutMs ?? 0;
  if (idleMs > 0) {
    const startedIdle = Date.now();
    const timer = setInterval(
      () => {
        const since = Math.max(grpc.openCalls.lastChange, startedIdle);
        if (grpc.openCalls.open === 0 && pipe.admitted === 0 && pipe.activeRequests === 0 && Date.now() - since >= idleMs) {
          clearInterval(timer);
          logger.info({ idleTimeoutS: idleMs / 1000 }, "idle: no client and no call for the idle timeout; shutting down");
          idleResolve();
        }
      },
      Math.min(1000, Math.max(50, idleMs / 4)),
    );
    timer.unref();
  }

  return {
    idle,
    httpSocket: httpUnix?.socket ?? null,
    socket: grpc.socket,
    grpcPort: grpc.port,
    address: grpc.address,
    httpPort: http?.port ?? null,
    metrics,
    pipeline: pipe,
    pool: running,
    provider: choice,
    info,
    fatal,
    shutdown,
  };
}
