/**
 * Small argument checks shared by the gRPC servers and clients.
 *
 * @module
 */
import { Code, ConnectError } from "@connectrpc/connect";
import { digestToString } from "../castore/digest.ts";

/** Length of a BLAKE3 digest in bytes. */
export const B3_DIGEST_SIZE = 32;

/** Throws `InvalidArgument` unless `digest` is 32 bytes; `what` names the field. */
export function requireB3Digest(digest: Uint8Array, what: string): void {
  if (digest.length !== B3_DIGEST_SIZE) {
    throw new ConnectError(
      `${what} must be a ${B3_DIGEST_SIZE}-byte BLAKE3 digest, got ${digest.length} bytes`,
      Code.InvalidArgument,
    );
  }
}

/** `PermissionDenied` for a write to a read-only server. */
export function readOnlyError(what: string): ConnectError {
  return new ConnectError(
    `${what}: this store daemon is read-only`,
    Code.PermissionDenied,
  );
}

/** Formats a digest for messages (`b3:` + base64, as snix prints them). */
export function showDigest(digest: Uint8Array): string {
  return digestToString(digest);
}

/** Whether two byte arrays are equal. */
export function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}
