/**
 * Error helpers for the gRPC clients: recognise NOT_FOUND, and name the
 * peer in connection failures so a one-line message says where it failed.
 *
 * @module
 */
import { Code, ConnectError } from "@connectrpc/connect";

/** Whether `e` is a gRPC NOT_FOUND. */
export function isNotFound(e: unknown): boolean {
  return e instanceof ConnectError && e.code === Code.NotFound;
}

/** System error codes that mean the peer cannot be reached (or went away). */
const UNREACHABLE = new Set([
  "ECONNREFUSED",
  "ENOENT",
  "ECONNRESET",
  "EPIPE",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "ETIMEDOUT",
  "EACCES",
  "ENOTSOCK",
  "EADDRNOTAVAIL",
]);

/**
 * Re-throws `e` as a ConnectError. Failures to reach the peer become
 * `Unavailable` naming `peer`; errors the server sent pass through.
 */
export function rethrowFrom(peer: string, e: unknown): never {
  const ce = ConnectError.from(e);
  if (ce.isWireError) throw ce;
  const sysCode = systemCode(e);
  if (sysCode && UNREACHABLE.has(sysCode)) {
    throw new ConnectError(
      `cannot reach ${peer}: ${ce.rawMessage}`,
      Code.Unavailable,
      undefined,
      undefined,
      e,
    );
  }
  if (
    ce.code === Code.Unavailable || ce.code === Code.Unknown ||
    ce.code === Code.Internal
  ) {
    throw new ConnectError(
      `${peer}: ${ce.rawMessage}`,
      ce.code,
      ce.metadata,
      undefined,
      e,
    );
  }
  throw ce;
}

/** The first string `code` (errno name) along the `cause` chain of `e`. */
function systemCode(e: unknown): string | undefined {
  let c: unknown = e;
  for (let i = 0; c && i < 5; i++) {
    const code = (c as { code?: unknown }).code;
    if (typeof code === "string") return code;
    c = (c as { cause?: unknown }).cause;
  }
  return undefined;
}

/** `DataLoss` for a reply that breaks the protocol's promises. */
export function dataLoss(peer: string, message: string): ConnectError {
  return new ConnectError(`${peer}: ${message}`, Code.DataLoss);
}
