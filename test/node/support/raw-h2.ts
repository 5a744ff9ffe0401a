/**
 * A bare HTTP/2 client over a plain socket, for a gRPC call whose client stops reading: it grants
 * the server no flow-control window beyond the default 65,535 bytes unless told to (a paused
 * node:http2 client still takes everything). Its frames are written by hand: the preface, an empty
 * SETTINGS (and an ACK for the server's), one call's HEADERS (HPACK literals without indexing, no
 * Huffman) and its DATA. Of what comes back it reads frame headers, the gRPC messages in the DATA
 * and RST_STREAM codes; it decodes no HPACK (the response headers and trailers are only seen).
 */
import net from "node:net";

const PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "latin1");
const FRAME = { DATA: 0x0, HEADERS: 0x1, RST_STREAM: 0x3, SETTINGS: 0x4, PING: 0x6, WINDOW_UPDATE: 0x8 } as const;
const FLAG = { END_STREAM: 0x1, ACK: 0x1, END_HEADERS: 0x4, PADDED: 0x8 } as const;
/** The default initial window (RFC 9113 §6.9.2) and largest frame payload (§4.2). */
export const DEFAULT_WINDOW = 65_535;
const MAX_FRAME = 16_384;
const STREAM = 1;
export const H2_CANCEL = 0x8;
export const H2_ENHANCE_YOUR_CALM = 0xb;

function frame(type: number, flags: number, stream: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  const header = Buffer.alloc(9);
  header.writeUIntBE(payload.length, 0, 3);
  header[3] = type;
  header[4] = flags;
  header.writeUInt32BE(stream, 5);
  return Buffer.concat([header, payload]);
}

function uint32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n);
  return b;
}

/** An HPACK integer with an N-bit prefix (RFC 7541 §5.1). */
function hpackInt(value: number, prefixBits: number): number[] {
  const max = (1 << prefixBits) - 1;
  if (value < max) return [value];
  const out = [max];
  let rest = value - max;
  while (rest >= 128) {
    out.push((rest % 128) + 128);
    rest = Math.floor(rest / 128);
  }
  out.push(rest);
  return out;
}

/** A string literal, not Huffman-coded (§5.2). */
function hpackString(s: string): Buffer {
  const bytes = Buffer.from(s, "latin1");
  return Buffer.concat([Buffer.from(hpackInt(bytes.length, 7)), bytes]);
}

/** A literal header field without indexing, with a literal name (§6.2.2). */
function literalField(name: string, value: string): Buffer {
  return Buffer.concat([Buffer.from([0x00]), hpackString(name), hpackString(value)]);
}

export interface RawCall {
  /** The response's gRPC messages (without their 5-byte prefix), as they arrive. */
  readonly messages: Buffer[];
  /** DATA payload bytes received on the call's stream. */
  readonly dataBytes: number;
  /** HEADERS frames received on the call's stream (response headers, then trailers). */
  readonly headers: number;
  /** True once a frame with END_STREAM came (the trailers). */
  readonly ended: boolean;
  /** The server's RST_STREAM error code, once it reset the stream. */
  readonly resetCode: number | null;
  /** Resolves when the stream ends either way (trailers or a reset), or the socket closes. */
  readonly closed: Promise<void>;
  /** Lets the server send `bytes` more (WINDOW_UPDATE on the stream and on the connection). */
  grant(bytes: number): void;
  /** Resets the stream, as a client cancelling its call does. */
  cancel(): void;
  /** Closes the connection. */
  destroy(): void;
}

/** Starts one unary-request call (e.g. /radio.v1.Radio/Embed) on a new connection to a unix socket. */
export async function rawCall(socketPath: string, method: string, request: Buffer, metadata: Record<string, string> = {}): Promise<RawCall> {
  const body = Buffer.concat([Buffer.from([0]), uint32(request.length), request]);
  // The server's window for what we send is the default too: more would wait for its WINDOW_UPDATE.
  if (body.length > DEFAULT_WINDOW) throw new RangeError(`a ${body.length}-byte request does not fit the default window; send less`);
  const socket = net.connect(socketPath);
  await new Promise<void>((resolve, reject) => socket.once("connect", resolve).once("error", reject));
  socket.on("error", () => undefined);

  const messages: Buffer[] = [];
  let dataBytes = 0;
  let headers = 0;
  let ended = false;
  let resetCode: number | null = null;
  let closeCall!: () => void;
  const closed = new Promise<void>((resolve) => (closeCall = resolve));
  socket.once("close", () => closeCall());

  let inbox = Buffer.alloc(0);
  let grpcBytes = Buffer.alloc(0);
  socket.on("data", (chunk: Buffer) => {
    inbox = Buffer.concat([inbox, chunk]);
    while (inbox.length >= 9) {
      const length = inbox.readUIntBE(0, 3);
      if (inbox.length < 9 + length) break;
      const [type, flags] = [inbox[3]!, inbox[4]!];
      const stream = inbox.readUInt32BE(5) & 0x7fffffff;
      const payload = inbox.subarray(9, 9 + length);
      inbox = inbox.subarray(9 + length);
      if (type === FRAME.SETTINGS && !(flags & FLAG.ACK)) socket.write(frame(FRAME.SETTINGS, FLAG.ACK, 0));
      if (type === FRAME.PING && !(flags & FLAG.ACK)) socket.write(frame(FRAME.PING, FLAG.ACK, 0, Buffer.from(payload)));
      if (stream !== STREAM) continue;
      if (type === FRAME.DATA) {
        dataBytes += length;
        const data = flags & FLAG.PADDED ? payload.subarray(1, payload.length - payload[0]!) : payload;
        grpcBytes = Buffer.concat([grpcBytes, data]);
        while (grpcBytes.length >= 5 && grpcBytes.length >= 5 + grpcBytes.readUInt32BE(1)) {
          const size = grpcBytes.readUInt32BE(1);
          messages.push(Buffer.from(grpcBytes.subarray(5, 5 + size)));
          grpcBytes = grpcBytes.subarray(5 + size);
        }
      }
      if (type === FRAME.HEADERS) headers++;
      if (type === FRAME.RST_STREAM) {
        resetCode = payload.readUInt32BE(0);
        closeCall();
      }
      if ((type === FRAME.DATA || type === FRAME.HEADERS) && flags & FLAG.END_STREAM) {
        ended = true;
        closeCall();
      }
    }
  });

  const fields = [
    [":method", "POST"],
    [":scheme", "http"],
    [":path", method],
    [":authority", "localhost"],
    ["content-type", "application/grpc"],
    ["te", "trailers"],
    ...Object.entries(metadata),
  ];
  const frames = [
    PREFACE,
    frame(FRAME.SETTINGS, 0, 0),
    frame(FRAME.HEADERS, FLAG.END_HEADERS, STREAM, Buffer.concat(fields.map(([n, v]) => literalField(n!, v!)))),
  ];
  for (let at = 0; at < body.length; at += MAX_FRAME) {
    const last = at + MAX_FRAME >= body.length;
    frames.push(frame(FRAME.DATA, last ? FLAG.END_STREAM : 0, STREAM, body.subarray(at, at + MAX_FRAME)));
  }
  socket.write(Buffer.concat(frames));

  return {
    messages,
    get dataBytes() {
      return dataBytes;
    },
    get headers() {
      return headers;
    },
    get ended() {
      return ended;
    },
    get resetCode() {
      return resetCode;
    },
    closed,
    grant(bytes) {
      socket.write(Buffer.concat([frame(FRAME.WINDOW_UPDATE, 0, STREAM, uint32(bytes)), frame(FRAME.WINDOW_UPDATE, 0, 0, uint32(bytes))]));
    },
    cancel() {
      socket.write(frame(FRAME.RST_STREAM, 0, STREAM, uint32(H2_CANCEL)));
    },
    destroy() {
      socket.destroy();
    },
  };
}
