// Where the graph's weights live. fp32 graphs point straight into the checkpoint's safetensors files
// (ONNX external data with offsets into them), through a hard link in the output folder: no second
// copy of a 2.6 GB checkpoint on disk, and the graph survives a cleared Hugging Face cache.
// onnxruntime refuses external data outside the model's folder (symlinks are resolved first), so a
// symlink won't do; across filesystems the file is copied, and `linkFallbacks` says so.
// fp16 graphs, or --copy-weights, write their own file.
import { closeSync, copyFileSync, linkSync, mkdirSync, openSync, realpathSync, rmSync, writeSync } from "node:fs";
import { basename, join } from "node:path";
import { DataType, float32ToFloat16Bytes, type TensorProto } from "./onnx-graph.js";
import type { SafetensorsCheckpoint } from "../checkpoint/safetensors.js";

export type Precision = "fp32" | "fp16";
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
    this.fileName = precision === "fp16" ? "weights.fp16.bin" : mode === "copy" ? "weights.fp32.bin" : null;
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
    const external = (location: string, offset: number, length: number): TensorProto & { name: string } => ({
      name,
      dataType: this.elemType,
      dims: shape,
      dataLocation: 1, // EXTERNAL
      externalData: [
        { key: "location", value: location },
        { key: "offset", value: String(offset) },
        { key: "length", value: String(length) },
      ],
    });
    if (this.fd === null) {
      return external(this.linkFor(info.file), info.fileOffset, info.byteLength);
    }
    const f32 = this.ckpt.readFloat32(key);
    const bytes = this.precision === "fp16" ? float32ToFloat16Bytes(f32) : new Uint8Array(f32.buffer, f32.byteOffset, f32.byteLength);
    const pad = (ALIGN - (this.offset % ALIGN)) % ALIGN;
    if (pad) writeSync(this.fd, Buffer.alloc(pad), 0, pad, this.offset);
    this.offset += pad;
    const at = this.offset;
    writeSync(this.fd, bytes, 0, bytes.byteLength, at);
    this.offset += bytes.byteLength;
    this.bytesWritten += bytes.byteLength;
    return external(this.fileName!, at, bytes.byteLength);
  }

  /** A hard link in the output folder to a safetensors file (ONNX external data is resolved relative to the model). */
  private linkFor(file: string): string {
    const hit = this.links.get(file);
    if (hit) return hit;
    const name = basename(file);
    const link = join(this.outDir, name);
    rmSync(link, { force: true });
    const target = realpathSync(file);
    try {
      linkSync(target, link);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== "EXDEV" && code !== "EPERM" && code !== "EMLINK") throw err;
      copyFileSync(target, link);
      this.linkFallbacks.push(`${name}: ${code}, copied`);
    }
    this.links.set(file, name);
    return name;
  }

  /** The weight files the graph reads, relative to the output folder. */
  get files(): string[] {
    return this.fileName ? [this.fileName] : [...this.links.values()];
  }

  close(): void {
    if (this.fd !== null) closeSync(this.fd);
    this.fd = null;
  }
}
