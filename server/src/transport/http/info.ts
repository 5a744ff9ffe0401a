// GET /v1/info: the Info RPC's answer as JSON (proto3 JSON field names).
import type { FastifyPluginAsync } from "fastify";
import type { ServerInfo } from "../../server-info.js";

export interface InfoPluginOptions {
  info(): ServerInfo;
}

export const infoPlugin: FastifyPluginAsync<InfoPluginOptions> = async (app, options) => {
  app.get("/v1/info", async () => options.info());
};
