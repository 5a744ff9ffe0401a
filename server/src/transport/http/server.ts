// The HTTP side port (fastify): health, readiness, Prometheus metrics and info, each a plugin.
// Loopback by default; it exposes no inference.
import Fastify, { LogController } from "fastify";
import type { Logger } from "pino";
import type { Registry } from "prom-client";
import type { ServerInfo } from "../../server-info.js";
import { healthPlugin } from "./health.js";
import { infoPlugin } from "./info.js";
import { metricsPlugin } from "./metrics.js";

export interface HttpServerOptions {
  host: string;
  /** 0 = any free port. */
  port: number;
  logger: Logger;
  registry: Registry;
  ready(): boolean;
  shuttingDown(): boolean;
  info(): ServerInfo;
}

export interface HttpServer {
  port: number;
  close(): Promise<void>;
}

export async function startHttpServer(o: HttpServerOptions): Promise<HttpServer> {
  const app = Fastify({ loggerInstance: o.logger, logController: new LogController({ disableRequestLogging: true }) });
  await app.register(healthPlugin, { ready: o.ready, shuttingDown: o.shuttingDown });
  await app.register(metricsPlugin, { registry: o.registry });
  await app.register(infoPlugin, { info: o.info });
  await app.listen({ host: o.host, port: o.port });
  const addr = app.server.address();
  const port = typeof addr === "object" && addr ? addr.port : o.port;
  return { port, close: () => app.close() };
}
