// pino JSON logs on stderr: stdout carries only the one "ready" line a parent process waits for.
import { pino, type Logger } from "pino";

export type { Logger };
export const LOG_LEVELS = ["fatal", "error", "warn", "info", "debug", "trace", "silent"] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

export function createLogger(level: LogLevel = "info"): Logger {
  return pino({ level, base: { pid: process.pid, name: "radio-sidecar" } }, pino.destination({ dest: 2, sync: true }));
}
