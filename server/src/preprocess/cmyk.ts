/**
 * CMYK without an ICC profile → RGB the way Pillow, OpenCV and web browsers do it: each ink taken
 * away from white, no colour management:
 *
 *   R = (255 − C)·(255 − K) / 255,  G = (255 − M)·(255 − K) / 255,  B = (255 − Y)·(255 − K) / 255
 *
 * rounded to the nearest integer. That is what FiftyOne's App shows for such a file and what
 * PIL-based pipelines (upstream RADIO's and FiftyOne's own loaders) give a model. libvips would
 * convert through its built-in CMYK profile instead: a visibly different colour (embedding cosine
 * 0.75 against Pillow's pixels on a test image). Files that carry a profile keep the
 * colour-managed conversion, as Pillow with ImageCms does.
 *
 * Written by hand: neither sharp nor libvips offers this conversion (their operations are linear
 * per band; this one multiplies two bands).
 */

/** Pixels converted between two turns of the event loop: ~6 ms on a slow core, so that a 100-MP file
 * (up to 0.6 s of work) never holds up the sidecar's other calls for long. */
const SLICE_PIXELS = 1 << 20;

/**
 * Interleaved 8-bit CMYK (ink amounts, 0 = none; libvips undoes Adobe's inversion on load) →
 * interleaved RGB, in slices with the event loop let through between them.
 */
export async function naiveCmykToRgb(cmyk: Uint8Array): Promise<Uint8Array> {
  const pixels = cmyk.length / 4;
  const rgb = new Uint8Array(pixels * 3);
  for (let first = 0; first < pixels; first += SLICE_PIXELS) {
    if (first > 0) await new Promise<void>((resolve) => setImmediate(resolve));
    const end = Math.min(pixels, first + SLICE_PIXELS) * 4;
    for (let i = first * 4, j = first * 3; i < end; i += 4, j += 3) {
      const white = 255 - cmyk[i + 3]!;
      rgb[j] = white - mulDiv255(cmyk[i]!, white);
      rgb[j + 1] = white - mulDiv255(cmyk[i + 1]!, white);
      rgb[j + 2] = white - mulDiv255(cmyk[i + 2]!, white);
    }
  }
  return rgb;
}

/** round(a·b / 255) for a, b in 0..255, in integers (the usual exact form: t = ab + 128, (t + t/256) / 256). */
function mulDiv255(a: number, b: number): number {
  const t = a * b + 128;
  return ((t >> 8) + t) >> 8;
}
