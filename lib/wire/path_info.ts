/**
 * `ValidPathInfo` and `UnkeyedValidPathInfo` on the wire, for every protocol
 * version from 1.10 on (1.16 added `ultimate`, signatures and the content
 * address). Store paths, hashes and content addresses stay strings here;
 * `lib/daemon` parses them.
 *
 * @module
 */
import { Limits } from "./errors.ts";
import type { WireReader } from "./reader.ts";
import { atLeast, type ProtocolVersion } from "./version.ts";
import { WireWriter } from "./writer.ts";

/** Metadata of a valid store path, without the path itself. */
export interface UnkeyedValidPathInfo {
  /** Absolute deriver path, or "" for none. */
  deriver: string;
  /** NAR hash: written as base16 SHA-256 without prefix; read as sent. */
  narHash: string;
  /** Absolute paths of the references (a set). */
  references: string[];
  /** Seconds since the epoch. */
  registrationTime: number;
  /** Size of the NAR serialisation. */
  narSize: number;
  /** Built locally (1.16+). */
  ultimate: boolean;
  /** `keyname:base64` signatures (1.16+; a set). */
  sigs: string[];
  /** Content address (`fixed:r:sha256:…`, `text:sha256:…`) or "" (1.16+). */
  ca: string;
}

/** A store path and its metadata. */
export interface ValidPathInfo extends UnkeyedValidPathInfo {
  /** Absolute store path. */
  path: string;
}

/** Reads an `UnkeyedValidPathInfo` as a client of version `v` sends it. */
export async function readUnkeyedValidPathInfo(
  r: WireReader,
  v: ProtocolVersion,
): Promise<UnkeyedValidPathInfo> {
  const deriver = await r.readString(Limits.path, "deriver");
  const narHash = await r.readString(Limits.string, "NAR hash");
  const references = await r.readStrings(
    Limits.count,
    Limits.path,
    "references",
  );
  const registrationTime = await r.readNumber("registration time");
  const narSize = await r.readNumber("NAR size");
  let ultimate = false, sigs: string[] = [], ca = "";
  if (atLeast(v, 16)) {
    ultimate = await r.readBool("ultimate");
    sigs = await r.readStrings(Limits.count, Limits.string, "signatures");
    ca = await r.readString(Limits.string, "content address");
  }
  return {
    deriver,
    narHash,
    references,
    registrationTime,
    narSize,
    ultimate,
    sigs,
    ca,
  };
}

/** Writes an `UnkeyedValidPathInfo` for a client of version `v`. */
export function writeUnkeyedValidPathInfo(
  w: WireWriter,
  v: ProtocolVersion,
  info: UnkeyedValidPathInfo,
): void {
  w.string(info.deriver).string(info.narHash).stringSet(info.references);
  w.u64(info.registrationTime).u64(info.narSize);
  if (atLeast(v, 16)) {
    w.bool(info.ultimate).stringSet(info.sigs).string(info.ca);
  }
}

/**
 * An `UnkeyedValidPathInfo` encoded for a client of version `v`, as one byte
 * array (to keep and send again with {@linkcode WireWriter.raw}).
 */
export function encodeUnkeyedValidPathInfo(
  v: ProtocolVersion,
  info: UnkeyedValidPathInfo,
): Uint8Array {
  const w = new WireWriter(NO_SINK, 1024);
  writeUnkeyedValidPathInfo(w, v, info);
  return w.take();
}

const NO_SINK = {
  write() {
    throw new Error("this writer only encodes");
  },
  close() {},
  abort() {},
};

/** Reads a `ValidPathInfo` (path first). */
export async function readValidPathInfo(
  r: WireReader,
  v: ProtocolVersion,
): Promise<ValidPathInfo> {
  const path = await r.readString(Limits.path, "store path");
  return { path, ...(await readUnkeyedValidPathInfo(r, v)) };
}

/** Writes a `ValidPathInfo` (path first). */
export function writeValidPathInfo(
  w: WireWriter,
  v: ProtocolVersion,
  info: ValidPathInfo,
): void {
  w.string(info.path);
  writeUnkeyedValidPathInfo(w, v, info);
}
