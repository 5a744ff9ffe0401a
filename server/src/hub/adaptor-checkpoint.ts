/**
 * The torch.hub checkpoint (`c-radio_v4-h_half.pth.tar`): besides the backbone checkpoint, the only file of
 * C-RADIOv4 holding the adaptor heads that its text features need.
 */
import { join } from "node:path";
import { KNOWN_CHECKPOINTS, resolveCheckpoint } from "../checkpoint/catalogue.js";
import { validateRepoFilePath } from "./cache.js";
import { downloadCheckpoint, type DownloadCheckpointOptions } from "./checkpoint.js";

interface DownloadAdaptorOptions extends Omit<DownloadCheckpointOptions, "repo" | "files"> {
  /** checkpoint short name or repo id; default c-radio_v4-h */
  checkpoint?: string;
  /** the torch.hub file in the repo; default: the catalogue's adaptorCheckpoint of `checkpoint` */
  file?: string;
}

interface AdaptorCheckpointResult {
  /** snapshots/<commit>/<file> (a link into blobs/, as Python's cache) */
  path: string;
  file: string;
  repo: string;
  revision: string;
  commit: string;
  snapshotDir: string;
  cacheDir: string;
  /** false when it was already in the cache */
  downloaded: boolean;
  offline: boolean;
}

/**
 * Download the torch.hub checkpoint carrying the adaptor heads (c-radio_v4-h_half.pth.tar, ~1.3 GB) into the
 * hub cache, whole, through downloadCheckpoint (progress, resume, sha256 check, offline, token, errors).
 */
export async function downloadAdaptorCheckpoint(opts: DownloadAdaptorOptions = {}): Promise<AdaptorCheckpointResult> {
  const checkpoint = opts.checkpoint ?? "c-radio_v4-h";
  const known = resolveCheckpoint(checkpoint);
  const file = opts.file ?? known.adaptorCheckpoint;
  if (!file) {
    throw new TypeError(
      `no adaptor checkpoint is known for ${JSON.stringify(checkpoint)}: pass file (the torch.hub .pth.tar in the repo), ` +
        `or use ${Object.keys(KNOWN_CHECKPOINTS).join(" or ")}`,
    );
  }
  validateRepoFilePath(file);
  const revision = opts.revision ?? known.revision;
  const dl = await downloadCheckpoint({ ...opts, repo: known.repo, revision, files: [file] });
  return {
    path: join(dl.snapshotDir, ...file.split("/")),
    file,
    repo: dl.repo,
    revision,
    commit: dl.commit,
    snapshotDir: dl.snapshotDir,
    cacheDir: dl.cacheDir,
    downloaded: dl.downloaded.length > 0,
    offline: dl.offline,
  };
}
