// What the server has loaded and how it runs: the Info RPC and GET /v1/info return this (fields
// named as in proto3 JSON, i.e. radio.v1.InfoResponse in lowerCamelCase).
import type { ServedModel } from "./pipeline/models.js";
import type { ExecutionProvider } from "./runtime/session.js";
import type { ProviderChoice } from "./runtime/providers.js";
import { PRODUCT } from "./version.js";

export interface ModelInfo {
  name: string;
  variant: string;
  precision: string;
  patchSize: number;
  summaryDim: number;
  featureDim: number;
  preferredHeight: number;
  preferredWidth: number;
  maxResolution: number;
  resolutionStep: number;
  windowSize: number;
  /** Always false (proto field kept): graphs compiled with the removed --external-preprocessor are refused at load. */
  externalPreprocessor: false;
  sourceRepo: string;
  sourceRevision: string;
  executionProvider: string;
  adaptors: { name: string; summaryDim: number; featureDim: number; textAligned: boolean }[];
  /** Null: the model embeds no text. */
  text: {
    space: string;
    embedDim: number;
    contextLength: number;
    logitScale: number;
    logitBias: number;
    sourceRepo: string;
    sourceRevision: string;
    precision: string;
  } | null;
}

export interface ServerInfo {
  models: ModelInfo[];
  defaultModel: string;
  serverVersion: string;
  onnxruntimeVersion: string;
  workers: number;
  intraOpThreads: number;
  maxBatchSize: number;
  /** auto | cuda | webgpu | cpu, as asked. */
  providerRequested: string;
  /** The provider in use: cuda | webgpu | cpu. */
  provider: string;
  /** auto: why each better provider was not taken ("cuda: …"). */
  providerNotTaken: string[];
  providerProbes: { provider: string; usable: boolean; reason: string; fp16: boolean; software: boolean }[];
  /** serve --instance-key: what a shared local sidecar was started for ("" otherwise). */
  instanceKey: string;
  pid: number;
  /** Exits after this many seconds with no call open (0 = never). */
  idleTimeoutS: number;
}

export function buildServerInfo(state: {
  models: readonly ServedModel[];
  defaultModel: string;
  /** Per model name, e.g. "CPUExecutionProvider" (empty while loading). */
  providers: ReadonlyMap<string, string>;
  onnxruntimeVersion: string;
  workers: number;
  intraOpThreads: number;
  maxBatchSize: number;
  provider: ProviderChoice;
  instanceKey?: string;
  idleTimeoutS?: number;
}): ServerInfo {
  return {
    models: state.models.map((m) => ({
      name: m.name,
      variant: m.metadata.variant,
      precision: m.metadata.precision,
      patchSize: m.metadata.patchSize,
      summaryDim: m.metadata.summaryDim,
      featureDim: m.metadata.featureDim,
      preferredHeight: m.metadata.resolution.preferred[0],
      preferredWidth: m.metadata.resolution.preferred[1],
      maxResolution: m.metadata.resolution.max,
      resolutionStep: m.metadata.resolution.step,
      windowSize: m.metadata.windowSize ?? 0,
      externalPreprocessor: false,
      sourceRepo: m.metadata.source.repo ?? "",
      sourceRevision: m.metadata.source.revision ?? "",
      executionProvider: state.providers.get(m.name) ?? "",
      adaptors: m.adaptors.map((a) => ({ name: a.name, summaryDim: a.summaryDim, featureDim: a.featureDim, textAligned: m.text?.metadata.space === a.name })),
      text: m.text
        ? {
            space: m.text.metadata.space,
            embedDim: m.text.metadata.embedDim,
            contextLength: m.text.metadata.contextLength,
            logitScale: m.text.metadata.logitScale,
            logitBias: m.text.metadata.logitBias,
            sourceRepo: m.text.metadata.source.repo ?? "",
            sourceRevision: m.text.metadata.source.revision ?? "",
            precision: m.text.metadata.precision,
          }
        : null,
    })),
    defaultModel: state.defaultModel,
    serverVersion: PRODUCT.version,
    onnxruntimeVersion: state.onnxruntimeVersion,
    workers: state.workers,
    intraOpThreads: state.intraOpThreads,
    maxBatchSize: state.maxBatchSize,
    providerRequested: state.provider.requested,
    provider: state.provider.provider,
    providerNotTaken: state.provider.notTaken,
    providerProbes: state.provider.probes.map((p) => ({ provider: p.provider, usable: p.usable, reason: p.reason, fp16: p.fp16, software: p.software })),
    instanceKey: state.instanceKey ?? "",
    pid: process.pid,
    idleTimeoutS: state.idleTimeoutS ?? 0,
  };
}

/** ORT's names for the providers. */
export function providerName(p: ExecutionProvider): string {
  return { cpu: "CPUExecutionProvider", cuda: "CUDAExecutionProvider", webgpu: "WebGpuExecutionProvider" }[p];
}
