/**
 * Roots, garbage collection and maintenance, with honest semantics for a
 * store that never deletes anything: every path is live, so temporary and
 * indirect roots are accepted and need no record, there are no roots to
 * find, collecting garbage frees nothing (0 bytes), deleting specific paths
 * is refused, and permanent roots (symlinks on the daemon's machine) are
 * refused. OptimiseStore is a no-op (castore deduplicates already);
 * VerifyStore re-hashes every NAR when asked to check contents.
 *
 * @module
 */
import { bytesEqual } from "../../store/path_info.ts";
import { hashNar } from "../../store/nar_calculation.ts";
import { Limits, Op, writeNext } from "../../wire/mod.ts";
import { type OpHandler, UnsupportedOpError } from "../connection.ts";
import { DaemonError } from "../store.ts";
import {
  last,
  readPathString,
  readPathStrings,
  writePathSet,
} from "./common.ts";

const addTempRoot: OpHandler = async (c) => {
  c.note("path", await readPathString(c.r));
  last(c);
  c.w.u64(1);
};

const addIndirectRoot: OpHandler = async (c) => {
  c.note("link", await c.r.readString(Limits.path, "root link"));
  last(c);
  c.w.u64(1);
};

const addPermRoot: OpHandler = async (c) => {
  c.note("path", await readPathString(c.r));
  c.note("root", await c.r.readString(Limits.path, "root link"));
  throw new UnsupportedOpError(
    "AddPermRoot",
    "this daemon never collects garbage and keeps no root links",
  );
};

const syncWithGC: OpHandler = (c) => {
  last(c);
  c.w.u64(1);
  return Promise.resolve();
};

const findRoots: OpHandler = (c) => {
  last(c);
  c.w.u64(0);
  return Promise.resolve();
};

const GC_ACTIONS = ["ReturnLive", "ReturnDead", "DeleteDead", "DeleteSpecific"];

const collectGarbage: OpHandler = async (c) => {
  const action = await c.r.readNumber("GC action");
  const paths = await readPathStrings(c.r, "paths to delete");
  const ignoreLiveness = await c.r.readBool("ignoreLiveness");
  const maxFreed = await c.r.readU64("maxFreed");
  for (let i = 0; i < 3; i++) await c.r.readNumber("obsolete GC field");
  c.note("action", GC_ACTIONS[action] ?? action);
  c.note("paths", paths.length);
  void maxFreed;
  if (action > 3) throw new DaemonError(`invalid GC action ${action}`);
  if (ignoreLiveness) {
    throw new DaemonError("you are not allowed to ignore liveness");
  }
  if (action === 3) {
    throw new DaemonError("this daemon never deletes store paths");
  }
  // Every path is live here: "return live" lists them all, the rest is empty.
  const live = action === 0 ? await c.store.allValidPaths() : [];
  last(c);
  writePathSet(c.w, live);
  c.w.u64(0).u64(0); // bytes freed, obsolete
};

const optimiseStore: OpHandler = (c) => {
  last(c);
  c.w.u64(1);
  return Promise.resolve();
};

const verifyStore: OpHandler = async (c) => {
  const checkContents = await c.r.readBool("checkContents");
  const repair = await c.r.readBool("repair");
  c.note("checkContents", checkContents);
  if (repair) throw new DaemonError("this daemon cannot repair paths");
  let errors = false;
  const messages: string[] = [];
  if (checkContents) {
    for (const p of await c.store.allValidPaths()) {
      const info = await c.store.queryPathInfo(p);
      const nar = await c.store.nar(p);
      if (!info || !nar) continue;
      try {
        const got = await hashNar(nar);
        if (
          !bytesEqual(got.narSha256, info.narHash.digest) ||
          got.narSize !== info.narSize
        ) {
          errors = true;
          messages.push(
            `path '${p}' was modified! (NAR hash or size differs from the recorded one)`,
          );
        }
      } catch (e) {
        errors = true;
        messages.push(`path '${p}': ${(e as Error).message}`);
      }
    }
  }
  for (const m of messages) writeNext(c.w, m + "\n");
  last(c);
  c.w.bool(errors);
};

const setOptions: OpHandler = async (c) => {
  const names = [
    "keepFailed",
    "keepGoing",
    "tryFallback",
    "verbosity",
    "maxBuildJobs",
    "maxSilentTime",
    "useBuildHook",
    "verboseBuild",
    "logType",
    "printBuildTrace",
    "buildCores",
    "useSubstitutes",
  ];
  for (const n of names) await c.r.readNumber(n);
  if (c.version.minor >= 12) {
    const overrides = await c.r.readStringMap(
      Limits.count,
      Limits.text,
      "settings",
    );
    c.note("overrides", overrides.size);
  }
  // Settings concern building and substituting, which this daemon does not do.
  last(c);
};

/** Root, GC, maintenance and option handlers by op number. */
export const gcOps: [number, OpHandler][] = [
  [Op.AddTempRoot, addTempRoot],
  [Op.AddIndirectRoot, addIndirectRoot],
  [Op.AddPermRoot, addPermRoot],
  [Op.SyncWithGC, syncWithGC],
  [Op.FindRoots, findRoots],
  [Op.CollectGarbage, collectGarbage],
  [Op.OptimiseStore, optimiseStore],
  [Op.VerifyStore, verifyStore],
  [Op.SetOptions, setOptions],
];
