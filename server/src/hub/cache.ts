/**
 * The Hugging Face hub cache, laid out exactly like Python `huggingface_hub` does it, so a
 * checkpoint downloaded by either side is reused by the other:
 *
 *   $HF_HUB_CACHE/models--nvidia--C-RADIOv4-H/
 *     blobs/<etag>                      file content; etag = sha256 for LFS files, git blob sha1 otherwise
 *     blobs/<etag>.incomplete           partial download (resumed with an HTTP Range request)
 *     refs/<revision>                   commit sha a branch/tag pointed to when last resolved (no newline)
 *     snapshots/<commit>/<file>         relative symlink -> ../../blobs/<etag>
 *
 * Nothing here touches the network.
 */
import { lstat, mkdir, readFile, readdir, rename, rm, stat, statfs, symlink, copyFile, utimes, writeFile } from "node:fs/promises";
import { homedir, hostname } from "node:os";
import { setTimeout as sleep } from "node:timers/promises";
import { dirname, join, relative, resolve, sep } from "node:path";
import { REGEX_COMMIT_HASH, getHFHubCachePath, getRepoFolderName } from "@huggingface/hub";

const CONFIG_FILE = "config.json";
const PREPROCESSOR_CONFIG_FILE = "preprocessor_config.json";
const SHARD_RE = /-(\d+)-of-(\d+)\.safetensors$/;

export function isCommitHash(revision: string): boolean {
  return REGEX_COMMIT_HASH.test(revision);
}

export function expandUser(p: string): string {
  if (p === "~") return homedir();
  if (p.startsWith("~/") || p.startsWith(`~${sep}`)) return join(homedir(), p.slice(2));
  return p;
}

/**
 * Cache root, same precedence as Python: explicit > HF_HUB_CACHE > HUGGINGFACE_HUB_CACHE >
 * $HF_HOME/hub > $XDG_CACHE_HOME/huggingface/hub > ~/.cache/huggingface/hub.
 * (@huggingface/hub's getHFHubCachePath implements the env chain; we add `~` expansion like Python.)
 */
export function resolveCacheDir(cacheDir?: string): string {
  return resolve(expandUser(cacheDir ?? getHFHubCachePath()));
}

/** $HF_HOME (default $XDG_CACHE_HOME/huggingface, default ~/.cache/huggingface), as Python. */
export function resolveHfHome(): string {
  const env = process.env;
  const home = env.HF_HOME ?? join(env.XDG_CACHE_HOME ?? join(homedir(), ".cache"), "huggingface");
  return resolve(expandUser(home));
}

/** Model repo ids: `name` or `namespace/name`, like Python's validate_repo_id. */
export function validateRepoId(repo: string): void {
  const ok = /^([\w.-]+\/)?[\w.-]+$/.test(repo) && !repo.includes("--") && !repo.includes("..") && !/(^|\/)[.-]|[.-]($|\/)/.test(repo) && repo.length <= 96;
  if (!ok) {
    throw new TypeError(`Invalid Hugging Face repo id '${repo}': expected 'namespace/name' (letters, digits, '-', '_', '.'), e.g. 'nvidia/C-RADIOv4-H'`);
  }
}

/** A revision is used as a path below refs/ (it may contain '/', e.g. refs/pr/1), so keep it inside. */
export function validateRevision(revision: string): void {
  const parts = revision.split("/");
  if (revision.length === 0 || revision.includes("\\") || revision.includes("\0") || parts.some((p) => p === "" || p === "." || p === "..")) {
    throw new TypeError(`Invalid revision '${revision}': expected a branch, tag or 40-hex commit sha`);
  }
}

/** A repo file path is joined below snapshots/<commit>/: it must stay inside. */
export function validateRepoFilePath(file: string): void {
  const parts = file.split("/");
  if (file.length === 0 || file.startsWith("/") || file.includes("\\") || file.includes("\0") || parts.some((p) => p === "" || p === "." || p === "..")) {
    throw new TypeError(`Invalid repo file path '${file}'`);
  }
}

export function repoStorageDir(cacheDir: string, repo: string): string {
  return join(cacheDir, getRepoFolderName({ type: "model", name: repo }));
}

export function snapshotDir(storage: string, commit: string): string {
  return join(storage, "snapshots", commit);
}

export function pointerPath(storage: string, commit: string, file: string): string {
  return join(storage, "snapshots", commit, ...file.split("/"));
}

export function blobPath(storage: string, etag: string): string {
  return join(storage, "blobs", etag);
}

function refPath(storage: string, revision: string): string {
  return join(storage, "refs", ...revision.split("/"));
}

/** True if `p` exists; with follow=true a dangling symlink counts as missing. */
export async function exists(p: string, follow = true): Promise<boolean> {
  try {
    await (follow ? stat(p) : lstat(p));
    return true;
  } catch {
    return false;
  }
}

export async function fileSize(p: string): Promise<number | undefined> {
  try {
    return (await stat(p)).size;
  } catch {
    return undefined;
  }
}

async function readRef(storage: string, revision: string): Promise<string | undefined> {
  try {
    const value = (await readFile(refPath(storage, revision), "utf8")).trim();
    return isCommitHash(value) ? value : undefined;
  } catch {
    return undefined;
  }
}

/** Python writes refs/<revision> (no trailing newline) whenever revision != commit. */
export async function writeRef(storage: string, revision: string, commit: string): Promise<void> {
  if (revision === commit) return;
  const p = refPath(storage, revision);
  if ((await readRef(storage, revision)) === commit) return;
  await mkdir(dirname(p), { recursive: true });
  const tmp = `${p}.tmp-${process.pid}-${Math.random().toString(36).slice(2)}`;
  await writeFile(tmp, commit);
  await rename(tmp, p);
}

/** `dst` -> relative path to `src` (a copy where symlinks are not allowed), replacing any existing `dst` atomically. */
export async function linkFile(src: string, dst: string): Promise<string> {
  await mkdir(dirname(dst), { recursive: true });
  const tmp = `${dst}.tmp-${process.pid}-${Math.random().toString(36).slice(2)}`;
  try {
    await symlink(relative(dirname(dst), src), tmp);
  } catch {
    await copyFile(src, tmp);
  }
  try {
    await rename(tmp, dst);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
  return dst;
}

/** snapshots/<commit>/<file> -> ../../blobs/<etag>, as Python's _create_symlink. */
export function linkSnapshotFile(storage: string, commit: string, file: string, etag: string): Promise<string> {
  return linkFile(blobPath(storage, etag), pointerPath(storage, commit, file));
}

/** All files below a snapshot folder, as repo-relative '/' paths (symlinks included, dangling ones too). */
async function listSnapshotFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  async function walk(d: string, prefix: string): Promise<void> {
    let entries: import("node:fs").Dirent[];
    try {
      entries = await readdir(d, { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of entries) {
      const rel = prefix ? `${prefix}/${e.name}` : e.name;
      if (e.isDirectory()) await walk(join(d, e.name), rel);
      else out.push(rel);
    }
  }
  await walk(dir, "");
  return out.sort();
}

/** Minimal glob: `*` matches within a path segment, `**` across segments, `?` one character. */
function globToRegExp(glob: string): RegExp {
  let re = "";
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i]!;
    if (c === "*") {
      if (glob[i + 1] === "*") {
        re += ".*";
        i++;
      } else re += "[^/]*";
    } else if (c === "?") re += "[^/]";
    else re += c.replace(/[.+^${}()|[\]\\]/g, "\\$&");
  }
  return new RegExp(`^${re}$`);
}

export function isGlob(pattern: string): boolean {
  return /[*?]/.test(pattern);
}

/** Files a weights index (model.safetensors.index.json) refers to. */
function shardsFromIndex(indexJson: string): string[] {
  const parsed = JSON.parse(indexJson) as { weight_map?: Record<string, string> };
  if (!parsed || typeof parsed !== "object" || !parsed.weight_map || typeof parsed.weight_map !== "object") {
    throw new Error("weights index has no weight_map");
  }
  return [...new Set(Object.values(parsed.weight_map))].sort();
}

/**
 * Default checkpoint file set chosen from a repo listing: config.json, preprocessor_config.json
 * (if any), the root-level *.safetensors and their *.safetensors.index.json (if any).
 * Throws a message (caller wraps it) if the listing does not look like a checkpoint.
 */
export function selectDefaultFiles(available: readonly string[]): { files: string[]; missing: string[] } {
  const root = available.filter((f) => !f.includes("/"));
  const files: string[] = [];
  const missing: string[] = [];
  if (root.includes(CONFIG_FILE)) files.push(CONFIG_FILE);
  else missing.push(CONFIG_FILE);
  if (root.includes(PREPROCESSOR_CONFIG_FILE)) files.push(PREPROCESSOR_CONFIG_FILE);
  files.push(...root.filter((f) => f.endsWith(".safetensors.index.json")).sort());
  const weights = root.filter((f) => f.endsWith(".safetensors")).sort();
  if (weights.length === 0) missing.push("*.safetensors");
  files.push(...weights);
  return { files, missing };
}

/** Expand explicit names/globs against a listing; names that match nothing are reported missing. */
export function selectRequestedFiles(requested: readonly string[], available: readonly string[]): { files: string[]; missing: string[] } {
  const files: string[] = [];
  const missing: string[] = [];
  const seen = new Set<string>();
  for (const pattern of requested) {
    const matches = isGlob(pattern) ? available.filter((f) => globToRegExp(pattern).test(f)) : available.includes(pattern) ? [pattern] : [];
    if (matches.length === 0) missing.push(pattern);
    for (const m of matches) {
      if (!seen.has(m)) {
        seen.add(m);
        files.push(m);
      }
    }
  }
  return { files, missing };
}

export type CachedSnapshot =
  | { ok: true; commit: string; snapshotDir: string; files: string[] }
  | { ok: false; commit?: string; snapshotDir?: string; reason: string; missing: string[] };

/**
 * Resolve a checkpoint purely from the cache (offline mode, pinned-commit fast path, network fallback).
 * For the default file set it also checks completeness: every shard named by the index (or by the
 * `-0000k-of-0000n` naming) must be present, so a half-populated snapshot is not mistaken for a checkpoint.
 */
export async function resolveFromCache(params: { cacheDir: string; repo: string; revision: string; files?: readonly string[] }): Promise<CachedSnapshot> {
  const storage = repoStorageDir(params.cacheDir, params.repo);
  let commit: string | undefined;
  if (isCommitHash(params.revision)) {
    commit = params.revision;
  } else {
    commit = await readRef(storage, params.revision);
    if (!commit) {
      const why = (await exists(storage))
        ? `no ref for revision '${params.revision}' (missing ${refPath(storage, params.revision)})`
        : `nothing cached for this repo (missing ${storage})`;
      return { ok: false, reason: why, missing: [] };
    }
  }
  const dir = snapshotDir(storage, commit);
  if (!(await exists(dir))) {
    return { ok: false, commit, reason: `no snapshot for commit ${commit} (missing ${dir})`, missing: [] };
  }
  const listed = await listSnapshotFiles(dir);
  const present: string[] = [];
  for (const f of listed) if (await exists(pointerPath(storage, commit, f))) present.push(f);

  let selection: { files: string[]; missing: string[] };
  if (params.files && params.files.length > 0) {
    selection = selectRequestedFiles(params.files, present);
  } else {
    selection = selectDefaultFiles(present);
    const extra = new Set<string>();
    for (const indexFile of selection.files.filter((f) => f.endsWith(".safetensors.index.json"))) {
      try {
        for (const shard of shardsFromIndex(await readFile(join(dir, ...indexFile.split("/")), "utf8"))) {
          if (!present.includes(shard)) extra.add(shard);
        }
      } catch (err) {
        extra.add(`${indexFile} (unreadable: ${(err as Error).message})`);
      }
    }
    for (const w of selection.files) {
      const m = SHARD_RE.exec(w);
      if (!m) continue;
      const n = Number(m[2]);
      const width = m[1]!.length;
      for (let k = 1; k <= n; k++) {
        const shard = w.replace(SHARD_RE, `-${String(k).padStart(width, "0")}-of-${m[2]}.safetensors`);
        if (!present.includes(shard)) extra.add(shard);
      }
    }
    selection.missing.push(...extra);
  }
  // Files listed in the folder but whose blob is gone (dangling symlink) are reported as missing too.
  const dangling = listed.filter((f) => !present.includes(f));
  const missing = selection.missing.map((m) => (dangling.includes(m) ? `${m} (dangling symlink, blob deleted)` : m));
  if (missing.length > 0) {
    return { ok: false, commit, snapshotDir: dir, reason: `snapshot ${commit} is incomplete`, missing };
  }
  return { ok: true, commit, snapshotDir: dir, files: selection.files };
}

/** Free bytes on the filesystem holding `dir` (undefined if unknown). */
export async function freeSpace(dir: string): Promise<number | undefined> {
  try {
    const s = await statfs(dir);
    return s.bavail * s.bsize;
  } catch {
    return undefined;
  }
}

/** A lock not refreshed for this long was left by a process that died: it is taken over. */
const LOCK_STALE_MS = 30_000;

/**
 * Run `fn` holding an exclusive lock between processes that share the cache: the directory `path` (mkdir is
 * atomic, NFS included) with an `owner` file, its mtime refreshed while held; one left by a killed process is
 * taken over once not refreshed for 30 s. While another process holds it, wait (`onWait` is told who, once).
 * `fn`'s signal aborts if the lock is lost (this process did not refresh it in time and another one took over).
 *
 * Python's huggingface_hub flock()s <cache>/.locks/<repo folder>/<etag>.lock, which Node cannot do (no flock in
 * its fs API); it downloads into its own uniquely named temporary file, so it never writes what this lock guards.
 * proper-lockfile takes the same mkdir-and-refresh approach, but a wait for it cannot be aborted (our downloads'
 * signal) and it does not say who holds the lock: hence these lines.
 */
export async function withCacheLock<T>(
  path: string,
  opts: { signal?: AbortSignal | undefined; onWait: (owner: string) => void },
  fn: (signal: AbortSignal) => Promise<T>,
): Promise<T> {
  await mkdir(dirname(path), { recursive: true });
  const owner = join(path, "owner");
  const me = `process ${process.pid} on ${hostname()} (${Math.random().toString(36).slice(2)})`;
  let told = false;
  for (;;) {
    opts.signal?.throwIfAborted();
    try {
      await mkdir(path);
      await writeFile(owner, me);
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
    }
    const mtime = (await stat(path).catch(() => undefined))?.mtimeMs;
    if (mtime !== undefined && Date.now() - mtime > LOCK_STALE_MS) {
      await rm(path, { recursive: true, force: true });
      continue;
    }
    if (!told) {
      told = true;
      const holder = (await readFile(owner, "utf8").catch(() => "another process")).replace(/ \(\w+\)$/, "");
      opts.onWait(holder);
    }
    await sleep(200, undefined, { signal: opts.signal });
  }
  const lost = new AbortController();
  const refresh = setInterval(() => {
    void (async () => {
      if ((await readFile(owner, "utf8").catch(() => "")) !== me) throw new Error(`lock ${path} was taken over by another process`);
      const now = new Date();
      await utimes(path, now, now);
    })().catch((err: unknown) => lost.abort(err));
  }, LOCK_STALE_MS / 6);
  refresh.unref();
  try {
    return await fn(opts.signal ? AbortSignal.any([opts.signal, lost.signal]) : lost.signal);
  } finally {
    clearInterval(refresh);
    if (!lost.signal.aborted) await rm(path, { recursive: true, force: true });
  }
}
