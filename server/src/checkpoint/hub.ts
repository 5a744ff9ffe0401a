/**
 * Download a C-RADIO checkpoint (config.json + *.safetensors [+ index]) from the Hugging Face Hub
 * into the standard hub cache, interoperable with Python `huggingface_hub`.
 *
 * Protocol (the same requests Python's snapshot_download/hf_hub_download make):
 *   GET  {endpoint}/api/models/{repo}/revision/{revision}     -> commit sha + file listing
 *   HEAD {endpoint}/{repo}/resolve/{commit}/{file}            -> X-Repo-Commit, X-Linked-Etag|ETag, X-Linked-Size|Content-Length
 *   GET  {endpoint}/{repo}/resolve/{commit}/{file}  [Range]   -> content (LFS files redirect to a CDN; the
 *                                                                 Authorization header is not forwarded cross-origin)
 *
 * Added on top of what Python does: sha256 verification of LFS blobs (git-sha1 for small files),
 * in-call automatic resume, and a completeness check of cached snapshots.
 */
import { createHash, type Hash } from "node:crypto";
import { createReadStream } from "node:fs";
import { mkdir, open, readFile, rename, rm } from "node:fs/promises";
import { dirname, join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import {
  blobPath,
  exists,
  fileSize,
  freeSpace,
  isCommitHash,
  isGlob,
  linkSnapshotFile,
  pointerPath,
  repoStorageDir,
  resolveCacheDir,
  resolveFromCache,
  resolveHfHome,
  selectDefaultFiles,
  selectRequestedFiles,
  snapshotDir,
  validateRepoFilePath,
  validateRepoId,
  validateRevision,
  writeRef,
  normalizeEtag,
  expandUser,
  type CachedSnapshot,
} from "./hub-cache.js";
import {
  ProgressReporter,
  formatBytes,
  stderrLogger,
  type DownloadProgress,
  type HubLogger,
  type ProgressMode,
} from "./hub-progress.js";

export type { DownloadProgress, HubLogger, ProgressMode } from "./hub-progress.js";
export { resolveCacheDir, repoStorageDir, resolveFromCache } from "./hub-cache.js";

export const HF_DEFAULT_ENDPOINT = "https://huggingface.co";
const USER_AGENT = `radio-sidecar/0.1.0; node/${process.versions.node}`;
const SHA256_RE = /^[0-9a-f]{64}$/;
const SHA1_RE = /^[0-9a-f]{40}$/;
const SAFE_ETAG_RE = /^[A-Za-z0-9_.-]+$/;

export interface DownloadCheckpointOptions {
  /** e.g. "nvidia/C-RADIOv4-H" */
  repo: string;
  /** branch, tag or 40-hex commit sha (default "main") */
  revision?: string;
  /**
   * Repo files (names or globs like "*.safetensors"). Default: config.json, preprocessor_config.json
   * if present, the root-level *.safetensors and *.safetensors.index.json if present.
   */
  files?: string[];
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
  /** timeout of metadata requests (repo info, HEAD); default 10 000 */
  timeoutMs?: number;
  /** abort a file transfer when no byte arrives for this long (then resume); default 60 000 */
  stallTimeoutMs?: number;
  signal?: AbortSignal;
  /** custom fetch (proxy agents, instrumentation) */
  fetch?: typeof fetch;
}

export interface DownloadCheckpointResult {
  /** snapshots/<commit> folder holding config.json + the safetensors (symlinks into blobs/) */
  snapshotDir: string;
  /** resolved commit sha */
  commit: string;
  /** repo-relative paths of the checkpoint files, all present in snapshotDir */
  files: string[];
  repo: string;
  revision: string;
  cacheDir: string;
  /** files whose bytes were transferred by this call (empty on a cache hit) */
  downloaded: string[];
  /** true when resolved without contacting the Hub (offline mode, cached pinned commit, or network fallback) */
  offline: boolean;
}

export type HubErrorCode =
  /** 401, or 403 other than gating: missing/invalid token or no access to a private repo */
  | "unauthorized"
  /** gated repo, access not granted to the token's account (or no token) */
  | "gated"
  | "repo_not_found"
  | "revision_not_found"
  | "entry_not_found"
  /** hub unreachable, connection dropped, timeouts, 5xx after retries */
  | "network"
  /** offline (or unreachable) and the cache does not hold what was asked */
  | "not_cached"
  /** downloaded bytes do not match the sha256 / git sha1 / size announced by the Hub */
  | "checksum"
  | "http"
  | "bad_response";

export class HubDownloadError extends Error {
  override readonly name = "HubDownloadError";
  readonly code: HubErrorCode;
  readonly repo: string;
  readonly revision: string;
  readonly file: string | undefined;
  readonly status: number | undefined;
  readonly url: string | undefined;
  /** worth retrying (network trouble, 5xx, 429) */
  readonly transient: boolean;

  constructor(
    code: HubErrorCode,
    message: string,
    details: {
      repo: string;
      revision: string;
      file?: string | undefined;
      status?: number | undefined;
      url?: string | undefined;
      transient?: boolean;
      cause?: unknown;
    },
  ) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause });
    this.code = code;
    this.repo = details.repo;
    this.revision = details.revision;
    this.file = details.file;
    this.status = details.status;
    this.url = details.url;
    this.transient = details.transient ?? false;
  }
}

// ---------------------------------------------------------------------------------------------
// environment

function envIsTrue(v: string | undefined): boolean {
  return v !== undefined && ["1", "ON", "YES", "TRUE"].includes(v.trim().toUpperCase());
}

/** HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) as Python reads it. */
export function isOfflineFromEnv(): boolean {
  return envIsTrue(process.env["HF_HUB_OFFLINE"] || process.env["TRANSFORMERS_OFFLINE"]);
}

export function resolveEndpoint(endpoint?: string): string {
  return (endpoint || process.env["HF_ENDPOINT"] || HF_DEFAULT_ENDPOINT).replace(/\/+$/, "");
}

/** Token lookup order of Python's get_token(): HF_TOKEN, HUGGING_FACE_HUB_TOKEN, then the token file. */
export async function resolveToken(
  explicit?: string | false,
): Promise<{ token: string; source: string } | undefined> {
  if (explicit === false) return undefined;
  const clean = (t: string | undefined) => (t && t.trim() ? t.trim() : undefined);
  if (clean(explicit)) return { token: clean(explicit)!, source: "the token option" };
  const env = process.env;
  if (clean(env["HF_TOKEN"])) return { token: clean(env["HF_TOKEN"])!, source: "HF_TOKEN" };
  if (clean(env["HUGGING_FACE_HUB_TOKEN"])) {
    return { token: clean(env["HUGGING_FACE_HUB_TOKEN"])!, source: "HUGGING_FACE_HUB_TOKEN" };
  }
  const tokenFile = env["HF_TOKEN_PATH"] ? expandUser(env["HF_TOKEN_PATH"]) : join(resolveHfHome(), "token");
  try {
    const t = clean(await readFile(tokenFile, "utf8"));
    if (t) return { token: t, source: tokenFile };
  } catch {
    // no token file
  }
  return undefined;
}

// ---------------------------------------------------------------------------------------------
// HTTP

/** What every request of one download needs (exported for hub-text.ts's ranged subset download). */
export interface HubContext {
  repo: string;
  revision: string;
  endpoint: string;
  token: { token: string; source: string } | undefined;
  cacheDir: string;
  storage: string;
  fetch: typeof fetch;
  log: HubLogger;
  retries: number;
  retryDelayMs: number;
  timeoutMs: number;
  stallTimeoutMs: number;
  signal: AbortSignal | undefined;
}
type Ctx = HubContext;

/** The request context of a download of `repo`@`revision` from the options (token lookup, endpoint, retry settings). */
export async function createHubContext(
  opts: Omit<DownloadCheckpointOptions, "repo" | "revision" | "files">,
  repo: string,
  revision: string,
): Promise<HubContext> {
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

function encodePath(file: string): string {
  return file.split("/").map(encodeURIComponent).join("/");
}

export function resolveUrl(ctx: Ctx, commit: string, file: string): string {
  return `${ctx.endpoint}/${ctx.repo}/resolve/${encodeURIComponent(commit)}/${encodePath(file)}`;
}

export function causeText(err: unknown): string {
  const e = err as { message?: string; code?: string; cause?: { message?: string; code?: string } };
  const code = e?.cause?.code ?? e?.code;
  const msg = e?.cause?.message ?? e?.message ?? String(err);
  return code && !msg.includes(code) ? `${code}: ${msg}` : msg;
}

export class TimeoutError extends Error {
  override name = "TimeoutError";
}

/**
 * fetch with manual redirects: same-origin redirects are always followed (renamed repos);
 * cross-origin ones (CDN) only when followCrossOrigin, and then without the Authorization header.
 */
export async function request(
  ctx: Ctx,
  url: string,
  init: {
    method: "GET" | "HEAD";
    headers?: Record<string, string>;
    followCrossOrigin: boolean;
    signal?: AbortSignal;
    timeoutMs?: number;
  },
  what: { file?: string; doing: string },
): Promise<Response> {
  const hubOrigin = new URL(ctx.endpoint).origin;
  const signals = [init.signal, ctx.signal].filter((s): s is AbortSignal => s !== undefined);
  let timer: NodeJS.Timeout | undefined;
  if (init.timeoutMs !== undefined) {
    const ac = new AbortController();
    timer = setTimeout(() => ac.abort(new TimeoutError(`timed out after ${init.timeoutMs} ms`)), init.timeoutMs);
    signals.push(ac.signal);
  }
  const signal = signals.length === 0 ? undefined : signals.length === 1 ? signals[0] : AbortSignal.any(signals);
  let current = url;
  try {
    for (let hop = 0; hop < 10; hop++) {
      const sameOrigin = new URL(current).origin === hubOrigin;
      const headers: Record<string, string> = { "User-Agent": USER_AGENT, ...init.headers };
      if (ctx.token && sameOrigin) headers["Authorization"] = `Bearer ${ctx.token.token}`;
      let res: Response;
      try {
        res = await ctx.fetch(current, { method: init.method, headers, redirect: "manual", signal });
      } catch (err) {
        if (ctx.signal?.aborted) throw ctx.signal.reason;
        const reason = signal?.reason instanceof TimeoutError ? signal.reason.message : causeText(err);
        const where = sameOrigin
          ? `the Hugging Face Hub at ${ctx.endpoint}`
          : `${new URL(current).origin} (download server the Hub at ${ctx.endpoint} redirected to)`;
        throw new HubDownloadError(
          "network",
          `Cannot reach ${where} while ${what.doing} (${reason}). ` +
            `Check the network / proxy, set HF_ENDPOINT to a reachable mirror, or set HF_HUB_OFFLINE=1 ` +
            `to use only the local cache (${ctx.cacheDir}).`,
          { repo: ctx.repo, revision: ctx.revision, file: what.file, url: current, transient: true, cause: err },
        );
      }
      const location = res.headers.get("location");
      if (res.status >= 300 && res.status < 400 && location) {
        const next = new URL(location, current).toString();
        if (new URL(next).origin !== hubOrigin && !init.followCrossOrigin) return res;
        await res.body?.cancel().catch(() => undefined);
        current = next;
        continue;
      }
      return res;
    }
    throw new HubDownloadError("bad_response", `Too many redirects while ${what.doing} (${url})`, {
      repo: ctx.repo,
      revision: ctx.revision,
      file: what.file,
      url,
    });
  } finally {
    if (timer) clearTimeout(timer);
  }
}

/** Turn a non-OK hub response into an actionable error (uses X-Error-Code like huggingface_hub). */
export async function statusError(
  ctx: Ctx,
  res: Response,
  what: { file?: string; commit?: string; doing: string },
): Promise<HubDownloadError> {
  const status = res.status;
  const errorCode = res.headers.get("x-error-code") ?? "";
  let serverMsg = res.headers.get("x-error-message") ?? "";
  try {
    const text = await res.text();
    if (!serverMsg && text) {
      try {
        const j = JSON.parse(text) as { error?: unknown; message?: unknown };
        serverMsg = String(j.error ?? j.message ?? "");
      } catch {
        serverMsg = text.slice(0, 200);
      }
    }
  } catch {
    // body unavailable
  }
  const server = serverMsg ? `: ${serverMsg.trim()}` : "";
  const base = { repo: ctx.repo, revision: ctx.revision, file: what.file, status, url: res.url || undefined };
  const tokenHint = ctx.token
    ? `A token was sent (from ${ctx.token.source}) but it was rejected or its account has no access.`
    : `No token was sent: set HF_TOKEN (or HF_TOKEN_PATH / run \`hf auth login\`) to a read token of an account with access.`;
  const at = `${ctx.repo}@${ctx.revision}${what.commit && what.commit !== ctx.revision ? ` (commit ${what.commit})` : ""}`;

  if (errorCode === "GatedRepo") {
    return new HubDownloadError(
      "gated",
      `${ctx.repo} is a gated repo and access was refused (HTTP ${status}${server}). ` +
        `Request access at ${ctx.endpoint}/${ctx.repo} and set HF_TOKEN to a token of the account that was granted access. ${tokenHint}`,
      base,
    );
  }
  if (status === 401 || status === 403) {
    return new HubDownloadError(
      "unauthorized",
      `Not authorized to access ${ctx.repo} (HTTP ${status}${server}) while ${what.doing}: the repo is private or gated, ` +
        `or does not exist. ${tokenHint}`,
      base,
    );
  }
  if (errorCode === "RevisionNotFound" || (status === 404 && /revision|invalid rev/i.test(serverMsg))) {
    return new HubDownloadError(
      "revision_not_found",
      `Revision '${ctx.revision}' not found in ${ctx.repo} (HTTP ${status}${server}): ` +
        `expected an existing branch, tag or full 40-hex commit sha.`,
      base,
    );
  }
  if (errorCode === "EntryNotFound" || (status === 404 && what.file && errorCode !== "RepoNotFound")) {
    return new HubDownloadError(
      "entry_not_found",
      `File '${what.file}' not found in ${at} (HTTP ${status}${server}).`,
      base,
    );
  }
  if (errorCode === "RepoNotFound" || status === 404) {
    return new HubDownloadError(
      "repo_not_found",
      `Repository ${ctx.repo} not found on ${ctx.endpoint} (HTTP ${status}${server}). ` +
        `Check the repo id; if the repo is private, set HF_TOKEN.`,
      base,
    );
  }
  const transient = status >= 500 || status === 429 || status === 408;
  return new HubDownloadError(
    "http",
    `HTTP ${status}${server} from the Hugging Face Hub (${ctx.endpoint}) while ${what.doing}.`,
    { ...base, transient },
  );
}

/** Metadata requests: retried on 5xx/429/timeouts; connection refused etc. fail fast (cache fallback). */
async function metadataRequest(
  ctx: Ctx,
  url: string,
  method: "GET" | "HEAD",
  what: { file?: string; commit?: string; doing: string },
  headers?: Record<string, string>,
): Promise<Response> {
  const attempts = Math.min(ctx.retries, 2) + 1;
  for (let attempt = 1; ; attempt++) {
    let res: Response;
    try {
      res = await request(
        ctx,
        url,
        { method, followCrossOrigin: false, timeoutMs: ctx.timeoutMs, ...(headers ? { headers } : {}) },
        what,
      );
    } catch (err) {
      const timedOut = err instanceof HubDownloadError && err.cause instanceof TimeoutError;
      if (timedOut && attempt < attempts) {
        await sleep(backoff(ctx, attempt), undefined, { signal: ctx.signal });
        continue;
      }
      throw err;
    }
    if (res.ok || (res.status >= 300 && res.status < 400)) return res;
    const err = await statusError(ctx, res, what);
    if (!err.transient || attempt >= attempts) throw err;
    ctx.log.warn(`${err.message} Retrying (${attempt}/${attempts - 1}).`);
    await sleep(backoff(ctx, attempt), undefined, { signal: ctx.signal });
  }
}

export function backoff(ctx: Ctx, attempt: number): number {
  return Math.min(ctx.retryDelayMs * 2 ** (attempt - 1), 10_000);
}

interface RepoInfo {
  sha: string;
  siblings: string[];
}

async function fetchRepoInfo(ctx: Ctx): Promise<RepoInfo> {
  const url = `${ctx.endpoint}/api/models/${ctx.repo}/revision/${encodeURIComponent(ctx.revision)}`;
  const res = await metadataRequest(ctx, url, "GET", { doing: `resolving ${ctx.repo}@${ctx.revision}` });
  if (!res.ok) {
    throw await statusError(ctx, res, { doing: `resolving ${ctx.repo}@${ctx.revision}` });
  }
  let body: { sha?: unknown; siblings?: unknown };
  try {
    body = (await res.json()) as typeof body;
  } catch (err) {
    throw new HubDownloadError("bad_response", `Malformed repo info from ${url}: ${causeText(err)}`, {
      repo: ctx.repo,
      revision: ctx.revision,
      url,
      cause: err,
    });
  }
  if (typeof body.sha !== "string" || !isCommitHash(body.sha) || !Array.isArray(body.siblings)) {
    throw new HubDownloadError(
      "bad_response",
      `Malformed repo info from ${url}: expected {sha: <40-hex>, siblings: [...]}. Is HF_ENDPOINT (${ctx.endpoint}) a Hugging Face Hub?`,
      { repo: ctx.repo, revision: ctx.revision, url },
    );
  }
  const siblings = body.siblings
    .map((s) => (s && typeof s === "object" ? (s as { rfilename?: unknown }).rfilename : undefined))
    .filter((f): f is string => typeof f === "string");
  return { sha: body.sha, siblings };
}

export interface FileMeta {
  file: string;
  etag: string;
  size: number;
  lfs: boolean;
  commit: string | undefined;
}

/** HEAD like Python's get_hf_file_metadata: the etag names the blob, the size is checked after download. */
export async function fetchFileMeta(ctx: Ctx, commit: string, file: string): Promise<FileMeta> {
  const url = resolveUrl(ctx, commit, file);
  const what = { file, commit, doing: `getting metadata of ${file}` };
  const res = await metadataRequest(ctx, url, "HEAD", what, { "Accept-Encoding": "identity" });
  await res.body?.cancel().catch(() => undefined);
  const linked = res.headers.get("x-linked-etag");
  const rawEtag = linked ?? res.headers.get("etag");
  const rawSize = res.headers.get("x-linked-size") ?? res.headers.get("content-length");
  const size = rawSize === null ? NaN : Number(rawSize);
  const fail = (why: string) =>
    new HubDownloadError("bad_response", `Unusable metadata for ${file} in ${ctx.repo}@${commit}: ${why} (${url}).`, {
      repo: ctx.repo,
      revision: ctx.revision,
      file,
      url,
    });
  if (!rawEtag) throw fail("no ETag / X-Linked-Etag header, cannot cache reliably");
  const etag = normalizeEtag(rawEtag);
  if (!SAFE_ETAG_RE.test(etag) || etag === "." || etag === "..") throw fail(`unexpected etag '${rawEtag}'`);
  if (!Number.isSafeInteger(size) || size < 0) throw fail("no X-Linked-Size / Content-Length");
  return { file, etag, size, lfs: linked !== null, commit: res.headers.get("x-repo-commit") ?? undefined };
}

// ---------------------------------------------------------------------------------------------
// blob transfer

type Verifier = "sha256" | "git-sha1" | undefined;

function verifierFor(meta: FileMeta): Verifier {
  if (meta.lfs && SHA256_RE.test(meta.etag)) return "sha256";
  if (!meta.lfs && SHA1_RE.test(meta.etag)) return "git-sha1";
  return undefined;
}

function newHash(kind: Verifier, size: number): Hash | undefined {
  if (kind === "sha256") return createHash("sha256");
  if (kind === "git-sha1") return createHash("sha1").update(`blob ${size}\0`);
  return undefined;
}

async function hashPrefix(path: string, bytes: number, kind: Verifier, size: number): Promise<Hash | undefined> {
  const h = newHash(kind, size);
  if (!h || bytes === 0) return h;
  for await (const chunk of createReadStream(path, { start: 0, end: bytes - 1 })) h.update(chunk as Buffer);
  return h;
}

/** A transfer that must start again (dropped connection, refused Range); retried like network errors. */
export class RestartTransfer extends Error {}

/** running hash of the bytes of a .incomplete file */
interface HashState {
  hash: Hash | undefined;
  /** bytes of the file covered by `hash`; -1 = unknown, recompute from disk */
  hashed: number;
}

/** one GET attempt, appending to `incomplete` from `offset` (updates `st` chunk by chunk) */
async function transferOnce(
  ctx: Ctx,
  commit: string,
  meta: FileMeta,
  incomplete: string,
  offset: number,
  st: HashState,
  onBytes: (n: number) => void,
  onRestart: () => void,
): Promise<void> {
  const url = resolveUrl(ctx, commit, meta.file);
  const headers: Record<string, string> = { "Accept-Encoding": "identity" };
  if (offset > 0) headers["Range"] = `bytes=${offset}-`;
  const stall = new AbortController();
  let timer: NodeJS.Timeout | undefined;
  const arm = () => {
    if (timer) clearTimeout(timer);
    timer = setTimeout(
      () => stall.abort(new TimeoutError(`no data received for ${ctx.stallTimeoutMs} ms`)),
      ctx.stallTimeoutMs,
    );
  };
  arm();
  try {
    const what = { file: meta.file, commit, doing: `downloading ${meta.file}` };
    const res = await request(ctx, url, { method: "GET", headers, followCrossOrigin: true, signal: stall.signal }, what);
    if (res.status === 416 && offset > 0) {
      await res.body?.cancel().catch(() => undefined);
      throw new RestartTransfer(`server refused Range bytes=${offset}- (HTTP 416)`);
    }
    if (!res.ok) throw await statusError(ctx, res, what);
    let append = offset > 0;
    if (offset > 0) {
      const m = /^bytes (\d+)-\d+\/(\d+|\*)$/.exec(res.headers.get("content-range") ?? "");
      if (res.status === 200) {
        ctx.log.warn(`the server ignored the Range request for ${meta.file}; downloading it again from the start`);
        append = false;
        st.hash = newHash(verifierFor(meta), meta.size);
        st.hashed = 0;
        onRestart();
      } else if (!m || Number(m[1]) !== offset) {
        await res.body?.cancel().catch(() => undefined);
        throw new RestartTransfer(`unexpected Content-Range '${res.headers.get("content-range")}' for bytes=${offset}-`);
      }
    }
    if (!res.body) throw new Error("response has no body");
    const fh = await open(incomplete, append ? "a" : "w");
    try {
      for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
        arm();
        await fh.write(chunk);
        st.hash?.update(chunk);
        st.hashed += chunk.byteLength;
        onBytes(chunk.byteLength);
      }
    } finally {
      await fh.close();
    }
  } catch (err) {
    if (stall.signal.aborted && !(err instanceof HubDownloadError && err.code !== "network")) {
      throw new HubDownloadError("network", `${meta.file}: ${(stall.signal.reason as Error).message}`, {
        repo: ctx.repo,
        revision: ctx.revision,
        file: meta.file,
        transient: true,
        cause: err,
      });
    }
    throw err;
  } finally {
    if (timer) clearTimeout(timer);
  }
}

const TRANSIENT_CODES = new Set([
  "ECONNRESET",
  "ECONNREFUSED",
  "ECONNABORTED",
  "EPIPE",
  "ETIMEDOUT",
  "EAI_AGAIN",
  "ENETUNREACH",
  "ENETDOWN",
  "EHOSTUNREACH",
]);

export function isTransient(err: unknown): boolean {
  if (err instanceof RestartTransfer) return true;
  if (err instanceof HubDownloadError) return err.transient;
  // errors while reading a body: TypeError('terminated') caused by an undici SocketError, ECONNRESET...
  const e = err as { message?: unknown; code?: unknown; cause?: { code?: unknown } } | undefined;
  const codes = [e?.code, e?.cause?.code].filter((c): c is string => typeof c === "string");
  return e?.message === "terminated" || codes.some((c) => c.startsWith("UND_ERR") || TRANSIENT_CODES.has(c));
}

/**
 * Download one blob into blobs/<etag> through blobs/<etag>.incomplete, resuming an existing partial
 * file with a Range request, retrying dropped transfers, verifying size and hash.
 */
async function downloadBlob(ctx: Ctx, commit: string, meta: FileMeta, progress: ProgressReporter): Promise<boolean> {
  const blob = blobPath(ctx.storage, meta.etag);
  const incomplete = `${blob}.incomplete`;
  await mkdir(dirname(blob), { recursive: true });
  let counted = Math.min((await fileSize(incomplete)) ?? 0, meta.size);
  progress.fileStart(meta.file, meta.size, counted);
  const sync = (actual: number) => {
    progress.advance(actual - counted);
    counted = actual;
  };
  if (await exists(blob)) {
    // finished meanwhile by another call
    sync(meta.size);
    return false;
  }
  const kind = verifierFor(meta);
  const st: HashState = { hash: undefined, hashed: -1 };
  let freshRetryDone = false;
  for (let attempt = 0; ; attempt++) {
    ctx.signal?.throwIfAborted();
    let offset = (await fileSize(incomplete)) ?? 0;
    if (offset > meta.size) {
      await rm(incomplete, { force: true });
      offset = 0;
    }
    sync(offset);
    if (attempt === 0 && offset > 0) {
      ctx.log.info(`resuming ${meta.file} from ${formatBytes(offset)} of ${formatBytes(meta.size)}`);
    }
    const resumedFrom = offset;
    try {
      if (st.hashed !== offset || (kind && !st.hash)) {
        st.hash = await hashPrefix(incomplete, offset, kind, meta.size);
        st.hashed = offset;
      }
      if (offset < meta.size || !(await exists(incomplete))) {
        await transferOnce(
          ctx,
          commit,
          meta,
          incomplete,
          offset,
          st,
          (n) => {
            counted += n;
            progress.advance(n);
          },
          () => sync(0),
        );
      }
      const got = (await fileSize(incomplete)) ?? 0;
      if (got < meta.size) {
        throw new RestartTransfer(`connection closed after ${formatBytes(got)} of ${formatBytes(meta.size)}`);
      }
      let digest: string | undefined;
      if (kind) {
        if (st.hashed !== got || !st.hash) st.hash = await hashPrefix(incomplete, got, kind, meta.size);
        digest = st.hash!.digest("hex");
        st.hash = undefined;
        st.hashed = -1;
      }
      if (got > meta.size || (digest !== undefined && digest !== meta.etag)) {
        await rm(incomplete, { force: true });
        sync(0);
        if (resumedFrom > 0 && !freshRetryDone) {
          freshRetryDone = true;
          ctx.log.warn(
            `${meta.file}: ${got > meta.size ? "size" : "checksum"} mismatch after resuming a partial download; ` +
              `the partial file was stale, downloading again from the start`,
          );
          continue;
        }
        const detail =
          got > meta.size
            ? `expected ${meta.size} bytes, got ${got}`
            : `expected ${kind} ${meta.etag} (announced by the Hub), got ${digest}`;
        throw new HubDownloadError(
          "checksum",
          `Corrupted download of ${meta.file} from ${ctx.repo}@${commit}: ${detail}. ` +
            `The bad file was deleted from the cache; run again to retry. If it persists, a proxy or mirror ` +
            `(HF_ENDPOINT=${ctx.endpoint}) is serving wrong data.`,
          { repo: ctx.repo, revision: ctx.revision, file: meta.file },
        );
      }
      await rename(incomplete, blob);
      return true;
    } catch (err) {
      if (ctx.signal?.aborted) throw ctx.signal.reason;
      if (!isTransient(err)) throw err;
      if (err instanceof RestartTransfer && /416|Content-Range/.test(err.message)) {
        await rm(incomplete, { force: true });
        st.hash = undefined;
        st.hashed = -1;
      }
      const have = (await fileSize(incomplete)) ?? 0;
      const reason = err instanceof HubDownloadError || err instanceof RestartTransfer ? err.message : causeText(err);
      if (attempt >= ctx.retries) {
        throw new HubDownloadError(
          "network",
          `Download of ${meta.file} from ${ctx.repo}@${commit} failed after ${formatBytes(have)} of ` +
            `${formatBytes(meta.size)} (${reason}). ` +
            (have > 0
              ? `The partial file is kept at ${incomplete}; run again to resume where it stopped (HTTP Range). `
              : "") +
            `If the Hub is unreachable, check HF_ENDPOINT (${ctx.endpoint}) and the network, ` +
            `or set HF_HUB_OFFLINE=1 to use a complete cached copy.`,
          {
            repo: ctx.repo,
            revision: ctx.revision,
            file: meta.file,
            transient: true,
            cause: err,
            ...(err instanceof HubDownloadError ? { status: err.status, url: err.url } : {}),
          },
        );
      }
      const wait = backoff(ctx, attempt + 1);
      ctx.log.warn(
        `download of ${meta.file} interrupted at ${formatBytes(have)} of ${formatBytes(meta.size)} (${reason}); ` +
          `resuming in ${(wait / 1000).toFixed(1)} s (retry ${attempt + 1}/${ctx.retries})`,
      );
      await sleep(wait, undefined, { signal: ctx.signal });
    }
  }
}

/** Concurrent calls in this process share one transfer per blob. */
const inflight = new Map<string, Promise<boolean>>();

// ---------------------------------------------------------------------------------------------
// entry point

function notCachedError(
  repo: string,
  revision: string,
  cacheDir: string,
  cached: Extract<CachedSnapshot, { ok: false }>,
  why: string,
  cause?: unknown,
): HubDownloadError {
  const missing = cached.missing.length > 0 ? `; missing: ${cached.missing.join(", ")}` : "";
  return new HubDownloadError(
    "not_cached",
    `${why}, and ${repo} at revision '${revision}' is not fully in the cache ${cacheDir}: ${cached.reason}${missing}. ` +
      `Download it once with network access (unset HF_HUB_OFFLINE; HF_ENDPOINT may point to a mirror).`,
    { repo, revision, cause },
  );
}

/**
 * Make `repo`@`revision`'s checkpoint files available in the hub cache and return its snapshot folder.
 * A cache hit makes no file request (and none at all for a cached 40-hex commit).
 */
export async function downloadCheckpoint(opts: DownloadCheckpointOptions): Promise<DownloadCheckpointResult> {
  const repo = opts.repo;
  validateRepoId(repo);
  const revision = opts.revision ?? "main";
  validateRevision(revision);
  for (const f of opts.files ?? []) if (!isGlob(f)) validateRepoFilePath(f);
  const cacheDir = resolveCacheDir(opts.cacheDir);
  const storage = repoStorageDir(cacheDir, repo);
  const stream = opts.progressStream ?? process.stderr;
  const log = opts.logger ?? stderrLogger(stream);
  const offline = opts.offline ?? isOfflineFromEnv();
  const cacheQuery = { cacheDir, repo, revision, ...(opts.files?.length ? { files: opts.files } : {}) };

  const fromCache = (c: Extract<CachedSnapshot, { ok: true }>): DownloadCheckpointResult => ({
    snapshotDir: c.snapshotDir,
    commit: c.commit,
    files: c.files,
    repo,
    revision,
    cacheDir,
    downloaded: [],
    offline: true,
  });

  if (offline) {
    const cached = await resolveFromCache(cacheQuery);
    if (cached.ok) return fromCache(cached);
    throw notCachedError(repo, revision, cacheDir, cached, "Offline mode is on (HF_HUB_OFFLINE=1 or offline: true)");
  }
  if (isCommitHash(revision)) {
    // a commit's content never changes: a complete cached snapshot needs no network at all
    const cached = await resolveFromCache(cacheQuery);
    if (cached.ok) return fromCache(cached);
  }

  const ctx: Ctx = { ...(await createHubContext(opts, repo, revision)), log };

  let info: RepoInfo;
  try {
    info = await fetchRepoInfo(ctx);
  } catch (err) {
    if (err instanceof HubDownloadError && err.code === "network") {
      // like huggingface_hub: hub unreachable -> use what the cache has for this revision
      const cached = await resolveFromCache(cacheQuery);
      if (cached.ok) {
        log.warn(`${err.message} Using the cached snapshot ${cached.commit} of ${repo}@${revision}.`);
        return fromCache(cached);
      }
      throw new HubDownloadError(
        "network",
        `${err.message} Nothing usable is cached for ${repo}@${revision}: ${cached.reason}` +
          (cached.missing.length ? ` (missing: ${cached.missing.join(", ")})` : "") +
          ".",
        { repo, revision, url: err.url, transient: true, cause: err },
      );
    }
    throw err;
  }

  const commit = info.sha;
  await writeRef(storage, revision, commit);
  const selection =
    opts.files && opts.files.length > 0
      ? selectRequestedFiles(opts.files, info.siblings)
      : selectDefaultFiles(info.siblings);
  if (selection.missing.length > 0) {
    const listing = info.siblings.slice(0, 30).join(", ") + (info.siblings.length > 30 ? ", ..." : "");
    throw new HubDownloadError(
      "entry_not_found",
      `${repo}@${revision} (commit ${commit}) has no ${selection.missing.join(", ")}` +
        (opts.files?.length ? "" : " — is it a Hugging Face safetensors checkpoint?") +
        ` Files in the repo: ${listing || "(none)"}.`,
      { repo, revision, file: selection.missing[0] },
    );
  }

  const todo: string[] = [];
  for (const f of selection.files) {
    validateRepoFilePath(f);
    if (!(await exists(pointerPath(storage, commit, f)))) todo.push(f);
  }

  const metas: FileMeta[] = [];
  for (const f of todo) {
    const meta = await fetchFileMeta(ctx, commit, f);
    if (meta.commit && meta.commit !== commit) {
      log.warn(`${f}: the Hub answered for commit ${meta.commit} instead of ${commit}`);
    }
    if (await exists(blobPath(storage, meta.etag))) {
      // blob already there (other revision, other tool): only the pointer is missing
      await linkSnapshotFile(storage, commit, f, meta.etag);
    } else {
      metas.push(meta);
    }
  }

  const downloaded: string[] = [];
  if (metas.length > 0) {
    let initial = 0;
    for (const m of metas) initial += Math.min((await fileSize(`${blobPath(storage, m.etag)}.incomplete`)) ?? 0, m.size);
    const total = metas.reduce((a, m) => a + m.size, 0);
    await mkdir(join(storage, "blobs"), { recursive: true });
    const free = await freeSpace(join(storage, "blobs"));
    if (free !== undefined && free < total - initial) {
      // like huggingface_hub: warn only (the estimate ignores other writers and sparse files)
      log.warn(
        `not enough free disk space in ${join(storage, "blobs")}: ${formatBytes(total - initial)} to download, ` +
          `${formatBytes(free)} free. Set HF_HUB_CACHE (or HF_HOME) to a bigger disk.`,
      );
    }
    const progress = new ProgressReporter({
      repo,
      commit,
      total,
      initial,
      filesTotal: metas.length,
      mode: opts.progress ?? "auto",
      stream,
      logger: log,
      onProgress: opts.onProgress,
    });
    progress.start();
    let ok = false;
    try {
      for (const meta of metas) {
        const blob = blobPath(storage, meta.etag);
        // check-and-register without an await in between, so concurrent calls share the transfer
        let job = inflight.get(blob);
        if (job) {
          await job;
          progress.fileStart(meta.file, meta.size, 0);
          progress.advance(meta.size);
        } else {
          job = downloadBlob(ctx, commit, meta, progress);
          inflight.set(blob, job);
          const forget = () => void (inflight.get(blob) === job && inflight.delete(blob));
          job.then(forget, forget);
          if (await job) downloaded.push(meta.file);
        }
        await linkSnapshotFile(storage, commit, meta.file, meta.etag);
        progress.fileDone();
      }
      ok = true;
    } finally {
      progress.finish(ok);
    }
  }

  return {
    snapshotDir: snapshotDir(storage, commit),
    commit,
    files: selection.files,
    repo,
    revision,
    cacheDir,
    downloaded,
    offline: false,
  };
}
