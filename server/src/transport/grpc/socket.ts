// Unix-socket placement for a local sidecar: the socket is the access control (no TLS, no auth), so
// it lives in a 0700 directory and is itself 0600. A stale socket file from a dead server is
// replaced; a live one is an error (two servers on one socket would be a silent mess).
import { chmodSync, lstatSync, mkdirSync, mkdtempSync, rmSync, unlinkSync } from "node:fs";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";

/** sockaddr_un.sun_path is 108 bytes on Linux (104 on macOS), NUL included. */
const MAX_SOCKET_PATH = process.platform === "linux" ? 107 : 103;

export interface PreparedSocket {
  path: string;
  /** Restricts the socket file to its owner once bound (the directory already is). */
  secure(): void;
  /** Removes the socket (and the directory when we created it). */
  cleanup(): void;
}

function isLive(path: string): Promise<boolean> {
  return new Promise((res) => {
    const s = connect(path);
    s.once("connect", () => {
      s.destroy();
      res(true);
    });
    s.once("error", () => res(false));
  });
}

/** `requested` null: a fresh private directory under the temp dir. */
export async function prepareSocket(requested: string | null): Promise<PreparedSocket> {
  let path: string;
  let ownDir: string | null = null;
  if (requested === null) {
    ownDir = mkdtempSync(join(tmpdir(), "radio-sidecar-")); // mode 0700
    path = join(ownDir, "radio.sock");
  } else {
    path = resolve(requested);
    const dir = dirname(path);
    try {
      lstatSync(dir);
    } catch {
      mkdirSync(dir, { recursive: true, mode: 0o700 });
    }
    let st: ReturnType<typeof lstatSync> | null;
    try {
      st = lstatSync(path);
    } catch {
      st = null;
    }
    if (st) {
      if (!st.isSocket()) throw new Error(`${path} exists and is not a socket; refusing to replace it`);
      if (await isLive(path)) throw new Error(`another server is listening on ${path}`);
      unlinkSync(path); // stale, from a server that did not clean up
    }
  }
  if (Buffer.byteLength(path) > MAX_SOCKET_PATH) {
    if (ownDir) rmSync(ownDir, { recursive: true, force: true });
    throw new Error(`socket path is ${Buffer.byteLength(path)} bytes, above the ${MAX_SOCKET_PATH}-byte limit for unix sockets: ${path}`);
  }
  // The socket this server bound (device and inode): cleanup removes that one only, never a socket a
  // newer server has bound at the same path since (a shared sidecar's path is fixed by its key).
  let bound: { dev: number; ino: number } | null = null;
  return {
    path,
    secure: () => {
      chmodSync(path, 0o600);
      const st = lstatSync(path);
      bound = { dev: st.dev, ino: st.ino };
    },
    cleanup: () => {
      try {
        const st = lstatSync(path);
        if (st.isSocket() && (bound === null || (st.dev === bound.dev && st.ino === bound.ino))) unlinkSync(path);
      } catch {
        /* already gone */
      }
      if (ownDir) rmSync(ownDir, { recursive: true, force: true });
    },
  };
}
