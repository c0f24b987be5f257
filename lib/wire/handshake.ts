/**
 * Values of the handshake: the trust flag (1.35+) and what the daemon tells
 * the client after the version exchange (its Nix version from 1.33, whether
 * it trusts the client from 1.35).
 *
 * @module
 */
import { Limits, WireError } from "./errors.ts";
import type { WireReader } from "./reader.ts";
import { atLeast, type ProtocolVersion } from "./version.ts";
import type { WireWriter } from "./writer.ts";

/** Whether the daemon trusts the client: unknown, yes or no. */
export type TrustedFlag = undefined | true | false;

/** Reads an optional trusted flag (0 unknown, 1 trusted, 2 not trusted). */
export async function readTrustedFlag(r: WireReader): Promise<TrustedFlag> {
  const at = r.offset;
  const n = await r.readNumber("trusted flag");
  if (n === 0) return undefined;
  if (n === 1) return true;
  if (n === 2) return false;
  throw new WireError(`invalid trusted flag ${n}`, at);
}

/** Writes an optional trusted flag. */
export function writeTrustedFlag(w: WireWriter, t: TrustedFlag): void {
  w.u64(t === undefined ? 0 : t ? 1 : 2);
}

/** What the daemon sends after the version exchange. */
export interface ClientHandshakeInfo {
  /** The daemon's version string (1.33+). */
  daemonNixVersion?: string;
  /** Whether the daemon trusts the client (1.35+). */
  remoteTrustsUs?: TrustedFlag;
}

/** Writes the daemon's handshake info for a client of version `v`. */
export function writeClientHandshakeInfo(
  w: WireWriter,
  v: ProtocolVersion,
  info: ClientHandshakeInfo,
): void {
  if (atLeast(v, 33)) w.string(info.daemonNixVersion ?? "");
  if (atLeast(v, 35)) writeTrustedFlag(w, info.remoteTrustsUs);
}

/** Reads the daemon's handshake info (client side). */
export async function readClientHandshakeInfo(
  r: WireReader,
  v: ProtocolVersion,
): Promise<ClientHandshakeInfo> {
  const info: ClientHandshakeInfo = {};
  if (atLeast(v, 33)) {
    info.daemonNixVersion = await r.readString(Limits.string, "daemon version");
  }
  if (atLeast(v, 35)) info.remoteTrustsUs = await readTrustedFlag(r);
  return info;
}
