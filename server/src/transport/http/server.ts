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

export async function startHttpServer(options: HttpServerOptions): Promise<HttpServer> {
  const app = Fastify({ loggerInstance: options.logger, logController: new LogController({ disableRequestLogging: true }) });
  await app.register(healthPlugin, { ready: options.ready, shuttingDown: options.shuttingDown });
  await app.register(metricsPlugin, { registry: options.registry });
  await app.register(infoPlugin, { info: options.info });
  if (options.socket) {
    const sock = await prepareSocket(options.socket);
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
  await app.listen({ host: options.host, port: options.port });
  const addr = app.server.address();
  const port = typeof addr === "object" && addr ? addr.port : options.port;
  return { port, socket: null, close: () => app.close() };
}
