/**
 * Decoding with sharp: encoded bytes or raw pixels → resized interleaved pixels (uint8 RGB from
 * the decoder), and the conversion of those to float32 CHW RGB in [0, 1] (hwcToChw / hwcToChwInto).
 *
 * All heavy work (decode, colour conversion, resize) runs inside libvips on
 * libuv worker threads. The result stays interleaved uint8 (what sharp returns,
 * a quarter of the float32 size) until the batch is assembled: `hwcToChwInto`
 * then writes it as planar float32 straight into the batch tensor (≈0.8 CPU-ms
 * for 592×448), so no per-image float32 copy is ever allocated.
 *
 * Pipeline choices:
 *  - `failOn: 'error'`: corrupt or truncated data fails instead of decoding
 *    grey/garbage pixels.
 *  - `limitInputPixels`: checked by libvips from the header, before any pixel
 *    buffer is allocated, so decompression bombs fail fast.
 *  - `sequentialRead`: stream through the image top-to-bottom (lower memory);
 *    libvips switches to random access itself where an operation needs it
 *    (e.g. a 90° EXIF rotation).
 *  - `pages: 1, page: 0`: animated GIF/WebP and multi-page TIFF → first frame/page only.
 *  - `.autoOrient()` (sharp's name for argument-less `.rotate()`): apply EXIF
 *    orientation, so the model sees the image as displayed.
 *  - Alpha is flattened onto WHITE (`flatten({background: '#ffffff'})`):
 *    transparent regions of logos, icons and cut-out product shots are
 *    conventionally shown on white, and PIL-based pipelines that paste RGBA onto
 *    a white canvas do the same; black would turn fully-transparent areas
 *    (often with arbitrary hidden RGB) into dark blobs. Images without alpha are
 *    unaffected.
 *  - `.toColourspace('srgb')` + `raw({depth: 'uchar'})`: greyscale, grey+alpha,
 *    palette, 16-bit and CMYK (converted with sharp's built-in CMYK profile when
 *    the file has none) all come out as 8-bit sRGB; embedded ICC profiles are
 *    converted to sRGB.
 *  - Resize with `fit: 'fill'` (the resolution policy already chose an aspect
 *    close to the original, so no crop or padding) and kernel 'cubic'
 *    (Catmull-Rom, a = -0.5). Rationale: it is the same filter as PIL's BICUBIC,
 *    which Hugging Face image processors (CLIPImageProcessor, resample=3) use,
 *    and like PIL, libvips widens the kernel when downsampling, so it
 *    antialiases (unlike torch's F.interpolate bilinear without antialias,
 *    which aliases on large reductions). It is sharper than 'linear' and rings
 *    less than sharp's default 'lanczos3'.
 */

import sharp from "sharp";
import type { Metadata, OutputInfo, Sharp, SharpOptions } from "sharp";

import { InputError, firstLine } from "./errors.js";
import { SUPPORTED_FORMATS, describeUnknown, isSupportedFormat, sniffFormat, type SupportedFormat } from "./format.js";
import type { Size } from "./resolution.js";
import type { InterleavedPixels, RawPixels } from "./types.js";

export const RESIZE_KERNEL = "cubic" as const;
export const FLATTEN_BACKGROUND = "#ffffff";

export interface DecodeLimits {
  /** Refuse images whose header claims more pixels than this (width × height). */
  readonly limitInputPixels: number;
  /** Abort a single decode+resize after this many seconds (0 = no limit). */
  readonly timeoutSeconds: number;
}

export interface ProbeResult {
  readonly format: SupportedFormat;
  /** Displayed size, after EXIF orientation. */
  readonly originalHeight: number;
  readonly originalWidth: number;
  /** Number of pages/frames in the file (only the first is used). */
  readonly pages: number;
}

function inputOptions(limits: DecodeLimits): SharpOptions {
  return {
    failOn: "error",
    limitInputPixels: limits.limitInputPixels,
    sequentialRead: true,
    pages: 1,
    page: 0,
  };
}

/** Map an error thrown by sharp/libvips to an InputError. */
export function classifySharpError(id: string, err: unknown): InputError {
  if (err instanceof InputError) return err;
  const line = firstLine(err);
  if (/exceeds pixel limit/i.test(line)) {
    return new InputError("too_large", id, "image dimensions exceed the input pixel limit", { cause: err });
  }
  if (/exceeds channel limit/i.test(line)) {
    return new InputError("unsupported_format", id, "image has too many channels", { cause: err });
  }
  if (/unsupported image format/i.test(line)) {
    return new InputError("unsupported_format", id, "unsupported or unrecognised image format", { cause: err });
  }
  if (/timeout/i.test(line)) {
    return new InputError("too_large", id, `decoding took too long (${line})`, { cause: err });
  }
  return new InputError("corrupt_image", id, `image could not be decoded: ${line}`, { cause: err });
}

/**
 * Sniff the format (refusing anything not allowlisted, SVG included, before
 * sharp parses it), then read the header with sharp and check it agrees.
 */
export async function probeEncoded(id: string, bytes: Buffer, limits: DecodeLimits): Promise<ProbeResult> {
  const sniffed = sniffFormat(bytes);
  if (sniffed === null) {
    throw new InputError("unsupported_format", id, `not a supported image (${describeUnknown(bytes)}); supported: ${SUPPORTED_FORMATS.join(", ")}`);
  }
  let meta: Metadata;
  try {
    meta = await sharp(bytes, inputOptions(limits)).metadata();
  } catch (err) {
    throw classifySharpError(id, err);
  }
  if (!isSupportedFormat(meta.format) || meta.format !== sniffed) {
    throw new InputError("unsupported_format", id, `format mismatch: content starts like ${sniffed} but decodes as ${String(meta.format)}`);
  }
  if (meta.format === "heif" && meta.compression !== "av1") {
    throw new InputError("unsupported_format", id, `HEIF with ${String(meta.compression)} compression is not supported (AVIF only)`);
  }
  const w = meta.autoOrient?.width ?? meta.width;
  const h = meta.autoOrient?.height ?? meta.height;
  if (!(w > 0 && h > 0)) throw new InputError("corrupt_image", id, "image header has no valid dimensions");
  if (w * h > limits.limitInputPixels) {
    throw new InputError("too_large", id, `image is ${h}x${w} = ${w * h} pixels, above the ${limits.limitInputPixels}-pixel limit`);
  }
  return { format: meta.format, originalHeight: h, originalWidth: w, pages: meta.pages ?? 1 };
}

/** flatten → resize → sRGB → 8-bit interleaved RGB. */
async function runPipeline(id: string, img: Sharp, target: Size, limits: DecodeLimits): Promise<InterleavedPixels> {
  let out: { data: Buffer; info: OutputInfo };
  try {
    let p = img
      .flatten({ background: FLATTEN_BACKGROUND })
      .resize({ width: target.width, height: target.height, fit: "fill", kernel: RESIZE_KERNEL })
      .toColourspace("srgb")
      .raw({ depth: "uchar" });
    if (limits.timeoutSeconds > 0) p = p.timeout({ seconds: limits.timeoutSeconds });
    out = await p.toBuffer({ resolveWithObject: true });
  } catch (err) {
    throw classifySharpError(id, err);
  }
  const { info, data } = out;
  if (info.width !== target.width || info.height !== target.height) {
    throw new InputError("corrupt_image", id, `decoder produced ${info.height}x${info.width}, expected ${target.height}x${target.width}`);
  }
  return { data, height: info.height, width: info.width, channels: info.channels as InterleavedPixels["channels"] };
}

/** Decode encoded bytes (already probed) to interleaved uint8 at `target`. */
export async function decodeEncoded(id: string, bytes: Buffer, target: Size, limits: DecodeLimits): Promise<InterleavedPixels> {
  let img: Sharp;
  try {
    img = sharp(bytes, inputOptions(limits)).autoOrient();
  } catch (err) {
    throw classifySharpError(id, err);
  }
  return runPipeline(id, img, target, limits);
}

/**
 * Raw pixels (already validated) at `target`, interleaved.
 * Already at the target size: passed through as they are (float32 input stays
 * unquantised; grey and alpha are handled by hwcToChwInto). Otherwise resized by
 * sharp like encoded input (float32 is quantised to uint8 first; the loss is
 * ≤ 0.5/255, the same as any 8-bit file).
 */
export async function decodeRaw(id: string, raw: RawPixels, target: Size, limits: DecodeLimits): Promise<InterleavedPixels> {
  if (raw.height === target.height && raw.width === target.width) {
    return { data: raw.data, height: raw.height, width: raw.width, channels: raw.channels };
  }
  let u8: Uint8Array;
  if (raw.data instanceof Float32Array) {
    u8 = new Uint8Array(raw.data.length);
    for (let i = 0; i < raw.data.length; i++) u8[i] = Math.round(raw.data[i]! * 255); // clamped by validateRaw
  } else {
    u8 = raw.data;
  }
  const buf = Buffer.from(u8.buffer, u8.byteOffset, u8.byteLength);
  let img: Sharp;
  try {
    img = sharp(buf, {
      raw: { width: raw.width, height: raw.height, channels: raw.channels },
      limitInputPixels: limits.limitInputPixels,
      sequentialRead: true,
    });
  } catch (err) {
    throw classifySharpError(id, err);
  }
  return runPipeline(id, img, target, limits);
}

/**
 * v / 255 for every uint8 v, as float32 (the same value the division stores), kept as the float's
 * bits: copying 32-bit words skips a float64 → float32 conversion per value.
 */
const U8_TO_UNIT = Float32Array.from({ length: 256 }, (_, v) => v / 255);
const U8_TO_UNIT_BITS = new Uint32Array(U8_TO_UNIT.buffer);
/**
 * Interleaved HWC (uint8 0..255 or float32 0..1) → planar CHW RGB float32 in [0, 1].
 * uint8 values become v / 255 (rounded once to float32, as torch's x / 255.0).
 * 1 channel: grey replicated; 2/4 channels: alpha composited onto white.
 */
export function hwcToChw(data: Uint8Array | Float32Array, height: number, width: number, channels: number): Float32Array {
  const out = new Float32Array(3 * height * width);
  hwcToChwInto(out, 0, data, height, width, channels);
  return out;
}

/**
 * hwcToChw written into `out` from `offset` (3·height·width values), e.g. one image's slot of a
 * batch tensor. Runs on the main thread: ≈0.8 CPU-ms for 592×448 RGB uint8 (a table lookup per value; was
 * ≈1.7 with a division per value into a fresh array).
 */
export function hwcToChwInto(out: Float32Array, offset: number, data: Uint8Array | Float32Array, height: number, width: number, channels: number): void {
  const n = height * width;
  if (data.length !== n * channels) throw new RangeError(`hwcToChw: ${data.length} != ${height}*${width}*${channels}`);
  if (offset < 0 || offset + 3 * n > out.length) throw new RangeError(`hwcToChw: ${3 * n} values at ${offset} do not fit in ${out.length}`);
  if (channels === 3 && !(data instanceof Float32Array)) {
    // The common case (every decoded image): one table lookup per value, copied as bits.
    const o = new Uint32Array(out.buffer, out.byteOffset + 4 * offset, 3 * n);
    // The table is read as the module constant, not through a variable: V8 then knows its
    // length and drops the bounds check of every lookup (0.84 vs 1.26 CPU-ms for 592×448).
    for (let i = 0, j = 0; i < n; i++, j += 3) {
      o[i] = U8_TO_UNIT_BITS[data[j]!]!;
      o[i + n] = U8_TO_UNIT_BITS[data[j + 1]!]!;
      o[i + 2 * n] = U8_TO_UNIT_BITS[data[j + 2]!]!;
    }
    return;
  }
  const r = out.subarray(offset, offset + n);
  const g = out.subarray(offset + n, offset + 2 * n);
  const b = out.subarray(offset + 2 * n, offset + 3 * n);
  const scale = data instanceof Float32Array ? 1 : 255;
  if (channels === 3) {
    for (let i = 0, j = 0; i < n; i++, j += 3) {
      r[i] = data[j]!;
      g[i] = data[j + 1]!;
      b[i] = data[j + 2]!;
    }
  } else if (channels === 1) {
    for (let i = 0; i < n; i++) {
      const v = data[i]! / scale;
      r[i] = v;
      g[i] = v;
      b[i] = v;
    }
  } else if (channels === 4 || channels === 2) {
    // Flatten onto white: c·a + 1·(1 − a).
    const ai = channels - 1;
    for (let i = 0, j = 0; i < n; i++, j += channels) {
      const a = data[j + ai]! / scale;
      const w = 1 - a;
      const rv = data[j]! / scale;
      r[i] = rv * a + w;
      g[i] = (channels === 4 ? data[j + 1]! / scale : rv) * a + w;
      b[i] = (channels === 4 ? data[j + 2]! / scale : rv) * a + w;
    }
  } else {
    throw new RangeError(`hwcToChw: unsupported channel count ${channels}`);
  }
}
