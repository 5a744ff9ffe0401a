/**
 * Execution providers: the real probe (child processes creating onnxruntime sessions) for each
 * combination this host can produce, the choice auto makes from it and the reasons it gives, explicit
 * providers failing instead of falling back, and `radio-sidecar providers`.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import path from "node:path";
import { describe, it } from "node:test";

import {
  chooseProvider,
  explainCudaFailure,
  onnxruntimeBinDir,
  probeProvider,
  probeProviders,
  ProviderUnavailableError,
  type ProviderStatus,
} from "../../server/src/runtime/providers.js";
import { CLI } from "./support/sidecar.js";
import { noVulkanEnv, swiftshaderEnv } from "./support/swiftshader.js";

const CUDA_FILES = ["libonnxruntime_providers_shared.so", "libonnxruntime_providers_cuda.so"];
const cudaInstalled = (): boolean => CUDA_FILES.every((f) => existsSync(path.join(onnxruntimeBinDir(), f)));

describe("execution providers: probe", () => {
  it("cuda: without its provider files, not usable, saying how to install them (no child started)", async () => {
    const s = await probeProvider("cuda");
    if (!cudaInstalled()) {
      assert.equal(s.usable, false);
      assert.match(
        s.reason,
        /CUDA provider is not installed \(libonnxruntime_providers_shared\.so and libonnxruntime_providers_cuda\.so missing beside libonnxruntime/,
      );
      assert.match(
        s.reason,
        /scripts\/setup\.sh.*zoo's first load_model.*python -m client\.cuda_provider install \(README, "GPU: installing the CUDA provider"\)$/,
      );
      assert.equal(s.ms, 0);
    } else if (s.usable) {
      assert.equal(s.fp16, true, "CUDA runs fp16");
    } else {
      assert.match(s.reason, /NVIDIA driver|CUDA device|library path|failed to start/, s.reason);
    }
  });

  it("cuda: names the library that did not load, from onnxruntime's native log", () => {
    // onnxruntime's exception says only "Failed to load shared library"; its log (stderr) says which.
    // These are the log lines onnxruntime-node 1.30 printed here, with the PyPI provider beside it.
    const error = "OrtSessionOptionsAppendExecutionProvider_Cuda: Failed to load shared library";
    const log = (lib: string) =>
      `[E:onnxruntime:onnxruntime-node, provider_bridge_ort.cc:2146 Create] /onnxruntime_src/onnxruntime/core/session/provider_bridge_ort.cc:1988 onnxruntime::Provider& onnxruntime::ProviderLibrary::Get() [ONNXRuntimeError] : 1 : FAIL : Failed to load library /x/bin/napi-v6/linux/x64/libonnxruntime_providers_cuda.so with error: ${lib}: cannot open shared object file: No such file or directory`;
    assert.match(
      explainCudaFailure(error, log("libcublasLt.so.13")),
      /^the CUDA provider needs libcublasLt\.so\.13, which is not on the library path: install the CUDA 13 and cuDNN 9 pip wheels/,
    );
    assert.match(explainCudaFailure(error, log("libcuda.so.1")), /^no NVIDIA driver: libcuda\.so\.1/);
    assert.match(explainCudaFailure("CUDA failure 100: no CUDA-capable device is detected", ""), /^no CUDA device/);
    assert.match(explainCudaFailure("CUDA failure 35: CUDA driver version is insufficient for CUDA runtime version", ""), /driver is too old.*580/);
    assert.match(explainCudaFailure("CUDA failure 34: CUDA driver is a stub library", ""), /stub/);
  });

  it("webgpu with no Vulkan driver: not usable, says so", async () => {
    const s = await probeProvider("webgpu", { env: noVulkanEnv() });
    assert.equal(s.usable, false);
    assert.match(s.reason, /^no Vulkan driver: onnxruntime's WebGPU \(Dawn over Vulkan\) needs the GPU's Vulkan driver/);
    assert.match(s.detail, /Found no drivers/);
  });

  it("webgpu on SwiftShader: usable, a software driver, no shader-f16", async (t) => {
    const env = swiftshaderEnv(t);
    if (!env) return;
    const s = await probeProvider("webgpu", { env });
    assert.equal(s.usable, true, s.reason);
    assert.equal(s.software, true);
    assert.equal(s.fp16, false);
    assert.equal(s.fp16Reason, "the adapter has no shader-f16");
    assert.match(s.reason, /only Vulkan driver is a software one \(.*libvk_swiftshader\.so\).*auto passes it over/);
    t.diagnostic(`webgpu probe on SwiftShader: ${s.ms} ms`);
  });

  it("a probe that does not finish is killed and reported (a hung driver cannot hang the server)", async () => {
    const s = await probeProvider("cpu", { timeoutMs: 50 });
    assert.equal(s.usable, false);
    assert.match(s.reason, /^the probe did not finish in 0\.05 s \(a hung driver\?\)/);
  });

  it("cpu: usable", async () => {
    const [s] = await probeProviders(["cpu"]);
    assert.equal(s!.usable, true);
    assert.equal(s!.reason, "");
  });
});

describe("execution providers: choice", () => {
  it("auto with no Vulkan driver: cpu, fp32, saying why cuda and webgpu were not taken", async (t) => {
    const probes = await probeProviders(undefined, { env: noVulkanEnv() });
    assert.deepEqual(
      probes.map((p) => p.provider),
      ["cuda", "webgpu", "cpu"],
    );
    if (probes[0]!.usable) return t.skip("CUDA is usable here: auto takes it (the GPU-host table below covers that)");
    const c = chooseProvider("auto", probes);
    assert.equal(c.provider, "cpu");
    assert.equal(c.precision, "fp32");
    assert.equal(c.notTaken.length, 2);
    assert.match(c.notTaken[0]!, /^cuda: /);
    assert.match(c.notTaken[1]!, /^webgpu: no Vulkan driver/);
  });

  it("auto with SwiftShader: cpu, not the software adapter; an explicit webgpu takes it (fp32 graphs only)", async (t) => {
    const env = swiftshaderEnv(t);
    if (!env) return;
    const probes = await probeProviders(undefined, { env });
    if (probes[0]!.usable) return t.skip("CUDA is usable here: auto takes it");
    const auto = chooseProvider("auto", probes);
    assert.equal(auto.provider, "cpu");
    assert.match(auto.notTaken[1]!, /^webgpu: the only Vulkan driver is a software one/);

    const webgpu = chooseProvider("webgpu", probes, ["fp32"]);
    assert.equal(webgpu.provider, "webgpu");
    assert.equal(webgpu.precision, "fp32", "no shader-f16: fp32 graphs");
    assert.throws(
      () => chooseProvider("webgpu", probes, ["fp16"]),
      /webgpu execution provider was asked for but cannot be used: it cannot run fp16 graphs \(the adapter has no shader-f16\): compile an fp32 graph/,
    );
    assert.throws(() => chooseProvider("webgpu", probes, ["int8"]), /int8 graphs run on the CPU provider only/);
  });

  it("an explicit cuda never falls back: it fails with the probe's reason", async (t) => {
    const probes = await probeProviders(["cuda"]);
    if (probes[0]!.usable) return t.skip("CUDA is usable here");
    assert.throws(
      () => chooseProvider("cuda", probes),
      (err: unknown) =>
        err instanceof ProviderUnavailableError &&
        /^the cuda execution provider was asked for but cannot be used: .*never falls back/.test(err.message) &&
        err.message.includes(probes[0]!.reason),
    );
  });

  it("a forced cpu probes nothing and takes fp32", () => {
    const c = chooseProvider("cpu", []);
    assert.deepEqual(
      { provider: c.provider, precision: c.precision, notTaken: c.notTaken, probes: c.probes },
      { provider: "cpu", precision: "fp32", notTaken: [], probes: [] },
    );
  });

  it("auto's order on GPU hosts (statuses as such hosts report them)", () => {
    const st = (provider: ProviderStatus["provider"], o: Partial<ProviderStatus>): ProviderStatus => ({
      provider,
      usable: true,
      reason: "",
      fp16: true,
      fp16Reason: "",
      software: false,
      detail: "",
      ms: 1,
      ...o,
    });
    const noCuda = st("cuda", { usable: false, reason: "no NVIDIA driver" });
    const cpu = st("cpu", {});
    const pick = (probes: ProviderStatus[], precisions: ("fp32" | "fp16" | "int8")[] = []) => {
      const c = chooseProvider("auto", probes, precisions);
      return `${c.provider}/${c.precision}`;
    };
    assert.equal(pick([st("cuda", {}), st("webgpu", {}), cpu]), "cuda/fp16");
    assert.equal(pick([noCuda, st("webgpu", {}), cpu]), "webgpu/fp16");
    assert.equal(pick([noCuda, st("webgpu", { fp16: false, fp16Reason: "the adapter has no shader-f16" }), cpu]), "webgpu/fp32");
    assert.equal(pick([noCuda, st("webgpu", { fp16: false, fp16Reason: "the adapter has no shader-f16" }), cpu], ["fp16"]), "cpu/fp32");
    assert.equal(pick([st("cuda", {}), st("webgpu", {}), cpu], ["int8"]), "cpu/fp32");
  });
});

describe("radio-sidecar providers", () => {
  it("prints each provider's status, the choice and the precision it wants", () => {
    const r = spawnSync(process.execPath, [...CLI, "providers"], { env: noVulkanEnv(), encoding: "utf8", timeout: 120_000 });
    assert.equal(r.status, 0, r.stderr);
    const report = JSON.parse(r.stdout) as {
      requested: string;
      chosen: string;
      precision: string;
      notTaken: string[];
      providers: ProviderStatus[];
      error: string | null;
    };
    assert.equal(report.requested, "auto");
    assert.deepEqual(
      report.providers.map((p) => p.provider),
      ["cuda", "webgpu", "cpu"],
    );
    assert.equal(report.error, null);
    if (!report.providers[0]!.usable) {
      assert.equal(report.chosen, "cpu");
      assert.equal(report.precision, "fp32");
      assert.equal(report.notTaken.length, 2);
    }
  });

  it("exits 1 with the reason when an explicit provider cannot be used", () => {
    const r = spawnSync(process.execPath, [...CLI, "providers", "--provider", "webgpu"], { env: noVulkanEnv(), encoding: "utf8", timeout: 120_000 });
    assert.equal(r.status, 1, r.stderr);
    const report = JSON.parse(r.stdout) as { chosen: string | null; error: string; providers: ProviderStatus[] };
    assert.equal(report.chosen, null);
    assert.deepEqual(
      report.providers.map((p) => p.provider),
      ["webgpu"],
    );
    assert.match(report.error, /^the webgpu execution provider was asked for but cannot be used: no Vulkan driver/);
  });
});
