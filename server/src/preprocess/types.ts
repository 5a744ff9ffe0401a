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

/** Decoded pixels at the model's input size: uint8 RGB, interleaved (HWC), the graph's input as it is. */
export interface RgbPixels {
  /** Length height·width·3: R, G, B of each pixel, row by row. */
  readonly data: Uint8Array;
  readonly height: number;
  readonly width: number;
}

/** An image ready for the graph. */
export interface PreprocessedImage {
  readonly id: string;
  /** uint8 RGB, interleaved: length height·width·3. */
  readonly pixels: Uint8Array;
  readonly height: number;
  readonly width: number;
  /** Size of the source image as displayed, i.e. after EXIF orientation. */
  readonly originalHeight: number;
  readonly originalWidth: number;
}
