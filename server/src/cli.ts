#!/usr/bin/env node
// radio-sidecar: compile checkpoints into graphs, run graphs on tensors, make test checkpoints, serve.
// One file per command under commands/; this file only assembles them.
import { Command } from "commander";
import { addCompileCommands } from "./commands/compile.js";
import { addFetchCommands } from "./commands/fetch.js";
import { addMakeCheckpointCommand } from "./commands/make-checkpoint.js";
import { addProvidersCommand } from "./commands/providers.js";
import { addRunCommands } from "./commands/run.js";
import { addServeCommand } from "./commands/serve.js";
import { PRODUCT } from "./version.js";

const program = new Command()
  .name("radio-sidecar")
  .description("C-RADIOv4 for FiftyOne: compile Hugging Face checkpoints to ONNX, run and serve them")
  .version(PRODUCT.version);

addCompileCommands(program);
addFetchCommands(program);
addRunCommands(program);
addMakeCheckpointCommand(program);
addProvidersCommand(program);
addServeCommand(program);

program.parseAsync(process.argv).catch((err: unknown) => {
  process.stderr.write(`radio-sidecar: error: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
