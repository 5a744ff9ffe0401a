// What the Hub download tests (hub.test.ts, hub-text.test.ts) share: one fake Hub per test file, a temp
// root for HF_HOME and the caches, the HF_* environment cleared (and restored afterwards), and a logger
// whose lines the tests read.
import { mkdir, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, beforeEach } from "node:test";
import type { DownloadCheckpointOptions } from "../../../server/src/hub/checkpoint.js";
import type { HubLogger } from "../../../server/src/hub/progress.js";
import { FakeHub } from "./fake-hub.js";

/** The variables that could point a download at the developer's cache, endpoint, token or offline mode. */
const ENV_KEYS = [
  "HF_HOME",
  "HF_HUB_CACHE",
  "HUGGINGFACE_HUB_CACHE",
  "XDG_CACHE_HOME",
  "HF_ENDPOINT",
  "HF_TOKEN",
  "HUGGING_FACE_HUB_TOKEN",
  "HF_TOKEN_PATH",
  "HF_HUB_OFFLINE",
  "TRANSFORMERS_OFFLINE",
];

export type CommonDownloadOptions = Required<Pick<DownloadCheckpointOptions, "cacheDir" | "endpoint" | "progress" | "logger" | "retryDelayMs">>;

export interface HubSuite {
  /** What the logger was told since the current test began; warnings start with "WARN ". */
  readonly logLines: string[];
  readonly logger: HubLogger;
  /** A new empty folder `<name>-<n>` under the temp root. */
  freshDir(name?: string): Promise<string>;
  /** The options every download here passes: this cache, the fake Hub, no progress bar, the logger, 5 ms retry delays. */
  downloadOptions(cacheDir: string): CommonDownloadOptions;
}

/**
 * Registers the test file's hooks. before: unsets the HF_* variables, makes the temp root (prefix
 * `tmpPrefix`), points HF_HOME at <root>/hf-home (never the developer's ~/.cache/huggingface: token file,
 * cache), starts the fake Hub and hands both to `setup` (to add repos). beforeEach: clears the hub's faults
 * and recorded requests and the log lines, and resets the environment the same way. after: closes the
 * hub, restores the environment and removes the root.
 */
export function useFakeHub(tmpPrefix: string, setup: (hub: FakeHub, root: string) => Promise<void>): HubSuite {
  let hub: FakeHub | undefined;
  let root = "";
  const savedEnv: Record<string, string | undefined> = {};
  const resetEnv = () => {
    for (const k of ENV_KEYS) delete process.env[k];
    process.env.HF_HOME = join(root, "hf-home");
  };
  const logLines: string[] = [];
  const logger: HubLogger = { info: (m: string) => void logLines.push(m), warn: (m: string) => void logLines.push(`WARN ${m}`) };
  let dirCount = 0;

  before(async () => {
    for (const k of ENV_KEYS) savedEnv[k] = process.env[k];
    root = await mkdtemp(join(tmpdir(), tmpPrefix));
    resetEnv();
    hub = await FakeHub.start();
    await setup(hub, root);
  });

  after(async () => {
    await hub?.close();
    for (const k of ENV_KEYS) {
      if (savedEnv[k] === undefined) delete process.env[k];
      else process.env[k] = savedEnv[k];
    }
    if (root) await rm(root, { recursive: true, force: true });
  });

  beforeEach(() => {
    hub!.clearFaults();
    hub!.clearRequests();
    logLines.length = 0;
    resetEnv();
  });

  return {
    logLines,
    logger,
    async freshDir(name = "cache") {
      const d = join(root, `${name}-${++dirCount}`);
      await mkdir(d, { recursive: true });
      return d;
    },
    downloadOptions: (cacheDir) => ({ cacheDir, endpoint: hub!.endpoint, progress: "none", logger, retryDelayMs: 5 }),
  };
}
