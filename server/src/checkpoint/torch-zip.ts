// PyTorch zip checkpoints (`torch.save`'s format since torch 1.6): a zip archive holding
// `<root>/data.pkl` (the object, pickled), one `<root>/data/<key>` entry per storage, and a few
// small files (`byteorder`, `version`, …). `<root>` is whatever the file was named when saved.
//
// Two parts, both written here on purpose:
// - the zip reader only needs the central directory and each entry's local header, to compute
//   where a STORED entry's bytes start in the file: a storage is then read with one pread when
//   it is asked for, so a 1.3 GB checkpoint is never loaded whole. It is ~80 lines, handles zip64,
//   and needs no dependency (zip libraries hand out streams, not file offsets).
// - the unpickler is a small stack VM that never executes pickle code. The npm pickle parsers
//   either call back into user-supplied constructors for every global (so restricting them means
//   re-implementing the same dispatch) or are unmaintained; a state dict needs only ~40 opcodes of
//   protocol 2 (torch.save's default) and a handful of globals, so the VM below accepts exactly
//   those and refuses every other global by name before anything is built from it.
import { closeSync, fstatSync, openSync, readSync } from "node:fs";
import { inflateRawSync } from "node:zlib";

export class TorchCheckpointError extends Error {
  override name = "TorchCheckpointError";
}

// --- zip -------------------------------------------------------------------------------------------

interface ZipEntry {
  name: string;
  method: number;
  compressedSize: number;
  size: number;
  localHeaderOffset: number;
}

const EOCD_SIG = 0x06054b50;
const ZIP64_LOCATOR_SIG = 0x07064b50;
const ZIP64_EOCD_SIG = 0x06064b50;
const CENTRAL_SIG = 0x02014b50;
const LOCAL_SIG = 0x04034b50;

function u64(buf: Buffer, at: number): number {
  const v = buf.readBigUInt64LE(at);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new TorchCheckpointError(`zip field ${v} is too large`);
  return Number(v);
}

function readAt(fd: number, pos: number, len: number, path: string, what: string): Buffer {
  const buf = Buffer.alloc(len);
  let done = 0;
  while (done < len) {
    const n = readSync(fd, buf, done, len - done, pos + done);
    if (n <= 0) throw new TorchCheckpointError(`${path}: truncated file (reading ${what} at byte ${pos + done})`);
    done += n;
  }
  return buf;
}

function readCentralDirectory(fd: number, size: number, path: string): ZipEntry[] {
  const notZip = (why: string) => new TorchCheckpointError(`${path}: not a PyTorch zip checkpoint (${why}); was it downloaded completely?`);
  if (size < 22) throw notZip(`only ${size} bytes`);
  const tailLen = Math.min(size, 22 + 65535);
  const tail = readAt(fd, size - tailLen, tailLen, path, "end of central directory");
  let eocd = -1;
  for (let i = tailLen - 22; i >= 0; i--) {
    if (tail.readUInt32LE(i) === EOCD_SIG) {
      eocd = i;
      break;
    }
  }
  if (eocd < 0) throw notZip("no end-of-central-directory record");
  let count = tail.readUInt16LE(eocd + 10);
  let cdSize = tail.readUInt32LE(eocd + 12);
  let cdOffset = tail.readUInt32LE(eocd + 16);
  if (count === 0xffff || cdSize === 0xffffffff || cdOffset === 0xffffffff) {
    const loc = eocd - 20;
    if (loc < 0 || tail.readUInt32LE(loc) !== ZIP64_LOCATOR_SIG) throw notZip("zip64 values without a zip64 locator");
    const z64at = u64(tail, loc + 8);
    const z64 = readAt(fd, z64at, 56, path, "zip64 end of central directory");
    if (z64.readUInt32LE(0) !== ZIP64_EOCD_SIG) throw notZip("bad zip64 end-of-central-directory record");
    count = u64(z64, 32);
    cdSize = u64(z64, 40);
    cdOffset = u64(z64, 48);
  }
  if (cdOffset + cdSize > size) throw notZip(`central directory [${cdOffset}, ${cdOffset + cdSize}) lies past the end of the ${size}-byte file`);
  const cd = readAt(fd, cdOffset, cdSize, path, "central directory");
  const entries: ZipEntry[] = [];
  let p = 0;
  for (let i = 0; i < count; i++) {
    if (p + 46 > cd.length || cd.readUInt32LE(p) !== CENTRAL_SIG) throw notZip(`bad central directory entry ${i}`);
    const method = cd.readUInt16LE(p + 10);
    let compressedSize = cd.readUInt32LE(p + 20);
    let size = cd.readUInt32LE(p + 24);
    const nameLen = cd.readUInt16LE(p + 28);
    const extraLen = cd.readUInt16LE(p + 30);
    const commentLen = cd.readUInt16LE(p + 32);
    let localHeaderOffset = cd.readUInt32LE(p + 42);
    const name = cd.toString("utf8", p + 46, p + 46 + nameLen);
    // zip64 extended information: only the fields saturated in the fixed part, in this order.
    let e = p + 46 + nameLen;
    const extraEnd = e + extraLen;
    while (e + 4 <= extraEnd) {
      const id = cd.readUInt16LE(e);
      const len = cd.readUInt16LE(e + 2);
      if (id === 0x0001) {
        let q = e + 4;
        if (size === 0xffffffff) (size = u64(cd, q)), (q += 8);
        if (compressedSize === 0xffffffff) (compressedSize = u64(cd, q)), (q += 8);
        if (localHeaderOffset === 0xffffffff) localHeaderOffset = u64(cd, q);
      }
      e += 4 + len;
    }
    entries.push({ name, method, compressedSize, size, localHeaderOffset });
    p = extraEnd + commentLen;
  }
  return entries;
}

// --- tensors ---------------------------------------------------------------------------------------

export type TorchDtype = "F64" | "F32" | "F16" | "BF16" | "I64" | "I32" | "I16" | "I8" | "U8" | "BOOL";

const DTYPE_BYTES: Record<TorchDtype, number> = { F64: 8, F32: 4, F16: 2, BF16: 2, I64: 8, I32: 4, I16: 2, I8: 1, U8: 1, BOOL: 1 };

/** torch's typed storage classes (the `storage_type` of a persistent id). */
const STORAGE_CLASSES: Record<string, TorchDtype> = {
  DoubleStorage: "F64",
  FloatStorage: "F32",
  HalfStorage: "F16",
  BFloat16Storage: "BF16",
  LongStorage: "I64",
  IntStorage: "I32",
  ShortStorage: "I16",
  CharStorage: "I8",
  ByteStorage: "U8",
  BoolStorage: "BOOL",
};

/** torch dtypes as they appear in pickled args (e.g. `args.dtype = torch.float32`). */
const DTYPES: Record<string, TorchDtype> = {
  float64: "F64",
  double: "F64",
  float32: "F32",
  float: "F32",
  float16: "F16",
  half: "F16",
  bfloat16: "BF16",
  int64: "I64",
  long: "I64",
  int32: "I32",
  int: "I32",
  int16: "I16",
  short: "I16",
  int8: "I8",
  uint8: "U8",
  bool: "BOOL",
};

class TorchStorageClass {
  constructor(
    readonly name: string,
    readonly dtype: TorchDtype,
  ) {}
}
class TorchDtypeValue {
  constructor(
    readonly name: string,
    readonly dtype: TorchDtype,
  ) {}
}

/** A storage (`<root>/data/<key>`), read from disk only when a tensor over it is read. */
export interface TorchStorage {
  key: string;
  dtype: TorchDtype;
  numel: number;
  /** Absolute byte offset of the storage's first element in the checkpoint file. */
  fileOffset: number;
}

export class TorchTensor {
  constructor(
    readonly storage: TorchStorage,
    readonly storageOffset: number,
    readonly shape: readonly number[],
    readonly stride: readonly number[],
  ) {}
  get dtype(): TorchDtype {
    return this.storage.dtype;
  }
  get numel(): number {
    return this.shape.reduce((a, b) => a * b, 1);
  }
}

/** `argparse.Namespace`: its attributes, as the pickle's BUILD set them. */
export class PyNamespace {
  readonly attrs = new Map<string, unknown>();
  get(name: string): unknown {
    return this.attrs.get(name);
  }
}

/** Python dicts (and OrderedDicts) come back as Maps, lists and tuples as arrays, None as null. */
export type PyValue = unknown;

// --- the restricted unpickler ----------------------------------------------------------------------

type Callable = "OrderedDict" | "rebuild_tensor_v2" | "rebuild_parameter" | "Namespace";

class PyGlobal {
  constructor(
    readonly qualname: string,
    readonly kind: Callable,
  ) {}
}

/** Every global the unpickler will resolve; everything else is refused. */
function resolveGlobal(module: string, name: string, path: string): unknown {
  const q = `${module}.${name}`;
  if (q === "collections.OrderedDict") return new PyGlobal(q, "OrderedDict");
  if (q === "torch._utils._rebuild_tensor_v2") return new PyGlobal(q, "rebuild_tensor_v2");
  if (q === "torch._utils._rebuild_parameter") return new PyGlobal(q, "rebuild_parameter");
  if (q === "argparse.Namespace") return new PyGlobal(q, "Namespace");
  if (module === "torch" && name in STORAGE_CLASSES) return new TorchStorageClass(name, STORAGE_CLASSES[name]!);
  if (module === "torch" && name in DTYPES) return new TorchDtypeValue(name, DTYPES[name]!);
  throw new TorchCheckpointError(
    `${path}: refusing to load: its pickle references the global ${q}, which a tensor checkpoint does not need ` +
      "(only collections.OrderedDict, torch._utils._rebuild_tensor_v2/_rebuild_parameter, torch storage classes, torch dtypes and argparse.Namespace are allowed)",
  );
}

function asInt(v: unknown, what: string): number {
  if (typeof v === "number" && Number.isInteger(v)) return v;
  if (typeof v === "bigint" && v <= BigInt(Number.MAX_SAFE_INTEGER) && v >= -BigInt(Number.MAX_SAFE_INTEGER)) return Number(v);
  throw new TorchCheckpointError(`${what} is not an integer`);
}

function intTuple(v: unknown, what: string): number[] {
  if (!Array.isArray(v)) throw new TorchCheckpointError(`${what} is not a tuple`);
  return v.map((x, i) => asInt(x, `${what}[${i}]`));
}

/** Little-endian two's-complement integer of LONG1/LONG4. */
function decodeLong(bytes: Buffer): number | bigint {
  if (bytes.length === 0) return 0;
  let v = 0n;
  for (let i = bytes.length - 1; i >= 0; i--) v = (v << 8n) | BigInt(bytes[i]!);
  if (bytes[bytes.length - 1]! & 0x80) v -= 1n << BigInt(8 * bytes.length);
  return v >= -BigInt(Number.MAX_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
}

/**
 * Unpickles `data` (protocol ≤ 2 plus the few protocol-4 framing opcodes), resolving persistent ids
 * through `persistentLoad`. Allowed calls: OrderedDict(), _rebuild_tensor_v2(...),
 * _rebuild_parameter(...), Namespace() via NEWOBJ + BUILD with a dict.
 */
function restrictedUnpickle(data: Buffer, path: string, persistentLoad: (pid: unknown) => unknown): PyValue {
  const stack: unknown[] = [];
  const marks: number[] = [];
  const memo = new Map<number, unknown>();
  let p = 0;
  const bad = (why: string) => new TorchCheckpointError(`${path}: corrupt pickle at byte ${p}: ${why}`);
  const need = (n: number) => {
    if (p + n > data.length) throw bad("unexpected end of data");
  };
  const u8 = () => (need(1), data[p++]!);
  const u16 = () => (need(2), (p += 2), data.readUInt16LE(p - 2));
  const u32 = () => (need(4), (p += 4), data.readUInt32LE(p - 4));
  const i32 = () => (need(4), (p += 4), data.readInt32LE(p - 4));
  const bytes = (n: number) => (need(n), (p += n), data.subarray(p - n, p));
  const line = () => {
    const end = data.indexOf(0x0a, p);
    if (end < 0) throw bad("unterminated line");
    const s = data.toString("latin1", p, end);
    p = end + 1;
    return s;
  };
  const pop = () => {
    if (stack.length === 0 || (marks.length && stack.length <= marks[marks.length - 1]!)) throw bad("stack underflow");
    return stack.pop();
  };
  const top = () => {
    if (stack.length === 0) throw bad("stack underflow");
    return stack[stack.length - 1];
  };
  const popMark = () => {
    const m = marks.pop();
    if (m === undefined) throw bad("no MARK");
    return stack.splice(m);
  };
  const setItems = (target: unknown, kv: unknown[]) => {
    if (!(target instanceof Map)) throw bad("SETITEM(S) on a non-dict");
    for (let i = 0; i + 1 < kv.length; i += 2) target.set(kv[i], kv[i + 1]);
  };
  const append = (target: unknown, items: unknown[]) => {
    if (!Array.isArray(target)) throw bad("APPEND(S) on a non-list");
    target.push(...items);
  };
  const call = (fn: unknown, args: unknown): unknown => {
    if (!(fn instanceof PyGlobal))
      throw bad(`call of a non-callable (${fn instanceof TorchDtypeValue || fn instanceof TorchStorageClass ? fn.name : typeof fn})`);
    if (!Array.isArray(args)) throw bad(`arguments of ${fn.qualname} are not a tuple`);
    switch (fn.kind) {
      case "OrderedDict":
        if (args.length !== 0) throw bad("OrderedDict called with arguments");
        return new Map();
      case "rebuild_tensor_v2": {
        const [storage, offset, size, stride] = args;
        if (!isStorage(storage)) throw bad("_rebuild_tensor_v2 without a storage");
        const shape = intTuple(size, "tensor size");
        const strides = intTuple(stride, "tensor stride");
        if (strides.length !== shape.length) throw bad("tensor size and stride differ in length");
        const t = new TorchTensor(storage, asInt(offset, "storage offset"), shape, strides);
        let last = t.storageOffset;
        for (let i = 0; i < shape.length; i++) if (shape[i]! > 0) last += (shape[i]! - 1) * strides[i]!;
        if (t.numel > 0 && (t.storageOffset < 0 || last >= storage.numel))
          throw bad(`tensor [${shape}] reaches past its storage ${storage.key} (${storage.numel} elements)`);
        return t;
      }
      case "rebuild_parameter":
        if (!(args[0] instanceof TorchTensor)) throw bad("_rebuild_parameter without a tensor");
        return args[0];
      case "Namespace":
        if (args.length !== 0) throw bad("argparse.Namespace called with arguments");
        return new PyNamespace();
    }
  };

  for (;;) {
    const op = u8();
    switch (op) {
      case 0x80:
        u8();
        break; // PROTO
      case 0x95:
        bytes(8);
        break; // FRAME (protocol 4): frames are just the data that follows
      case 0x2e: {
        // STOP
        const v = pop();
        return v;
      }
      case 0x28:
        marks.push(stack.length);
        break; // MARK
      case 0x30:
        pop();
        break; // POP
      case 0x31:
        popMark();
        break; // POP_MARK
      case 0x32:
        stack.push(top());
        break; // DUP
      case 0x4e:
        stack.push(null);
        break; // NONE
      case 0x88:
        stack.push(true);
        break; // NEWTRUE
      case 0x89:
        stack.push(false);
        break; // NEWFALSE
      case 0x4a:
        stack.push(i32());
        break; // BININT
      case 0x4b:
        stack.push(u8());
        break; // BININT1
      case 0x4d:
        stack.push(u16());
        break; // BININT2
      case 0x8a:
        stack.push(decodeLong(bytes(u8())));
        break; // LONG1
      case 0x8b:
        stack.push(decodeLong(bytes(u32())));
        break; // LONG4
      case 0x49: {
        // INT (protocol 0)
        const s = line();
        stack.push(s === "01" ? true : s === "00" ? false : Number.parseInt(s, 10));
        break;
      }
      case 0x47:
        need(8);
        stack.push(data.readDoubleBE(p));
        p += 8;
        break; // BINFLOAT
      case 0x58: {
        const n = u32();
        stack.push(bytes(n).toString("utf8"));
        break;
      } // BINUNICODE
      case 0x8c: {
        const n = u8();
        stack.push(bytes(n).toString("utf8"));
        break;
      } // SHORT_BINUNICODE
      case 0x8d: {
        const n = Number(bytes(8).readBigUInt64LE(0));
        stack.push(bytes(n).toString("utf8"));
        break;
      } // BINUNICODE8
      case 0x54: {
        const n = i32();
        stack.push(bytes(n).toString("latin1"));
        break;
      } // BINSTRING
      case 0x55: {
        const n = u8();
        stack.push(bytes(n).toString("latin1"));
        break;
      } // SHORT_BINSTRING
      case 0x42: {
        const n = u32();
        stack.push(Buffer.from(bytes(n)));
        break;
      } // BINBYTES
      case 0x43: {
        const n = u8();
        stack.push(Buffer.from(bytes(n)));
        break;
      } // SHORT_BINBYTES
      case 0x7d:
        stack.push(new Map());
        break; // EMPTY_DICT
      case 0x5d:
        stack.push([]);
        break; // EMPTY_LIST
      case 0x29:
        stack.push([]);
        break; // EMPTY_TUPLE
      case 0x74:
        stack.push(popMark());
        break; // TUPLE
      case 0x85:
        stack.push([pop()]);
        break; // TUPLE1
      case 0x86: {
        const b = pop();
        const a = pop();
        stack.push([a, b]);
        break;
      } // TUPLE2
      case 0x87: {
        const c = pop();
        const b = pop();
        const a = pop();
        stack.push([a, b, c]);
        break;
      } // TUPLE3
      case 0x6c:
        stack.push(popMark());
        break; // LIST
      case 0x64: {
        const kv = popMark();
        const d = new Map();
        setItems(d, kv);
        stack.push(d);
        break;
      } // DICT
      case 0x71:
        memo.set(u8(), top());
        break; // BINPUT
      case 0x72:
        memo.set(u32(), top());
        break; // LONG_BINPUT
      case 0x70:
        memo.set(Number.parseInt(line(), 10), top());
        break; // PUT
      case 0x94:
        memo.set(memo.size, top());
        break; // MEMOIZE
      case 0x68:
      case 0x6a:
      case 0x67: {
        // BINGET, LONG_BINGET, GET
        const k = op === 0x68 ? u8() : op === 0x6a ? u32() : Number.parseInt(line(), 10);
        if (!memo.has(k)) throw bad(`memo key ${k} is not set`);
        stack.push(memo.get(k));
        break;
      }
      case 0x73: {
        const v = pop();
        const k = pop();
        setItems(top(), [k, v]);
        break;
      } // SETITEM
      case 0x75: {
        const kv = popMark();
        setItems(top(), kv);
        break;
      } // SETITEMS
      case 0x61: {
        const v = pop();
        append(top(), [v]);
        break;
      } // APPEND
      case 0x65: {
        const items = popMark();
        append(top(), items);
        break;
      } // APPENDS
      case 0x63: {
        // GLOBAL
        const module = line();
        const name = line();
        stack.push(resolveGlobal(module, name, path));
        break;
      }
      case 0x93: {
        // STACK_GLOBAL
        const name = pop();
        const module = pop();
        if (typeof module !== "string" || typeof name !== "string") throw bad("STACK_GLOBAL needs two strings");
        stack.push(resolveGlobal(module, name, path));
        break;
      }
      case 0x52: {
        const args = pop();
        const fn = pop();
        stack.push(call(fn, args));
        break;
      } // REDUCE
      case 0x81: {
        const args = pop();
        const cls = pop();
        stack.push(call(cls, args));
        break;
      } // NEWOBJ
      case 0x62: {
        // BUILD
        const state = pop();
        const obj = top();
        if (!(obj instanceof PyNamespace) || !(state instanceof Map)) throw bad("BUILD is only supported for argparse.Namespace with a dict state");
        for (const [k, v] of state) obj.attrs.set(String(k), v);
        break;
      }
      case 0x51:
        stack.push(persistentLoad(pop()));
        break; // BINPERSID
      default:
        throw bad(`unsupported pickle opcode 0x${op.toString(16).padStart(2, "0")}`);
    }
  }
}

function isStorage(v: unknown): v is TorchStorage {
  return typeof v === "object" && v !== null && "fileOffset" in v && "numel" in v && "key" in v;
}

// --- the checkpoint --------------------------------------------------------------------------------

/** A `torch.save` zip checkpoint: the unpickled object (tensors left on disk) and lazy tensor reads. */
export class TorchZipCheckpoint {
  private fd: number | null;

  private constructor(
    readonly path: string,
    fd: number,
    readonly root: PyValue,
  ) {
    this.fd = fd;
  }

  static open(path: string): TorchZipCheckpoint {
    const fd = openSync(path, "r");
    try {
      const size = fstatSync(fd).size;
      const entries = readCentralDirectory(fd, size, path);
      const pkl = entries.filter((e) => e.name === "data.pkl" || e.name.endsWith("/data.pkl"));
      if (pkl.length !== 1)
        throw new TorchCheckpointError(`${path}: expected one <root>/data.pkl in the zip, found ${pkl.length} (is it a torch.save checkpoint?)`);
      const pklEntry = pkl[0]!;
      const prefix = pklEntry.name.slice(0, pklEntry.name.length - "data.pkl".length);
      const byName = new Map(entries.map((e) => [e.name, e]));

      const byteorder = byName.get(`${prefix}byteorder`);
      if (byteorder) {
        const order = entryBytes(fd, byteorder, size, path).toString("latin1").trim();
        if (order !== "little") throw new TorchCheckpointError(`${path}: storages are ${order}-endian; only little-endian checkpoints are supported`);
      }

      const storages = new Map<string, TorchStorage>();
      const persistentLoad = (pid: unknown): TorchStorage => {
        if (!Array.isArray(pid) || pid[0] !== "storage" || pid.length !== 5)
          throw new TorchCheckpointError(`${path}: unsupported persistent id (expected ('storage', type, key, location, numel))`);
        const [, cls, key, , numelRaw] = pid as [string, unknown, unknown, unknown, unknown];
        if (!(cls instanceof TorchStorageClass)) throw new TorchCheckpointError(`${path}: persistent id without a torch storage class`);
        if (typeof key !== "string") throw new TorchCheckpointError(`${path}: storage key is not a string`);
        const numel = asInt(numelRaw, `storage ${key} numel`);
        const hit = storages.get(key);
        if (hit) return hit;
        const entry = byName.get(`${prefix}data/${key}`);
        if (!entry) throw new TorchCheckpointError(`${path}: storage ${key} (${prefix}data/${key}) is missing from the zip`);
        if (entry.method !== 0)
          throw new TorchCheckpointError(`${path}: storage ${key} is compressed (method ${entry.method}); torch.save stores storages uncompressed`);
        const bytes = numel * DTYPE_BYTES[cls.dtype];
        if (entry.size < bytes)
          throw new TorchCheckpointError(`${path}: storage ${key} holds ${entry.size} bytes, ${bytes} expected for ${numel} ${cls.name} elements`);
        const fileOffset = dataOffset(fd, entry, size, path);
        if (fileOffset + bytes > size) throw new TorchCheckpointError(`${path}: truncated file (storage ${key} ends at byte ${fileOffset + bytes} of ${size})`);
        const s: TorchStorage = { key, dtype: cls.dtype, numel, fileOffset };
        storages.set(key, s);
        return s;
      };
      const root = restrictedUnpickle(entryBytes(fd, pklEntry, size, path), path, persistentLoad);
      return new TorchZipCheckpoint(path, fd, root);
    } catch (err) {
      closeSync(fd);
      throw err;
    }
  }

  /** A tensor's elements in row-major order, converted to float32 (fp16/bf16 upcast exactly). */
  readFloat32(t: TorchTensor): Float32Array {
    if (this.fd === null) throw new TorchCheckpointError(`${this.path}: already closed`);
    const es = DTYPE_BYTES[t.dtype];
    const n = t.numel;
    const out = new Float32Array(n);
    if (n === 0) return out;
    // Read the storage span the tensor covers, then gather with its strides.
    let lo = t.storageOffset;
    let hi = t.storageOffset;
    for (let i = 0; i < t.shape.length; i++) {
      const ext = (t.shape[i]! - 1) * t.stride[i]!;
      if (ext < 0) lo += ext;
      else hi += ext;
    }
    const raw = readAt(this.fd, t.storage.fileOffset + lo * es, (hi - lo + 1) * es, this.path, `storage ${t.storage.key}`);
    const get = elementReader(raw, t.dtype);
    const dims = t.shape.length;
    const idx = new Array<number>(dims).fill(0);
    let src = t.storageOffset - lo;
    for (let k = 0; k < n; k++) {
      out[k] = get(src);
      for (let d = dims - 1; d >= 0; d--) {
        idx[d]!++;
        src += t.stride[d]!;
        if (idx[d]! < t.shape[d]!) break;
        src -= t.stride[d]! * t.shape[d]!;
        idx[d] = 0;
      }
    }
    return out;
  }

  close(): void {
    if (this.fd !== null) closeSync(this.fd);
    this.fd = null;
  }
}

/** Where an entry's data starts: after its local header, whose extra field may differ from the central one (torch pads it to align storages). */
function dataOffset(fd: number, e: ZipEntry, size: number, path: string): number {
  if (e.localHeaderOffset + 30 > size) throw new TorchCheckpointError(`${path}: truncated file (local header of ${e.name})`);
  const h = readAt(fd, e.localHeaderOffset, 30, path, `local header of ${e.name}`);
  if (h.readUInt32LE(0) !== LOCAL_SIG) throw new TorchCheckpointError(`${path}: bad local header for ${e.name}`);
  return e.localHeaderOffset + 30 + h.readUInt16LE(26) + h.readUInt16LE(28);
}

function entryBytes(fd: number, e: ZipEntry, size: number, path: string): Buffer {
  const at = dataOffset(fd, e, size, path);
  if (at + e.compressedSize > size) throw new TorchCheckpointError(`${path}: truncated file (${e.name} ends at byte ${at + e.compressedSize} of ${size})`);
  const raw = readAt(fd, at, e.compressedSize, path, e.name);
  if (e.method === 0) return raw;
  if (e.method === 8) return inflateRawSync(raw);
  throw new TorchCheckpointError(`${path}: ${e.name} uses zip compression method ${e.method}`);
}

function elementReader(raw: Buffer, dtype: TorchDtype): (i: number) => number {
  switch (dtype) {
    case "F32":
      return (i) => raw.readFloatLE(i * 4);
    case "F64":
      return (i) => raw.readDoubleLE(i * 8);
    case "F16":
      return (i) => halfToFloat(raw.readUInt16LE(i * 2));
    case "BF16": {
      const b = new DataView(new ArrayBuffer(4));
      return (i) => (b.setUint32(0, raw.readUInt16LE(i * 2) << 16), b.getFloat32(0));
    }
    case "I64":
      return (i) => Number(raw.readBigInt64LE(i * 8));
    case "I32":
      return (i) => raw.readInt32LE(i * 4);
    case "I16":
      return (i) => raw.readInt16LE(i * 2);
    case "I8":
      return (i) => raw.readInt8(i);
    case "U8":
    case "BOOL":
      return (i) => raw[i]!;
  }
}

/** IEEE binary16 → number (exact). */
function halfToFloat(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 0x1f) return mant ? NaN : sign * Infinity;
  return sign * (1 + mant / 1024) * 2 ** (exp - 15);
}
