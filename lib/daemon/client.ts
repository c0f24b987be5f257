/**
 * A small worker-protocol client: the handshake and a few calls. Used by the
 * tests (to send exactly the bytes we want, good and bad) and by the
 * benchmark (QueryPathInfo rates without process start-up costs).
 *
 * @module
 */
import { connect } from "node:net";
import {
  atLeast,
  type ByteSink,
  type ByteSource,
  Limits,
  Op,
  type ProtocolVersion,
  protocolVersion,
  readClientHandshakeInfo,
  readStderr,
  readUnkeyedValidPathInfo,
  type UnkeyedValidPathInfo,
  versionFromWire,
  versionToWire,
  type WireErrorInfo,
  WireReader,
  WireWriter,
  WORKER_MAGIC_1,
  WORKER_MAGIC_2,
} from "../wire/mod.ts";
import { socketStreams } from "./socket_streams.ts";

/** The daemon answered with `STDERR_ERROR`. */
export class DaemonReplyError extends Error {
  /** Wraps the error the daemon sent. */
  constructor(readonly info: WireErrorInfo) {
    super(info.message);
    this.name = "DaemonReplyError";
  }
}

/** A connection to a daemon. */
export class DaemonClient {
  /** Log lines received while waiting for replies. */
  readonly logs: string[] = [];

  private constructor(
    readonly r: WireReader,
    readonly w: WireWriter,
    readonly version: ProtocolVersion,
    readonly daemonVersion: string | undefined,
    private readonly destroy: () => void,
  ) {}

  /** Connects to a unix socket and does the handshake as a client of version 1.`minor`. */
  static async connect(
    socketPath: string,
    minor = 38,
    features: string[] = [],
  ): Promise<DaemonClient> {
    const socket = connect(socketPath);
    await new Promise<void>((resolve, reject) => {
      socket.once("connect", resolve);
      socket.once("error", reject);
    });
    const { readable, writable } = socketStreams(socket);
    return await DaemonClient.handshake(
      readable,
      writable,
      minor,
      features,
      () => socket.destroy(),
    );
  }

  /** Does the handshake over streams. */
  static async handshake(
    readable: ReadableStream<Uint8Array> | ByteSource,
    writable: WritableStream<Uint8Array> | ByteSink,
    minor: number,
    features: string[],
    destroy: () => void,
  ): Promise<DaemonClient> {
    const r = new WireReader(readable);
    const w = new WireWriter(writable);
    w.u64(WORKER_MAGIC_1).u64(versionToWire(minor));
    await w.flush();
    if ((await r.readNumber("magic")) !== WORKER_MAGIC_2) {
      throw new Error("protocol mismatch");
    }
    const server = versionFromWire(await r.readNumber("server version"));
    const m = Math.min(minor, server.minor);
    let agreed: string[] = [];
    if (m >= 38) {
      w.stringSet(features);
      await w.flush();
      const theirs = await r.readStrings(
        Limits.count,
        Limits.string,
        "features",
      );
      agreed = features.filter((f) => theirs.includes(f));
    }
    const v = protocolVersion(m, agreed);
    if (atLeast(v, 14)) w.u64(0);
    if (atLeast(v, 11)) w.u64(0);
    await w.flush();
    const info = await readClientHandshakeInfo(r, v);
    const c = new DaemonClient(r, w, v, info.daemonNixVersion, destroy);
    await c.processStderr();
    return c;
  }

  /** Reads side-channel messages up to `STDERR_LAST`; throws on `STDERR_ERROR`. */
  async processStderr(): Promise<void> {
    for (;;) {
      const m = await readStderr(this.r, this.version);
      if (m.type === "last") return;
      if (m.type === "error") throw new DaemonReplyError(m.error);
      if (m.type === "next") this.logs.push(m.message);
      if (m.type === "read") {
        throw new Error("the daemon asked for data this client does not have");
      }
    }
  }

  /** Sends an op with arguments written by `args`, waits for `STDERR_LAST`. */
  async call(
    op: number,
    args: (w: WireWriter) => void = () => {},
  ): Promise<void> {
    this.w.u64(op);
    args(this.w);
    await this.w.flush();
    await this.processStderr();
  }

  /** IsValidPath. */
  async isValidPath(path: string): Promise<boolean> {
    await this.call(Op.IsValidPath, (w) => w.string(path));
    return await this.r.readBool();
  }

  /** QueryPathInfo (1.17+ form). */
  async queryPathInfo(path: string): Promise<UnkeyedValidPathInfo | undefined> {
    await this.call(Op.QueryPathInfo, (w) => w.string(path));
    if (atLeast(this.version, 17) && !(await this.r.readBool())) {
      return undefined;
    }
    return await readUnkeyedValidPathInfo(this.r, this.version);
  }

  /** Closes the connection. */
  close(): void {
    this.destroy();
  }
}
