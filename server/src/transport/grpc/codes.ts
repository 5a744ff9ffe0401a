// The one place where the pipeline's failure kinds become gRPC's words: a failed image's or
// prompt's kind → radio.v1.ErrorCode (the wire contract the Python client reads), a refused
// request's kind → a grpc.status. Both tables are exhaustive: a new kind does not compile until it
// is mapped here.
import * as grpc from "@grpc/grpc-js";
import { isInputErrorKind } from "../../preprocess/errors.js";
import type { FailureKind, RequestErrorKind } from "../../pipeline/errors.js";
import type { ProtoError, ProtoErrorCode } from "./proto.js";

export const ERROR_CODES: Readonly<Record<FailureKind, ProtoErrorCode>> = {
  file_not_found: "NOT_FOUND",
  // Unreadable (permission denied, a symlink loop, an I/O error) reads as not found on the wire.
  file_unreadable: "NOT_FOUND",
  not_a_file: "NOT_A_FILE",
  outside_allowed_roots: "OUTSIDE_ALLOWED_ROOTS",
  unsupported_format: "UNSUPPORTED_FORMAT",
  corrupt_image: "CORRUPT_IMAGE",
  too_large: "TOO_LARGE",
  invalid_input: "INVALID_ARGUMENT",
  paths_refused: "PERMISSION_DENIED",
  invalid_prompt: "INVALID_ARGUMENT",
  internal: "INTERNAL",
};

export const REQUEST_STATUS: Readonly<Record<RequestErrorKind, grpc.status>> = {
  invalid_request: grpc.status.INVALID_ARGUMENT,
  queue_full: grpc.status.RESOURCE_EXHAUSTED,
  shutting_down: grpc.status.UNAVAILABLE,
};

/**
 * A failed image's or prompt's ImageError. An input error's message ends with its code, as the
 * Python client writes its own (`input "a.bmp": not a supported image (…) [UNSUPPORTED_FORMAT]`).
 */
export function protoError(error: { kind: FailureKind; message: string }): ProtoError {
  const code = ERROR_CODES[error.kind];
  return { code, message: isInputErrorKind(error.kind) ? `${error.message} [${code}]` : error.message };
}
