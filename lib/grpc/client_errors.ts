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

/** Re-throws `e` as a ConnectError; transport failures name `peer`. */
export function rethrowFrom(peer: string, e: unknown): never {
  const ce = ConnectError.from(e);
  if (
    ce.code === Code.Unavailable ||
    ce.code === Code.Unknown && !(e instanceof ConnectError)
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

/** `DataLoss` for a reply that breaks the protocol's promises. */
export function dataLoss(peer: string, message: string): ConnectError {
  return new ConnectError(`${peer}: ${message}`, Code.DataLoss);
}
