/**
 * onnxruntime's WebGPU provider (Dawn over Vulkan) on SwiftShader, the CPU Vulkan driver: the tiny
 * fp32 graph agrees with the CPU provider, bare and through the sidecar over gRPC. This is the
 * webgpu path CI can run without a GPU (SwiftShader has no shader-f16, so fp32 graphs only).
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";

import { loadGraph, runGraph, type GraphOutputs, type LoadedGraph } from "../../server/src/runtime/session.js";
import { batchOf, compileTinyModel, floats, randomPixels, rawUint8, startTestServer, tempDir, type TestServer } from "./support/server.js";
import { SWIFTSHADER_ICD, swiftshaderMissing } from "./support/swiftshader.js";

const skip = swiftshaderMissing();
// Before the first WebGPU session: Dawn's Vulkan instance reads it once per process (and node:test
// runs each test file in its own process). The sidecar's provider probe inherits it.
if (!skip) process.env.VK_ICD_FILENAMES = SWIFTSHADER_ICD;

// SwiftShader is ~600× slower than the CPU provider: small images, no warm-up at 512².
const [B, H, W] = [2, 64, 96];
const MIN_COSINE = 0.99999;
const MAX_REL_L2 = 1e-5;

function agreement(got: ArrayLike<number>, want: ArrayLike<number>): { cosine: number; relL2: number } {
  assert.equal(got.length, want.length);
  let dot = 0;
  let gg = 0;
  let ww = 0;
  let dd = 0;
  for (let i = 0; i < want.length; i++) {
    const g = got[i]!;
    const w = want[i]!;
    dot += g * w;
    gg += g * g;
    ww += w * w;
    dd += (g - w) * (g - w);
  }
  return { cosine: dot / Math.sqrt(gg * ww), relL2: Math.sqrt(dd / ww) };
}

function assertAgrees(what: string, got: ArrayLike<number>, want: ArrayLike<number>, report: (s: string) => void): void {
  const a = agreement(got, want);
  report(`${what}: cosine ${a.cosine.toPrecision(15)}, relative L2 ${a.relL2.toExponential(2)}`);
  assert.ok(a.cosine >= MIN_COSINE, `${what}: cosine ${a.cosine} < ${MIN_COSINE}`);
  assert.ok(a.relL2 <= MAX_REL_L2, `${what}: relative L2 ${a.relL2} > ${MAX_REL_L2}`);
}

describe("WebGPU (SwiftShader) agrees with the CPU provider", { skip }, () => {
  const tmp = tempDir();
  let graph: string;
  let cpu: LoadedGraph;
  let want: GraphOutputs;
  const images = Array.from({ length: B }, (_, i) => randomPixels(H, W, 11 + i));
  const pixels = batchOf(images);

  before(async () => {
    graph = await compileTinyModel(tmp.dir);
    cpu = await loadGraph(graph, { provider: "cpu", intraOpThreads: 1 });
    want = await runGraph(cpu, pixels, [B, H, W, 3]);
  });
  after(() => tmp.cleanup());

  it("bare onnxruntime session: summary and features", async (t) => {
    const webgpu = await loadGraph(graph, { provider: "webgpu" });
    assert.equal(webgpu.provider, "webgpu");
    const got = await runGraph(webgpu, pixels, [B, H, W, 3]);
    await webgpu.session.release();
    assert.deepEqual(got.summaryDims, want.summaryDims);
    assert.deepEqual(got.featureDims, want.featureDims);
    assertAgrees("bare summary", got.summary, want.summary, (s) => t.diagnostic(s));
    assertAgrees("bare features", got.features, want.features, (s) => t.diagnostic(s));
  });

  it("through the sidecar over gRPC (--provider webgpu): summary and features, Info says webgpu", async (t) => {
    let ts: TestServer | null = null;
    try {
      ts = await startTestServer({ graphs: [{ name: "tiny", dir: graph }], provider: "webgpu", warmup: false, threads: 1 }, tmp.dir);
      const info = await ts.client.info();
      assert.equal(info.provider, "webgpu");
      assert.equal(info.providerRequested, "webgpu");
      assert.equal((info.graphs as { executionProvider: string }[])[0]!.executionProvider, "WebGpuExecutionProvider");
      assert.equal(info.maxBatchSize, 32, "GPU providers batch up to 32 by default");
      const probes = info.providerProbes as { provider: string; usable: boolean; software: boolean; fp16: boolean }[];
      assert.deepEqual(
        probes.map((p) => [p.provider, p.usable, p.software, p.fp16]),
        [["webgpu", true, true, false]],
      );

      const call = (output: "SUMMARY" | "FEATURES_NLC") =>
        ts!.client.embed({ images: images.map((im, i) => rawUint8(`img${i}`, im, H, W)), options: { output, resolution: "native" } }).done;
      const summary = await call("SUMMARY");
      const features = await call("FEATURES_NLC");
      const cat = (rs: typeof summary) => {
        const parts = rs.map((r) => floats(r.output!.tensor));
        const out = new Float32Array(parts.reduce((n, p) => n + p.length, 0));
        let o = 0;
        for (const p of parts) out.set(p, o), (o += p.length);
        return out;
      };
      assertAgrees("sidecar summary", cat(summary), want.summary, (s) => t.diagnostic(s));
      assertAgrees("sidecar features", cat(features), want.features, (s) => t.diagnostic(s));
    } finally {
      await ts?.close();
    }
  });
});
