// Wires the long-running server: transports (gRPC, HTTP) → pipeline (preprocess, batching,
// postprocess) → inference pool. Startup: listen with health NOT_SERVING, load and warm every graph
// in every worker, then SERVING. Shutdown: NOT_SERVING, refuse new calls, finish what was admitted
// (bounded), close.
import os from "node:os";
import type { Logger } from "pino";
import { configureSharp, createPathPolicy, recommendedDecodeParallelism } from "./preprocess/index.js";
import { PostprocessPool } from "./postprocess/pool.js";
import { defaultPostprocessThreads } from "./postprocess/threads.js";
import { loadServedGraphs, type GraphSource, type ServedGraph } from "./pipeline/graphs.js";
import { Pipeline } from "./pipeline/pipeline.js";
import { InferencePool, type PrepackPolicy } from "./runtime/pool.js";
import { describeChoice, resolveProvider, type ProviderChoice, type ProviderRequest } from "./runtime/providers.js";
import { BATCH_DEFAULTS, IMAGE_LIMITS, SERVE_DEFAULTS, TEXT_DEFAULTS } from "./defaults.js";
import { PromptTokenizer } from "./preprocess/text.js";
import { ServerMetrics } from "./observability/metrics.js";
import { buildServerInfo, providerName, type ServerInfo } from "./server-info.js";
import { ERROR_CODES } from "./transport/grpc/codes.js";
import { startGrpcServer, type GrpcListen, type GrpcServer } from "./transport/grpc/server.js";
import { startHttpServer, type HttpServer, type HttpServerOptions } from "./transport/http/server.js";

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
  /** Largest inference batch; null/absent = the provider's default (defaults.ts). */
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
  /** An Embed call whose client has read none of its waiting results for this long is ended; 0 = never. */
  stallTimeoutMs?: number;
}

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

/** Probes the providers (in child processes, before anything listens) and logs the choice once, with why. */
async function chooseProvider(request: ProviderRequest, graphs: readonly ServedGraph[], logger: Logger): Promise<ProviderChoice> {
  // An explicit provider that cannot run fails here.
  const choice = await resolveProvider(request, { precisions: graphs.map((graph) => graph.metadata.precision) });
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
  const chosen = choice.probes.find((probe) => probe.provider === provider);
  if (chosen?.software) logger.warn({ provider }, chosen.reason);
  if (choice.probes.some((probe) => probe.detail))
    logger.debug({ probes: choice.probes.map(({ provider, detail }) => ({ provider, detail })) }, "provider probe details");
  for (const graph of graphs) {
    if (provider === "cpu" && graph.metadata.precision === "fp16") {
      logger.warn({ graph: graph.name }, "fp16 graph on the CPU execution provider: expect it to be slower than fp32");
    }
  }
  return choice;
}

/** The HTTP side on a TCP port and on a unix socket, each when configured. */
interface HttpSides {
  http: HttpServer | null;
  httpUnix: HttpServer | null;
}

/** The HTTP side (health, readiness, metrics, info) on a TCP port and/or a unix socket, as configured. */
async function startHttp(
  config: ServeConfig,
  logger: Logger,
  side: Pick<HttpServerOptions, "registry" | "ready" | "shuttingDown" | "info">,
): Promise<HttpSides> {
  const common = { ...side, host: config.httpHost, logger: logger.child({ component: "http" }) };
  const http = config.httpPort !== null ? await startHttpServer({ ...common, port: config.httpPort }) : null;
  try {
    const httpUnix = config.httpSocket ? await startHttpServer({ ...common, port: 0, socket: config.httpSocket }) : null;
    return { http, httpUnix };
  } catch (err) {
    await http?.close();
    throw err;
  }
}

/** Every knob the pipeline runs with, logged once at start-up (never the token itself). */
function logPipelineSettings(logger: Logger, settings: Record<string, unknown>, decodeParallelism: number, uvThreads: number): void {
  logger.info({ ...settings, decodeParallelism, uvThreads }, "pipeline settings");
  if (decodeParallelism > uvThreads) {
    logger.warn(
      { decodeParallelism, uvThreads },
      `${decodeParallelism} decodes in flight, but libuv's thread pool runs ${uvThreads} at a time: start the server with UV_THREADPOOL_SIZE=${decodeParallelism + 4} (the zoo does)`,
    );
  }
}

/** Worker events → metrics and logs; resolves `fatal` when a worker cannot be replaced. */
function watchWorkers(pool: InferencePool, metrics: ServerMetrics, logger: Logger): Promise<Error> {
  return new Promise<Error>((resolve) => {
    pool.on("fatal", (err: Error) => {
      logger.fatal({ err }, "an inference worker cannot be replaced");
      resolve(err);
    });
    pool.on("workerReady", (worker: { threadId: number }) => {
      metrics.workerReplaced();
      logger.warn({ threadId: worker.threadId }, "a replacement inference worker is ready");
    });
    pool.on("timeout", (err: Error) => {
      metrics.inferenceTimedOut();
      logger.error({ err }, "an inference batch timed out");
    });
    pool.on("workerError", (err: Error) => logger.error({ err }, "an inference worker failed"));
  });
}

/**
 * Resolves after no gRPC call was open (a client holding a health Watch lease keeps the server up)
 * and nothing was admitted, continuously for idleMs; never when idleMs is 0. Checked a few times a
 * second; the timer never keeps the process alive on its own.
 */
function watchIdle(grpc: GrpcServer, pipeline: Pipeline, idleMs: number, logger: Logger): Promise<void> {
  return new Promise<void>((resolve) => {
    if (idleMs <= 0) return;
    const startedIdle = Date.now();
    const timer = setInterval(
      () => {
        const since = Math.max(grpc.openCalls.lastChange, startedIdle);
        if (grpc.openCalls.open === 0 && pipeline.admitted === 0 && pipeline.activeRequests === 0 && Date.now() - since >= idleMs) {
          clearInterval(timer);
          logger.info({ idleTimeoutS: idleMs / 1000 }, "idle: no client and no call for the idle timeout; shutting down");
          resolve();
        }
      },
      Math.min(1000, Math.max(50, idleMs / 4)),
    );
    timer.unref();
  });
}

export async function serve(config: ServeConfig, logger: Logger, hooks: ServeHooks = {}): Promise<RunningServer> {
  if (os.endianness() !== "LE") throw new Error("this server writes little-endian tensors and needs a little-endian host");
  const cores = os.availableParallelism();
  const threads = config.threads > 0 ? config.threads : Math.max(1, Math.floor(cores / config.workers));
  const decodeParallelism = config.decodeParallelism > 0 ? config.decodeParallelism : recommendedDecodeParallelism(cores);
  // sharp decodes on libuv's thread pool, sized once from UV_THREADPOOL_SIZE when the process starts
  // (too late to change from here): decodes in flight beyond it only queue. libuv's rule: 4 when
  // unset, else the number (an empty or invalid value is 1), at most 1024.
  const uvEnv = process.env.UV_THREADPOOL_SIZE;
  const uvThreads = uvEnv === undefined ? 4 : Math.min(1024, Math.max(1, Number.parseInt(uvEnv, 10) || 1));

  // 1. Everything that can be checked without loading a graph fails here, before anything listens.
  const graphs = loadServedGraphs(config.graphs);
  // Tokenisation runs on the main thread (microseconds a prompt); the workers only run the towers.
  const tokenizers = new Map(
    graphs.flatMap((graph) => (graph.text ? [[graph.name, PromptTokenizer.forTextGraph(graph.text.dir, graph.text.metadata)] as const] : [])),
  );
  const paths = await createPathPolicy(config.allowedRoots);
  const sharp = configureSharp();
  const choice = await chooseProvider(config.provider, graphs, logger);
  const provider = choice.provider;
  const batching = BATCH_DEFAULTS[provider === "cpu" ? "cpu" : "gpu"];
  const maxBatch = config.maxBatch ?? batching.maxBatch;
  const maxBatchTokens = config.maxBatchTokens ?? batching.maxBatchTokens;

  // 2. Listen, NOT_SERVING: health and metrics answer while the graphs load.
  const metrics = new ServerMetrics({ failureLabel: (kind) => ERROR_CODES[kind] });
  let pipeline: Pipeline | null = null;
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
  const pathInputs = "socket" in config.listen || (config.allowRemotePaths ?? false);
  const grpc = await startGrpcServer({
    listen: config.listen,
    state: { pipeline: () => pipeline, shuttingDown: () => shuttingDown, info, pathInputs },
    recorder: metrics,
    logger: logger.child({ component: "grpc" }),
    maxRequestBytes: config.maxRequestBytes,
    stallTimeoutMs: config.stallTimeoutMs ?? SERVE_DEFAULTS.stallTimeoutMs,
    token: config.token ?? null,
    tls: config.tls ?? null,
  });
  const postprocessThreads = config.postprocessThreads ?? defaultPostprocessThreads(provider, cores);
  const postprocess = new PostprocessPool(postprocessThreads);
  let http: HttpSides = { http: null, httpUnix: null };
  let pool: InferencePool;
  try {
    http = await startHttp(config, logger, {
      registry: metrics.registry,
      ready: () => pipeline !== null && !shuttingDown,
      shuttingDown: () => shuttingDown,
      info,
    });
    logger.info(
      { address: grpc.address, httpPort: http.http?.port ?? null, httpSocket: http.httpUnix?.socket ?? null },
      "listening (NOT_SERVING until the graphs are warm)",
    );
    await hooks.onListening?.({ socket: grpc.socket, grpcPort: grpc.port, httpPort: http.http?.port ?? null });

    // 3. Load and warm every graph in every worker.
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
      prepackWeights: config.prepackWeights ?? SERVE_DEFAULTS.prepackWeights,
      warmup: config.warmup,
      inferenceTimeoutMs: config.inferenceTimeoutMs ?? 0,
      workerHeapMb: config.workerHeapMb ?? SERVE_DEFAULTS.workerHeapMb,
      ...(config.workerModule ? { workerModule: config.workerModule } : {}),
    });
  } catch (err) {
    await http.http?.close();
    await http.httpUnix?.close();
    await grpc.close(0);
    await postprocess.close();
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
  logPipelineSettings(
    logger,
    {
      maxBatch,
      maxBatchTokens,
      queueDelayMs: config.queueDelayMs,
      maxQueue: config.maxQueue,
      stallTimeoutMs: config.stallTimeoutMs ?? SERVE_DEFAULTS.stallTimeoutMs,
      postprocessThreads,
      sharp,
      allowedRoots: paths.roots,
      auth: config.token ? "token" : "none",
      tls: Boolean(config.tls),
      pathInputs,
      inferenceTimeoutMs: config.inferenceTimeoutMs ?? 0,
      maxRequestBytes: config.maxRequestBytes,
      maxImagePixels: config.maxImagePixels,
    },
    decodeParallelism,
    uvThreads,
  );
  const fatal = watchWorkers(pool, metrics, logger);

  // 4. The pipeline in front of the pool, then SERVING.
  const running = new Pipeline({
    graphs,
    inference: pool,
    postprocess,
    paths,
    maxBatch,
    maxBatchTokens,
    maxQueueDelayMs: config.queueDelayMs,
    maxHoldMs: config.batchHoldMs ?? batching.batchHoldMs,
    maxQueue: config.maxQueue,
    decodeParallelism,
    limits: { limitInputPixels: config.maxImagePixels ?? IMAGE_LIMITS.limitInputPixels },
    text: { tokenizers, backend: pool, maxBatch: batching.textBatch, maxPrompts: TEXT_DEFAULTS.maxPrompts, cacheBytes: TEXT_DEFAULTS.cacheBytes, metrics },
    metrics,
    logger: logger.child({ component: "pipeline" }),
  });
  metrics.observe({
    admitted: () => running.admitted,
    undelivered: () => running.undelivered,
    queueDepth: () => running.queueDepth,
    runningBatches: () => pool.busyWorkers,
    workers: () => pool.workers,
    workerBusySeconds: () => pool.busySeconds,
    openCalls: () => grpc.openCalls.open,
  });
  pipeline = running;
  grpc.setServing(true);
  logger.info("SERVING");

  // 5. Shutdown: NOT_SERVING, refuse new calls, finish what was admitted (bounded), close.
  let shutdownPromise: Promise<void> | null = null;
  const shutdown = (): Promise<void> => {
    shutdownPromise ??= (async () => {
      shuttingDown = true;
      grpc.setServing(false);
      logger.info({ active: running.activeRequests, admitted: running.admitted }, "shutting down: NOT_SERVING, refusing new calls, finishing admitted work");
      if ((await Promise.race([running.drain(), timeout(config.shutdownTimeoutMs)])) === "timeout") {
        logger.warn({ admitted: running.admitted }, "shutdown grace period over: dropping queued images");
        running.cancelAll("shutdown");
      }
      running.close();
      await grpc.close(1000); // only long-lived calls (health Watch) are left by now
      await http.http?.close();
      await http.httpUnix?.close();
      await postprocess.close();
      // Terminating a worker inside session.run aborts the process (onnxruntime-node), so a batch
      // still running after the grace period is left to the process exit instead.
      if (pool.running === 0) await pool.close();
      else logger.warn({ running: pool.running }, "leaving running batches to process exit");
      logger.info("stopped");
    })();
    return shutdownPromise;
  };

  return {
    idle: watchIdle(grpc, running, config.idleTimeoutMs ?? 0, logger),
    httpSocket: http.httpUnix?.socket ?? null,
    socket: grpc.socket,
    grpcPort: grpc.port,
    address: grpc.address,
    httpPort: http.http?.port ?? null,
    metrics,
    pipeline: running,
    pool,
    provider: choice,
    info,
    fatal,
    shutdown,
  };
}
