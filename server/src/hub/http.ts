/**
 * HTTP: the fetch handed to @huggingface/hub, the retries around its calls (metadata, transfers that resume),
 * and one job per blob or subset file for concurrent calls in this process.
 */
import { setTimeout as sleep } from "node:timers/promises";
import { PRODUCT } from "../version.js";
import { fileSize } from "./cache.js";
import { hubError, type HubContext } from "./context.js";
import { HubDownloadError, RangeIgnored, RestartTransfer, causeText, type HubErrorCode } from "./errors.js";
import { formatBytes } from "./progress.js";

const USER_AGENT = `radio-sidecar/${PRODUCT.version}; node/${process.versions.node}`;

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

function backoff(hub: HubContext, attempt: number): number {
  return Math.min(hub.retryDelayMs * 2 ** (attempt - 1), 10_000);
}

/** A metadata call of the library, retried on 5xx/429/timeouts; connection refused etc. fail fast (cache fallback). */
export async function metadata<T>(hub: HubContext, what: What, call: (f: typeof fetch) => Promise<T>): Promise<T> {
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

const TRANSIENT_CODES = new Set(["ECONNRESET", "ECONNREFUSED", "ECONNABORTED", "EPIPE", "ETIMEDOUT", "EAI_AGAIN", "ENETUNREACH", "ENETDOWN", "EHOSTUNREACH"]);

function isTransient(err: unknown): boolean {
  if (err instanceof RestartTransfer) return true;
  if (err instanceof HubDownloadError) return err.transient;
  // errors while reading a body: TypeError('terminated') caused by an undici SocketError, ECONNRESET...
  const e = err as { message?: unknown; code?: unknown; cause?: { code?: unknown } } | undefined;
  const codes = [e?.code, e?.cause?.code].filter((c): c is string => typeof c === "string");
  return e?.message === "terminated" || codes.some((c) => c.startsWith("UND_ERR") || TRANSIENT_CODES.has(c));
}

interface Transfer {
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
