/**
 * Writers for the image formats sharp can't read (sharp can't write them either): BMP (24-bit,
 * 32-bit with alpha, 8-bit palette), PPM, PGM (8- and 16-bit), TGA and ICO, written here byte by
 * byte from their specifications, so the corpus does not depend on the decoder it tests. JPEG 2000
 * is too much to write by hand: `jp2ViaPillow` asks a Python with Pillow (and OpenJPEG) for it.
 *
 * Pixels come in top-down, interleaved (RGB, RGBA or grey), as the rest of the corpus uses them.
 */
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import path from "node:path";

const u16 = (n: number) => {
  const b = Buffer.alloc(2);
  b.writeUInt16LE(n);
  return b;
};
const u32 = (n: number) => {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n >>> 0);
  return b;
};
const i32 = (n: number) => {
  const b = Buffer.alloc(4);
  b.writeInt32LE(n);
  return b;
};

/** Bottom-up rows of `bytesPerPixel`, each padded to 4 bytes, with `map` turning a top-down pixel index into its bytes. */
function dibRows(w: number, h: number, bytesPerPixel: number, map: (i: number) => number[]): Buffer {
  const row = Math.ceil((w * bytesPerPixel) / 4) * 4;
  const out = Buffer.alloc(row * h);
  for (let y = 0; y < h; y++) {
    const at = (h - 1 - y) * row;
    for (let x = 0; x < w; x++) out.set(map(y * w + x), at + x * bytesPerPixel);
  }
  return out;
}

/** BITMAPINFOHEADER (40 bytes). */
function infoHeader(w: number, h: number, bpp: number, imageSize: number, colours = 0): Buffer {
  return Buffer.concat([u32(40), i32(w), i32(h), u16(1), u16(bpp), u32(0), u32(imageSize), i32(2835), i32(2835), u32(colours), u32(colours)]);
}

function bmpFile(header: Buffer, palette: Buffer, pixels: Buffer): Buffer {
  const offset = 14 + header.length + palette.length;
  return Buffer.concat([Buffer.from("BM", "latin1"), u32(offset + pixels.length), u32(0), u32(offset), header, palette, pixels]);
}

/** 24-bit BMP (BI_RGB, bottom-up BGR). */
export function bmp24(rgb: Buffer, w: number, h: number): Buffer {
  const px = dibRows(w, h, 3, (i) => [rgb[3 * i + 2]!, rgb[3 * i + 1]!, rgb[3 * i]!]);
  return bmpFile(infoHeader(w, h, 24, px.length), Buffer.alloc(0), px);
}

/** 32-bit BMP with alpha: BITMAPV4HEADER, BI_BITFIELDS with an alpha mask (BGRA). */
export function bmp32(rgba: Buffer, w: number, h: number): Buffer {
  const px = dibRows(w, h, 4, (i) => [rgba[4 * i + 2]!, rgba[4 * i + 1]!, rgba[4 * i]!, rgba[4 * i + 3]!]);
  const header = Buffer.concat([
    u32(108),
    i32(w),
    i32(h),
    u16(1),
    u16(32),
    u32(3 /* BI_BITFIELDS */),
    u32(px.length),
    i32(2835),
    i32(2835),
    u32(0),
    u32(0),
    u32(0x00ff0000),
    u32(0x0000ff00),
    u32(0x000000ff),
    u32(0xff000000),
    Buffer.from("BGRs", "latin1"), // LCS_sRGB
    Buffer.alloc(36 + 12), // endpoints, gamma (unused with sRGB)
  ]);
  return bmpFile(header, Buffer.alloc(0), px);
}

/** 8-bit palette BMP: the distinct colours of `rgb` (at most 256) as the colour table. */
export function bmp8(rgb: Buffer, w: number, h: number): Buffer {
  const colours = new Map<number, number>();
  const index = new Uint8Array(w * h);
  for (let i = 0; i < w * h; i++) {
    const key = (rgb[3 * i]! << 16) | (rgb[3 * i + 1]! << 8) | rgb[3 * i + 2]!;
    if (!colours.has(key)) colours.set(key, colours.size);
    index[i] = colours.get(key)!;
  }
  if (colours.size > 256) throw new Error(`bmp8: ${colours.size} colours`);
  const palette = Buffer.alloc(4 * colours.size);
  for (const [key, k] of colours) palette.set([key & 0xff, (key >> 8) & 0xff, key >> 16, 0], 4 * k);
  const px = dibRows(w, h, 1, (i) => [index[i]!]);
  return bmpFile(infoHeader(w, h, 8, px.length, colours.size), palette, px);
}

/** Binary PPM (P6). */
export function ppm(rgb: Buffer, w: number, h: number): Buffer {
  return Buffer.concat([Buffer.from(`P6\n${w} ${h}\n255\n`, "latin1"), rgb]);
}

/** Binary PGM (P5), 8-bit, or 16-bit big-endian when `grey` is a Uint16Array. */
export function pgm(grey: Uint8Array | Uint16Array, w: number, h: number): Buffer {
  const sixteen = grey instanceof Uint16Array;
  const data = Buffer.alloc(grey.length * (sixteen ? 2 : 1));
  grey.forEach((v, i) => (sixteen ? data.writeUInt16BE(v, 2 * i) : (data[i] = v)));
  return Buffer.concat([Buffer.from(`P5\n${w} ${h}\n${sixteen ? 65535 : 255}\n`, "latin1"), data]);
}

/** Uncompressed true-colour TGA (type 2), 24-bit BGR, top-left origin, with the TGA 2.0 footer. */
export function tga(rgb: Buffer, w: number, h: number): Buffer {
  const header = Buffer.concat([Buffer.from([0, 0, 2, 0, 0, 0, 0, 0]), u16(0), u16(0), u16(w), u16(h), Buffer.from([24, 0x20])]);
  const px = Buffer.alloc(w * h * 3);
  for (let i = 0; i < w * h; i++) px.set([rgb[3 * i + 2]!, rgb[3 * i + 1]!, rgb[3 * i]!], 3 * i);
  const footer = Buffer.concat([u32(0), u32(0), Buffer.from("TRUEVISION-XFILE.\0", "latin1")]);
  return Buffer.concat([header, px, footer]);
}

/** A one-image ICO: a 32-bit BGRA DIB (height doubled for the AND mask, which is all opaque). */
export function ico(rgba: Buffer, w: number, h: number): Buffer {
  if (w > 256 || h > 256) throw new Error("ico: at most 256×256");
  const xor = dibRows(w, h, 4, (i) => [rgba[4 * i + 2]!, rgba[4 * i + 1]!, rgba[4 * i]!, rgba[4 * i + 3]!]);
  const and = Buffer.alloc(Math.ceil(w / 32) * 4 * h);
  const dib = Buffer.concat([infoHeader(w, 2 * h, 32, xor.length + and.length), xor, and]);
  const entry = Buffer.concat([Buffer.from([w & 0xff, h & 0xff, 0, 0]), u16(1), u16(32), u32(dib.length), u32(6 + 16)]);
  return Buffer.concat([u16(0), u16(1), u16(1), entry, dib]);
}

/** A Python with Pillow: RADIO_PYTHON, else the repository's .venv, else python3 on PATH. */
function python(repo: string): string {
  if (process.env.RADIO_PYTHON) return process.env.RADIO_PYTHON;
  const venv = path.join(repo, ".venv", "bin", "python");
  return existsSync(venv) ? venv : "python3";
}

const JP2_SCRIPT = [
  "import sys",
  "from PIL import Image, features",
  'assert features.check_codec("jpg_2000"), "this Pillow has no OpenJPEG"',
  "w, h = int(sys.argv[2]), int(sys.argv[3])",
  'Image.frombytes("RGB", (w, h), sys.stdin.buffer.read()).save(sys.argv[1], "JPEG2000", irreversible=False)',
].join("\n");

/**
 * Writes `rgb` as a lossless JPEG 2000 file (JP2 container) with Pillow; returns null (and why) when
 * no Python with Pillow and OpenJPEG is found.
 */
export function jp2ViaPillow(out: string, rgb: Buffer, w: number, h: number, repo: string): string | null {
  const r = spawnSync(python(repo), ["-c", JP2_SCRIPT, out, String(w), String(h)], { input: rgb, encoding: "utf8", timeout: 60_000 });
  if (r.status === 0) return null;
  return (r.error?.message ?? r.stderr.trim().split("\n").at(-1)) || `exit ${r.status}`;
}
