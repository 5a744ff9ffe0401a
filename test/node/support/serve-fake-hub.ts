// Serves generated checkpoints as Hugging Face repos on loopback, for tests driven from Python:
//   tsx test/node/support/serve-fake-hub.ts nvidia/C-RADIOv4-H=DIR [more repo=dir ...]
// Prints {"endpoint": ...} on stdout when ready; exits when stdin closes or on SIGTERM.
import { FakeHub } from "./fake-hub.js";

const hub = await FakeHub.start();
for (const arg of process.argv.slice(2)) {
  const eq = arg.indexOf("=");
  if (eq < 1) throw new Error(`expected repo=dir, got ${arg}`);
  await hub.addRepoFromDir(arg.slice(0, eq), arg.slice(eq + 1));
}
process.stdout.write(`${JSON.stringify({ endpoint: hub.endpoint })}\n`);
const stop = async () => {
  await hub.close();
  process.exit(0);
};
process.on("SIGTERM", stop);
process.stdin.on("end", stop);
process.stdin.resume();
