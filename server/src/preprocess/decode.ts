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
 *    palette, 16-bit and CMYK all come out as 8-bit sRGB; embedded ICC profiles
 *    are converted to sRGB. 8-bit CMYK without a profile is converted as Pillow
 *    and browsers convert it, not through libvips' built-in CMYK profile (cmyk.ts).
 *  - Resize with `fit: 'fill'` (the resolution policy already chose an aspect
 *    close to the original, so no crop or padding) and kernel 'cubic'
 *    (Catmull-Rom, a = -0.5). Rationale: it is the same filter as PIL's BICUBIC,
 *    which Hugging Face image processors (CLIPImageProcessor, resample=3) use,
 *    and like PIL, libvips widens the kernel when downsampling, so it
 *    antialiases (unlike torch's F.interpolate bilinear without antialias,
 *    which aliases on large reductions). It is sharper than 'linear' and rings
 *    less than sharp's default 'lanczos3'.
 *  - Upsizing (either side) does not use sharp's resize: libvips samples an
 *    upsized image half an output pixel off the pixel-centre grid that PIL and
 *    torch use (a textured 62×45 image to 64×48 came out 12.6/255 from PIL's
 *    on average, and EXIF-rotated files differed from their rotated pixels).
 *    The sides that shrink are resized first; the rest is a bicubic affine with
 *    centre-aligned offsets (`upsize`): within 0.3/255 of PIL on average.
 */

import sharp from "sharp";
import type { Metadata, OutputInfo, Sharp, SharpOptions } from "sharp";

import { naiveCmykToRgb } from "./cmyk.js";
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
  readonly colour: ColourRoute;
}

/**
 * How decodeEncoded reaches 8-bit sRGB:
 *  - "sharp": sharp's own conversion (an embedded profile → sRGB);
 *  - "srgb-first": 16-bit RGB with an embedded profile, taken to 8-bit sRGB first (see decodeEncoded);
 *  - "naive-cmyk": 8-bit CMYK without a profile, converted as Pillow does (cmyk.ts).
 */
export type ColourRoute = "sharp" | "srgb-first" | "naive-cmyk";

function colourRoute(meta: Metadata): ColourRoute {
  if (meta.space === "rgb16" && meta.hasProfile) return "srgb-first";
  if (meta.space === "cmyk" && !meta.hasProfile && meta.channels === 4 && meta.depth === "uchar") return "naive-cmyk";
  return "sharp";
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
  return { format: meta.format, originalHeight: h, originalWidth: w, pages: meta.pages ?? 1, colour: colourRoute(meta) };
}

/** flatten → resize → sRGB → 8-bit interleaved RGB. `source` is the size `img` decodes to (oriented). */
async function runPipeline(id: string, img: Sharp, source: Size, target: Size, limits: DecodeLimits): Promise<RgbPixels> {
  const flat = img.flatten({ background: FLATTEN_BACKGROUND });
  if (target.width <= source.width && target.height <= source.height) {
    return toRgb(id, flat.resize({ width: target.width, height: target.height, fit: "fill", kernel: RESIZE_KERNEL }), target, limits);
  }
  // Upsizing: shrink the sides that shrink, pad by replicated edges (the affine's kernel reads past
  // them), then upsize by an affine whose offsets put output pixel centres where PIL's are.
  const shrunk = { width: Math.min(target.width, source.width), height: Math.min(target.height, source.height) };
  const pad = UPSIZE_PAD;
  const padded = await toRgb(
    id,
    flat
      .resize({ width: shrunk.width, height: shrunk.height, fit: "fill", kernel: RESIZE_KERNEL })
      .extend({ top: pad, bottom: pad, left: pad, right: pad, extendWith: "copy" }),
    { width: shrunk.width + 2 * pad, height: shrunk.height + 2 * pad },
    limits,
  );
  return upsize(id, padded, pad, target, limits);
}

/** Replicated border around an image before `upsize`: Catmull-Rom reads 2 pixels each side. */
const UPSIZE_PAD = 3;

/**
 * `padded` (an image with `pad` replicated pixels on each side) → `target`, by libvips' bicubic
 * affine. libvips maps input x to output X = s·(x + idx) + odx, output pixel X sampled at X, and
 * starts the output at X = 0. PIL's centres: output X samples input (X + ½)/s − ½ of the unpadded
 * image, i.e. padded x = (X + ½)/s − ½ + pad, so idx = ½ − pad and odx = −½; the output is then
 * the target's pixels from (0, 0) on, with a few columns and rows past it, cut off here.
 */
async function upsize(id: string, padded: RgbPixels, pad: number, target: Size, limits: DecodeLimits): Promise<RgbPixels> {
  const sx = target.width / (padded.width - 2 * pad);
  const sy = target.height / (padded.height - 2 * pad);
  const img = sharp(padded.data, { raw: { width: padded.width, height: padded.height, channels: 3 } }).affine([sx, 0, 0, sy], {
    idx: 0.5 - pad,
    idy: 0.5 - pad,
    odx: -0.5,
    ody: -0.5,
    interpolator: sharp.interpolators.bicubic,
  });
  const out = await toRgb(id, img, null, limits);
  if (out.width < target.width || out.height < target.height) {
    throw new Error(`upsizing produced ${out.height}x${out.width}, short of ${target.height}x${target.width}`);
  }
  if (out.width === target.width && out.height === target.height) return out;
  const data = new Uint8Array(target.width * target.height * 3);
  const row = target.width * 3;
  for (let y = 0; y < target.height; y++) data.set(out.data.subarray(y * out.width * 3, y * out.width * 3 + row), y * row);
  return { data, height: target.height, width: target.width };
}

/** Run `p` to 8-bit interleaved pixels in `space`, under the decode timeout; sharp's errors as InputErrors. */
async function render(id: string, p: Sharp, space: "srgb" | "cmyk", limits: DecodeLimits): Promise<{ data: Buffer; info: OutputInfo }> {
  try {
    let q = p.toColourspace(space).raw({ depth: "uchar" });
    if (limits.timeoutSeconds > 0) q = q.timeout({ seconds: limits.timeoutSeconds });
    return await q.toBuffer({ resolveWithObject: true });
  } catch (err) {
    throw classifySharpError(id, err);
  }
}

/** Run `p` to 8-bit interleaved sRGB; `expected` (when given) is the size it must come out at. */
async function toRgb(id: string, p: Sharp, expected: Size | null, limits: DecodeLimits): Promise<RgbPixels> {
  const { info, data } = await render(id, p, "srgb", limits);
  if (info.channels !== 3 || (expected !== null && (info.width !== expected.width || info.height !== expected.height))) {
    const want = expected === null ? "3 channels" : `${expected.height}x${expected.width}x3`;
    throw new InputError("corrupt_image", id, `decoder produced ${info.height}x${info.width}x${info.channels}, expected ${want}`);
  }
  return { data, height: info.height, width: info.width };
}

/** Decode encoded bytes (already probed) to interleaved uint8 at `target`. */
export async function decodeEncoded(id: string, bytes: Buffer, colour: ColourRoute, source: Size, target: Size, limits: DecodeLimits): Promise<RgbPixels> {
  if (colour === "naive-cmyk") return decodeRaw(id, await naiveCmykPixels(id, bytes, source, target, limits), target, limits);
  let img: Sharp;
  try {
    img = sharp(bytes, inputOptions(limits)).autoOrient();
    // sharp converts 16-bit RGB with an embedded profile to Display P3 (not sRGB), and nothing
    // converts it back before the 8-bit output: such images (16-bit PNG/TIFF, 10/12-bit AVIF) would
    // come out with P3 values. Taking them to 8-bit sRGB first makes sharp convert their profile
    // to sRGB, as for 8-bit images (probeEncoded read the header).
    if (colour === "srgb-first") img = img.pipelineColourspace("srgb");
  } catch (err) {
    throw classifySharpError(id, err);
  }
  return runPipeline(id, img, source, target, limits);
}

/**
 * A profile-less CMYK file (oriented) → RGB pixels by cmyk.ts, which decodeRaw then resizes to the
 * target. Pillow converts at full size, then resizes; here a file over twice the target on a side
 * has its inks shrunk to twice the target first (JPEG shrink-on-load included). That bounds memory
 * (a 100-MP file held ~1 GB converted whole) and halves the time, at about the same distance from
 * Pillow's result (mean 0.23/255 shrunk vs 0.61 whole on a 4000×3000 photo to 448×592; 0.54 vs
 * 0.32 on an 800×600 synthetic one to 64×96; max 2–6 either way).
 */
async function naiveCmykPixels(id: string, bytes: Buffer, source: Size, target: Size, limits: DecodeLimits): Promise<RawPixels> {
  const inks = { width: Math.min(source.width, 2 * target.width), height: Math.min(source.height, 2 * target.height) };
  let p: Sharp;
  try {
    // pipelineColourspace("cmyk") keeps the inks as decoded: no transform through a CMYK profile
    p = sharp(bytes, inputOptions(limits)).autoOrient().pipelineColourspace("cmyk");
    if (inks.width < source.width || inks.height < source.height) {
      p = p.resize({ width: inks.width, height: inks.height, fit: "fill", kernel: RESIZE_KERNEL });
    }
  } catch (err) {
    throw classifySharpError(id, err);
  }
  const { data, info } = await render(id, p, "cmyk", limits);
  if (info.channels !== 4) throw new InputError("corrupt_image", id, `CMYK decoder produced ${info.channels} channels, expected 4`);
  return { data: await naiveCmykToRgb(data), height: info.height, width: info.width, channels: 3, dtype: "uint8" };
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
  return runPipeline(id, img, { width: raw.width, height: raw.height }, target, limits);
}
