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
  const target = new URL(`./${name}${ext}`, from).href;
  if (ext !== ".ts") return { filename: target, entry: undefined };
  return { filename: new URL("./dev-worker.mjs", import.meta.url).href, entry: target };
}
