// Writes files in torch.save's zip format (what `torch.load` reads, `weights_only=True` included):
//
//   <root>/data.pkl            a pickle (protocol 2) of the object; each tensor is
//                              torch._utils._rebuild_tensor_v2(<persistent id>, offset, size, stride, False, OrderedDict())
//                              and its storage a persistent id ('storage', torch.HalfStorage, '<key>', 'cpu', numel)
//   <root>/.format_version     "1"
//   <root>/.storage_alignment  "64"
//   <root>/byteorder           "little"
//   <root>/data/<key>          the storages' raw little-endian bytes, 64-byte aligned in the file
//   <root>/version             "3\n"
//   <root>/.data/serialization_id
//
// All entries are STORED (uncompressed), as torch writes them. Both halves are written by hand here:
// no maintained JS pickle library writes torch's persistent-id storages (the pickle writers on npm emit
// plain data only, with no BINPERSID, and would still need this module's torch-specific value types),
// and the zip needs torch's 64-byte data alignment (an extra-field pad in each local header) and must
// stream a storage at a time for full-size checkpoints, neither of which yazl/fflate's simple APIs do.
// The format is small and stable: python's pickle (Lib/pickle.py, protocol 2 opcodes) and torch's
// serialization (torch/serialization.py `_save`, caffe2/serialize/inline_container.cc).
import { closeSync, openSync, writeSync } from "node:fs";
import * as zlib from "node:zlib";

// ---------------------------------------------------------------------------------------------------
// float16

const f32buf = new Float32Array(1);
const u32buf = new Uint32Array(f32buf.buffer);

/** IEEE binary16 bits of x, rounded to nearest, ties to even (what torch's .half() does). */
export function float32ToFloat16Bits(x: number): number {
  f32buf[0] = x;
  const b = u32buf[0]!;
  const sign = (b >>> 16) & 0x8000;
  const exp = (b >>> 23) & 0xff;
  let mant = b & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 | (mant >>> 13) : 0); // inf / nan
  const e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00; // overflow → inf
  if (e <= 0) {
    // subnormal half (or zero): shift the full mantissa (with its implicit 1) right
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    const half = mant >>> shift;
    const rem = mant & ((1 << shift) - 1);
    const mid = 1 << (shift - 1);
    return sign | (rem > mid || (rem === mid && half & 1) ? half + 1 : half);
  }
  const half = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  // a carry out of the mantissa correctly bumps the exponent (and reaches inf at the top)
  return sign | (rem > 0x1000 || (rem === 0x1000 && half & 1) ? half + 1 : half);
}

/** The float value of binary16 bits. */
export function float16BitsToFloat32(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >>> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 0x1f) return mant ? NaN : sign * Infinity;
  return sign * (1 + mant / 1024) * 2 ** (exp - 15);
}

/** x rounded to the nearest float16 value, as float32. */
export function roundToFloat16(x: number): number {
  return float16BitsToFloat32(float32ToFloat16Bits(x));
}

/** float16 little-endian bytes of the values. */
export function toFloat16Bytes(values: Float32Array): Uint8Array {
  const out = new Uint16Array(values.length);
  for (let i = 0; i < values.length; i++) out[i] = float32ToFloat16Bits(values[i]!);
  return new Uint8Array(out.buffer);
}

// ---------------------------------------------------------------------------------------------------
// pickle values

/** A Python global (module attribute), pickled with GLOBAL: a class, a function, torch.float32. */
export class PyGlobal {
  constructor(
    readonly module: string,
    readonly name: string,
  ) {}
}
/** A Python tuple (JS arrays are lists). */
export class PyTuple {
  constructor(readonly items: PyValue[]) {}
}
/** A Python float with an integral value (JS numbers that are integers are pickled as ints). */
export class PyFloat {
  constructor(readonly value: number) {}
}
/** callable(*args), then (for dict subclasses such as OrderedDict) SETITEMS with the items: REDUCE. */
export class PyReduce {
  constructor(
    readonly callable: PyGlobal,
    readonly args: PyTuple,
    readonly items: [PyValue, PyValue][] = [],
  ) {}
}
/** cls.__new__(cls), then BUILD with the state dict (its __dict__): NEWOBJ + BUILD, as for argparse.Namespace. */
export class PyObject {
  constructor(
    readonly cls: PyGlobal,
    readonly state: Map<string, PyValue>,
  ) {}
}
/** A persistent id (BINPERSID): torch's reference to a storage stored beside the pickle. */
export class PyPersistentId {
  constructor(readonly id: PyTuple) {}
}

export type PyValue =
  | null
  | boolean
  | number
  | bigint
  | string
  | PyValue[]
  | Map<PyValue, PyValue>
  | { [key: string]: PyValue }
  | PyGlobal
  | PyTuple
  | PyFloat
  | PyReduce
  | PyObject
  | PyPersistentId
  | TensorRef;

const OP = {
  PROTO: 0x80,
  STOP: 0x2e,
  MARK: 0x28,
  NONE: 0x4e,
  NEWTRUE: 0x88,
  NEWFALSE: 0x89,
  BININT: 0x4a,
  BININT1: 0x4b,
  BININT2: 0x4d,
  LONG1: 0x8a,
  BINFLOAT: 0x47,
  BINUNICODE: 0x58,
  EMPTY_LIST: 0x5d,
  APPENDS: 0x65,
  EMPTY_DICT: 0x7d,
  SETITEMS: 0x75,
  EMPTY_TUPLE: 0x29,
  TUPLE: 0x74,
  TUPLE1: 0x85,
  TUPLE2: 0x86,
  TUPLE3: 0x87,
  GLOBAL: 0x63,
  REDUCE: 0x52,
  NEWOBJ: 0x81,
  BUILD: 0x62,
  BINPERSID: 0x51,
  BINPUT: 0x71,
  LONG_BINPUT: 0x72,
  BINGET: 0x68,
  LONG_BINGET: 0x6a,
} as const;

/** python's pickler batches APPENDS / SETITEMS by this many items */
const BATCH = 1000;

/**
 * Pickles a value with protocol 2, the protocol torch.save uses. Strings and globals are memoised (BINPUT
 * once, BINGET after), as python's pickler does; containers are written fresh each time they appear.
 */
export function pickle(value: PyValue): Uint8Array {
  const chunks: number[] = [];
  const memo = new Map<string, number>();
  const byte = (b: number): void => {
    chunks.push(b);
  };
  const bytes = (b: Uint8Array | number[]) => {
    for (const x of b) chunks.push(x);
  };
  const u32 = (n: number) => bytes([n & 0xff, (n >>> 8) & 0xff, (n >>> 16) & 0xff, (n >>> 24) & 0xff]);
  const put = (key: string) => {
    const i = memo.size;
    memo.set(key, i);
    if (i < 256) bytes([OP.BINPUT, i]);
    else byte(OP.LONG_BINPUT), u32(i);
  };
  const get = (key: string): boolean => {
    const i = memo.get(key);
    if (i === undefined) return false;
    if (i < 256) bytes([OP.BINGET, i]);
    else byte(OP.LONG_BINGET), u32(i);
    return true;
  };
  const int = (n: bigint) => {
    if (n >= 0n && n < 256n) bytes([OP.BININT1, Number(n)]);
    else if (n >= 0n && n < 65536n) bytes([OP.BININT2, Number(n & 0xffn), Number(n >> 8n)]);
    else if (n >= -(2n ** 31n) && n < 2n ** 31n) byte(OP.BININT), u32(Number(BigInt.asUintN(32, n)));
    else {
      // LONG1: little-endian two's complement, shortest that keeps the sign
      const out: number[] = [];
      let v = n;
      for (;;) {
        const b = Number(v & 0xffn);
        out.push(b);
        v >>= 8n;
        if ((v === 0n && !(b & 0x80)) || (v === -1n && b & 0x80)) break;
      }
      bytes([OP.LONG1, out.length, ...out]);
    }
  };
  const items = (pairs: [PyValue, PyValue][]) => {
    for (let i = 0; i < pairs.length; i += BATCH) {
      byte(OP.MARK);
      for (const [k, v] of pairs.slice(i, i + BATCH)) write(k), write(v);
      byte(OP.SETITEMS);
    }
  };
  const tuple = (t: PyTuple) => {
    const n = t.items.length;
    if (n === 0) return byte(OP.EMPTY_TUPLE);
    if (n > 3) byte(OP.MARK);
    for (const x of t.items) write(x);
    byte(n === 1 ? OP.TUPLE1 : n === 2 ? OP.TUPLE2 : n === 3 ? OP.TUPLE3 : OP.TUPLE);
  };
  const write = (v: PyValue): void => {
    if (v === null) return byte(OP.NONE);
    if (v === true) return byte(OP.NEWTRUE);
    if (v === false) return byte(OP.NEWFALSE);
    if (typeof v === "bigint") return int(v);
    if (typeof v === "number") {
      if (Number.isInteger(v)) return int(BigInt(v));
      const b = new DataView(new ArrayBuffer(8));
      b.setFloat64(0, v, false); // big-endian, as BINFLOAT wants
      return bytes([OP.BINFLOAT, ...new Uint8Array(b.buffer)]);
    }
    if (v instanceof PyFloat) {
      const b = new DataView(new ArrayBuffer(8));
      b.setFloat64(0, v.value, false);
      return bytes([OP.BINFLOAT, ...new Uint8Array(b.buffer)]);
    }
    if (typeof v === "string") {
      const key = `s:${v}`;
      if (get(key)) return;
      const utf8 = Buffer.from(v, "utf8");
      byte(OP.BINUNICODE);
      u32(utf8.length);
      bytes(utf8);
      return put(key);
    }
    if (v instanceof PyGlobal) {
      const key = `g:${v.module}\n${v.name}`;
      if (get(key)) return;
      byte(OP.GLOBAL);
      bytes(Buffer.from(`${v.module}\n${v.name}\n`, "ascii"));
      return put(key);
    }
    if (v instanceof PyTuple) return tuple(v);
    if (v instanceof TensorRef) throw new Error("pickle: a TensorRef needs writeTorchSave, which stores its data beside the pickle");
    if (v instanceof PyReduce) {
      write(v.callable);
      tuple(v.args);
      byte(OP.REDUCE);
      if (v.items.length) items(v.items);
      return;
    }
    if (v instanceof PyObject) {
      write(v.cls);
      byte(OP.EMPTY_TUPLE);
      byte(OP.NEWOBJ);
      byte(OP.EMPTY_DICT);
      if (v.state.size) items([...v.state]);
      return byte(OP.BUILD);
    }
    if (v instanceof PyPersistentId) {
      tuple(v.id);
      return byte(OP.BINPERSID);
    }
    if (Array.isArray(v)) {
      byte(OP.EMPTY_LIST);
      for (let i = 0; i < v.length; i += BATCH) {
        byte(OP.MARK);
        for (const x of v.slice(i, i + BATCH)) write(x);
        byte(OP.APPENDS);
      }
      return;
    }
    byte(OP.EMPTY_DICT);
    const pairs: [PyValue, PyValue][] = v instanceof Map ? [...v] : Object.entries(v);
    if (pairs.length) items(pairs);
  };
  bytes([OP.PROTO, 2]);
  write(value);
  byte(OP.STOP);
  return Uint8Array.from(chunks);
}

// ---------------------------------------------------------------------------------------------------
// tensors

export const torchGlobals = {
  OrderedDict: new PyGlobal("collections", "OrderedDict"),
  rebuildTensorV2: new PyGlobal("torch._utils", "_rebuild_tensor_v2"),
  HalfStorage: new PyGlobal("torch", "HalfStorage"),
  FloatStorage: new PyGlobal("torch", "FloatStorage"),
  float32: new PyGlobal("torch", "float32"),
  Namespace: new PyGlobal("argparse", "Namespace"),
};

/** collections.OrderedDict(items), pickled as torch pickles a state dict. */
export function orderedDict(items: [PyValue, PyValue][]): PyReduce {
  return new PyReduce(torchGlobals.OrderedDict, new PyTuple([]), items);
}

/** A tensor stored in the checkpoint: float16 or float32, contiguous, in its own storage. */
export interface TorchTensor {
  dtype: "F16" | "F32";
  shape: number[];
  /** The storage's little-endian bytes, produced when it is written, so large files stream. */
  data: () => Uint8Array;
}

/** A tensor placeholder in a value passed to writeTorchSave; becomes _rebuild_tensor_v2(...) in the pickle. */
export class TensorRef {
  constructor(readonly tensor: TorchTensor) {}
}

const ELEMENT_BYTES = { F16: 2, F32: 4 } as const;

/** Replaces every TensorRef by its pickle form, numbering the storages in the order met (as torch does). */
function lowerTensors(v: unknown, storages: TorchTensor[]): PyValue {
  if (v instanceof TensorRef) {
    const t = v.tensor;
    const key = String(storages.length);
    storages.push(t);
    const numel = t.shape.reduce((a, b) => a * b, 1);
    const stride = t.shape.map((_, i) => t.shape.slice(i + 1).reduce((a, b) => a * b, 1));
    const storageClass = t.dtype === "F16" ? torchGlobals.HalfStorage : torchGlobals.FloatStorage;
    return new PyReduce(
      torchGlobals.rebuildTensorV2,
      new PyTuple([
        new PyPersistentId(new PyTuple(["storage", storageClass, key, "cpu", numel])),
        0,
        new PyTuple(t.shape),
        new PyTuple(stride),
        false,
        orderedDict([]),
      ]),
    );
  }
  if (v instanceof PyReduce)
    return new PyReduce(
      v.callable,
      v.args,
      v.items.map(([k, x]) => [lowerTensors(k, storages), lowerTensors(x, storages)]),
    );
  if (v instanceof PyObject) return new PyObject(v.cls, new Map([...v.state].map(([k, x]) => [k, lowerTensors(x, storages)])));
  if (v instanceof PyTuple) return new PyTuple(v.items.map((x) => lowerTensors(x, storages)));
  if (Array.isArray(v)) return v.map((x) => lowerTensors(x, storages));
  if (v instanceof Map) return new Map([...v].map(([k, x]) => [lowerTensors(k, storages), lowerTensors(x, storages)]));
  if (v !== null && typeof v === "object" && Object.getPrototypeOf(v) === Object.prototype) {
    return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, lowerTensors(x, storages)]));
  }
  return v as PyValue;
}

// ---------------------------------------------------------------------------------------------------
// zip (STORED entries, 64-byte aligned data, as torch's PyTorchStreamWriter writes)

const ALIGN = 64;

let crcTable: Uint32Array | null = null;
function crc32(data: Uint8Array): number {
  const native = (zlib as { crc32?: (d: Uint8Array) => number }).crc32;
  if (native) return native(data) >>> 0;
  if (!crcTable) {
    crcTable = new Uint32Array(256);
    for (let i = 0; i < 256; i++) {
      let c = i;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
      crcTable[i] = c >>> 0;
    }
  }
  let c = 0xffffffff;
  for (const b of data) c = crcTable[(c ^ b) & 0xff]! ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

class StoredZipWriter {
  private fd: number;
  private offset = 0;
  private central: Buffer[] = [];
  private count = 0;

  constructor(readonly path: string) {
    this.fd = openSync(path, "w");
  }

  private put(b: Uint8Array): void {
    let done = 0;
    while (done < b.byteLength) done += writeSync(this.fd, b, done, b.byteLength - done);
    this.offset += b.byteLength;
    if (this.offset > 0xffffffff) throw new Error(`${this.path}: over 4 GiB needs zip64, which this writer does not do`);
  }

  add(name: string, data: Uint8Array): void {
    const nameBytes = Buffer.from(name, "utf8");
    const crc = crc32(data);
    // pad the local header with an extra field (id 'FB', as torch) so the data starts 64-byte aligned
    let extra = Buffer.alloc(0);
    const start = this.offset + 30 + nameBytes.length;
    if (start % ALIGN) {
      let pad = ALIGN - (start % ALIGN);
      if (pad < 4) pad += ALIGN;
      extra = Buffer.alloc(pad);
      extra.writeUInt16LE(0x4246, 0);
      extra.writeUInt16LE(pad - 4, 2);
    }
    const header = (sig: number, central: boolean) => {
      const h = Buffer.alloc(central ? 46 : 30);
      let p = 0;
      const w16 = (x: number) => (h.writeUInt16LE(x, p), (p += 2));
      const w32 = (x: number) => (h.writeUInt32LE(x >>> 0, p), (p += 4));
      w32(sig);
      if (central) w16(20); // version made by
      w16(20); // version needed
      w16(0x0800); // flags: UTF-8 names
      w16(0); // STORED
      w16(0); // mod time
      w16(0x21); // mod date: 1980-01-01
      w32(crc);
      w32(data.byteLength);
      w32(data.byteLength);
      w16(nameBytes.length);
      w16(central ? 0 : extra.length);
      if (central) {
        w16(0); // comment length
        w16(0); // disk number
        w16(0); // internal attributes
        w32(0o100644 << 16); // external attributes: a regular file, rw-r--r--
        w32(this.offset);
      }
      return h;
    };
    this.central.push(Buffer.concat([header(0x02014b50, true), nameBytes]));
    this.put(Buffer.concat([header(0x04034b50, false), nameBytes, extra]));
    this.put(data);
    this.count++;
  }

  close(): void {
    const cdStart = this.offset;
    for (const c of this.central) this.put(c);
    const end = Buffer.alloc(22);
    end.writeUInt32LE(0x06054b50, 0);
    end.writeUInt16LE(this.count, 8);
    end.writeUInt16LE(this.count, 10);
    end.writeUInt32LE(this.offset - cdStart, 12);
    end.writeUInt32LE(cdStart, 16);
    this.put(end);
    closeSync(this.fd);
  }
}

/**
 * torch.save(value, path): `value` may hold TensorRefs anywhere (dicts, OrderedDicts, lists, object state).
 * `root` is the folder name inside the zip; torch uses the file name without its last extension
 * ("x.pth.tar" → "x.pth"), which is the default. `serializationId` fills `.data/serialization_id`
 * (torch writes a random 40-digit number; pass something derived from the seed for reproducible files).
 */
export function writeTorchSave(path: string, value: unknown, opts: { root?: string; serializationId?: string } = {}): void {
  const base = path.split(/[\\/]/).pop()!;
  const root = opts.root ?? (base.includes(".") ? base.slice(0, base.lastIndexOf(".")) : base);
  const storages: TorchTensor[] = [];
  const pkl = pickle(lowerTensors(value, storages));
  const zip = new StoredZipWriter(path);
  try {
    zip.add(`${root}/data.pkl`, pkl);
    zip.add(`${root}/.format_version`, Buffer.from("1"));
    zip.add(`${root}/.storage_alignment`, Buffer.from(String(ALIGN)));
    zip.add(`${root}/byteorder`, Buffer.from("little"));
    storages.forEach((t, i) => {
      const bytes = t.data();
      const expected = t.shape.reduce((a, b) => a * b, 1) * ELEMENT_BYTES[t.dtype];
      if (bytes.byteLength !== expected) throw new Error(`storage ${i}: ${bytes.byteLength} bytes given, ${expected} expected`);
      zip.add(`${root}/data/${i}`, bytes);
    });
    zip.add(`${root}/version`, Buffer.from("3\n"));
    zip.add(`${root}/.data/serialization_id`, Buffer.from(opts.serializationId ?? "0".repeat(40)));
  } finally {
    zip.close();
  }
}
