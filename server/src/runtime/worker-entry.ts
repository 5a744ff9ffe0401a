// Where a piscina pool's worker module lives: the compiled .js beside the caller, or (when the
// server runs from TypeScript source under tsx) a small JS entry that loads the .ts through tsx.
import { extname } from "node:path";
import { fileURLToPath } from "node:url";

export interface WorkerEntry {
  /** piscina's `filename`. */
  filename: string;
  /** Put this under workerData.entry (only set for the TypeScript-source case). */
  entry: string | undefined;
}

/** `name` is the module's base name (e.g. "worker"); `from` is the caller's import.meta.url. */
export function workerEntry(name: string, from: string): WorkerEntry {
  const ext = extname(fileURLToPath(from));
  return workerEntryAt(new URL(`./${name}${ext}`, from).href);
}

/** The entry for a worker module given by its URL (a .ts one is loaded through tsx). */
export function workerEntryAt(target: string): WorkerEntry {
  if (extname(fileURLToPath(target)) !== ".ts") return { filename: target, entry: undefined };
  return { filename: new URL("./dev-worker.mjs", import.meta.url).href, entry: target };
}
