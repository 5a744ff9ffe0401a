// `fetch-text` and `fetch-adaptor`: download what text features and adaptor heads need into the
// Hugging Face cache without compiling (for offline machines and benchmarks).
import type { Command } from "commander";
import { KNOWN_CHECKPOINTS } from "../checkpoint/catalogue.js";
import { CACHE_DIR_HELP, OFFLINE_HELP } from "./args.js";

const KNOWN = Object.keys(KNOWN_CHECKPOINTS).join(", ");

export function addFetchCommands(program: Command): void {
  program
    .command("fetch-text")
    .description(
      "download what text features need into the Hugging Face cache: the SigLIP2 text tower's config and tokenizer, and only its text tensors (Range reads of the shards, resumable); prints JSON with the folder (dir) and file paths",
    )
    .option("--checkpoint <name>", `checkpoint whose text tower to fetch: ${KNOWN} (or its repo id)`, "c-radio_v4-h")
    .option("--repo <id>", "text tower repo instead of the checkpoint's (a SigLIP checkpoint)")
    .option("--revision <rev>", "text tower revision (branch, tag or commit; default main)")
    .option("--with-adaptor", "also download the checkpoint's torch.hub file (the adaptor heads, ~1.3 GB for H)", false)
    .option("--adaptor-revision <rev>", "revision of the checkpoint repo for --with-adaptor (default main)")
    .option("--cache-dir <dir>", CACHE_DIR_HELP)
    .option("--offline", OFFLINE_HELP)
    .action(
      async (options: {
        checkpoint: string;
        repo?: string;
        revision?: string;
        withAdaptor: boolean;
        adaptorRevision?: string;
        cacheDir?: string;
        offline?: boolean;
      }) => {
        const { downloadTextTower } = await import("../hub/text-tower.js");
        const { downloadAdaptorCheckpoint } = await import("../hub/adaptor-checkpoint.js");
        const common = { cacheDir: options.cacheDir, ...(options.offline ? { offline: true } : {}) };
        const text = await downloadTextTower({ ...common, checkpoint: options.checkpoint, repo: options.repo, revision: options.revision });
        const adaptor = options.withAdaptor
          ? await downloadAdaptorCheckpoint({ ...common, checkpoint: options.checkpoint, revision: options.adaptorRevision })
          : undefined;
        process.stderr.write(
          `fetch-text: ${text.repo}@${text.commit.slice(0, 7)} text tower in ${text.dir}${adaptor ? `; adaptor checkpoint ${adaptor.path}` : ""}\n`,
        );
        process.stdout.write(`${JSON.stringify({ ...text, ...(adaptor ? { adaptor } : {}) }, null, 2)}\n`);
      },
    );

  program
    .command("fetch-adaptor")
    .description(
      "download a checkpoint's torch.hub file (c-radio_v4-*_half.pth.tar: the only file with the adaptor heads) into the Hugging Face cache; prints JSON with its path",
    )
    .option("--checkpoint <name>", `${KNOWN} or a Hugging Face repo id`, "c-radio_v4-h")
    .option("--file <name>", "the .pth.tar in the repo (default: the checkpoint's, from the catalogue)")
    .option("--revision <rev>", "Hugging Face revision (branch, tag or commit; default main)")
    .option("--cache-dir <dir>", CACHE_DIR_HELP)
    .option("--offline", OFFLINE_HELP)
    .action(async (options: { checkpoint: string; file?: string; revision?: string; cacheDir?: string; offline?: boolean }) => {
      const { downloadAdaptorCheckpoint } = await import("../hub/adaptor-checkpoint.js");
      const adaptor = await downloadAdaptorCheckpoint({
        checkpoint: options.checkpoint,
        file: options.file,
        revision: options.revision,
        cacheDir: options.cacheDir,
        ...(options.offline ? { offline: true } : {}),
      });
      process.stderr.write(`fetch-adaptor: ${adaptor.repo}@${adaptor.commit.slice(0, 7)} ${adaptor.path}\n`);
      process.stdout.write(`${JSON.stringify(adaptor, null, 2)}\n`);
    });
}
