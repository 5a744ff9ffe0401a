/**
 * Typed errors for bad image input.
 *
 * Every failure caused by the *input* (a bad path, an undecodable file, a raw
 * buffer of the wrong shape, an invalid resolution request) is reported as an
 * `InputError` with one of a small, stable set of codes, so the transport
 * layer can map it to a status (e.g. gRPC INVALID_ARGUMENT / NOT_FOUND /
 * PERMISSION_DENIED / RESOURCE_EXHAUSTED) without parsing messages.
 *
 * The message always names the caller-supplied input id and the reason.
 */

export const INPUT_ERROR_CODES = [
  "NOT_FOUND",
  "NOT_A_FILE",
  "OUTSIDE_ALLOWED_ROOTS",
  "UNSUPPORTED_FORMAT",
  "CORRUPT_IMAGE",
  "TOO_LARGE",
  "INVALID_ARGUMENT",
  "PERMISSION_DENIED",
] as const;

export type InputErrorCode = (typeof INPUT_ERROR_CODES)[number];

export class InputError extends Error {
  override readonly name = "InputError";
  readonly code: InputErrorCode;
  /** The caller-supplied id of the offending input. */
  readonly inputId: string;
  /** The reason, without the `input "<id>": ` prefix. */
  readonly reason: string;

  constructor(code: InputErrorCode, inputId: string, reason: string, options?: { cause?: unknown }) {
    super(`input ${JSON.stringify(inputId)}: ${reason} [${code}]`, options);
    this.code = code;
    this.inputId = inputId;
    this.reason = reason;
  }
}

export function isInputError(err: unknown): err is InputError {
  return err instanceof InputError;
}

/** First line of an unknown thrown value's message (sharp/libvips messages can be multi-line). */
export function firstLine(err: unknown): string {
  const msg = err instanceof Error ? err.message : String(err);
  const line = msg.split("\n", 1)[0] ?? "";
  return line.trim() || "unknown error";
}
