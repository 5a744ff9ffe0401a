// A postprocess worker thread: heatmaps (clip + PCA + smoothing + resize: ~30–40 ms for 1280×32×32,
// ~50–60 ms for PCA3; bench/heatmap_speed.ts) and NCHW transposes run here, so they neither block the main thread (gRPC I/O,
// decoding) nor the inference worker (the accelerator would idle meanwhile).
import { move, transferableSymbol, valueSymbol } from "piscina";
import type { PostprocessTask } from "./protocol.js";
import { runPostprocessTask } from "./run-task.js";
import { nameThisThread } from "../thread-name.js";

nameThisThread("radio-post");

export default function postprocess(task: PostprocessTask): unknown {
  const out = runPostprocessTask(task);
  return move({ [transferableSymbol]: [out.data.buffer], [valueSymbol]: out } as never);
}
