/**
 * Numbers of the Nix worker protocol: handshake magics, STDERR message
 * codes and operation numbers (checked against NixOS/nix
 * `src/libstore/include/nix/store/worker-protocol.hh`).
 *
 * @module
 */

/** First word a client sends: `nixc`. */
export const WORKER_MAGIC_1 = 0x6e697863;
/** Server's answer to {@linkcode WORKER_MAGIC_1}: `dxio`. */
export const WORKER_MAGIC_2 = 0x6478696f;

/** A log line for the client. */
export const STDERR_NEXT = 0x6f6c6d67;
/** The daemon asks the client for up to N bytes of data (pre-1.23 AddToStoreNar). */
export const STDERR_READ = 0x64617461;
/** Data for the client's sink (old export). */
export const STDERR_WRITE = 0x64617416;
/** End of log messages; the reply follows. */
export const STDERR_LAST = 0x616c7473;
/** The operation failed; an error follows. */
export const STDERR_ERROR = 0x63787470;
/** An activity starts. */
export const STDERR_START_ACTIVITY = 0x53545254;
/** An activity stops. */
export const STDERR_STOP_ACTIVITY = 0x53544f50;
/** A result of an activity. */
export const STDERR_RESULT = 0x52534c54;

/** Operation numbers, including obsolete ones older clients may still send. */
export const Op = {
  IsValidPath: 1,
  HasSubstitutes: 3,
  QueryPathHash: 4,
  QueryReferences: 5,
  QueryReferrers: 6,
  AddToStore: 7,
  AddTextToStore: 8,
  BuildPaths: 9,
  EnsurePath: 10,
  AddTempRoot: 11,
  AddIndirectRoot: 12,
  SyncWithGC: 13,
  FindRoots: 14,
  ExportPath: 16,
  QueryDeriver: 18,
  SetOptions: 19,
  CollectGarbage: 20,
  QuerySubstitutablePathInfo: 21,
  QueryDerivationOutputs: 22,
  QueryAllValidPaths: 23,
  QueryFailedPaths: 24,
  ClearFailedPaths: 25,
  QueryPathInfo: 26,
  ImportPaths: 27,
  QueryDerivationOutputNames: 28,
  QueryPathFromHashPart: 29,
  QuerySubstitutablePathInfos: 30,
  QueryValidPaths: 31,
  QuerySubstitutablePaths: 32,
  QueryValidDerivers: 33,
  OptimiseStore: 34,
  VerifyStore: 35,
  BuildDerivation: 36,
  AddSignatures: 37,
  NarFromPath: 38,
  AddToStoreNar: 39,
  QueryMissing: 40,
  QueryDerivationOutputMap: 41,
  RegisterDrvOutput: 42,
  QueryRealisation: 43,
  AddMultipleToStore: 44,
  AddBuildLog: 45,
  BuildPathsWithResults: 46,
  AddPermRoot: 47,
} as const;

/** An operation number's name. */
export type OpName = keyof typeof Op;

const opNames = new Map<number, OpName>(
  Object.entries(Op).map(([k, v]) => [v, k as OpName]),
);

/** The name of an operation number, or `op <n>` for an unknown one. */
export function opName(op: number | bigint): string {
  return opNames.get(Number(op)) ?? `op ${op}`;
}

/** Names of STDERR message codes, for logs. */
export function stderrName(code: number): string {
  switch (code) {
    case STDERR_NEXT:
      return "NEXT";
    case STDERR_READ:
      return "READ";
    case STDERR_WRITE:
      return "WRITE";
    case STDERR_LAST:
      return "LAST";
    case STDERR_ERROR:
      return "ERROR";
    case STDERR_START_ACTIVITY:
      return "START_ACTIVITY";
    case STDERR_STOP_ACTIVITY:
      return "STOP_ACTIVITY";
    case STDERR_RESULT:
      return "RESULT";
    default:
      return `0x${code.toString(16)}`;
  }
}
