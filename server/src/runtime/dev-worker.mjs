// Runs a worker module from TypeScript source (tests under `node --import tsx`): on Node 20, worker
// threads do not inherit tsx's loader hooks, so this plain-JS entry registers them and re-exports the
// real module's handler. The built server (server/dist) never uses this file.
import { workerData } from "node:worker_threads";

const { register } = await import("tsx/esm/api");
register();
const mod = await import(workerData.entry);
export default mod.default;
