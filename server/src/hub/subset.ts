/**
 * The text tower's tensors alone, by HTTP Range requests: the shard index and each shard's safetensors header
 * say which bytes of which shard hold them (the plan, kept in a journal next to the partial file), and those
 * bytes are appended to one local safetensors file, resumed from the first missing byte.
 */
import { createReadStream } from "node:fs";
import { mkdir, open, readFile, rename, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { KNOWN_CHECKPOINTS } from "../checkpoint/catalogue.js";
import { SafetensorsFile, dtypeBytes, type SafetensorsDtype } from "../checkpoint/safetensors.js";
import { TEXT_SUBSET_FILE, isTextTowerTensor } from "../checkpoint/siglip.js";
import { fileSize, validateRepoFilePath } from "./cache.js";
import type { HubContext, HubOptions } from "./context.js";
import { HubDownloadError, RangeIgnored, RestartTransfer } from "./errors.js";
import { fetchFileMetas, streamFile, type FileMeta } from "./files.js";
import { retrying } from "./http.js";
import { ProgressReporter, formatBytes } from "./progress.js";

const INDEX_FILE = "model.safetensors.index.json";
const JOURNAL_VERSION = 1;
/** safetensors headers bigger than this are refused (the reference reader's limit) */
const MAX_HEADER = 100 * 1024 * 1024;

// ---------------------------------------------------------------------------------------------
// the plan: which bytes of which shard go where in the subset file

interface PlannedTensor {
  name: string;
  dtype: SafetensorsDtype;
  shape: number[];
  shard: string;
  /** absolute byte range in the shard */
  start: number;
  end: number;
}

/** One contiguous byte run of a shard, copied to a contiguous run of the subset file. */
interface Segment {
  shard: string;
  start: number;
  end: number;
  /** absolute offset in the subset file */
  dst: number;
}

interface Journal {
  version: number;
  repo: string;
  commit: string;
  /** the subset file's 8-byte length + header JSON, base64 (its first bytes on disk) */
  header: string;
  total: number;
  shards: Record<string, { etag: string; size: number; xet?: boolean }>;
  tensors: PlannedTensor[];
  segments: Segment[];
}

function subsetHeader(tensors: readonly PlannedTensor[], metadata: Record<string, string>): { bytes: Buffer; dataBytes: number } {
  const header: Record<string, unknown> = { __metadata__: metadata };
  let offset = 0;
  for (const t of tensors) {
    header[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + (t.end - t.start)] };
    offset += t.end - t.start;
  }
  let json = JSON.stringify(header);
  // pad with spaces so the data starts 8-byte aligned, as the reference writer does
  json += " ".repeat((8 - ((8 + Buffer.byteLength(json)) % 8)) % 8);
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(Buffer.byteLength(json)));
  return { bytes: Buffer.concat([len, Buffer.from(json, "utf8")]), dataBytes: offset };
}

function planSegments(tensors: readonly PlannedTensor[], dataStart: number): Segment[] {
  const out: Segment[] = [];
  let dst = dataStart;
  for (const t of tensors) {
    const last = out[out.length - 1];
    if (last && last.shard === t.shard && last.end === t.start && last.dst + (last.end - last.start) === dst) {
      last.end = t.end;
    } else {
      out.push({ shard: t.shard, start: t.start, end: t.end, dst });
    }
    dst += t.end - t.start;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// ranged reads (the library's Blob.slice, through files.ts's streamFile)

function badResponse(hub: HubContext, file: string, message: string): HubDownloadError {
  return new HubDownloadError("bad_response", message, { repo: hub.repo, revision: hub.revision, file });
}

/** RangeIgnored is no reason to retry here: the subset cannot be built without HTTP Range. */
function rangeRequired(hub: HubContext, file: string, err: unknown): unknown {
  if (!(err instanceof RangeIgnored)) return err;
  return new HubDownloadError(
    "http",
    `The server did not answer a Range request for ${file} of ${hub.repo} with the bytes asked (${err.message}): the text ` +
      `tower subset needs HTTP Range support. If HF_ENDPOINT (${hub.endpoint}) is a mirror or proxy, let Range ` +
      `requests through, or use the Hugging Face Hub directly.`,
    { repo: hub.repo, revision: hub.revision, file },
  );
}

/** A small ranged read (a shard header), retried on transient errors. */
async function readRange(hub: HubContext, commit: string, meta: FileMeta, from: number, to: number): Promise<Buffer> {
  const name = `bytes ${from}-${to} of ${meta.file}`;
  return retrying(hub, { name, commit, file: meta.file, total: to - from + 1 }, async () => {
    const chunks: Uint8Array[] = [];
    await streamFile(hub, commit, meta, from, to + 1, async (c) => void chunks.push(c)).catch((err: unknown) => {
      throw rangeRequired(hub, meta.file, err);
    });
    const buf = Buffer.concat(chunks);
    if (buf.length !== to - from + 1) throw new RestartTransfer(`got ${buf.length} of ${to - from + 1} bytes`);
    return buf;
  });
}

interface ShardHeaderEntry {
  dtype: string;
  shape: number[];
  data_offsets: [number, number];
}

/** The safetensors header of a remote shard: the 8-byte length, then the JSON. */
async function fetchShardHeader(hub: HubContext, commit: string, meta: FileMeta): Promise<{ entries: Record<string, ShardHeaderEntry>; dataStart: number }> {
  const { file: shard, size } = meta;
  if (size < 8) throw badResponse(hub, shard, `${shard} of ${hub.repo}@${commit} has ${size} bytes: not a safetensors file.`);
  const n = Number((await readRange(hub, commit, meta, 0, 7)).readBigUInt64LE(0));
  if (n <= 0 || n > MAX_HEADER || 8 + n > size) {
    throw badResponse(hub, shard, `${shard} of ${hub.repo}@${commit}: header length ${n} does not fit a safetensors file of ${size} bytes.`);
  }
  const json = await readRange(hub, commit, meta, 8, 8 + n - 1);
  try {
    return { entries: JSON.parse(json.toString("utf8")) as Record<string, ShardHeaderEntry>, dataStart: 8 + n };
  } catch (err) {
    throw badResponse(hub, shard, `${shard} of ${hub.repo}@${commit}: the safetensors header is not JSON (${(err as Error).message}).`);
  }
}

/** Resolve the wanted tensors through the index and the shards' headers into a plan (no data transferred). */
async function makePlan(hub: HubContext, commit: string, index: Record<string, string>, wanted: string[]): Promise<Journal> {
  const byShard = new Map<string, string[]>();
  for (const name of wanted) {
    const shard = index[name]!;
    validateRepoFilePath(shard);
    byShard.set(shard, [...(byShard.get(shard) ?? []), name]);
  }
  const shards: Journal["shards"] = {};
  const tensors: PlannedTensor[] = [];
  const metas = await fetchFileMetas(hub, commit, [...byShard.keys()].sort());
  for (const meta of metas) {
    const { file: shard, etag, size, xet } = meta;
    shards[shard] = { etag, size, xet };
    const { entries, dataStart } = await fetchShardHeader(hub, commit, meta);
    const inShard: PlannedTensor[] = [];
    for (const name of byShard.get(shard)!) {
      const e = entries[name];
      if (!e || typeof e !== "object") {
        throw badResponse(hub, shard, `${INDEX_FILE} of ${hub.repo}@${commit} puts ${name} in ${shard}, but that shard's header has no such tensor.`);
      }
      const dtype = e.dtype as SafetensorsDtype;
      const width = dtypeBytes(dtype) as number | undefined;
      const [begin, end] = Array.isArray(e.data_offsets) ? e.data_offsets : [NaN, NaN];
      const shape = Array.isArray(e.shape) ? e.shape : [];
      const expected = width === undefined ? NaN : shape.reduce((a, b) => a * b, 1) * width;
      if (width === undefined || !Number.isSafeInteger(begin) || end - begin !== expected || begin < 0 || dataStart + end > size) {
        throw badResponse(
          hub,
          shard,
          `${shard} of ${hub.repo}@${commit}: tensor ${name} (${String(e.dtype)} [${shape.join(", ")}]) has data_offsets ` +
            `[${begin}, ${end}] that do not fit its dtype and shape or the file (${size} bytes).`,
        );
      }
      inShard.push({ name, dtype, shape, shard, start: dataStart + begin, end: dataStart + end });
    }
    inShard.sort((a, b) => a.start - b.start);
    tensors.push(...inShard);
  }
  const { bytes, dataBytes } = subsetHeader(tensors, {
    format: "pt",
    source: `${hub.repo}@${commit}`,
    source_files: Object.keys(shards).join(","),
  });
  return {
    version: JOURNAL_VERSION,
    repo: hub.repo,
    commit,
    header: bytes.toString("base64"),
    total: bytes.length + dataBytes,
    shards,
    tensors,
    segments: planSegments(tensors, bytes.length),
  };
}

/** Stream `seg` from `from` (absolute shard offset) to its end onto `fh` (opened for appending). */
async function transferSegment(
  hub: HubContext,
  commit: string,
  seg: Segment,
  from: number,
  shard: Journal["shards"][string],
  fh: Awaited<ReturnType<typeof open>>,
  onBytes: (n: number) => void,
): Promise<void> {
  let left = seg.end - from;
  const meta: FileMeta = { file: seg.shard, etag: shard.etag, size: shard.size, lfs: true, xet: shard.xet ?? false };
  try {
    await streamFile(hub, commit, meta, from, seg.end, async (chunk) => {
      if (chunk.byteLength > left) throw badResponse(hub, seg.shard, `${seg.shard}: more bytes than the Range asked for (${seg.end - from}).`);
      await fh.write(chunk);
      left -= chunk.byteLength;
      onBytes(chunk.byteLength);
    });
  } catch (err) {
    throw rangeRequired(hub, seg.shard, err);
  }
  if (left > 0) throw new RestartTransfer(`connection closed with ${formatBytes(left)} of bytes ${from}-${seg.end - 1} of ${seg.shard} missing`);
}

async function readJournal(path: string, repo: string, commit: string): Promise<Journal | undefined> {
  try {
    const j = JSON.parse(await readFile(path, "utf8")) as Journal;
    if (j.version === JOURNAL_VERSION && j.repo === repo && j.commit === commit && Array.isArray(j.segments) && typeof j.header === "string") return j;
  } catch {
    // none or unreadable: plan again
  }
  return undefined;
}

async function readPrefix(path: string, n: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  if (n > 0) for await (const c of createReadStream(path, { start: 0, end: n - 1 })) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

/**
 * Build `<dir>/text_model.safetensors` from ranged reads: plan (or reuse the journal's plan), then append the
 * missing bytes to the .incomplete file. Its size says how far it got: the header is written first, then the
 * segments in order, so a rerun resumes with a Range request from the first missing byte.
 */
export async function downloadSubset(
  hub: HubContext,
  commit: string,
  snapshot: string,
  dir: string,
  opts: HubOptions,
): Promise<{ tensors: string[]; downloadedBytes: number }> {
  const target = join(dir, TEXT_SUBSET_FILE);
  const incomplete = `${target}.incomplete`;
  const journalPath = `${target}.journal.json`;
  await mkdir(dir, { recursive: true });

  let journal = await readJournal(journalPath, hub.repo, commit);
  if (!journal) {
    let weightMap: Record<string, string>;
    try {
      const parsed = JSON.parse(await readFile(join(snapshot, INDEX_FILE), "utf8")) as { weight_map?: unknown };
      if (!parsed.weight_map || typeof parsed.weight_map !== "object") throw new Error("no weight_map");
      weightMap = parsed.weight_map as Record<string, string>;
    } catch (err) {
      throw badResponse(hub, INDEX_FILE, `${INDEX_FILE} of ${hub.repo}@${commit} is unusable (${(err as Error).message}).`);
    }
    const wanted = Object.keys(weightMap).filter(isTextTowerTensor).sort();
    const missing = ["logit_scale", "logit_bias"].filter((n) => !(n in weightMap));
    if (!wanted.some((n) => n.startsWith("text_model.")) || missing.length > 0) {
      throw badResponse(
        hub,
        INDEX_FILE,
        `${hub.repo}@${commit} does not look like a SigLIP checkpoint: its ${INDEX_FILE} has ` +
          (missing.length > 0 ? `no ${missing.join(", ")}` : "no text_model.* tensors") +
          `. The text tower must be a SiglipModel repo such as ${KNOWN_CHECKPOINTS["c-radio_v4-h"]!.textTower!.repo}.`,
      );
    }
    journal = await makePlan(hub, commit, weightMap, wanted);
    await rm(incomplete, { force: true });
    const tmp = `${journalPath}.tmp-${process.pid}`;
    await writeFile(tmp, JSON.stringify(journal));
    await rename(tmp, journalPath);
  }
  const header = Buffer.from(journal.header, "base64");
  const total = journal.total;

  // a partial file must start with this plan's header; anything else is stale
  let have = (await fileSize(incomplete)) ?? 0;
  if (have > 0 && (have < header.length || have > total || !(await readPrefix(incomplete, header.length)).equals(header))) {
    hub.log.warn(`${incomplete} does not match its journal; downloading the text tower subset again`);
    await rm(incomplete, { force: true });
    have = 0;
  }
  const initial = have;
  const progress = new ProgressReporter({
    repo: hub.repo,
    commit,
    total,
    initial,
    filesTotal: 1,
    mode: opts.progress ?? "auto",
    stream: opts.progressStream ?? process.stderr,
    logger: hub.log,
    onProgress: opts.onProgress,
  });
  progress.start();
  progress.fileStart(TEXT_SUBSET_FILE, total, initial);
  if (initial > header.length) {
    hub.log.info(`resuming ${TEXT_SUBSET_FILE} of ${hub.repo} from ${formatBytes(initial)} of ${formatBytes(total)}`);
  }
  if (have === 0) {
    await writeFile(incomplete, header);
    have = header.length;
    progress.advance(header.length);
  }
  const startedAt = have;
  let ok = false;
  try {
    const name = `${TEXT_SUBSET_FILE} (text tower subset)`;
    await retrying(hub, { name, commit, file: TEXT_SUBSET_FILE, incomplete, total, partialNote: ` (plan in ${journalPath})` }, async () => {
      const offset = (await fileSize(incomplete)) ?? 0;
      if (offset < have) throw new Error(`${incomplete} shrank while downloading`);
      have = offset;
      const fh = await open(incomplete, "a");
      try {
        for (const seg of journal.segments) {
          const segEnd = seg.dst + (seg.end - seg.start);
          if (segEnd <= have) continue;
          await transferSegment(hub, commit, seg, seg.start + (have - seg.dst), journal.shards[seg.shard]!, fh, (n) => {
            have += n;
            progress.advance(n);
          });
        }
      } finally {
        await fh.close();
      }
    });
    const got = (await fileSize(incomplete)) ?? 0;
    if (got !== total) throw badResponse(hub, TEXT_SUBSET_FILE, `${incomplete} has ${got} bytes, ${total} expected.`);
    // the header and every tensor's byte length are checked once more by reading the file back
    const check = SafetensorsFile.open(incomplete);
    try {
      const names = [...check.tensors.keys()].sort();
      const planned = journal.tensors.map((t) => t.name).sort();
      if (names.join("\n") !== planned.join("\n")) throw new Error("tensor names differ from the plan");
    } finally {
      check.close();
    }
    await rename(incomplete, target);
    await rm(journalPath, { force: true });
    progress.fileDone();
    ok = true;
  } finally {
    progress.finish(ok);
  }
  return { tensors: journal.tensors.map((t) => t.name), downloadedBytes: have - startedAt };
}
