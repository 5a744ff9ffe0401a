// GET /metrics: Prometheus text format from the server's own registry.
import type { FastifyPluginAsync } from "fastify";
import type { Registry } from "prom-client";

export interface MetricsPluginOptions {
  registry: Registry;
}

export const metricsPlugin: FastifyPluginAsync<MetricsPluginOptions> = async (app, o) => {
  app.get("/metrics", async (_req, reply) => {
    const body = await o.registry.metrics();
    return reply.type(o.registry.contentType).send(body);
  });
};
