// GET /healthz: the process answers (liveness). GET /readyz: graphs loaded and warmed, not shutting
// down (readiness); 503 otherwise, so a load balancer or supervisor stops sending work.
import type { FastifyPluginAsync } from "fastify";

export interface HealthPluginOptions {
  ready(): boolean;
  shuttingDown(): boolean;
}

export const healthPlugin: FastifyPluginAsync<HealthPluginOptions> = async (app, options) => {
  app.get("/healthz", async () => ({ status: "ok" }));
  app.get("/readyz", async (_req, reply) => {
    if (options.shuttingDown()) return reply.code(503).send({ status: "shutting down" });
    if (!options.ready()) return reply.code(503).send({ status: "loading" });
    return { status: "ready" };
  });
};
