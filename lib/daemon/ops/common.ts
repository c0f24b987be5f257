/**
 * Helpers shared by the op handlers: reading paths, answering with paths,
 * writing path infos.
 *
 * @module
 */
import type { StorePath } from "../../nix/store_path.ts";
import type { NixPathInfo } from "../../store/path_info.ts";
import { encodeBase16 } from "../../nix/hash.ts";
import {
  Limits,
  type UnkeyedValidPathInfo,
  type WireReader,
  type WireWriter,
  writeLast,
} from "../../wire/mod.ts";
import type { OpContext } from "../connection.ts";
import { parsePath } from "../store.ts";

/** Reads one store path string (bounded). */
export function readPathString(
  r: WireReader,
  what = "store path",
): Promise<string> {
  return r.readString(Limits.path, what);
}

/** Reads a list or set of store path strings (bounded). */
export function readPathStrings(
  r: WireReader,
  what = "store paths",
): Promise<string[]> {
  return r.readStrings(Limits.count, Limits.path, what);
}

/** Parses path strings. */
export function parsePaths(list: string[]): StorePath[] {
  return list.map(parsePath);
}

/**
 * Ends the side channel with `STDERR_LAST`; the reply follows. From here on
 * an error cannot be reported to the client, so it ends the connection.
 */
export function last(c: OpContext): void {
  writeLast(c.w);
  c.replyStarted();
}

/** Writes a set of store paths. */
export function writePathSet(w: WireWriter, paths: Iterable<StorePath>): void {
  w.stringSet([...paths].map((p) => p.toString()));
}

/** Nix's info fields as the codec writes them. */
export function toWireInfo(info: NixPathInfo): UnkeyedValidPathInfo {
  return {
    deriver: info.deriver ? info.deriver.toString() : "",
    narHash: encodeBase16(info.narHash.digest),
    references: info.references.map((r) => r.toString()),
    registrationTime: info.registrationTime,
    narSize: info.narSize,
    ultimate: info.ultimate,
    sigs: info.sigs,
    ca: info.ca ?? "",
  };
}
