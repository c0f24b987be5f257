/**
 * One client connection: the handshake, then a loop that reads an operation
 * number, runs its handler and answers. Handlers read all of their arguments
 * before they can fail for reasons of the store, so an error answer leaves the
 * connection in step and the client can send the next operation. Only
 * malformed input (a bad length, a truncated frame, a client gone) ends the
 * connection, with one log line.
 *
 * @module
 */
import {
  atLeast,
  type ByteSink,
  type ByteSource,
  Limits,
  opName,
  type ProtocolVersion,
  protocolVersion,
  versionFromWire,
  versionToWire,
  WireError,
  WireReader,
  WireWriter,
  WORKER_MAGIC_1,
  WORKER_MAGIC_2,
  writeClientHandshakeInfo,
  writeError,
  writeLast,
} from "../wire/mod.ts";
import type { DaemonStore } from "./store.ts";

/** The newest minor version we speak, and our features (1.38+). */
export const SERVER_MINOR = 38;
/** Features we offer in the 1.38 feature exchange. */
export const SERVER_FEATURES: readonly string[] = [
  "realisation-with-path-not-hash",
];
/** The oldest client minor version we accept. */
export const MIN_CLIENT_MINOR = 10;

/** What a handler gets. */
export interface OpContext {
  readonly r: WireReader;
  readonly w: WireWriter;
  readonly version: ProtocolVersion;
  readonly store: DaemonStore;
  /** Adds a key/value to this op's `--log-wire` line. */
  note(key: string, value: unknown): void;
  /** Marks that the reply has begun (after this, an error must end the connection). */
  replyStarted(): void;
  /** Log lines of the connection (warnings). */
  log(message: string): void;
}

/** A handler: reads the op's arguments, does the work, writes `STDERR_LAST` and the reply. */
export type OpHandler = (ctx: OpContext) => Promise<void>;

/** Settings of the daemon that connections see. */
export interface ConnectionOptions {
  store: DaemonStore;
  handlers: ReadonlyMap<number, OpHandler>;
  /** The version string clients see (1.33+). */
  daemonVersion: string;
  /** Writes decoded request/reply lines to this function. */
  logWire?: (line: string) => void;
  /** Problems worth one line each (a dropped connection). */
  log: (line: string) => void;
  /** A name for this connection in logs. */
  id: string;
}

/** Thrown by handlers for an op we parse but do not carry out. */
export class UnsupportedOpError extends Error {
  /** Creates the error for `op` with an explanation. */
  constructor(op: string, why: string) {
    super(`${op} is not supported by this daemon: ${why}`);
    this.name = "UnsupportedOpError";
  }
}

/** An error's message on one line. */
function describe(e: unknown): string {
  return (e instanceof Error ? e.message : String(e)).replace(/\s*\n\s*/g, " ");
}

function fmtValue(v: unknown): string {
  if (typeof v === "string") {
    return v.length > 200
      ? JSON.stringify(v.slice(0, 200) + "…")
      : JSON.stringify(v);
  }
  if (Array.isArray(v)) {
    return v.length > 5
      ? `[${v.slice(0, 5).map(fmtValue).join(",")},…${v.length} items]`
      : `[${v.map(fmtValue).join(",")}]`;
  }
  return String(v);
}

/**
 * Serves one connection until the client closes it or sends something
 * malformed. Resolves when done; never rejects.
 */
export async function serveConnection(
  readable: ReadableStream<Uint8Array> | ByteSource,
  writable: WritableStream<Uint8Array> | ByteSink,
  opts: ConnectionOptions,
): Promise<void> {
  const r = new WireReader(readable);
  const w = new WireWriter(writable, 256 << 10);
  let version: ProtocolVersion;
  try {
    version = await handshake(r, w, opts);
  } catch (e) {
    opts.log(`connection ${opts.id}: handshake failed: ${describe(e)}`);
    await w.abort();
    await r.cancel();
    return;
  }
  opts.logWire?.(
    `${opts.id} handshake: protocol 1.${version.minor}${
      version.features.size
        ? ` features ${[...version.features].join(",")}`
        : ""
    }`,
  );

  // One context for the whole connection; per-op state is reset below.
  const logWire = opts.logWire;
  let notes: string[] = [];
  let started = false;
  const ctx: OpContext = {
    r,
    w,
    version,
    store: opts.store,
    note: logWire ? (k, v) => void notes.push(`${k}=${fmtValue(v)}`) : () => {},
    replyStarted: () => void (started = true),
    log: (m) => opts.log(`connection ${opts.id}: ${m}`),
  };
  for (;;) {
    let op: number;
    try {
      if (await r.atEnd()) break;
      op = await r.readNumber("operation");
    } catch (e) {
      opts.log(`connection ${opts.id}: ${describe(e)}; closing it`);
      break;
    }
    const name = opName(op);
    if (notes.length) notes = [];
    started = false;
    const inAt = logWire ? r.offset : 0, outAt = logWire ? w.offset : 0;
    const t0 = logWire ? performance.now() : 0;
    const handler = opts.handlers.get(op);
    let fatal: unknown;
    try {
      if (!handler) {
        // We cannot know the arguments of an op we do not know; the client
        // gets an error and the connection goes on with the next word.
        throw new UnsupportedOpError(name, "unknown operation number");
      }
      await handler(ctx);
      await w.flush();
    } catch (e) {
      if (e instanceof WireError || started || isConnectionGone(e)) {
        fatal = e;
      } else {
        notes.push(`error=${fmtValue(describe(e))}`);
        try {
          writeError(w, version, { message: describe(e), status: 1 });
          await w.flush();
        } catch (e2) {
          fatal = e2;
        }
      }
    }
    logWire?.(
      `${opts.id} ${name}${notes.length ? " " + notes.join(" ") : ""} in=${
        r.offset - inAt
      }B out=${w.offset - outAt}B ${(performance.now() - t0).toFixed(2)}ms${
        fatal ? " FATAL" : ""
      }`,
    );
    if (fatal) {
      opts.log(
        `connection ${opts.id}: ${name}: ${describe(fatal)}; closing it`,
      );
      if (fatal instanceof WireError && !started) {
        // Tell the client why, if it still listens.
        try {
          writeError(w, version, { message: describe(fatal), status: 1 });
          await w.flush();
        } catch {
          // gone
        }
      }
      break;
    }
  }
  try {
    await w.close();
  } catch {
    // already closed
  }
  await r.cancel();
}

function isConnectionGone(e: unknown): boolean {
  const code = (e as { code?: string })?.code;
  return code === "EPIPE" || code === "ECONNRESET" ||
    (e instanceof Error && e.message === "connection closed");
}

async function handshake(
  r: WireReader,
  w: WireWriter,
  opts: ConnectionOptions,
): Promise<ProtocolVersion> {
  const magic = await r.readU64("magic");
  if (magic !== BigInt(WORKER_MAGIC_1)) {
    throw new WireError(`protocol mismatch (magic 0x${magic.toString(16)})`);
  }
  w.u64(WORKER_MAGIC_2).u64(versionToWire(SERVER_MINOR));
  await w.flush();
  const client = versionFromWire(await r.readNumber("client version", 0xffff));
  if (client.major !== 1) {
    throw new WireError(
      `unsupported client protocol major version ${client.major}`,
    );
  }
  if (client.minor < MIN_CLIENT_MINOR) {
    throw new WireError(
      `client protocol 1.${client.minor} is too old (need 1.${MIN_CLIENT_MINOR} or newer)`,
    );
  }
  const minor = Math.min(client.minor, SERVER_MINOR);
  let features: string[] = [];
  if (minor >= 38) {
    const theirs = await r.readStrings(Limits.count, Limits.string, "features");
    w.stringSet(SERVER_FEATURES);
    await w.flush();
    features = SERVER_FEATURES.filter((f) => theirs.includes(f));
  }
  const v = protocolVersion(minor, features);
  if (atLeast(v, 14)) {
    if (await r.readNumber("CPU affinity flag")) {
      await r.readNumber("CPU affinity");
    }
  }
  if (atLeast(v, 11)) await r.readNumber("reserve space");
  // Every client is trusted: access is controlled by the socket's permissions.
  writeClientHandshakeInfo(w, v, {
    daemonNixVersion: opts.daemonVersion,
    remoteTrustsUs: true,
  });
  writeLast(w);
  await w.flush();
  return v;
}
