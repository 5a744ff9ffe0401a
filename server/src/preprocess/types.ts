/** Input and output shapes for image preprocessing. */

/** Raw pixels, interleaved HWC (row-major, channels last — sharp's raw layout). */
export interface RawPixels {
  readonly data: Uint8Array | Float32Array;
  readonly height: number;
  readonly width: number;
  /** 1 = grey, 3 = RGB, 4 = RGBA (alpha not premultiplied). */
  readonly channels: 1 | 3 | 4;
  /** 'uint8' (0..255) or 'float32' (0..1). Must match the type of `data`. */
  readonly dtype: "uint8" | "float32";
}

/** A file on this machine (absolute path, must resolve under an allowed root). */
export interface PathInput {
  readonly id: string;
  readonly path: string;
}

/** An encoded image (JPEG, PNG, …) in memory. */
export interface BytesInput {
  readonly id: string;
  readonly bytes: Uint8Array;
}

export interface RawInput {
  readonly id: string;
  readonly raw: RawPixels;
}

/** One image to preprocess; `id` is only used to name the input in errors. */
export type ImageInput = PathInput | BytesInput | RawInput;

/**
 * Decoded pixels at the model's input size, still interleaved (HWC): uint8 from the decoder, or a
 * raw input passed through (uint8 or float32, 1/3/4 channels). `hwcToChwInto` turns them into
 * model-ready planes.
 */
export interface InterleavedPixels {
  readonly data: Uint8Array | Float32Array;
  readonly height: number;
  readonly width: number;
  readonly channels: 1 | 2 | 3 | 4;
}

/** Model-ready pixels: float32 CHW, RGB, values in [0, 1]. */
export interface PreprocessedImage {
  readonly id: string;
  /** Length 3·height·width: all R, then all G, then all B. */
  readonly pixels: Float32Array;
  readonly height: number;
  readonly width: number;
  /** Size of the source image as displayed, i.e. after EXIF orientation. */
  readonly originalHeight: number;
  readonly originalWidth: number;
}
