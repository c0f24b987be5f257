/**
 * The client side of the bulk Read connection (see ./h2_wire.ts for why it
 * exists and ./bulk_read_server.ts for the daemon's side): a second
 * connection to the same address, opened on the first blob Read, that
 * carries only `BlobService/Read` calls in our small HTTP/2 subset, so each
 * gRPC message arrives as one large DATA frame.
 *
 * The client asks for the subset with {@linkcode BULK_SETTING} in its first
 * SETTINGS frame; a server that does not answer with the same setting (any
 * other gRPC server: snix's own, grpcio, an older daemon) is remembered as
 * such and every Read goes through the ordinary connection instead
 * (./blob_read_client.ts), with the same results.
 *
 * @module
 */
import process from "node:process";
import { create, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import {
  validateResponse,
  validateTrailer,
} from "@connectrpc/connect/protocol-grpc";
import { ReadBlobRequestSchema } from "../../proto/gen/snix/castore/protos/rpc_blobstore_pb.ts";
import { BLOB_READ_PATH } from "./blob_read_server.ts";
import { BlobChunkParser } from "./blob_read_client.ts";
import { HTTP2_SETTINGS } from "./limits.ts";
import type { GrpcAddress } from "./transport.ts";
import { concatBytes } from "../nix/bytes.ts";
import { loadZstd, ZSTD_ENCODING } from "./zstd_message.ts";
import { connectRaw, type RawSocket } from "../runtime/raw_socket.ts";
import {
  ACK,
  appendHeaderBlock,
  BULK_SETTING,
  BULK_VERSION,
  CANCEL,
  CONTINUATION,
  DATA,
  decodeHeaders,
  DEFAULT_WINDOW,
  encodeHeaders,
  END_HEADERS,
  END_STREAM,
  frame,
  FrameReader,
  GOAWAY,
  goaway,
  H2Error,
  headerBlock,
  HEADERS,
  parseSettings,
  PING,
  PREFACE,
  PROTOCOL_ERROR,
  REFUSED_STREAM,
  RST_STREAM,
  rstStream,
  SETTINGS,
  SETTINGS_ENABLE_PUSH,
  SETTINGS_HEADER_TABLE_SIZE,
  SETTINGS_INITIAL_WINDOW_SIZE,
  SETTINGS_MAX_FRAME_SIZE,
  settingsFrame,
  uint32,
  windowUpdate,
} from "./h2_wire.ts";

/** Receive window of one Read (bytes the server may send ahead). */
const STREAM_WINDOW = 8 << 20;
/** Receive window of the connection (several Reads in parallel). */
const CONNECTION_WINDOW = 64 << 20;
/** Window credit is given back in steps of at least this much. */
const CREDIT_STEP = 1 << 20;
/** Received bytes a Read holds before it stops giving credit back. */
const QUEUE_HIGH_BYTES = 4 << 20;
/** How long the server may take to answer the first SETTINGS. */
const HANDSHAKE_MS = 5_000;
/** Silence on a connection with open calls before a PING is sent. */
const KEEPALIVE_INTERVAL_MS = 10_000;
/** How long a PING may go unanswered before the connection is given up. */
const KEEPALIVE_TIMEOUT_MS = 10_000;
/** An idle connection is closed after this long. */
const IDLE_MS = 60_000;

/** Reads of blobs: the bulk connection where the server offers it. */
export class BulkReader {
  readonly #addr: GrpcAddress;
  readonly #fallback: (
    digest: Uint8Array,
    signal?: AbortSignal,
  ) => AsyncIterator<Uint8Array>;
  #unsupported = false;
  #conn: BulkConnection | undefined;
  #opening: Promise<BulkConnection | undefined> | undefined;
  #closed = false;
  /**
   * Whether Reads accept zstd messages (the daemon then sends the chunks as
   * stored, ./stored_chunks.ts); `SNIX_GRPC_BULK_ZSTD=0` when the reader is
   * made turns it off.
   */
  readonly #zstd = process.env.SNIX_GRPC_BULK_ZSTD !== "0";

  /**
   * Reads from `addr`; `fallback` reads through the ordinary connection
   * (used where the server does not speak the bulk subset).
   */
  constructor(
    addr: GrpcAddress,
    fallback: (
      digest: Uint8Array,
      signal?: AbortSignal,
    ) => AsyncIterator<Uint8Array>,
  ) {
    this.#addr = addr;
    this.#fallback = fallback;
  }

  /** Whether Reads go through the bulk connection (known after the first one). */
  get active(): boolean {
    return this.#conn !== undefined && this.#conn.usable;
  }

  /**
   * Starts a Read of `digest`: its data bytes in order, in pieces that do
   * not follow message boundaries (the contract of `readBlobBytes`). The
   * first `next()` rejects with the call's error; `return()` cancels it.
   */
  read(digest: Uint8Array, signal?: AbortSignal): AsyncIterator<Uint8Array> {
    let inner: AsyncIterator<Uint8Array> | undefined;
    let starting: Promise<AsyncIterator<Uint8Array>> | undefined;
    let cancelled = false;
    const get = () =>
      starting ??= this.#start(digest, signal).then((it) => {
        inner = it;
        if (cancelled) void it.return?.();
        return it;
      });
    return {
      next: async () => (await get()).next(),
      return: () => {
        cancelled = true;
        if (inner) return inner.return!();
        return Promise.resolve({ value: undefined, done: true });
      },
    };
  }

  async #start(
    digest: Uint8Array,
    signal?: AbortSignal,
  ): Promise<AsyncIterator<Uint8Array>> {
    const conn = this.#unsupported || this.#closed
      ? undefined
      : await this.#connection();
    if (!conn) return this.#fallback(digest, signal);
    return conn.read(digest, signal);
  }

  #connection(): Promise<BulkConnection | undefined> {
    if (this.#conn?.usable) return Promise.resolve(this.#conn);
    this.#conn = undefined;
    return this.#opening ??= BulkConnection.open(this.#addr, this.#zstd).then(
      (c) => {
        this.#opening = undefined;
        if (c === "unsupported") {
          this.#unsupported = true;
          return undefined;
        }
        if (c && this.#closed) {
          c.close();
          return undefined;
        }
        this.#conn = c;
        return c;
      },
    );
  }

  /** Closes the bulk connection (open Reads fail with CANCELLED). */
  close(): void {
    this.#closed = true;
    this.#conn?.close();
    this.#conn = undefined;
  }
}

interface Call {
  id: number;
  queue: Uint8Array[];
  queued: number;
  /** DATA payload bytes received but not yet credited back. */
  unacked: number;
  parser: BlobChunkParser;
  header?: Headers;
  trailer?: Headers;
  ended: boolean;
  failure?: ConnectError;
  wake?: () => void;
}

/** One bulk connection. */
class BulkConnection {
  readonly #socket: RawSocket;
  readonly #authority: string;
  readonly #calls = new Map<number, Call>();
  #nextId = 1;
  #connUnacked = 0;
  #dead = false;
  #goingAway = false;
  #lastRecv = Date.now();
  #pingSent = 0;
  #keepalive: ReturnType<typeof setInterval>;
  #idle: ReturnType<typeof setTimeout> | undefined;
  #headerBlockOf:
    | { id: number; flags: number; parts: Uint8Array[] }
    | undefined;
  readonly #reader: FrameReader;
  /** Whether Reads accept zstd messages. */
  readonly #zstd: boolean;

  private constructor(socket: RawSocket, authority: string, zstd: boolean) {
    this.#socket = socket;
    this.#zstd = zstd;
    this.#authority = authority;
    this.#reader = new FrameReader({
      data: (id, piece) => this.#onData(id, piece),
      dataEnd: (id, flags, length) => this.#onDataEnd(id, flags, length),
      frame: (type, flags, id, payload) =>
        this.#onFrame(type, flags, id, payload),
    }, HTTP2_SETTINGS.maxFrameSize);
    this.#keepalive = setInterval(() => this.#checkAlive(), 1000);
    (this.#keepalive as { unref?: () => void }).unref?.();
  }

  /**
   * Opens a bulk connection to `addr`: the connection, `"unsupported"` if
   * the server answered without agreeing to the subset, `undefined` if it
   * could not be reached (the ordinary path reports why).
   */
  static async open(
    addr: GrpcAddress,
    zstd: boolean,
  ): Promise<BulkConnection | "unsupported" | undefined> {
    const url = new URL(addr.baseUrl);
    void loadZstd(); // for compressed chunks; raw ones need no library
    let socket: RawSocket;
    try {
      socket = await connectRaw(
        addr.socketPath ? { path: addr.socketPath } : {
          host: url.hostname.replace(/^\[(.*)\]$/, "$1"),
          port: Number(url.port),
        },
      );
    } catch {
      return undefined; // the ordinary connection reports why
    }
    socket.write(concatBytes([
      PREFACE,
      settingsFrame([
        [BULK_SETTING, BULK_VERSION],
        [SETTINGS_HEADER_TABLE_SIZE, 0],
        [SETTINGS_ENABLE_PUSH, 0],
        [SETTINGS_INITIAL_WINDOW_SIZE, STREAM_WINDOW],
        [SETTINGS_MAX_FRAME_SIZE, HTTP2_SETTINGS.maxFrameSize],
      ]),
      windowUpdate(0, CONNECTION_WINDOW - DEFAULT_WINDOW),
    ]));
    return await new Promise((resolve) => {
      let head: Uint8Array = new Uint8Array(0);
      let conn: BulkConnection | undefined;
      let settled = false;
      const done = (r: BulkConnection | "unsupported" | undefined) => {
        settled = true;
        clearTimeout(timer);
        if (!(r instanceof BulkConnection)) socket.close();
        resolve(r);
      };
      const timer = setTimeout(() => done("unsupported"), HANDSHAKE_MS);
      const onHandshake = (d: Uint8Array) => {
        head = concatBytes([head, d]);
        if (head.length < 9) return;
        const len = (head[0] << 16) | (head[1] << 8) | head[2];
        if (head[3] !== SETTINGS || head[4] !== 0 || len > 1024) {
          return done("unsupported");
        }
        if (head.length < 9 + len) return;
        let s: Map<number, number>;
        try {
          s = parseSettings(head.subarray(9, 9 + len));
        } catch {
          return done("unsupported");
        }
        if (s.get(BULK_SETTING) !== BULK_VERSION) return done("unsupported");
        conn = new BulkConnection(socket, url.host, zstd);
        done(conn);
        conn.#onReceived(head);
        conn.#setIdle();
      };
      socket.start(
        (d) => {
          if (conn) conn.#onReceived(d);
          else if (!settled) onHandshake(d);
        },
        (error) => {
          if (conn) {
            conn.#die(error ? "connection error" : "connection closed");
          } else if (!settled) {
            done(head.length > 0 ? "unsupported" : undefined);
          }
        },
      );
    });
  }

  #onReceived(d: Uint8Array): void {
    if (this.#dead) return;
    this.#lastRecv = Date.now();
    this.#pingSent = 0;
    try {
      this.#reader.push(d);
    } catch (e) {
      const code = e instanceof H2Error ? e.code : PROTOCOL_ERROR;
      this.#send(goaway(0, code));
      this.#die(`protocol error: ${(e as Error).message}`);
      this.#socket.close();
    }
  }

  /** Whether new Reads may use this connection. */
  get usable(): boolean {
    return !this.#dead && !this.#goingAway && this.#nextId < 2 ** 30;
  }

  /** Starts a Read (see {@linkcode BulkReader.read}). */
  read(digest: Uint8Array, signal?: AbortSignal): AsyncIterator<Uint8Array> {
    const id = this.#nextId;
    this.#nextId += 2;
    const call: Call = {
      id,
      queue: [],
      queued: 0,
      unacked: 0,
      parser: new BlobChunkParser((piece) => {
        call.queue.push(piece);
        call.queued += piece.length;
      }),
      ended: false,
    };
    const onAbort = () =>
      this.#fail(
        call,
        new ConnectError("the operation was aborted", Code.Canceled),
        true,
      );
    if (signal?.aborted) {
      call.failure = new ConnectError(
        "the operation was aborted",
        Code.Canceled,
      );
    } else {
      signal?.addEventListener("abort", onAbort, { once: true });
      this.#calls.set(id, call);
      this.#busy();
      const req = toBinary(
        ReadBlobRequestSchema,
        create(ReadBlobRequestSchema, { digest }),
      );
      const body = new Uint8Array(5 + req.length);
      new DataView(body.buffer).setUint32(1, req.length);
      body.set(req, 5);
      this.#send(concatBytes([
        frame(
          HEADERS,
          END_HEADERS,
          id,
          encodeHeaders([
            [":method", "POST"],
            [":scheme", "http"],
            [":path", BLOB_READ_PATH],
            [":authority", this.#authority],
            ["content-type", "application/grpc+proto"],
            ["te", "trailers"],
            ...(this.#zstd
              ? [["grpc-accept-encoding", ZSTD_ENCODING] as [string, string]]
              : []),
          ]),
        ),
        frame(DATA, END_STREAM, id, body),
      ]));
    }
    const cleanup = () => signal?.removeEventListener("abort", onAbort);
    return {
      next: async (): Promise<IteratorResult<Uint8Array>> => {
        while (true) {
          if (call.queue.length > 0) {
            const value = call.queue.shift()!;
            call.queued -= value.length;
            this.#credit(call);
            return { value, done: false };
          }
          if (call.failure) {
            cleanup();
            throw call.failure;
          }
          if (call.ended) {
            cleanup();
            return { value: undefined, done: true };
          }
          await new Promise<void>((r) => call.wake = r);
        }
      },
      return: (): Promise<IteratorResult<Uint8Array>> => {
        if (!call.ended) {
          this.#fail(
            call,
            new ConnectError("the read was cancelled", Code.Canceled),
            true,
          );
        }
        cleanup();
        call.queue.length = 0;
        return Promise.resolve({ value: undefined, done: true });
      },
    };
  }

  /** Closes the connection; open Reads fail with CANCELLED. */
  close(): void {
    this.#die("the connection was closed", Code.Canceled);
    this.#socket.close();
  }

  #send(b: Uint8Array): void {
    if (!this.#dead) this.#socket.write(b);
  }

  #busy(): void {
    if (this.#idle !== undefined) clearTimeout(this.#idle);
    this.#idle = undefined;
    this.#socket.ref();
  }

  #setIdle(): void {
    if (this.#calls.size > 0 || this.#dead) return;
    // An idle connection does not keep the process alive, and goes after a while.
    this.#socket.unref();
    this.#idle = setTimeout(() => this.close(), IDLE_MS);
    (this.#idle as { unref?: () => void }).unref?.();
  }

  #checkAlive(): void {
    if (this.#dead || this.#calls.size === 0) return;
    const now = Date.now();
    if (this.#pingSent && now - this.#pingSent > KEEPALIVE_TIMEOUT_MS) {
      this.#die("the server stopped answering (keepalive timeout)");
      this.#socket.close();
    } else if (
      !this.#pingSent && now - this.#lastRecv > KEEPALIVE_INTERVAL_MS
    ) {
      this.#pingSent = now;
      this.#send(frame(PING, 0, 0, new Uint8Array(8)));
    }
  }

  #die(why: string, code = Code.Unavailable): void {
    if (this.#dead) return;
    this.#dead = true;
    clearInterval(this.#keepalive);
    if (this.#idle !== undefined) clearTimeout(this.#idle);
    for (const call of [...this.#calls.values()]) {
      this.#fail(call, new ConnectError(why, code), false);
    }
  }

  #wake(call: Call): void {
    const w = call.wake;
    call.wake = undefined;
    w?.();
  }

  /** Ends `call` with `e`; `reset`: tell the server (RST_STREAM CANCEL). */
  #fail(call: Call, e: ConnectError, reset: boolean): void {
    if (call.failure || call.ended) return;
    call.failure = e;
    call.queue.length = 0;
    if (this.#calls.delete(call.id)) {
      if (reset) this.#send(rstStream(call.id, CANCEL));
      this.#setIdle();
    }
    this.#wake(call);
  }

  #credit(call: Call): void {
    if (
      call.unacked >= CREDIT_STEP && call.queued < QUEUE_HIGH_BYTES &&
      this.#calls.has(call.id)
    ) {
      this.#send(windowUpdate(call.id, call.unacked));
      call.unacked = 0;
    }
  }

  #onData(id: number, piece: Uint8Array): void {
    const call = this.#calls.get(id);
    if (!call) return; // cancelled: dropped
    try {
      call.parser.push(piece);
    } catch (e) {
      this.#fail(call, ConnectError.from(e), true);
    }
  }

  #onDataEnd(id: number, flags: number, length: number): void {
    this.#connUnacked += length;
    if (this.#connUnacked >= CONNECTION_WINDOW / 8) {
      this.#send(windowUpdate(0, this.#connUnacked));
      this.#connUnacked = 0;
    }
    const call = this.#calls.get(id);
    if (!call) return;
    call.unacked += length;
    this.#credit(call);
    if (flags & END_STREAM) this.#end(call);
    else this.#wake(call);
  }

  #end(call: Call): void {
    try {
      if (!call.header) {
        throw new ConnectError(
          "protocol error: missing response headers",
          Code.Internal,
        );
      }
      validateTrailer(call.trailer ?? new Headers(), call.header);
      call.parser.end();
      call.ended = true;
      this.#calls.delete(call.id);
      this.#setIdle();
      this.#wake(call);
    } catch (e) {
      this.#fail(call, ConnectError.from(e), false);
      this.#calls.delete(call.id);
    }
  }

  #onFrame(type: number, flags: number, id: number, payload: Uint8Array) {
    if (this.#headerBlockOf && type !== CONTINUATION) {
      throw new H2Error(PROTOCOL_ERROR, "expected CONTINUATION");
    }
    switch (type) {
      case SETTINGS:
        if (!(flags & ACK)) {
          parseSettings(payload);
          this.#send(frame(SETTINGS, ACK, 0));
        }
        return;
      case PING:
        if (!(flags & ACK)) this.#send(frame(PING, ACK, 0, payload));
        return;
      case HEADERS:
        this.#headerBlockOf = {
          id,
          flags,
          parts: [headerBlock(flags, payload)],
        };
        if (flags & END_HEADERS) this.#headersDone();
        return;
      case CONTINUATION:
        if (!this.#headerBlockOf || this.#headerBlockOf.id !== id) {
          throw new H2Error(PROTOCOL_ERROR, "unexpected CONTINUATION");
        }
        appendHeaderBlock(this.#headerBlockOf.parts, payload);
        if (flags & END_HEADERS) this.#headersDone();
        return;
      case RST_STREAM: {
        const call = this.#calls.get(id);
        if (!call) return;
        const code = payload.length === 4 ? uint32(payload, 0) : 0;
        this.#fail(
          call,
          code === CANCEL
            ? new ConnectError("the call was cancelled", Code.Canceled)
            : new ConnectError(
              code === REFUSED_STREAM
                ? "the server refused the call (too many at once)"
                : `stream closed without a status (HTTP/2 code ${code})`,
              Code.Unavailable,
            ),
          false,
        );
        return;
      }
      case GOAWAY: {
        this.#goingAway = true;
        const last = payload.length >= 8 ? uint32(payload, 0, true) : 0;
        for (const call of [...this.#calls.values()]) {
          if (call.id > last) {
            this.#fail(
              call,
              new ConnectError(
                "the server closed the connection",
                Code.Unavailable,
              ),
              false,
            );
          }
        }
        return;
      }
      default:
        return; // WINDOW_UPDATE (we send only tiny bodies), PRIORITY, unknown
    }
  }

  #headersDone(): void {
    const { id, flags, parts } = this.#headerBlockOf!;
    this.#headerBlockOf = undefined;
    const list = decodeHeaders(
      parts.length === 1 ? parts[0] : concatBytes(parts),
    );
    const call = this.#calls.get(id);
    if (!call) return;
    const h = new Headers();
    let status = 0;
    for (const [k, v] of list) {
      if (k === ":status") status = Number(v);
      else if (!k.startsWith(":")) h.append(k, v);
    }
    try {
      if (!call.header) {
        call.header = h;
        const { headerError } = validateResponse(status, h);
        if (headerError) throw headerError;
        const encoding = h.get("grpc-encoding");
        if (encoding === ZSTD_ENCODING) call.parser.acceptZstd();
        else if (encoding !== null && encoding !== "identity") {
          throw new ConnectError(
            `unsupported response encoding "${encoding}"`,
            Code.Internal,
          );
        }
      } else {
        if (!(flags & END_STREAM)) {
          throw new ConnectError(
            "protocol error: trailers without END_STREAM",
            Code.Internal,
          );
        }
        call.trailer = h;
      }
    } catch (e) {
      this.#fail(call, ConnectError.from(e), true);
      return;
    }
    if (flags & END_STREAM) this.#end(call);
  }
}
