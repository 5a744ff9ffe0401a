// The pipeline's failures, in its own words: why one image or prompt failed (a FailureKind, with a
// message), and why a whole request was refused (a RequestError). The kinds say what happened; the
// transport maps them to its codes (transport/grpc/codes.ts: radio.v1.ErrorCode, grpc.status).
import { INPUT_ERROR_KINDS } from "../preprocess/errors.js";

export const FAILURE_KINDS = [
  // The input itself (preprocess/errors.ts; the transport raises paths_refused and invalid_input too).
  ...INPUT_ERROR_KINDS,
  /** A prompt the tokenizer refuses: not a string, not valid Unicode, too long. */
  "invalid_prompt",
  /** The server failed (preprocessing crashed, inference or postprocessing failed or timed out): not the input's fault. */
  "internal",
] as const;

/** Why one image (or one prompt) has no output. */
export type FailureKind = (typeof FAILURE_KINDS)[number];

export const REQUEST_ERROR_KINDS = [
  /** The request as a whole is malformed: an unknown graph or space, a bad resolution or heatmap, too many images or prompts. */
  "invalid_request",
  /** The images do not fit in the queue beside those already admitted: retry later. */
  "queue_full",
  /** The server is draining and takes no new work. */
  "shutting_down",
] as const;

export type RequestErrorKind = (typeof REQUEST_ERROR_KINDS)[number];

/** The whole request is refused (nothing was started). */
export class RequestError extends Error {
  override readonly name = "RequestError";
  constructor(
    readonly kind: RequestErrorKind,
    message: string,
  ) {
    super(message);
  }
}
