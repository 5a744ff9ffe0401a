// Where the graph's weights live. fp32 graphs point straight into the checkpoint's safetensors files
// (ONNX external data with offsets into them), through a hard link in the output folder: no second
// copy of a 2.6 GB checkpoint on disk, and the graph survives a cleared Hugging Face cache.
// onnxruntime refuses external data outside the model's folder (symlinks are resolved first), so a
// symlink won't do; across filesystems the file is copied, and `linkFallbacks` says so.
// fp16 graphs, or --copy-weights, write their own file; int8 graphs link the fp32 tensors they keep
// and write the quantized linear weights to their own file.
import { closeSync, copyFileSync, linkSync, mkdirSync, openSync, realpathSync, rmSync, statSync, writeSync } from "node:fs";
import { basename, join } from "node:path";
import { DataType, float32ToFloat16Bytes, type TensorProto } from "./onnx-graph.js";
import type { SafetensorsCheckpoint } from "../checkpoint/safetensors.js";

export type Precision = "fp32" | "fp16" | "int8";

/**
 * int8 weights use 7 bits ([-63, 63]): on x86 CPUs without VNNI, onnxruntime's u8×s8 kernels add
 * pairs of products in int16 (vpmaddubsw), and 255 × 64 × 2 still fits where 255 × 127 × 2 would
 * saturate. The same limit onnxruntime's own quantizer uses ("reduce_range").
 */
const INT8_WEIGHT_LIMIT = 63;
export type WeightsMode = "link" | "copy";

const ALIGN = 64;

export class WeightStore {
  private readonly links = new Map<string, string>();
  private fd: number | null = null;
  private offset = 0;
  readonly fileName: string | null;
  bytesWritten = 0;
  readonly linkFallbacks: string[] = [];

  constructor(
    private readonly ckpt: SafetensorsCheckpoint,
    private readonly outDir: string,
    readonly precision: Precision,
    readonly mode: WeightsMode,
  ) {
    this.fileName = precision !== "fp32" ? `weights.${precision}.bin` : mode === "copy" ? "weights.fp32.bin" : null;
    mkdirSync(outDir, { recursive: true });
    if (this.fileName) {
      this.fd = openSync(join(outDir, this.fileName), "w");
    }
  }

  get elemType() {
    return this.precision === "fp16" ? DataType.FLOAT16 : DataType.FLOAT;
  }

  /** An initializer for checkpoint tensor `key`, optionally viewed with other dims of the same size. */
  tensor(key: string, name: string, dims?: number[]): TensorProto & { name: string } {
    const info = this.ckpt.tensors.get(key);
    if (!info) throw new Error(`checkpoint is missing tensor ${key}`);
    if (info.dtype !== "F32") throw new Error(`tensor ${key} is ${info.dtype}, expected F32`);
    const shape = dims ?? [...info.shape];
    if (shape.reduce((a, b) => a * b, 1) !== info.shape.reduce((a, b) => a * b, 1)) {
      throw new Error(`cannot view ${key} [${info.shape}] as [${shape}]`);
    }
    if (this.fd === null || (this.precision === "int8" && this.mode === "link")) {
      return externalTensor(name, this.elemType, shape, this.linkFor(info.file), info.fileOffset, info.byteLength);
    }
    const f32 = this.ckpt.readFloat32(key);
    const bytes = this.precision === "fp16" ? float32ToFloat16Bytes(f32) : new Uint8Array(f32.buffer, f32.byteOffset, f32.byteLength);
    return this.written(name, this.elemType, shape, bytes);
  }

  /**
   * A linear layer's [out, in] weight as int8 [in, out] (MatMulInteger's layout) with one symmetric
   * scale per output channel: w ≈ q · scale, |q| ≤ INT8_WEIGHT_LIMIT.
   */
  int8Linear(key: string, name: string): { weight: TensorProto & { name: string }; scale: TensorProto & { name: string } } {
    if (this.precision !== "int8" || this.fd === null) throw new Error("int8Linear needs an int8 weight store");
    const info = this.ckpt.tensors.get(key);
    if (!info) throw new Error(`checkpoint is missing tensor ${key}`);
    if (info.shape.length !== 2) throw new Error(`tensor ${key} [${info.shape}] is not a linear weight`);
    const [out, inp] = info.shape as [number, number];
    const w = this.ckpt.readFloat32(key);
    const q = new Int8Array(out * inp);
    const scale = new Float32Array(out);
    for (let n = 0; n < out; n++) {
      let amax = 0;
      for (let k = 0, row = n * inp; k < inp; k++) amax = Math.max(amax, Math.abs(w[row + k]!));
      const s = amax > 0 ? Math.fround(amax / INT8_WEIGHT_LIMIT) : 1; // the float32 the graph stores
      scale[n] = s;
      for (let k = 0, row = n * inp; k < inp; k++) q[k * out + n] = roundHalfEven(w[row + k]! / s);
    }
    return {
      weight: this.written(`${name}.weight_int8`, DataType.INT8, [inp, out], new Uint8Array(q.buffer)),
      scale: this.written(`${name}.weight_scale`, DataType.FLOAT, [out], new Uint8Array(scale.buffer)),
    };
  }

  /** An initializer whose bytes are appended to this graph's own weight file. */
  private written(name: string, dataType: number, dims: number[], bytes: Uint8Array): TensorProto & { name: string } {
    return externalTensor(name, dataType, dims, this.fileName!, this.write(bytes), bytes.byteLength);
  }

  /** Appends bytes (64-byte aligned) to this graph's own weight file; returns their offset. */
  private write(bytes: Uint8Array): number {
    const fd = this.fd!;
    const pad = (ALIGN - (this.offset % ALIGN)) % ALIGN;
    if (pad) writeSync(fd, Buffer.alloc(pad), 0, pad, this.offset);
    this.offset += pad;
    const at = this.offset;
    writeSync(fd, bytes, 0, bytes.byteLength, at);
    this.offset += bytes.byteLength;
    this.bytesWritten += bytes.byteLength;
    return at;
  }

  /** A hard link in the output folder to a safetensors file (ONNX external data is resolved relative to the model). */
  private linkFor(file: string): string {
    const hit = this.links.get(file);
    if (hit) return hit;
    const name = basename(file);
    const link = join(this.outDir, name);
    const target = realpathSync(file);
    // Already that file (compiled into the checkpoint's own folder, or a link from an earlier
    // compile): removing it first would delete the checkpoint's weights.
    if (!sameFile(link, target)) {
      rmSync(link, { force: true });
      try {
        linkSync(target, link);
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code !== "EXDEV" && code !== "EPERM" && code !== "EMLINK") throw err;
        copyFileSync(target, link);
        this.linkFallbacks.push(`${name}: ${code}, copied`);
      }
    }
    this.links.set(file, name);
    return name;
  }

  /** The weight files the graph reads, relative to the output folder. */
  get files(): string[] {
    return [...(this.fileName ? [this.fileName] : []), ...this.links.values()];
  }

  close(): void {
    if (this.fd !== null) closeSync(this.fd);
    this.fd = null;
  }
}

/** An initializer stored as ONNX external data (relative to the model's folder). */
function externalTensor(name: string, dataType: number, dims: number[], location: string, offset: number, length: number): TensorProto & { name: string } {
  return {
    name,
    dataType,
    dims,
    dataLocation: 1, // EXTERNAL
    externalData: [
      { key: "location", value: location },
      { key: "offset", value: String(offset) },
      { key: "length", value: String(length) },
    ],
  };
}

/** Round half to even, as numpy and torch do. */
function roundHalfEven(x: number): number {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/** Whether `a` (followed if a symlink) is the file `b`; false when `a` does not exist. */
function sameFile(a: string, b: string): boolean {
  const sa = statSync(a, { throwIfNoEntry: false });
  if (!sa) return false;
  const sb = statSync(b);
  return sa.dev === sb.dev && sa.ino === sb.ino;
}
