/**
 * Building and derivation outputs. This daemon never builds or substitutes:
 * BuildPaths/BuildPathsWithResults/EnsurePath succeed for what is already
 * valid and fail clearly otherwise; BuildDerivation is parsed and refused.
 * Derivation output maps come from the .drv file in the store. Realisations
 * (content-addressed derivations) are not kept: queries answer "none",
 * registrations are refused.
 *
 * @module
 */
import {
  atLeast,
  BuildStatus,
  type DerivedPath,
  FEATURE_REALISATION_WITH_PATH,
  Limits,
  Op,
  parseDerivedPath,
  readDrvOutput,
  readRealisation,
  writeKeyedBuildResult,
} from "../../wire/mod.ts";
import {
  type OpContext,
  type OpHandler,
  UnsupportedOpError,
} from "../connection.ts";
import { checkDerivedPath as check, NO_BUILD, outputsOf } from "./derived.ts";
import { DaemonError, parsePath } from "../store.ts";
import { last, readPathString, writePathSet } from "./common.ts";
import { readDerivedPaths } from "./query.ts";

async function readBuildArgs(c: OpContext): Promise<DerivedPath[]> {
  const targets = await readDerivedPaths(c);
  if (atLeast(c.version, 15)) await c.r.readNumber("build mode");
  c.note("targets", targets);
  return targets.map((t) => parseDerivedPath(t, c.version));
}

const buildPaths: OpHandler = async (c) => {
  for (const dp of await readBuildArgs(c)) {
    const why = await check(c, dp, new Map());
    if (why) throw new DaemonError(why);
  }
  last(c);
  c.w.u64(1);
};

const buildPathsWithResults: OpHandler = async (c) => {
  const targets = await readDerivedPaths(c);
  await c.r.readNumber("build mode");
  c.note("targets", targets);
  const results = [];
  for (const t of targets) {
    const outputs = new Map<string, string>();
    const why = await check(c, parseDerivedPath(t, c.version), outputs);
    results.push({
      path: t,
      status: why ? BuildStatus.MiscFailure : BuildStatus.AlreadyValid,
      errorMsg: why ?? "",
      timesBuilt: 0,
      isNonDeterministic: false,
      startTime: 0,
      stopTime: 0,
      builtOutputs: new Map(
        [...outputs].map(([n, p]) => [n, { outPath: p, signatures: [] }]),
      ),
    });
  }
  last(c);
  c.w.u64(results.length);
  for (const res of results) writeKeyedBuildResult(c.w, c.version, res);
};

const buildDerivation: OpHandler = async (c) => {
  const drvPath = await readPathString(c.r, "derivation path");
  const n = await c.r.readNumber("output count", Limits.count);
  for (let i = 0; i < n; i++) {
    for (
      const what of ["output name", "output path", "hash algorithm", "hash"]
    ) await c.r.readString(Limits.path, what);
  }
  await c.r.readStrings(Limits.count, Limits.path, "input sources");
  await c.r.readString(Limits.string, "platform");
  await c.r.readString(Limits.path, "builder");
  await c.r.readStrings(Limits.count, Limits.text, "arguments");
  const envs = await c.r.readNumber("environment size", Limits.count);
  for (let i = 0; i < envs; i++) {
    await c.r.readString(Limits.string, "environment name");
    await c.r.readString(Limits.text, "environment value");
  }
  await c.r.readNumber("build mode");
  c.note("drv", drvPath);
  throw new UnsupportedOpError("BuildDerivation", NO_BUILD);
};

const ensurePath: OpHandler = async (c) => {
  const s = await readPathString(c.r);
  c.note("path", s);
  if (!(await c.store.isValid(parsePath(s)))) {
    throw new DaemonError(`path '${s}' is not valid and ${NO_BUILD}`);
  }
  last(c);
  c.w.u64(1);
};

const queryDerivationOutputMap: OpHandler = async (c) => {
  const s = await readPathString(c.r);
  c.note("drv", s);
  const outs = await outputsOf(c, parsePath(s));
  last(c);
  c.w.stringMap(outs);
};

const queryDerivationOutputs: OpHandler = async (c) => {
  const s = await readPathString(c.r);
  const outs = await outputsOf(c, parsePath(s));
  last(c);
  writePathSet(c.w, [...outs.values()].filter((p) => p).map(parsePath));
};

const queryDerivationOutputNames: OpHandler = async (c) => {
  const s = await readPathString(c.r);
  const outs = await outputsOf(c, parsePath(s));
  last(c);
  c.w.stringSet(outs.keys());
};

const registerDrvOutput: OpHandler = async (c) => {
  if (c.version.features.has(FEATURE_REALISATION_WITH_PATH)) {
    c.note("output", (await readRealisation(c.r)).drvPath);
  } else if (atLeast(c.version, 31)) {
    c.note("realisation", await c.r.readString(Limits.text, "realisation"));
  } else {
    c.note("output", await c.r.readString(Limits.string, "output id"));
    await c.r.readString(Limits.path, "output path");
  }
  throw new UnsupportedOpError(
    "RegisterDrvOutput",
    "this daemon keeps no realisations",
  );
};

const queryRealisation: OpHandler = async (c) => {
  if (c.version.features.has(FEATURE_REALISATION_WITH_PATH)) {
    const o = await readDrvOutput(c.r);
    c.note("output", `${o.drvPath}^${o.outputName}`);
  } else {
    c.note("output", await c.r.readString(Limits.string, "output id"));
  }
  // No realisations are kept. In every form (empty set; optional "none") the answer is one 0.
  last(c);
  c.w.u64(0);
};

/** Build and derivation handlers by op number. */
export const buildOps: [number, OpHandler][] = [
  [Op.BuildPaths, buildPaths],
  [Op.BuildPathsWithResults, buildPathsWithResults],
  [Op.BuildDerivation, buildDerivation],
  [Op.EnsurePath, ensurePath],
  [Op.QueryDerivationOutputMap, queryDerivationOutputMap],
  [Op.QueryDerivationOutputs, queryDerivationOutputs],
  [Op.QueryDerivationOutputNames, queryDerivationOutputNames],
  [Op.RegisterDrvOutput, registerDrvOutput],
  [Op.QueryRealisation, queryRealisation],
];
