/**
 * Input sources: turn a {path | bytes | raw} input into either encoded bytes
 * (for sharp) or validated raw pixels. Owns path safety.
 *
 * Path safety:
 *  - paths must be absolute; allowed roots are resolved with realpath once,
 *    at startup (createPathPolicy);
 *  - the requested path is resolved with fs.realpath (all symlinks followed)
 *    and must lie under an allowed root: a symlink escaping the roots is refused;
 *  - the resolved path is then opened with O_NOFOLLOW | O_NONBLOCK (a FIFO or
 *    device cannot block a libuv thread), fstat'ed on the open descriptor (must
 *    be a regular file, size-capped), and on Linux the descriptor's real path
 *    (/proc/self/fd) is re-checked, closing the realpath→open race;
 *  - the bytes are read from that descriptor, so sharp never opens paths itself;
 *  - a missing path outside the roots reports outside_allowed_roots, not
 *    file_not_found, so callers cannot probe for file existence outside the roots.
 */

import { constants as fsConstants, promises as fsp } from "node:fs";
import path from "node:path";

import { InputError } from "./errors.js";
import type { ImageInput, RawPixels } from "./types.js";

export interface PathPolicy {
  /** Allowed roots after realpath. */
  readonly roots: readonly string[];
  /** Allowed roots as configured (absolute, normalised), used for missing paths. */
  readonly configuredRoots: readonly string[];
}

export interface SourceLimits {
  /** Largest encoded input accepted (file size or bytes length). */
  readonly maxInputBytes: number;
  /** Largest raw input accepted, in pixels (height × width). */
  readonly limitInputPixels: number;
}

export type Source =
  | { readonly kind: "encoded"; readonly id: string; readonly bytes: Buffer }
  | { readonly kind: "raw"; readonly id: string; readonly raw: RawPixels };

/**
 * Resolve the configured allowed roots (realpath). An empty list allows no
 * path inputs at all. A root that does not exist is a configuration error
 * (plain Error), raised at startup rather than per request.
 */
export async function createPathPolicy(roots: readonly string[]): Promise<PathPolicy> {
  const configured: string[] = [];
  const real: string[] = [];
  for (const root of roots) {
    if (typeof root !== "string" || root === "" || !path.isAbsolute(root)) {
      throw new Error(`allowed root must be an absolute path: ${JSON.stringify(root)}`);
    }
    const norm = path.resolve(root);
    let resolved: string;
    try {
      resolved = await fsp.realpath(norm);
    } catch (err) {
      throw new Error(`allowed root ${JSON.stringify(root)} cannot be resolved: ${(err as Error).message}`);
    }
    configured.push(norm);
    real.push(resolved);
  }
  return Object.freeze({ roots: Object.freeze(real), configuredRoots: Object.freeze(configured) });
}

/** True if `p` (absolute, normalised) is `root` or lies beneath it. */
function isUnder(p: string, root: string): boolean {
  const rel = path.relative(root, p);
  return rel === "" || (!isDotDot(rel) && !path.isAbsolute(rel));
}

function isDotDot(rel: string): boolean {
  return rel === ".." || rel.startsWith(`..${path.sep}`);
}

function isUnderAny(p: string, roots: readonly string[]): boolean {
  return roots.some((r) => isUnder(p, r));
}

function errnoCode(err: unknown): string | undefined {
  return typeof err === "object" && err !== null && "code" in err ? String((err as { code: unknown }).code) : undefined;
}

/** Map a filesystem error on a path (already known to be inside the roots) to an InputError. */
function fsError(id: string, shown: string, err: unknown): InputError {
  const code = errnoCode(err);
  switch (code) {
    case "ENOENT":
    case "ENOTDIR":
      return new InputError("file_not_found", id, `file not found: ${shown}`, { cause: err });
    case "EACCES":
    case "EPERM":
      return new InputError("file_unreadable", id, `file is not readable (permission denied): ${shown}`, { cause: err });
    case "ELOOP":
      return new InputError("file_unreadable", id, `too many levels of symbolic links: ${shown}`, { cause: err });
    case "EISDIR":
      return new InputError("not_a_file", id, `path is a directory, not a file: ${shown}`, { cause: err });
    case "ENAMETOOLONG":
      return new InputError("invalid_input", id, `path is too long: ${shown}`, { cause: err });
    default:
      return new InputError("file_unreadable", id, `cannot read ${shown} (${code ?? "unknown error"})`, { cause: err });
  }
}

/**
 * For a path realpath cannot resolve: whether the miss lies inside the roots. Resolves the longest
 * prefix that exists and follows, by hand, a symlink that does not resolve (dangling, a loop), so
 * that a symlink in the roots pointing out cannot tell missing files outside from existing ones.
 */
async function missStaysInside(p: string, roots: readonly string[], hops = 0): Promise<boolean> {
  const rest: string[] = [];
  let prefix = p;
  let real: string | undefined;
  while (real === undefined) {
    try {
      real = await fsp.realpath(prefix);
    } catch {
      if (prefix === path.dirname(prefix)) return false;
      rest.unshift(path.basename(prefix));
      prefix = path.dirname(prefix);
    }
  }
  if (!isUnderAny(real, roots)) return false;
  if (rest.length === 0 || hops >= 40) return true;
  let target: string;
  try {
    target = await fsp.readlink(path.join(real, rest[0]!));
  } catch {
    return true; // not a symlink: missing, or below a file, inside `real`
  }
  return missStaysInside(path.resolve(real, target, ...rest.slice(1)), roots, hops + 1);
}

const OPEN_FLAGS = fsConstants.O_RDONLY | (fsConstants.O_NOFOLLOW ?? 0) | (fsConstants.O_NONBLOCK ?? 0);

/** Read a path input's bytes, enforcing the path policy. */
async function readPathSource(id: string, requested: string, policy: PathPolicy, limits: Pick<SourceLimits, "maxInputBytes">): Promise<Buffer> {
  if (typeof requested !== "string" || requested === "") {
    throw new InputError("invalid_input", id, "path must be a non-empty string");
  }
  if (requested.includes("\0")) throw new InputError("invalid_input", id, "path contains a NUL byte");
  if (!path.isAbsolute(requested)) {
    throw new InputError("invalid_input", id, `path must be absolute: ${requested}`);
  }
  const outside = (): InputError => new InputError("outside_allowed_roots", id, `path is outside the allowed roots: ${requested}`);
  if (policy.roots.length === 0) throw outside();

  const lexical = path.resolve(requested);
  let real: string;
  try {
    real = await fsp.realpath(lexical);
  } catch (err) {
    // Don't reveal whether paths outside the roots exist (through a symlink in the roots, too).
    if (!isUnderAny(lexical, policy.roots) && !isUnderAny(lexical, policy.configuredRoots)) throw outside();
    if (!(await missStaysInside(lexical, policy.roots))) throw outside();
    throw fsError(id, requested, err);
  }
  if (!isUnderAny(real, policy.roots)) throw outside();

  let fh: fsp.FileHandle;
  try {
    fh = await fsp.open(real, OPEN_FLAGS);
  } catch (err) {
    throw fsError(id, requested, err);
  }
  try {
    const st = await fh.stat();
    if (st.isDirectory()) throw new InputError("not_a_file", id, `path is a directory, not a file: ${requested}`);
    if (!st.isFile()) throw new InputError("not_a_file", id, `path is not a regular file: ${requested}`);
    // Re-check where the descriptor actually points (Linux); guards against a
    // path component being swapped for a symlink between realpath and open.
    let opened: string | undefined;
    try {
      opened = await fsp.readlink(`/proc/self/fd/${fh.fd}`);
    } catch {
      opened = undefined; // no procfs: the realpath check above stands
    }
    if (opened !== undefined && path.isAbsolute(opened) && !isUnderAny(opened, policy.roots)) throw outside();
    if (st.size > limits.maxInputBytes) {
      throw new InputError("too_large", id, `file is ${st.size} bytes, above the ${limits.maxInputBytes}-byte limit`);
    }
    if (st.size === 0) throw new InputError("corrupt_image", id, `file is empty (0 bytes): ${requested}`);
    const buf = Buffer.allocUnsafe(st.size);
    let filled = 0;
    while (filled < buf.length) {
      const { bytesRead } = await fh.read(buf, filled, buf.length - filled, filled);
      if (bytesRead === 0) break;
      filled += bytesRead;
    }
    if (filled === 0) throw new InputError("corrupt_image", id, `file is empty (0 bytes): ${requested}`);
    return filled === buf.length ? buf : buf.subarray(0, filled);
  } catch (err) {
    if (err instanceof InputError) throw err;
    throw fsError(id, requested, err);
  } finally {
    await fh.close().catch(() => undefined);
  }
}

/** Validate encoded bytes given in memory; returns a Buffer view (no copy). */
function bytesSource(id: string, bytes: unknown, limits: Pick<SourceLimits, "maxInputBytes">): Buffer {
  if (!(bytes instanceof Uint8Array)) throw new InputError("invalid_input", id, "bytes must be a Uint8Array");
  if (bytes.byteLength === 0) throw new InputError("corrupt_image", id, "image bytes are empty (0 bytes)");
  if (bytes.byteLength > limits.maxInputBytes) {
    throw new InputError("too_large", id, `image is ${bytes.byteLength} bytes, above the ${limits.maxInputBytes}-byte limit`);
  }
  return Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

function isPositiveInt(n: unknown): n is number {
  return typeof n === "number" && Number.isSafeInteger(n) && n > 0;
}

/** Tolerance for float raw values slightly outside [0, 1] (rounding noise); they are clamped. */
const FLOAT_TOLERANCE = 1e-4;

/**
 * Validate a raw pixel input: dims, channels, dtype/array agreement, exact
 * length h·w·c, pixel limit, and (float32) finite values in [0, 1].
 */
function validateRaw(id: string, raw: unknown, limits: Pick<SourceLimits, "limitInputPixels">): RawPixels {
  if (typeof raw !== "object" || raw === null) throw new InputError("invalid_input", id, "raw must be an object");
  const r = raw as Record<string, unknown>;
  const { data, height, width, channels, dtype } = r;
  if (!isPositiveInt(height) || !isPositiveInt(width)) {
    throw new InputError("invalid_input", id, `raw height/width must be positive integers, got ${String(height)}x${String(width)}`);
  }
  if (channels !== 1 && channels !== 3 && channels !== 4) {
    throw new InputError("invalid_input", id, `raw channels must be 1, 3 or 4, got ${String(channels)}`);
  }
  if (dtype !== "uint8" && dtype !== "float32") {
    throw new InputError("invalid_input", id, `raw dtype must be 'uint8' or 'float32', got ${JSON.stringify(dtype)}`);
  }
  if (dtype === "uint8" && !(data instanceof Uint8Array)) {
    throw new InputError("invalid_input", id, "raw dtype 'uint8' needs data as a Uint8Array");
  }
  if (dtype === "float32" && !(data instanceof Float32Array)) {
    throw new InputError("invalid_input", id, "raw dtype 'float32' needs data as a Float32Array");
  }
  const pixels = height * width;
  if (pixels > limits.limitInputPixels) {
    throw new InputError("too_large", id, `raw image is ${height}x${width} = ${pixels} pixels, above the ${limits.limitInputPixels}-pixel limit`);
  }
  const arr = data as Uint8Array | Float32Array;
  const expected = pixels * channels;
  if (arr.length !== expected) {
    throw new InputError(
      "invalid_input",
      id,
      `raw data has ${arr.length} elements but height×width×channels = ${height}×${width}×${channels} = ${expected} (layout is interleaved HWC)`,
    );
  }
  if (arr instanceof Float32Array) {
    let clampNeeded = false;
    for (let i = 0; i < arr.length; i++) {
      const v = arr[i]!;
      if (!(v >= -FLOAT_TOLERANCE && v <= 1 + FLOAT_TOLERANCE)) {
        const what = Number.isFinite(v) ? `value ${v}` : `non-finite value ${v}`;
        throw new InputError("invalid_input", id, `raw float32 data must be in [0, 1]; found ${what} at index ${i}`);
      }
      if (v < 0 || v > 1) clampNeeded = true;
    }
    if (clampNeeded) {
      const copy = new Float32Array(arr.length);
      for (let i = 0; i < arr.length; i++) copy[i] = Math.min(1, Math.max(0, arr[i]!));
      return { data: copy, height, width, channels, dtype };
    }
  }
  return { data: arr, height, width, channels, dtype } as RawPixels;
}

/** Resolve any input to encoded bytes or validated raw pixels. */
export async function loadSource(input: ImageInput, policy: PathPolicy, limits: SourceLimits): Promise<Source> {
  if (typeof input !== "object" || input === null) {
    throw new InputError("invalid_input", "?", "input must be an object");
  }
  const rec = input as unknown as Record<string, unknown>;
  const id = rec.id;
  if (typeof id !== "string") throw new InputError("invalid_input", "?", "input id must be a string");
  const given = (["path", "bytes", "raw"] as const).filter((k) => rec[k] !== undefined && rec[k] !== null);
  if (given.length !== 1) {
    throw new InputError(
      "invalid_input",
      id,
      given.length === 0 ? "input needs one of path, bytes or raw" : `input has more than one of path, bytes, raw (${given.join(", ")})`,
    );
  }
  switch (given[0]) {
    case "path":
      return { kind: "encoded", id, bytes: await readPathSource(id, rec.path as string, policy, limits) };
    case "bytes":
      return { kind: "encoded", id, bytes: bytesSource(id, rec.bytes, limits) };
    default:
      return { kind: "raw", id, raw: validateRaw(id, rec.raw, limits) };
  }
}
