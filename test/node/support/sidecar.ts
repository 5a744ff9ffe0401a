/**
 * `radio-sidecar serve` as a child process, for tests that need a real process boundary: its RSS,
 * its exit, its flags and env, its stderr. The built CLI is used when it is newer than every source
 * file (it starts faster), else the TypeScript source under tsx.
 */
import { spawn, type ChildProcessWithoutNullStreams } from "node:child_process";
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import path from "node:path";
import { createInterface } from "node:readline";

import { httpGet, metricValue } from "./server.js";

const SRC = path.resolve(import.meta.dirname, "../../../server/src");
const DIST_CLI = path.resolve(import.meta.dirname, "../../../server/dist/cli.js");

function newest(dir: string): number {
  return Math.max(
    0,
    ...readdirSync(dir, { withFileTypes: true }).map((e) => (e.isDirectory() ? newest(path.join(dir, e.name)) : statSync(path.join(dir, e.name)).mtimeMs)),
  );
}

export const CLI: string[] = existsSync(DIST_CLI) && statSync(DIST_CLI).mtimeMs >= newest(SRC) ? [DIST_CLI] : ["--import", "tsx", path.join(SRC, "cli.ts")];

export interface ReadyLine {
  event: string;
  socket: string | null;
  grpcPort: number | null;
  httpPort: number | null;
  address: string;
  pid: number;
  graphs: string[];
}

export interface Sidecar {
  proc: ChildProcessWithoutNullStreams;
  /** The "ready" line; rejects (with stderr) if the process exits first. */
  ready: Promise<ReadyLine>;
  exit: Promise<number | null>;
  stderr(): string;
  /** GET /metrics (needs --http-port). */
  metrics(): Promise<string>;
  /** Resident set size in bytes, from /proc (Linux) or the process_resident_memory_bytes metric. */
  rss(): Promise<number>;
  alive(): boolean;
  kill(): void;
}

export function spawnSidecar(args: string[], env: Record<string, string> = {}): Sidecar {
  const proc = spawn(process.execPath, [...CLI, "serve", ...args], {
    env: { ...process.env, RADIO_LOG_LEVEL: "warn", ...env },
    stdio: ["pipe", "pipe", "pipe"],
  });
  let err = "";
  proc.stderr.on("data", (d: Buffer) => (err += d.toString()));
  let exited = false;
  const exit = new Promise<number | null>((r) =>
    proc.once("exit", (code) => {
      exited = true;
      r(code);
    }),
  );
  const lines = createInterface({ input: proc.stdout });
  const ready = new Promise<ReadyLine>((resolve, reject) => {
    lines.once("line", (l) => resolve(JSON.parse(l) as ReadyLine));
    void exit.then((code) => reject(new Error(`serve exited (${code}) before ready:\n${err}`)));
  });
  ready.catch(() => undefined);
  const metrics = async () => {
    const r = await ready;
    if (r.httpPort === null) throw new Error("start the sidecar with --http-port auto to read metrics");
    return (await httpGet(r.httpPort, "/metrics")).body;
  };
  return {
    proc,
    ready,
    exit,
    stderr: () => err,
    metrics,
    async rss() {
      try {
        const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${proc.pid}/status`, "utf8"));
        if (m) return Number(m[1]) * 1024;
      } catch {
        /* not Linux */
      }
      return metricValue(await metrics(), "process_resident_memory_bytes");
    },
    alive: () => !exited,
    kill: () => {
      if (!exited) proc.kill("SIGKILL");
    },
  };
}

/** A metric's value, summed over the samples whose labels include `labels`. */
export async function sidecarMetric(s: Sidecar, name: string, labels: Record<string, string> = {}): Promise<number> {
  return metricValue(await s.metrics(), name, labels);
}

export const MB = 1024 * 1024;
