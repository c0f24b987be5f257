/**
 * Read-only queries: validity, path infos, references and referrers, hash
 * parts, derivers, substitutes (we have none) and QueryMissing.
 *
 * @module
 */
import { encodeBase16 } from "../../nix/hash.ts";
import type { StorePath } from "../../nix/store_path.ts";
import {
  atLeast,
  encodeUnkeyedValidPathInfo,
  Limits,
  Op,
  parseDerivedPath,
} from "../../wire/mod.ts";
import type { NixPathInfo } from "../../store/path_info.ts";
import type { OpContext, OpHandler } from "../connection.ts";
import { DaemonError, parsePath } from "../store.ts";
import { checkDerivedPath } from "./derived.ts";
import {
  last,
  parsePaths,
  readPathString,
  readPathStrings,
  toWireInfo,
  writePathSet,
} from "./common.ts";

const isValidPath: OpHandler = async (c) => {
  const s = await readPathString(c.r);
  c.note("path", s);
  const valid = await c.store.isValid(parsePath(s));
  c.note("valid", valid);
  last(c);
  c.w.bool(valid);
};

const queryValidPaths: OpHandler = async (c) => {
  const list = await readPathStrings(c.r);
  if (atLeast(c.version, 27)) await c.r.readBool("substitute");
  c.note("paths", list);
  const valid: StorePath[] = [];
  for (const p of parsePaths(list)) if (await c.store.isValid(p)) valid.push(p);
  c.note("valid", valid.length);
  last(c);
  writePathSet(c.w, valid);
};

/**
 * Encoded replies by the (memoized, see DaemonStore.queryPathInfo) info
 * object they encode: index 0 for clients before 1.16, 1 from 1.16 on (the
 * only version split of the encoding). Gone with the object.
 */
const encodedInfos = new WeakMap<NixPathInfo, Uint8Array[]>();

function encodedInfo(c: OpContext, info: NixPathInfo): Uint8Array {
  const k = atLeast(c.version, 16) ? 1 : 0;
  let e = encodedInfos.get(info);
  if (!e) encodedInfos.set(info, e = []);
  return e[k] ??= encodeUnkeyedValidPathInfo(c.version, toWireInfo(info));
}

const queryPathInfo: OpHandler = async (c) => {
  const s = await readPathString(c.r);
  c.note("path", s);
  const info = await c.store.queryPathInfo(parsePath(s));
  c.note("valid", info !== undefined);
  if (!info && !atLeast(c.version, 17)) {
    throw new DaemonError(`path '${s}' is not valid`);
  }
  last(c);
  if (atLeast(c.version, 17)) c.w.bool(info !== undefined);
  if (info) {
    c.note("narSize", info.narSize);
    c.w.raw(encodedInfo(c, info));
  }
};

const queryPathFromHashPart: OpHandler = async (c) => {
  const hashPart = await c.r.readString(Limits.path, "hash part");
  c.note("hashPart", hashPart);
  const p = await c.store.pathFromHashPart(hashPart);
  c.note("path", p?.toString() ?? "");
  last(c);
  c.w.string(p ? p.toString() : "");
};

const queryReferrers: OpHandler = async (c) => {
  const s = await readPathString(c.r);
  c.note("path", s);
  const refs = await c.store.referrers(parsePath(s));
  c.note("referrers", refs.length);
  last(c);
  writePathSet(c.w, refs);
};

const queryReferences: OpHandler = async (c) => {
  const s = await readPathString(c.r);
  c.note("path", s);
  const info = await c.store.queryPathInfo(parsePath(s));
  if (!info) throw new DaemonError(`path '${s}' is not valid`);
  last(c);
  writePathSet(c.w, info.references);
};

const queryPathHash: OpHandler = async (c) => {
  const s = await readPathString(c.r);
  c.note("path", s);
  const info = await c.store.queryPathInfo(parsePath(s));
  if (!info) throw new DaemonError(`path '${s}' is not valid`);
  last(c);
  c.w.string(encodeBase16(info.narHash.digest));
};

const queryDeriver: OpHandler = async (c) => {
  const s = await readPathString(c.r);
  c.note("path", s);
  const info = await c.store.queryPathInfo(parsePath(s));
  if (!info) throw new DaemonError(`path '${s}' is not valid`);
  last(c);
  c.w.string(info.deriver?.toString() ?? "");
};

const queryValidDerivers: OpHandler = async (c) => {
  const s = await readPathString(c.r);
  c.note("path", s);
  const info = await c.store.queryPathInfo(parsePath(s));
  const out: StorePath[] = [];
  // We know a path's deriver only from its own record; report it if valid.
  if (info?.deriver && (await c.store.isValid(info.deriver))) {
    out.push(info.deriver);
  }
  last(c);
  writePathSet(c.w, out);
};

const queryAllValidPaths: OpHandler = async (c) => {
  const all = await c.store.allValidPaths();
  c.note("count", all.length);
  last(c);
  writePathSet(c.w, all);
};

// Substitutes: this daemon has no substituters, so nothing is substitutable.
const hasSubstitutes: OpHandler = async (c) => {
  c.note("path", await readPathString(c.r));
  last(c);
  c.w.bool(false);
};

const querySubstitutablePaths: OpHandler = async (c) => {
  c.note("paths", await readPathStrings(c.r));
  last(c);
  c.w.u64(0);
};

const querySubstitutablePathInfo: OpHandler = async (c) => {
  c.note("path", await readPathString(c.r));
  last(c);
  c.w.u64(0);
};

const querySubstitutablePathInfos: OpHandler = async (c) => {
  if (atLeast(c.version, 22)) {
    const m = await c.r.readStringMap(Limits.count, Limits.path, "path/CA map");
    c.note("paths", [...m.keys()]);
  } else {
    c.note("paths", await readPathStrings(c.r));
  }
  last(c);
  c.w.u64(0);
};

/** Reads the derived paths of QueryMissing/BuildPaths as strings. */
export async function readDerivedPaths(
  c: Parameters<OpHandler>[0],
): Promise<string[]> {
  return await c.r.readStrings(
    Limits.count,
    Limits.path + 4096,
    "derived paths",
  );
}

const queryMissing: OpHandler = async (c) => {
  const targets = await readDerivedPaths(c);
  c.note("targets", targets);
  const unknown: StorePath[] = [];
  for (const t of targets) {
    const dp = parseDerivedPath(t, c.version);
    // Nothing here can be built or substituted: a missing path is "unknown".
    if (dp.type === "opaque") {
      const p = parsePath(dp.path);
      if (!(await c.store.isValid(p))) unknown.push(p);
    } else {
      const drv = parsePath(dp.drvPath);
      if (
        !(await c.store.isValid(drv)) ||
        (await checkDerivedPath(c, dp)) !== undefined
      ) unknown.push(drv);
    }
  }
  c.note("unknown", unknown.length);
  last(c);
  c.w.u64(0); // willBuild
  c.w.u64(0); // willSubstitute
  writePathSet(c.w, unknown);
  c.w.u64(0).u64(0); // downloadSize, narSize
};

/** The query handlers by op number. */
export const queryOps: [number, OpHandler][] = [
  [Op.IsValidPath, isValidPath],
  [Op.QueryValidPaths, queryValidPaths],
  [Op.QueryPathInfo, queryPathInfo],
  [Op.QueryPathFromHashPart, queryPathFromHashPart],
  [Op.QueryReferrers, queryReferrers],
  [Op.QueryReferences, queryReferences],
  [Op.QueryPathHash, queryPathHash],
  [Op.QueryDeriver, queryDeriver],
  [Op.QueryValidDerivers, queryValidDerivers],
  [Op.QueryAllValidPaths, queryAllValidPaths],
  [Op.HasSubstitutes, hasSubstitutes],
  [Op.QuerySubstitutablePaths, querySubstitutablePaths],
  [Op.QuerySubstitutablePathInfo, querySubstitutablePathInfo],
  [Op.QuerySubstitutablePathInfos, querySubstitutablePathInfos],
  [Op.QueryMissing, queryMissing],
];
