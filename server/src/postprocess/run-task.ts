// One postprocess task, wherever it runs (a postprocess worker, or the main thread when the pool has
// no threads).
import { heatmapTensor, nchwTensor, type OutputTensor } from "./outputs.js";
import type { PostprocessTask } from "./protocol.js";

export function runPostprocessTask(t: PostprocessTask): OutputTensor {
  if (t.op === "features_nchw") return nchwTensor(t.nlc, t.gridHeight, t.gridWidth, t.channels);
  return heatmapTensor(t.source, t.gridHeight, t.gridWidth, t.spec, t.originalHeight, t.originalWidth);
}
