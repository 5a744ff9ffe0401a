// Text tower subset (ranged reads of the SigLIP2 shards) and the torch.hub adaptor checkpoint, against the
// loopback fake Hub serving the shared upstream fixture's two repo layouts (read in place, never copied).
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import { readFile, readdir, rm } from "node:fs/promises";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, test } from "node:test";
import { promisify } from "node:util";
import { downloadAdaptorCheckpoint } from "../../server/src/hub/adaptor-checkpoint.js";
import { HubDownloadError } from "../../server/src/hub/errors.js";
import type { DownloadProgress } from "../../server/src/hub/progress.js";
import { isTextTowerTensor } from "../../server/src/checkpoint/siglip.js";
import { SUBSETS_DIR, downloadTextTower, type DownloadTextTowerOptions } from "../../server/src/hub/text-tower.js";
import { KNOWN_CHECKPOINTS, SIGLIP2_G_TEXT_TOWER } from "../../server/src/checkpoint/catalogue.js";
import { TEXT_SUBSET_FILE } from "../../server/src/checkpoint/siglip.js";
import { SafetensorsCheckpoint, SafetensorsFile } from "../../server/src/checkpoint/safetensors.js";
import type { FakeHub } from "./support/fake-hub.js";
import { useFakeHub } from "./support/hub-suite.js";

const repoRoot = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const FIXTURE = join(repoRoot, "..", "shared", "fixtures", "upstream-adaptor-golden");
const SIGLIP_DIR = join(FIXTURE, "siglip2-giant-opt-patch16-384");
const RADIO_DIR = join(FIXTURE, "C-RADIOv4-H");
const skip = existsSync(SIGLIP_DIR) && existsSync(RADIO_DIR) ? false : `shared fixture missing: ${FIXTURE}`;

const TEXT_REPO = SIGLIP2_G_TEXT_TOWER.repo;
const RADIO = KNOWN_CHECKPOINTS["c-radio_v4-h"]!;
const SHARD1 = "model-00001-of-00002.safetensors";
const SHARD2 = "model-00002-of-00002.safetensors";
const PRIVATE_REPO = "acme/siglip-private";

let hub: FakeHub;
let textCommit: string;
const { logLines, logger, freshDir, downloadOptions } = useFakeHub("hub-text-test-", async (h) => {
  hub = h;
  if (skip) return;
  textCommit = await hub.addRepoFromDir(TEXT_REPO, SIGLIP_DIR);
  await hub.addRepoFromDir(RADIO.repo, RADIO_DIR);
  await hub.addRepoFromDir(PRIVATE_REPO, SIGLIP_DIR, { privateToken: "hf_right" });
});

function opts(cacheDir: string, extra: Partial<DownloadTextTowerOptions> = {}): DownloadTextTowerOptions {
  return { ...downloadOptions(cacheDir), ...extra };
}

const sha256 = (b: Buffer) => createHash("sha256").update(b).digest("hex");

/** every text tensor of the fixture, with the same dtype, shape and bytes, and nothing else */
function assertSubsetMatches(path: string): void {
  const original = new SafetensorsCheckpoint([join(SIGLIP_DIR, SHARD1), join(SIGLIP_DIR, SHARD2)]);
  const subset = SafetensorsFile.open(path);
  try {
    const want = [...original.tensors.keys()].filter(isTextTowerTensor).sort();
    assert.ok(want.includes("logit_scale") && want.includes("logit_bias") && want.length > 10);
    assert.deepEqual([...subset.tensors.keys()].sort(), want);
    for (const name of want) {
      const a = original.tensors.get(name)!;
      const b = subset.tensors.get(name)!;
      assert.equal(b.dtype, a.dtype, name);
      assert.deepEqual(b.shape, a.shape, name);
      assert.ok(original.readBytes(name).equals(subset.readBytes(name)), `${name}: bytes differ`);
    }
  } finally {
    subset.close();
    original.close();
  }
}

describe("catalogue", () => {
  test("both v4 models name their torch.hub adaptor file and the siglip2-g-384 text tower", () => {
    assert.equal(KNOWN_CHECKPOINTS["c-radio_v4-h"]!.adaptorCheckpoint, "c-radio_v4-h_half.pth.tar");
    assert.equal(KNOWN_CHECKPOINTS["c-radio_v4-so400m"]!.adaptorCheckpoint, "c-radio_v4-so400m_half.pth.tar");
    for (const m of Object.values(KNOWN_CHECKPOINTS)) {
      assert.equal(m.textTower?.repo, "google/siglip2-giant-opt-patch16-384");
      assert.equal(m.textTower?.teacherModel, "siglip2-g-384");
    }
  });
});

describe("text tower subset", { skip }, () => {
  test("fetches only the text tensors through the shard index, byte-identical, fewer bytes than the shards", async () => {
    const cache = await freshDir();
    const progress: DownloadProgress[] = [];
    const res = await downloadTextTower(opts(cache, { onProgress: (p) => progress.push(p) }));
    const storage = join(cache, `models--${TEXT_REPO.replace("/", "--")}`);
    assert.equal(res.repo, TEXT_REPO);
    assert.equal(res.commit, textCommit);
    assert.equal(res.dir, join(storage, SUBSETS_DIR, textCommit));
    assert.equal(res.weightsPath, join(res.dir, TEXT_SUBSET_FILE));
    assert.equal(res.snapshotDir, join(storage, "snapshots", textCommit));
    assert.equal(res.offline, false);
    assertSubsetMatches(res.weightsPath);
    assert.deepEqual(res.tensors, [...SafetensorsFile.open(res.weightsPath).tensors.keys()].sort());

    // the folder: small files (links into the snapshot) + the subset, no weights index, no leftovers
    assert.deepEqual((await readdir(res.dir)).sort(), ["config.json", "special_tokens_map.json", TEXT_SUBSET_FILE, "tokenizer.json", "tokenizer_config.json"]);
    for (const [p, f] of [
      [res.configPath, "config.json"],
      [res.tokenizerPath, "tokenizer.json"],
      [res.tokenizerConfigPath, "tokenizer_config.json"],
      [res.specialTokensMapPath, "special_tokens_map.json"],
    ] as const) {
      assert.equal(p, join(res.dir, f));
      assert.ok((await readFile(p)).equals(await readFile(join(SIGLIP_DIR, f))), f);
    }
    // the snapshot holds repo files only: the small ones, not the shards, not the subset
    assert.deepEqual((await readdir(res.snapshotDir)).sort(), [
      "config.json",
      "model.safetensors.index.json",
      "special_tokens_map.json",
      "tokenizer.json",
      "tokenizer_config.json",
    ]);

    // bytes: shard 2 (vision only) is never read; shard 1 only its header and the text span
    const shardBytes = (await readFile(join(SIGLIP_DIR, SHARD1))).length + (await readFile(join(SIGLIP_DIR, SHARD2))).length;
    const weightBytes = hub.requests.filter((r) => r.file === SHARD1 || r.file === SHARD2).reduce((a, r) => a + (r.bytesSent ?? 0), 0);
    const subsetSize = (await readFile(res.weightsPath)).length;
    assert.ok(weightBytes < shardBytes, `${weightBytes} >= ${shardBytes}`);
    assert.ok(weightBytes < subsetSize + 2 * 8 + 4600, `ranged reads transferred ${weightBytes} bytes for a ${subsetSize}-byte subset`);
    assert.ok(hub.requests.filter((r) => r.file === SHARD1 && r.method === "GET").every((r) => typeof r.headers.range === "string"));
    assert.ok(!hub.requests.some((r) => r.file === SHARD2 && r.method === "GET"));
    assert.equal(
      res.downloadedBytes,
      hub.requests.filter((r) => r.file === SHARD1 && r.kind === "lfs" && (r.bytesSent ?? 0) > 5000).reduce((a, r) => a + r.bytesSent!, 0),
    );

    // progress of the subset (after the small files' own): from 0, monotonic, ends at the subset's size
    const subsetEvents = progress.filter((p) => p.total === subsetSize);
    assert.equal(subsetEvents[0]!.bytes, 0);
    const last = progress[progress.length - 1]!;
    assert.equal(last.done, true);
    assert.equal(last.total, subsetSize);
    assert.equal(last.bytes, subsetSize);
    for (let i = 1; i < subsetEvents.length; i++) assert.ok(subsetEvents[i]!.bytes >= subsetEvents[i - 1]!.bytes, "progress went back");
  });

  test("cached: a pinned commit or offline mode makes no request; a branch only resolves the commit", async () => {
    const cache = await freshDir();
    const first = await downloadTextTower(opts(cache));
    hub.clearRequests();
    const pinned = await downloadTextTower(opts(cache, { revision: textCommit }));
    assert.deepEqual(
      hub.requests.map((r) => `${r.method} ${r.url}`),
      [],
    );
    assert.equal(pinned.weightsPath, first.weightsPath);
    assert.equal(pinned.offline, true);
    assert.equal(pinned.downloadedBytes, 0);
    const offline = await downloadTextTower(opts(cache, { offline: true }));
    assert.deepEqual(
      hub.requests.map((r) => `${r.method} ${r.url}`),
      [],
    );
    assert.deepEqual(offline.tensors, first.tensors);
    process.env.HF_HUB_OFFLINE = "1";
    try {
      await downloadTextTower(opts(cache, { endpoint: "http://127.0.0.1:9" }));
    } finally {
      delete process.env.HF_HUB_OFFLINE;
    }
    assert.deepEqual(
      hub.requests.map((r) => `${r.method} ${r.url}`),
      [],
    );
    const branch = await downloadTextTower(opts(cache));
    assert.deepEqual(
      hub.requests.map((r) => r.kind),
      ["repo-info"],
    );
    assert.equal(branch.downloadedBytes, 0);
  });

  test("a connection dropped mid-tensor: the partial file is kept and the next call resumes with Range", async () => {
    const cache = await freshDir();
    hub.fault({ kind: "cut", file: SHARD1, afterBytes: 50_000, minLength: 10_000 });
    await assert.rejects(downloadTextTower(opts(cache, { retries: 0 })), (err: unknown) => {
      assert.ok(err instanceof HubDownloadError);
      assert.equal(err.code, "network", err.message);
      assert.match(err.message, /run again to resume/);
      return true;
    });
    const dir = join(cache, `models--${TEXT_REPO.replace("/", "--")}`, SUBSETS_DIR, textCommit);
    const left = (await readdir(dir)).sort();
    assert.ok(left.includes(`${TEXT_SUBSET_FILE}.incomplete`) && left.includes(`${TEXT_SUBSET_FILE}.journal.json`), left.join(", "));
    assert.ok(!left.includes(TEXT_SUBSET_FILE));
    const cutRange = hub.requests.find((r) => r.file === SHARD1 && r.kind === "lfs" && (r.bytesSent ?? 0) === 50_000)!.headers.range as string;
    const cutStart = Number(/^bytes=(\d+)-/.exec(cutRange)![1]);

    hub.clearRequests();
    const res = await downloadTextTower(opts(cache));
    const ranges = hub.requests.filter((r) => r.file === SHARD1 && r.kind === "lfs").map((r) => r.headers.range);
    // no header re-read (the journal has the plan), one ranged read from the first missing byte
    assert.deepEqual(ranges, [`bytes=${cutStart + 50_000}-${/-(\d+)$/.exec(cutRange)![1]}`]);
    assert.ok(logLines.some((l) => /resuming text_model\.safetensors/.test(l)));
    assertSubsetMatches(res.weightsPath);
    assert.deepEqual(
      (await readdir(dir)).filter((f) => f.includes(".incomplete") || f.includes("journal")),
      [],
    );
  });

  test("a dropped connection is resumed within the same call, same bytes as an uninterrupted download", async () => {
    const reference = await downloadTextTower(opts(await freshDir()));
    hub.clearRequests();
    hub.fault({ kind: "cut", file: SHARD1, afterBytes: 30_001, minLength: 10_000, times: 2 });
    const res = await downloadTextTower(opts(await freshDir()));
    assert.equal(hub.requests.filter((r) => r.file === SHARD1 && r.kind === "lfs" && (r.bytesSent ?? 0) > 10_000).length, 3);
    assert.ok(logLines.some((l) => /WARN download of text_model\.safetensors .* interrupted/.test(l)));
    assert.equal(sha256(await readFile(res.weightsPath)), sha256(await readFile(reference.weightsPath)));
  });

  test("a stale partial file that does not match the journal's header is discarded", async () => {
    const cache = await freshDir();
    hub.fault({ kind: "cut", file: SHARD1, afterBytes: 20_000, minLength: 10_000 });
    await assert.rejects(downloadTextTower(opts(cache, { retries: 0 })));
    const dir = join(cache, `models--${TEXT_REPO.replace("/", "--")}`, SUBSETS_DIR, textCommit);
    const { writeFile } = await import("node:fs/promises");
    await writeFile(join(dir, `${TEXT_SUBSET_FILE}.incomplete`), Buffer.alloc(30_000, 7));
    const res = await downloadTextTower(opts(cache));
    assert.ok(logLines.some((l) => /does not match its journal/.test(l)));
    assertSubsetMatches(res.weightsPath);
  });

  test("two processes fetching the text tower into one cache: one builds the subset, the other waits and reuses it", async () => {
    const cache = await freshDir();
    const dir = join(cache, `models--${TEXT_REPO.replace("/", "--")}`, SUBSETS_DIR, textCommit);
    const incomplete = join(dir, `${TEXT_SUBSET_FILE}.incomplete`);
    // every ranged read of the shards takes 800 ms a chunk, so that the second process starts while the first one is writing
    for (const file of [SHARD1, SHARD2]) hub.fault({ kind: "slow", file, ms: 800, times: 1000 });
    const cli = [process.execPath, "--import", "tsx", join(repoRoot, "server", "src", "cli.ts")];
    const fetchText = () =>
      promisify(execFile)(cli[0]!, [...cli.slice(1), "fetch-text", "--cache-dir", cache], {
        env: { ...process.env, HF_ENDPOINT: hub.endpoint },
        cwd: repoRoot,
        timeout: 120_000,
      });
    const first = fetchText();
    const { stat } = await import("node:fs/promises");
    const t0 = Date.now();
    while (((await stat(incomplete).catch(() => undefined))?.size ?? 0) < 20_000 && Date.now() - t0 < 60_000) await new Promise((r) => setTimeout(r, 20));
    const second = fetchText();
    const results = await Promise.allSettled([first, second]);
    for (const r of results) assert.equal(r.status, "fulfilled", r.status === "rejected" ? String((r.reason as { stderr?: string }).stderr ?? r.reason) : "");
    assert.match((results[1] as PromiseFulfilledResult<{ stderr: string }>).value.stderr, /waiting for process \d+ on .*, which is building/);
    assertSubsetMatches(join(dir, TEXT_SUBSET_FILE));
    assert.deepEqual(
      (await readdir(dir)).filter((f) => f.includes(".incomplete") || f.includes("journal") || f.includes("lock")),
      [],
    );
  });

  test("offline with nothing cached: not_cached naming what is missing", async () => {
    const cache = await freshDir();
    await assert.rejects(downloadTextTower(opts(cache, { offline: true })), (err: unknown) => {
      assert.ok(err instanceof HubDownloadError);
      assert.equal(err.code, "not_cached");
      assert.match(err.message, /siglip2-giant-opt-patch16-384/);
      assert.match(err.message, /network access/);
      return true;
    });
    // small files cached but no subset: still not_cached, naming the subset
    await downloadTextTower(opts(cache));
    await rm(join(cache, `models--${TEXT_REPO.replace("/", "--")}`, SUBSETS_DIR), { recursive: true });
    hub.clearRequests();
    await assert.rejects(downloadTextTower(opts(cache, { offline: true })), /text_model\.safetensors/);
    assert.deepEqual(
      hub.requests.map((r) => `${r.method} ${r.url}`),
      [],
    );
  });

  test("wrong token -> unauthorized; the right one works", async () => {
    const cache = await freshDir();
    await assert.rejects(downloadTextTower(opts(cache, { repo: PRIVATE_REPO, token: "hf_wrong" })), (err: unknown) => {
      assert.ok(err instanceof HubDownloadError);
      assert.equal(err.code, "unauthorized", err.message);
      assert.match(err.message, /token/i);
      return true;
    });
    const res = await downloadTextTower(opts(cache, { repo: PRIVATE_REPO, token: "hf_right" }));
    assertSubsetMatches(res.weightsPath);
  });

  test("gated repo: error says to request access", async () => {
    await hub.addRepoFromDir("acme/siglip-gated", SIGLIP_DIR, { gatedToken: "hf_granted" });
    await assert.rejects(downloadTextTower(opts(await freshDir(), { repo: "acme/siglip-gated", token: "hf_other" })), (err: unknown) => {
      assert.ok(err instanceof HubDownloadError);
      assert.equal(err.code, "gated", err.message);
      assert.match(err.message, /Request access/);
      return true;
    });
  });

  test("a repo that is not a SigLIP checkpoint is refused before any weight bytes", async () => {
    hub.addRepo("acme/not-siglip", {
      "config.json": "{}",
      "model.safetensors.index.json": JSON.stringify({ weight_map: { "vision_model.x": "model-00001-of-00001.safetensors" } }),
      "tokenizer.json": "{}",
      "tokenizer_config.json": "{}",
      "special_tokens_map.json": "{}",
    });
    await assert.rejects(downloadTextTower(opts(await freshDir(), { repo: "acme/not-siglip" })), (err: unknown) => {
      assert.ok(err instanceof HubDownloadError);
      assert.equal(err.code, "bad_response");
      assert.match(err.message, /does not look like a SigLIP checkpoint/);
      return true;
    });
  });
});

describe("torch.hub adaptor checkpoint", { skip }, () => {
  test("downloads the catalogue's .pth.tar whole into the hub cache", async () => {
    const cache = await freshDir();
    const res = await downloadAdaptorCheckpoint({ checkpoint: "c-radio_v4-h", cacheDir: cache, endpoint: hub.endpoint, progress: "none", logger });
    assert.equal(res.file, "c-radio_v4-h_half.pth.tar");
    assert.equal(res.repo, "nvidia/C-RADIOv4-H");
    assert.equal(res.path, join(res.snapshotDir, "c-radio_v4-h_half.pth.tar"));
    assert.equal(res.downloaded, true);
    assert.equal(sha256(await readFile(res.path)), sha256(await readFile(join(RADIO_DIR, "c-radio_v4-h_half.pth.tar"))));
    assert.deepEqual(await readdir(res.snapshotDir), ["c-radio_v4-h_half.pth.tar"]);
    hub.clearRequests();
    const again = await downloadAdaptorCheckpoint({ checkpoint: "nvidia/C-RADIOv4-H", cacheDir: cache, offline: true, progress: "none", logger });
    assert.equal(again.path, res.path);
    assert.equal(again.downloaded, false);
    assert.deepEqual(
      hub.requests.map((r) => `${r.method} ${r.url}`),
      [],
    );
  });

  test("a repo id without a catalogue entry needs the file name", async () => {
    await assert.rejects(
      downloadAdaptorCheckpoint({ checkpoint: "acme/other", cacheDir: await freshDir(), endpoint: hub.endpoint }),
      /no adaptor checkpoint is known/,
    );
  });
});

describe("cli", { skip }, () => {
  test("fetch-text --with-adaptor prints the text tower folder and the adaptor path; --offline then needs no hub", async () => {
    const cache = await freshDir();
    const cli = [process.execPath, "--import", "tsx", join(repoRoot, "server", "src", "cli.ts")];
    const env = { ...process.env, HF_ENDPOINT: hub.endpoint };
    const run = (args: string[], e: NodeJS.ProcessEnv = env) =>
      promisify(execFile)(cli[0]!, [...cli.slice(1), ...args], { env: e, cwd: repoRoot, timeout: 120_000 });
    const { stdout, stderr } = await run(["fetch-text", "--checkpoint", "c-radio_v4-h", "--with-adaptor", "--cache-dir", cache]);
    const out = JSON.parse(stdout) as { dir: string; weightsPath: string; commit: string; adaptor: { path: string } };
    assert.equal(out.commit, textCommit);
    assert.match(stderr, /fetch-text: google\/siglip2-giant-opt-patch16-384@/);
    assertSubsetMatches(out.weightsPath);
    assert.equal(sha256(await readFile(out.adaptor.path)), sha256(await readFile(join(RADIO_DIR, RADIO.adaptorCheckpoint!))));
    hub.clearRequests();
    const offline = await run(["fetch-text", "--cache-dir", cache, "--offline"], { ...env, HF_ENDPOINT: "http://127.0.0.1:9" });
    assert.equal((JSON.parse(offline.stdout) as { dir: string }).dir, out.dir);
    const pth = await run(["fetch-adaptor", "--checkpoint", "nvidia/C-RADIOv4-H", "--cache-dir", cache, "--offline"]);
    assert.equal((JSON.parse(pth.stdout) as { path: string }).path, out.adaptor.path);
    assert.deepEqual(
      hub.requests.map((r) => `${r.method} ${r.url}`),
      [],
    );
  });
});
