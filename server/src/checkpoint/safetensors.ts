// safetensors reader/writer. The reader parses the JSON header and hands out lazy tensor views:
// a tensor's bytes are read from disk only when asked for, so a 2.6 GB checkpoint is never held
// in memory whole. The compiler mostly needs only the header (names, shapes, byte ranges): the
// ONNX graph points at the weights in place as external data.
import { closeSync, createWriteStream, fstatSync, openSync, readSync } from "node:fs";
import { once } from "node:events";

export type SafetensorsDtype = "F64" | "F32" | "F16" | "BF16" | "I64" | "I32" | "I16" | "I8" | "U8" | "BOOL";

const DTYPE_BYTES: Record<SafetensorsDtype, number> = {
  F64: 8,
  F32: 4,
  F16: 2,
  BF16: 2,
  I64: 8,
  I32: 4,
  I16: 2,
  I8: 1,
  U8: 1,
  BOOL: 1,
};

export function dtypeBytes(dtype: SafetensorsDtype): number {
  return DTYPE_BYTES[dtype];
}

export interface TensorInfo {
  readonly name: string;
  readonly dtype: SafetensorsDtype;
  readonly shape: readonly number[];
  /** Absolute byte offset of the tensor's data in the file. */
  readonly fileOffset: number;
  readonly byteLength: number;
  /** The file holding it (checkpoints may be sharded). */
  readonly file: string;
}

export class SafetensorsError extends Error {
  override name = "SafetensorsError";
}

/** One safetensors file, opened for lazy reads. */
export class SafetensorsFile {
  readonly tensors: ReadonlyMap<string, TensorInfo>;
  readonly metadata: Readonly<Record<string, string>>;
  private fd: number | null;

  private constructor(
    readonly path: string,
    fd: number,
    tensors: Map<string, TensorInfo>,
    metadata: Record<string, string>,
  ) {
    this.fd = fd;
    this.tensors = tensors;
    this.metadata = metadata;
  }

  static open(path: string): SafetensorsFile {
    const fd = openSync(path, "r");
    try {
      const size = fstatSync(fd).size;
      const lenBuf = Buffer.alloc(8);
      if (size < 8 || readSync(fd, lenBuf, 0, 8, 0) !== 8) {
        throw new SafetensorsError(`${path}: not a safetensors file (shorter than its 8-byte header length)`);
      }
      const headerLen = Number(lenBuf.readBigUInt64LE(0));
      if (headerLen <= 0 || 8 + headerLen > size || headerLen > 100 * 1024 * 1024) {
        throw new SafetensorsError(`${path}: header length ${headerLen} does not fit a file of ${size} bytes`);
      }
      const headerBuf = Buffer.alloc(headerLen);
      readSync(fd, headerBuf, 0, headerLen, 8);
      let header: Record<string, unknown>;
      try {
        header = JSON.parse(headerBuf.toString("utf8")) as Record<string, unknown>;
      } catch (err) {
        throw new SafetensorsError(`${path}: header is not valid JSON (${(err as Error).message})`);
      }
      const dataStart = 8 + headerLen;
      const tensors = new Map<string, TensorInfo>();
      let metadata: Record<string, string> = {};
      for (const [name, raw] of Object.entries(header)) {
        if (name === "__metadata__") {
          metadata = (raw ?? {}) as Record<string, string>;
          continue;
        }
        const entry = raw as { dtype?: string; shape?: number[]; data_offsets?: [number, number] };
        const dtype = entry.dtype as SafetensorsDtype;
        if (!(dtype in DTYPE_BYTES)) throw new SafetensorsError(`${path}: tensor ${name} has unsupported dtype ${entry.dtype}`);
        const shape = entry.shape ?? [];
        const [begin, end] = entry.data_offsets ?? [NaN, NaN];
        const expected = shape.reduce((a, b) => a * b, 1) * DTYPE_BYTES[dtype];
        if (!(end - begin === expected) || dataStart + end > size) {
          throw new SafetensorsError(
            `${path}: tensor ${name} (${dtype} [${shape.join(", ")}]) has data_offsets [${begin}, ${end}] that do not fit its shape or the file`,
          );
        }
        tensors.set(name, { name, dtype, shape, fileOffset: dataStart + begin, byteLength: expected, file: path });
      }
      return new SafetensorsFile(path, fd, tensors, metadata);
    } catch (err) {
      closeSync(fd);
      throw err;
    }
  }

  /** Reads one tensor's bytes (a copy of that tensor only). */
  readBytes(name: string): Buffer {
    const info = this.tensors.get(name);
    if (!info) throw new SafetensorsError(`${this.path}: no tensor named ${name}`);
    if (this.fd === null) throw new SafetensorsError(`${this.path}: file already closed`);
    const buf = Buffer.alloc(info.byteLength);
    let done = 0;
    while (done < info.byteLength) {
      const n = readSync(this.fd, buf, done, info.byteLength - done, info.fileOffset + done);
      if (n <= 0) throw new SafetensorsError(`${this.path}: short read for ${name}`);
      done += n;
    }
    return buf;
  }

  readFloat32(name: string): Float32Array {
    const info = this.tensors.get(name);
    if (info?.dtype !== "F32") throw new SafetensorsError(`${this.path}: ${name} is ${info?.dtype ?? "missing"}, expected F32`);
    const b = this.readBytes(name);
    return new Float32Array(b.buffer, b.byteOffset, b.byteLength / 4);
  }

  readInt64(name: string): BigInt64Array {
    const info = this.tensors.get(name);
    if (info?.dtype !== "I64") throw new SafetensorsError(`${this.path}: ${name} is ${info?.dtype ?? "missing"}, expected I64`);
    const b = this.readBytes(name);
    return new BigInt64Array(b.buffer, b.byteOffset, b.byteLength / 8);
  }

  close(): void {
    if (this.fd !== null) closeSync(this.fd);
    this.fd = null;
  }
}

/** Several safetensors files (a sharded checkpoint) seen as one tensor map. */
export class SafetensorsCheckpoint {
  readonly tensors = new Map<string, TensorInfo>();
  private readonly files: SafetensorsFile[];

  constructor(paths: readonly string[]) {
    this.files = paths.map((p) => SafetensorsFile.open(p));
    for (const f of this.files) {
      for (const [name, info] of f.tensors) {
        if (this.tensors.has(name)) throw new SafetensorsError(`tensor ${name} appears in two shards (${this.tensors.get(name)!.file}, ${f.path})`);
        this.tensors.set(name, info);
      }
    }
  }

  get paths(): string[] {
    return this.files.map((f) => f.path);
  }

  private fileOf(name: string): SafetensorsFile {
    const info = this.tensors.get(name);
    const f = info && this.files.find((x) => x.path === info.file);
    if (!f) throw new SafetensorsError(`no tensor named ${name}`);
    return f;
  }

  readBytes(name: string): Buffer {
    return this.fileOf(name).readBytes(name);
  }
  readFloat32(name: string): Float32Array {
    return this.fileOf(name).readFloat32(name);
  }
  readInt64(name: string): BigInt64Array {
    return this.fileOf(name).readInt64(name);
  }
  close(): void {
    for (const f of this.files) f.close();
  }
}

export interface TensorToWrite {
  name: string;
  dtype: SafetensorsDtype;
  shape: number[];
  /** Produces the tensor's little-endian bytes when it is written, so large files stream. */
  data: () => Uint8Array;
}

/** Writes a safetensors file, streaming one tensor at a time (names sorted, as the reference writer does). */
export async function writeSafetensors(path: string, tensors: TensorToWrite[], metadata: Record<string, string> = { format: "pt" }): Promise<void> {
  const sorted = [...tensors].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const header: Record<string, unknown> = { __metadata__: metadata };
  let offset = 0;
  for (const t of sorted) {
    const len = t.shape.reduce((a, b) => a * b, 1) * DTYPE_BYTES[t.dtype];
    header[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + len] };
    offset += len;
  }
  let json = JSON.stringify(header);
  // Pad the header with spaces so tensor data starts 8-byte aligned.
  json += " ".repeat((8 - ((8 + Buffer.byteLength(json)) % 8)) % 8);
  const lenBuf = Buffer.alloc(8);
  lenBuf.writeBigUInt64LE(BigInt(Buffer.byteLength(json)));
  const out = createWriteStream(path);
  const write = async (chunk: Uint8Array) => {
    if (!out.write(chunk)) await once(out, "drain");
  };
  await write(lenBuf);
  await write(Buffer.from(json, "utf8"));
  for (const t of sorted) {
    const bytes = t.data();
    const len = t.shape.reduce((a, b) => a * b, 1) * DTYPE_BYTES[t.dtype];
    if (bytes.byteLength !== len) throw new SafetensorsError(`tensor ${t.name}: ${bytes.byteLength} bytes given, ${len} expected`);
    await write(bytes);
  }
  out.end();
  await once(out, "finish");
}
