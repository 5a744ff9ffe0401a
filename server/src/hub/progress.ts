/**
 * Download progress: a cli-progress bar when stderr is a TTY, otherwise plain lines every 10%
 * (a Python parent process reading our stderr can parse `NN%`), plus a programmatic callback.
 */
import cliProgress from "cli-progress";

export interface DownloadProgress {
  repo: string;
  commit: string;
  /** file currently transferring ('' before the first / after the last) */
  file: string;
  fileBytes: number;
  fileTotal: number;
  /** bytes present for all files this call has to transfer (resumed bytes count as present) */
  bytes: number;
  total: number;
  /** files completed so far / files to transfer in this call */
  filesDone: number;
  filesTotal: number;
  done: boolean;
}

export type ProgressMode = "auto" | "bar" | "log" | "none";

export interface HubLogger {
  info(msg: string): void;
  warn(msg: string): void;
}

export function stderrLogger(stream: NodeJS.WritableStream = process.stderr): HubLogger {
  return {
    info: (msg) => void stream.write(`${msg}\n`),
    warn: (msg) => void stream.write(`warning: ${msg}\n`),
  };
}

export function formatBytes(n: number): string {
  const units = ["B", "kB", "MB", "GB", "TB"];
  let v = n;
  let i = 0;
  while (v >= 1000 && i < units.length - 1) {
    v /= 1000;
    i++;
  }
  return i === 0 ? `${v} B` : `${v.toFixed(v >= 100 ? 0 : v >= 10 ? 1 : 2)} ${units[i]}`;
}

export class ProgressReporter {
  private bar: cliProgress.SingleBar | undefined;
  private lastStep = -1;
  private readonly state: DownloadProgress;
  private readonly mode: Exclude<ProgressMode, "auto">;

  constructor(
    private readonly opts: {
      repo: string;
      commit: string;
      total: number;
      initial: number;
      filesTotal: number;
      mode: ProgressMode;
      stream: NodeJS.WritableStream & { isTTY?: boolean };
      logger: HubLogger;
      onProgress?: ((p: DownloadProgress) => void) | undefined;
      /** percent step for plain log lines */
      logStep?: number;
    },
  ) {
    this.mode = opts.mode === "auto" ? (opts.stream.isTTY ? "bar" : "log") : opts.mode;
    this.state = {
      repo: opts.repo,
      commit: opts.commit,
      file: "",
      fileBytes: 0,
      fileTotal: 0,
      bytes: opts.initial,
      total: opts.total,
      filesDone: 0,
      filesTotal: opts.filesTotal,
      done: false,
    };
    this.startBytes = opts.initial;
  }

  private get label(): string {
    return `${this.opts.repo}@${this.opts.commit.slice(0, 7)}`;
  }

  start(): void {
    const s = this.state;
    if (this.mode === "bar") {
      this.bar = new cliProgress.SingleBar(
        {
          stream: this.opts.stream,
          format: `Downloading ${this.label} |{bar}| {percentage}% | {done_fmt}/{total_fmt} | {speed} | {file}`,
          barCompleteChar: "\u2588",
          barIncompleteChar: "\u2591",
          hideCursor: true,
          fps: 5,
          // a non-TTY stream only gets here when mode 'bar' is forced; print anyway
          noTTYOutput: !this.opts.stream.isTTY,
          notTTYSchedule: 2000,
        },
        cliProgress.Presets.shades_classic,
      );
      this.bar.start(Math.max(s.total, 1), s.bytes, this.payload());
    } else if (this.mode === "log") {
      const resumed = s.bytes > 0 ? `, resuming with ${formatBytes(s.bytes)} already present` : "";
      this.opts.logger.info(`download ${this.label}: ${s.filesTotal} file(s), ${formatBytes(s.total)}${resumed}`);
      this.maybeLog();
    }
    this.emit();
  }

  private readonly startedAt = Date.now();
  private startBytes = 0;

  private payload(): Record<string, string> {
    const s = this.state;
    const secs = (Date.now() - this.startedAt) / 1000;
    const rate = secs > 0.5 ? (s.bytes - this.startBytes) / secs : 0;
    return {
      file: s.file,
      done_fmt: formatBytes(s.bytes),
      total_fmt: formatBytes(s.total),
      speed: rate > 0 ? `${formatBytes(rate)}/s` : "-",
    };
  }

  fileStart(file: string, fileTotal: number, fileBytes: number): void {
    Object.assign(this.state, { file, fileTotal, fileBytes });
    this.bar?.update(this.state.bytes, this.payload());
    this.emit();
  }

  /** bytes appended to the current file (negative when a restart discards a partial file) */
  advance(delta: number): void {
    this.state.fileBytes += delta;
    this.state.bytes += delta;
    this.bar?.update(this.state.bytes, this.payload());
    if (this.mode === "log") this.maybeLog();
    this.emit();
  }

  fileDone(): void {
    this.state.filesDone++;
    this.emit();
  }

  finish(ok: boolean): void {
    if (this.bar) {
      this.bar.update(this.state.bytes, this.payload());
      this.bar.stop();
      this.bar = undefined;
    }
    if (ok) {
      this.state.done = true;
      this.state.file = "";
      if (this.mode === "log") {
        this.maybeLog();
        this.opts.logger.info(`download ${this.label}: done (${formatBytes(this.state.bytes)})`);
      }
      this.emit();
    }
  }

  private maybeLog(): void {
    const s = this.state;
    const step = this.opts.logStep ?? 10;
    const pct = s.total > 0 ? Math.floor((s.bytes / s.total) * 100) : 100;
    const bucket = Math.floor(pct / step);
    if (bucket <= this.lastStep) return;
    this.lastStep = bucket;
    const file = s.file ? ` ${s.file}` : "";
    this.opts.logger.info(`download ${this.label}: ${pct}% (${formatBytes(s.bytes)} / ${formatBytes(s.total)})${file}`);
  }

  private emit(): void {
    if (!this.opts.onProgress) return;
    try {
      this.opts.onProgress({ ...this.state });
    } catch {
      // a throwing progress callback must not break the download
    }
  }
}
