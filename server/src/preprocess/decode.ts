/**
 * Decoding with sharp: encoded bytes or raw pixels → resized uint8 RGB, interleaved: the graph's
 * input as it is (the graph does the float conversion, on the device).
 *
 * All heavy work (decode, colour conversion, resize) runs inside libvips on
 * libuv worker threads; the main thread only copies each image's bytes into
 * its batch tensor.
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
import type { RawPixels, RgbPixels } from "./types.js";

const RESIZE_KERNEL = "cubic" as const;
const FLATTEN_BACKGROUND = "#ffffff";

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
  /** 16-bit RGB with an embedded ICC profile: decodeEncoded must take it to 8-bit sRGB first (see there). */
  readonly highBitProfile: boolean;
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
  return { format: meta.format, originalHeight: h, originalWidth: w, pages: meta.pages ?? 1, highBitProfile: meta.space === "rgb16" && !!meta.hasProfile };
}

/** flatten → resize → sRGB → 8-bit interleaved RGB. */
async function runPipeline(id: string, img: Sharp, target: Size, limits: DecodeLimits): Promise<RgbPixels> {
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
  if (info.width !== target.width || info.height !== target.height || info.channels !== 3) {
    throw new InputError("corrupt_image", id, `decoder produced ${info.height}x${info.width}x${info.channels}, expected ${target.height}x${target.width}x3`);
  }
  return { data, height: info.height, width: info.width };
}

/** Decode encoded bytes (already probed) to interleaved uint8 at `target`. */
export async function decodeEncoded(id: string, bytes: Buffer, highBitProfile: boolean, target: Size, limits: DecodeLimits): Promise<RgbPixels> {
  let img: Sharp;
  try {
    img = sharp(bytes, inputOptions(limits)).autoOrient();
    // sharp converts 16-bit RGB with an embedded profile to Display P3 (not sRGB), and nothing
    // converts it back before the 8-bit output: such images (16-bit PNG/TIFF, 10/12-bit AVIF) would
    // come out with P3 values. Taking them to 8-bit sRGB first makes sharp convert their profile
    // to sRGB, as for 8-bit images (probeEncoded read the header).
    if (highBitProfile) img = img.pipelineColourspace("srgb");
  } catch (err) {
    throw classifySharpError(id, err);
  }
  return runPipeline(id, img, target, limits);
}

/**
 * Raw pixels (already validated) at `target`, as uint8 RGB. uint8 RGB already at the target size
 * passes through as it is; anything else goes through sharp like encoded input (grey to RGB, alpha
 * flattened onto white, resized). float32 is quantised to uint8 first, as the graph takes uint8:
 * the loss is ≤ 0.5/255, the same as any 8-bit file.
 */
export async function decodeRaw(id: string, raw: RawPixels, target: Size, limits: DecodeLimits): Promise<RgbPixels> {
  if (raw.height === target.height && raw.width === target.width && raw.channels === 3 && raw.data instanceof Uint8Array) {
    return { data: raw.data, height: raw.height, width: raw.width };
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
