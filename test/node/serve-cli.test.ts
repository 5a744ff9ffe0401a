/**
 * `radio-sidecar serve` as a parent process sees it: flags and RADIO_* env, the one JSON "ready"
 * line on stdout, a private unix socket, and SIGTERM finishing in-flight work before exit 0.
 */
import assert from "node:assert/strict";
import { spawn, spawnSync, type ChildProcessWithoutNullStreams } from "node:child_process";
import http from "node:http";
import { existsSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { createInterface } from "node:readline";

import sharp from "sharp";

import { noiseRaw } from "./support/images.js";
import { compileTinyModel, RadioClient, tempDir } from "./support/server.js";

const SRC = path.resolve(import.meta.dirname, "../../server/src");
const DIST_CLI = path.resolve(import.meta.dirname, "../../server/dist/cli.js");

/** The built CLI when it is newer than every source file (much faster to start), else the source under tsx. */
function cliCommand(): string[] {
  const newest = (dir: string): number =>
    Math.max(
      0,
      ...readdirSync(dir, { withFileTypes: true }).map((e) => (e.isDirectory() ? newest(path.join(dir, e.name)) : statSync(path.join(dir, e.name)).mtimeMs)),
    );
  if (existsSync(DIST_CLI) && statSync(DIST_CLI).mtimeMs >= newest(SRC)) return [DIST_CLI];
  return ["--import", "tsx", path.join(SRC, "cli.ts")];
}
const CLI = cliCommand();

interface Spawned {
  proc: ChildProcessWithoutNullStreams;
  ready: Promise<Record<string, unknown>>;
  exit: Promise<number | null>;
  stderr: () => string;
}

function spawnServe(args: string[], env: Record<string, string> = {}): Spawned {
  const proc = spawn(process.execPath, [...CLI, "serve", ...args], {
    env: { ...process.env, RADIO_LOG_LEVEL: "warn", ...env },
    stdio: ["pipe", "pipe", "pipe"],
  });
  let err = "";
  proc.stderr.on("data", (d: Buffer) => (err += d.toString()));
  const lines = createInterface({ input: proc.stdout });
  const exit = new Promise<number | null>((r) => proc.once("exit", (code) => r(code)));
  const ready = new Promise<Record<string, unknown>>((resolve, reject) => {
    lines.once("line", (l) => resolve(JSON.parse(l) as Record<string, unknown>));
    void exit.then((code) => reject(new Error(`serve exited (${code}) before ready:\n${err}`)));
  });
  ready.catch(() => undefined);
  return { proc, ready, exit, stderr: () => err };
}

describe("radio-sidecar serve (CLI)", () => {
  const tmp = tempDir();
  let graph: string;
  let png: Buffer;

  before(async () => {
    graph = await compileTinyModel(tmp.dir);
    png = await sharp(noiseRaw(64, 64, 1), { raw: { width: 64, height: 64, channels: 3 } })
      .png()
      .toBuffer();
    writeFileSync(path.join(tmp.dir, "a.png"), png);
  });
  after(() => tmp.cleanup());

  it("prints one ready line, listens on a private socket, and drains on SIGTERM before exiting 0", async () => {
    const sockDir = path.join(tmp.dir, "run", "sock"); // does not exist yet: created 0700
    const socket = path.join(sockDir, "radio.sock");
    const s = spawnServe(["--socket", socket, "--graph", `tiny=${graph}`, "--http-port", "auto", "--max-batch", "4"], {
      RADIO_ALLOWED_ROOT: tmp.dir,
      RADIO_QUEUE_DELAY_MS: "2",
    });
    const ready = await s.ready;
    assert.equal(ready.event, "ready");
    assert.equal(ready.socket, socket);
    assert.equal(ready.grpcPort, null);
    assert.equal(typeof ready.httpPort, "number");
    assert.deepEqual(ready.graphs, ["tiny"]);
    assert.equal(statSync(socket).mode & 0o777, 0o600, "socket is owner-only");
    assert.equal(statSync(sockDir).mode & 0o777, 0o700, "socket dir is owner-only");

    const c = new RadioClient(`unix:${socket}`);
    try {
      assert.equal(await c.healthCheck(""), "SERVING");
      const info = await c.info();
      assert.equal(info.maxBatchSize, 4);
      // A path input under the root given by env, while the call below is in flight, SIGTERM.
      const inflight = c.embed({
        images: Array.from({ length: 12 }, (_, i) => ({ id: `p${i}`, path: path.join(tmp.dir, "a.png") })),
        options: { resolution: "256x256" },
      });
      await inflight.first;
      s.proc.kill("SIGTERM");
      const results = await inflight.done;
      assert.equal(results.length, 12);
      assert.ok(
        results.every((r) => r.output),
        "in-flight images all finished",
      );
      assert.equal(await s.exit, 0, s.stderr());
      assert.equal(existsSync(socket), false, "socket removed");
    } finally {
      c.close();
      s.proc.kill("SIGKILL");
    }
  });

  it("--idle-timeout-s: a held health Watch keeps it up; with no call open it exits 0 on its own; --instance-key and --http-socket", async () => {
    const sockDir = path.join(tmp.dir, "idle");
    const socket = path.join(sockDir, "k.sock");
    const httpSocket = path.join(sockDir, "k.http.sock");
    const s = spawnServe(["--socket", socket, "--http-socket", httpSocket, "--graph", `tiny=${graph}`, "--instance-key", "abc123", "--idle-timeout-s", "1"], {
      RADIO_LOG_LEVEL: "info",
    });
    try {
      const ready = await s.ready;
      assert.equal(ready.httpSocket, httpSocket);
      assert.equal(statSync(httpSocket).mode & 0o777, 0o600, "the HTTP socket is owner-only");
      const c = new RadioClient(`unix:${socket}`);
      const info = await c.info();
      assert.equal(info.instanceKey, "abc123");
      assert.equal(info.pid, s.proc.pid);
      assert.equal(info.idleTimeoutS, 1);
      const lease = c.watchHealth();
      await lease.next("SERVING");
      // Held for three idle timeouts: still serving.
      await new Promise((r) => setTimeout(r, 3000));
      assert.equal(s.proc.exitCode, null, "a client holding a Watch keeps the server up");
      const metrics = await new Promise<string>((resolve, reject) => {
        const req = http.request({ socketPath: httpSocket, path: "/metrics" }, (res) => {
          let body = "";
          res.on("data", (d: Buffer) => (body += d.toString()));
          res.on("end", () => resolve(body));
        });
        req.on("error", reject);
        req.end();
      });
      assert.match(metrics, /radio_grpc_open_calls 1\b/);
      lease.call.cancel();
      c.close();
      const t0 = Date.now();
      assert.equal(await s.exit, 0);
      assert.ok(Date.now() - t0 < 10_000, "exits soon after the last call closed");
      assert.equal(existsSync(socket), false, "socket removed");
      assert.equal(existsSync(httpSocket), false, "HTTP socket removed");
      assert.match(s.stderr(), /idle: no client/);
    } finally {
      s.proc.kill("SIGKILL");
    }
  });

  for (const wrapped of [false, true]) {
    it(`--parent-pid: exits gracefully on its own when the process that started it dies (SIGKILL)${wrapped ? ", node started through a shell that stays (the pid a grandparent)" : ""}`, async () => {
      // A parent of its own (not this test process, which must live on): it starts the server with its
      // own pid, directly or through \`sh -c "…; true"\` (a wrapper that does not exec, like a version
      // manager's shim), passes the ready line on, then waits to be killed.
      const socket = path.join(tmp.dir, `p${Number(wrapped)}.sock`);
      const serveArgv = [process.execPath, ...CLI, "serve", "--socket", socket, "--graph", `tiny=${graph}`];
      const starter = `
        const { spawn } = require("node:child_process");
        const argv = ${JSON.stringify(serveArgv)}.concat(["--parent-pid", String(process.pid)]);
        const opts = { stdio: ["ignore", "inherit", "inherit"], env: { ...process.env, RADIO_LOG_LEVEL: "info" } };
        ${wrapped ? `spawn("sh", ["-c", argv.map((a) => "'" + a + "'").join(" ") + "; true"], opts);` : "spawn(argv[0], argv.slice(1), opts);"}
        setInterval(() => {}, 1000);`;
      const parent = spawn(process.execPath, ["-e", starter], { stdio: ["ignore", "pipe", "pipe"] });
      let err = "";
      parent.stderr.on("data", (d: Buffer) => (err += d.toString()));
      let serverPid = 0;
      try {
        const ready = JSON.parse(await new Promise<string>((resolve) => createInterface({ input: parent.stdout }).once("line", resolve))) as { pid: number };
        serverPid = ready.pid;
        assert.equal(await new RadioClient(`unix:${socket}`).info().then((i) => i.pid), ready.pid);
        const serverParent = Number(readFileSync(`/proc/${ready.pid}/stat`, "utf8").split(") ")[1]!.split(" ")[1]);
        assert.equal(serverParent === parent.pid, !wrapped, wrapped ? "the shell is the server's parent" : "the starter is the server's parent");
        parent.kill("SIGKILL");
        // Gone (or a zombie, where no init reaps it): its socket removed, as a graceful shutdown does.
        const gone = () => !existsSync(`/proc/${ready.pid}`) || readFileSync(`/proc/${ready.pid}/stat`, "utf8").split(") ")[1]!.startsWith("Z");
        const t0 = Date.now();
        while (!gone() && Date.now() - t0 < 15_000) await new Promise((r) => setTimeout(r, 100));
        assert.ok(gone(), `the server outlived its parent by 15 s:\n${err}`);
        assert.ok(Date.now() - t0 < 10_000, "within seconds");
        assert.equal(existsSync(socket), false, "socket removed: a graceful shutdown");
        assert.match(err, /the process that started the server is gone; shutting down/);
      } finally {
        parent.kill("SIGKILL");
        if (serverPid) {
          try {
            process.kill(serverPid, "SIGKILL"); // a server that outlived its parent would hold this test's pipes open
          } catch {}
        }
        parent.stdout.destroy();
        parent.stderr.destroy();
      }
    });
  }

  it("--provider cuda runs on CUDA or fails with a clear error (never a silent CPU fallback)", async () => {
    const s = spawnServe(["--graph", graph, "--provider", "cuda"]);
    try {
      const ready = await s.ready.catch((err: Error) => err);
      if (ready instanceof Error) {
        // The probe's reason and what to do, before anything listens.
        assert.match(
          ready.message,
          /radio-sidecar: error: the cuda execution provider was asked for but cannot be used: (onnxruntime-node's CUDA provider is not installed .*scripts\/setup\.sh|no NVIDIA driver|no CUDA device|the CUDA provider needs|the NVIDIA driver is too old).*never falls back/,
        );
        assert.doesNotMatch(ready.message, /listening/);
        assert.equal(await s.exit, 1);
      } else {
        const c = new RadioClient(`unix:${ready.socket}`);
        const info = await c.info();
        c.close();
        assert.equal((info.graphs as { executionProvider: string }[])[0]!.executionProvider, "CUDAExecutionProvider");
      }
    } finally {
      s.proc.kill("SIGKILL");
    }
  });

  it("--provider auto (the default) logs its choice once, with why the better ones were not taken, and reports it in Info", async () => {
    // No Vulkan driver: on this host auto ends on cpu unless CUDA loads.
    const s = spawnServe(["--graph", graph, "--http-port", "auto", "--decode-parallelism", "6"], {
      RADIO_LOG_LEVEL: "info",
      VK_ICD_FILENAMES: "/nonexistent/radio-test-no-vulkan-driver.json",
      UV_THREADPOOL_SIZE: "4", // libuv's default
    });
    try {
      const ready = await s.ready;
      const choices = s
        .stderr()
        .split("\n")
        .filter((l) => l.includes('"msg":"execution provider: '));
      assert.equal(choices.length, 1, s.stderr());
      const line = JSON.parse(choices[0]!) as { requested: string; provider: string; msg: string };
      assert.equal(line.requested, "auto");
      // More decodes in flight than libuv's thread pool can run: said once, with the fix.
      assert.match(s.stderr(), /6 decodes in flight, but libuv's thread pool runs 4 at a time: start the server with UV_THREADPOOL_SIZE=10/);
      const c = new RadioClient(`unix:${ready.socket}`);
      const info = await c.info();
      c.close();
      assert.equal(info.providerRequested, "auto");
      assert.equal(info.provider, line.provider);
      assert.deepEqual(
        (info.providerProbes as { provider: string }[]).map((p) => p.provider),
        ["cuda", "webgpu", "cpu"],
      );
      const http = (await (await fetch(`http://127.0.0.1:${ready.httpPort as number}/v1/info`)).json()) as Record<string, unknown>;
      assert.deepEqual(http.providerNotTaken, info.providerNotTaken);
      if (line.provider === "cpu") {
        assert.match(line.msg, /^execution provider: cpu \(auto; fp32 graphs wanted\); not taken: cuda: .*; webgpu: no Vulkan driver/);
        assert.equal((info.providerNotTaken as string[]).length, 2);
        assert.equal(info.maxBatchSize, 8, "the CPU default");
      }
      s.proc.kill("SIGTERM");
      assert.equal(await s.exit, 0);
    } finally {
      s.proc.kill("SIGKILL");
    }
  });

  it("refuses an empty or blank number (RADIO_PORT= would otherwise switch to TCP on port 0; blank 0 means no limit)", async () => {
    for (const [args, env, flag] of [
      [["--graph", graph], { RADIO_PORT: "" }, "--port"],
      [["--graph", graph], { RADIO_INFERENCE_TIMEOUT_S: " " }, "--inference-timeout-s"],
      [["--graph", graph, "--threads", ""], {}, "--threads"],
    ] as const) {
      const s = spawnServe([...args], env);
      try {
        await assert.rejects(s.ready, new RegExp(`option '${flag} <[a-z]+>' (argument|value) '\\s*'( from env '[A-Z_]+')? is invalid`));
        assert.equal(await s.exit, 1);
      } finally {
        s.proc.kill("SIGKILL");
      }
    }
  });

  it("refuses timeouts past a Node timer's range (--shutdown-timeout-s 2200000 would exit at once on SIGTERM, not drain)", async () => {
    for (const flag of ["--shutdown-timeout-s", "--inference-timeout-s", "--stall-timeout-s"]) {
      const s = spawnServe(["--graph", graph, flag, "2200000"]);
      try {
        await assert.rejects(s.ready, new RegExp(`option '${flag} <s>' argument '2200000' is invalid. must be at most 2147478`));
        assert.equal(await s.exit, 1);
      } finally {
        s.proc.kill("SIGKILL");
      }
    }
  });

  it("fails fast with a clear message on a bad model folder, and serves TCP when asked", async () => {
    const bad = spawnServe(["--graph", path.join(tmp.dir, "no-such-graph")]);
    await assert.rejects(bad.ready, /not a compiled RADIO graph folder/);
    assert.equal(await bad.exit, 1);
    // A graph an earlier version compiled (float32 pixels) is refused, saying what to do.
    const old = path.join(tmp.dir, "old-graph");
    mkdirSync(old);
    const metadata = JSON.parse(readFileSync(path.join(graph, "metadata.json"), "utf8")) as Record<string, unknown>;
    writeFileSync(path.join(old, "metadata.json"), JSON.stringify({ ...metadata, format: "radio-onnx/1" }));
    const stale = spawnServe(["--graph", old]);
    await assert.rejects(stale.ready, /radio-onnx\/1 graph, written by an earlier version .*compile it again/);
    assert.equal(await stale.exit, 1);

    const s = spawnServe(["--port", "0"], { RADIO_GRAPH: graph });
    try {
      const ready = await s.ready;
      assert.equal(ready.socket, null);
      assert.ok((ready.grpcPort as number) > 0);
      const c = new RadioClient(`127.0.0.1:${ready.grpcPort}`);
      try {
        const [r] = await c.embed({ images: [{ id: "x", encoded: png }] }).done;
        assert.ok(r!.output, "TCP works");
        // Path inputs are refused over TCP (no --allow-remote-paths).
        const [p] = await c.embed({ images: [{ id: "p", path: path.join(tmp.dir, "a.png") }] }).done;
        assert.equal(p!.error?.code, "PERMISSION_DENIED");
      } finally {
        c.close();
      }
      s.proc.kill("SIGINT");
      assert.equal(await s.exit, 0);
    } finally {
      s.proc.kill("SIGKILL");
    }
  });
});

describe("radio-sidecar compile (CLI)", () => {
  it("refuses an --out that is a file, saying to give a folder, before reading the checkpoint", () => {
    const tmp = tempDir("radio-compile-cli-");
    try {
      const file = path.join(tmp.dir, "not-a-folder");
      writeFileSync(file, "keep me");
      const r = spawnSync(process.execPath, [...CLI, "compile", "--checkpoint-dir", path.join(tmp.dir, "ckpt"), "--out", file], { encoding: "utf8" });
      assert.equal(r.status, 1);
      assert.match(r.stderr, /--out .*not-a-folder is a file: give a folder/);
      assert.doesNotMatch(r.stderr, /ENOTDIR|at .*\.js:\d+/);
      assert.equal(readFileSync(file, "utf8"), "keep me");
    } finally {
      tmp.cleanup();
    }
  });
});
