/**
 * Access control and limits, through sidecar processes: the private unix socket; TCP on loopback by
 * default; a non-loopback --host refused without a token; token (UNAUTHENTICATED without it) and TLS
 * (a certificate made on the fly with openssl, 127.0.0.1 trusted through it); path inputs refused
 * to TCP clients unless --allow-remote-paths, and then still confined to the roots; limits on
 * message size, pixels per image and images per call; the HTTP port shows no files and no token,
 * and the token is never logged.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdirSync, readFileSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";

import * as grpc from "@grpc/grpc-js";
import sharp from "sharp";

import { noiseRaw } from "./support/images.js";
import { spawnSidecar, type Sidecar } from "./support/sidecar.js";
import { compileTinyModel, expectStatus, httpGet, metricValue, RadioClient, tempDir, type ImageResult } from "./support/server.js";

const TOKEN = "s3cret-token-4f0c2b7e9a51";

function opensslAvailable(): boolean {
  try {
    execFileSync("openssl", ["version"], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}

function bearer(token: string): grpc.Metadata {
  const m = new grpc.Metadata();
  m.set("authorization", `Bearer ${token}`);
  return m;
}

/** A non-loopback IPv4 address of this machine, if it has one. */
function externalAddress(): string | null {
  for (const list of Object.values(os.networkInterfaces())) for (const a of list ?? []) if (a.family === "IPv4" && !a.internal) return a.address;
  return null;
}

function connects(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ host, port });
    s.once("connect", () => {
      s.destroy();
      resolve(true);
    });
    s.once("error", () => resolve(false));
  });
}

describe("access control and limits", () => {
  const tmp = tempDir("radio-security-");
  const root = path.join(tmp.dir, "root");
  const outside = path.join(tmp.dir, "outside");
  let graph: string;
  let png: Buffer;
  const running: Sidecar[] = [];
  const start = (args: string[], env: Record<string, string> = {}) => {
    const s = spawnSidecar(["--graph", `tiny=${graph}`, ...args], env);
    running.push(s);
    return s;
  };

  before(async () => {
    mkdirSync(root);
    mkdirSync(outside);
    graph = await compileTinyModel(tmp.dir);
    png = await sharp(noiseRaw(64, 48, 5), { raw: { width: 64, height: 48, channels: 3 } })
      .png()
      .toBuffer();
    writeFileSync(path.join(root, "a.png"), png);
    writeFileSync(path.join(outside, "secret.png"), png);
    symlinkSync(path.join(outside, "secret.png"), path.join(root, "escape.png"));
  });

  after(() => {
    for (const s of running) s.kill();
    tmp.cleanup();
  });

  it("the default unix socket is private: 0600 in a 0700 directory", async () => {
    const s = start([]);
    const ready = await s.ready;
    assert.equal(statSync(ready.socket!).mode & 0o777, 0o600);
    assert.equal(statSync(path.dirname(ready.socket!)).mode & 0o777, 0o700);
    const c = new RadioClient(`unix:${ready.socket}`);
    try {
      const [p] = await c.embed({ images: [{ id: "p", path: path.join(root, "a.png") }] }).done;
      assert.equal(p!.error?.code, "OUTSIDE_ALLOWED_ROOTS", "no --allowed-root: no path inputs, even locally");
    } finally {
      c.close();
      s.kill();
    }
  });

  it("TCP binds loopback unless told otherwise", async () => {
    const s = start(["--port", "0"]);
    const ready = await s.ready;
    assert.match(ready.address, /^127\.0\.0\.1:\d+$/);
    assert.equal(await connects("127.0.0.1", ready.grpcPort!), true);
    const ext = externalAddress();
    if (ext) assert.equal(await connects(ext, ready.grpcPort!), false, `not reachable on ${ext}`);
    s.kill();
  });

  it("refuses to listen beyond loopback without a token", async () => {
    for (const [args, env] of [
      [["--host", "0.0.0.0", "--port", "0"], {}],
      [["--port", "0"], { RADIO_HOST: "::" }],
    ] as const) {
      const s = start([...args], { ...env });
      await assert.rejects(s.ready, /listens beyond this machine, which needs a token: set --token or RADIO_TOKEN/);
      assert.equal(await s.exit, 1);
    }
  });

  describe("beyond loopback: token + TLS", { skip: !opensslAvailable() && "openssl is not installed" }, () => {
    let s: Sidecar;
    let port: number;
    let httpPort: number;
    let cert: Buffer;
    const clients: RadioClient[] = [];
    const client = (o: { tls?: boolean } = {}) => {
      const c = new RadioClient(`127.0.0.1:${port}`, { credentials: o.tls === false ? grpc.credentials.createInsecure() : grpc.credentials.createSsl(cert) });
      clients.push(c);
      return c;
    };

    before(async () => {
      const certFile = path.join(tmp.dir, "cert.pem");
      const keyFile = path.join(tmp.dir, "key.pem");
      execFileSync(
        "openssl",
        [
          "req",
          "-x509",
          "-newkey",
          "ec",
          "-pkeyopt",
          "ec_paramgen_curve:prime256v1",
          "-nodes",
          "-days",
          "1",
          "-subj",
          "/CN=radio-test",
          "-addext",
          "subjectAltName=IP:127.0.0.1,DNS:localhost",
          "-keyout",
          keyFile,
          "-out",
          certFile,
        ],
        { stdio: "ignore" },
      );
      cert = readFileSync(certFile);
      s = start(
        [
          "--host",
          "0.0.0.0",
          "--port",
          "0",
          "--tls-cert",
          certFile,
          "--tls-key",
          keyFile,
          "--allowed-root",
          root,
          "--http-port",
          "auto",
          "--log-level",
          "trace",
        ],
        { RADIO_TOKEN: TOKEN, RADIO_LOG_LEVEL: "trace" },
      );
      const ready = await s.ready;
      port = ready.grpcPort!;
      httpPort = ready.httpPort!;
      assert.match(ready.address, /^0\.0\.0\.0:\d+$/);
    });

    after(() => clients.forEach((c) => c.close()));

    it("calls without the token, or with a wrong one, get UNAUTHENTICATED; health needs none", async () => {
      const c = client();
      await expectStatus(c.info(), grpc.status.UNAUTHENTICATED, /authorization: Bearer/);
      await expectStatus(c.info(bearer("wrong")), grpc.status.UNAUTHENTICATED);
      await expectStatus(c.info(bearer(`${TOKEN}x`)), grpc.status.UNAUTHENTICATED);
      await expectStatus(c.embed({ images: [{ id: "x", encoded: png }] }).done, grpc.status.UNAUTHENTICATED);
      await expectStatus(c.embed({ images: [{ id: "x", encoded: png }] }, { metadata: bearer("") }).done, grpc.status.UNAUTHENTICATED);
      await expectStatus(c.listServices(), grpc.status.UNAUTHENTICATED);
      assert.equal(await c.healthCheck(""), "SERVING");
      const text = (await httpGet(httpPort, "/metrics")).body;
      assert.ok(metricValue(text, "radio_grpc_requests_total", { code: "UNAUTHENTICATED" }) >= 6);
      assert.equal(metricValue(text, "radio_images_total"), 0, "nothing ran");
    });

    it("with the token, over TLS: encoded images work, path inputs are refused", async () => {
      const c = client();
      assert.equal(((await c.info(bearer(TOKEN))).graphs as unknown[]).length, 1);
      const results = await c.embed(
        {
          images: [
            { id: "bytes", encoded: png },
            { id: "path", path: path.join(root, "a.png") },
          ],
        },
        { metadata: bearer(TOKEN) },
      ).done;
      assert.ok(results[0]!.output, "encoded bytes are fine");
      assert.equal(results[1]!.error?.code, "PERMISSION_DENIED");
      assert.match(results[1]!.error!.message, /"path".*path inputs are refused.*--allow-remote-paths/);
    });

    it("a plaintext client cannot talk to the TLS port", async () => {
      const c = client({ tls: false });
      await expectStatus(c.info(bearer(TOKEN)), grpc.status.UNAVAILABLE);
    });

    it("the HTTP port shows no files and no token; the token is never logged", async () => {
      const info = await httpGet(httpPort, "/v1/info");
      assert.equal(info.status, 200);
      for (const p of [
        "/etc/passwd",
        "/../../../../etc/passwd",
        "/%2e%2e/%2e%2e/etc/passwd",
        "/v1/info/../../etc/passwd",
        `/${root}/a.png`,
        `/metrics?file=${root}/a.png`,
        "/v1/info?token=1",
        "/debug",
        "/v1/config",
      ]) {
        const r = await httpGet(httpPort, p);
        assert.ok(!r.body.includes("root:x:0:0"), `${p} shows no /etc/passwd`);
        assert.ok(!r.body.includes("\u0089PNG") && !r.body.includes("IHDR"), `${p} shows no image`);
        assert.ok(!r.body.includes(TOKEN), `${p} shows no token`);
        if (!p.startsWith("/metrics") && !p.startsWith("/v1/info?")) assert.equal(r.status, 404, `${p}: ${r.status}`);
      }
      for (const p of ["/v1/info", "/metrics", "/healthz", "/readyz"]) {
        const body = (await httpGet(httpPort, p)).body;
        assert.ok(!body.includes(TOKEN), `${p} does not show the token`);
        assert.ok(!body.includes(tmp.dir), `${p} does not show local paths`);
      }
      assert.ok(s.stderr().length > 0, "trace logs were written");
      assert.ok(!s.stderr().includes(TOKEN), "the token is not in the logs");
      assert.ok(!readFileSync(`/proc/${s.proc.pid}/cmdline`, "utf8").includes(TOKEN), "nor on the command line (it came from RADIO_TOKEN)");
    });
  });

  describe("TCP on loopback with --allow-remote-paths and tight limits", () => {
    let c: RadioClient;
    let s: Sidecar;
    before(async () => {
      s = start(["--port", "0", "--allow-remote-paths", "--allowed-root", root, "--max-message-mb", "1", "--max-image-pixels", "10000", "--max-queue", "16"]);
      c = new RadioClient(`127.0.0.1:${(await s.ready).grpcPort}`);
    });
    after(() => c?.close());

    it("path inputs are accepted and still confined to the roots after resolving symlinks", async () => {
      const results = await c.embed({
        images: [
          { id: "inside", path: path.join(root, "a.png") },
          { id: "escape", path: path.join(root, "escape.png") },
          { id: "outside", path: path.join(outside, "secret.png") },
          { id: "dotdot", path: `${root}/../outside/secret.png` },
        ],
      }).done;
      assert.ok(results[0]!.output);
      for (const r of results.slice(1)) assert.equal(r.error?.code, "OUTSIDE_ALLOWED_ROOTS", `${r.id}: ${r.error?.message}`);
    });

    it("limits: message size, pixels per image, images per call", async () => {
      await expectStatus(c.embed({ images: [{ id: "big", encoded: Buffer.alloc(2 * 1024 * 1024, 1) }] }).done, grpc.status.RESOURCE_EXHAUSTED);
      const big = await sharp(noiseRaw(128, 100, 1), { raw: { width: 128, height: 100, channels: 3 } })
        .png()
        .toBuffer(); // 12800 px
      const results: ImageResult[] = await c.embed({
        images: [
          { id: "too-many-pixels", encoded: big },
          { id: "raw-too-many-pixels", raw: { data: Buffer.alloc(101 * 100 * 3), height: 101, width: 100, channels: 3, dtype: "DTYPE_UINT8" } },
          { id: "fits", encoded: png }, // 3072 px
        ],
      }).done;
      assert.equal(results[0]!.error?.code, "TOO_LARGE", results[0]!.error?.message);
      assert.equal(results[1]!.error?.code, "TOO_LARGE", results[1]!.error?.message);
      assert.ok(results[2]!.output);
      await expectStatus(
        c.embed({ images: Array.from({ length: 17 }, (_, i) => ({ id: `${i}`, encoded: png })) }).done,
        grpc.status.INVALID_ARGUMENT,
        /at most 16/,
      );
      assert.equal(await c.healthCheck(""), "SERVING");
    });
  });
});
