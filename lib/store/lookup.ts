/**
 * Resolving `/nix/store/<hash>-<name>[/sub/path]` against the store: the
 * PathInfo, and the castore entry at the sub path (walking directories, not
 * following symlinks, as Nix's NAR accessor does).
 *
 * @module
 */
import { Code, ConnectError } from "@connectrpc/connect";
import type { Entry } from "../../proto/gen/snix/castore/protos/castore_pb.ts";
import type { PathInfo } from "../../proto/gen/snix/store/protos/pathinfo_pb.ts";
import type { DirectoryService } from "../castore/directory_service.ts";
import { digestToString } from "../castore/digest.ts";
import { STORE_DIR, StorePath } from "../nix/store_path.ts";
import type { PathInfoService } from "./path_info_service.ts";
import { renameEntry } from "./path_info.ts";

/** A store path argument split into the store path and the components below it. */
export interface StorePathArg {
  /** The top-level store path. */
  storePath: StorePath;
  /** Components below it (empty for the store path itself). */
  sub: string[];
}

/** Parses `/nix/store/<hash>-<name>[/sub/...]`; throws a clear `Error` if it is not one. */
export function parseStorePathArg(arg: string): StorePathArg {
  const prefix = STORE_DIR + "/";
  if (!arg.startsWith(prefix)) {
    throw new Error(
      `${
        JSON.stringify(arg)
      } is not a store path (it must start with ${prefix})`,
    );
  }
  const parts = arg.slice(prefix.length).split("/").filter((p) =>
    p !== "" && p !== "."
  );
  if (parts.length === 0) {
    throw new Error(`${JSON.stringify(arg)} is not a store path`);
  }
  if (parts.includes("..")) {
    throw new Error(`${JSON.stringify(arg)}: ".." is not allowed`);
  }
  let storePath: StorePath;
  try {
    storePath = StorePath.fromBaseName(parts[0]);
  } catch (e) {
    throw new Error(
      `${JSON.stringify(arg)} is not a valid store path: ${
        (e as Error).message
      }`,
    );
  }
  return { storePath, sub: parts.slice(1) };
}

/** A store path that has no PathInfo. */
export class NotInStoreError extends Error {
  constructor(readonly storePath: StorePath) {
    super(`${storePath} is not in the store`);
    this.name = "NotInStoreError";
  }
}

/** The PathInfo of `sp`; throws {@linkcode NotInStoreError} ("<path> is not in the store") if missing. */
export async function requirePathInfo(
  pathInfos: PathInfoService,
  sp: StorePath,
): Promise<PathInfo> {
  const info = await pathInfos.get(sp.digest);
  if (!info) throw new NotInStoreError(sp);
  return info;
}

/**
 * The entry at `arg.sub` below `root` (the store path's entry; a sub entry
 * keeps its own name, the root gets an empty one). Throws a clear error
 * naming the path if a component is missing or not a directory.
 */
export async function entryAt(
  root: Entry,
  arg: StorePathArg,
  directories: DirectoryService,
): Promise<Entry> {
  let cur = root;
  const enc = new TextEncoder();
  const sub = arg.sub;
  const display = [arg.storePath.toString(), ...sub].join("/");
  for (let i = 0; i < sub.length; i++) {
    const e = cur.entry;
    const here = [arg.storePath.toString(), ...sub.slice(0, i)].join("/");
    if (e.case !== "directory") {
      throw new Error(`path '${here}' is not a directory`);
    }
    const d = await directories.get(e.value.digest);
    if (!d) {
      throw new ConnectError(
        `directory ${
          digestToString(e.value.digest)
        } of '${here}' is missing from the store`,
        Code.DataLoss,
      );
    }
    const name = enc.encode(sub[i]);
    const eq = (n: Uint8Array) =>
      n.length === name.length && n.every((b, j) => b === name[j]);
    const dd = d.directories.find((x) => eq(x.name));
    const ff = d.files.find((x) => eq(x.name));
    const ss = d.symlinks.find((x) => eq(x.name));
    if (dd) cur = { entry: { case: "directory", value: dd } } as Entry;
    else if (ff) cur = { entry: { case: "file", value: ff } } as Entry;
    else if (ss) cur = { entry: { case: "symlink", value: ss } } as Entry;
    else throw new Error(`path '${display}' does not exist`);
  }
  return sub.length === 0 ? renameEntry(root, "") : cur;
}
