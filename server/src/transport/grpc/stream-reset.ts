// Ending a server call whose client stopped reading. grpc-js has no way to: a status is queued
// behind the messages already written, which HTTP/2 flow control holds until the client reads, so
// neither the status nor those messages ever leave and the call stays open. Resetting the call's
// HTTP/2 stream (RST_STREAM) ends it at once and frees what was buffered for it. grpc-js keeps that
// stream to itself: the first server interceptor is handed grpc-js's own call object, which holds it
// (`stream`, grpc-js 1.14), and it is filed here under the call's metadata object, which grpc-js
// hands on to the method handler as it is (the other interceptors pass it through).
import type { ServerHttp2Stream } from "node:http2";
import * as grpc from "@grpc/grpc-js";

export class StreamResets {
  private readonly streams = new WeakMap<grpc.Metadata, ServerHttp2Stream>();

  /** Must be the server's first interceptor: the others are handed a wrapper instead. */
  interceptor(): grpc.ServerInterceptor {
    return (_method, call) => {
      const stream = (call as unknown as { stream?: Partial<ServerHttp2Stream> }).stream;
      const listener = new grpc.ServerListenerBuilder()
        .withOnReceiveMetadata((metadata, next) => {
          if (typeof stream?.close === "function") this.streams.set(metadata, stream as ServerHttp2Stream);
          next(metadata);
        })
        .build();
      return new grpc.ServerInterceptingCall(call, new grpc.ResponderBuilder().withStart((next) => next(listener)).build());
    };
  }

  /**
   * Resets the stream of the call that received `metadata` with an HTTP/2 error code (gRPC clients
   * read ENHANCE_YOUR_CALM as RESOURCE_EXHAUSTED). False when there is no stream to reset: it closed
   * already, or grpc-js no longer shows it to interceptors.
   */
  reset(metadata: grpc.Metadata, code: number): boolean {
    const stream = this.streams.get(metadata);
    if (!stream || stream.closed || stream.destroyed) return false;
    stream.close(code);
    return true;
  }
}
