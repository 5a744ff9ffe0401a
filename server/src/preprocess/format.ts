/**
 * Format allowlist and magic-byte sniffing.
 *
 * Encoded input is sniffed from its first bytes *before* any decoder sees it,
 * and anything that is not one of the allowlisted raster formats is refused.
 * In particular SVG (and anything XML/HTML/text) never reaches sharp: librsvg
 * would happily render it, and SVG can reference external files and URLs.
 * After sniffing, sharp's own metadata must agree (see decode.ts).
 *
 * sharp 0.35's prebuilt libvips reads: jpeg, png, webp, gif, tiff, heif (AVIF
 * only: the prebuilt libheif has no HEVC decoder), svg, raw and vips. No BMP,
 * JPEG 2000, JPEG XL, PDF or ImageMagick formats. We allow the raster subset.
 */

/** Allowlisted formats, named as sharp's `metadata().format` names them. */
export const SUPPORTED_FORMATS = ["jpeg", "png", "webp", "gif", "tiff", "heif"] as const;
export type SupportedFormat = (typeof SUPPORTED_FORMATS)[number];

export function isSupportedFormat(name: unknown): name is SupportedFormat {
  return typeof name === "string" && (SUPPORTED_FORMATS as readonly string[]).includes(name);
}

function ascii(b: Uint8Array, start: number, len: number): string {
  let s = "";
  for (let i = start; i < start + len && i < b.length; i++) s += String.fromCharCode(b[i]!);
  return s;
}

function startsWith(b: Uint8Array, sig: readonly number[], offset = 0): boolean {
  if (b.length < offset + sig.length) return false;
  for (let i = 0; i < sig.length; i++) if (b[offset + i] !== sig[i]) return false;
  return true;
}

/** ISO-BMFF major brands accepted as HEIF/AVIF candidates; sharp then decides (only AV1 decodes). */
const HEIF_BRANDS = new Set(["avif", "avis", "mif1", "msf1", "heic", "heix", "heim", "heis", "hevc", "hevx"]);

/**
 * Identify an allowlisted format from magic bytes, or return null (unknown,
 * text, HTML, SVG, BMP, PDF, …).
 */
export function sniffFormat(b: Uint8Array): SupportedFormat | null {
  if (startsWith(b, [0xff, 0xd8, 0xff])) return "jpeg";
  if (startsWith(b, [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a])) return "png";
  const head6 = ascii(b, 0, 6);
  if (head6 === "GIF87a" || head6 === "GIF89a") return "gif";
  if (ascii(b, 0, 4) === "RIFF" && ascii(b, 8, 4) === "WEBP") return "webp";
  // TIFF and BigTIFF, little- and big-endian.
  if (
    startsWith(b, [0x49, 0x49, 0x2a, 0x00]) ||
    startsWith(b, [0x4d, 0x4d, 0x00, 0x2a]) ||
    startsWith(b, [0x49, 0x49, 0x2b, 0x00]) ||
    startsWith(b, [0x4d, 0x4d, 0x00, 0x2b])
  ) {
    return "tiff";
  }
  if (ascii(b, 4, 4) === "ftyp" && HEIF_BRANDS.has(ascii(b, 8, 4))) return "heif";
  return null;
}

/** A short human description of unrecognised content, for error messages. */
export function describeUnknown(b: Uint8Array): string {
  const bom = startsWith(b, [0xef, 0xbb, 0xbf]) ? 3 : 0; // UTF-8 byte-order mark
  const text = ascii(b, bom, 256).trimStart().toLowerCase();
  if (text.startsWith("<svg") || (text.startsWith("<?xml") && text.includes("<svg"))) return "SVG (refused: vector formats are not decoded)";
  if (text.startsWith("<!doctype html") || text.startsWith("<html")) return "HTML";
  if (text.startsWith("<")) return "XML/markup";
  if (startsWith(b, [0x42, 0x4d])) return "BMP (not supported by this sharp build)";
  if (ascii(b, 0, 5) === "%PDF-") return "PDF";
  if (startsWith(b, [0x1f, 0x8b])) return "gzip data (e.g. SVGZ)";
  if (ascii(b, 4, 8) === "jP  \r\n\x87\n" || startsWith(b, [0xff, 0x4f, 0xff, 0x51])) return "JPEG 2000";
  if (startsWith(b, [0xff, 0x0a]) || ascii(b, 4, 4) === "JXL ") return "JPEG XL";
  return "unrecognised data";
}
