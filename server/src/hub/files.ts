/**
 * Repo files on the Hub: the commit a revision points to and its file list, each file's size and hashes, a
 * file's bytes as a stream, and a file into the cache as blobs/<etag> (resume, verification).
 */
import { createHash, type Hash } from "node:crypto";
import { createReadStream } from "node:fs";
import { mkdir, open, rename, rm } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import { downloadFile, modelInfo, pathsInfo } from "@huggingface/hub";
import { blobPath, exists, fileSize, isCommitHash, withCacheLock } from "./cache.js";
import { hubError, type HubContext } from "./context.js";
import { HubDownloadError, RangeIgnored, RestartTransfer } from "./errors.js";
import { hubFetch, metadata, retrying } from "./http.js";
import { formatBytes, type ProgressReporter } from "./progress.js";

const SAFE_ETAG_RE = /^[A-Za-z0-9_.-]+$/;

/** The commit `hub.revision` points to and the repo's file list (modelInfo, i.e. GET /api/models/{repo}/revision/{rev}). */
export async function fetchRepoInfo(hub: HubContext): Promise<{ sha: string; siblings: string[] }> {
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

/**
 * Download one blob into blobs/<etag> through blobs/<etag>.incomplete, resuming an existing partial
 * file with a Range request, retrying dropped transfers, verifying size and hash.
 */
export async function downloadBlob(hub: HubContext, commit: string, meta: FileMeta, progress: ProgressReporter): Promise<boolean> {
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

/**
 * downloadBlob holding the lock of blobs/<etag>.incomplete (<cache>/.locks/<repo folder>/<etag>.incomplete.lock),
 * so that two processes never append to it at once: the second one waits, then finds the blob (or resumes).
 */
export function downloadBlobLocked(hub: HubContext, commit: string, meta: FileMeta, progress: ProgressReporter): Promise<boolean> {
  const lock = join(hub.cacheDir, ".locks", basename(hub.storage), `${meta.etag}.incomplete.lock`);
  const onWait = (owner: string) => hub.log.info(`waiting for ${owner}, which is downloading ${meta.file} into the same cache (lock ${lock})`);
  return withCacheLock(lock, { signal: hub.signal, onWait }, (signal) => downloadBlob({ ...hub, signal }, commit, meta, progress));
}
