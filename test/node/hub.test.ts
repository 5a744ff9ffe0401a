// Checkpoint download into the Hugging Face cache, against a loopback fake Hub (real HTTP, real files).
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import { lstat, mkdir, readFile, readdir, readlink, rm, stat, utimes, writeFile } from "node:fs/promises";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { PassThrough } from "node:stream";
import { before, describe, test } from "node:test";
import { promisify } from "node:util";
import { PRESETS, generateCheckpoint } from "../../server/src/synthetic/generate.js";
import { downloadCheckpoint, type DownloadCheckpointOptions } from "../../server/src/hub/checkpoint.js";
import { resolveToken } from "../../server/src/hub/context.js";
import { HubDownloadError } from "../../server/src/hub/errors.js";
import type { DownloadProgress } from "../../server/src/hub/progress.js";
import { PRODUCT } from "../../server/src/version.js";
import { deterministicBytes, type FakeHub } from "./support/fake-hub.js";
import { useFakeHub } from "./support/hub-suite.js";

const REPO = "nvidia/C-RADIOv4-H";

let hub: FakeHub;
let root: string;
let ckptDir: string;
let commitMain: string;
const { logLines, logger, freshDir, downloadOptions } = useFakeHub("hub-test-", async (h, r) => {
  hub = h;
  root = r;
  ckptDir = join(root, "ckpt");
  await generateCheckpoint(ckptDir, PRESETS.tiny);
  // files a real repo has but a checkpoint download must not fetch
  await writeFile(join(ckptDir, "README.md"), "# C-RADIOv4-H\n");
  await writeFile(join(ckptDir, "hf_model.py"), "class RADIOModel: ...\n");
  commitMain = await hub.addRepoFromDir(REPO, ckptDir);
});

function opts(cacheDir: string, extra: Partial<DownloadCheckpointOptions> = {}): DownloadCheckpointOptions {
  return { repo: REPO, ...downloadOptions(cacheDir), ...extra };
}

async function sha256File(p: string): Promise<string> {
  return createHash("sha256")
    .update(await readFile(p))
    .digest("hex");
}

function gitSha1(data: Buffer): string {
  return createHash("sha1").update(`blob ${data.length}\0`).update(data).digest("hex");
}

const storageOf = (cacheDir: string, repo = REPO) => join(cacheDir, `models--${repo.replace("/", "--")}`);

async function closedPortEndpoint(): Promise<string> {
  const s = http.createServer();
  await new Promise<void>((r) => s.listen(0, "127.0.0.1", () => r()));
  const port = (s.address() as AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return `http://127.0.0.1:${port}`;
}

function isHubError(code: HubDownloadError["code"], ...patterns: RegExp[]) {
  return (err: unknown) => {
    assert.ok(err instanceof HubDownloadError, `expected HubDownloadError, got ${String(err)}`);
    assert.equal(err.code, code, err.message);
    for (const p of patterns) assert.match(err.message, p);
    return true;
  };
}

describe("download into the Python huggingface_hub cache layout", () => {
  test("downloads config.json, preprocessor_config.json and the safetensors, nothing else", async () => {
    const cache = await freshDir();
    const res = await downloadCheckpoint(opts(cache));
    const storage = storageOf(cache);
    assert.equal(res.commit, commitMain);
    assert.equal(res.snapshotDir, join(storage, "snapshots", commitMain));
    assert.deepEqual(res.files, ["config.json", "preprocessor_config.json", "model.safetensors"]);
    assert.deepEqual([...res.downloaded].sort(), [...res.files].sort());
    assert.equal(res.offline, false);
    assert.equal(res.cacheDir, cache);

    // layout: blobs/ refs/ snapshots/, refs/main = commit without newline
    assert.deepEqual((await readdir(storage)).sort(), ["blobs", "refs", "snapshots"]);
    assert.equal(await readFile(join(storage, "refs", "main"), "utf8"), commitMain);
    assert.deepEqual(await readdir(join(storage, "snapshots")), [commitMain]);

    // snapshot entries are relative symlinks ../../blobs/<etag>; etag = sha256 (LFS) or git sha1
    const expected = new Map<string, string>();
    for (const f of res.files) {
      const src = await readFile(join(ckptDir, f));
      const etag = f.endsWith(".safetensors") ? createHash("sha256").update(src).digest("hex") : gitSha1(src);
      expected.set(f, etag);
      const p = join(res.snapshotDir, f);
      assert.ok((await lstat(p)).isSymbolicLink(), `${f} is a symlink`);
      assert.equal(await readlink(p), `../../blobs/${etag}`);
      assert.ok((await readFile(p)).equals(src), `${f} content`);
    }
    assert.deepEqual((await readdir(join(storage, "blobs"))).sort(), [...expected.values()].sort());
    assert.deepEqual((await readdir(res.snapshotDir)).sort(), [...res.files].sort());

    // only the chosen files were touched; LFS content came from the CDN origin
    const touched = new Set(hub.fileRequests().map((r) => r.file));
    assert.deepEqual([...touched].sort(), [...res.files].sort());
    const lfsGet = hub.requests.filter((r) => r.kind === "lfs");
    assert.equal(lfsGet.length, 1);
    assert.equal(lfsGet[0]!.file, "model.safetensors");
    // no token configured -> none sent
    assert.ok(hub.requests.every((r) => r.headers.authorization === undefined));
    // the user agent carries the package version
    assert.ok(hub.requests.every((r) => r.headers["user-agent"]?.startsWith(`radio-sidecar/${PRODUCT.version};`)));
  });

  test("second call is a cache hit: no file request; a pinned commit makes no request at all", async () => {
    const cache = await freshDir();
    const first = await downloadCheckpoint(opts(cache));
    hub.clearRequests();

    const second = await downloadCheckpoint(opts(cache));
    assert.equal(second.snapshotDir, first.snapshotDir);
    assert.deepEqual(second.downloaded, []);
    assert.deepEqual(hub.fileRequests(), []);
    assert.deepEqual(
      hub.requests.map((r) => r.kind),
      ["repo-info"],
    );

    hub.clearRequests();
    const pinned = await downloadCheckpoint(opts(cache, { revision: commitMain }));
    assert.equal(pinned.snapshotDir, first.snapshotDir);
    assert.equal(pinned.offline, true);
    assert.deepEqual(pinned.files, first.files);
    assert.deepEqual(hub.requests, []);
  });

  test("reuses a cache written by Python: blob present, pointer missing -> metadata only, no GET", async () => {
    const cache = await freshDir();
    const storage = storageOf(cache);
    // what huggingface_hub leaves after downloading model.safetensors at another revision
    const src = await readFile(join(ckptDir, "model.safetensors"));
    const sha = createHash("sha256").update(src).digest("hex");
    await mkdir(join(storage, "blobs"), { recursive: true });
    await writeFile(join(storage, "blobs", sha), src);
    const res = await downloadCheckpoint(opts(cache));
    assert.ok(!res.downloaded.includes("model.safetensors"));
    // its sha256 comes from the one paths-info request; the file itself is not requested
    assert.equal(hub.requests.filter((r) => r.kind === "paths-info").length, 1);
    assert.deepEqual(
      hub.fileRequests().filter((r) => r.file === "model.safetensors"),
      [],
    );
    assert.equal(await readlink(join(res.snapshotDir, "model.safetensors")), `../../blobs/${sha}`);
  });

  test("sharded checkpoints: index + all shards", async () => {
    const repo = "test/sharded";
    const s1 = deterministicBytes(300_000, 11);
    const s2 = deterministicBytes(200_001, 12);
    const index = JSON.stringify({
      metadata: { total_size: 500_001 },
      weight_map: { a: "model-00001-of-00002.safetensors", b: "model-00002-of-00002.safetensors" },
    });
    const commit = hub.addRepo(repo, {
      "config.json": "{}",
      "model-00001-of-00002.safetensors": s1,
      "model-00002-of-00002.safetensors": s2,
      "model.safetensors.index.json": index,
      "README.md": "x",
      "onnx/model.onnx": "not wanted",
    });
    const cache = await freshDir();
    const res = await downloadCheckpoint(opts(cache, { repo }));
    assert.equal(res.commit, commit);
    assert.deepEqual(res.files, ["config.json", "model.safetensors.index.json", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]);
    assert.ok((await readFile(join(res.snapshotDir, "model-00002-of-00002.safetensors"))).equals(s2));

    // offline completeness: a missing shard is reported by name
    await rm(join(res.snapshotDir, "model-00002-of-00002.safetensors"));
    await assert.rejects(
      downloadCheckpoint(opts(cache, { repo, offline: true })),
      isHubError("not_cached", /model-00002-of-00002\.safetensors/, /test\/sharded/),
    );
    // online, it is linked again to the blob (metadata only)
    hub.clearRequests();
    await downloadCheckpoint(opts(cache, { repo }));
    assert.deepEqual(hub.fileRequests(), []);
    assert.deepEqual(
      hub.requests.map((r) => r.kind),
      ["repo-info", "paths-info"],
    );
  });

  test("small files: the same-origin resolve-cache redirect is followed (token kept), or served directly", async () => {
    const cache = await freshDir();
    const res = await downloadCheckpoint(opts(cache, { files: ["config.json"], token: "hf_abc" }));
    const cfg = hub.requests.filter((r) => r.file === "config.json");
    assert.deepEqual(
      cfg.map((r) => `${r.method} ${r.status} ${r.url.startsWith("/api/resolve-cache/") ? "cache" : "resolve"}`),
      ["GET 307 resolve", "GET 200 cache"],
    );
    assert.ok(cfg.every((r) => r.headers.authorization === "Bearer hf_abc"));
    assert.ok((await readFile(join(res.snapshotDir, "config.json"))).equals(await readFile(join(ckptDir, "config.json"))));

    hub.resolveCacheRedirect = false;
    try {
      hub.clearRequests();
      await downloadCheckpoint(opts(await freshDir(), { files: ["config.json"] }));
      assert.deepEqual(
        hub.requests.filter((r) => r.file === "config.json").map((r) => `${r.method} ${r.status}`),
        ["GET 200"],
      );
    } finally {
      hub.resolveCacheRedirect = true;
    }
  });

  test("explicit files and globs", async () => {
    const cache = await freshDir();
    const res = await downloadCheckpoint(opts(cache, { files: ["config.json", "*.md"] }));
    assert.deepEqual(res.files, ["config.json", "README.md"]);
    assert.deepEqual((await readdir(res.snapshotDir)).sort(), ["README.md", "config.json"]);
    await assert.rejects(downloadCheckpoint(opts(cache, { files: ["nope.bin"] })), isHubError("entry_not_found", /nope\.bin/, /C-RADIOv4-H/));
    await assert.rejects(downloadCheckpoint(opts(cache, { files: ["../evil"] })), TypeError);
  });
});

describe("resume", () => {
  const weights = () => readFile(join(ckptDir, "model.safetensors"));

  test("an interrupted transfer leaves blobs/<sha256>.incomplete; the next call resumes with Range", async () => {
    const cache = await freshDir();
    const src = await weights();
    const sha = createHash("sha256").update(src).digest("hex");
    const incomplete = join(storageOf(cache), "blobs", `${sha}.incomplete`);
    hub.fault({ kind: "cut", file: "model.safetensors", afterBytes: 1_000_000 });

    await assert.rejects(downloadCheckpoint(opts(cache, { retries: 0 })), isHubError("network", /model\.safetensors/, /resume/, /\.incomplete/));
    const partial = (await stat(incomplete)).size;
    assert.ok(partial > 0 && partial < src.length, `partial size ${partial}`);
    assert.ok(!existsSync(join(storageOf(cache), "blobs", sha)), "no blob for a partial file");
    assert.ok(!existsSync(join(storageOf(cache), "snapshots", commitMain, "model.safetensors")));

    hub.clearRequests();
    const res = await downloadCheckpoint(opts(cache, { retries: 0 }));
    const gets = hub.contentRequests().filter((r) => r.file === "model.safetensors");
    assert.equal(gets.length, 1);
    assert.equal(gets[0]!.headers.range, `bytes=${partial}-${src.length - 1}`);
    assert.equal(gets[0]!.status, 206);
    assert.equal(await sha256File(join(res.snapshotDir, "model.safetensors")), sha);
    assert.ok(!existsSync(incomplete));
    assert.ok(logLines.some((l) => /resuming model\.safetensors/.test(l)));
  });

  test("a dropped connection is resumed within the same call", async () => {
    const cache = await freshDir();
    const src = await weights();
    hub.fault({ kind: "cut", file: "model.safetensors", afterBytes: 700_000 });
    const res = await downloadCheckpoint(opts(cache));
    const gets = hub.contentRequests().filter((r) => r.file === "model.safetensors");
    assert.equal(gets.length, 2);
    assert.equal(gets[0]!.headers.range, undefined);
    assert.match(String(gets[1]!.headers.range), new RegExp(`^bytes=[1-9]\\d*-${src.length - 1}$`));
    assert.ok((await readFile(join(res.snapshotDir, "model.safetensors"))).equals(src));
    assert.ok(logLines.some((l) => l.startsWith("WARN download of model.safetensors interrupted")));
  });

  test("a stalled transfer is aborted and resumed", async () => {
    const cache = await freshDir();
    const src = await weights();
    hub.fault({ kind: "stall", file: "model.safetensors", afterBytes: 300_000, ms: 3_000 });
    const res = await downloadCheckpoint(opts(cache, { stallTimeoutMs: 300 }));
    const gets = hub.contentRequests().filter((r) => r.file === "model.safetensors");
    assert.equal(gets.length, 2);
    assert.match(String(gets[1]!.headers.range), new RegExp(`^bytes=[1-9]\\d*-${src.length - 1}$`));
    assert.ok((await readFile(join(res.snapshotDir, "model.safetensors"))).equals(src));
  });

  test("resumes a partial file left by another process; a server ignoring Range restarts cleanly", async () => {
    const cache = await freshDir();
    const src = await weights();
    const sha = createHash("sha256").update(src).digest("hex");
    const blobs = join(storageOf(cache), "blobs");
    await mkdir(blobs, { recursive: true });
    await writeFile(join(blobs, `${sha}.incomplete`), src.subarray(0, 123_457));
    const res = await downloadCheckpoint(opts(cache));
    const gets = hub.contentRequests().filter((r) => r.file === "model.safetensors");
    assert.deepEqual(
      gets.map((r) => r.headers.range),
      [`bytes=123457-${src.length - 1}`],
    );
    assert.equal(await sha256File(join(res.snapshotDir, "model.safetensors")), sha);

    const cache2 = await freshDir();
    const blobs2 = join(storageOf(cache2), "blobs");
    await mkdir(blobs2, { recursive: true });
    await writeFile(join(blobs2, `${sha}.incomplete`), src.subarray(0, 50_000));
    hub.fault({ kind: "ignore-range", file: "model.safetensors" });
    const res2 = await downloadCheckpoint(opts(cache2));
    assert.equal(await sha256File(join(res2.snapshotDir, "model.safetensors")), sha);
  });

  test("an aborted call keeps the partial file and rejects with the abort reason", async () => {
    const cache = await freshDir();
    const ac = new AbortController();
    await assert.rejects(
      downloadCheckpoint(
        opts(cache, {
          signal: ac.signal,
          onProgress: (p) => {
            if (p.file === "model.safetensors" && p.fileBytes > 500_000) ac.abort(new Error("user cancelled"));
          },
        }),
      ),
      /user cancelled/,
    );
    const blobs = await readdir(join(storageOf(cache), "blobs"));
    assert.equal(blobs.filter((b) => b.endsWith(".incomplete")).length, 1);
    const res = await downloadCheckpoint(opts(cache));
    const src = await readFile(join(ckptDir, "model.safetensors"));
    assert.ok((await readFile(join(res.snapshotDir, "model.safetensors"))).equals(src));
  });

  test("a stale partial file (wrong bytes) fails the checksum once, then downloads from scratch", async () => {
    const cache = await freshDir();
    const src = await weights();
    const sha = createHash("sha256").update(src).digest("hex");
    const blobs = join(storageOf(cache), "blobs");
    await mkdir(blobs, { recursive: true });
    await writeFile(join(blobs, `${sha}.incomplete`), deterministicBytes(200_000, 99));
    const res = await downloadCheckpoint(opts(cache));
    assert.equal(await sha256File(join(res.snapshotDir, "model.safetensors")), sha);
    const gets = hub.contentRequests().filter((r) => r.file === "model.safetensors");
    assert.deepEqual(
      gets.map((r) => r.headers.range),
      [`bytes=200000-${src.length - 1}`, undefined],
    );
    assert.ok(logLines.some((l) => /checksum mismatch after resuming/.test(l)));
  });
});

describe("checksum", () => {
  test("corrupted LFS bytes with the right etag are rejected and not cached", async () => {
    const cache = await freshDir();
    const src = await readFile(join(ckptDir, "model.safetensors"));
    const sha = createHash("sha256").update(src).digest("hex");
    hub.fault({ kind: "corrupt", file: "model.safetensors" });
    await assert.rejects(downloadCheckpoint(opts(cache)), isHubError("checksum", /model\.safetensors/, new RegExp(sha), /deleted/));
    const blobs = await readdir(join(storageOf(cache), "blobs"));
    assert.ok(!blobs.includes(sha), "corrupted blob not stored");
    assert.ok(!blobs.some((b) => b.endsWith(".incomplete")), "no partial left");
    assert.ok(!existsSync(join(storageOf(cache), "snapshots", commitMain, "model.safetensors")));

    // the next try (good data) succeeds
    const res = await downloadCheckpoint(opts(cache));
    assert.equal(await sha256File(join(res.snapshotDir, "model.safetensors")), sha);
  });

  test("small (non-LFS) files are checked against their git blob sha1", async () => {
    const cache = await freshDir();
    hub.fault({ kind: "corrupt", file: "config.json" });
    await assert.rejects(downloadCheckpoint(opts(cache)), isHubError("checksum", /config\.json/, /git-sha1/));
  });
});

describe("offline and network failures", () => {
  test("offline mode resolves from the cache (option or HF_HUB_OFFLINE=1) without any request", async () => {
    const cache = await freshDir();
    const online = await downloadCheckpoint(opts(cache));
    hub.clearRequests();
    const dead = await closedPortEndpoint();

    const a = await downloadCheckpoint(opts(cache, { offline: true, endpoint: dead }));
    assert.deepEqual(
      { dir: a.snapshotDir, commit: a.commit, files: a.files, offline: a.offline },
      { dir: online.snapshotDir, commit: commitMain, files: online.files, offline: true },
    );

    process.env.HF_HUB_OFFLINE = "1";
    const b = await downloadCheckpoint(opts(cache, { endpoint: dead }));
    assert.equal(b.snapshotDir, online.snapshotDir);
    const c = await downloadCheckpoint(opts(cache, { endpoint: dead, revision: commitMain }));
    assert.equal(c.snapshotDir, online.snapshotDir);
    assert.deepEqual(hub.requests, []);
  });

  test("offline mode: clear error naming repo, revision and what is missing", async () => {
    const empty = await freshDir();
    await assert.rejects(
      downloadCheckpoint(opts(empty, { offline: true })),
      isHubError("not_cached", /nvidia\/C-RADIOv4-H/, /'main'/, /HF_HUB_OFFLINE/, new RegExp(empty.replace(/[/\\.]/g, "\\$&"))),
    );
    const partial = await freshDir();
    await downloadCheckpoint(opts(partial, { files: ["config.json"] }));
    await assert.rejects(downloadCheckpoint(opts(partial, { offline: true })), isHubError("not_cached", /incomplete/, /\*\.safetensors/));
    await assert.rejects(downloadCheckpoint(opts(partial, { offline: true, revision: "v2" })), isHubError("not_cached", /'v2'/, /refs\/v2/));
    assert.equal(hub.contentRequests().length, 1); // the config.json download only
  });

  test("hub unreachable: error says HF_HUB_OFFLINE / HF_ENDPOINT; falls back to a complete cached snapshot", async () => {
    const dead = await closedPortEndpoint();
    const empty = await freshDir();
    await assert.rejects(
      downloadCheckpoint(opts(empty, { endpoint: dead })),
      isHubError("network", /HF_HUB_OFFLINE/, /HF_ENDPOINT/, new RegExp(dead.replace(/[.]/g, "\\.")), /C-RADIOv4-H@main/),
    );

    const cache = await freshDir();
    await downloadCheckpoint(opts(cache));
    const res = await downloadCheckpoint(opts(cache, { endpoint: dead }));
    assert.equal(res.offline, true);
    assert.equal(res.commit, commitMain);
    assert.ok(logLines.some((l) => l.startsWith("WARN Cannot reach") && /Using the cached snapshot/.test(l)));
  });

  test("5xx on repo info is retried", async () => {
    const cache = await freshDir();
    hub.fault({ kind: "status", status: 503, route: "repo-info" });
    const res = await downloadCheckpoint(opts(cache));
    assert.equal(res.commit, commitMain);
    assert.equal(hub.requests.filter((r) => r.kind === "repo-info").length, 2);
  });

  test("hub down (5xx after the retries): falls back to a complete cached snapshot, as huggingface_hub does", async () => {
    const cache = await freshDir();
    await downloadCheckpoint(opts(cache));
    hub.fault({ kind: "status", status: 503, route: "repo-info", times: 10 });
    const res = await downloadCheckpoint(opts(cache));
    assert.equal(res.offline, true);
    assert.equal(res.commit, commitMain);
    assert.ok(logLines.some((l) => l.startsWith("WARN HTTP 503") && /Using the cached snapshot/.test(l)));

    const empty = await freshDir();
    await assert.rejects(downloadCheckpoint(opts(empty)), isHubError("http", /HTTP 503/, /Nothing usable is cached/));
  });
});

describe("revisions", () => {
  const repo = "nvidia/C-RADIOv4-SO400M";
  let v1: string;
  let v2: string;
  const cfg = '{"version": "c-radio_v4-so400m"}';
  const w1 = deterministicBytes(400_000, 1);
  const w2 = deterministicBytes(400_000, 2);

  before(() => {
    v1 = hub.addRepo(repo, { "config.json": cfg, "model.safetensors": w1 });
    v2 = hub.addRepo(repo, { "config.json": cfg, "model.safetensors": w2 }); // main moves to v2
    assert.notEqual(v1, v2);
  });

  test("a revision pinned by commit gets that commit's files; refs only for branches", async () => {
    const cache = await freshDir();
    const storage = storageOf(cache, repo);
    const old = await downloadCheckpoint(opts(cache, { repo, revision: v1 }));
    assert.equal(old.commit, v1);
    assert.equal(old.snapshotDir, join(storage, "snapshots", v1));
    assert.ok((await readFile(join(old.snapshotDir, "model.safetensors"))).equals(w1));
    assert.ok(!existsSync(join(storage, "refs", v1)), "no ref for a commit");

    const cur = await downloadCheckpoint(opts(cache, { repo }));
    assert.equal(cur.commit, v2);
    assert.equal(await readFile(join(storage, "refs", "main"), "utf8"), v2);
    assert.ok((await readFile(join(cur.snapshotDir, "model.safetensors"))).equals(w2));
    // identical config.json is one blob shared by both snapshots
    assert.equal(await readlink(join(old.snapshotDir, "config.json")), await readlink(join(cur.snapshotDir, "config.json")));
    assert.equal((await readdir(join(storage, "blobs"))).length, 3);
  });

  test("a moved branch updates refs/<branch>; other branches get their own ref file", async () => {
    const cache = await freshDir();
    const storage = storageOf(cache, repo);
    hub.setBranch(repo, "main", v1);
    try {
      await downloadCheckpoint(opts(cache, { repo }));
      assert.equal(await readFile(join(storage, "refs", "main"), "utf8"), v1);
    } finally {
      hub.setBranch(repo, "main", v2);
    }
    const res = await downloadCheckpoint(opts(cache, { repo }));
    assert.equal(res.commit, v2);
    assert.equal(await readFile(join(storage, "refs", "main"), "utf8"), v2);

    hub.setBranch(repo, "refs/pr/1", v1);
    const pr = await downloadCheckpoint(opts(cache, { repo, revision: "refs/pr/1" }));
    assert.equal(pr.commit, v1);
    assert.equal(await readFile(join(storage, "refs", "refs", "pr", "1"), "utf8"), v1);
    assert.ok(
      hub.requests.some((r) => r.kind === "repo-info" && r.url.includes("/revision/refs%2Fpr%2F1")),
      "revision is URL-encoded as one segment",
    );
  });

  test("unknown revision -> revision_not_found", async () => {
    await assert.rejects(
      downloadCheckpoint(opts(await freshDir(), { repo, revision: "no-such-branch" })),
      isHubError("revision_not_found", /'no-such-branch'/, /C-RADIOv4-SO400M/),
    );
  });
});

describe("authentication and not-found errors", () => {
  const priv = "test/private";
  const gated = "test/gated";
  before(() => {
    hub.addRepo(priv, { "config.json": "{}", "model.safetensors": deterministicBytes(100_000, 5) }, { privateToken: "hf_secret" });
    hub.addRepo(gated, { "config.json": "{}", "model.safetensors": deterministicBytes(100_000, 6) }, { gatedToken: "hf_granted" });
  });

  test("private repo: no token -> unauthorized error saying to set HF_TOKEN", async () => {
    await assert.rejects(downloadCheckpoint(opts(await freshDir(), { repo: priv })), isHubError("unauthorized", /HTTP 401/, /HF_TOKEN/, /No token was sent/));
    await assert.rejects(
      downloadCheckpoint(opts(await freshDir(), { repo: priv, token: "hf_wrong" })),
      isHubError("unauthorized", /token was sent \(from the token option\)/),
    );
  });

  test("token option is sent as Bearer to the Hub, never to the CDN", async () => {
    const res = await downloadCheckpoint(opts(await freshDir(), { repo: priv, token: "hf_secret" }));
    assert.equal(res.files.length, 2);
    const hubReqs = hub.requests.filter((r) => r.server === "hub");
    const cdnReqs = hub.requests.filter((r) => r.server === "cdn");
    assert.ok(hubReqs.length >= 3 && cdnReqs.length === 1);
    for (const r of hubReqs) assert.equal(r.headers.authorization, "Bearer hf_secret");
    for (const r of cdnReqs) assert.equal(r.headers.authorization, undefined);
  });

  test("token from HF_TOKEN, HF_TOKEN_PATH and $HF_HOME/token", async () => {
    process.env.HF_TOKEN = "hf_secret";
    await downloadCheckpoint(opts(await freshDir(), { repo: priv }));
    delete process.env.HF_TOKEN;

    const tokenFile = join(root, "my-token");
    await writeFile(tokenFile, "hf_secret\n");
    process.env.HF_TOKEN_PATH = tokenFile;
    await downloadCheckpoint(opts(await freshDir(), { repo: priv }));
    delete process.env.HF_TOKEN_PATH;

    const home = await freshDir("hf-home");
    process.env.HF_HOME = home;
    await writeFile(join(home, "token"), "hf_secret");
    assert.deepEqual(await resolveToken(), { token: "hf_secret", source: join(home, "token") });
    const res = await downloadCheckpoint(opts(await freshDir(), { repo: priv }));
    assert.equal(res.files.length, 2);
    // token: false disables the implicit token
    await assert.rejects(downloadCheckpoint(opts(await freshDir(), { repo: priv, token: false })), isHubError("unauthorized"));
  });

  test("gated repo: error says to request access and set HF_TOKEN", async () => {
    await assert.rejects(
      downloadCheckpoint(opts(await freshDir(), { repo: gated })),
      isHubError("gated", /gated/, /request access/i, /HF_TOKEN/, new RegExp(`${hub.endpoint}/test/gated`)),
    );
    await assert.rejects(downloadCheckpoint(opts(await freshDir(), { repo: gated, token: "hf_other" })), isHubError("gated", /HTTP 403/));
    const res = await downloadCheckpoint(opts(await freshDir(), { repo: gated, token: "hf_granted" }));
    assert.equal(res.files.length, 2);
  });

  test("unknown repo: 401 without a token (may be private), repo_not_found with one", async () => {
    await assert.rejects(
      downloadCheckpoint(opts(await freshDir(), { repo: "nvidia/does-not-exist" })),
      isHubError("unauthorized", /nvidia\/does-not-exist/, /does not exist/, /HF_TOKEN/),
    );
    await assert.rejects(
      downloadCheckpoint(opts(await freshDir(), { repo: "nvidia/does-not-exist", token: "hf_x" })),
      isHubError("repo_not_found", /nvidia\/does-not-exist/, /not found/),
    );
  });

  test("a repo without safetensors is reported, not half-downloaded", async () => {
    hub.addRepo("test/no-weights", { "config.json": "{}", "pytorch_model.bin": "x" });
    await assert.rejects(
      downloadCheckpoint(opts(await freshDir(), { repo: "test/no-weights" })),
      isHubError("entry_not_found", /\*\.safetensors/, /pytorch_model\.bin/),
    );
  });

  test("invalid repo ids and revisions are rejected before any request", async () => {
    for (const repo of ["../x", "a/b/c", "nvidia/--x", ""]) {
      await assert.rejects(downloadCheckpoint(opts(await freshDir(), { repo })), TypeError, repo);
    }
    await assert.rejects(downloadCheckpoint(opts(await freshDir(), { revision: "../../etc" })), TypeError);
    assert.deepEqual(hub.requests, []);
  });
});

describe("fake hub", () => {
  test("serves @huggingface/hub's modelInfo / pathsInfo", async () => {
    const lib = await import("@huggingface/hub");
    const [info] = await lib.pathsInfo({ repo: REPO, paths: ["model.safetensors"], hubUrl: hub.endpoint });
    assert.equal(info?.lfs?.oid, hub.fileInfo(REPO, "model.safetensors").sha256);
    const model = await lib.modelInfo({ name: REPO, hubUrl: hub.endpoint, additionalFields: ["sha", "filePaths"] });
    assert.equal(model.sha, commitMain);
    assert.deepEqual(model.filePaths.sort(), ["README.md", "config.json", "hf_model.py", "model.safetensors", "preprocessor_config.json"]);
  });
});

describe("environment", () => {
  test("HF_HOME, HF_HUB_CACHE and HF_ENDPOINT are honoured", async () => {
    const home = await freshDir("home");
    process.env.HF_HOME = home;
    process.env.HF_ENDPOINT = `${hub.endpoint}/`;
    const a = await downloadCheckpoint({ repo: REPO, progress: "none", logger, files: ["config.json"] });
    assert.equal(a.cacheDir, join(home, "hub"));
    assert.ok(a.snapshotDir.startsWith(join(home, "hub", "models--nvidia--C-RADIOv4-H")));

    const hubCache = await freshDir("hub-cache");
    process.env.HF_HUB_CACHE = hubCache;
    const b = await downloadCheckpoint({ repo: REPO, progress: "none", logger, files: ["config.json"] });
    assert.equal(b.cacheDir, hubCache);
    assert.ok(existsSync(join(hubCache, "models--nvidia--C-RADIOv4-H", "refs", "main")));
  });
});

describe("progress", () => {
  test("onProgress reports monotonic bytes up to the total", async () => {
    const events: DownloadProgress[] = [];
    await downloadCheckpoint(opts(await freshDir(), { onProgress: (p) => events.push(p) }));
    assert.ok(events.length > 3);
    const last = events.at(-1)!;
    assert.equal(last.done, true);
    assert.equal(last.bytes, last.total);
    assert.equal(last.filesDone, 3);
    const weightsSize = (await stat(join(ckptDir, "model.safetensors"))).size;
    assert.ok(last.total > weightsSize);
    for (let i = 1; i < events.length; i++) assert.ok(events[i]!.bytes >= events[i - 1]!.bytes);
    assert.ok(events.some((e) => e.file === "model.safetensors" && e.fileBytes > 0 && e.fileBytes < e.fileTotal));
  });

  test("non-TTY: plain lines every 10%", async () => {
    await downloadCheckpoint(opts(await freshDir(), { progress: "log" }));
    const pct = logLines
      .map((l) => /: (\d+)% \(/.exec(l)?.[1])
      .filter((x): x is string => x !== undefined)
      .map(Number);
    assert.ok(pct.length >= 5 && pct.length <= 12, `lines: ${logLines.join("\n")}`);
    assert.equal(pct.at(-1), 100);
    assert.ok(logLines.some((l) => /^download nvidia\/C-RADIOv4-H@[0-9a-f]{7}: 3 file\(s\)/.test(l)));
    assert.ok(logLines.some((l) => /: done \(/.test(l)));

    // default 'auto' on a non-TTY stream writes the same lines there
    const out = new PassThrough();
    let text = "";
    out.on("data", (c: Buffer) => (text += c.toString()));
    await downloadCheckpoint({ ...opts(await freshDir()), progress: "auto", progressStream: out, logger: undefined });
    assert.match(text, /download nvidia\/C-RADIOv4-H@[0-9a-f]{7}: 100% \(/);
  });

  test("bar mode renders a cli-progress bar", async () => {
    const out = new PassThrough();
    let text = "";
    out.on("data", (c: Buffer) => (text += c.toString()));
    await downloadCheckpoint(opts(await freshDir(), { progress: "bar", progressStream: out }));
    assert.match(text, /Downloading nvidia\/C-RADIOv4-H@[0-9a-f]{7}/);
  });
});

describe("concurrency", () => {
  test("concurrent calls share one transfer per file", async () => {
    const cache = await freshDir();
    const [a, b] = await Promise.all([downloadCheckpoint(opts(cache)), downloadCheckpoint(opts(cache))]);
    assert.equal(a.snapshotDir, b.snapshotDir);
    const gets = hub.contentRequests().filter((r) => r.file === "model.safetensors");
    assert.equal(gets.length, 1);
    const src = await readFile(join(ckptDir, "model.safetensors"));
    assert.ok((await readFile(join(a.snapshotDir, "model.safetensors"))).equals(src));
  });

  test("two processes fetching the same file into one cache: one transfers it, the other waits and reuses it", async () => {
    const cache = await freshDir();
    const src = await readFile(join(ckptDir, "model.safetensors"));
    const sha = createHash("sha256").update(src).digest("hex");
    const incomplete = join(storageOf(cache), "blobs", `${sha}.incomplete`);
    // about 3 s per full transfer, so that the second process starts while the first one is writing
    hub.fault({ kind: "slow", file: "model.safetensors", ms: 3000 / Math.ceil(src.length / 65536), times: 4 });
    const cli = [process.execPath, "--import", "tsx", join(process.cwd(), "server", "src", "cli.ts")];
    const fetchFile = () =>
      promisify(execFile)(cli[0]!, [...cli.slice(1), "fetch-adaptor", "--checkpoint", REPO, "--file", "model.safetensors", "--cache-dir", cache], {
        env: { ...process.env, HF_ENDPOINT: hub.endpoint },
        timeout: 60_000,
      });
    const first = fetchFile();
    const t0 = Date.now();
    while (((await stat(incomplete).catch(() => undefined))?.size ?? 0) < 200_000 && Date.now() - t0 < 30_000) await new Promise((r) => setTimeout(r, 20));
    const second = fetchFile();
    const results = await Promise.allSettled([first, second]);
    for (const r of results) assert.equal(r.status, "fulfilled", r.status === "rejected" ? String((r.reason as { stderr?: string }).stderr ?? r.reason) : "");
    assert.match(
      (results[1] as PromiseFulfilledResult<{ stderr: string }>).value.stderr,
      /waiting for process \d+ on .*, which is downloading model\.safetensors/,
    );
    assert.equal(await sha256File(join(storageOf(cache), "blobs", sha)), sha);
    assert.ok(!existsSync(incomplete));
    const sent = hub.contentRequests().filter((r) => r.file === "model.safetensors");
    assert.equal(sent.length, 1, `transfers: ${sent.map((r) => r.headers.range ?? "whole").join(", ")}`);
  });

  test("a lock left by a killed process is taken over once it is stale", async () => {
    const cache = await freshDir();
    const sha = createHash("sha256")
      .update(await readFile(join(ckptDir, "model.safetensors")))
      .digest("hex");
    const lock = join(cache, ".locks", "models--nvidia--C-RADIOv4-H", `${sha}.incomplete.lock`);
    await mkdir(lock, { recursive: true });
    const old = new Date(Date.now() - 60_000);
    await utimes(lock, old, old);
    const res = await downloadCheckpoint(opts(cache));
    assert.equal(await sha256File(join(res.snapshotDir, "model.safetensors")), sha);
    assert.ok(!existsSync(lock));
  });
});

// Cross-check with the real Python client when one is available (HUB_TEST_PYTHON, or the repo's .venv).
const pythonCandidates = [process.env.HUB_TEST_PYTHON, join(process.cwd(), ".venv", "bin", "python")].filter((p): p is string => !!p && existsSync(p));
async function findPython(): Promise<string | undefined> {
  for (const py of pythonCandidates) {
    try {
      await promisify(execFile)(py, ["-c", "import huggingface_hub"]);
      return py;
    } catch {
      // not this one
    }
  }
  return undefined;
}
const python = await findPython();

describe("interop with Python huggingface_hub", { skip: python ? false : "no python with huggingface_hub" }, () => {
  const run = async (script: string, env: Record<string, string>) => {
    const { stdout } = await promisify(execFile)(python!, ["-c", script], {
      env: { ...process.env, HF_HUB_DISABLE_TELEMETRY: "1", HF_HUB_DISABLE_XET: "1", ...env },
    });
    return stdout.trim();
  };
  const patterns = `["config.json", "preprocessor_config.json", "*.safetensors", "*.safetensors.index.json"]`;

  test("a snapshot downloaded by Python is a cache hit here", async () => {
    const cache = await freshDir();
    const pyDir = await run(`from huggingface_hub import snapshot_download; print(snapshot_download("${REPO}", allow_patterns=${patterns}))`, {
      HF_HUB_CACHE: cache,
      HF_ENDPOINT: hub.endpoint,
    });
    hub.clearRequests();
    const res = await downloadCheckpoint(opts(cache));
    assert.equal(res.snapshotDir, pyDir);
    assert.deepEqual(hub.fileRequests(), []);
  });

  test("a snapshot downloaded here is used by Python offline, and its files match", async () => {
    const cache = await freshDir();
    const res = await downloadCheckpoint(opts(cache));
    const out = await run(
      [
        "import json",
        "from huggingface_hub import snapshot_download, hf_hub_download, scan_cache_dir",
        `d = snapshot_download("${REPO}", allow_patterns=${patterns})`,
        `f = hf_hub_download("${REPO}", "model.safetensors")`,
        `info = scan_cache_dir("${cache}")`,
        "repos = [(r.repo_id, sorted(rev.commit_hash for rev in r.revisions), r.nb_files) for r in info.repos]",
        "print(json.dumps({'dir': d, 'file': f, 'repos': repos, 'warnings': [str(w) for w in info.warnings]}))",
      ].join("\n"),
      { HF_HUB_CACHE: cache, HF_HUB_OFFLINE: "1" },
    );
    const parsed = JSON.parse(out) as { dir: string; file: string; repos: [string, string[], number][]; warnings: string[] };
    assert.equal(parsed.dir, res.snapshotDir);
    assert.equal(parsed.file, join(res.snapshotDir, "model.safetensors"));
    assert.deepEqual(parsed.repos, [[REPO, [commitMain], 3]]);
    assert.deepEqual(parsed.warnings, []);
  });

  test("Python completes a download interrupted here (huggingface_hub 2.x restarts it in its own temp file)", async () => {
    const cache = await freshDir();
    hub.fault({ kind: "cut", file: "model.safetensors", afterBytes: 1_000_000 });
    await assert.rejects(downloadCheckpoint(opts(cache, { retries: 0 })), isHubError("network"));
    const pyFile = await run(`from huggingface_hub import hf_hub_download; print(hf_hub_download("${REPO}", "model.safetensors"))`, {
      HF_HUB_CACHE: cache,
      HF_ENDPOINT: hub.endpoint,
    });
    const src = await readFile(join(ckptDir, "model.safetensors"));
    assert.ok((await readFile(pyFile)).equals(src));
    // and the rest of the checkpoint then comes from that cache
    hub.clearRequests();
    const res = await downloadCheckpoint(opts(cache));
    assert.equal(join(res.snapshotDir, "model.safetensors"), pyFile);
    assert.ok(!hub.contentRequests().some((r) => r.file === "model.safetensors"));
  });
});
