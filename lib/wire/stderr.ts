/**
 * The daemon's side channel: log lines, activities, data requests and the
 * final `STDERR_LAST` or `STDERR_ERROR` that precede each reply.
 *
 * @module
 */
import {
  STDERR_ERROR,
  STDERR_LAST,
  STDERR_NEXT,
  STDERR_READ,
  STDERR_RESULT,
  STDERR_START_ACTIVITY,
  STDERR_STOP_ACTIVITY,
  STDERR_WRITE,
} from "./constants.ts";
import { Limits, WireError } from "./errors.ts";
import type { WireReader } from "./reader.ts";
import { atLeast, type ProtocolVersion } from "./version.ts";
import type { WireWriter } from "./writer.ts";

/** An error as the protocol carries it. */
export interface WireErrorInfo {
  /** The message (one line preferred). */
  message: string;
  /** Verbosity level (0 = error). */
  level?: number;
  /** Exit status (pre-1.26 clients only). */
  status?: number;
  /** Trace lines, innermost first. */
  traces?: string[];
}

/** A field of an activity or result: a number or a string. */
export type LogField = number | bigint | string;

/** One message on the side channel, as read by a client. */
export type StderrMessage =
  | { type: "next"; message: string }
  | { type: "read"; length: number }
  | { type: "write"; data: Uint8Array }
  | { type: "last" }
  | { type: "error"; error: WireErrorInfo }
  | {
    type: "start";
    id: bigint;
    level: number;
    activityType: number;
    text: string;
    fields: LogField[];
    parent: bigint;
  }
  | { type: "stop"; id: bigint }
  | { type: "result"; id: bigint; resultType: number; fields: LogField[] };

/** Writes an error in the form the client's version expects. */
export function writeError(
  w: WireWriter,
  v: ProtocolVersion,
  e: WireErrorInfo,
): void {
  w.u64(STDERR_ERROR);
  if (atLeast(v, 26)) {
    w.string("Error").u64(e.level ?? 0).string("Error").string(e.message).u64(
      0,
    );
    const traces = e.traces ?? [];
    w.u64(traces.length);
    for (const t of traces) w.u64(0).string(t);
  } else {
    w.string(e.message).u64(e.status ?? 1);
  }
}

/** Writes `STDERR_LAST`. */
export function writeLast(w: WireWriter): void {
  w.u64(STDERR_LAST);
}

/** Writes a log line (`STDERR_NEXT`). */
export function writeNext(w: WireWriter, message: string): void {
  w.u64(STDERR_NEXT).string(message);
}

/** Asks the client for up to `length` bytes (`STDERR_READ`). */
export function writeRead(w: WireWriter, length: number): void {
  w.u64(STDERR_READ).u64(length);
}

/** Sends data to the client's sink (`STDERR_WRITE`). */
export function writeWrite(w: WireWriter, data: Uint8Array): void {
  w.u64(STDERR_WRITE).bytes(data);
}

function writeFields(w: WireWriter, fields: LogField[]) {
  w.u64(fields.length);
  for (const f of fields) {
    if (typeof f === "string") w.u64(1).string(f);
    else w.u64(0).u64(f);
  }
}

/** Starts an activity (1.20+; older clients get nothing). */
export function writeStartActivity(
  w: WireWriter,
  v: ProtocolVersion,
  a: {
    id: bigint | number;
    level: number;
    activityType: number;
    text: string;
    fields?: LogField[];
    parent?: bigint | number;
  },
): void {
  if (!atLeast(v, 20)) return;
  w.u64(STDERR_START_ACTIVITY).u64(a.id).u64(a.level).u64(a.activityType)
    .string(a.text);
  writeFields(w, a.fields ?? []);
  w.u64(a.parent ?? 0);
}

/** Stops an activity (1.20+). */
export function writeStopActivity(
  w: WireWriter,
  v: ProtocolVersion,
  id: bigint | number,
): void {
  if (!atLeast(v, 20)) return;
  w.u64(STDERR_STOP_ACTIVITY).u64(id);
}

/** Reports an activity result (1.20+). */
export function writeResult(
  w: WireWriter,
  v: ProtocolVersion,
  id: bigint | number,
  resultType: number,
  fields: LogField[],
): void {
  if (!atLeast(v, 20)) return;
  w.u64(STDERR_RESULT).u64(id).u64(resultType);
  writeFields(w, fields);
}

/** Reads an error body (after `STDERR_ERROR`). */
export async function readErrorInfo(
  r: WireReader,
  v: ProtocolVersion,
): Promise<WireErrorInfo> {
  if (!atLeast(v, 26)) {
    const message = await r.readString(Limits.text, "error message");
    const status = await r.readNumber("error status");
    return { message, status };
  }
  const kind = await r.readString(Limits.string, "error type");
  if (kind !== "Error") {
    throw new WireError(`unexpected error type "${kind}"`, r.offset);
  }
  const level = await r.readNumber("error level");
  await r.readString(Limits.string, "error name");
  const message = await r.readString(Limits.text, "error message");
  if ((await r.readNumber("error position")) !== 0) {
    throw new WireError("error positions are not supported", r.offset);
  }
  const n = await r.readNumber("trace count", Limits.count);
  const traces: string[] = [];
  for (let i = 0; i < n; i++) {
    if ((await r.readNumber("trace position")) !== 0) {
      throw new WireError("trace positions are not supported", r.offset);
    }
    traces.push(await r.readString(Limits.text, "trace"));
  }
  return { message, level, traces };
}

async function readFields(r: WireReader): Promise<LogField[]> {
  const n = await r.readNumber("field count", Limits.count);
  const out: LogField[] = [];
  for (let i = 0; i < n; i++) {
    const t = await r.readNumber("field type");
    if (t === 0) out.push(await r.readU64("field"));
    else if (t === 1) out.push(await r.readString(Limits.text, "field"));
    else throw new WireError(`unknown field type ${t}`, r.offset);
  }
  return out;
}

/** Reads one side-channel message (client side). */
export async function readStderr(
  r: WireReader,
  v: ProtocolVersion,
): Promise<StderrMessage> {
  const at = r.offset;
  const code = await r.readNumber("stderr code");
  switch (code) {
    case STDERR_NEXT:
      return {
        type: "next",
        message: await r.readString(Limits.text, "log line"),
      };
    case STDERR_READ:
      return { type: "read", length: await r.readNumber("read length") };
    case STDERR_WRITE:
      return { type: "write", data: await r.readBytes(Limits.frame, "data") };
    case STDERR_LAST:
      return { type: "last" };
    case STDERR_ERROR:
      return { type: "error", error: await readErrorInfo(r, v) };
    case STDERR_START_ACTIVITY: {
      const id = await r.readU64("activity id");
      const level = await r.readNumber("level");
      const activityType = await r.readNumber("activity type");
      const text = await r.readString(Limits.text, "activity text");
      const fields = await readFields(r);
      const parent = await r.readU64("parent activity");
      return { type: "start", id, level, activityType, text, fields, parent };
    }
    case STDERR_STOP_ACTIVITY:
      return { type: "stop", id: await r.readU64("activity id") };
    case STDERR_RESULT: {
      const id = await r.readU64("activity id");
      const resultType = await r.readNumber("result type");
      return { type: "result", id, resultType, fields: await readFields(r) };
    }
    default:
      throw new WireError(`unknown stderr message 0x${code.toString(16)}`, at);
  }
}
