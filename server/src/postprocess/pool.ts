// Postprocess thread pool (piscina). threads = 0 runs tasks on the calling thread instead.
import { Piscina } from "piscina";
import { workerEntry } from "../runtime/worker-entry.js";
import type { OutputTensor } from "./outputs.js";
import { type PostprocessTask, taskBuffers } from "./protocol.js";
import { runPostprocessTask } from "./run-task.js";

export class PostprocessPool {
  private readonly piscina: Piscina | null;

  constructor(readonly threads: number) {
    if (threads > 0) {
      const entry = workerEntry("worker", import.meta.url);
      this.piscina = new Piscina({
        filename: entry.filename,
        workerData: { entry: entry.entry },
        minThreads: threads,
        maxThreads: threads,
        atomics: "disabled",
      });
      // A postprocess worker dying fails its task (the image fails as `internal`); piscina replaces it.
      this.piscina.on("error", () => undefined);
    } else {
      this.piscina = null;
    }
  }

  /** The task's buffers are transferred when a worker runs it: pass copies you own. */
  async postprocess(task: PostprocessTask): Promise<OutputTensor> {
    if (!this.piscina) return runPostprocessTask(task);
    return (await this.piscina.run(task, { transferList: taskBuffers(task) })) as OutputTensor;
  }

  async close(): Promise<void> {
    await this.piscina?.destroy();
  }
}
