/**
 * The bad-input corpus: generates, into OUTDIR, every kind of image input the sidecar must survive
 * (broken, hostile, exotic but valid), plus manifest.json saying what each must give. Nothing here
 * is committed: the files are generated (a few hundred KB in all), so the node test
 * (test/node/corpus.test.ts) and the FiftyOne test (test/python/test_reliability.py) share one
 * definition of the corpus and of the expected outcomes.
 *
 *   node --import tsx test/corpus/make-corpus.ts OUTDIR [--probe-url http://127.0.0.1:PORT]
 *
 * Layout: OUTDIR/root is the allowed root (start the sidecar with --allowed-root OUTDIR/root);
 * OUTDIR/outside holds a valid image the sidecar must never read. --probe-url is where the SVGs'
 * and the HTML page's external references point: run an HTTP server there and check that it gets
 * no request.
 *
 * Formats sharp can't read (BMP, PPM/PGM, TGA, ICO, JPEG 2000) are UNSUPPORTED_FORMAT at the
 * sidecar (`expect`); the Python client then decodes them with Pillow, so an item's `client` says
 * what the zoo model gives where that differs. The JPEG 2000 file needs a Python with Pillow and
 * OpenJPEG (RADIO_PYTHON, else .venv, else python3); without one the item is left out.
 */
import { mkdirSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

import sharp from "sharp";

import { noiseRaw, pngClaimingSize, solid } from "../node/support/images.js";
import { bmp24, bmp32, bmp8, ico, jp2ViaPillow, pgm, ppm, tga } from "./formats.js";
import type { ProtoErrorCode } from "../../server/src/transport/grpc/proto.js";

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");

/** The wire error codes a corpus image can expect (the input errors; never the server's own). */
export type ErrorCode = Exclude<ProtoErrorCode, "ERROR_CODE_UNSPECIFIED" | "INTERNAL" | "CANCELLED" | "DEADLINE_EXCEEDED" | "RESOURCE_EXHAUSTED">;

export type Expect =
  /** Decodes: its original (displayed) size, and optionally another item it must embed like. */
  | { ok: true; originalSize: [number, number]; sameAs?: string }
  /** A per-image error: the code, and a regular expression (source) its message matches. */
  | { ok: false; code: ErrorCode; message: string };

export interface CorpusItem {
  name: string;
  /** What the item stands for, in words. */
  kind: string;
  /** path: sent as a path (and, when `bytes` is true, also as encoded bytes); raw: raw pixels. */
  source: "path" | "raw";
  path?: string;
  /** The file's content is the point (not its location): also send it as encoded bytes. */
  bytes?: boolean;
  /** Raw pixels: `byteLength` bytes (a 0..255 ramp) claimed to be height × width × channels uint8. */
  raw?: { height: number; width: number; channels: number; byteLength: number };
  expect: Expect;
  /** What the Python client (the zoo model) gives, where it differs from the sidecar's `expect`:
   *  formats sharp refuses that Pillow decodes; `sameAs` there is equal up to cosine ≥ 0.9999. */
  client?: Expect;
}

export interface Corpus {
  version: 1;
  /** The allowed root (realpath-free: as generated). */
  root: string;
  outside: string;
  probeUrl: string;
  items: CorpusItem[];
}

const RGB_QUADRANTS: [number, number, number][] = [
  [220, 30, 30],
  [30, 200, 40],
  [30, 40, 220],
  [240, 220, 30],
];

/** The displayed reference picture: 48×64 (H×W), four coloured quadrants plus a diagonal stripe, so all 8 orientations differ. */
function referencePixels(h = 48, w = 64): Buffer {
  const buf = Buffer.alloc(h * w * 3);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const q = (y < h / 2 ? 0 : 2) + (x < w / 2 ? 0 : 1);
      const c = Math.abs(x - y) < 3 ? [255, 255, 255] : RGB_QUADRANTS[q]!;
      buf.set(c, (y * w + x) * 3);
    }
  }
  return buf;
}

/**
 * The stored pixels S of a file whose EXIF orientation `o` makes it display as D (h×w). Written
 * out from the EXIF definitions (display = transform(stored)), independently of any decoder:
 *   1 D[y][x]=S[y][x]   2 S[y][W-1-x]   3 S[H-1-y][W-1-x]   4 S[H-1-y][x]
 *   5 S[x][y]   6 S[Hs-1-x][y]   7 S[Hs-1-x][Ws-1-y]   8 S[x][Ws-1-y]   (Hs×Ws: stored size)
 */
function storedFor(o: number, d: Buffer, h: number, w: number): { data: Buffer; height: number; width: number } {
  const swap = o >= 5;
  const [hs, ws] = swap ? [w, h] : [h, w];
  const s = Buffer.alloc(d.length);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      let sy: number;
      let sx: number;
      switch (o) {
        case 1:
          [sy, sx] = [y, x];
          break;
        case 2:
          [sy, sx] = [y, ws - 1 - x];
          break;
        case 3:
          [sy, sx] = [hs - 1 - y, ws - 1 - x];
          break;
        case 4:
          [sy, sx] = [hs - 1 - y, x];
          break;
        case 5:
          [sy, sx] = [x, y];
          break;
        case 6:
          [sy, sx] = [hs - 1 - x, y];
          break;
        case 7:
          [sy, sx] = [hs - 1 - x, ws - 1 - y];
          break;
        default:
          [sy, sx] = [x, ws - 1 - y];
          break;
      }
      d.copy(s, (sy * ws + sx) * 3, (y * w + x) * 3, (y * w + x) * 3 + 3);
    }
  }
  return { data: s, height: hs, width: ws };
}

/** A minimal but well-formed HEIC (HEVC-coded HEIF) container: this sharp build reads its header but has no HEVC decoder. */
function heic(width: number, height: number): Buffer {
  const u32 = (n: number) => {
    const b = Buffer.alloc(4);
    b.writeUInt32BE(n);
    return b;
  };
  const u16 = (n: number) => {
    const b = Buffer.alloc(2);
    b.writeUInt16BE(n);
    return b;
  };
  const box = (type: string, ...parts: Buffer[]) => {
    const body = Buffer.concat(parts);
    return Buffer.concat([u32(8 + body.length), Buffer.from(type, "latin1"), body]);
  };
  const full = (type: string, version: number, ...parts: Buffer[]) => box(type, Buffer.from([version, 0, 0, 0]), ...parts);
  const ftyp = box("ftyp", Buffer.from("heic", "latin1"), u32(0), Buffer.from("mif1heic", "latin1"));
  const hdlr = full("hdlr", 0, u32(0), Buffer.from("pict", "latin1"), Buffer.alloc(12), Buffer.from([0]));
  const pitm = full("pitm", 0, u16(1));
  const iinf = full("iinf", 0, u16(1), full("infe", 2, u16(1), u16(0), Buffer.from("hvc1", "latin1"), Buffer.from([0])));
  const hvcC = box("hvcC", Buffer.from([1, 0x01, 0x60, 0, 0, 0, 0x90, 0, 0, 0, 0, 0, 90, 0xf0, 0x00, 0xfc, 0xfd, 0xf8, 0xf8, 0, 0, 0x0f, 0]));
  const iprp = box("iprp", box("ipco", hvcC, full("ispe", 0, u32(width), u32(height))), full("ipma", 0, u32(1), u16(1), Buffer.from([2, 0x81, 0x02])));
  const data = Buffer.from([0, 0, 0, 4, 0x26, 0x01, 0xaf, 0x00]);
  const build = (offset: number) => {
    const iloc = full("iloc", 0, Buffer.from([0x44, 0x00]), u16(1), u16(1), u16(0), u16(1), u32(offset), u32(data.length));
    return Buffer.concat([ftyp, full("meta", 0, hdlr, pitm, iloc, iinf, iprp), box("mdat", data)]);
  };
  const first = build(0);
  return build(first.length - data.length);
}

export async function makeCorpus(outDir: string, o: { probeUrl?: string } = {}): Promise<Corpus> {
  const out = path.resolve(outDir);
  const root = path.join(out, "root");
  const outside = path.join(out, "outside");
  rmSync(root, { recursive: true, force: true });
  rmSync(outside, { recursive: true, force: true });
  mkdirSync(root, { recursive: true });
  mkdirSync(outside, { recursive: true });
  const probe = (o.probeUrl ?? "http://127.0.0.1:9").replace(/\/$/, "");
  const items: CorpusItem[] = [];
  const file = async (name: string, fileName: string, kind: string, content: Buffer | string, expect: Expect, bytes = true, client?: Expect) => {
    const p = path.join(root, fileName);
    writeFileSync(p, content);
    items.push({ name, kind, source: "path", path: p, bytes, expect, ...(client ? { client } : {}) });
  };
  const ok = (h: number, w: number, sameAs?: string): Expect => ({ ok: true, originalSize: [h, w], ...(sameAs ? { sameAs } : {}) });
  const bad = (code: ErrorCode, message: string): Expect => ({ ok: false, code, message });

  const COLOUR = { r: 200, g: 100, b: 50 };
  const ref = referencePixels();
  const rawRef = { raw: { width: 64, height: 48, channels: 3 as const } };
  const noisy = noiseRaw(128, 96, 3);
  const goodJpeg = await sharp(noisy, { raw: { width: 128, height: 96, channels: 3 } })
    .jpeg({ quality: 90 })
    .toBuffer();
  const goodPng = await sharp(noiseRaw(64, 64, 7), { raw: { width: 64, height: 64, channels: 3 } })
    .png()
    .toBuffer();

  // --- valid, ordinary: the neighbours ----------------------------------------------------------
  await file("good-jpeg", "good.jpg", "an ordinary JPEG photo-like image", goodJpeg, ok(96, 128));
  await file("good-png", "good.png", "an ordinary PNG", goodPng, ok(64, 64));
  await file(
    "reference",
    "reference.png",
    "the displayed picture the orientation, GIF and TIFF cases must equal",
    await sharp(ref, rawRef).png().toBuffer(),
    ok(48, 64),
  );

  // --- valid, exotic ----------------------------------------------------------------------------
  await file("one-pixel", "one-pixel.png", "1×1 image", await solid(1, 1, COLOUR).png().toBuffer(), ok(1, 1));
  await file("cmyk-jpeg", "cmyk.jpg", "CMYK JPEG", await solid(40, 32, COLOUR).toColourspace("cmyk").jpeg({ quality: 95 }).toBuffer(), ok(32, 40));
  await file("png-16bit", "png16.png", "16-bit PNG", await solid(40, 32, COLOUR).toColourspace("rgb16").png().toBuffer(), ok(32, 40));
  await file("grey", "grey.png", "greyscale PNG", await solid(40, 32, { r: 90, g: 90, b: 90 }).toColourspace("b-w").png().toBuffer(), ok(32, 40));
  await file(
    "grey-alpha",
    "grey-alpha.png",
    "grey + alpha PNG",
    await solid(40, 32, { r: 0, g: 0, b: 0 }, 0.5).toColourspace("b-w").png().toBuffer(),
    ok(32, 40),
  );
  await file("rgba", "rgba.png", "RGBA PNG (half transparent)", await solid(40, 32, COLOUR, 0.5).png().toBuffer(), ok(32, 40));
  await file("palette", "palette.png", "palette (indexed) PNG", await solid(40, 32, COLOUR).png({ palette: true }).toBuffer(), ok(32, 40));
  for (let orientation = 1; orientation <= 8; orientation++) {
    const s = storedFor(orientation, ref, 48, 64);
    // PNG keeps the pixels exact, so every orientation must embed exactly like the reference.
    const png = await sharp(s.data, { raw: { width: s.width, height: s.height, channels: 3 } })
      .withMetadata({ orientation })
      .png()
      .toBuffer();
    await file(
      `exif-orientation-${orientation}`,
      `orientation-${orientation}.png`,
      `EXIF orientation ${orientation} (stored ${s.height}×${s.width})`,
      png,
      ok(48, 64, "reference"),
    );
  }
  const second = await solid(64, 48, { r: 0, g: 0, b: 255 }).png().toBuffer();
  const first = await sharp(ref, rawRef).png().toBuffer();
  await file(
    "animated-gif",
    "animated.gif",
    "animated GIF, 2 frames (the first is used)",
    await sharp([first, second], { join: { animated: true } })
      .gif()
      .toBuffer(),
    ok(48, 64, "reference"),
  );
  await file(
    "multipage-tiff",
    "multipage.tiff",
    "multi-page TIFF, 2 pages (the first is used)",
    await sharp([first, second], { join: { animated: true } })
      .tiff({ compression: "lzw" })
      .toBuffer(),
    ok(48, 64, "reference"),
  );
  await file("webp-lossless", "lossless.webp", "lossless WebP", await sharp(ref, rawRef).webp({ lossless: true }).toBuffer(), ok(48, 64, "reference"));
  symlinkSync("good.png", path.join(root, "link-inside.png"));
  items.push({
    name: "symlink-inside",
    kind: "a symlink that stays inside the root",
    source: "path",
    path: path.join(root, "link-inside.png"),
    expect: ok(64, 64, "good-png"),
  });

  // --- broken -----------------------------------------------------------------------------------
  await file(
    "truncated-jpeg",
    "truncated.jpg",
    "JPEG cut at 40%",
    goodJpeg.subarray(0, Math.floor(goodJpeg.length * 0.4)),
    bad("CORRUPT_IMAGE", "could not be decoded"),
  );
  await file("truncated-png", "truncated.png", "PNG cut in half", goodPng.subarray(0, goodPng.length >> 1), bad("CORRUPT_IMAGE", "could not be decoded"));
  const flipped = Buffer.from(goodPng);
  flipped[flipped.indexOf("IDAT", 0, "latin1") + 10]! ^= 0xff; // one byte of compressed data: the CRC no longer matches
  await file("png-bad-crc", "bad-crc.png", "PNG with a corrupted IDAT (CRC mismatch)", flipped, bad("CORRUPT_IMAGE", "could not be decoded"));
  await file(
    "jpeg-header-only",
    "header-only.jpg",
    "JPEG start-of-image marker followed by garbage",
    Buffer.concat([Buffer.from([0xff, 0xd8, 0xff, 0xe0]), Buffer.from(" not really a jpeg")]),
    bad("CORRUPT_IMAGE", "decoded|header"),
  );
  await file("zero-byte", "zero-byte.jpg", "zero-byte file", Buffer.alloc(0), bad("CORRUPT_IMAGE", "empty"));

  // --- not images, or not formats we decode -----------------------------------------------------
  await file("text-as-jpeg", "notes.jpg", "a text file named .jpg", "meeting notes, not an image\n", bad("UNSUPPORTED_FORMAT", "unrecognised data"));
  await file(
    "html-as-png",
    "error-page.png",
    "an HTML error page saved as .png",
    `<!DOCTYPE html>\n<html><head><title>404 Not Found</title><link rel="stylesheet" href="${probe}/html.css"></head>` +
      `<body><h1>Not Found</h1><img src="${probe}/html.png"></body></html>\n`,
    bad("UNSUPPORTED_FORMAT", "HTML"),
  );
  const svg =
    `<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" width="64" height="64">` +
    `<style>@import url("${probe}/svg.css");</style>` +
    `<image href="${probe}/svg-image.png" xlink:href="${probe}/svg-image-xlink.png" width="64" height="64"/>` +
    `<image href="file:///etc/passwd" width="1" height="1"/></svg>\n`;
  await file("svg-external-ref", "external.svg", "SVG referencing an external URL and a local file", svg, bad("UNSUPPORTED_FORMAT", "SVG"));
  await file("svg-as-png", "disguised-svg.png", "the same SVG saved as .png", `<?xml version="1.0"?>\n${svg}`, bad("UNSUPPORTED_FORMAT", "SVG"));
  await file("heic", "photo.heic", "HEIC (HEVC-coded HEIF): not decodable by this build", heic(40, 30), bad("UNSUPPORTED_FORMAT", "hevc"));
  await file("pdf", "scan-pdf.jpg", "a PDF saved as .jpg", "%PDF-1.7\n1 0 obj <<>> endobj\n", bad("UNSUPPORTED_FORMAT", "PDF"));

  // --- formats sharp can't read: refused by the sidecar, decoded by the Python client's Pillow ---
  // Each shows the reference picture (or its grey / half-transparent version), losslessly, so the
  // client must embed it like that picture's PNG.
  const [W, H] = [64, 48];
  const grey = Buffer.alloc(W * H);
  for (let i = 0; i < W * H; i++) grey[i] = Math.round(0.299 * ref[3 * i]! + 0.587 * ref[3 * i + 1]! + 0.114 * ref[3 * i + 2]!);
  const rgba = Buffer.alloc(W * H * 4);
  for (let i = 0; i < W * H; i++) rgba.set([ref[3 * i]!, ref[3 * i + 1]!, ref[3 * i + 2]!, i % W < W / 2 ? 255 : 128], 4 * i);
  const opaque = Buffer.alloc(W * H * 4);
  for (let i = 0; i < W * H; i++) opaque.set([ref[3 * i]!, ref[3 * i + 1]!, ref[3 * i + 2]!, 255], 4 * i);
  await file(
    "reference-grey",
    "reference-grey.png",
    "the reference picture in grey (the PGMs must equal it)",
    await sharp(grey, { raw: { width: W, height: H, channels: 1 } })
      .toColourspace("b-w")
      .png()
      .toBuffer(),
    ok(H, W),
  );
  await file(
    "reference-rgba",
    "reference-rgba.png",
    "the reference picture, right half 50% transparent (the 32-bit BMP must equal it)",
    await sharp(rgba, { raw: { width: W, height: H, channels: 4 } })
      .png()
      .toBuffer(),
    ok(H, W),
  );
  const pillow = (twin: string) => ok(H, W, twin);
  const refused = (what: string) => bad("UNSUPPORTED_FORMAT", what);
  await file("bmp", "old.bmp", "BMP, 24-bit", bmp24(ref, W, H), refused("BMP"), true, pillow("reference"));
  await file("bmp-32bit", "alpha.bmp", "BMP, 32-bit with alpha (V4 header, bit fields)", bmp32(rgba, W, H), refused("BMP"), true, pillow("reference-rgba"));
  await file("bmp-palette", "palette.bmp", "BMP, 8-bit palette", bmp8(ref, W, H), refused("BMP"), true, pillow("reference"));
  await file("ppm", "picture.ppm", "PPM (binary P6)", ppm(ref, W, H), refused("unrecognised data"), true, pillow("reference"));
  await file("pgm", "picture.pgm", "PGM (binary P5), 8-bit", pgm(grey, W, H), refused("unrecognised data"), true, pillow("reference-grey"));
  // 16-bit values v·257 are exactly v/255 in [0, 1]: the client's scaling must land on the 8-bit picture.
  await file(
    "pgm-16bit",
    "picture16.pgm",
    "PGM (binary P5), 16-bit",
    pgm(
      Uint16Array.from(grey, (v) => v * 257),
      W,
      H,
    ),
    refused("unrecognised data"),
    true,
    pillow("reference-grey"),
  );
  await file("tga", "picture.tga", "TGA, uncompressed 24-bit", tga(ref, W, H), refused("unrecognised data"), true, pillow("reference"));
  await file("ico", "favicon.ico", "ICO, one 32-bit image", ico(opaque, W, H), refused("unrecognised data"), true, pillow("reference"));
  const jp2 = path.join(root, "picture.jp2");
  const noJp2 = jp2ViaPillow(jp2, ref, W, H, REPO);
  if (noJp2 === null) {
    items.push({
      name: "jp2",
      kind: "JPEG 2000 (JP2), lossless",
      source: "path",
      path: jp2,
      bytes: true,
      expect: refused("JPEG 2000"),
      client: pillow("reference"),
    });
  } else {
    process.stderr.write(`make-corpus: no JPEG 2000 item (${noJp2})\n`);
  }
  const fullBmp = bmp24(ref, W, H);
  await file(
    "bmp-truncated",
    "truncated.bmp",
    "BMP cut at 60%",
    fullBmp.subarray(0, Math.floor(fullBmp.length * 0.6)),
    refused("BMP"),
    true,
    bad("CORRUPT_IMAGE", "BMP.*Pillow could not decode it as BMP: image file is truncated"),
  );
  await file(
    "text-as-bmp",
    "notes.bmp",
    "a text file named .bmp",
    "scan list, not a bitmap\n",
    refused("unrecognised data"),
    true,
    bad("UNSUPPORTED_FORMAT", "unrecognised data.*Pillow does not recognise it"),
  );

  // --- hostile ----------------------------------------------------------------------------------
  await file(
    "decompression-bomb",
    "bomb.png",
    "30000×30000 PNG header on a few dozen bytes",
    await pngClaimingSize(30000, 30000),
    bad("TOO_LARGE", "pixel limit"),
  );

  // --- where the file is ------------------------------------------------------------------------
  const secret = path.join(outside, "secret.png");
  writeFileSync(secret, goodPng); // a valid image: only confinement keeps it out
  items.push({
    name: "missing",
    kind: "a path that does not exist",
    source: "path",
    path: path.join(root, "missing.jpg"),
    expect: bad("NOT_FOUND", "not found"),
  });
  mkdirSync(path.join(root, "a-directory.jpg"));
  items.push({ name: "directory", kind: "a directory", source: "path", path: path.join(root, "a-directory.jpg"), expect: bad("NOT_A_FILE", "directory") });
  items.push({
    name: "outside-roots",
    kind: "a file outside the allowed roots",
    source: "path",
    path: secret,
    expect: bad("OUTSIDE_ALLOWED_ROOTS", "outside the allowed roots"),
  });
  items.push({
    name: "dotdot-escape",
    kind: "root/../outside (.. traversal)",
    source: "path",
    path: `${root}/../outside/secret.png`,
    expect: bad("OUTSIDE_ALLOWED_ROOTS", "outside the allowed roots"),
  });
  symlinkSync(secret, path.join(root, "escape.png"));
  items.push({
    name: "symlink-escape",
    kind: "a symlink inside the root to a file outside it",
    source: "path",
    path: path.join(root, "escape.png"),
    expect: bad("OUTSIDE_ALLOWED_ROOTS", "outside the allowed roots"),
  });
  symlinkSync(outside, path.join(root, "linked-dir"));
  items.push({
    name: "symlink-dir-escape",
    kind: "a path through a symlinked directory that leaves the root",
    source: "path",
    path: path.join(root, "linked-dir", "secret.png"),
    expect: bad("OUTSIDE_ALLOWED_ROOTS", "outside the allowed roots"),
  });
  symlinkSync("/etc/passwd", path.join(root, "passwd.png"));
  items.push({
    name: "symlink-system-file",
    kind: "a symlink to /etc/passwd",
    source: "path",
    path: path.join(root, "passwd.png"),
    expect: bad("OUTSIDE_ALLOWED_ROOTS", "outside the allowed roots"),
  });

  // --- raw pixels -------------------------------------------------------------------------------
  items.push({
    name: "raw-good",
    kind: "raw uint8 pixels, 16×16×3",
    source: "raw",
    raw: { height: 16, width: 16, channels: 3, byteLength: 768 },
    expect: ok(16, 16),
  });
  items.push({
    name: "raw-wrong-length",
    kind: "raw pixels whose length is not height×width×channels",
    source: "raw",
    raw: { height: 16, width: 16, channels: 3, byteLength: 700 },
    expect: bad("INVALID_ARGUMENT", "fit neither|elements"),
  });
  items.push({
    name: "raw-bad-channels",
    kind: "raw pixels with 2 channels",
    source: "raw",
    raw: { height: 16, width: 16, channels: 2, byteLength: 512 },
    expect: bad("INVALID_ARGUMENT", "channels must be 1, 3 or 4"),
  });
  items.push({
    name: "raw-zero-size",
    kind: "raw pixels 0×16",
    source: "raw",
    raw: { height: 0, width: 16, channels: 3, byteLength: 0 },
    expect: bad("INVALID_ARGUMENT", "positive"),
  });

  const corpus: Corpus = { version: 1, root, outside, probeUrl: probe, items };
  writeFileSync(path.join(out, "manifest.json"), `${JSON.stringify(corpus, null, 2)}\n`);
  return corpus;
}

/** The raw item's pixel bytes (a ramp), as both tests build them. */
export function rawBytes(raw: NonNullable<CorpusItem["raw"]>): Buffer {
  return Buffer.from(Array.from({ length: raw.byteLength }, (_, i) => i % 256));
}

if (process.argv[1] && import.meta.url === pathToFileURL(path.resolve(process.argv[1])).href) {
  const args = process.argv.slice(2);
  const at = args.indexOf("--probe-url");
  const probeUrl = at >= 0 ? args[at + 1] : undefined;
  const outDir = args.find((a, i) => !a.startsWith("--") && (at < 0 || i !== at + 1));
  if (!outDir) {
    process.stderr.write("usage: make-corpus.ts OUTDIR [--probe-url URL]\n");
    process.exit(2);
  }
  const c = await makeCorpus(outDir, { probeUrl });
  process.stdout.write(`${JSON.stringify({ manifest: path.join(path.resolve(outDir), "manifest.json"), items: c.items.length })}\n`);
}
