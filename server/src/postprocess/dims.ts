/** Shape of a spatial feature tensor stored channel-major: index = c * height * width + y * width + x. */
export interface FeatureDims {
  channels: number;
  height: number;
  width: number;
}

export type FloatArray = Float32Array | Float64Array;

export function assertPositiveInt(value: number, name: string): void {
  if (!Number.isInteger(value) || value <= 0) {
    throw new RangeError(`${name} must be a positive integer (got ${value})`);
  }
}

/** Validates dims against the buffer length; returns the number of spatial positions (h·w). */
export function validateFeatureDims(features: ArrayLike<number>, dims: FeatureDims): number {
  assertPositiveInt(dims.channels, "channels");
  assertPositiveInt(dims.height, "height");
  assertPositiveInt(dims.width, "width");
  const n = dims.height * dims.width;
  if (features.length !== dims.channels * n) {
    throw new RangeError(
      `features has ${features.length} values, expected channels*height*width = ` + `${dims.channels}*${dims.height}*${dims.width} = ${dims.channels * n}`,
    );
  }
  return n;
}
