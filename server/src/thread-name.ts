// Names the calling thread (Linux: /proc/thread-self/comm, at most 15 bytes), so `top -H`, `ps -L`
// and per-thread CPU accounting (bench/cpu_per_image.py) can tell the sidecar's threads apart.
// Threads this one creates afterwards inherit the name: onnxruntime's intra-op threads, created
// with the session in an inference worker, are counted with that worker. Best effort: elsewhere,
// or if procfs is not writable, nothing happens.
import { writeFileSync } from "node:fs";

export function nameThisThread(name: string): boolean {
  if (process.platform !== "linux") return false;
  try {
    // A sync write runs on the calling thread, so thread-self is this thread.
    writeFileSync("/proc/thread-self/comm", Buffer.from(name, "utf8").subarray(0, 15));
    return true;
  } catch {
    return false;
  }
}
