// The probe's child process: `node provider-probe.js <cpu|cuda|webgpu>` creates and runs the probe
// graphs (fp32, then fp16) on that execution provider and prints one JSON line (ProbeChildResult).
// providers.ts runs it in a child, not in its own process, because onnxruntime says which library
// failed to load only in its native log on stderr; because a GPU driver that crashes or hangs must
// not take the caller with it; and because a CUDA or Dawn context, once made, lives as long as the
// process.
import * as ort from "onnxruntime-node";
import { probeGraph } from "./probe-graphs.js";

export interface ProbeAttempt {
  ok: boolean;
  /** onnxruntime's message when !ok. */
  error?: string;
}

export interface ProbeChildResult {
  provider: string;
  fp32: ProbeAttempt;
  /** Absent when fp32 failed (the provider is unusable anyway). */
  fp16?: ProbeAttempt;
  ms: number;
}

async function attempt(provider: string, precision: "fp32" | "fp16"): Promise<ProbeAttempt> {
  const g = probeGraph(precision);
  try {
    const session = await ort.InferenceSession.create(g.bytes, { executionProviders: provider === "cpu" ? ["cpu"] : [provider, "cpu"] });
    const out = await session.run({ [g.input.name]: new ort.Tensor("float32", g.input.data, g.input.dims) });
    const y = out[g.output.name]!.data as Float32Array;
    await session.release();
    const wrong = g.output.expected.findIndex((v, i) => y[i] !== v);
    if (wrong >= 0) return { ok: false, error: `the probe graph gave wrong results (element ${wrong}: ${y[wrong]}, expected ${g.output.expected[wrong]})` };
    return { ok: true };
  } catch (err) {
    return { ok: false, error: err instanceof Error ? err.message : String(err) };
  }
}

const provider = process.argv[2] ?? "";
const t0 = performance.now();
const fp32 = await attempt(provider, "fp32");
const result: ProbeChildResult = { provider, fp32, ...(fp32.ok ? { fp16: await attempt(provider, "fp16") } : {}), ms: 0 };
result.ms = Math.round(performance.now() - t0);
process.stdout.write(`${JSON.stringify(result)}\n`, () => process.exit(0)); // exit even if a GPU runtime left threads behind
