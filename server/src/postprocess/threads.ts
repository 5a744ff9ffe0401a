// How many postprocess threads (heatmaps, NCHW transposes) a sidecar starts when not told. No heavy
// imports: the CLI quotes this in --help.
//
// A 512² heatmap of H (1280×32×32) costs one thread 39 ms on the H200 host's Xeon cores, 33 CPU-ms
// on this project's EPYC (bench/heatmap_speed.ts), so a thread keeps up with ~18–25 images/s. On a
// CPU that is far above inference's rate (seconds an image for H), and more threads would only take
// cores from inference: 1. On a GPU inference runs at hundreds of images/s, so heatmaps need most
// of the host's cores: all but two, which stay for the main thread (gRPC, decoding hand-off,
// batching) and the inference worker's thread (kernel launches). Measured on the H200 host (16
// cores): 14 threads 179 heatmaps/s, 16 threads 200/s; so even all cores fall short of the GPU's
// ~265+ images/s (docs/benchmarks.md, "Heatmaps"). Idle threads cost memory only (~10 MB each).
import type { ExecutionProvider } from "../runtime/session.js";

export function defaultPostprocessThreads(provider: ExecutionProvider, cores: number): number {
  return provider === "cpu" ? 1 : Math.max(1, cores - 2);
}

/** For --help texts. */
export const POSTPROCESS_THREADS_DEFAULT_TEXT = "1 on cpu, cores - 2 on cuda/webgpu";
