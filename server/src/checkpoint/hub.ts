/**
 * Download a C-RADIO checkpoint (config.json + *.safetensors [+ index]) from the Hugging Face Hub
 * into the standard hub cache, interoperable with Python `huggingface_hub`.
 *
 * The Hub protocol is `@huggingface/hub`'s: `modelInfo` resolves the revision to a commit and lists the repo,
 * `pathsInfo` gives each file's size, git oid, LFS sha256 and Xet hash (one request for all files),
 * `downloadFile` turns a file into a Blob (a plain resolve URL, or Xet reconstruction for Xet-backed files)
 * whose `slice(start)` is a ranged download. Every request goes through `hubFetch` below (User-Agent, the
 * token on Hub-origin requests only, timeouts, actionable errors from X-Error-Code).
 *
 * Added here, which the library does not do: resume of blobs/<etag>.incomplete (in-call and across calls),
 * sha256 verification of LFS blobs (git-sha1 for small files), a progress bar / lines, the offline fallback
 * to a complete cached snapshot, Python's token lookup, and gated/unauthorized messages.
 */
import { createHash, type Hash } from "node:crypto";
import { createReadStream } from "node:fs";
import { mkdir, open, readFile, rename, rm } from "node:fs/promises";
import { dirname, join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { downloadFile, modelInfo, pathsInfo } from "@huggingface/hub";
import { PRODUCT } from "../version.js";
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
  expandUser,
  type CachedSnapshot,
} from "./hub-cache.js";
import { ProgressReporter, formatBytes, stderrLogger, type DownloadProgress, type HubLogger, type ProgressMode } from "./hub-progress.js";

export type { DownloadProgress, HubLogger, ProgressMode } from "./hub-progress.js";
export { resolveCacheDir, repoStorageDir, resolveFromCache } from "./hub-cache.js";

export const HF_DEFAULT_ENDPOINT = "https://huggingface.co";
const USER_AGENT = `radio-sidecar/${PRODUCT.version}; node/${process.versions.node}`;
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
  /** timeout of metadata requests (repo info, paths info); default 10 000 */
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

export interface HubErrorDetails {
  repo: string;
  revision: string;
  file?: string | undefined;
  status?: number | undefined;
  url?: string | undefined;
  /** worth retrying (network trouble, 5xx, 429) */
  transient?: boolean;
  cause?: unknown;
}

export class HubDownloadError extends Error {
  override readonly name = "HubDownloadError";
  readonly repo: string;
  readonly revision: string;
  readonly file: string | undefined;
  readonly status: number | undefined;
  readonly url: string | undefined;
  readonly transient: boolean;

  constructor(
    readonly code: HubErrorCode,
    message: string,
    d: HubErrorDetails,
  ) {
    super(message, d.cause === undefined ? undefined : { cause: d.cause });
    ({ repo: this.repo, revision: this.revision, file: this.file, status: this.status, url: this.url } = d);
    this.transient = d.transient ?? false;
  }
}

/** A HubDownloadError about the repo and revision that `hub` downloads from. */
export function hubError(hub: HubContext, code: HubErrorCode, message: string, d: Partial<HubErrorDetails> = {}): HubDownloadError {
  return new HubDownloadError(code, message, { repo: hub.repo, revision: hub.revision, ...d });
}

// ---------------------------------------------------------------------------------------------
// environment

/** HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) as Python reads it. */
export function isOfflineFromEnv(): boolean {
  const v = process.env.HF_HUB_OFFLINE || process.env.TRANSFORMERS_OFFLINE;
  return v !== undefined && ["1", "ON", "YES", "TRUE"].includes(v.trim().toUpperCase());
}

export function resolveEndpoint(endpoint?: string): string {
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
// HTTP: the fetch handed to @huggingface/hub

/** What every request of one download needs: the options with their defaults, the token, the cache folder. */
export type HubContext = Awaited<ReturnType<typeof createHubContext>>;

/** The request context of a download of `repo`@`revision` from the options (token lookup, endpoint, retry settings). */
export async function createHubContext(opts: Omit<DownloadCheckpointOptions, "repo" | "revision" | "files">, repo: string, revision: string) {
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

export function causeText(err: unknown): string {
  const e = err as { message?: string; code?: string; cause?: { message?: string; code?: string } };
  const code = e?.cause?.code ?? e?.code;
  const msg = e?.cause?.message ?? e?.message ?? String(err);
  return code && !msg.includes(code) ? `${code}: ${msg}` : msg;
}

/** A transfer that must start again (dropped connection); retried like network errors. */
export class RestartTransfer extends Error {}
/** The server did not honour a Range request (HTTP 200, or another Content-Range). */
export class RangeIgnored extends RestartTransfer {}

type What = { file?: string; commit?: string; doing: string };

/**
 * A fetch for the library's calls: User-Agent, `Authorization` on Hub-origin URLs only (fetch drops it on
 * cross-origin redirects to the CDN), an optional timeout, and every failure as a HubDownloadError
 * (RangeIgnored when a ranged read of a resolve URL is not answered with the asked bytes).
 */
export function hubFetch(hub: HubContext, what: What, opts: { timeoutMs?: number; signal?: AbortSignal } = {}): typeof fetch {
  return async (input, init = {}) => {
    const url = input instanceof Request ? input.url : String(input);
    const headers = new Headers(init.headers);
    headers.set("User-Agent", USER_AGENT);
    headers.set("Accept-Encoding", "identity");
    if (hub.token && new URL(url).origin === new URL(hub.endpoint).origin) {
      headers.set("Authorization", `Bearer ${hub.token.token}`);
    }
    const signals = [init.signal, opts.signal, hub.signal].filter((s): s is AbortSignal => !!s);
    if (opts.timeoutMs !== undefined) signals.push(AbortSignal.timeout(opts.timeoutMs));
    let res: Response;
    try {
      res = await hub.fetch(url, { ...init, headers, signal: AbortSignal.any(signals) });
    } catch (err) {
      if (hub.signal?.aborted) throw hub.signal.reason;
      const timedOut = (err as Error)?.name === "TimeoutError";
      const reason = timedOut ? `timed out after ${opts.timeoutMs} ms` : causeText(err);
      throw hubError(
        hub,
        "network",
        `Cannot reach the Hugging Face Hub at ${hub.endpoint} (or the download server it redirects to) while ${what.doing} ` +
          `(${reason}). Check the network / proxy, set HF_ENDPOINT to a reachable mirror, or set HF_HUB_OFFLINE=1 ` +
          `to use only the local cache (${hub.cacheDir}).`,
        { file: what.file, url, transient: true, cause: err },
      );
    }
    if (!res.ok) throw await statusError(hub, res, what);
    const range = /^bytes=(\d+)-(\d*)$/.exec(headers.get("range") ?? "");
    if (range && url.startsWith(`${hub.endpoint}/${hub.repo}/resolve/`) && !headers.get("accept")?.includes("xet")) {
      const got = /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(res.headers.get("content-range") ?? "");
      if (res.status !== 206 || !got || got[1] !== range[1] || (range[2] !== "" && got[2] !== range[2])) {
        await res.body?.cancel().catch(() => undefined);
        throw new RangeIgnored(
          `the server answered Range ${headers.get("range")} of ${what.file} with HTTP ${res.status}${got ? ` (Content-Range ${got[0]})` : ""}`,
        );
      }
    }
    return res;
  };
}

/** Turn a non-OK hub response into an actionable error (uses X-Error-Code like huggingface_hub). */
async function statusError(hub: HubContext, res: Response, what: What): Promise<HubDownloadError> {
  const status = res.status;
  const errorCode = res.headers.get("x-error-code") ?? "";
  let serverMsg = res.headers.get("x-error-message") ?? "";
  const text = await res.text().catch(() => "");
  if (!serverMsg && text) {
    try {
      const j = JSON.parse(text) as { error?: unknown; message?: unknown };
      serverMsg = String(j.error ?? j.message ?? "");
    } catch {
      serverMsg = text.slice(0, 200);
    }
  }
  const server = serverMsg ? `: ${serverMsg.trim()}` : "";

  const tokenHint = hub.token
    ? `A token was sent (from ${hub.token.source}) but it was rejected or its account has no access.`
    : `No token was sent: set HF_TOKEN (or HF_TOKEN_PATH / run \`hf auth login\`) to a read token of an account with access.`;
  const at = `${hub.repo}@${hub.revision}${what.commit && what.commit !== hub.revision ? ` (commit ${what.commit})` : ""}`;
  const error = (code: HubErrorCode, message: string, transient = false) =>
    hubError(hub, code, message, { file: what.file, status, url: res.url || undefined, transient });

  if (errorCode === "GatedRepo") {
    return error(
      "gated",
      `${hub.repo} is a gated repo and access was refused (HTTP ${status}${server}). ` +
        `Request access at ${hub.endpoint}/${hub.repo} and set HF_TOKEN to a token of the account that was granted access. ${tokenHint}`,
    );
  }
  if (status === 401 || status === 403) {
    return error(
      "unauthorized",
      `Not authorized to access ${hub.repo} (HTTP ${status}${server}) while ${what.doing}: the repo is private or gated, ` + `or does not exist. ${tokenHint}`,
    );
  }
  if (errorCode === "RevisionNotFound" || (status === 404 && /revision|invalid rev/i.test(serverMsg))) {
    return error(
      "revision_not_found",
      `Revision '${hub.revision}' not found in ${hub.repo} (HTTP ${status}${server}): expected an existing branch, tag or full 40-hex commit sha.`,
    );
  }
  if (errorCode === "EntryNotFound" || (status === 404 && what.file && errorCode !== "RepoNotFound")) {
    return error("entry_not_found", `File '${what.file}' not found in ${at} (HTTP ${status}${server}).`);
  }
  if (errorCode === "RepoNotFound" || status === 404) {
    return error(
      "repo_not_found",
      `Repository ${hub.repo} not found on ${hub.endpoint} (HTTP ${status}${server}). Check the repo id; if the repo is private, set HF_TOKEN.`,
    );
  }
  return error(
    "http",
    `HTTP ${status}${server} from the Hugging Face Hub (${hub.endpoint}) while ${what.doing}.`,
    status >= 500 || status === 429 || status === 408,
  );
}

export function backoff(hub: HubContext, attempt: number): number {
  return Math.min(hub.retryDelayMs * 2 ** (attempt - 1), 10_000);
}

/** A metadata call of the library, retried on 5xx/429/timeouts; connection refused etc. fail fast (cache fallback). */
async function metadata<T>(hub: HubContext, what: What, call: (f: typeof fetch) => Promise<T>): Promise<T> {
  const attempts = Math.min(hub.retries, 2) + 1;
  for (let attempt = 1; ; attempt++) {
    try {
      return await call(hubFetch(hub, what, { timeoutMs: hub.timeoutMs }));
    } catch (err) {
      const timedOut = err instanceof HubDownloadError && (err.cause as Error)?.name === "TimeoutError";
      const retry = err instanceof HubDownloadError && err.transient && (err.status !== undefined || timedOut);
      if (!retry || attempt >= attempts) {
        if (err instanceof HubDownloadError || !(err instanceof Error)) throw err;
        throw hubError(hub, "bad_response", `Malformed answer from ${hub.endpoint} while ${what.doing}: ${err.message}`, {
          file: what.file,
          cause: err,
        });
      }
      hub.log.warn(`${err.message} Retrying (${attempt}/${attempts - 1}).`);
      await sleep(backoff(hub, attempt), undefined, { signal: hub.signal });
    }
  }
}

/** The commit `hub.revision` points to and the repo's file list (modelInfo, i.e. GET /api/models/{repo}/revision/{rev}). */
async function fetchRepoInfo(hub: HubContext): Promise<{ sha: string; siblings: string[] }> {
  const what = { doing: `resolving ${hub.repo}@${hub.revision}` };
  const info = await metadata(hub, what, (f) =>
    modelInfo({ name: hub.repo, revision: hub.revision, hubUrl: hub.endpoint, fetch: f, additionalFields: ["sha", "filePaths"] }),
  );
  if (typeof info.sha !== "string" || !isCommitHash(info.sha) || !Array.isArray(info.filePaths)) {
    throw hubError(
      hub,
      "bad_response",
      `Malformed repo info for ${hub.repo}@${hub.revision}: expected {sha: <40-hex>, siblings: [...]}. Is HF_ENDPOINT (${hub.endpoint}) a Hugging Face Hub?`,
    );
  }
  return { sha: info.sha, siblings: info.filePaths.filter((f): f is string => typeof f === "string") };
}

export interface FileMeta {
  file: string;
  /** blob name, as Python's cache: the LFS sha256, else the git blob sha1 */
  etag: string;
  size: number;
  lfs: boolean;
  /** Xet-backed: downloaded through the library's Xet reconstruction */
  xet: boolean;
}

/** Size and hashes of `files` at `commit` in one request (pathsInfo, i.e. POST /api/models/{repo}/paths-info/{commit}). */
export async function fetchFileMetas(hub: HubContext, commit: string, files: string[]): Promise<FileMeta[]> {
  const what = { commit, doing: `getting metadata of ${files.join(", ")}` };
  const infos = await metadata(hub, what, (f) => pathsInfo({ repo: hub.repo, paths: files, revision: commit, hubUrl: hub.endpoint, fetch: f }));
  return files.map((file) => {
    const info = infos.find((i) => i.path === file);
    const etag = info?.lfs?.oid ?? info?.oid ?? "";
    const fail = (why: string) => hubError(hub, info ? "bad_response" : "entry_not_found", `${file} in ${hub.repo}@${commit}: ${why}.`, { file });
    if (!info) throw fail("no such file");
    if (!SAFE_ETAG_RE.test(etag) || etag === "." || etag === "..") throw fail(`unusable oid '${etag}'`);
    if (!Number.isSafeInteger(info.size) || info.size < 0) throw fail("no size");
    return { file, etag, size: info.size, lfs: !!info.lfs, xet: !!info.xetHash };
  });
}

/**
 * Stream bytes [start, end) of `meta.file`@`commit` to `onChunk` through the library's Blob (WebBlob: the
 * resolve URL with a Range header unless the whole file is asked; XetBlob for Xet-backed files). Aborted when
 * no byte arrives for hub.stallTimeoutMs.
 */
export async function streamFile(
  hub: HubContext,
  commit: string,
  meta: FileMeta,
  start: number,
  end: number,
  onChunk: (chunk: Uint8Array) => Promise<void>,
): Promise<void> {
  const stall = new AbortController();
  let timer: NodeJS.Timeout | undefined;
  const arm = () => {
    clearTimeout(timer);
    timer = setTimeout(() => stall.abort(new Error(`no data received for ${hub.stallTimeoutMs} ms`)), hub.stallTimeoutMs);
  };
  // WebBlob.stream() turns a failed fetch into a string reason: keep the error itself
  let failure: unknown;
  const f = hubFetch(hub, { file: meta.file, commit, doing: `downloading ${meta.file}` }, { signal: stall.signal });
  const fetchKeepingErrors: typeof fetch = (input, init) => f(input, init).catch((err: unknown) => Promise.reject((failure = err)));
  arm();
  try {
    const path = meta.file.split("/").map(encodeURIComponent).join("/");
    const blob = await downloadFile({
      repo: hub.repo,
      path: meta.file,
      revision: commit,
      hubUrl: hub.endpoint,
      fetch: fetchKeepingErrors,
      ...(meta.xet ? {} : { downloadInfo: { size: meta.size, etag: meta.etag, url: `${hub.endpoint}/${hub.repo}/resolve/${commit}/${path}` } }),
    });
    if (!blob) throw hubError(hub, "entry_not_found", `File '${meta.file}' not found in ${hub.repo}@${commit}.`, { file: meta.file });
    const part = start === 0 && end === meta.size ? blob : blob.slice(start, end);
    for await (const chunk of part.stream() as unknown as AsyncIterable<Uint8Array>) {
      arm();
      await onChunk(chunk);
    }
  } catch (err) {
    const e = failure ?? err;
    if (stall.signal.aborted && !(e instanceof HubDownloadError && e.code !== "network")) {
      throw hubError(hub, "network", `${meta.file}: ${(stall.signal.reason as Error).message}`, { file: meta.file, transient: true, cause: e });
    }
    throw e;
  } finally {
    clearTimeout(timer);
  }
}

const TRANSIENT_CODES = new Set(["ECONNRESET", "ECONNREFUSED", "ECONNABORTED", "EPIPE", "ETIMEDOUT", "EAI_AGAIN", "ENETUNREACH", "ENETDOWN", "EHOSTUNREACH"]);

export function isTransient(err: unknown): boolean {
  if (err instanceof RestartTransfer) return true;
  if (err instanceof HubDownloadError) return err.transient;
  // errors while reading a body: TypeError('terminated') caused by an undici SocketError, ECONNRESET...
  const e = err as { message?: unknown; code?: unknown; cause?: { code?: unknown } } | undefined;
  const codes = [e?.code, e?.cause?.code].filter((c): c is string => typeof c === "string");
  return e?.message === "terminated" || codes.some((c) => c.startsWith("UND_ERR") || TRANSIENT_CODES.has(c));
}

// ---------------------------------------------------------------------------------------------
// blob transfer: resume, verification

type Verifier = "sha256" | "git-sha1" | undefined;

function verifierFor(meta: FileMeta): Verifier {
  if (meta.lfs && /^[0-9a-f]{64}$/.test(meta.etag)) return "sha256";
  if (!meta.lfs && /^[0-9a-f]{40}$/.test(meta.etag)) return "git-sha1";
  return undefined;
}

/** The running hash of the first `bytes` bytes of `path`. */
async function hashPrefix(path: string, bytes: number, kind: Verifier, size: number): Promise<Hash | undefined> {
  const h = kind === "sha256" ? createHash("sha256") : kind === "git-sha1" ? createHash("sha1").update(`blob ${size}\0`) : undefined;
  if (!h || bytes === 0) return h;
  for await (const chunk of createReadStream(path, { start: 0, end: bytes - 1 })) h.update(chunk as Buffer);
  return h;
}

export interface Transfer {
  /** the file as messages name it */
  name: string;
  commit: string;
  file: string;
  /** the partial file an attempt appends to (its size is the progress reported) */
  incomplete?: string;
  total: number;
  partialNote?: string;
}

/**
 * Run `attempt` until it returns, retrying transient failures (dropped connection, stall, 5xx) up to
 * hub.retries times with backoff; each attempt resumes from what is on disk.
 */
export async function retrying<T>(hub: HubContext, t: Transfer, attempt: () => Promise<T>): Promise<T> {
  for (let n = 0; ; n++) {
    try {
      hub.signal?.throwIfAborted();
      return await attempt();
    } catch (err) {
      if (hub.signal?.aborted) throw hub.signal.reason;
      if (!isTransient(err)) throw err;
      const have = t.incomplete ? ((await fileSize(t.incomplete)) ?? 0) : 0;
      const reason = err instanceof HubDownloadError || err instanceof RestartTransfer ? err.message : causeText(err);
      const at = `${formatBytes(have)} of ${formatBytes(t.total)}`;
      if (n >= hub.retries) {
        throw hubError(
          hub,
          "network",
          `Download of ${t.name} from ${hub.repo}@${t.commit} failed after ${at} (${reason}). ` +
            (have > 0 ? `The partial file is kept at ${t.incomplete}${t.partialNote ?? ""}; run again to resume where it stopped (HTTP Range). ` : "") +
            `If the Hub is unreachable, check HF_ENDPOINT (${hub.endpoint}) and the network, ` +
            `or set HF_HUB_OFFLINE=1 to use a complete cached copy.`,
          { file: t.file, transient: true, cause: err, ...(err instanceof HubDownloadError ? { status: err.status, url: err.url } : {}) },
        );
      }
      const wait = backoff(hub, n + 1);
      hub.log.warn(`download of ${t.name} interrupted at ${at} (${reason}); ` + `resuming in ${(wait / 1000).toFixed(1)} s (retry ${n + 1}/${hub.retries})`);
      await sleep(wait, undefined, { signal: hub.signal });
    }
  }
}

/**
 * Download one blob into blobs/<etag> through blobs/<etag>.incomplete, resuming an existing partial
 * file with a Range request, retrying dropped transfers, verifying size and hash.
 */
async function downloadBlob(hub: HubContext, commit: string, meta: FileMeta, progress: ProgressReporter): Promise<boolean> {
  const blob = blobPath(hub.storage, meta.etag);
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
  let first = true;
  let freshRetryDone = false;
  return retrying(hub, { name: meta.file, commit, file: meta.file, incomplete, total: meta.size }, async () => {
    for (;;) {
      let offset = (await fileSize(incomplete)) ?? 0;
      if (offset > meta.size) {
        await rm(incomplete, { force: true });
        offset = 0;
      }
      sync(offset);
      if (first && offset > 0) hub.log.info(`resuming ${meta.file} from ${formatBytes(offset)} of ${formatBytes(meta.size)}`);
      first = false;
      const hash = await hashPrefix(incomplete, offset, kind, meta.size);
      if (offset < meta.size || !(await exists(incomplete))) {
        const fh = await open(incomplete, offset > 0 ? "a" : "w");
        const write = async (chunk: Uint8Array) => {
          await fh.write(chunk);
          hash?.update(chunk);
          counted += chunk.byteLength;
          progress.advance(chunk.byteLength);
        };
        await streamFile(hub, commit, meta, offset, meta.size, write)
          .finally(() => fh.close())
          .catch(async (err: unknown) => {
            if (err instanceof RangeIgnored) {
              hub.log.warn(`${err.message}; downloading ${meta.file} again from the start`);
              await rm(incomplete, { force: true });
            }
            throw err;
          });
      }
      const got = (await fileSize(incomplete)) ?? 0;
      if (got < meta.size) {
        throw new RestartTransfer(`connection closed after ${formatBytes(got)} of ${formatBytes(meta.size)}`);
      }
      const digest = hash?.digest("hex");
      if (got === meta.size && (digest === undefined || digest === meta.etag)) {
        await rename(incomplete, blob);
        return true;
      }
      await rm(incomplete, { force: true });
      sync(0);
      const mismatch = got > meta.size ? "size" : "checksum";
      if (offset > 0 && !freshRetryDone) {
        freshRetryDone = true;
        hub.log.warn(`${meta.file}: ${mismatch} mismatch after resuming a partial download; the partial file was stale, downloading again from the start`);
        continue;
      }
      const detail = got > meta.size ? `expected ${meta.size} bytes, got ${got}` : `expected ${kind} ${meta.etag} (announced by the Hub), got ${digest}`;
      throw hubError(
        hub,
        "checksum",
        `Corrupted download of ${meta.file} from ${hub.repo}@${commit}: ${detail}. ` +
          `The bad file was deleted from the cache; run again to retry. If it persists, a proxy or mirror ` +
          `(HF_ENDPOINT=${hub.endpoint}) is serving wrong data.`,
        { file: meta.file },
      );
    }
  });
}

const inflight = new Map<string, Promise<unknown>>();

/** Concurrent calls in this process share one job per key (a blob, a subset file): [the job, joined a running one]. */
export function shared<T>(key: string, start: () => Promise<T>): [Promise<T>, boolean] {
  const running = inflight.get(key) as Promise<T> | undefined;
  if (running) return [running, true];
  const job = start();
  inflight.set(key, job);
  const forget = () => void (inflight.get(key) === job && inflight.delete(key));
  job.then(forget, forget);
  return [job, false];
}

// ---------------------------------------------------------------------------------------------
// entry point

function notCachedError(repo: string, revision: string, cacheDir: string, cached: Extract<CachedSnapshot, { ok: false }>, why: string): HubDownloadError {
  const missing = cached.missing.length > 0 ? `; missing: ${cached.missing.join(", ")}` : "";
  return new HubDownloadError(
    "not_cached",
    `${why}, and ${repo} at revision '${revision}' is not fully in the cache ${cacheDir}: ${cached.reason}${missing}. ` +
      `Download it once with network access (unset HF_HUB_OFFLINE; HF_ENDPOINT may point to a mirror).`,
    { repo, revision },
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

  const hub: HubContext = { ...(await createHubContext(opts, repo, revision)), log };

  let info: { sha: string; siblings: string[] };
  try {
    info = await fetchRepoInfo(hub);
  } catch (err) {
    if (!(err instanceof HubDownloadError && err.code === "network")) throw err;
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

  const commit = info.sha;
  await writeRef(storage, revision, commit);
  const selection = opts.files && opts.files.length > 0 ? selectRequestedFiles(opts.files, info.siblings) : selectDefaultFiles(info.siblings);
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
  for (const meta of todo.length > 0 ? await fetchFileMetas(hub, commit, todo) : []) {
    if (await exists(blobPath(storage, meta.etag))) {
      // blob already there (other revision, other tool): only the pointer is missing
      await linkSnapshotFile(storage, commit, meta.file, meta.etag);
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
        const [job, joined] = shared(blobPath(storage, meta.etag), () => downloadBlob(hub, commit, meta, progress));
        if (joined) {
          await job;
          progress.fileStart(meta.file, meta.size, 0);
          progress.advance(meta.size);
        } else if (await job) downloaded.push(meta.file);
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
