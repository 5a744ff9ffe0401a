// The gRPC server: radio.v1.Radio, grpc.health.v1 (grpc-health-check) and server reflection, on a
// unix socket (default) or TCP. Message limits are raised because a single spatial output is tens
// of MB (C-RADIOv4-H NCHW at 2048²: 1280×128×128×4 = 84 MB) and uploads carry encoded images.
import * as grpc from "@grpc/grpc-js";
import { ReflectionService } from "@grpc/reflection";
import { HealthImplementation, type ServingStatus } from "grpc-health-check";
import type { Logger } from "pino";
import { loadPackageDefinition, radioServiceDefinition, RADIO_SERVICE } from "./proto.js";
import { radioHandlers, type RadioServiceState, type RequestRecorder } from "./radio-service.js";
import { prepareSocket, type PreparedSocket } from "./socket.js";

export const MAX_MESSAGE_BYTES = 256 * 1024 * 1024;

export type GrpcListen = { socket: string | null } | { host: string; port: number };

export interface GrpcServerOptions {
  listen: GrpcListen;
  state: RadioServiceState;
  recorder: RequestRecorder;
  logger: Logger;
  maxMessageBytes?: number;
}

export interface GrpcServer {
  /** Unix socket path, when listening on one. */
  socket: string | null;
  /** TCP port, when listening on TCP. */
  port: number | null;
  /** "unix:/path" or "host:port", as a client would dial it. */
  address: string;
  setServing(serving: boolean): void;
  /** Waits up to graceMs for calls to finish, then cancels the rest. */
  close(graceMs: number): Promise<void>;
}

function tcpAddress(host: string, port: number): string {
  return host.includes(":") && !host.startsWith("[") ? `[${host}]:${port}` : `${host}:${port}`;
}

function bind(server: grpc.Server, address: string): Promise<number> {
  return new Promise((resolve, reject) =>
    server.bindAsync(address, grpc.ServerCredentials.createInsecure(), (err, port) => (err ? reject(err) : resolve(port))),
  );
}

export async function startGrpcServer(o: GrpcServerOptions): Promise<GrpcServer> {
  const limit = o.maxMessageBytes ?? MAX_MESSAGE_BYTES;
  const server = new grpc.Server({
    "grpc.max_receive_message_length": limit,
    "grpc.max_send_message_length": limit,
  });
  const pkg = loadPackageDefinition();
  server.addService(radioServiceDefinition(pkg), radioHandlers(o.state, o.recorder, o.logger));
  // NOT_SERVING until the models are loaded and warmed; "" is the whole server.
  const statuses: Record<string, ServingStatus> = { "": "NOT_SERVING", [RADIO_SERVICE]: "NOT_SERVING" };
  const health = new HealthImplementation(statuses);
  health.addToServer(server);
  new ReflectionService(pkg).addToServer(server);

  let sock: PreparedSocket | null = null;
  let port: number | null = null;
  let address: string;
  if ("socket" in o.listen) {
    sock = await prepareSocket(o.listen.socket);
    address = `unix:${sock.path}`;
    // The socket is created by bind(): with umask 077 it is never, even briefly, open to others.
    const old = process.umask(0o177);
    try {
      await bind(server, address);
    } catch (err) {
      sock.cleanup();
      throw new Error(`cannot listen on ${sock.path}: ${(err as Error).message}`);
    } finally {
      process.umask(old);
    }
    sock.secure();
  } else {
    const { host, port: wanted } = o.listen;
    const bound = await bind(server, tcpAddress(host, wanted)).catch((err: Error) => {
      throw new Error(`cannot listen on ${tcpAddress(host, wanted)}: ${err.message}`);
    });
    port = bound;
    address = tcpAddress(host, bound);
    if (!["127.0.0.1", "::1", "localhost"].includes(host)) {
      o.logger.warn({ host }, "gRPC listens beyond loopback without TLS or authentication");
    }
  }

  return {
    socket: sock?.path ?? null,
    port,
    address,
    setServing(serving) {
      for (const name of Object.keys(statuses)) health.setStatus(name, serving ? "SERVING" : "NOT_SERVING");
    },
    async close(graceMs) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(() => {
          server.forceShutdown();
          resolve();
        }, graceMs);
        server.tryShutdown(() => {
          clearTimeout(timer);
          resolve();
        });
      });
      sock?.cleanup();
    },
  };
}
