/**
 * The SigLIP2 text tower that C-RADIOv4's text features need from the Hugging Face Hub, besides the backbone
 * checkpoint (google/siglip2-giant-opt-patch16-384 for the siglip2-g adaptor): its config and tokenizer files
 * are downloaded normally into the hub cache; from its 7.5 GB of sharded weights only the tensors of the text
 * tower (`text_model.*`, `logit_scale`, `logit_bias`, ~2.8 GB in fp32) are fetched, with HTTP Range requests
 * resolved through the shard index and each shard's safetensors header (subset.ts), into one local safetensors
 * file. The adaptor heads come from the torch.hub checkpoint: adaptor-checkpoint.ts.
 *
 * Where the text tower lands (see `subsetDir`):
 *
 *   $HF_HUB_CACHE/models--google--siglip2-giant-opt-patch16-384/
 *     blobs/ refs/ snapshots/<commit>/{config.json, model.safetensors.index.json, tokenizer*.json, ...}   (as Python)
 *     radio-subsets/<commit>/
 *       config.json, tokenizer.json, tokenizer_config.json, special_tokens_map.json   links to ../../snapshots/<commit>/…
 *       text_model.safetensors                       the subset: text tensors, same names, dtypes, shapes and bytes
 *       text_model.safetensors.incomplete            while downloading: header + the data received so far
 *       text_model.safetensors.journal.json          while downloading: the plan (which source bytes go where)
 *
 * The subset is not put in snapshots/<commit>/: that folder mirrors the repo's files at that commit, and Python's
 * huggingface_hub (`scan_cache_dir`, `hf cache`), resolveFromCache and anyone reading the snapshot treat every
 * entry there as a repo file. text_model.safetensors is not one. A sibling folder of snapshots/ (like Python's
 * own `.no_exist/`) is left alone by those tools and goes away with the repo's cache folder.
 */
import { join } from "node:path";
import { KNOWN_CHECKPOINTS, resolveCheckpoint } from "../checkpoint/catalogue.js";
import { SafetensorsFile } from "../checkpoint/safetensors.js";
import { TEXT_SUBSET_FILE } from "../checkpoint/siglip.js";
import {
  exists,
  isCommitHash,
  linkFile,
  pointerPath,
  repoStorageDir,
  resolveCacheDir,
  resolveFromCache,
  snapshotDir as snapshotDirOf,
  validateRepoId,
  validateRevision,
  withCacheLock,
} from "./cache.js";
import { downloadCheckpoint, type DownloadCheckpointOptions } from "./checkpoint.js";
import { createHubContext, isOfflineFromEnv } from "./context.js";
import { HubDownloadError } from "./errors.js";
import { shared } from "./http.js";
import { stderrLogger } from "./progress.js";
import { downloadSubset } from "./subset.js";

/** Small repo files the text compiler reads, downloaded whole into the snapshot (tokenizer.json is 34 MB). */
const TEXT_TOWER_FILES = ["config.json", "model.safetensors.index.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"] as const;
/** Of those, the ones linked into the text tower folder (the index describes the full repo, not the subset). */
const LINKED_FILES = ["config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"] as const;
export const SUBSETS_DIR = "radio-subsets";

/** `<cache>/models--<org>--<name>/radio-subsets/<commit>` (`storage`: the repo's folder in the cache): the folder downloadTextTower returns. */
function subsetDir(storage: string, commit: string): string {
  return join(storage, SUBSETS_DIR, commit);
}

export interface DownloadTextTowerOptions extends Omit<DownloadCheckpointOptions, "repo" | "files"> {
  /** text tower repo; default: the text tower of `checkpoint` in the catalogue */
  repo?: string;
  /** checkpoint short name or repo id whose catalogue entry names the text tower; default c-radio_v4-h */
  checkpoint?: string;
  /** default: the catalogue's revision of the text tower ("main") */
  revision?: string;
}

interface TextTowerResult {
  /**
   * `<storage>/radio-subsets/<commit>/`: config.json, tokenizer.json, tokenizer_config.json,
   * special_tokens_map.json (links into snapshots/<commit>/) and text_model.safetensors. No weights index:
   * the one safetensors file holds every tensor the text tower needs.
   */
  dir: string;
  configPath: string;
  tokenizerPath: string;
  tokenizerConfigPath: string;
  specialTokensMapPath: string;
  /** dir/text_model.safetensors */
  weightsPath: string;
  /** snapshots/<commit> with the small repo files (and the full repo's weights index) */
  snapshotDir: string;
  repo: string;
  revision: string;
  commit: string;
  cacheDir: string;
  /** tensor names in the subset */
  tensors: string[];
  /** bytes of the subset this call transferred (0 when it was already there) */
  downloadedBytes: number;
  /** true when resolved without contacting the Hub */
  offline: boolean;
}

function textTowerOf(opts: DownloadTextTowerOptions): { repo: string; revision: string } {
  if (opts.repo) return { repo: opts.repo, revision: opts.revision ?? "main" };
  const checkpoint = opts.checkpoint ?? "c-radio_v4-h";
  const tower = resolveCheckpoint(checkpoint).textTower;
  if (!tower) {
    throw new TypeError(
      `no text tower is known for ${JSON.stringify(checkpoint)}: pass repo (a SigLIP repo id), or use ${Object.keys(KNOWN_CHECKPOINTS).join(" or ")}`,
    );
  }
  return { repo: tower.repo, revision: opts.revision ?? tower.revision };
}

/**
 * Make the SigLIP2 text tower available locally: config + tokenizer files in the hub cache, and only the text
 * tower's tensors of the sharded weights in `<storage>/radio-subsets/<commit>/text_model.safetensors`.
 * Resumable (HTTP Range from the first missing byte); no request at all when everything is cached and the
 * revision is a commit or offline mode is on.
 */
export async function downloadTextTower(opts: DownloadTextTowerOptions = {}): Promise<TextTowerResult> {
  const { repo, revision } = textTowerOf(opts);
  validateRepoId(repo);
  validateRevision(revision);
  const cacheDir = resolveCacheDir(opts.cacheDir);
  const storage = repoStorageDir(cacheDir, repo);
  const offline = opts.offline ?? isOfflineFromEnv();

  const result = async (commit: string, tensors: string[] | undefined, downloadedBytes: number, wasOffline: boolean): Promise<TextTowerResult> => {
    const dir = subsetDir(storage, commit);
    const [configPath, tokenizerPath, tokenizerConfigPath, specialTokensMapPath] = await Promise.all(
      // dir/<file> -> ../../snapshots/<commit>/<file>
      LINKED_FILES.map(async (f) => ((await exists(join(dir, f))) ? join(dir, f) : linkFile(pointerPath(storage, commit, f), join(dir, f)))),
    );
    const weightsPath = join(dir, TEXT_SUBSET_FILE);
    if (!tensors) {
      const f = SafetensorsFile.open(weightsPath);
      tensors = [...f.tensors.keys()];
      f.close();
    }
    return {
      dir,
      configPath: configPath!,
      tokenizerPath: tokenizerPath!,
      tokenizerConfigPath: tokenizerConfigPath!,
      specialTokensMapPath: specialTokensMapPath!,
      weightsPath,
      snapshotDir: snapshotDirOf(storage, commit),
      repo,
      revision,
      commit,
      cacheDir,
      tensors: tensors.sort(),
      downloadedBytes,
      offline: wasOffline,
    };
  };

  if (offline || isCommitHash(revision)) {
    const cached = await resolveFromCache({ cacheDir, repo, revision, files: [...TEXT_TOWER_FILES] });
    const subset = cached.commit ? join(subsetDir(storage, cached.commit), TEXT_SUBSET_FILE) : undefined;
    if (cached.ok && subset && (await exists(subset))) return result(cached.commit, undefined, 0, true);
    if (offline) {
      const missing = cached.ok ? [subset!] : [...cached.missing, ...(subset && !(await exists(subset)) ? [subset] : [])];
      throw new HubDownloadError(
        "not_cached",
        `Offline mode is on (HF_HUB_OFFLINE=1 or offline: true), and the text tower ${repo} at revision '${revision}' ` +
          `is not fully in the cache ${cacheDir}` +
          (cached.ok ? "" : `: ${cached.reason}`) +
          (missing.length > 0 ? `; missing: ${missing.join(", ")}` : "") +
          `. Fetch it once with network access (radio-sidecar fetch-text, or downloadTextTower without offline).`,
        { repo, revision },
      );
    }
  }

  const dl = await downloadCheckpoint({ ...opts, repo, revision, files: [...TEXT_TOWER_FILES], offline: false });
  const dir = subsetDir(storage, dl.commit);
  if (await exists(join(dir, TEXT_SUBSET_FILE))) return result(dl.commit, undefined, 0, dl.offline);

  const hub = await createHubContext({ ...opts, logger: opts.logger ?? stderrLogger(opts.progressStream ?? process.stderr) }, repo, revision);
  // one process at a time builds the subset (the .incomplete file, its journal); another waits, then finds it built
  const lock = join(dir, `${TEXT_SUBSET_FILE}.lock`);
  const onWait = (owner: string) => hub.log.info(`waiting for ${owner}, which is building ${TEXT_SUBSET_FILE} of ${repo} in the same cache (lock ${lock})`);
  const [job] = shared(join(dir, TEXT_SUBSET_FILE), () =>
    withCacheLock(lock, { signal: hub.signal, onWait }, async (signal) =>
      (await exists(join(dir, TEXT_SUBSET_FILE))) ? undefined : downloadSubset({ ...hub, signal }, dl.commit, dl.snapshotDir, dir, opts),
    ),
  );
  const built = await job;
  return result(dl.commit, built?.tensors, built?.downloadedBytes ?? 0, false);
}
