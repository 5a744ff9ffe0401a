// `providers`: what `serve --provider` would find on this host, as JSON (each provider probed in a child process).
import { type Command, Option } from "commander";
import { PROVIDER_REQUESTS, PROVIDERS, type ProviderRequest } from "../runtime/providers.js";
import type { Precision } from "./args.js";

export function addProvidersCommand(program: Command): void {
  program
    .command("providers")
    .description(
      "probe the execution providers (cuda, webgpu, cpu), each in a child process: usable or why not, fp16 support, and the one serve --provider would take with the graph precision it wants; JSON on stdout (exit 1 when an explicit --provider cannot be used)",
    )
    .addOption(
      new Option("--provider <ep>", "what serve would be asked for: auto probes all three; an explicit one only itself")
        .choices([...PROVIDER_REQUESTS])
        .default("auto"),
    )
    .addOption(
      new Option("--precision <p>", "precision of the graphs to be served, if known: int8 runs on cpu only, fp16 needs fp16 kernels").choices([
        "fp32",
        "fp16",
        "int8",
      ]),
    )
    .action(async (options: { provider: ProviderRequest; precision?: Precision }) => {
      const { chooseProvider, probeProviders, ProviderUnavailableError } = await import("../runtime/providers.js");
      const probes = await probeProviders(options.provider === "auto" ? PROVIDERS : [options.provider]);
      let choice = null;
      let error: string | null = null;
      try {
        choice = chooseProvider(options.provider, probes, options.precision ? [options.precision] : []);
      } catch (err) {
        if (!(err instanceof ProviderUnavailableError)) throw err;
        error = err.message;
      }
      const report = {
        requested: options.provider,
        chosen: choice?.provider ?? null,
        precision: choice?.precision ?? null,
        notTaken: choice?.notTaken ?? [],
        error,
        providers: probes,
      };
      process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
      if (error) process.exitCode = 1;
    });
}
