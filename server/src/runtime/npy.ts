// NumPy .npy files (format 1.0/2.0, little-endian, C order) for the `run` command's tensors.
import { readFileSync, writeFileSync } from "node:fs";

export interface NpyArray {
  dtype: "<f4" | "<f8" | "|u1" | "<i8";
  shape: number[];
  data: Float32Array | Float64Array | Uint8Array | BigInt64Array;
}

const MAGIC = Buffer.from([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59]);

export function readNpy(path: string): NpyArray {
  const buf = readFileSync(path);
  if (buf.length < 10 || !buf.subarray(0, 6).equals(MAGIC)) throw new Error(`${path} is not a .npy file`);
  const major = buf[6]!;
  const headerLen = major === 1 ? buf.readUInt16LE(8) : buf.readUInt32LE(8);
  const start = (major === 1 ? 10 : 12) + headerLen;
  const header = buf.subarray(major === 1 ? 10 : 12, start).toString("latin1");
  const descr = /'descr':\s*'([^']+)'/.exec(header)?.[1];
  const fortran = /'fortran_order':\s*(True|False)/.exec(header)?.[1];
  const shapeStr = /'shape':\s*\(([^)]*)\)/.exec(header)?.[1];
  if (!descr || !fortran || shapeStr === undefined) throw new Error(`${path}: cannot parse .npy header ${header.trim()}`);
  if (fortran === "True") throw new Error(`${path}: Fortran-order arrays are not supported; save with np.ascontiguousarray`);
  const shape = shapeStr
    .split(",")
    .map((s) => s.trim())
    .filter((s) => s.length > 0)
    .map(Number);
  const count = shape.reduce((a, b) => a * b, 1);
  // Copy into an aligned buffer: typed arrays need element alignment.
  const body = Uint8Array.prototype.slice.call(buf, start);
  const ctor = { "<f4": Float32Array, "<f8": Float64Array, "|u1": Uint8Array, "<i8": BigInt64Array }[descr as NpyArray["dtype"]];
  if (!ctor) throw new Error(`${path}: dtype ${descr} is not supported (use float32 '<f4')`);
  const data = new ctor(body.buffer, 0, count);
  if (data.byteLength > body.byteLength) throw new Error(`${path}: file shorter than its shape ${JSON.stringify(shape)}`);
  return { dtype: descr as NpyArray["dtype"], shape, data };
}

export function writeNpy(path: string, data: Float32Array, shape: readonly number[]): void {
  let header = `{'descr': '<f4', 'fortran_order': False, 'shape': (${shape.join(", ")}${shape.length === 1 ? "," : ""}), }`;
  const pad = 64 - ((10 + header.length + 1) % 64);
  header += `${" ".repeat(pad % 64)}\n`;
  const head = Buffer.alloc(10);
  MAGIC.copy(head, 0);
  head[6] = 1;
  head[7] = 0;
  head.writeUInt16LE(header.length, 8);
  writeFileSync(path, Buffer.concat([head, Buffer.from(header, "latin1"), Buffer.from(data.buffer, data.byteOffset, data.byteLength)]));
}
