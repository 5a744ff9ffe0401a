// Which execution provider runs the graphs, decided in this one place. A probe per provider (a child
// process, see provider-probe.ts) says whether it is usable and, if not, why and what to do. "auto"
// takes cuda if its provider loads, else webgpu on a GPU adapter, else cpu, and says why the better
// ones were not taken. An explicit provider never falls back: it is used or the caller gets the
// probe's reason.
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, extname, join } from "node:path";
import { fileURLToPath } from "node:url";
import type { ExecutionProvider } from "./session.js";
import { vulkanDrivers } from "./vulkan-drivers.js";
import type { ProbeChildResult } from "./provider-probe.js";

/** Best first: the order auto tries them in. */
export const PROVIDERS = ["cuda", "webgpu", "cpu"] as const satisfies readonly ExecutionProvider[];
export const PROVIDER_REQUESTS = ["auto", ...PROVIDERS] as const;
export type ProviderRequest = (typeof PROVIDER_REQUESTS)[number];
export type GraphPrecision = "fp32" | "fp16" | "int8";

export interface ProviderStatus {
  provider: ExecutionProvider;
  usable: boolean;
  /** Why it is not usable, or (webgpu on a software driver) why auto passes it over; "" otherwise. */
  reason: string;
  /** Runs fp16 kernels (webgpu: the adapter has shader-f16). */
  fp16: boolean;
  /** Why not, when usable and !fp16. */
  fp16Reason: string;
  /** webgpu: every Vulkan driver found implements Vulkan on the CPU (SwiftShader, lavapipe). */
  software: boolean;
  /** What the probe saw (onnxruntime's message, driver files): for logs and bug reports. */
  detail: string;
  ms: number;
}

export interface ProviderChoice {
  requested: ProviderRequest;
  provider: ExecutionProvider;
  /** The graph precision this provider wants: fp16 on cuda, on webgpu with shader-f16; else fp32. */
  precision: "fp16" | "fp32";
  /** Why each better provider was not taken ("cuda: …"); empty for an explicit provider. */
  notTaken: string[];
  /** What was probed (nothing for an explicit cpu). */
  probes: ProviderStatus[];
}

/** An explicitly requested provider cannot run here (or cannot run these graphs). */
export class ProviderUnavailableError extends Error {
  override readonly name = "ProviderUnavailableError";
  constructor(
    message: string,
    readonly status: ProviderStatus | null,
  ) {
    super(message);
  }
}

export const SETUP_HINT =
  'run scripts/setup.sh on this GPU host, let the zoo\'s first load_model set it up, or run python -m client.cuda_provider install (README, "GPU: installing the CUDA provider")';
const PROBE_TIMEOUT_MS = 60_000;

/** Where onnxruntime-node keeps libonnxruntime.so.1, and so where it looks for provider libraries. */
export function onnxruntimeBinDir(): string {
  const index = createRequire(import.meta.url).resolve("onnxruntime-node");
  return join(dirname(index), "..", "bin", "napi-v6", process.platform, process.arch);
}

function cudaProviderFiles(): string[] {
  if (process.platform === "win32") return ["onnxruntime_providers_shared.dll", "onnxruntime_providers_cuda.dll"];
  return ["libonnxruntime_providers_shared.so", "libonnxruntime_providers_cuda.so"];
}

// biome-ignore lint/suspicious/noControlCharactersInRegex: ANSI colour codes start with ESC
const stripAnsi = (s: string): string => s.replace(/\x1b\[[0-9;]*m/g, "");
const firstLine = (s: string): string => s.trim().split("\n", 1)[0] ?? "";

/** Why the CUDA provider failed, from onnxruntime's error and its native log (stderr). */
export function explainCudaFailure(error: string, stderr: string): string {
  const text = `${error}\n${stderr}`;
  const missing = /with error: (?:\S*\/)?([^\s/:]+): cannot open shared object file/.exec(text)?.[1];
  if (missing === "libcuda.so.1") return "no NVIDIA driver: libcuda.so.1, which comes with the driver (never from pip), was not found";
  if (missing) {
    return `the CUDA provider needs ${missing}, which is not on the library path: install the CUDA 13 and cuDNN 9 pip wheels (${SETUP_HINT}) and start the sidecar with their lib folders on LD_LIBRARY_PATH (the zoo does that itself)`;
  }
  if (/stub library|CUDA failure 34\b|cudaErrorStubLibrary/i.test(text)) return "no NVIDIA driver: libcuda.so.1 found is the CUDA toolkit's stub, not a driver";
  if (/driver version is insufficient|CUDA failure 35\b|cudaErrorInsufficientDriver/i.test(text)) {
    return "the NVIDIA driver is too old for this CUDA 13 build of the provider: update it (CUDA 13 needs driver 580 or newer)";
  }
  if (/no CUDA-capable device|CUDA failure 100\b|cudaErrorNoDevice/i.test(text))
    return "no CUDA device: the driver reports none (check nvidia-smi and CUDA_VISIBLE_DEVICES)";
  const log = /\[E:onnxruntime[^\]]*\]\s*(.*)/.exec(stderr)?.[1];
  return `the CUDA provider failed to start: ${firstLine(error)}${log ? ` (${log.trim()})` : ""}`;
}

/** Why the WebGPU provider failed, from onnxruntime's error and Dawn's/the Vulkan loader's messages. */
function explainWebgpuFailure(error: string, stderr: string, env: NodeJS.ProcessEnv = process.env): string {
  const text = `${error}\n${stderr}`;
  if (/Found no drivers|VK_ERROR_INCOMPATIBLE_DRIVER/.test(text)) {
    return "no Vulkan driver: onnxruntime's WebGPU (Dawn over Vulkan) needs the GPU's Vulkan driver (NVIDIA: the driver's Vulkan ICD; AMD/Intel: Mesa's) and the Vulkan loader (Debian: libvulkan1)";
  }
  if (/libvulkan\.so|Couldn't load Vulkan|Failed to load Vulkan/i.test(text))
    return "no Vulkan loader: install libvulkan.so.1 (Debian: libvulkan1) and the GPU's Vulkan driver";
  if (/No supported adapters|Failed to get a WebGPU adapter/i.test(text)) {
    const drivers = vulkanDrivers(env).map((d) => d.library);
    return `no WebGPU adapter: Dawn found no Vulkan device it supports (Vulkan drivers: ${drivers.length ? drivers.join(", ") : "none found"})`;
  }
  return `the WebGPU provider failed to start: ${firstLine(error)}`;
}

interface ChildRun {
  result: ProbeChildResult | null;
  stderr: string;
  /** Why there is no result (crash, timeout, bad output). */
  failure: string;
}

/** Runs provider-probe in a child node process (from TypeScript source under tsx in tests). */
function runChild(provider: ExecutionProvider, env: NodeJS.ProcessEnv, timeoutMs: number): Promise<ChildRun> {
  const self = fileURLToPath(import.meta.url);
  const ts = extname(self) === ".ts";
  const entry = join(dirname(self), `provider-probe${ts ? ".ts" : ".js"}`);
  const args = [...(ts ? ["--import", import.meta.resolve("tsx")] : []), entry, provider];
  return new Promise((resolve) => {
    const child = spawn(process.execPath, args, { env, stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    let err = "";
    child.stdout.on("data", (d: Buffer) => (out += d.toString()));
    child.stderr.on("data", (d: Buffer) => (err += d.toString()));
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill("SIGKILL");
    }, timeoutMs);
    timer.unref();
    child.once("error", (e) => {
      clearTimeout(timer);
      resolve({ result: null, stderr: err, failure: `could not start the probe: ${e.message}` });
    });
    child.once("close", (code, signal) => {
      clearTimeout(timer);
      const stderr = stripAnsi(err);
      const line = out.trim().split("\n").at(-1) ?? "";
      try {
        resolve({ result: JSON.parse(line) as ProbeChildResult, stderr, failure: "" });
      } catch {
        const why = timedOut
          ? `the probe did not finish in ${timeoutMs / 1000} s (a hung driver?)`
          : signal
            ? `the probe crashed (${signal}) while creating a ${provider} session`
            : `the probe exited with code ${code} and no result`;
        resolve({ result: null, stderr, failure: `${why}${stderr.trim() ? `: ${stderr.trim().split("\n").slice(-3).join(" | ")}` : ""}` });
      }
    });
  });
}

export interface ProbeOptions {
  /** The environment the provider libraries are loaded with (default: this process's). */
  env?: NodeJS.ProcessEnv;
  timeoutMs?: number;
}

/** Whether `provider` can run graphs here, and if not, why. */
export async function probeProvider(provider: ExecutionProvider, options: ProbeOptions = {}): Promise<ProviderStatus> {
  const env = options.env ?? process.env;
  const status: ProviderStatus = { provider, usable: false, reason: "", fp16: false, fp16Reason: "", software: false, detail: "", ms: 0 };
  if (provider === "cuda") {
    if (process.platform !== "linux" && process.platform !== "win32") return { ...status, reason: `onnxruntime has no CUDA provider for ${process.platform}` };
    const dir = onnxruntimeBinDir();
    const missing = cudaProviderFiles().filter((f) => !existsSync(join(dir, f)));
    if (missing.length > 0) {
      return {
        ...status,
        reason: `onnxruntime-node's CUDA provider is not installed (${missing.join(" and ")} missing beside libonnxruntime in ${dir}): ${SETUP_HINT}`,
      };
    }
  }
  const t0 = performance.now();
  const run = await runChild(provider, env, options.timeoutMs ?? PROBE_TIMEOUT_MS);
  status.ms = Math.round(performance.now() - t0);
  const r = run.result;
  if (!r) return { ...status, reason: run.failure, detail: run.stderr.trim() };
  if (!r.fp32.ok) {
    const error = r.fp32.error ?? "";
    const reason =
      provider === "cuda"
        ? explainCudaFailure(error, run.stderr)
        : provider === "webgpu"
          ? explainWebgpuFailure(error, run.stderr, env)
          : `the CPU provider failed: ${firstLine(error)}`;
    return { ...status, reason, detail: `${error.trim()}${run.stderr.trim() ? `\n${run.stderr.trim()}` : ""}` };
  }
  status.usable = true;
  status.fp16 = r.fp16?.ok ?? false;
  if (!status.fp16) status.fp16Reason = /requires f16/.test(r.fp16?.error ?? "") ? "the adapter has no shader-f16" : firstLine(r.fp16?.error ?? "no result");
  if (provider === "webgpu") {
    const drivers = vulkanDrivers(env);
    status.software = drivers.length > 0 && drivers.every((d) => d.software);
    status.detail = `Vulkan drivers: ${drivers.map((d) => `${d.library}${d.software ? " (software)" : ""}`).join(", ") || "none found in the loader's folders"}`;
    if (status.software) {
      status.reason = `the only Vulkan driver is a software one (${drivers.map((d) => d.library).join(", ")}), far slower than the CPU provider: auto passes it over; --provider webgpu still uses it`;
    }
  }
  return status;
}

/** Probes the given providers (default: all) side by side, in PROVIDERS order. */
export async function probeProviders(which: readonly ExecutionProvider[] = PROVIDERS, options: ProbeOptions = {}): Promise<ProviderStatus[]> {
  const order = PROVIDERS.filter((p) => which.includes(p));
  return Promise.all(order.map((p) => probeProvider(p, options)));
}

function precisionFor(s: ProviderStatus): "fp16" | "fp32" {
  return s.provider !== "cpu" && s.fp16 ? "fp16" : "fp32";
}

const CPU_STATUS: ProviderStatus = { provider: "cpu", usable: true, reason: "", fp16: true, fp16Reason: "", software: false, detail: "", ms: 0 };

/**
 * Picks the provider from probe results. `precisions`: of the graphs to serve, if known (an int8
 * graph runs on the CPU only; an fp16 graph needs fp16 kernels). Throws ProviderUnavailableError
 * when an explicit provider cannot run them.
 */
export function chooseProvider(requested: ProviderRequest, probes: readonly ProviderStatus[], precisions: readonly GraphPrecision[] = []): ProviderChoice {
  const status = (p: ExecutionProvider): ProviderStatus =>
    probes.find((s) => s.provider === p) ?? (p === "cpu" ? CPU_STATUS : { ...CPU_STATUS, provider: p, usable: false, fp16: false, reason: "not probed" });
  // Why `p` cannot run these graphs; "" if it can.
  const cannot = (s: ProviderStatus): string => {
    if (!s.usable) return s.reason;
    if (s.provider !== "cpu" && precisions.includes("int8")) return "int8 graphs run on the CPU provider only (compile an fp16 graph for a GPU)";
    if (precisions.includes("fp16") && !s.fp16) return `it cannot run fp16 graphs (${s.fp16Reason || "no fp16 kernels"}): compile an fp32 graph for it`;
    return "";
  };
  if (requested !== "auto") {
    const s = status(requested);
    const why = cannot(s);
    if (why) {
      throw new ProviderUnavailableError(
        `the ${requested} execution provider was asked for but cannot be used: ${why}. An explicit provider never falls back; ask for auto (or another provider) to run elsewhere`,
        s,
      );
    }
    return { requested, provider: requested, precision: precisionFor(s), notTaken: [], probes: [...probes] };
  }
  const notTaken: string[] = [];
  for (const p of PROVIDERS) {
    const s = status(p);
    const why = cannot(s) || (s.software ? s.reason : "");
    if (!why) return { requested, provider: p, precision: precisionFor(s), notTaken, probes: [...probes] };
    notTaken.push(`${p}: ${why}`);
  }
  // Unreachable unless the CPU provider itself failed its probe.
  throw new ProviderUnavailableError(`no execution provider can run these graphs: ${notTaken.join("; ")}`, null);
}

/** Probes what `requested` needs (nothing for cpu; that provider for an explicit one; all for auto) and chooses. */
export async function resolveProvider(
  requested: ProviderRequest,
  options: ProbeOptions & { precisions?: readonly GraphPrecision[] } = {},
): Promise<ProviderChoice> {
  const probes = requested === "cpu" ? [] : await probeProviders(requested === "auto" ? PROVIDERS : [requested], options);
  return chooseProvider(requested, probes, options.precisions ?? []);
}

/** One line for logs: the choice and why the better providers were not taken. */
export function describeChoice(c: ProviderChoice): string {
  const head = `execution provider: ${c.provider} (${c.requested === "auto" ? "auto" : "asked for"}; ${c.precision} graphs wanted)`;
  return c.notTaken.length ? `${head}; not taken: ${c.notTaken.join("; ")}` : head;
}
