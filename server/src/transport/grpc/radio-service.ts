// radio.v1.Radio handlers: map wire messages to pipeline requests and outcomes back, stream one
// EmbedResponse per finished image, and turn cancellation and deadlines into dropped work (images
// and prompts not yet run are not run). A result counts as delivered once grpc-js has let it out to
// the client (deliveries.ts); a call whose client stopped reading is ended after the stall timeout,
// so its unread results stop holding the queue.
import * as grpc from "@grpc/grpc-js";
import type { Logger } from "pino";
import { InputError, type ImageInput, type RawPixels } from "../../preprocess/index.js";
import { RequestError } from "../../pipeline/errors.js";
import type { Pipeline } from "../../pipeline/pipeline.js";
import { PromptsDropped } from "../../pipeline/text.js";
import type { EmbedJobSpec, ImageOutcome, OutputKind } from "../../pipeline/types.js";
import type { ServerInfo } from "../../server-info.js";
import { protoError, REQUEST_STATUS } from "./codes.js";
import { Deliveries } from "./deliveries.js";
import type {
  ProtoEmbedRequest,
  ProtoEmbedTextRequest,
  ProtoEmbedTextResponse,
  ProtoEmbedResponse,
  ProtoImageInput,
  ProtoImageResult,
  ProtoOutputKind,
  ProtoRawPixels,
} from "./proto.js";

export interface RadioServiceState {
  /** Null until the graphs are loaded and warmed. */
  pipeline(): Pipeline | null;
  /** True once shutdown has begun. */
  shuttingDown(): boolean;
  info(): ServerInfo;
  /** False: path inputs are refused (paths_refused, PERMISSION_DENIED on the wire), e.g. for TCP clients. Default true. */
  pathInputs?: boolean;
}

export interface RequestRecorder {
  request(method: string, code: string): void;
}

/** How Embed calls whose client stopped reading are ended. */
export interface StallGuard {
  /** A call whose client has read none of its waiting results for this long is ended (0 = never). */
  stallTimeoutMs: number;
  /** Resets the call's HTTP/2 stream (gRPC clients read RESOURCE_EXHAUSTED); false when it cannot. */
  reset(call: grpc.ServerWritableStream<unknown, unknown>): boolean;
}

const OUTPUT_KINDS: Record<ProtoOutputKind, OutputKind> = {
  OUTPUT_KIND_UNSPECIFIED: "summary",
  SUMMARY: "summary",
  FEATURES_NCHW: "features_nchw",
  FEATURES_NLC: "features_nlc",
  HEATMAP: "heatmap",
};

const STATUS_NAME: Record<number, string> = Object.fromEntries(
  Object.entries(grpc.status)
    .filter(([, v]) => typeof v === "number")
    .map(([k, v]) => [v as number, k]),
);

function statusError(code: grpc.status, details: string): grpc.ServiceError {
  return Object.assign(new Error(details), { code, details, metadata: new grpc.Metadata() });
}

/** The caller's id, or its position when it gave none; used to name the image in messages. */
function displayId(img: ProtoImageInput, index: number): string {
  return img.id || `#${index}`;
}

function rawFromProto(id: string, r: ProtoRawPixels): RawPixels | InputError {
  const { data, height, width, channels } = r;
  const n = height * width * channels;
  let dtype = r.dtype;
  if (dtype === "DTYPE_UNSPECIFIED") {
    // Unambiguous from the length: one byte or four per value.
    if (data.byteLength === n) dtype = "DTYPE_UINT8";
    else if (data.byteLength === 4 * n) dtype = "DTYPE_FLOAT32";
    else
      return new InputError(
        "invalid_input",
        id,
        `raw pixels: dtype unspecified and ${data.byteLength} bytes fit neither uint8 nor float32 for ${height}x${width}x${channels}`,
      );
  }
  let arr: Uint8Array | Float32Array;
  if (dtype === "DTYPE_UINT8") {
    arr = data;
  } else if (dtype === "DTYPE_FLOAT32") {
    if (data.byteLength % 4 !== 0) return new InputError("invalid_input", id, `raw float32 pixels: ${data.byteLength} bytes is not a multiple of 4`);
    // Decoded bytes are a slice of the message buffer, often not 4-byte aligned: copy only then.
    arr = data.byteOffset % 4 === 0 ? new Float32Array(data.buffer, data.byteOffset, data.byteLength / 4) : new Float32Array(new Uint8Array(data).buffer);
  } else {
    return new InputError("invalid_input", id, `raw pixels: unknown dtype ${String(dtype)}`);
  }
  return { data: arr, height, width, channels: channels as RawPixels["channels"], dtype: dtype === "DTYPE_UINT8" ? "uint8" : "float32" };
}

const PATHS_REFUSED = "path inputs are refused on this listener (TCP without --allow-remote-paths): send the image's bytes (encoded) instead";

function imageFromProto(img: ProtoImageInput, index: number, pathInputs: boolean): ImageInput | InputError {
  const id = displayId(img, index);
  switch (img.source) {
    case "path":
      if (!pathInputs) return new InputError("paths_refused", id, PATHS_REFUSED);
      return { id, path: img.path ?? "" };
    case "encoded":
      return { id, bytes: img.encoded ?? Buffer.alloc(0) };
    case "raw": {
      const raw = rawFromProto(id, img.raw!);
      return raw instanceof InputError ? raw : { id, raw };
    }
    default:
      return new InputError("invalid_input", id, "the image has no source (set one of path, encoded, raw)");
  }
}

function specFromProto(req: ProtoEmbedRequest, deadline: number | null, pathInputs: boolean): EmbedJobSpec {
  const options = req.options;
  const h = options?.heatmap;
  const output = OUTPUT_KINDS[options?.output ?? "OUTPUT_KIND_UNSPECIFIED"];
  if (!output) throw new RequestError("invalid_request", `unknown output kind ${String(options?.output)}`);
  return {
    graph: options?.graph ?? "",
    space: options?.space ?? "",
    resolution: options?.resolution ?? "",
    output,
    heatmap: {
      mode: h?.mode === "PCA3_RGB" ? "pca3" : "pca1",
      smoothing: h?.smoothing ?? false,
      sigma: h?.sigma ?? 0,
      outputHeight: h?.outputHeight ?? 0,
      outputWidth: h?.outputWidth ?? 0,
      maxSide: h?.maxSide ?? 0,
    },
    images: (req.images ?? []).map((img, i) => imageFromProto(img, i, pathInputs)),
    deadline,
  };
}

function resultToProto(outcome: ImageOutcome, req: ProtoEmbedRequest): ProtoImageResult {
  const id = req.images[outcome.index]?.id ?? "";
  if (outcome.error) return { index: outcome.index, id, error: protoError(outcome.error) };
  const t = outcome.output.tensor;
  return {
    index: outcome.index,
    id,
    output: {
      tensor: { dtype: t.dtype === "uint8" ? "DTYPE_UINT8" : "DTYPE_FLOAT32", shape: t.shape, data: t.data },
      inputHeight: outcome.output.inputHeight,
      inputWidth: outcome.output.inputWidth,
      originalHeight: outcome.output.originalHeight,
      originalWidth: outcome.output.originalWidth,
    },
  };
}

function deadlineOf(call: Pick<grpc.ServerWritableStream<unknown, unknown>, "getDeadline">): number | null {
  const d = call.getDeadline();
  const ms = d instanceof Date ? d.getTime() : Number(d);
  return Number.isFinite(ms) ? ms : null;
}

/** Past the call's deadline: grpc-js has answered DEADLINE_EXCEEDED itself. */
function pastDeadline(deadline: number | null): boolean {
  return deadline !== null && Date.now() >= deadline;
}

/** A cancel that is the deadline: a client's own deadline timer usually fires (and resets the stream) just before ours. */
function cancelledAtDeadline(deadline: number | null): boolean {
  return deadline !== null && Date.now() >= deadline - 5;
}

export function radioHandlers(state: RadioServiceState, recorder: RequestRecorder, logger: Logger, stalls: StallGuard): grpc.UntypedServiceImplementation {
  const finish = (method: string, code: grpc.status) => recorder.request(method, STATUS_NAME[code] ?? String(code));

  const embed = (call: grpc.ServerWritableStream<ProtoEmbedRequest, ProtoEmbedResponse>) => {
    const req = call.request;
    const refuse = (code: grpc.status, details: string) => {
      finish("Embed", code);
      call.emit("error", statusError(code, details));
    };
    const pipeline = state.pipeline();
    if (state.shuttingDown()) return refuse(grpc.status.UNAVAILABLE, "the server is shutting down");
    if (!pipeline) return refuse(grpc.status.UNAVAILABLE, "the graphs are still loading; wait for health SERVING");

    const deadline = deadlineOf(call);
    let closed = false;
    let written = 0;
    let handle: ReturnType<Pipeline["submit"]>;
    const deliveries = new Deliveries(stalls.stallTimeoutMs, () => onStalled());
    try {
      handle = pipeline.submit(specFromProto(req, deadline, state.pathInputs ?? true), (outcome) => {
        // Never write to a call that is gone (cancelled, or past its deadline: grpc-js has already
        // answered DEADLINE_EXCEEDED).
        if (closed || call.cancelled || pastDeadline(deadline)) return;
        written++;
        // Delivered when grpc-js calls back: HTTP/2 flow control let the message out to the client.
        return deliveries.track((done) => call.write({ results: [resultToProto(outcome, req)] } satisfies ProtoEmbedResponse, done));
      });
    } catch (err) {
      if (err instanceof RequestError) return refuse(REQUEST_STATUS[err.kind], err.message);
      logger.error({ err }, "Embed failed");
      return refuse(grpc.status.INTERNAL, `internal error: ${(err as Error).message}`);
    }
    const started = performance.now();
    const images = req.images?.length ?? 0;
    const onCancelled = () => {
      // The call is over, whichever way: a write grpc-js dropped because the call was gone never
      // calls back, so whatever still waits settles here.
      deliveries.settleAll();
      if (closed) return;
      closed = true;
      const expired = cancelledAtDeadline(deadline);
      handle.cancel(expired ? "deadline" : "cancelled");
      finish("Embed", expired ? grpc.status.DEADLINE_EXCEEDED : grpc.status.CANCELLED);
      logger.debug({ images, ms: Math.round(performance.now() - started), expired }, "Embed cancelled");
    };
    const onStalled = () => {
      if (closed) return;
      closed = true;
      const unread = deliveries.pending;
      const seconds = stalls.stallTimeoutMs / 1000;
      handle.cancel("stalled");
      deliveries.settleAll();
      logger.warn({ images, unread, stallTimeoutS: seconds }, "Embed client stopped reading results: call ended");
      refuse(
        grpc.status.RESOURCE_EXHAUSTED,
        `the client stopped reading results for ${seconds} s (${unread} unread): the call was ended and its remaining images dropped`,
      );
      // That status waits behind the unread messages, for ever: resetting the stream ends the call now
      // and frees them.
      if (!stalls.reset(call)) logger.debug("Embed stream not reset (closed already, or out of reach)");
    };
    call.on("cancelled", onCancelled);
    if (call.cancelled) onCancelled();
    void handle.done.then(() => {
      if (closed || call.cancelled) return;
      closed = true;
      if (pastDeadline(deadline)) {
        // The last image finished after the deadline: grpc-js answers DEADLINE_EXCEEDED itself.
        finish("Embed", grpc.status.DEADLINE_EXCEEDED);
        return;
      }
      if (written < images) {
        // The pipeline dropped the rest (shutdown past its grace period): UNAVAILABLE, so that the
        // client sends the images without a result again (elsewhere), instead of an OK missing them.
        return refuse(grpc.status.UNAVAILABLE, `the server is shutting down: ${images - written} of ${images} images did not run; send them again`);
      }
      finish("Embed", grpc.status.OK);
      call.end();
      logger.debug({ images, ms: Math.round(performance.now() - started) }, "Embed done");
    });
  };

  const embedText = (call: grpc.ServerUnaryCall<ProtoEmbedTextRequest, ProtoEmbedTextResponse>, callback: grpc.sendUnaryData<ProtoEmbedTextResponse>) => {
    const refuse = (code: grpc.status, details: string) => {
      finish("EmbedText", code);
      callback(statusError(code, details));
    };
    const pipeline = state.pipeline();
    if (state.shuttingDown()) return refuse(grpc.status.UNAVAILABLE, "the server is shutting down");
    if (!pipeline) return refuse(grpc.status.UNAVAILABLE, "the graphs are still loading; wait for health SERVING");
    const req = call.request;
    const deadline = deadlineOf(call);
    // Gone: cancelled, or past its deadline (grpc-js emits "cancelled" then too).
    const gone = () => call.cancelled || pastDeadline(deadline);
    const caller = new AbortController();
    call.on("cancelled", () => caller.abort(cancelledAtDeadline(deadline) ? "deadline" : "cancelled"));
    if (call.cancelled) caller.abort("cancelled");
    let running: ReturnType<Pipeline["embedText"]>;
    try {
      running = pipeline.embedText(req.graph ?? "", req.prompts ?? [], caller.signal);
    } catch (err) {
      if (err instanceof RequestError) return refuse(REQUEST_STATUS[err.kind], err.message);
      logger.error({ err }, "EmbedText failed");
      return refuse(grpc.status.INTERNAL, `internal error: ${(err as Error).message}`);
    }
    const dropped = () => finish("EmbedText", cancelledAtDeadline(deadline) ? grpc.status.DEADLINE_EXCEEDED : grpc.status.CANCELLED);
    running.then(
      ({ outcomes, space, logitScale, logitBias }) => {
        if (gone()) return dropped();
        finish("EmbedText", grpc.status.OK);
        callback(null, {
          results: outcomes.map((outcome) =>
            outcome.error
              ? { index: outcome.index, canonical: outcome.canonical, error: protoError(outcome.error) }
              : {
                  index: outcome.index,
                  canonical: outcome.canonical,
                  embedding: {
                    dtype: "DTYPE_FLOAT32",
                    shape: [outcome.embedding.length],
                    data: new Uint8Array(outcome.embedding.buffer, outcome.embedding.byteOffset, outcome.embedding.byteLength),
                  },
                },
          ),
          space,
          logitScale,
          logitBias,
        });
      },
      (err: Error) => {
        if (err instanceof PromptsDropped || gone()) return dropped();
        if (err instanceof RequestError) return refuse(REQUEST_STATUS[err.kind], err.message);
        logger.error({ err }, "EmbedText failed");
        refuse(grpc.status.INTERNAL, `internal error: ${err.message}`);
      },
    );
  };

  const info = (_call: grpc.ServerUnaryCall<unknown, unknown>, callback: grpc.sendUnaryData<ServerInfo>) => {
    finish("Info", grpc.status.OK);
    callback(null, state.info());
  };

  return { Embed: embed as grpc.handleServerStreamingCall<unknown, unknown>, EmbedText: embedText as grpc.handleUnaryCall<unknown, unknown>, Info: info };
}
