/**
 * What a Hub download fails with: HubDownloadError and its codes, and the errors that make a transfer start
 * again.
 */

export type HubErrorCode =
  /** 401, or 403 other than gating: missing/invalid token or no access to a private repo */
  | "unauthorized"
  /** gated repo, access not granted to the token's account (or no token) */
  | "gated"
  | "repo_not_found"
  | "revision_not_found"
  | "entry_not_found"
  /** hub unreachable, connection dropped, timeouts, 5xx after retries */
  | "network"
  /** offline (or unreachable) and the cache does not hold what was asked */
  | "not_cached"
  /** downloaded bytes do not match the sha256 / git sha1 / size announced by the Hub */
  | "checksum"
  | "http"
  | "bad_response";

export interface HubErrorDetails {
  repo: string;
  revision: string;
  file?: string | undefined;
  status?: number | undefined;
  url?: string | undefined;
  /** worth retrying (network trouble, 5xx, 429) */
  transient?: boolean;
  cause?: unknown;
}

export class HubDownloadError extends Error {
  override readonly name = "HubDownloadError";
  readonly repo: string;
  readonly revision: string;
  readonly file: string | undefined;
  readonly status: number | undefined;
  readonly url: string | undefined;
  readonly transient: boolean;

  constructor(
    readonly code: HubErrorCode,
    message: string,
    d: HubErrorDetails,
  ) {
    super(message, d.cause === undefined ? undefined : { cause: d.cause });
    ({ repo: this.repo, revision: this.revision, file: this.file, status: this.status, url: this.url } = d);
    this.transient = d.transient ?? false;
  }
}

export function causeText(err: unknown): string {
  const e = err as { message?: string; code?: string; cause?: { message?: string; code?: string } };
  const code = e?.cause?.code ?? e?.code;
  const msg = e?.cause?.message ?? e?.message ?? String(err);
  return code && !msg.includes(code) ? `${code}: ${msg}` : msg;
}

/** A transfer that must start again (dropped connection); retried like network errors. */
export class RestartTransfer extends Error {}
/** The server did not honour a Range request (HTTP 200, or another Content-Range). */
export class RangeIgnored extends RestartTransfer {}
