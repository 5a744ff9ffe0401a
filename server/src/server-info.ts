// What the server has loaded and how it runs: the Info RPC and GET /v1/info return this (fields
// named as in proto3 JSON, i.e. radio.v1.InfoResponse in lowerCamelCase).
import type { ServedGraph } from "./pipeline/graphs.js";
import type { ExecutionProvider } from "./runtime/session.js";
import type { ProviderChoice } from "./runtime/providers.js";
import { PRODUCT } from "./version.js";

export interface GraphInfo {
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
  sourceRepo: string;
  sourceRevision: string;
  executionProvider: string;
  adaptors: { name: string; summaryDim: number; featureDim: number; textAligned: boolean }[];
  /** Null: the graph embeds no text. */
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
  graphs: GraphInfo[];
  defaultGraph: string;
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
  graphs: readonly ServedGraph[];
  defaultGraph: string;
  /** Per graph name, e.g. "CPUExecutionProvider" (empty while loading). */
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
    graphs: state.graphs.map((graph) => ({
      name: graph.name,
      variant: graph.metadata.variant,
      precision: graph.metadata.precision,
      patchSize: graph.metadata.patchSize,
      summaryDim: graph.metadata.summaryDim,
      featureDim: graph.metadata.featureDim,
      preferredHeight: graph.metadata.resolution.preferred[0],
      preferredWidth: graph.metadata.resolution.preferred[1],
      maxResolution: graph.metadata.resolution.max,
      resolutionStep: graph.metadata.resolution.step,
      windowSize: graph.metadata.windowSize ?? 0,
      sourceRepo: graph.metadata.source.repo ?? "",
      sourceRevision: graph.metadata.source.revision ?? "",
      executionProvider: state.providers.get(graph.name) ?? "",
      adaptors: graph.adaptors.map((a) => ({
        name: a.name,
        summaryDim: a.summaryDim,
        featureDim: a.featureDim,
        textAligned: graph.text?.metadata.space === a.name,
      })),
      text: graph.text
        ? {
            space: graph.text.metadata.space,
            embedDim: graph.text.metadata.embedDim,
            contextLength: graph.text.metadata.contextLength,
            logitScale: graph.text.metadata.logitScale,
            logitBias: graph.text.metadata.logitBias,
            sourceRepo: graph.text.metadata.source.repo ?? "",
            sourceRevision: graph.text.metadata.source.revision ?? "",
            precision: graph.text.metadata.precision,
          }
        : null,
    })),
    defaultGraph: state.defaultGraph,
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
