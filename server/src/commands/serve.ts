// `serve`: the long-running sidecar. Every setting is a flag with an environment variable (for
// containers), defaulting to defaults.ts; serve.ts wires them.
import { readFileSync } from "node:fs";
import { type Command, InvalidArgumentError, Option } from "commander";
import type { LogLevel } from "../observability/logger.js";
import { POSTPROCESS_THREADS_DEFAULT_TEXT } from "../postprocess/threads.js";
import { describeBatchDefault, MiB, SERVE_DEFAULTS } from "../defaults.js";
import { PROVIDER_REQUESTS, type ProviderRequest } from "../runtime/providers.js";
import { collect, envList, httpPortArg, nonNegativeInt, portNumber, positiveInt, timerSeconds } from "./args.js";

interface ServeOptions {
  graph?: string[];
  socket?: string;
  port?: number;
  host: string;
  httpPort: number | "auto";
  workers: number;
  threads: number;
  prepackWeights: "auto" | "on" | "off";
  postprocessThreads?: number;
  maxBatch?: number;
  maxBatchTokens?: number;
  queueDelayMs: number;
  batchHoldMs?: number;
  maxQueue: number;
  stallTimeoutS: number;
  decodeParallelism: number;
  allowedRoot?: string[];
  provider: ProviderRequest;
  shutdownTimeoutS: number;
  logLevel: LogLevel;
  token?: string;
  tlsCert?: string;
  tlsKey?: string;
  allowRemotePaths: boolean;
  inferenceTimeoutS: number;
  maxMessageMb: number;
  maxImagePixels: number;
  httpSocket?: string;
  instanceKey?: string;
  idleTimeoutS: number;
  parentPid?: number;
}

/**
 * Calls `gone` once, when process `pid` (the one that started the server) is gone: the server was
 * re-parented, or `pid` no longer exists (it may be a grandparent, when node was started through a
 * wrapper such as a version manager's shim). Checked once a second; the timer never keeps the process
 * alive. Polled rather than Linux's parent-death signal, which the parent must set between fork and
 * exec, where a Python parent with gRPC calls in flight may crash (client/sidecar.py, spawn_private).
 */
function watchParent(pid: number, gone: () => void): void {
  const parent = process.ppid;
  const alive = (): boolean => {
    try {
      process.kill(pid, 0);
      return true;
    } catch (err) {
      return (err as NodeJS.ErrnoException).code === "EPERM"; // exists, another user's
    }
  };
  const timer = setInterval(() => {
    if (process.ppid === parent && alive()) return;
    clearInterval(timer);
    gone();
  }, 1000);
  timer.unref();
}

/** NAME=DIR, or a bare DIR named after its metadata (variant-precision). */
function parseGraphArg(value: string): { name?: string; dir: string } {
  const eq = value.indexOf("=");
  if (eq > 0 && !value.slice(0, eq).includes("/")) return { name: value.slice(0, eq), dir: value.slice(eq + 1) };
  return { dir: value };
}

async function serveCommand(options: ServeOptions): Promise<void> {
  const { serve } = await import("../serve.js");
  const { createLogger } = await import("../observability/logger.js");
  const logger = createLogger(options.logLevel);
  const graphs = (options.graph ?? envList("RADIO_GRAPH")).map(parseGraphArg);
  if (graphs.length === 0) throw new InvalidArgumentError("give at least one --graph [name=]DIR (or RADIO_GRAPH)");
  if (Boolean(options.tlsCert) !== Boolean(options.tlsKey)) throw new InvalidArgumentError("--tls-cert and --tls-key go together");
  const tls = options.tlsCert && options.tlsKey ? { cert: readFileSync(options.tlsCert), key: readFileSync(options.tlsKey) } : null;
  const running = await serve(
    {
      graphs,
      listen: options.port !== undefined ? { host: options.host, port: options.port } : { socket: options.socket ?? null },
      httpPort: options.httpPort === "auto" ? 0 : options.httpPort === 0 ? null : options.httpPort,
      httpHost: options.host,
      workers: options.workers,
      threads: options.threads,
      prepackWeights: options.prepackWeights,
      postprocessThreads: options.postprocessThreads ?? null,
      maxBatch: options.maxBatch ?? null,
      maxBatchTokens: options.maxBatchTokens ?? null,
      queueDelayMs: options.queueDelayMs,
      batchHoldMs: options.batchHoldMs ?? null,
      maxQueue: options.maxQueue,
      stallTimeoutMs: options.stallTimeoutS * 1000,
      decodeParallelism: options.decodeParallelism,
      allowedRoots: options.allowedRoot ?? envList("RADIO_ALLOWED_ROOT"),
      provider: options.provider,
      shutdownTimeoutMs: options.shutdownTimeoutS * 1000,
      warmup: true,
      token: options.token || null,
      tls,
      allowRemotePaths: options.allowRemotePaths,
      inferenceTimeoutMs: options.inferenceTimeoutS * 1000,
      maxRequestBytes: options.maxMessageMb * MiB,
      maxImagePixels: options.maxImagePixels,
      httpSocket: options.httpSocket ?? null,
      instanceKey: options.instanceKey ?? null,
      idleTimeoutMs: options.idleTimeoutS * 1000,
    },
    logger,
  );
  const stop = (code: number) => {
    const hard = setTimeout(() => process.exit(code), options.shutdownTimeoutS * 1000 + 5000);
    hard.unref();
    void running.shutdown().then(() => process.exit(code));
  };
  process.once("SIGTERM", () => stop(0));
  process.once("SIGINT", () => stop(0));
  void running.fatal.then(() => stop(1));
  void running.idle.then(() => stop(0));
  if (options.parentPid !== undefined) {
    const pid = options.parentPid;
    watchParent(pid, () => {
      logger.info({ parentPid: pid }, "the process that started the server is gone; shutting down");
      stop(0);
    });
  }
  const ready = {
    event: "ready",
    socket: running.socket,
    grpcPort: running.grpcPort,
    httpPort: running.httpPort,
    httpSocket: running.httpSocket,
    address: running.address,
    pid: process.pid,
    graphs: running.info().graphs.map((graph) => graph.name),
  };
  process.stdout.write(`${JSON.stringify(ready)}\n`);
}

export function addServeCommand(program: Command): void {
  program
    .command("serve")
    .description("serve compiled graphs over gRPC (radio.v1.Radio + health + reflection); prints one JSON line to stdout when ready")
    .option(
      "--graph <[name=]dir>",
      "compiled graph folder, repeatable; the first is the default graph; name defaults to <variant>-<precision> [env RADIO_GRAPH, ':'-separated]",
      collect,
    )
    .addOption(
      new Option("--socket <path>", "unix socket to listen on (default: a new private temp dir) [env RADIO_SOCKET]").env("RADIO_SOCKET").conflicts("port"),
    )
    .addOption(new Option("--port <n>", "listen on TCP instead of a unix socket (0 = any free port) [env RADIO_PORT]").env("RADIO_PORT").argParser(portNumber))
    .addOption(new Option("--host <addr>", "TCP / HTTP host [env RADIO_HOST]").env("RADIO_HOST").default(SERVE_DEFAULTS.httpHost))
    .addOption(
      new Option("--http-port <n|auto>", "HTTP port for /healthz /readyz /metrics /v1/info (0 = off, auto = any free port) [env RADIO_HTTP_PORT]")
        .env("RADIO_HTTP_PORT")
        .argParser(httpPortArg)
        .default(0),
    )
    .addOption(
      new Option("--workers <n>", "inference workers; fp32 weights are shared between them through the page cache, see --prepack-weights [env RADIO_WORKERS]")
        .env("RADIO_WORKERS")
        .argParser(positiveInt)
        .default(SERVE_DEFAULTS.workers),
    )
    .addOption(
      new Option("--threads <n>", "ORT intra-op threads per worker (0 = cores / workers) [env RADIO_THREADS]")
        .env("RADIO_THREADS")
        .argParser(nonNegativeInt)
        .default(SERVE_DEFAULTS.threads),
    )
    .addOption(
      new Option(
        "--prepack-weights <when>",
        "onnxruntime's pre-packed copy of the GEMM weights, per worker: auto = only for int8 graphs (fp32 weights then stay memory-mapped and shared: one copy for all workers, same speed) [env RADIO_PREPACK_WEIGHTS]",
      )
        .choices(["auto", "on", "off"])
        .env("RADIO_PREPACK_WEIGHTS")
        .default(SERVE_DEFAULTS.prepackWeights),
    )
    .addOption(
      new Option(
        "--postprocess-threads <n>",
        `threads for heatmaps and NCHW transposes, 0 = main thread (default: ${POSTPROCESS_THREADS_DEFAULT_TEXT}: a 512² heatmap takes a thread ~35–55 ms) [env RADIO_POSTPROCESS_THREADS]`,
      )
        .env("RADIO_POSTPROCESS_THREADS")
        .argParser(nonNegativeInt),
    )
    .addOption(
      new Option("--max-batch <n>", `largest inference batch (default: ${describeBatchDefault("maxBatch")}) [env RADIO_MAX_BATCH]`)
        .env("RADIO_MAX_BATCH")
        .argParser(positiveInt),
    )
    .addOption(
      new Option(
        "--max-batch-tokens <n>",
        `most patch tokens per inference batch, 0 = no limit (default: ${describeBatchDefault("maxBatchTokens", true)}: bigger CPU batches are slower per image, GPU batches are sized by images) [env RADIO_MAX_BATCH_TOKENS]`,
      )
        .env("RADIO_MAX_BATCH_TOKENS")
        .argParser(nonNegativeInt),
    )
    .addOption(
      new Option(
        "--queue-delay-ms <ms>",
        "longest an image waits on a free worker for batch-mates from calls not yet arrived (images of calls already here wait by --batch-hold-ms) [env RADIO_QUEUE_DELAY_MS]",
      )
        .env("RADIO_QUEUE_DELAY_MS")
        .argParser(nonNegativeInt)
        .default(SERVE_DEFAULTS.queueDelayMs),
    )
    .addOption(
      new Option(
        "--batch-hold-ms <ms>",
        `while images of calls already here are still being decoded, longest a partial batch waits for them, 0 = only --queue-delay-ms (default: ${describeBatchDefault("batchHoldMs")}: on a CPU decoding beside inference beats bigger batches) [env RADIO_BATCH_HOLD_MS]`,
      )
        .env("RADIO_BATCH_HOLD_MS")
        .argParser(nonNegativeInt),
    )
    .addOption(
      new Option(
        "--max-queue <n>",
        "images admitted and not yet running, plus finished results their clients have not read yet, across calls; a call that does not fit gets RESOURCE_EXHAUSTED; also the most images per call [env RADIO_MAX_QUEUE]",
      )
        .env("RADIO_MAX_QUEUE")
        .argParser(positiveInt)
        .default(SERVE_DEFAULTS.maxQueue),
    )
    .addOption(
      new Option(
        "--stall-timeout-s <s>",
        "an Embed call whose client has read none of its waiting results for this long is ended with RESOURCE_EXHAUSTED, its images not yet run dropped (unread results count against --max-queue until then; 0 = never) [env RADIO_STALL_TIMEOUT_S]",
      )
        .env("RADIO_STALL_TIMEOUT_S")
        .argParser(timerSeconds)
        .default(SERVE_DEFAULTS.stallTimeoutMs / 1000),
    )
    .addOption(
      new Option("--decode-parallelism <n>", "image decodes in flight (0 = one per core) [env RADIO_DECODE_PARALLELISM]")
        .env("RADIO_DECODE_PARALLELISM")
        .argParser(nonNegativeInt)
        .default(SERVE_DEFAULTS.decodeParallelism),
    )
    .option(
      "--allowed-root <dir>",
      "absolute directory that path inputs may be read from, repeatable (default: none, path inputs refused) [env RADIO_ALLOWED_ROOT, ':'-separated]",
      collect,
    )
    .addOption(
      new Option(
        "--provider <ep>",
        "execution provider: auto = cuda if its provider loads, else webgpu on a GPU's Vulkan adapter, else cpu (the choice and why is logged once; `providers` shows it); an explicit one fails with the reason when it cannot be used, never falling back [env RADIO_PROVIDER]",
      )
        .choices([...PROVIDER_REQUESTS])
        .env("RADIO_PROVIDER")
        .default(SERVE_DEFAULTS.provider),
    )
    .addOption(
      new Option(
        "--token <token>",
        "bearer token every call but health must carry (metadata authorization: Bearer <token>); required with a non-loopback --host; prefer the env var, which ps does not show [env RADIO_TOKEN]",
      ).env("RADIO_TOKEN"),
    )
    .addOption(new Option("--tls-cert <pem>", "TLS certificate chain (PEM) for the TCP listener; needs --tls-key [env RADIO_TLS_CERT]").env("RADIO_TLS_CERT"))
    .addOption(new Option("--tls-key <pem>", "TLS private key (PEM) [env RADIO_TLS_KEY]").env("RADIO_TLS_KEY"))
    .option(
      "--allow-remote-paths",
      "accept path inputs from TCP clients too (still confined to --allowed-root); unix-socket clients always may (no env var: only this flag turns it on)",
      false,
    )
    .addOption(
      new Option(
        "--inference-timeout-s <s>",
        "a batch still running this long after its worker started it fails; a worker still stuck on it as long again is replaced (0 = no limit); for hangs, set well above the slowest batch: see docs/reliability.md [env RADIO_INFERENCE_TIMEOUT_S]",
      )
        .env("RADIO_INFERENCE_TIMEOUT_S")
        .argParser(timerSeconds)
        .default(SERVE_DEFAULTS.inferenceTimeoutMs / 1000),
    )
    .addOption(
      new Option("--max-message-mb <n>", "largest request message, MB [env RADIO_MAX_MESSAGE_MB]")
        .env("RADIO_MAX_MESSAGE_MB")
        .argParser(positiveInt)
        .default(SERVE_DEFAULTS.maxRequestBytes / MiB),
    )
    .addOption(
      new Option("--max-image-pixels <n>", "most pixels per image, checked from the header before decoding [env RADIO_MAX_IMAGE_PIXELS]")
        .env("RADIO_MAX_IMAGE_PIXELS")
        .argParser(positiveInt)
        .default(SERVE_DEFAULTS.maxImagePixels),
    )
    .addOption(
      new Option("--shutdown-timeout-s <s>", "on SIGTERM/SIGINT, how long admitted work may take to finish [env RADIO_SHUTDOWN_TIMEOUT_S]")
        .env("RADIO_SHUTDOWN_TIMEOUT_S")
        .argParser(timerSeconds)
        .default(SERVE_DEFAULTS.shutdownTimeoutMs / 1000),
    )
    .addOption(
      new Option(
        "--http-socket <path>",
        "also serve the HTTP side (/healthz /readyz /metrics /v1/info) on this unix socket, owner-only (a shared local sidecar's metrics without a TCP port) [env RADIO_HTTP_SOCKET]",
      ).env("RADIO_HTTP_SOCKET"),
    )
    .addOption(
      new Option(
        "--instance-key <key>",
        "a label Info reports as instanceKey: the zoo's shared local sidecar passes the hash of its build, graphs and settings, and clients check it before use [env RADIO_INSTANCE_KEY]",
      ).env("RADIO_INSTANCE_KEY"),
    )
    .addOption(
      new Option(
        "--idle-timeout-s <s>",
        "exit (gracefully, code 0) after this long with no gRPC call open and no image queued; a client holding a health Watch stream open counts as a call (0 = never) [env RADIO_IDLE_TIMEOUT_S]",
      )
        .env("RADIO_IDLE_TIMEOUT_S")
        .argParser(nonNegativeInt)
        .default(SERVE_DEFAULTS.idleTimeoutMs / 1000),
    )
    .addOption(
      new Option(
        "--parent-pid <pid>",
        "exit (gracefully, code 0) within a second of this process (the one that started the server, or an ancestor) being gone, or of the server's own parent dying: what the zoo's private sidecars pass, so that none outlives its Python process [env RADIO_PARENT_PID]",
      )
        .env("RADIO_PARENT_PID")
        .argParser(positiveInt),
    )
    .addOption(
      new Option("--log-level <level>", "pino log level (logs are JSON on stderr) [env RADIO_LOG_LEVEL]")
        .choices(["fatal", "error", "warn", "info", "debug", "trace", "silent"])
        .env("RADIO_LOG_LEVEL")
        .default(SERVE_DEFAULTS.logLevel),
    )
    .action(serveCommand);
}
