import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { promises as fsp } from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";

import sharp from "sharp";

import {
  ASPECT_BUCKETS,
  InputError,
  createPathPolicy,
  decodeOpened,
  nearestSupportedResolution,
  openImage,
  parseResolutionPolicy,
  preprocessImage,
  resolutionStep,
  resolveTargetResolution,
  roundHalfEven,
  sniffFormat,
  snapAspectBucket,
  type ImageInput,
  type InputErrorKind,
  type GraphGeometry,
  type PathPolicy,
  type PreprocessOptions,
  type PreprocessedImage,
  type ResolutionPolicy,
} from "../../server/src/preprocess/index.js";
import { noiseRaw, pngClaimingSize, solid, twoTone, type RGB } from "./support/images.js";
import { absDiff } from "./support/compare.js";
import { pilBicubic } from "./support/pil-bicubic.js";
import { naiveCmykToRgb } from "../../server/src/preprocess/cmyk.js";

const MODEL: GraphGeometry = { patchSize: 16, windowSize: null, maxResolution: 2048, preferred: [512, 512] };
const VITDET: GraphGeometry = { ...MODEL, windowSize: 8 }; // step 128

// ---------------------------------------------------------------------------
// Resolution policy (pure)
// ---------------------------------------------------------------------------

describe("resolution policy", () => {
  it("step is patch × window", () => {
    assert.equal(resolutionStep(MODEL), 16);
    assert.equal(resolutionStep(VITDET), 128);
  });

  it("roundHalfEven matches Python round()", () => {
    assert.deepEqual([0.5, 1.5, 2.5, 3.5, 2.4, 2.6, 7].map(roundHalfEven), [0, 2, 2, 4, 2, 3, 7]);
  });

  it("native rounds each side to the nearest multiple of the step (min one step)", () => {
    assert.deepEqual(nearestSupportedResolution(480, 640, MODEL), { height: 480, width: 640 });
    assert.deepEqual(nearestSupportedResolution(500, 333, MODEL), { height: 496, width: 336 });
    // 24/16 = 1.5 → 2, 40/16 = 2.5 → 2 (half to even, like upstream's Python round)
    assert.deepEqual(nearestSupportedResolution(24, 40, MODEL), { height: 32, width: 32 });
    assert.deepEqual(nearestSupportedResolution(5, 3, MODEL), { height: 16, width: 16 });
  });

  it("native caps the longer side at maxResolution, keeping aspect", () => {
    assert.deepEqual(nearestSupportedResolution(4000, 3000, MODEL), { height: 2048, width: 1536 });
    assert.deepEqual(nearestSupportedResolution(3000, 4000, MODEL), { height: 1536, width: 2048 });
    assert.deepEqual(nearestSupportedResolution(100, 10000, MODEL), { height: 16, width: 2048 });
    // step that does not divide the max (window 12 → 192): never exceeds the max
    const w12: GraphGeometry = { ...MODEL, windowSize: 12 };
    const r = nearestSupportedResolution(4096, 4096, w12);
    assert.deepEqual(r, { height: 1920, width: 1920 });
  });

  it("'max:N' bounds the longer side", () => {
    assert.deepEqual(resolveTargetResolution(3000, 4000, MODEL, { max: 1024 }), { height: 768, width: 1024 });
    assert.deepEqual(resolveTargetResolution(300, 400, MODEL, { max: 1024 }), { height: 304, width: 400 });
    assert.deepEqual(resolveTargetResolution(3000, 4000, MODEL, { max: 99999 }), { height: 1536, width: 2048 });
  });

  it("aspect buckets snap in log space", () => {
    assert.equal(snapAspectBucket(480, 640).name, "4:3");
    assert.equal(snapAspectBucket(1080, 1920).name, "16:9");
    assert.equal(snapAspectBucket(1920, 1080).name, "9:16");
    assert.equal(snapAspectBucket(100, 1000).name, "3:1");
    assert.equal(snapAspectBucket(1000, 990).name, "1:1");
    assert.equal(ASPECT_BUCKETS.length, 13);
  });

  it("'default' maps 16 mixed photo sizes to at most 4 resolutions near 512²", () => {
    const sizes: Array<[number, number]> = [
      [480, 640],
      [600, 800],
      [768, 1024],
      [3024, 4032],
      [1200, 1600],
      [2448, 3264], // 4:3 landscape
      [640, 480],
      [4032, 3024],
      [1536, 2048].reverse() as [number, number], // 3:4 portrait
      [1080, 1920],
      [720, 1280],
      [2160, 3840],
      [768, 1366], // 16:9
      [1920, 1080],
      [1280, 720],
      [3840, 2160], // 9:16
    ];
    assert.equal(sizes.length, 16);
    const out = sizes.map(([h, w]) => resolveTargetResolution(h, w, MODEL, "default"));
    const distinct = new Set(out.map((s) => `${s.height}x${s.width}`));
    assert.ok(distinct.size <= 4, `got ${[...distinct].join(", ")}`);
    for (const [i, s] of out.entries()) {
      const [h, w] = sizes[i]!;
      assert.equal(s.height % 16, 0);
      assert.equal(s.width % 16, 0);
      const areaRatio = (s.height * s.width) / (512 * 512);
      assert.ok(areaRatio > 0.9 && areaRatio < 1.1, `area ${s.height}x${s.width}`);
      assert.ok(Math.abs(Math.log(s.width / s.height) - Math.log(w / h)) < 0.1, `aspect of ${h}x${w} → ${s.height}x${s.width}`);
    }
    assert.deepEqual(resolveTargetResolution(1000, 1000, MODEL, "default"), { height: 512, width: 512 });
    assert.deepEqual(resolveTargetResolution(3000, 2990, MODEL, "default"), { height: 512, width: 512 });
  });

  it("'default' stays within [step, max] and on the grid for every bucket (ViTDet too)", () => {
    for (const geometry of [MODEL, VITDET, { ...MODEL, windowSize: 16 }]) {
      const step = resolutionStep(geometry);
      for (const b of ASPECT_BUCKETS) {
        const s = resolveTargetResolution(1000, Math.round(1000 * b.ratio), geometry, "default");
        assert.equal(s.height % step, 0, `${b.name} ${step}`);
        assert.equal(s.width % step, 0, `${b.name} ${step}`);
        assert.ok(s.height >= step && s.width >= step && s.height <= 2048 && s.width <= 2048);
      }
    }
  });

  it("ViTDet: all policies give multiples of 16×window", () => {
    for (const [h, w] of [
      [480, 640],
      [333, 500],
      [5000, 1000],
      [17, 2000],
    ] as const) {
      for (const policy of ["default", "native", { max: 1024 }] as ResolutionPolicy[]) {
        const s = resolveTargetResolution(h, w, VITDET, policy);
        assert.equal(s.height % 128, 0);
        assert.equal(s.width % 128, 0);
        assert.ok(s.height <= 2048 && s.width <= 2048);
      }
    }
    assert.deepEqual(resolveTargetResolution(480, 640, VITDET, "native"), { height: 512, width: 640 });
  });

  it("fixed sizes must be multiples of the step and within max", () => {
    assert.deepEqual(resolveTargetResolution(10, 10, MODEL, { fixed: { height: 384, width: 512 } }), { height: 384, width: 512 });
    assert.deepEqual(resolveTargetResolution(10, 10, VITDET, { fixed: { height: 256, width: 512 } }), { height: 256, width: 512 });
    const bad: Array<[GraphGeometry, number, number]> = [
      [MODEL, 500, 512],
      [VITDET, 320, 512],
      [MODEL, 4096, 512],
      [MODEL, 0, 512],
      [MODEL, 16.5, 512],
    ];
    for (const [geometry, h, w] of bad) {
      assert.throws(
        () => resolveTargetResolution(10, 10, geometry, { fixed: { height: h, width: w } }, "img-1"),
        (e: unknown) => e instanceof InputError && e.kind === "invalid_input" && e.message.includes("img-1"),
      );
    }
  });

  it("parses policy strings", () => {
    assert.equal(parseResolutionPolicy("default"), "default");
    assert.equal(parseResolutionPolicy("NATIVE"), "native");
    assert.deepEqual(parseResolutionPolicy("max:1024"), { max: 1024 });
    assert.deepEqual(parseResolutionPolicy("384x512"), { fixed: { height: 384, width: 512 } });
    assert.throws(
      () => parseResolutionPolicy("huge"),
      (e: unknown) => e instanceof InputError && e.kind === "invalid_input",
    );
    assert.throws(() => resolveTargetResolution(0, 10, MODEL, "default"), InputError);
    assert.throws(() => resolveTargetResolution(10, 10, MODEL, { max: 3 }), InputError);
  });
});

// ---------------------------------------------------------------------------
// Decoding (real sharp, real files)
// ---------------------------------------------------------------------------

let tmp: string;
let roots: string;
let outsideDir: string;
let paths: PathPolicy;

before(async () => {
  tmp = await fsp.mkdtemp(path.join(os.tmpdir(), "radio-preprocess-"));
  roots = path.join(tmp, "roots");
  outsideDir = path.join(tmp, "outside");
  await fsp.mkdir(roots);
  await fsp.mkdir(outsideDir);
  paths = await createPathPolicy([roots]);
});

after(async () => {
  await fsp.rm(tmp, { recursive: true, force: true });
});

function opts(policy: ResolutionPolicy = "native", extra: Partial<PreprocessOptions> = {}): PreprocessOptions {
  return { paths, geometry: MODEL, policy, ...extra };
}

async function writeIn(dir: string, name: string, data: Buffer | string): Promise<string> {
  const p = path.join(dir, name);
  await fsp.writeFile(p, data);
  return p;
}

async function expectKind(p: Promise<unknown>, kind: InputErrorKind, id?: string, msg?: RegExp): Promise<InputError> {
  let caught: unknown;
  try {
    await p;
  } catch (err) {
    caught = err;
  }
  assert.ok(caught instanceof InputError, `expected InputError(${kind}), got ${String(caught)}`);
  assert.equal(caught.kind, kind, caught.message);
  if (id !== undefined) assert.ok(caught.message.includes(JSON.stringify(id)), caught.message);
  if (msg) assert.match(caught.message, msg);
  return caught;
}

/** Pixel (y, x) as [r, g, b] (uint8, interleaved). */
function px(img: PreprocessedImage, y: number, x: number): [number, number, number] {
  const i = 3 * (y * img.width + x);
  return [img.pixels[i]!, img.pixels[i + 1]!, img.pixels[i + 2]!];
}

/** Every pixel within `tol` of `c` (0..255). */
function assertSolid(img: PreprocessedImage, c: RGB, tol = 1): void {
  assert.equal(img.pixels.length, 3 * img.height * img.width);
  const want = [c.r, c.g, c.b];
  let worst = 0;
  for (let i = 0; i < img.pixels.length; i++) worst = Math.max(worst, Math.abs(img.pixels[i]! - want[i % 3]!));
  assert.ok(worst <= tol, `max deviation ${worst}/255 > ${tol}/255 (first px ${px(img, 0, 0)})`);
}

const COLOUR: RGB = { r: 200, g: 100, b: 50 };
const RED: RGB = { r: 255, g: 0, b: 0 };
const BLUE: RGB = { r: 0, g: 0, b: 255 };

describe("decode: formats and colour handling", () => {
  it("PNG round-trips values exactly (within 1/255), via path and bytes", async () => {
    const buf = await solid(64, 48, COLOUR).png().toBuffer();
    const p = await writeIn(roots, "solid.png", buf);
    const a = await preprocessImage({ id: "png", path: p }, opts());
    assert.equal(a.height, 48);
    assert.equal(a.width, 64);
    assert.equal(a.originalHeight, 48);
    assert.equal(a.originalWidth, 64);
    assertSolid(a, COLOUR, 1);
    const b = await preprocessImage({ id: "png-bytes", bytes: new Uint8Array(buf) }, opts({ fixed: { height: 32, width: 96 } }));
    assert.equal(b.height, 32);
    assert.equal(b.width, 96);
    assertSolid(b, COLOUR, 1);
  });

  it("JPEG round-trips a solid colour", async () => {
    const buf = await solid(64, 48, COLOUR).jpeg({ quality: 100, chromaSubsampling: "4:4:4" }).toBuffer();
    const img = await preprocessImage({ id: "jpg", path: await writeIn(roots, "solid.jpg", buf) }, opts());
    assertSolid(img, COLOUR, 1);
  });

  it("WebP (lossless) round-trips a solid colour", async () => {
    const buf = await solid(64, 48, COLOUR).webp({ lossless: true }).toBuffer();
    const img = await preprocessImage({ id: "webp", path: await writeIn(roots, "solid.webp", buf) }, opts("default"));
    assert.deepEqual([img.height, img.width], [448, 592]); // 4:3 bucket
    assertSolid(img, COLOUR, 1);
  });

  it("AVIF decodes (heif/av1)", async () => {
    const buf = await solid(64, 48, COLOUR).avif({ lossless: true }).toBuffer();
    const img = await preprocessImage({ id: "avif", bytes: buf }, opts());
    assertSolid(img, COLOUR, 3);
  });

  it("applies EXIF orientation (6, 8, 3) and reports the oriented original size", async () => {
    // 64 wide × 32 tall: left half red, right half blue.
    const cases: Array<[number, RGB, RGB, number, number]> = [
      [1, RED, BLUE, 32, 64], // [orientation, top/left colour, bottom/right colour, H, W]
      [6, RED, BLUE, 64, 32], // rotate 90° CW for display: left → top
      [8, BLUE, RED, 64, 32], // rotate 90° CCW: left → bottom
      [3, BLUE, RED, 32, 64], // 180°: left → right
    ];
    for (const [orientation, first, second, h, w] of cases) {
      const buf = await twoTone(64, 32, RED, BLUE).jpeg({ quality: 100, chromaSubsampling: "4:4:4" }).withMetadata({ orientation }).toBuffer();
      const img = await preprocessImage({ id: `o${orientation}`, bytes: buf }, opts());
      assert.deepEqual([img.originalHeight, img.originalWidth, img.height, img.width], [h, w, h, w], `orientation ${orientation}`);
      const near = (v: [number, number, number], c: RGB): boolean => Math.abs(v[0] - c.r) < 12 && Math.abs(v[1] - c.g) < 12 && Math.abs(v[2] - c.b) < 12;
      const [a, b] = h > w ? [px(img, 4, w / 2), px(img, h - 5, w / 2)] : [px(img, h / 2, 4), px(img, h / 2, w - 5)];
      assert.ok(near(a, first), `orientation ${orientation}: first half ${a}`);
      assert.ok(near(b, second), `orientation ${orientation}: second half ${b}`);
    }
  });

  it("greyscale → replicated RGB", async () => {
    const buf = await solid(32, 32, { r: 128, g: 128, b: 128 }).toColourspace("b-w").png().toBuffer();
    assert.equal((await sharp(buf).metadata()).channels, 1);
    assertSolid(await preprocessImage({ id: "grey", bytes: buf }, opts()), { r: 128, g: 128, b: 128 }, 1);
  });

  it("grey + alpha is flattened onto white", async () => {
    const buf = await solid(32, 32, { r: 0, g: 0, b: 0 }, 0.5).toColourspace("b-w").png().toBuffer();
    assert.equal((await sharp(buf).metadata()).channels, 2);
    // black at alpha ≈ 0.5 over white ≈ 127.5
    assertSolid(await preprocessImage({ id: "ga", bytes: buf }, opts()), { r: 127.5, g: 127.5, b: 127.5 }, 1.5);
  });

  it("RGBA is flattened onto white (fully transparent → white)", async () => {
    const half = await solid(32, 32, RED, 0.5).png().toBuffer();
    assertSolid(await preprocessImage({ id: "rgba", bytes: half }, opts()), { r: 255, g: 127.5, b: 127.5 }, 1.5);
    const clear = await solid(32, 32, { r: 0, g: 0, b: 0 }, 0).png().toBuffer();
    assertSolid(await preprocessImage({ id: "clear", bytes: clear }, opts({ fixed: { height: 16, width: 48 } })), { r: 255, g: 255, b: 255 }, 0);
  });

  it("16-bit PNG → 8-bit values", async () => {
    const buf = await solid(32, 32, COLOUR).toColourspace("rgb16").png().toBuffer();
    const meta = await sharp(buf).metadata();
    assert.equal(meta.depth, "ushort");
    assertSolid(await preprocessImage({ id: "png16", bytes: buf }, opts()), COLOUR, 1);
  });

  it("16-bit and 10-bit images with an ICC profile come out in sRGB (not in Display P3)", async () => {
    // A gradient of known sRGB values, written at high bit depth with an embedded profile: sRGB
    // (pixels stored as they are) or Display P3 (stored converted to P3). Decoded, both must give
    // the sRGB values back, as the 8-bit files with the same profiles do.
    const W = 64;
    const H = 32;
    const src = Buffer.alloc(W * H * 3);
    for (let y = 0; y < H; y++) {
      for (let x = 0; x < W; x++) src.set([40 + 3 * x, 60 + 4 * y, 230 - 2 * x], 3 * (y * W + x));
    }
    const from = () => sharp(src, { raw: { width: W, height: H, channels: 3 } });
    const files: Array<[string, Buffer]> = [
      ["png 8-bit, P3", await from().withIccProfile("p3").png().toBuffer()],
      ["png 16-bit, sRGB", await from().toColourspace("rgb16").withIccProfile("srgb").png().toBuffer()],
      ["png 16-bit, P3", await from().toColourspace("rgb16").withIccProfile("p3").png().toBuffer()],
      ["tiff 16-bit, P3", await from().toColourspace("rgb16").withIccProfile("p3").tiff({ compression: "lzw" }).toBuffer()],
      ["avif 10-bit, sRGB", await from().withIccProfile("srgb").avif({ lossless: true, bitdepth: 10 }).toBuffer()],
    ];
    for (const [name, buf] of files) {
      const meta = await sharp(buf).metadata();
      assert.equal(meta.hasProfile, true, name);
      assert.equal(meta.depth, name.includes("8-bit") ? "uchar" : "ushort", name);
      const img = await preprocessImage({ id: name, bytes: buf }, opts());
      assert.deepEqual([img.height, img.width], [H, W], name);
      let worst = 0;
      for (let i = 0; i < src.length; i++) worst = Math.max(worst, Math.abs(img.pixels[i]! - src[i]!));
      assert.ok(worst <= 2, `${name}: max deviation ${worst}/255 from the sRGB source (first px ${px(img, 0, 0)}, want ${[...src.subarray(0, 3)]})`);
    }
  });

  it("CMYK JPEG without a profile → RGB as Pillow and browsers convert it: each ink taken from white, no colour management", async () => {
    const buf = await twoTone(64, 32, COLOUR, { r: 20, g: 160, b: 240 }).toColourspace("cmyk").jpeg({ quality: 100 }).toBuffer();
    const meta = await sharp(buf).metadata();
    assert.deepEqual([meta.space, meta.hasProfile], ["cmyk", false]);
    // the inks as stored (libvips undoes Adobe's inversion, as Pillow's decoder does)
    const inks = await sharp(buf).pipelineColourspace("cmyk").toColourspace("cmyk").raw().toBuffer();
    const img = await preprocessImage({ id: "cmyk", bytes: buf }, opts());
    assert.deepEqual([img.height, img.width], [32, 64]);
    for (let p = 0; p < 64 * 32; p++) {
      const [c, m, y, k] = inks.subarray(4 * p, 4 * p + 4);
      const want = [c!, m!, y!].map((ink) => Math.round(((255 - ink) * (255 - k!)) / 255));
      assert.deepEqual([...img.pixels.subarray(3 * p, 3 * p + 3)], want, `pixel ${p}: inks ${c},${m},${y},${k}`);
    }
    // not libvips' profile conversion, which lands near the source colour: this is a different colour
    const [r, g, b] = px(img, 16, 8);
    assert.ok(r > g && g > b && Math.abs(r - COLOUR.r) + Math.abs(g - COLOUR.g) + Math.abs(b - COLOUR.b) > 30, `${r},${g},${b}`);
  });

  it("the CMYK conversion is exact for every ink pair, and lets the event loop through on big images", async () => {
    const cmyk = new Uint8Array(256 * 256 * 4);
    for (let c = 0; c < 256; c++) {
      for (let k = 0; k < 256; k++) cmyk.set([c, 255 - c, (c * 7) & 255, k], (c * 256 + k) * 4);
    }
    const rgb = await naiveCmykToRgb(cmyk);
    for (let p = 0; p < 256 * 256; p++) {
      const k = cmyk[4 * p + 3]!;
      for (let ch = 0; ch < 3; ch++) {
        const want = Math.round(((255 - cmyk[4 * p + ch]!) * (255 - k)) / 255);
        assert.equal(rgb[3 * p + ch], want, `pixel ${p}, channel ${ch}`);
      }
    }
    let turns = 0;
    const tick = setInterval(() => turns++, 0);
    await naiveCmykToRgb(new Uint8Array(4 * 5 * 2 ** 20)); // 5 slices
    clearInterval(tick);
    assert.ok(turns >= 2, `the event loop turned ${turns} times during the conversion`);
  });

  it("a big CMYK JPEG without a profile, shrunk: within rounding of Pillow's convert-then-resize", async () => {
    const [w, h, tw, th] = [800, 600, 96, 64];
    const rgb = new Uint8Array(w * h * 3);
    for (let p = 0; p < w * h; p++) {
      const [x, y] = [p % w, Math.floor(p / w)];
      for (let c = 0; c < 3; c++) rgb[3 * p + c] = Math.round(128 + 100 * Math.sin(x / (20 + 7 * c)) * Math.cos(y / 31));
    }
    const file = await sharp(rgb, { raw: { width: w, height: h, channels: 3 } })
      .toColourspace("cmyk")
      .jpeg({ quality: 95 })
      .toBuffer();
    const inks = await sharp(file).pipelineColourspace("cmyk").toColourspace("cmyk").raw().toBuffer();
    const pil = pilBicubic(await naiveCmykToRgb(inks), w, h, tw, th); // Pillow: convert("RGB") at full size, then resize
    const img = await preprocessImage({ id: "big-cmyk", bytes: file }, opts({ fixed: { height: th, width: tw } }));
    const { mean, max } = absDiff(img.pixels, pil);
    // measured: mean 0.54, max 2 (converting the whole file first: 0.32, max 2)
    assert.ok(mean < 1 && max <= 4, `mean ${mean.toFixed(3)}, max ${max} (/255) from Pillow's`);
  });

  it("CMYK JPEG with its profile → colour-managed sRGB (close to the source colour)", async () => {
    const buf = await solid(32, 32, COLOUR).toColourspace("cmyk").withIccProfile("cmyk").jpeg({ quality: 100 }).toBuffer();
    const meta = await sharp(buf).metadata();
    assert.deepEqual([meta.space, meta.hasProfile], ["cmyk", true]);
    const img = await preprocessImage({ id: "cmyk-icc", bytes: buf }, opts());
    const [r, g, b] = px(img, 16, 16);
    // the round trip sRGB → CMYK profile → sRGB is not exact (blue loses ~25 here, out of the press's gamut)
    assertSolid(img, { r, g, b }, 1);
    assert.ok(Math.abs(r - COLOUR.r) < 40 && Math.abs(g - COLOUR.g) < 40 && Math.abs(b - COLOUR.b) < 40, `${r},${g},${b}`);
  });

  it("palette PNG", async () => {
    const c = { r: 10, g: 200, b: 30 };
    const buf = await solid(32, 32, c).png({ palette: true }).toBuffer();
    assert.equal((await sharp(buf).metadata()).isPalette, true);
    assertSolid(await preprocessImage({ id: "pal", bytes: buf }, opts()), c, 1);
  });

  it("animated GIF → first frame only", async () => {
    const frames = [await solid(32, 32, RED).png().toBuffer(), await solid(32, 32, BLUE).png().toBuffer()];
    const gif = await sharp(frames, { join: { animated: true } })
      .gif()
      .toBuffer();
    assert.equal((await sharp(gif).metadata()).pages, 2);
    const img = await preprocessImage({ id: "gif", bytes: gif }, opts());
    assert.deepEqual([img.originalHeight, img.originalWidth], [32, 32]);
    assertSolid(img, RED, 1);
  });

  it("multi-page TIFF → first page only", async () => {
    const pages = [await solid(32, 32, BLUE).png().toBuffer(), await solid(32, 32, RED).png().toBuffer()];
    const tif = await sharp(pages, { join: { animated: true } })
      .tiff({ compression: "lzw" })
      .toBuffer();
    assert.equal((await sharp(tif).metadata()).pages, 2);
    const img = await preprocessImage({ id: "tif", bytes: tif }, opts());
    assert.deepEqual([img.originalHeight, img.originalWidth], [32, 32]);
    assertSolid(img, BLUE, 1);
  });

  it("two-step API: open (header only) then decode", async () => {
    const buf = await solid(640, 480, COLOUR).jpeg().toBuffer();
    const opened = await openImage({ id: "two", bytes: buf }, { paths });
    assert.equal(opened.kind, "encoded");
    assert.deepEqual([opened.originalHeight, opened.originalWidth], [480, 640]);
    const target = resolveTargetResolution(opened.originalHeight, opened.originalWidth, MODEL, "default");
    const img = await decodeOpened(opened, target);
    assert.deepEqual([img.height, img.width], [448, 592]);
    assert.equal(img.pixels.length, 3 * 448 * 592);
  });
});

describe("decode: resize geometry, PIL's pixel centres", () => {
  /** Mid-grey waves with noise on top: detail at every scale, and no value near 0 or 255, where PIL
   * clips between its two passes (libvips does both at once) and pure noise would differ by that alone. */
  function texture(w: number, h: number, seed: number): Uint8Array {
    const noise = noiseRaw(w, h, seed);
    const out = new Uint8Array(w * h * 3);
    for (let i = 0; i < out.length; i++) {
      const p = Math.floor(i / 3);
      const [x, y] = [p % w, Math.floor(p / w)];
      out[i] = Math.round(128 + 50 * Math.sin(x / 3 + (i % 3)) * Math.cos(y / 4) + (noise[i]! - 128) / 4);
    }
    return out;
  }

  // [source W, H, target W, H]: both sides up, one up and one down (the "default" policy's aspect
  // buckets do that), nearly 1:1 up (where libvips' half-pixel offset did the most harm), both down.
  const cases: Array<[number, number, number, number]> = [
    [50, 40, 96, 80],
    [120, 40, 96, 48],
    [62, 45, 64, 48],
    [150, 100, 64, 48],
  ];
  for (const [w, h, tw, th] of cases) {
    it(`${w}x${h} → ${tw}x${th}: PIL's BICUBIC resize, within rounding`, async () => {
      const src = texture(w, h, w + h);
      const img = await preprocessImage(
        { id: "noise", raw: { data: src, height: h, width: w, channels: 3, dtype: "uint8" } },
        opts({ fixed: { height: th, width: tw } }),
      );
      const { mean, max } = absDiff(img.pixels, pilBicubic(src, w, h, tw, th));
      // measured: mean 0.03–0.25, max 2–3; through sharp's resize, upsizing was 7–13 off on average (62x45 → 64x48: 12.6)
      assert.ok(mean < 0.5 && max <= 4, `mean ${mean.toFixed(3)}, max ${max} (/255) from PIL's`);
    });
  }

  it("an EXIF-rotated file gives its rotated pixels' result (the resize is mirror-symmetric)", async () => {
    for (const orientation of [2, 3, 4, 5, 6, 7, 8]) {
      const file = await sharp(noiseRaw(24, 8, orientation), { raw: { width: 24, height: 8, channels: 3 } })
        .jpeg({ quality: 100, chromaSubsampling: "4:4:4" })
        .withMetadata({ orientation })
        .toBuffer();
      const upright = await sharp(file).autoOrient().raw().toBuffer({ resolveWithObject: true });
      const target = opts({ fixed: { height: 96, width: 96 } }); // up 4× and 12×
      const fromFile = await preprocessImage({ id: "file", bytes: file }, target);
      const raw = { data: new Uint8Array(upright.data), height: upright.info.height, width: upright.info.width, channels: 3 as const, dtype: "uint8" as const };
      const fromPixels = await preprocessImage({ id: "pixels", raw }, target);
      const { max } = absDiff(fromFile.pixels, fromPixels.pixels);
      assert.ok(max <= 1, `orientation ${orientation}: max ${max}/255 between the file and its rotated pixels`);
    }
  });
});

describe("decode: bad encoded data", () => {
  it("truncated JPEG → corrupt_image", async () => {
    const full = await sharp(noiseRaw(256, 192), { raw: { width: 256, height: 192, channels: 3 } })
      .jpeg({ quality: 90 })
      .toBuffer();
    for (const frac of [0.5, 0.9]) {
      const p = await writeIn(roots, `trunc-${frac}.jpg`, full.subarray(0, Math.floor(full.length * frac)));
      await expectKind(preprocessImage({ id: "trunc", path: p }, opts()), "corrupt_image", "trunc");
    }
  });

  it("truncated PNG → corrupt_image", async () => {
    const full = await sharp(noiseRaw(128, 128), { raw: { width: 128, height: 128, channels: 3 } })
      .png()
      .toBuffer();
    await expectKind(preprocessImage({ id: "tp", bytes: full.subarray(0, full.length >> 1) }, opts()), "corrupt_image", "tp");
  });

  it("zero-byte file / empty bytes → corrupt_image", async () => {
    const p = await writeIn(roots, "empty.jpg", Buffer.alloc(0));
    await expectKind(preprocessImage({ id: "z", path: p }, opts()), "corrupt_image", "z", /empty/);
    await expectKind(preprocessImage({ id: "z2", bytes: new Uint8Array(0) }, opts()), "corrupt_image", "z2", /empty/);
  });

  it("text named .jpg, HTML named .png → unsupported_format", async () => {
    const t = await writeIn(roots, "notes.jpg", "just some text, not an image\n");
    await expectKind(preprocessImage({ id: "txt", path: t }, opts()), "unsupported_format", "txt");
    const h = await writeIn(roots, "page.png", '<!DOCTYPE html><html><body><img src="x.png"></body></html>');
    await expectKind(preprocessImage({ id: "html", path: h }, opts()), "unsupported_format", "html", /HTML/);
  });

  it("SVG is refused before decoding (even though sharp could render it)", async () => {
    const svg = '<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><image href="file:///etc/passwd"/></svg>';
    assert.equal((await sharp(Buffer.from(svg)).metadata()).format, "svg"); // sharp would accept it
    const p = await writeIn(roots, "img.svg", svg);
    await expectKind(preprocessImage({ id: "svg", path: p }, opts()), "unsupported_format", "svg", /SVG/);
    const withProlog = `<?xml version="1.0" encoding="UTF-8"?>\n${svg}`;
    await expectKind(preprocessImage({ id: "svg2", bytes: Buffer.from(withProlog) }, opts()), "unsupported_format", "svg2", /SVG/);
    await expectKind(preprocessImage({ id: "svg3", path: await writeIn(roots, "disguised.png", svg) }, opts()), "unsupported_format");
  });

  it("formats outside the allowlist (BMP, PDF) → unsupported_format", async () => {
    const bmp = Buffer.alloc(64);
    bmp.write("BM", 0, "latin1");
    await expectKind(preprocessImage({ id: "bmp", bytes: bmp }, opts()), "unsupported_format", "bmp", /BMP/);
    await expectKind(preprocessImage({ id: "pdf", bytes: Buffer.from("%PDF-1.7\n...") }, opts()), "unsupported_format", "pdf");
  });

  it("a 30000×30000 decompression bomb is refused fast without decoding", async () => {
    const bomb = await pngClaimingSize(30000, 30000);
    assert.ok(bomb.length < 100, `bomb is ${bomb.length} bytes`);
    const p = await writeIn(roots, "bomb.png", bomb);
    const t0 = performance.now();
    await expectKind(preprocessImage({ id: "bomb", path: p }, opts()), "too_large", "bomb");
    const ms = performance.now() - t0;
    assert.ok(ms < 500, `took ${ms} ms`);
    // also through the two-step API
    await expectKind(openImage({ id: "bomb2", bytes: bomb }, { paths }), "too_large", "bomb2");
  });

  it("limitInputPixels and maxInputBytes are configurable", async () => {
    const buf = await solid(100, 100, COLOUR).png().toBuffer();
    await expectKind(preprocessImage({ id: "px", bytes: buf }, opts("native", { limits: { limitInputPixels: 5000 } })), "too_large", "px");
    await expectKind(preprocessImage({ id: "by", bytes: buf }, opts("native", { limits: { maxInputBytes: 10 } })), "too_large", "by");
    const p = await writeIn(roots, "big.png", buf);
    await expectKind(preprocessImage({ id: "by2", path: p }, opts("native", { limits: { maxInputBytes: 10 } })), "too_large", "by2");
  });

  it("random corruption only ever yields InputError (or a successful decode)", async () => {
    const base = await sharp(noiseRaw(64, 64, 7), { raw: { width: 64, height: 64, channels: 3 } })
      .jpeg()
      .toBuffer();
    const png = await sharp(noiseRaw(64, 64, 9), { raw: { width: 64, height: 64, channels: 3 } })
      .png()
      .toBuffer();
    let seed = 12345;
    const rnd = (n: number): number => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return seed % n;
    };
    for (const src of [base, png]) {
      for (let k = 0; k < 25; k++) {
        const b = Buffer.from(src);
        for (let j = 0; j < 8; j++) b[8 + rnd(b.length - 8)] = rnd(256);
        try {
          const img = await preprocessImage({ id: `fuzz${k}`, bytes: b }, opts());
          assert.equal(img.pixels.length, 3 * img.height * img.width);
        } catch (err) {
          assert.ok(err instanceof InputError, `non-InputError: ${String(err)}`);
        }
      }
    }
  });
});

describe("path safety", () => {
  it("missing path inside the roots → file_not_found; outside → outside_allowed_roots", async () => {
    await expectKind(preprocessImage({ id: "m", path: path.join(roots, "nope.jpg") }, opts()), "file_not_found", "m");
    await expectKind(preprocessImage({ id: "m2", path: path.join(roots, "no-dir", "nope.jpg") }, opts()), "file_not_found", "m2");
    await expectKind(preprocessImage({ id: "m3", path: path.join(outsideDir, "nope.jpg") }, opts()), "outside_allowed_roots", "m3");
  });

  it("directory → not_a_file", async () => {
    const d = path.join(roots, "subdir.jpg");
    await fsp.mkdir(d);
    await expectKind(preprocessImage({ id: "d", path: d }, opts()), "not_a_file", "d", /directory/);
    await expectKind(preprocessImage({ id: "r", path: roots }, opts()), "not_a_file", "r");
  });

  it("FIFO → not_a_file without blocking", async (t) => {
    const f = path.join(roots, "pipe.png");
    try {
      execFileSync("mkfifo", [f]);
    } catch {
      t.skip("mkfifo unavailable");
      return;
    }
    await expectKind(preprocessImage({ id: "fifo", path: f }, opts()), "not_a_file", "fifo");
  });

  it("files outside the roots, and .. traversal, are refused", async () => {
    const img = await solid(16, 16, COLOUR).png().toBuffer();
    const out = await writeIn(outsideDir, "secret.png", img);
    await expectKind(preprocessImage({ id: "o", path: out }, opts()), "outside_allowed_roots", "o");
    await expectKind(preprocessImage({ id: "dd", path: `${roots}/../outside/secret.png` }, opts()), "outside_allowed_roots", "dd");
    // a sibling whose name merely starts with the root's name is outside
    const sibling = `${roots}-evil`;
    await fsp.mkdir(sibling);
    await expectKind(preprocessImage({ id: "sib", path: await writeIn(sibling, "x.png", img) }, opts()), "outside_allowed_roots", "sib");
  });

  it("a symlink escaping the roots is refused; one staying inside is allowed", async () => {
    const img = await solid(16, 16, COLOUR).png().toBuffer();
    const target = await writeIn(outsideDir, "target.png", img);
    const evil = path.join(roots, "evil.png");
    await fsp.symlink(target, evil);
    await expectKind(preprocessImage({ id: "sym", path: evil }, opts()), "outside_allowed_roots", "sym");
    // directory symlink escaping
    const dirLink = path.join(roots, "linkdir");
    await fsp.symlink(outsideDir, dirLink);
    await expectKind(preprocessImage({ id: "symd", path: path.join(dirLink, "target.png") }, opts()), "outside_allowed_roots", "symd");
    // inside → inside is fine
    const real = await writeIn(roots, "real.png", img);
    const good = path.join(roots, "good.png");
    await fsp.symlink(real, good);
    assertSolid(await preprocessImage({ id: "ok", path: good }, opts()), COLOUR, 1);
  });

  it("a symlink escaping the roots is no oracle: a missing file outside reads like an existing one", async (t) => {
    const img = await solid(16, 16, COLOUR).png().toBuffer();
    const probeDir = path.join(tmp, "probed");
    await fsp.mkdir(probeDir);
    await writeIn(probeDir, "exists.png", img);
    await fsp.mkdir(path.join(probeDir, "private"), { mode: 0o000 });
    t.after(() => fsp.chmod(path.join(probeDir, "private"), 0o700));
    // a directory symlink inside the roots pointing out: probing files below it
    const dirLink = path.join(roots, "oracle-dir");
    await fsp.symlink(probeDir, dirLink);
    await expectKind(preprocessImage({ id: "e", path: path.join(dirLink, "exists.png") }, opts()), "outside_allowed_roots", "e");
    await expectKind(preprocessImage({ id: "m", path: path.join(dirLink, "missing.png") }, opts()), "outside_allowed_roots", "m");
    await expectKind(preprocessImage({ id: "md", path: path.join(dirLink, "no-dir", "x.png") }, opts()), "outside_allowed_roots", "md");
    await expectKind(preprocessImage({ id: "nd", path: path.join(dirLink, "exists.png", "x.png") }, opts()), "outside_allowed_roots", "nd");
    if (process.getuid?.() !== 0) {
      await expectKind(preprocessImage({ id: "p", path: path.join(dirLink, "private", "x.png") }, opts()), "outside_allowed_roots", "p");
    }
    // file symlinks inside the roots pointing out, to a missing file and through a dangling chain
    const fileLink = path.join(roots, "oracle-file.png");
    await fsp.symlink(path.join(probeDir, "missing.png"), fileLink);
    await expectKind(preprocessImage({ id: "f", path: fileLink }, opts()), "outside_allowed_roots", "f");
    const chain = path.join(roots, "oracle-chain.png");
    await fsp.symlink(fileLink, chain);
    await expectKind(preprocessImage({ id: "c", path: chain }, opts()), "outside_allowed_roots", "c");
    // a dangling symlink that stays inside the roots is still a plain file_not_found
    const inside = path.join(roots, "dangling-inside.png");
    await fsp.symlink(path.join(roots, "not-there.png"), inside);
    await expectKind(preprocessImage({ id: "di", path: inside }, opts()), "file_not_found", "di");
  });

  it("a root that is itself a symlink works (roots are realpath-ed)", async () => {
    const linkRoot = path.join(tmp, "root-link");
    await fsp.symlink(roots, linkRoot);
    const policy = await createPathPolicy([linkRoot]);
    await writeIn(roots, "via-link.png", await solid(16, 16, COLOUR).png().toBuffer());
    const img = await preprocessImage({ id: "vl", path: path.join(linkRoot, "via-link.png") }, { ...opts(), paths: policy });
    assertSolid(img, COLOUR, 1);
    await expectKind(preprocessImage({ id: "vl2", path: path.join(linkRoot, "missing.png") }, { ...opts(), paths: policy }), "file_not_found");
  });

  it("a symlink loop inside the roots → file_unreadable (it exists, it cannot be read)", async () => {
    const a = path.join(roots, "loop-a.png");
    const b = path.join(roots, "loop-b.png");
    await fsp.symlink(b, a);
    await fsp.symlink(a, b);
    await expectKind(preprocessImage({ id: "loop", path: a }, opts()), "file_unreadable", "loop", /symbolic links/);
  });

  it("relative paths, NUL bytes and no configured roots are refused", async () => {
    await expectKind(preprocessImage({ id: "rel", path: "roots/x.png" }, opts()), "invalid_input", "rel");
    await expectKind(preprocessImage({ id: "nul", path: `${roots}/x\0.png` }, opts()), "invalid_input", "nul");
    const none = await createPathPolicy([]);
    await expectKind(preprocessImage({ id: "nr", path: path.join(roots, "real.png") }, { ...opts(), paths: none }), "outside_allowed_roots");
  });

  it("malformed input objects → invalid_input", async () => {
    await expectKind(preprocessImage({ id: "x" } as unknown as ImageInput, opts()), "invalid_input", "x");
    await expectKind(preprocessImage({ id: "y", path: "/a", bytes: new Uint8Array(1) } as unknown as ImageInput, opts()), "invalid_input", "y");
    await expectKind(preprocessImage({ id: "b", bytes: "abc" } as unknown as ImageInput, opts()), "invalid_input", "b");
  });
});

describe("raw input", () => {
  it("wrong shape → invalid_input naming the expected size", async () => {
    const raw = { data: new Uint8Array(10 * 10 * 3 - 1), height: 10, width: 10, channels: 3 as const, dtype: "uint8" as const };
    await expectKind(preprocessImage({ id: "raw1", raw }, opts()), "invalid_input", "raw1", /300/);
  });

  it("bad channels / dtype / values → invalid_input; too many pixels → too_large", async () => {
    const bad: Array<[Record<string, unknown>, InputErrorKind]> = [
      [{ data: new Uint8Array(200), height: 10, width: 10, channels: 2, dtype: "uint8" }, "invalid_input"],
      [{ data: new Float32Array(300), height: 10, width: 10, channels: 3, dtype: "uint8" }, "invalid_input"],
      [{ data: new Uint8Array(300), height: 10, width: 10, channels: 3, dtype: "float32" }, "invalid_input"],
      [{ data: new Float32Array(300).fill(2), height: 10, width: 10, channels: 3, dtype: "float32" }, "invalid_input"],
      [{ data: new Float32Array(300).fill(NaN), height: 10, width: 10, channels: 3, dtype: "float32" }, "invalid_input"],
      [{ data: new Uint8Array(300), height: 0, width: 10, channels: 3, dtype: "uint8" }, "invalid_input"],
      [{ data: new Uint8Array(300), height: 10, width: 10, channels: 3, dtype: "uint16" }, "invalid_input"],
    ];
    for (const [raw, code] of bad) {
      await expectKind(preprocessImage({ id: "rawbad", raw } as unknown as ImageInput, opts()), code, "rawbad");
    }
    const big = { data: new Uint8Array(300), height: 10, width: 10, channels: 3 as const, dtype: "uint8" as const };
    await expectKind(preprocessImage({ id: "rawbig", raw: big }, opts("native", { limits: { limitInputPixels: 99 } })), "too_large");
  });

  it("uint8 RGB at the target size passes through unchanged; float32 there is quantised to round(v·255)", async () => {
    const h = 32;
    const w = 48;
    const u8 = new Uint8Array(h * w * 3);
    for (let i = 0; i < u8.length; i++) u8[i] = (i * 37) % 256;
    const same = await preprocessImage({ id: "u", raw: { data: u8, height: h, width: w, channels: 3, dtype: "uint8" } }, opts());
    assert.deepEqual([same.height, same.width], [h, w]);
    assert.deepEqual(same.pixels, u8);

    const data = new Float32Array(h * w * 3);
    for (let i = 0; i < data.length; i++) data[i] = ((i * 37) % 1000) / 999;
    const img = await preprocessImage({ id: "f", raw: { data, height: h, width: w, channels: 3, dtype: "float32" } }, opts());
    assert.deepEqual([img.height, img.width], [h, w]);
    assert.deepEqual(
      new Uint8Array(img.pixels),
      Uint8Array.from(data, (v) => Math.round(v * 255)),
    );
  });

  it("uint8 / float32 raw are resized like encoded input; grey and RGBA handled", async () => {
    const n = 30 * 40;
    const u8 = new Uint8Array(n * 3);
    for (let i = 0; i < n; i++) u8.set([COLOUR.r, COLOUR.g, COLOUR.b], i * 3);
    const a = await preprocessImage({ id: "u8", raw: { data: u8, height: 30, width: 40, channels: 3, dtype: "uint8" } }, opts());
    // native: 30/16 = 1.875 → 32; 40/16 = 2.5 → 2 (half to even) → 32
    assert.deepEqual([a.height, a.width, a.originalHeight, a.originalWidth], [32, 32, 30, 40]);
    assertSolid(a, COLOUR, 1);

    const f = new Float32Array(n * 3);
    for (let i = 0; i < n; i++) f.set([COLOUR.r / 255, COLOUR.g / 255, COLOUR.b / 255], i * 3);
    assertSolid(await preprocessImage({ id: "f32", raw: { data: f, height: 30, width: 40, channels: 3, dtype: "float32" } }, opts()), COLOUR, 1);

    const grey = new Uint8Array(n).fill(77);
    assertSolid(
      await preprocessImage({ id: "g", raw: { data: grey, height: 30, width: 40, channels: 1, dtype: "uint8" } }, opts()),
      { r: 77, g: 77, b: 77 },
      1,
    );

    const rgba = new Uint8Array(n * 4);
    for (let i = 0; i < n; i++) rgba.set([0, 0, 255, 0], i * 4); // fully transparent blue
    assertSolid(
      await preprocessImage({ id: "rgba", raw: { data: rgba, height: 30, width: 40, channels: 4, dtype: "uint8" } }, opts()),
      { r: 255, g: 255, b: 255 },
      1,
    );
    // the same at the target size
    const rgba32 = new Uint8Array(32 * 48 * 4);
    for (let i = 0; i < 32 * 48; i++) rgba32.set([255, 0, 0, 255], i * 4);
    assertSolid(await preprocessImage({ id: "rgba2", raw: { data: rgba32, height: 32, width: 48, channels: 4, dtype: "uint8" } }, opts()), RED, 0);
  });
});

describe("misc", () => {
  it("sniffFormat recognises the allowlist only", async () => {
    assert.equal(sniffFormat(await solid(4, 4, RED).jpeg().toBuffer()), "jpeg");
    assert.equal(sniffFormat(await solid(4, 4, RED).png().toBuffer()), "png");
    assert.equal(sniffFormat(await solid(4, 4, RED).webp().toBuffer()), "webp");
    assert.equal(sniffFormat(await solid(4, 4, RED).gif().toBuffer()), "gif");
    assert.equal(sniffFormat(await solid(4, 4, RED).tiff().toBuffer()), "tiff");
    assert.equal(sniffFormat(await solid(4, 4, RED).avif().toBuffer()), "heif");
    assert.equal(sniffFormat(Buffer.from("<svg/>")), null);
  });

  it("decoding does not block the event loop", async () => {
    const w = 3000;
    const h = 2000;
    const buf = await sharp(noiseRaw(w, h, 3), { raw: { width: w, height: h, channels: 3 } })
      .jpeg({ quality: 95 })
      .toBuffer();
    let ticks = 0;
    const timer = setInterval(() => ticks++, 1);
    try {
      await preprocessImage({ id: "big", bytes: buf }, opts("native"));
    } finally {
      clearInterval(timer);
    }
    assert.ok(ticks >= 3, `event loop ticked ${ticks} times during decode`);
  });
});
