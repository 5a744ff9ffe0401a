// Tasks for the postprocess workers: one image's NLC features (a transferred copy) in, one output
// tensor (transferred) out.
import type { HeatmapSpec, OutputTensor } from "./outputs.js";

export type PostprocessTask =
  | { op: "features_nchw"; nlc: Float32Array; gridHeight: number; gridWidth: number; channels: number }
  | {
      op: "heatmap";
      nlc: Float32Array;
      gridHeight: number;
      gridWidth: number;
      channels: number;
      spec: HeatmapSpec;
      originalHeight: number;
      originalWidth: number;
    };

export type { OutputTensor };
