/**
 * A loopback stand-in for the Hugging Face Hub, speaking the subset of its HTTP API that the calls of
 * server/src/hub/ to @huggingface/hub (and Python huggingface_hub's snapshot_download) make:
 *
 *   GET  /api/models/{ns}/{name}/revision/{rev}       repo info (modelInfo): {id, sha, siblings: [{rfilename}], ...}
 *   POST /api/models/{ns}/{name}/paths-info/{rev}     file sizes and hashes (pathsInfo)
 *   GET  /api/models/{ns}/{name}/tree/{rev}[/{dir}]   the listing Python's huggingface_hub (snapshot_download) asks for
 *   GET  /{ns}/{name}/resolve/{rev}/{path}            content (downloadFile's Blob, with Range); HEAD for Python's
 *                                                      get_hf_file_metadata. Regular files: 307 (same origin) to
 *                                                      /api/resolve-cache/models/{ns}/{name}/{commit}/{path}: 200 + ETag "<git sha1>";
 *                                                      LFS files: 302 to the "CDN" + X-Linked-Etag "<sha256>", X-Linked-Size
 *   GET  {cdn}/lfs/{sha256}?sig=...                   LFS content (a second listener = another origin), Range supported
 *
 * Errors carry X-Error-Code (RepoNotFound, RevisionNotFound, EntryNotFound, GatedRepo) like the real Hub.
 * Every request is recorded; faults (cut connection, corrupt bytes, HTTP status) can be injected.
 *
 * Usage:
 *   const hub = await FakeHub.start();
 *   const commit = await hub.addRepoFromDir("nvidia/C-RADIOv4-H", dir);   // or hub.addRepo(id, {path: bytes})
 *   process.env.HF_ENDPOINT = hub.endpoint;
 *   ...
 *   await hub.close();
 */
import { createHash, createHmac, randomBytes } from "node:crypto";
import { createReadStream } from "node:fs";
import { readdir, stat } from "node:fs/promises";
import http, { type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { join, relative, sep } from "node:path";

export interface FakeFile {
  path: string;
  size: number;
  lfs: boolean;
  sha256: string;
  /** git blob sha1 of the content (the ETag of non-LFS files) */
  gitOid: string;
  /** content in memory, or a file on disk */
  data: Buffer | { diskPath: string };
}

export interface FakeCommit {
  sha: string;
  files: Map<string, FakeFile>;
}

export interface FakeRepo {
  id: string;
  branches: Map<string, string>;
  commits: Map<string, FakeCommit>;
  /** token required for everything (private repo) */
  privateToken?: string;
  /** token required to download files (gated repo); repo info stays public like on the Hub */
  gatedToken?: string;
}

export interface RecordedRequest {
  server: "hub" | "cdn";
  method: string;
  /** path + query as received */
  url: string;
  headers: IncomingHttpHeaders;
  /** route kind */
  kind: "repo-info" | "paths-info" | "tree" | "resolve" | "lfs" | "other";
  /** repo file path for resolve / lfs routes */
  file?: string;
  status?: number;
  /** body bytes written (content routes) */
  bytesSent?: number;
}

export type FakeFault =
  /**
   * send the response headers and `afterBytes` body bytes of the file content, then destroy the socket;
   * with minLength, only responses of at least that many bytes (e.g. a tensor's range, not a header read)
   */
  | { kind: "cut"; file: string; afterBytes: number; minLength?: number; times?: number }
  /** serve content with one byte flipped (same length, same etag) */
  | { kind: "corrupt"; file: string; times?: number }
  /** answer content requests for `file` with a 200 full body even when a Range was asked */
  | { kind: "ignore-range"; file: string; times?: number }
  /** answer the matching route with an HTTP status */
  | { kind: "status"; status: number; route: RecordedRequest["kind"]; file?: string; times?: number }
  /** hold the content response for `ms` after sending headers and `afterBytes` bytes */
  | { kind: "stall"; file: string; afterBytes: number; ms: number; times?: number }
  /** wait `ms` before each 64 KiB chunk of the content (a slow link: downloads in other processes overlap) */
  | { kind: "slow"; file: string; ms: number; times?: number };

export interface AddRepoOptions {
  branch?: string;
  /** explicit commit sha (40 hex); default: derived from the content */
  commit?: string;
  /** override which files are stored in LFS (default: *.safetensors/*.bin/*.onnx/... or >= 10 MiB) */
  lfs?: (path: string, size: number) => boolean;
  privateToken?: string;
  gatedToken?: string;
}

const LFS_EXT = /\.(safetensors|bin|pt|pth|ckpt|onnx|h5|msgpack|npz|npy|pkl|tar|gz|zip|model)$/;

function defaultLfs(path: string, size: number): boolean {
  return LFS_EXT.test(path) || size >= 10 * 1024 * 1024;
}

function gitOid(data: Buffer): string {
  return createHash("sha1").update(`blob ${data.length}\0`).update(data).digest("hex");
}

function makeFile(path: string, data: Buffer, lfs: boolean): FakeFile {
  return {
    path,
    size: data.length,
    lfs,
    sha256: createHash("sha256").update(data).digest("hex"),
    gitOid: gitOid(data),
    data,
  };
}

async function makeDiskFile(path: string, diskPath: string, lfsFn: (p: string, n: number) => boolean): Promise<FakeFile> {
  const size = (await stat(diskPath)).size;
  const sha256 = createHash("sha256");
  const sha1 = createHash("sha1").update(`blob ${size}\0`);
  for await (const chunk of createReadStream(diskPath)) {
    sha256.update(chunk as Buffer);
    sha1.update(chunk as Buffer);
  }
  return {
    path,
    size,
    lfs: lfsFn(path, size),
    sha256: sha256.digest("hex"),
    gitOid: sha1.digest("hex"),
    data: { diskPath },
  };
}

function lfsPointer(f: FakeFile): string {
  return `version https://git-lfs.github.com/spec/v1\noid sha256:${f.sha256}\nsize ${f.size}\n`;
}

/** Decode each '/'-separated segment of a raw URL path. */
function segments(rawPath: string): string[] {
  return rawPath
    .split("/")
    .filter((s) => s.length > 0)
    .map((s) => decodeURIComponent(s));
}

export class FakeHub {
  readonly repos = new Map<string, FakeRepo>();
  readonly requests: RecordedRequest[] = [];
  private faults: (FakeFault & { left: number })[] = [];
  private readonly secret = randomBytes(16);
  private hubServer!: http.Server;
  private cdnServer!: http.Server;
  /** e.g. http://127.0.0.1:41234 — use as HF_ENDPOINT */
  endpoint = "";
  /** the "CDN" origin LFS downloads are redirected to */
  cdnEndpoint = "";
  /** set to false to make LFS resolve answer 200 with the content directly (no CDN redirect) */
  redirectLfs = true;
  /**
   * Like huggingface.co, answer resolve of regular (non-LFS) files with a same-origin 307 to
   * /api/resolve-cache/models/{id}/{commit}/{path}; false: serve them directly.
   */
  resolveCacheRedirect = true;

  static async start(): Promise<FakeHub> {
    const hub = new FakeHub();
    hub.hubServer = http.createServer((req, res) => hub.handle("hub", req, res));
    hub.cdnServer = http.createServer((req, res) => hub.handle("cdn", req, res));
    const listen = (s: http.Server) => new Promise<number>((resolve) => s.listen(0, "127.0.0.1", () => resolve((s.address() as AddressInfo).port)));
    hub.endpoint = `http://127.0.0.1:${await listen(hub.hubServer)}`;
    hub.cdnEndpoint = `http://127.0.0.1:${await listen(hub.cdnServer)}`;
    return hub;
  }

  async close(): Promise<void> {
    for (const s of [this.hubServer, this.cdnServer]) {
      s.closeAllConnections();
      await new Promise<void>((resolve) => s.close(() => resolve()));
    }
  }

  /**
   * Add (or extend) a repo with a new commit holding exactly `files` and point `branch` (default main) at it.
   * Returns the commit sha.
   */
  addRepo(id: string, files: Record<string, Buffer | string>, opts: AddRepoOptions = {}): string {
    const lfsFn = opts.lfs ?? defaultLfs;
    const list = Object.entries(files).map(([p, d]) => {
      const data = typeof d === "string" ? Buffer.from(d) : d;
      return makeFile(p, data, lfsFn(p, data.length));
    });
    return this.addCommit(id, list, opts);
  }

  /** Serve every file below `dir` (e.g. a generated tiny checkpoint) as a commit of repo `id`. */
  async addRepoFromDir(id: string, dir: string, opts: AddRepoOptions = {}): Promise<string> {
    const lfsFn = opts.lfs ?? defaultLfs;
    const list: FakeFile[] = [];
    const walk = async (d: string): Promise<void> => {
      for (const e of await readdir(d, { withFileTypes: true })) {
        const full = join(d, e.name);
        if (e.isDirectory()) await walk(full);
        else if (e.isFile() || e.isSymbolicLink()) {
          list.push(await makeDiskFile(relative(dir, full).split(sep).join("/"), full, lfsFn));
        }
      }
    };
    await walk(dir);
    return this.addCommit(id, list, opts);
  }

  private addCommit(id: string, list: FakeFile[], opts: AddRepoOptions): string {
    let repo = this.repos.get(id);
    if (!repo) {
      repo = { id, branches: new Map(), commits: new Map() };
      this.repos.set(id, repo);
    }
    if (opts.privateToken !== undefined) repo.privateToken = opts.privateToken;
    if (opts.gatedToken !== undefined) repo.gatedToken = opts.gatedToken;
    const sha =
      opts.commit ??
      createHash("sha1")
        .update(`commit ${id} ${repo.commits.size}\n`)
        .update(
          list
            .map((f) => `${f.path} ${f.gitOid}`)
            .sort()
            .join("\n"),
        )
        .digest("hex");
    if (!/^[0-9a-f]{40}$/.test(sha)) throw new Error(`bad commit sha ${sha}`);
    repo.commits.set(sha, { sha, files: new Map(list.map((f) => [f.path, f])) });
    repo.branches.set(opts.branch ?? "main", sha);
    return sha;
  }

  setBranch(id: string, branch: string, commit: string): void {
    const repo = this.repos.get(id);
    if (!repo?.commits.has(commit)) throw new Error(`unknown repo/commit ${id}@${commit}`);
    repo.branches.set(branch, commit);
  }

  fileInfo(id: string, path: string, revision = "main"): FakeFile {
    const repo = this.repos.get(id);
    const commit = repo && this.resolveRev(repo, revision);
    const f = commit?.files.get(path);
    if (!f) throw new Error(`no ${path} in ${id}@${revision}`);
    return f;
  }

  fault(f: FakeFault): void {
    this.faults.push({ ...f, left: f.times ?? 1 });
  }

  clearFaults(): void {
    this.faults = [];
  }

  clearRequests(): void {
    this.requests.length = 0;
  }

  /** requests that transfer file content (GET on resolve or on the CDN) */
  contentRequests(): RecordedRequest[] {
    return this.requests.filter(
      (r) => r.method === "GET" && (r.kind === "lfs" || (r.kind === "resolve" && r.status === 200) || (r.kind === "resolve" && r.status === 206)),
    );
  }

  /** requests that touch files at all (HEAD/GET resolve, CDN) */
  fileRequests(): RecordedRequest[] {
    return this.requests.filter((r) => r.kind === "resolve" || r.kind === "lfs");
  }

  private takeFault<K extends FakeFault["kind"]>(kind: K, pred: (f: Extract<FakeFault, { kind: K }>) => boolean): Extract<FakeFault, { kind: K }> | undefined {
    const i = this.faults.findIndex((f) => f.kind === kind && f.left > 0 && pred(f as unknown as Extract<FakeFault, { kind: K }>));
    if (i < 0) return undefined;
    const f = this.faults[i]!;
    f.left--;
    if (f.left <= 0) this.faults.splice(i, 1);
    return f as unknown as Extract<FakeFault, { kind: K }>;
  }

  private resolveRev(repo: FakeRepo, rev: string): FakeCommit | undefined {
    const sha = repo.commits.has(rev) ? rev : repo.branches.get(rev === "HEAD" ? "main" : rev);
    return sha === undefined ? undefined : repo.commits.get(sha);
  }

  private sign(sha256: string): string {
    return createHmac("sha256", this.secret).update(sha256).digest("hex").slice(0, 32);
  }

  private handle(server: "hub" | "cdn", req: IncomingMessage, res: ServerResponse): void {
    const rec: RecordedRequest = { server, method: req.method ?? "GET", url: req.url ?? "/", headers: req.headers, kind: "other" };
    this.requests.push(rec);
    const origWriteHead = res.writeHead.bind(res);
    (res as { writeHead: unknown }).writeHead = (status: number, ...rest: unknown[]) => {
      rec.status = status;
      return (origWriteHead as (...a: unknown[]) => ServerResponse)(status, ...rest);
    };
    let body = "";
    req.setEncoding("utf8");
    req.on("data", (c: string) => (body += c));
    req.on("end", () => {
      try {
        if (server === "cdn") this.handleCdn(rec, req, res);
        else this.handleHub(rec, req, res, body);
      } catch (err) {
        if (!res.headersSent) {
          res.writeHead(500, { "Content-Type": "application/json" });
          res.end(JSON.stringify({ error: String(err) }));
        } else res.destroy();
      }
    });
  }

  private error(res: ServerResponse, status: number, code: string | undefined, message: string): void {
    const headers: Record<string, string> = { "Content-Type": "application/json", "X-Error-Message": message };
    if (code) headers["X-Error-Code"] = code;
    res.writeHead(status, headers);
    res.end(JSON.stringify({ error: message }));
  }

  /** like the Hub: 401 without credentials (could be private), 404 with */
  private repoNotFound(req: IncomingMessage, res: ServerResponse): void {
    if (req.headers.authorization) this.error(res, 404, "RepoNotFound", "Repository not found");
    else this.error(res, 401, "RepoNotFound", "Invalid username or password.");
  }

  /** Authorization check like the Hub: private -> 401 RepoNotFound; gated -> 401/403 GatedRepo */
  private authorize(repo: FakeRepo, req: IncomingMessage, res: ServerResponse, forFiles: boolean): boolean {
    const auth = req.headers.authorization;
    const bearer = typeof auth === "string" && auth.startsWith("Bearer ") ? auth.slice(7) : undefined;
    if (repo.privateToken !== undefined && bearer !== repo.privateToken) {
      this.error(res, 401, "RepoNotFound", bearer ? "Invalid credentials in Authorization header" : "Repository not found");
      return false;
    }
    if (forFiles && repo.gatedToken !== undefined && bearer !== repo.gatedToken) {
      this.error(
        res,
        bearer ? 403 : 401,
        "GatedRepo",
        `Access to model ${repo.id} is restricted. You must have access to it and be authenticated to access it. Please log in.`,
      );
      return false;
    }
    return true;
  }

  private injectedStatus(rec: RecordedRequest, res: ServerResponse): boolean {
    const f = this.takeFault("status", (x) => x.route === rec.kind && (x.file === undefined || x.file === rec.file));
    if (!f) return false;
    this.error(res, f.status, undefined, `injected HTTP ${f.status}`);
    return true;
  }

  private handleHub(rec: RecordedRequest, req: IncomingMessage, res: ServerResponse, body: string): void {
    const [rawPath] = (req.url ?? "/").split("?", 1) as [string];
    const seg = segments(rawPath);

    // /api/models/{ns}/{name}[/(revision|paths-info|tree)/{rev}[/{dir}]]
    if (seg[0] === "api" && seg[1] === "models" && (seg.length >= 6 || seg.length === 4)) {
      const id = `${seg[2]}/${seg[3]}`;
      const action = seg[4] ?? "revision";
      const rev = seg[5] ?? "main";
      rec.kind = action === "revision" ? "repo-info" : action === "paths-info" ? "paths-info" : action === "tree" ? "tree" : "other";
      if (this.injectedStatus(rec, res)) return;
      const repo = this.repos.get(id);
      if (!repo) return this.repoNotFound(req, res);
      if (!this.authorize(repo, req, res, false)) return;
      const commit = this.resolveRev(repo, rev);
      if (!commit) return this.error(res, 404, "RevisionNotFound", `Invalid rev id: ${rev}`);
      const files = [...commit.files.values()].sort((a, b) => a.path.localeCompare(b.path));
      const entry = (f: FakeFile) => ({
        type: "file",
        oid: f.lfs
          ? createHash("sha1")
              .update(`blob ${lfsPointer(f).length}\0${lfsPointer(f)}`)
              .digest("hex")
          : f.gitOid,
        size: f.size,
        path: f.path,
        ...(f.lfs ? { lfs: { oid: f.sha256, size: f.size, pointerSize: lfsPointer(f).length } } : {}),
      });
      if (action === "revision" && req.method === "GET") {
        res.writeHead(200, { "Content-Type": "application/json" });
        res.end(
          JSON.stringify({
            _id: createHash("sha1").update(id).digest("hex").slice(0, 24),
            id,
            modelId: id,
            sha: commit.sha,
            private: repo.privateToken !== undefined,
            gated: repo.gatedToken !== undefined ? "manual" : false,
            disabled: false,
            downloads: 0,
            likes: 0,
            tags: [],
            lastModified: new Date(0).toISOString(),
            siblings: files.map((f) => ({ rfilename: f.path })),
          }),
        );
        return;
      }
      if (action === "paths-info" && req.method === "POST") {
        let paths: string[] = [];
        try {
          const parsed = body.startsWith("{") ? (JSON.parse(body) as { paths?: string[] }) : Object.fromEntries(new URLSearchParams(body));
          paths = Array.isArray(parsed.paths) ? parsed.paths : typeof parsed.paths === "string" ? [parsed.paths] : [];
        } catch {
          return this.error(res, 400, undefined, "bad body");
        }
        res.writeHead(200, { "Content-Type": "application/json" });
        res.end(
          JSON.stringify(
            paths
              .map((p) => commit.files.get(p))
              .filter((f): f is FakeFile => f !== undefined)
              .map((f) => ({ ...entry(f), lastCommit: { id: commit.sha, title: "commit", date: new Date(0).toISOString() } })),
          ),
        );
        return;
      }
      if (action === "tree" && req.method === "GET") {
        const dir = seg.slice(6).join("/");
        const recursive = /[?&]recursive=(true|1)(&|$)/.test(req.url ?? "");
        const prefix = dir ? `${dir}/` : "";
        const out: unknown[] = [];
        const dirs = new Set<string>();
        for (const f of files) {
          if (!f.path.startsWith(prefix)) continue;
          const parts = f.path.slice(prefix.length).split("/");
          for (let i = 1; i < parts.length && (recursive || i === 1); i++) dirs.add(prefix + parts.slice(0, i).join("/"));
          if (recursive || parts.length === 1) out.push(entry(f));
        }
        for (const d of dirs) out.push({ type: "directory", oid: "0".repeat(40), size: 0, path: d });
        res.writeHead(200, { "Content-Type": "application/json" });
        res.end(JSON.stringify(out));
        return;
      }
      return this.error(res, 404, undefined, "Not found");
    }

    // /api/resolve-cache/models/{ns}/{name}/{commit}/{path...}, or /{ns}/{name}/resolve/{rev}/{path...}
    const cached = seg[0] === "api" && seg[1] === "resolve-cache" && seg[2] === "models" && seg.length >= 7;
    if (cached || (seg.length >= 5 && seg[2] === "resolve")) {
      const id = cached ? `${seg[3]}/${seg[4]}` : `${seg[0]}/${seg[1]}`;
      const rev = cached ? seg[5]! : seg[3]!;
      const file = seg.slice(cached ? 6 : 4).join("/");
      rec.kind = "resolve";
      rec.file = file;
      if (this.injectedStatus(rec, res)) return;
      const repo = this.repos.get(id);
      if (!repo) return this.repoNotFound(req, res);
      if (!this.authorize(repo, req, res, true)) return;
      const commit = this.resolveRev(repo, rev);
      if (!commit) return this.error(res, 404, "RevisionNotFound", `Invalid rev id: ${rev}`);
      const f = commit.files.get(file);
      if (!f) return this.error(res, 404, "EntryNotFound", `${file} does not exist on "${rev}"`);
      const common: Record<string, string> = { "X-Repo-Commit": commit.sha, "Accept-Ranges": "bytes" };
      if (f.lfs && this.redirectLfs) {
        const location = `${this.cdnEndpoint}/lfs/${f.sha256}?file=${encodeURIComponent(f.path)}&sig=${this.sign(f.sha256)}`;
        const msg = `Found. Redirecting to ${location}`;
        res.writeHead(302, {
          ...common,
          Location: location,
          "X-Linked-Etag": `"${f.sha256}"`,
          "X-Linked-Size": String(f.size),
          ETag: `"${createHash("sha1")
            .update(`blob ${lfsPointer(f).length}\0${lfsPointer(f)}`)
            .digest("hex")}"`,
          "Content-Type": "text/plain; charset=utf-8",
          "Content-Length": String(Buffer.byteLength(msg)),
        });
        res.end(req.method === "HEAD" ? undefined : msg);
        return;
      }
      if (!f.lfs && !cached && this.resolveCacheRedirect) {
        const location = `/api/resolve-cache/models/${id}/${commit.sha}/${file.split("/").map(encodeURIComponent).join("/")}`;
        res.writeHead(307, { ...common, Location: location, ETag: `"${f.gitOid}"`, "Content-Length": "0" });
        res.end();
        return;
      }
      const headers: Record<string, string> = { ...common, ETag: `"${f.lfs ? f.sha256 : f.gitOid}"` };
      if (f.lfs) {
        headers["X-Linked-Etag"] = `"${f.sha256}"`;
        headers["X-Linked-Size"] = String(f.size);
      }
      this.serveContent(rec, req, res, f, headers);
      return;
    }
    this.error(res, 404, undefined, "Not found");
  }

  private handleCdn(rec: RecordedRequest, req: IncomingMessage, res: ServerResponse): void {
    const url = new URL(req.url ?? "/", this.cdnEndpoint);
    const seg = segments(url.pathname);
    rec.kind = "lfs";
    const sha = seg[1] ?? "";
    if (seg[0] !== "lfs" || url.searchParams.get("sig") !== this.sign(sha)) {
      res.writeHead(403, { "Content-Type": "text/plain" });
      res.end("bad signature");
      return;
    }
    let found: FakeFile | undefined;
    for (const repo of this.repos.values()) for (const c of repo.commits.values()) for (const f of c.files.values()) if (f.lfs && f.sha256 === sha) found = f;
    if (!found) {
      res.writeHead(404);
      res.end();
      return;
    }
    rec.file = url.searchParams.get("file") ?? found.path;
    if (this.injectedStatus(rec, res)) return;
    this.serveContent(rec, req, res, found, { ETag: `"${found.sha256}"`, "Accept-Ranges": "bytes" });
  }

  private serveContent(rec: RecordedRequest, req: IncomingMessage, res: ServerResponse, f: FakeFile, headers: Record<string, string>): void {
    const file = rec.file ?? f.path;
    let start = 0;
    let end = f.size - 1;
    let status = 200;
    const range = req.headers.range;
    const ignoreRange = req.method === "GET" && range && this.takeFault("ignore-range", (x) => x.file === file);
    if (range && !ignoreRange) {
      const m = /^bytes=(\d*)-(\d*)$/.exec(range);
      if (!m || (m[1] === "" && m[2] === "")) {
        res.writeHead(416, { "Content-Range": `bytes */${f.size}` });
        res.end();
        return;
      }
      if (m[1] === "") {
        start = Math.max(0, f.size - Number(m[2]));
      } else {
        start = Number(m[1]);
        if (m[2] !== "") end = Math.min(end, Number(m[2]));
      }
      if (start >= f.size || start > end) {
        res.writeHead(416, { "Content-Range": `bytes */${f.size}` });
        res.end();
        return;
      }
      status = 206;
      headers["Content-Range"] = `bytes ${start}-${end}/${f.size}`;
    }
    const length = Math.max(0, end - start + 1);
    res.writeHead(status, { ...headers, "Content-Type": "application/octet-stream", "Content-Length": String(length) });
    if (req.method === "HEAD") {
      res.end();
      return;
    }
    const isGet = req.method === "GET";
    const cut = isGet ? this.takeFault("cut", (x) => x.file === file && length >= (x.minLength ?? 0)) : undefined;
    const corrupt = isGet ? this.takeFault("corrupt", (x) => x.file === file) : undefined;
    const stall = isGet ? this.takeFault("stall", (x) => x.file === file) : undefined;
    const slow = isGet ? this.takeFault("slow", (x) => x.file === file) : undefined;
    const limit = cut ? Math.min(length, cut.afterBytes) : stall ? Math.min(length, stall.afterBytes) : length;

    const data = f.data;
    const source = (): AsyncIterable<Buffer> => {
      if (Buffer.isBuffer(data)) {
        const slice = data.subarray(start, start + length);
        return (async function* () {
          for (let i = 0; i < slice.length; i += 64 * 1024) yield slice.subarray(i, i + 64 * 1024);
        })();
      }
      return length === 0 ? (async function* () {})() : createReadStream(data.diskPath, { start, end });
    };
    void (async () => {
      let sent = 0;
      let flipped = false;
      for await (const raw of source()) {
        let chunk = raw;
        if (corrupt && !flipped && chunk.length > 0) {
          chunk = Buffer.from(chunk);
          chunk[chunk.length >> 1] = chunk[chunk.length >> 1]! ^ 0xff;
          flipped = true;
        }
        if (sent + chunk.length > limit) chunk = chunk.subarray(0, limit - sent);
        if (slow) await new Promise((r) => setTimeout(r, slow.ms));
        if (chunk.length > 0 && !res.write(chunk)) await new Promise((r) => res.once("drain", r));
        sent += chunk.length;
        rec.bytesSent = sent;
        if (sent >= limit && limit < length) break;
        if (res.destroyed) return;
      }
      if (cut) {
        // make sure what was written reached the socket, then drop the connection mid-body
        await new Promise<void>((r) => res.write("", () => r()));
        res.socket?.destroy();
        return;
      }
      if (stall) {
        await new Promise((r) => setTimeout(r, stall.ms));
        if (res.destroyed) return;
        const rest = source();
        let skipped = 0;
        for await (const raw of rest) {
          let chunk = raw;
          if (skipped < limit) {
            const drop = Math.min(limit - skipped, chunk.length);
            skipped += drop;
            chunk = chunk.subarray(drop);
          }
          if (chunk.length > 0 && !res.write(chunk)) await new Promise((r) => res.once("drain", r));
          rec.bytesSent = (rec.bytesSent ?? 0) + chunk.length;
          if (res.destroyed) return;
        }
      }
      res.end();
    })().catch(() => res.destroy());
  }
}

/** Deterministic pseudo-random bytes (xorshift32), e.g. for fake weights. */
export function deterministicBytes(size: number, seed = 1): Buffer {
  const out = Buffer.alloc(size);
  let x = seed >>> 0 || 0x9e3779b9;
  for (let i = 0; i < size; i += 4) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    if (i + 4 <= size) out.writeUInt32LE(x, i);
    else for (let k = 0; i + k < size; k++) out[i + k] = (x >>> (8 * k)) & 0xff;
  }
  return out;
}
