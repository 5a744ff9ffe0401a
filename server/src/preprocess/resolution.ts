/**
 * Resolution policy: which (height, width) an image is resized to before it is
 * fed to the model. Pure functions, no I/O, no sharp.
 *
 * C-RADIO accepts any size whose sides are multiples of the "resolution step":
 * the patch size (16), times the window size for ViTDet-windowed variants (the
 * patch grid must tile into whole windows). Upstream calls this
 * `min_resolution_step`.
 */

import { InputError } from "./errors.js";

export interface GraphGeometry {
  /** ViT patch size in pixels (16 for C-RADIOv4). */
  readonly patchSize: number;
  /** ViTDet window size in patches, or null when the model is not windowed. */
  readonly windowSize: number | null;
  /** Largest supported side, in pixels (2048 for C-RADIOv4). */
  readonly maxResolution: number;
  /** Preferred [height, width] (512×512 for C-RADIOv4). */
  readonly preferred: readonly [height: number, width: number];
}

export interface Size {
  readonly height: number;
  readonly width: number;
}

/**
 * - `'default'`: bounded, near the preferred area, aspect snapped to a bucket so
 *   images of similar aspect share one resolution (lets the batcher group them).
 * - `'native'`: nearest supported size of the original (upstream
 *   `get_nearest_supported_resolution`), capped at `maxResolution`.
 * - `{ max: N }`: like native, but the longer side is capped at N (≤ maxResolution).
 * - `{ fixed }`: exactly this size; both sides must be multiples of the step.
 */
export type ResolutionPolicy = "default" | "native" | { readonly max: number } | { readonly fixed: Size };

export interface AspectBucket {
  /** e.g. '16:9' (width:height). */
  readonly name: string;
  /** width / height */
  readonly ratio: number;
}

const bucket = (w: number, h: number): AspectBucket => ({ name: `${w}:${h}`, ratio: w / h });

/** Aspect buckets (width:height) for the 'default' policy. */
export const ASPECT_BUCKETS: readonly AspectBucket[] = Object.freeze([
  bucket(1, 1),
  bucket(5, 4),
  bucket(4, 5),
  bucket(4, 3),
  bucket(3, 4),
  bucket(3, 2),
  bucket(2, 3),
  bucket(16, 9),
  bucket(9, 16),
  bucket(2, 1),
  bucket(1, 2),
  bucket(3, 1),
  bucket(1, 3),
]);

function isPositiveInt(n: unknown): n is number {
  return typeof n === "number" && Number.isSafeInteger(n) && n > 0;
}

/** Pixel step every side must be a multiple of: patchSize × (windowSize ?? 1). */
export function resolutionStep(geometry: GraphGeometry): number {
  return geometry.patchSize * (geometry.windowSize ?? 1);
}

/** Python 3 `round()`: round half to even (what upstream's rounding does). */
export function roundHalfEven(x: number): number {
  const f = Math.floor(x);
  const diff = x - f;
  if (diff > 0.5) return f + 1;
  if (diff < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
}

/** Largest multiple of `step` that is ≤ `limit` (at least one step). */
function maxMultiple(limit: number, step: number): number {
  return Math.max(step, Math.floor(limit / step) * step);
}

/**
 * Nearest supported resolution of an (h, w) image, as upstream
 * `RADIOModel.get_nearest_supported_resolution` (round each side to the nearest
 * multiple of the step, half-to-even like Python, at least one step), except
 * that if the longer side exceeds `cap` (default `maxResolution`) the image is
 * first scaled down keeping its aspect ratio.
 */
export function nearestSupportedResolution(height: number, width: number, geometry: GraphGeometry, cap: number = geometry.maxResolution): Size {
  const step = resolutionStep(geometry);
  const limit = Math.min(cap, geometry.maxResolution);
  let h = height;
  let w = width;
  const longer = Math.max(h, w);
  if (longer > limit) {
    const scale = limit / longer;
    h *= scale;
    w *= scale;
  }
  const top = maxMultiple(limit, step);
  const snap = (x: number): number => Math.min(top, Math.max(step, roundHalfEven(x / step) * step));
  return { height: snap(h), width: snap(w) };
}

/** Nearest aspect bucket to w/h, by distance in log space. */
export function snapAspectBucket(height: number, width: number): AspectBucket {
  const target = Math.log(width / height);
  let best = ASPECT_BUCKETS[0]!;
  let bestDist = Infinity;
  for (const b of ASPECT_BUCKETS) {
    const d = Math.abs(Math.log(b.ratio) - target);
    if (d < bestDist) {
      bestDist = d;
      best = b;
    }
  }
  return best;
}

/**
 * Size for an aspect bucket under the 'default' policy: multiples of the step,
 * H·W ≈ preferred area, W/H ≈ bucket ratio, each side within [step, maxResolution].
 * Depends only on the bucket and the model, so all images in one bucket share it.
 */
function bucketResolution(b: AspectBucket, geometry: GraphGeometry): Size {
  const step = resolutionStep(geometry);
  const [ph, pw] = geometry.preferred;
  const area = ph * pw;
  const top = maxMultiple(geometry.maxResolution, step);
  const snap = (x: number): number => Math.min(top, Math.max(step, Math.round(x / step) * step));
  return {
    height: snap(Math.sqrt(area / b.ratio)),
    width: snap(Math.sqrt(area * b.ratio)),
  };
}

/** 'default' policy: snap the aspect ratio to a bucket, then use the bucket's size. */
export function defaultResolution(height: number, width: number, geometry: GraphGeometry): Size {
  return bucketResolution(snapAspectBucket(height, width), geometry);
}

/**
 * Parse a policy from a string: 'default' | 'native' | 'max:<N>' | '<H>x<W>'
 * (fixed). Throws InputError(invalid_input) on anything else.
 */
export function parseResolutionPolicy(text: string, inputId = "request"): ResolutionPolicy {
  const s = text.trim().toLowerCase();
  if (s === "default" || s === "") return "default";
  if (s === "native") return "native";
  let m = /^max:(\d{1,6})$/.exec(s);
  if (m) return { max: Number(m[1]) };
  m = /^(\d{1,6})x(\d{1,6})$/.exec(s);
  if (m) return { fixed: { height: Number(m[1]), width: Number(m[2]) } };
  throw new InputError("invalid_input", inputId, `unknown resolution policy ${JSON.stringify(text)} (expected 'default', 'native', 'max:<N>' or '<H>x<W>')`);
}

/**
 * Target (height, width) for an image whose displayed size (after EXIF
 * orientation) is (height, width). Throws InputError(invalid_input) for an
 * invalid policy or image size.
 */
export function resolveTargetResolution(height: number, width: number, geometry: GraphGeometry, policy: ResolutionPolicy, inputId = "request"): Size {
  if (!isPositiveInt(height) || !isPositiveInt(width)) {
    throw new InputError("invalid_input", inputId, `invalid image size ${String(height)}x${String(width)}`);
  }
  const step = resolutionStep(geometry);
  if (policy === "default") return defaultResolution(height, width, geometry);
  if (policy === "native") return nearestSupportedResolution(height, width, geometry);
  if (typeof policy === "object" && policy !== null && "max" in policy) {
    const n = policy.max;
    if (!isPositiveInt(n) || n < step) {
      throw new InputError("invalid_input", inputId, `max resolution ${String(n)} must be an integer ≥ ${step}`);
    }
    return nearestSupportedResolution(height, width, geometry, n);
  }
  if (typeof policy === "object" && policy !== null && "fixed" in policy) {
    const { height: fh, width: fw } = policy.fixed;
    if (!isPositiveInt(fh) || !isPositiveInt(fw)) {
      throw new InputError("invalid_input", inputId, `fixed resolution ${String(fh)}x${String(fw)} must be positive integers`);
    }
    if (fh % step !== 0 || fw % step !== 0) {
      throw new InputError("invalid_input", inputId, `fixed resolution ${fh}x${fw} is not a multiple of the model's resolution step ${step}`);
    }
    if (fh > geometry.maxResolution || fw > geometry.maxResolution) {
      throw new InputError("invalid_input", inputId, `fixed resolution ${fh}x${fw} exceeds the model's maximum resolution ${geometry.maxResolution}`);
    }
    return { height: fh, width: fw };
  }
  throw new InputError("invalid_input", inputId, `invalid resolution policy ${JSON.stringify(policy)}`);
}
