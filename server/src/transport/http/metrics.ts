// GET /metrics: Prometheus text format from the server's own registry.
import type { FastifyPluginAsync } from "fastify";
import type { Registry } from "prom-client";

export interface MetricsPluginOptions {
  registry: Registry;
}

export const metricsPlugin: FastifyPluginAsync<MetricsPluginOptions> = async (app, options) => {
  app.get("/metrics", async (_req, reply) => {
    const body = await options.registry.metrics();
    return reply.type(options.registry.contentType).send(body);
  });
};
