/** Small helpers that generate test images with sharp (nothing is checked in). */

import sharp, { type Sharp } from "sharp";

export type RGB = { r: number; g: number; b: number };

/** A solid-colour image (3 channels, or 4 with `alpha` in 0..1). */
export function solid(width: number, height: number, c: RGB, alpha?: number): Sharp {
  const channels = alpha === undefined ? 3 : 4;
  return sharp({
    create: { width, height, channels, background: alpha === undefined ? c : { ...c, alpha } },
  });
}

/** Interleaved RGB pixels: left half `left`, right half `right`. */
export function twoToneRaw(width: number, height: number, left: RGB, right: RGB): Buffer {
  const buf = Buffer.alloc(width * height * 3);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const c = x < width / 2 ? left : right;
      const o = (y * width + x) * 3;
      buf[o] = c.r;
      buf[o + 1] = c.g;
      buf[o + 2] = c.b;
    }
  }
  return buf;
}

export function twoTone(width: number, height: number, left: RGB, right: RGB): Sharp {
  return sharp(twoToneRaw(width, height, left, right), { raw: { width, height, channels: 3 } });
}

/** Deterministic pseudo-random texture (so JPEGs have real entropy-coded data). */
export function noiseRaw(width: number, height: number, seed = 1): Buffer {
  const buf = Buffer.alloc(width * height * 3);
  let s = seed >>> 0 || 1;
  for (let i = 0; i < buf.length; i++) {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    buf[i] = s & 0xff;
  }
  return buf;
}

const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

export function crc32(b: Uint8Array): number {
  let c = 0xffffffff;
  for (const v of b) c = CRC_TABLE[(c ^ v) & 0xff]! ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

/**
 * A decompression-bomb stand-in: a valid 1×1 PNG whose IHDR is rewritten to
 * claim width×height (CRC fixed up). A few dozen bytes on disk.
 */
export async function pngClaimingSize(width: number, height: number): Promise<Buffer> {
  const png = Buffer.from(await solid(1, 1, { r: 0, g: 0, b: 0 }).png().toBuffer());
  // 8-byte signature, then IHDR: length(4) 'IHDR'(4) data(13) crc(4)
  if (png.toString("latin1", 12, 16) !== "IHDR") throw new Error("unexpected PNG layout");
  png.writeUInt32BE(width, 16);
  png.writeUInt32BE(height, 20);
  png.writeUInt32BE(crc32(png.subarray(12, 29)), 29);
  return png;
}
