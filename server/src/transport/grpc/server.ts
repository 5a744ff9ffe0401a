// The gRPC server: radio.v1.Radio, grpc.health.v1 (grpc-health-check) and server reflection, on a
// unix socket (default) or TCP. Message limits are raised because a single spatial output is tens
// of MB (C-RADIOv4-H NCHW at 2048²: 1280×128×128×4 = 84 MB) and uploads carry encoded images.
// Access: the unix socket is private to its user. TCP binds loopback unless told otherwise, and any
// other address needs a bearer token (checked on every call but health); TLS is optional.
import { createHash, timingSafeEqual } from "node:crypto";
import { constants as h2 } from "node:http2";
import { isIPv4 } from "node:net";
import * as grpc from "@grpc/grpc-js";
import { ReflectionService } from "@grpc/reflection";
import { HealthImplementation, type ServingStatus } from "grpc-health-check";
import type { Logger } from "pino";
import { MAX_RESPONSE_BYTES, SERVE_DEFAULTS } from "../../defaults.js";
import { loadPackageDefinition, radioServiceDefinition, RADIO_SERVICE } from "./proto.js";
import { radioHandlers, type RadioServiceState, type RequestRecorder } from "./radio-service.js";
import { prepareSocket, type PreparedSocket } from "./socket.js";
import { StreamResets } from "./stream-reset.js";

export type GrpcListen = { socket: string | null } | { host: string; port: number };

export interface GrpcServerOptions {
  listen: GrpcListen;
  state: RadioServiceState;
  recorder: RequestRecorder;
  logger: Logger;
  /** Largest request message accepted (default --max-message-mb's); larger ones get RESOURCE_EXHAUSTED. */
  maxRequestBytes?: number;
  /** An Embed call whose client has read none of its waiting results for this long is ended (0 = never; default SERVE_DEFAULTS). */
  stallTimeoutMs?: number;
  /** Bearer token every call but health must carry (metadata "authorization: Bearer <token>"). */
  token?: string | null;
  /** PEM certificate chain and key: serve TCP over TLS. */
  tls?: { cert: Buffer; key: Buffer } | null;
}

/** 127.0.0.0/8, ::1, ::ffff:127.x and "localhost": addresses other machines cannot reach. */
function isLoopbackHost(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, "").toLowerCase();
  if (h === "localhost" || h === "::1") return true;
  const v4 = h.startsWith("::ffff:") ? h.slice(7) : h;
  return isIPv4(v4) && v4.startsWith("127.");
}

/** Calls that need no token: health (so probes and supervisors work), nothing else. */
const OPEN_METHOD = /^\/grpc\.health\.v1\.Health\//;

function tokenInterceptor(token: string, recorder: RequestRecorder): grpc.ServerInterceptor {
  const digest = (s: string) => createHash("sha256").update(s).digest();
  const want = digest(token);
  const authorized = (md: grpc.Metadata): boolean => {
    const v = md.get("authorization")[0];
    if (typeof v !== "string" || !/^bearer /i.test(v)) return false;
    return timingSafeEqual(digest(v.slice(7).trim()), want); // constant time, any length
  };
  return (method, call) => {
    if (OPEN_METHOD.test(method.path)) return new grpc.ServerInterceptingCall(call);
    const listener = new grpc.ServerListenerBuilder()
      .withOnReceiveMetadata((md, next) => {
        if (authorized(md)) return next(md);
        recorder.request(method.path.slice(method.path.lastIndexOf("/") + 1), "UNAUTHENTICATED");
        call.sendStatus({
          code: grpc.status.UNAUTHENTICATED,
          details: 'missing or wrong token: send metadata "authorization: Bearer <token>"',
          metadata: new grpc.Metadata(),
        });
      })
      .build();
    return new grpc.ServerInterceptingCall(call, new grpc.ResponderBuilder().withStart((next) => next(listener)).build());
  };
}

/**
 * Counts the calls open now, of every method (a health Watch stream held open by a client counts
 * for as long as it is open: the zoo's lease on a shared sidecar), and when that count last changed.
 * A call ends when its status is sent or it is cancelled (the client went away: a killed client's
 * socket closes, which cancels its calls).
 */
export class OpenCalls {
  open = 0;
  lastChange = Date.now();

  interceptor(): grpc.ServerInterceptor {
    return (_method, call) => {
      this.open += 1;
      this.lastChange = Date.now();
      let ended = false;
      const end = () => {
        if (ended) return;
        ended = true;
        this.open -= 1;
        this.lastChange = Date.now();
      };
      const listener = new grpc.ServerListenerBuilder().withOnCancel(end).build();
      const responder = new grpc.ResponderBuilder()
        .withStart((next) => next(listener))
        .withSendStatus((status, next) => {
          end();
          next(status);
        })
        .build();
      return new grpc.ServerInterceptingCall(call, responder);
    };
  }
}

export interface GrpcServer {
  /** Calls open now and when that last changed (idle detection). */
  openCalls: OpenCalls;
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

function bind(server: grpc.Server, address: string, creds = grpc.ServerCredentials.createInsecure()): Promise<number> {
  return new Promise((resolve, reject) => server.bindAsync(address, creds, (err, port) => (err ? reject(err) : resolve(port))));
}

export async function startGrpcServer(options: GrpcServerOptions): Promise<GrpcServer> {
  const token = options.token || null;
  if ("host" in options.listen && !isLoopbackHost(options.listen.host) && !token) {
    throw new Error(
      `--host ${options.listen.host} listens beyond this machine, which needs a token: set --token or RADIO_TOKEN ` +
        `(clients send "authorization: Bearer <token>"), and --tls-cert/--tls-key so it does not travel in clear text`,
    );
  }
  if (options.tls && "socket" in options.listen) throw new Error("TLS (--tls-cert, --tls-key) needs TCP (--port); the unix socket is private already");
  const openCalls = new OpenCalls();
  const resets = new StreamResets();
  const server = new grpc.Server({
    "grpc.max_receive_message_length": options.maxRequestBytes ?? SERVE_DEFAULTS.maxRequestBytes,
    "grpc.max_send_message_length": MAX_RESPONSE_BYTES,
    interceptors: [resets.interceptor(), openCalls.interceptor(), ...(token ? [tokenInterceptor(token, options.recorder)] : [])],
  });
  const pkg = loadPackageDefinition();
  const stalls = {
    stallTimeoutMs: options.stallTimeoutMs ?? SERVE_DEFAULTS.stallTimeoutMs,
    reset: (call: { metadata: grpc.Metadata }) => resets.reset(call.metadata, h2.NGHTTP2_ENHANCE_YOUR_CALM),
  };
  server.addService(radioServiceDefinition(pkg), radioHandlers(options.state, options.recorder, options.logger, stalls));
  // NOT_SERVING until the graphs are loaded and warmed; "" is the whole server.
  const statuses: Record<string, ServingStatus> = { "": "NOT_SERVING", [RADIO_SERVICE]: "NOT_SERVING" };
  const health = new HealthImplementation(statuses);
  health.addToServer(server);
  new ReflectionService(pkg).addToServer(server);

  let sock: PreparedSocket | null = null;
  let port: number | null = null;
  let address: string;
  if ("socket" in options.listen) {
    sock = await prepareSocket(options.listen.socket);
    address = `unix:${sock.path}`;
    // The socket is created by bind(): with umask 177 (0600) it is never, even briefly, open to others.
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
    const { host, port: wanted } = options.listen;
    const creds = options.tls
      ? grpc.ServerCredentials.createSsl(null, [{ cert_chain: options.tls.cert, private_key: options.tls.key }], false)
      : grpc.ServerCredentials.createInsecure();
    const bound = await bind(server, tcpAddress(host, wanted), creds).catch((err: Error) => {
      throw new Error(`cannot listen on ${tcpAddress(host, wanted)}: ${err.message}`);
    });
    port = bound;
    address = tcpAddress(host, bound);
    if (!isLoopbackHost(host) && !options.tls) {
      options.logger.warn({ host }, "gRPC listens beyond loopback without TLS: the token travels in clear text");
    }
  }

  return {
    openCalls,
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
