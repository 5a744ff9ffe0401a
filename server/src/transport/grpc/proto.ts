// Loads proto/radio/v1/radio.proto (and the standard health proto, for reflection) with
// @grpc/proto-loader. keepCase: false — fields are lowerCamelCase in JS (inputHeight), as in proto3
// JSON; enums are their string names; bytes are Buffers. Clients in this repo load it the same way.
import { fileURLToPath } from "node:url";
import type * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { protoPath as HEALTH_PROTO } from "grpc-health-check";

/** proto/ at the repository root (same depth from server/src and server/dist). */
export const PROTO_DIR = fileURLToPath(new URL("../../../../proto", import.meta.url));
export const RADIO_PROTO = "radio/v1/radio.proto";
export const RADIO_SERVICE = "radio.v1.Radio";

export const LOADER_OPTIONS: protoLoader.Options = {
  keepCase: false,
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
  includeDirs: [PROTO_DIR],
};

/** The package definition of radio.v1 plus grpc.health.v1 (so reflection describes both). */
export function loadPackageDefinition(): protoLoader.PackageDefinition {
  return protoLoader.loadSync([RADIO_PROTO, HEALTH_PROTO], LOADER_OPTIONS);
}

export function radioServiceDefinition(pkg: protoLoader.PackageDefinition): grpc.ServiceDefinition {
  const def = pkg[RADIO_SERVICE];
  if (!def || !("Embed" in def)) throw new Error(`${RADIO_PROTO} does not define ${RADIO_SERVICE}`);
  return def as unknown as grpc.ServiceDefinition;
}

/** Wire shapes (as proto-loader decodes/encodes them with LOADER_OPTIONS). */
export type DType = "DTYPE_UNSPECIFIED" | "DTYPE_UINT8" | "DTYPE_FLOAT32";
export type ProtoOutputKind = "OUTPUT_KIND_UNSPECIFIED" | "SUMMARY" | "FEATURES_NCHW" | "FEATURES_NLC" | "HEATMAP";
/** radio.v1.ErrorCode: the wire contract the Python client reads (codes.ts maps the pipeline's kinds to it). */
export type ProtoErrorCode =
  | "ERROR_CODE_UNSPECIFIED"
  | "NOT_FOUND"
  | "NOT_A_FILE"
  | "OUTSIDE_ALLOWED_ROOTS"
  | "UNSUPPORTED_FORMAT"
  | "CORRUPT_IMAGE"
  | "TOO_LARGE"
  | "INVALID_ARGUMENT"
  | "INTERNAL"
  | "CANCELLED"
  | "DEADLINE_EXCEEDED"
  | "RESOURCE_EXHAUSTED"
  | "PERMISSION_DENIED";

export interface ProtoError {
  code: ProtoErrorCode;
  message: string;
}

export interface ProtoRawPixels {
  data: Buffer;
  height: number;
  width: number;
  channels: number;
  dtype: DType;
}

export interface ProtoImageInput {
  id: string;
  path?: string;
  encoded?: Buffer;
  raw?: ProtoRawPixels;
  source?: "path" | "encoded" | "raw";
}

export interface ProtoHeatmapOptions {
  smoothing: boolean;
  sigma: number;
  outputHeight: number;
  outputWidth: number;
  maxSide: number;
  mode: "PCA1" | "PCA3_RGB";
}

export interface ProtoEmbedRequest {
  images: ProtoImageInput[];
  options: { output: ProtoOutputKind; resolution: string; heatmap: ProtoHeatmapOptions | null; graph: string; space: string } | null;
}

export interface ProtoTensor {
  dtype: DType;
  shape: number[];
  data: Uint8Array;
}

export interface ProtoImageResult {
  index: number;
  id: string;
  output?: { tensor: ProtoTensor; inputHeight: number; inputWidth: number; originalHeight: number; originalWidth: number };
  error?: ProtoError;
}

export interface ProtoEmbedResponse {
  results: ProtoImageResult[];
}

export interface ProtoEmbedTextRequest {
  prompts: string[];
  graph: string;
}

export interface ProtoTextResult {
  index: number;
  canonical: string;
  embedding?: ProtoTensor;
  error?: ProtoError;
}

export interface ProtoEmbedTextResponse {
  results: ProtoTextResult[];
  space: string;
  logitScale: number;
  logitBias: number;
}
