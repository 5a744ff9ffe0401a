/**
 * Typed errors for bad image input.
 *
 * Every failure caused by the *input* (a bad path, an undecodable file, a raw
 * buffer of the wrong shape, an invalid resolution request) is reported as an
 * `InputError` with one of a small, stable set of kinds, so the transport
 * layer can map it to its own codes (radio.v1.ErrorCode for gRPC, in
 * transport/grpc/codes.ts) without parsing messages. The kinds say what
 * happened; nothing here knows a wire code.
 *
 * The message always names the caller-supplied input id and the reason.
 */

export const INPUT_ERROR_KINDS = [
  /** The path (inside the allowed roots) does not exist. */
  "file_not_found",
  /** The path exists but could not be read: permission denied, a symlink loop, an I/O error. */
  "file_unreadable",
  /** The path is a directory, a FIFO, a device. */
  "not_a_file",
  /** The path resolves outside the allowed roots (or there are none). */
  "outside_allowed_roots",
  /** Not an image format this build decodes (the zoo then tries Pillow). */
  "unsupported_format",
  /** Truncated or damaged data, an empty file, a decoder error. */
  "corrupt_image",
  /** Above a size limit: bytes, pixels, decode time. */
  "too_large",
  /** A malformed input: raw pixels of a wrong shape or range, no source, a bad path string or resolution. */
  "invalid_input",
  /** A path input where this listener takes none (TCP without --allow-remote-paths). */
  "paths_refused",
] as const;

export type InputErrorKind = (typeof INPUT_ERROR_KINDS)[number];

export function isInputErrorKind(kind: string): kind is InputErrorKind {
  return (INPUT_ERROR_KINDS as readonly string[]).includes(kind);
}

export class InputError extends Error {
  override readonly name = "InputError";
  readonly kind: InputErrorKind;
  /** The caller-supplied id of the offending input. */
  readonly inputId: string;
  /** The reason, without the `input "<id>": ` prefix. */
  readonly reason: string;

  constructor(kind: InputErrorKind, inputId: string, reason: string, options?: { cause?: unknown }) {
    super(`input ${JSON.stringify(inputId)}: ${reason}`, options);
    this.kind = kind;
    this.inputId = inputId;
    this.reason = reason;
  }
}

/** First line of an unknown thrown value's message (sharp/libvips messages can be multi-line). */
export function firstLine(err: unknown): string {
  const msg = err instanceof Error ? err.message : String(err);
  const line = msg.split("\n", 1)[0] ?? "";
  return line.trim() || "unknown error";
}
