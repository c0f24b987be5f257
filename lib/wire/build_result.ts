/**
 * `BuildResult` and `KeyedBuildResult` on the wire: status and message;
 * times from 1.29; CPU times from 1.37; built outputs as a JSON string map
 * from 1.28, or as realisations with the `realisation-with-path-not-hash`
 * feature.
 *
 * @module
 */
import { Limits, WireError } from "./errors.ts";
import type { WireReader } from "./reader.ts";
import {
  readUnkeyedRealisation,
  type UnkeyedRealisation,
  writeUnkeyedRealisation,
} from "./realisation.ts";
import {
  atLeast,
  FEATURE_REALISATION_WITH_PATH,
  type ProtocolVersion,
} from "./version.ts";
import type { WireWriter } from "./writer.ts";

/** Status codes of a build result. */
export const BuildStatus = {
  Built: 0,
  Substituted: 1,
  AlreadyValid: 2,
  PermanentFailure: 3,
  InputRejected: 4,
  OutputRejected: 5,
  TransientFailure: 6,
  CachedFailure: 7,
  TimedOut: 8,
  MiscFailure: 9,
  DependencyFailed: 10,
  LogLimitExceeded: 11,
  NotDeterministic: 12,
  ResolvesToAlreadyValid: 13,
  NoSubstituters: 14,
} as const;

/** The outcome of building (or finding) one derived path. */
export interface BuildResult {
  status: number;
  errorMsg: string;
  timesBuilt: number;
  isNonDeterministic: boolean;
  startTime: number;
  stopTime: number;
  /** CPU time in microseconds, if known (1.37+). */
  cpuUser?: bigint;
  /** CPU time in microseconds, if known (1.37+). */
  cpuSystem?: bigint;
  /** Output name to realisation (absolute outPath). */
  builtOutputs: Map<string, UnkeyedRealisation>;
}

const STORE_DIR = "/nix/store";
/** The dummy derivation hash old clients get in output ids (`sha256:` + 64 zeros). */
const DUMMY_ID = "sha256:" + "0".repeat(64);

async function readOptionalMicros(r: WireReader): Promise<bigint | undefined> {
  const at = r.offset;
  const tag = await r.readNumber("optional tag");
  if (tag === 0) return undefined;
  if (tag !== 1) throw new WireError(`invalid optional tag ${tag}`, at);
  return BigInt.asIntN(64, await r.readU64("duration"));
}

function writeOptionalMicros(w: WireWriter, x: bigint | undefined) {
  if (x === undefined) w.u64(0);
  else w.u64(1).u64(BigInt.asUintN(64, x));
}

/** Reads a `BuildResult`. */
export async function readBuildResult(
  r: WireReader,
  v: ProtocolVersion,
): Promise<BuildResult> {
  const at = r.offset;
  const status = await r.readNumber("build status");
  if (status > 14) throw new WireError(`invalid build status ${status}`, at);
  const errorMsg = await r.readString(Limits.text, "error message");
  const res: BuildResult = {
    status,
    errorMsg,
    timesBuilt: 0,
    isNonDeterministic: false,
    startTime: 0,
    stopTime: 0,
    builtOutputs: new Map(),
  };
  if (atLeast(v, 29)) {
    res.timesBuilt = await r.readNumber("times built");
    res.isNonDeterministic = await r.readBool("non-deterministic");
    res.startTime = await r.readNumber("start time");
    res.stopTime = await r.readNumber("stop time");
  }
  if (atLeast(v, 37)) {
    res.cpuUser = await readOptionalMicros(r);
    res.cpuSystem = await readOptionalMicros(r);
  }
  if (v.features.has(FEATURE_REALISATION_WITH_PATH)) {
    const n = await r.readNumber("output count", Limits.count);
    for (let i = 0; i < n; i++) {
      const name = await r.readString(Limits.string, "output name");
      res.builtOutputs.set(name, await readUnkeyedRealisation(r));
    }
  } else if (atLeast(v, 28)) {
    const m = await r.readStringMap(Limits.count, Limits.text, "built outputs");
    for (const [id, json] of m) {
      const bang = id.indexOf("!");
      if (bang < 0) throw new WireError(`invalid derivation output id "${id}"`);
      let outPath: unknown;
      try {
        outPath = JSON.parse(json).outPath;
      } catch {
        throw new WireError(`invalid realisation JSON for "${id}"`);
      }
      if (typeof outPath !== "string") {
        throw new WireError(`realisation for "${id}" has no outPath`);
      }
      res.builtOutputs.set(id.slice(bang + 1), {
        outPath: outPath.startsWith("/") ? outPath : `${STORE_DIR}/${outPath}`,
        signatures: [],
      });
    }
  }
  return res;
}

/** Writes a `BuildResult`. */
export function writeBuildResult(
  w: WireWriter,
  v: ProtocolVersion,
  res: BuildResult,
): void {
  w.u64(res.status).string(res.errorMsg);
  if (atLeast(v, 29)) {
    w.u64(res.timesBuilt).bool(res.isNonDeterministic).u64(res.startTime).u64(
      res.stopTime,
    );
  }
  if (atLeast(v, 37)) {
    writeOptionalMicros(w, res.cpuUser);
    writeOptionalMicros(w, res.cpuSystem);
  }
  const outputs = [...res.builtOutputs].sort((
    a,
    b,
  ) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  if (v.features.has(FEATURE_REALISATION_WITH_PATH)) {
    w.u64(outputs.length);
    for (const [name, real] of outputs) {
      w.string(name);
      writeUnkeyedRealisation(w, real);
    }
  } else if (atLeast(v, 28)) {
    w.stringMap(outputs.map(([name, real]) => {
      const id = `${DUMMY_ID}!${name}`;
      const base = real.outPath.slice(real.outPath.lastIndexOf("/") + 1);
      return [id, JSON.stringify({ id, outPath: base })];
    }));
  }
}

/** Reads a `KeyedBuildResult`: the derived path string, then the result. */
export async function readKeyedBuildResult(
  r: WireReader,
  v: ProtocolVersion,
): Promise<{ path: string } & BuildResult> {
  const path = await r.readString(Limits.path, "derived path");
  return { path, ...(await readBuildResult(r, v)) };
}

/** Writes a `KeyedBuildResult`. */
export function writeKeyedBuildResult(
  w: WireWriter,
  v: ProtocolVersion,
  res: { path: string } & BuildResult,
): void {
  w.string(res.path);
  writeBuildResult(w, v, res);
}
