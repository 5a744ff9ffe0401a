/**
 * Image preprocessing: {path | bytes | raw} → uint8 RGB, interleaved, at a resolution chosen
 * by the resolution policy: the graph's input as it is.
 *
 *   const paths = await createPathPolicy(['/data/images']);
 *   const img = await preprocessImage({ id: 'a', path: '/data/images/a.jpg' },
 *     { paths, geometry, policy: 'default' });
 *
 * Two-step use (e.g. to group by resolution before decoding):
 *   const opened = await openImage(input, opts);        // reads + header only
 *   const target = resolveTargetResolution(opened.originalHeight, opened.originalWidth, geometry, policy, opened.id);
 *   const img = await decodeOpened(opened, target, opts);
 *
 * Every failure caused by the input is an InputError (see errors.ts).
 */

import { classifySharpError, decodeEncoded, decodeRaw, probeEncoded, type ColourRoute, type DecodeLimits } from "./decode.js";
import { InputError } from "./errors.js";
import type { SupportedFormat } from "./format.js";
import { resolveTargetResolution, type GraphGeometry, type ResolutionPolicy, type Size } from "./resolution.js";
import { loadSource, type PathPolicy, type SourceLimits } from "./source.js";
import type { ImageInput, PreprocessedImage, RawPixels } from "./types.js";
import { IMAGE_LIMITS } from "../defaults.js";

export * from "./errors.js";
export * from "./types.js";
export * from "./resolution.js";
export { sniffFormat } from "./format.js";
export { createPathPolicy, type PathPolicy } from "./source.js";
export { configureSharp, recommendedDecodeParallelism } from "./sharp-config.js";

export interface PreprocessLimits extends SourceLimits, DecodeLimits {}

export interface OpenOptions {
  readonly paths: PathPolicy;
  readonly limits?: Partial<PreprocessLimits>;
}

export interface PreprocessOptions extends OpenOptions {
  readonly geometry: GraphGeometry;
  readonly policy: ResolutionPolicy;
}

/** An input that has been read and whose header has been validated, not yet decoded. */
export type OpenedImage =
  | {
      readonly kind: "encoded";
      readonly id: string;
      readonly bytes: Buffer;
      readonly format: SupportedFormat;
      /** How it reaches 8-bit sRGB (decode.ts). */
      readonly colour: ColourRoute;
      readonly originalHeight: number;
      readonly originalWidth: number;
    }
  | {
      readonly kind: "raw";
      readonly id: string;
      readonly raw: RawPixels;
      readonly originalHeight: number;
      readonly originalWidth: number;
    };

function limitsOf(opts: OpenOptions): PreprocessLimits {
  return { ...IMAGE_LIMITS, ...(opts.limits ?? {}) };
}

function idOf(input: unknown): string {
  const id = typeof input === "object" && input !== null ? (input as { id?: unknown }).id : undefined;
  return typeof id === "string" ? id : "?";
}

/** Guarantee that only InputError escapes for bad input. */
function asInputError(input: unknown, err: unknown): InputError {
  if (err instanceof InputError) return err;
  return classifySharpError(idOf(input), err);
}

/** Read the input and validate its header/shape. Cheap: no pixel decoding. */
export async function openImage(input: ImageInput, opts: OpenOptions): Promise<OpenedImage> {
  const limits = limitsOf(opts);
  try {
    const src = await loadSource(input, opts.paths, limits);
    if (src.kind === "raw") {
      return { kind: "raw", id: src.id, raw: src.raw, originalHeight: src.raw.height, originalWidth: src.raw.width };
    }
    const probe = await probeEncoded(src.id, src.bytes, limits);
    return {
      kind: "encoded",
      id: src.id,
      bytes: src.bytes,
      format: probe.format,
      colour: probe.colour,
      originalHeight: probe.originalHeight,
      originalWidth: probe.originalWidth,
    };
  } catch (err) {
    throw asInputError(input, err);
  }
}

/** Decode an opened image at `target` (sides should come from resolveTargetResolution). */
export async function decodeOpened(opened: OpenedImage, target: Size, opts: Pick<OpenOptions, "limits"> = {}): Promise<PreprocessedImage> {
  const limits: PreprocessLimits = { ...IMAGE_LIMITS, ...(opts.limits ?? {}) };
  try {
    if (!Number.isSafeInteger(target.height) || !Number.isSafeInteger(target.width) || target.height <= 0 || target.width <= 0) {
      throw new InputError("invalid_input", opened.id, `invalid target size ${String(target.height)}x${String(target.width)}`);
    }
    const { data, height, width } =
      opened.kind === "raw"
        ? await decodeRaw(opened.id, opened.raw, target, limits)
        : await decodeEncoded(opened.id, opened.bytes, opened.colour, { width: opened.originalWidth, height: opened.originalHeight }, target, limits);
    return { id: opened.id, pixels: data, height, width, originalHeight: opened.originalHeight, originalWidth: opened.originalWidth };
  } catch (err) {
    throw asInputError(opened, err);
  }
}

/** Read, validate, choose the resolution, decode and resize one image. */
export async function preprocessImage(input: ImageInput, opts: PreprocessOptions): Promise<PreprocessedImage> {
  const opened = await openImage(input, opts);
  const target = resolveTargetResolution(opened.originalHeight, opened.originalWidth, opts.geometry, opts.policy, opened.id);
  return decodeOpened(opened, target, opts);
}
