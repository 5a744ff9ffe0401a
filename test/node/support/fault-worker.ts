// Tests only: the inference worker (server/src/runtime/worker.ts) with faults injected, run instead of
// it through serve's `workerModule` option (this file's URL; test files must not import it: importing
// the worker loads models). The real worker has no fault code. The RADIO_TEST_WORKER_* variables are
// set in the test process before the pool starts (replacement workers read them too): a worker
// given an image batch of this height exits (as a crashed worker would), hangs forever, stalls
// ("HEIGHT:MS"), or grows its JS heap until it runs out of memory.
import infer from "../../../server/src/runtime/worker.js";

const exitOnHeight = Number(process.env.RADIO_TEST_WORKER_EXIT_ON_HEIGHT ?? 0);
const hangOnHeight = Number(process.env.RADIO_TEST_WORKER_HANG_ON_HEIGHT ?? 0);
const [slowOnHeight, slowMs] = (process.env.RADIO_TEST_WORKER_SLOW_ON_HEIGHT ?? "0:0").split(":").map(Number) as [number, number];
const oomOnHeight = Number(process.env.RADIO_TEST_WORKER_OOM_ON_HEIGHT ?? 0);

function injectFault(height: number): void {
  if (exitOnHeight > 0 && height === exitOnHeight) process.exit(70);
  if (hangOnHeight > 0 && height === hangOnHeight) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0);
  if (slowOnHeight > 0 && height === slowOnHeight) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, slowMs);
  if (oomOnHeight > 0 && height === oomOnHeight) {
    const hoard: number[][] = [];
    for (;;) hoard.push(new Array(1 << 16).fill(hoard.length));
  }
}

type Task = Parameters<typeof infer>[0];

export default async function faultyInfer(task: Task): Promise<unknown> {
  if (task.kind !== "text") {
    // As the real worker does first, so that the pool's timeout counts from here.
    if (task.started) Atomics.store(task.started, 0, BigInt(Date.now()));
    injectFault(task.dims[1]!); // [B, H, W, 3]
  }
  return infer(task);
}
