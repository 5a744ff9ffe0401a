// Argument parsers shared by the commands: commander calls them with the raw string.
import { delimiter } from "node:path";
import { InvalidArgumentError } from "commander";

/** Number(v), except that an empty or blank value (an env var set to "") is NaN, not 0. */
const toNumber = (v: string): number => (v.trim() === "" ? Number.NaN : Number(v));

export const positiveInt = (v: string): number => {
  const n = toNumber(v);
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError("must be a positive integer");
  return n;
};

export const nonNegativeInt = (v: string): number => {
  const n = toNumber(v);
  if (!Number.isInteger(n) || n < 0) throw new InvalidArgumentError("must be a non-negative integer");
  return n;
};

/** Most seconds a timeout may be: Node timers hold at most 2^31-1 ms (~24.8 days; beyond, they fire at once), less serve's 5 s grace. */
const MAX_TIMER_S = Math.floor((2 ** 31 - 1 - 5000) / 1000);

/** Seconds that become a Node timer. */
export const timerSeconds = (v: string): number => {
  const n = nonNegativeInt(v);
  if (n > MAX_TIMER_S) throw new InvalidArgumentError(`must be at most ${MAX_TIMER_S} (24 days)`);
  return n;
};

export const commaList = (v: string): string[] => {
  const names = v
    .split(",")
    .map((s) => s.trim())
    .filter((s) => s !== "");
  if (names.length === 0) throw new InvalidArgumentError("give at least one name");
  return names;
};

/** Repeatable options: each use appends. */
export const collect = (v: string, prev: string[] | undefined): string[] => [...(prev ?? []), v];

/** Repeatable options may also come from one env var, entries separated like PATH (":" on Unix). */
export const envList = (name: string): string[] => (process.env[name] ?? "").split(delimiter).filter((s) => s !== "");

export const portNumber = (v: string): number => {
  const n = toNumber(v);
  if (!Number.isInteger(n) || n < 0 || n > 65535) throw new InvalidArgumentError("must be a port number (0-65535)");
  return n;
};

export const httpPortArg = (v: string): number | "auto" => (v === "auto" ? "auto" : portNumber(v));

export type Precision = "fp32" | "fp16" | "int8";

/** Hugging Face cache and offline flags, as the download commands take them. */
export const CACHE_DIR_HELP = "Hugging Face hub cache (default: $HF_HUB_CACHE or $HF_HOME/hub)";
export const OFFLINE_HELP = "use only the cache, no network (also HF_HUB_OFFLINE=1)";
