/**
 * Where a download's settings come from: its options, the environment as Python's huggingface_hub reads it
 * (offline mode, endpoint, token), and the request context made of both.
 */
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { expandUser, repoStorageDir, resolveCacheDir, resolveHfHome } from "./cache.js";
import { HubDownloadError, type HubErrorCode, type HubErrorDetails } from "./errors.js";
import { stderrLogger, type DownloadProgress, type HubLogger, type ProgressMode } from "./progress.js";

const HF_DEFAULT_ENDPOINT = "https://huggingface.co";

/** The options every download shares: where the cache is, how to reach the Hub, progress, retries. */
export interface HubOptions {
  /** hub cache root; default $HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub */
  cacheDir?: string;
  /** default $HF_ENDPOINT, else https://huggingface.co */
  endpoint?: string;
  /** default $HF_TOKEN, else $HUGGING_FACE_HUB_TOKEN, else the file $HF_TOKEN_PATH / $HF_HOME/token; false: send none */
  token?: string | false;
  /** default: $HF_HUB_OFFLINE (or $TRANSFORMERS_OFFLINE) is 1/ON/YES/TRUE */
  offline?: boolean;
  onProgress?: (p: DownloadProgress) => void;
  /** 'auto' (default): a bar if the progress stream is a TTY, else a plain line every 10% */
  progress?: ProgressMode;
  /** where the bar / lines go; default process.stderr */
  progressStream?: NodeJS.WritableStream & { isTTY?: boolean };
  /** info/warn lines (plain progress lines go here too); default: lines on the progress stream */
  logger?: HubLogger;
  /** automatic resumes (HTTP Range) per file after a dropped connection / 5xx; default 5 */
  retries?: number;
  /** first wait before a retry, doubled each time up to 10 s; default 1000 */
  retryDelayMs?: number;
  /** timeout of metadata requests (repo info, paths info); default 10 000 */
  timeoutMs?: number;
  /** abort a file transfer when no byte arrives for this long (then resume); default 60 000 */
  stallTimeoutMs?: number;
  signal?: AbortSignal;
  /** custom fetch (proxy agents, instrumentation) */
  fetch?: typeof fetch;
}

// ---------------------------------------------------------------------------------------------
// environment

/** HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) as Python reads it. */
export function isOfflineFromEnv(): boolean {
  const v = process.env.HF_HUB_OFFLINE || process.env.TRANSFORMERS_OFFLINE;
  return v !== undefined && ["1", "ON", "YES", "TRUE"].includes(v.trim().toUpperCase());
}

function resolveEndpoint(endpoint?: string): string {
  return (endpoint || process.env.HF_ENDPOINT || HF_DEFAULT_ENDPOINT).replace(/\/+$/, "");
}

/** Token lookup order of Python's get_token(): HF_TOKEN, HUGGING_FACE_HUB_TOKEN, then the token file. */
export async function resolveToken(explicit?: string | false): Promise<{ token: string; source: string } | undefined> {
  if (explicit === false) return undefined;
  const clean = (t: string | undefined) => (t?.trim() ? t.trim() : undefined);
  const env = process.env;
  for (const [value, source] of [
    [explicit, "the token option"],
    [env.HF_TOKEN, "HF_TOKEN"],
    [env.HUGGING_FACE_HUB_TOKEN, "HUGGING_FACE_HUB_TOKEN"],
  ] as const) {
    if (clean(value)) return { token: clean(value)!, source };
  }
  const tokenFile = env.HF_TOKEN_PATH ? expandUser(env.HF_TOKEN_PATH) : join(resolveHfHome(), "token");
  const t = clean(await readFile(tokenFile, "utf8").catch(() => undefined));
  return t ? { token: t, source: tokenFile } : undefined;
}

// ---------------------------------------------------------------------------------------------
// request context

/** What every request of one download needs: the options with their defaults, the token, the cache folder. */
export type HubContext = Awaited<ReturnType<typeof createHubContext>>;

/** The request context of a download of `repo`@`revision` from the options (token lookup, endpoint, retry settings). */
export async function createHubContext(opts: HubOptions, repo: string, revision: string) {
  const cacheDir = resolveCacheDir(opts.cacheDir);
  return {
    repo,
    revision,
    endpoint: resolveEndpoint(opts.endpoint),
    token: await resolveToken(opts.token),
    cacheDir,
    storage: repoStorageDir(cacheDir, repo),
    fetch: opts.fetch ?? globalThis.fetch,
    log: opts.logger ?? stderrLogger(opts.progressStream ?? process.stderr),
    retries: Math.max(0, opts.retries ?? 5),
    retryDelayMs: Math.max(0, opts.retryDelayMs ?? 1000),
    timeoutMs: opts.timeoutMs ?? 10_000,
    stallTimeoutMs: opts.stallTimeoutMs ?? 60_000,
    signal: opts.signal,
  };
}

/** A HubDownloadError about the repo and revision that `hub` downloads from. */
export function hubError(hub: HubContext, code: HubErrorCode, message: string, d: Partial<HubErrorDetails> = {}): HubDownloadError {
  return new HubDownloadError(code, message, { repo: hub.repo, revision: hub.revision, ...d });
}
