// Tasks for the postprocess workers: one image's NLC features, or its share of the graph's heatmap
// outputs (transferred copies), in; one output tensor (transferred) out.
import { heatmapArrays } from "../runtime/protocol.js";
import type { HeatmapSource, HeatmapSpec, OutputTensor } from "./outputs.js";

export type PostprocessTask =
  | { op: "features_nchw"; nlc: Float32Array; gridHeight: number; gridWidth: number; channels: number }
  | {
      op: "heatmap";
      source: HeatmapSource;
      gridHeight: number;
      gridWidth: number;
      spec: HeatmapSpec;
      originalHeight: number;
      originalWidth: number;
    };

export type { OutputTensor };

/** The buffers a task hands over to its worker (each a copy of the sender's, so transferred, not copied again). */
export function taskBuffers(t: PostprocessTask): ArrayBuffer[] {
  if (t.op === "features_nchw") return [t.nlc.buffer as ArrayBuffer];
  if ("nlc" in t.source) return [t.source.nlc.buffer as ArrayBuffer];
  return heatmapArrays(t.source.device).map((a) => a.buffer as ArrayBuffer);
}
