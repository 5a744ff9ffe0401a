// The HTTP side port (fastify): health, readiness, Prometheus metrics and info, each a plugin.
// Loopback by default; it exposes no inference.
import Fastify, { LogController } from "fastify";
import type { Logger } from "pino";
import type { Registry } from "prom-client";
import type { ServerInfo } from "../../server-info.js";
import { healthPlugin } from "./health.js";
import { infoPlugin } from "./info.js";
import { metricsPlugin } from "./metrics.js";
import { prepareSocket } from "../grpc/socket.js";

export interface HttpServerOptions {
  host: string;
  /** 0 = any free port. */
  port: number;
  /** Listen on this unix socket instead of host:port (made owner-only; a stale one is replaced). */
  socket?: string;
  logger: Logger;
  registry: Registry;
  ready(): boolean;
  shuttingDown(): boolean;
  info(): ServerInfo;
}

export interface HttpServer {
  port: number;
  socket: string | null;
  close(): Promise<void>;
}

export async function startHttpServer(o: HttpServerOptions): Promise<HttpServer> {
  const app = Fastify({ loggerInstance: o.logger, logController: new LogController({ disableRequestLogging: true }) });
  await app.register(healthPlugin, { ready: o.ready, shuttingDown: o.shuttingDown });
  await app.register(metricsPlugin, { registry: o.registry });
  await app.register(infoPlugin, { info: o.info });
  if (o.socket) {
    const sock = await prepareSocket(o.socket);
    const old = process.umask(0o177);
    try {
      await app.listen({ path: sock.path });
    } finally {
      process.umask(old);
    }
    sock.secure();
    return {
      port: 0,
      socket: sock.path,
      close: async () => {
        await app.close();
        sock.cleanup();
      },
    };
  }
  await app.listen({ host: o.host, port: o.port });
  const addr = app.server.address();
  const port = typeof addr === "object" && addr ? addr.port : o.port;
  return { port, socket: null, close: () => app.close() };
}
