/**
 * Download a C-RADIO checkpoint (config.json + *.safetensors [+ index]) from the Hugging Face Hub
 * into the standard hub cache, interoperable with Python `huggingface_hub`.
 *
 * The Hub protocol is `@huggingface/hub`'s: `modelInfo` resolves the revision to a commit and lists the repo,
 * `pathsInfo` gives each file's size, git oid, LFS sha256 and Xet hash (one request for all files),
 * `downloadFile` turns a file into a Blob (a plain resolve URL, or Xet reconstruction for Xet-backed files)
 * whose `slice(start)` is a ranged download (files.ts). Every request goes through `hubFetch` (http.ts: User-Agent,
 * the token on Hub-origin requests only, timeouts, actionable errors from X-Error-Code).
 *
 * Added in hub/, which the library does not do: resume of blobs/<etag>.incomplete (in-call and across calls),
 * sha256 verification of LFS blobs (git-sha1 for small files), a progress bar / lines, the offline fallback
 * to a complete cached snapshot, Python's token lookup, and gated/unauthorized messages.
 */
import { mkdir } from "node:fs/promises";
import { join } from "node:path";
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
  selectDefaultFiles,
  selectRequestedFiles,
  snapshotDir,
  validateRepoFilePath,
  validateRepoId,
  validateRevision,
  writeRef,
  type CachedSnapshot,
} from "./cache.js";
import { createHubContext, isOfflineFromEnv, type HubContext, type HubOptions } from "./context.js";
import { HubDownloadError } from "./errors.js";
import { downloadBlobLocked, fetchFileMetas, fetchRepoInfo, type FileMeta } from "./files.js";
import { shared } from "./http.js";
import { ProgressReporter, formatBytes, stderrLogger } from "./progress.js";

export interface DownloadCheckpointOptions extends HubOptions {
  /** e.g. "nvidia/C-RADIOv4-H" */
  repo: string;
  /** branch, tag or 40-hex commit sha (default "main") */
  revision?: string;
  /**
   * Repo files (names or globs like "*.safetensors"). Default: config.json, preprocessor_config.json
   * if present, the root-level *.safetensors and *.safetensors.index.json if present.
   */
  files?: string[];
}

interface DownloadCheckpointResult {
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
    if (!(err instanceof HubDownloadError && (err.code === "network" || (err.code === "http" && err.transient)))) throw err;
    // like huggingface_hub: hub unreachable or down (5xx, 429) -> use what the cache has for this revision
    const cached = await resolveFromCache(cacheQuery);
    if (cached.ok) {
      log.warn(`${err.message} Using the cached snapshot ${cached.commit} of ${repo}@${revision}.`);
      return fromCache(cached);
    }
    throw new HubDownloadError(
      err.code,
      `${err.message} Nothing usable is cached for ${repo}@${revision}: ${cached.reason}` +
        (cached.missing.length ? ` (missing: ${cached.missing.join(", ")})` : "") +
        ".",
      { repo, revision, url: err.url, status: err.status, transient: true, cause: err },
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
        const [job, joined] = shared(blobPath(storage, meta.etag), () => downloadBlobLocked(hub, commit, meta, progress));
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
