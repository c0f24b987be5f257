/**
 * The store daemon's side of the bulk Read connection: a connection whose
 * first SETTINGS frame carries {@linkcode BULK_SETTING} is served here, with
 * our own small HTTP/2 (./h2_wire.ts explains why), instead of node:http2.
 * It serves `snix.castore.v1.BlobService/Read` in plain gRPC and answers
 * every other method UNIMPLEMENTED; our blob client opens such a connection
 * beside its ordinary one just for Reads (./bulk_read_client.ts).
 *
 * A Read here behaves like one through ./blob_read_server.ts (same checks,
 * status codes, messages, `grpc-timeout`, cancellation, shutdown), but each
 * gRPC message (a whole chunk of the local store, up to 1 MiB) goes out as
 * ONE DATA frame written straight from the blob's buffers, within the
 * peer's flow-control windows and frame size.
 *
 * @module
 */
import type * as net from "node:net";
import process from "node:process";
import { Code, ConnectError } from "@connectrpc/connect";
import {
  parseTimeout,
  setTrailerStatus,
} from "@connectrpc/connect/protocol-grpc";
import type { BlobService } from "../castore/blob_service.ts";
import {
  BLOB_READ_PATH,
  decodeReadRequest,
  messageHeader,
  openRequestedBlob,
  readerIterable,
  throwIfAborted,
} from "./blob_read_server.ts";
import {
  MAX_DATA_MESSAGE_BYTES,
  MAX_MESSAGE_BYTES,
  MIN_DATA_MESSAGE_BYTES,
} from "./limits.ts";
import { regroup } from "./rechunk.ts";
import { requireB3Digest, showDigest } from "./check.ts";
import {
  canLocateChunks,
  type ChunkPiece,
  releaseStored,
  storedChunks,
} from "./stored_chunks.ts";
import { rawFrame, ZSTD_ENCODING } from "./zstd_message.ts";
import { concatBytes } from "../nix/bytes.ts";
import {
  enlargeUnixSendBuffer,
  setLoopbackCongestion,
} from "../runtime/raw_socket.ts";
import {
  ACK,
  appendHeaderBlock,
  BULK_SETTING,
  BULK_VERSION,
  CONTINUATION,
  DATA,
  decodeHeaders,
  DEFAULT_MAX_FRAME,
  DEFAULT_WINDOW,
  encodeHeaders,
  END_HEADERS,
  END_STREAM,
  FLOW_CONTROL_ERROR,
  frame,
  frameHeader,
  FrameReader,
  GOAWAY,
  goaway,
  H2Error,
  headerBlock,
  HEADERS,
  INTERNAL_ERROR,
  MAX_WINDOW,
  parseSettings,
  PING,
  PREFACE,
  PROTOCOL_ERROR,
  REFUSED_STREAM,
  RST_STREAM,
  rstStream,
  SETTINGS,
  SETTINGS_HEADER_TABLE_SIZE,
  SETTINGS_INITIAL_WINDOW_SIZE,
  SETTINGS_MAX_CONCURRENT_STREAMS,
  SETTINGS_MAX_FRAME_SIZE,
  settingsFrame,
  uint32,
  WINDOW_UPDATE,
  windowUpdate,
  writeFrameHeader,
} from "./h2_wire.ts";

/** Longest first SETTINGS frame looked at when sniffing. */
const MAX_SNIFF_SETTINGS = 64 * 6;
/** Longest grpc-message sent (characters, before percent-encoding). */
const MAX_STATUS_MESSAGE = 4096;
/** Concurrent streams a bulk connection takes. */
const MAX_STREAMS = 256;
/**
 * Send buffer asked for on unix sockets (see
 * {@linkcode enlargeUnixSendBuffer}; capped by net.core.wmem_max);
 * `SNIX_BULK_UNIX_SNDBUF` overrides it in bytes (0: the system's default).
 */
const UNIX_SEND_BUFFER = Number(process.env.SNIX_BULK_UNIX_SNDBUF ?? 4 << 20);
/**
 * TCP congestion control of bulk connections over loopback (see
 * {@linkcode setLoopbackCongestion}: pacing there only costs CPU);
 * `SNIX_BULK_LOOPBACK_CC` names another, empty: the system's default.
 */
const LOOPBACK_CONGESTION = process.env.SNIX_BULK_LOOPBACK_CC ?? "cubic";
/**
 * Whether a Read that accepts zstd gets the local store's chunks as they
 * are stored (./stored_chunks.ts); `SNIX_BULK_STORED=0` turns it off.
 */
const SEND_STORED = process.env.SNIX_BULK_STORED !== "0";

/**
 * Reads the start of a new connection, enough to tell a bulk Read
 * connection (preface, then SETTINGS with {@linkcode BULK_SETTING}) from
 * any other. Resolves with the bytes read (to put back for node:http2 with
 * `socket.unshift`) or `undefined` if the socket ended first.
 */
export function sniffBulk(
  socket: net.Socket,
): Promise<{ bulk: boolean; head: Uint8Array } | undefined> {
  return new Promise((resolve) => {
    let parts: Uint8Array[] = [];
    let n = 0;
    const done = (r: { bulk: boolean; head: Uint8Array } | undefined) => {
      socket.off("data", onData);
      socket.off("end", onEnd);
      socket.off("close", onEnd);
      socket.off("error", onEnd);
      socket.pause();
      resolve(r);
    };
    const onEnd = () => done(undefined);
    const onData = (d: Uint8Array) => {
      parts.push(d);
      n += d.length;
      const head = parts.length === 1 ? parts[0] : concatBytes(parts, n);
      parts = [head];
      const verdict = bulkVerdict(head);
      if (verdict !== undefined) done({ bulk: verdict, head });
    };
    socket.on("data", onData);
    socket.once("end", onEnd);
    socket.once("close", onEnd);
    socket.once("error", onEnd);
  });
}

/** Whether `head` starts a bulk connection; `undefined`: need more bytes. */
export function bulkVerdict(head: Uint8Array): boolean | undefined {
  const p = Math.min(head.length, PREFACE.length);
  for (let i = 0; i < p; i++) if (head[i] !== PREFACE[i]) return false;
  if (head.length < PREFACE.length + 9) return undefined;
  const o = PREFACE.length;
  const len = (head[o] << 16) | (head[o + 1] << 8) | head[o + 2];
  if (head[o + 3] !== SETTINGS || head[o + 4] !== 0) return false;
  if (len > MAX_SNIFF_SETTINGS || len % 6 !== 0) return false;
  if (head.length < o + 9 + len) return undefined;
  const settings = parseSettings(head.subarray(o + 9, o + 9 + len));
  return settings.get(BULK_SETTING) === BULK_VERSION;
}

/**
 * Whether `head` (a sniffed start, see {@linkcode sniffBulk}) begins the way
 * every HTTP/2 client must: the connection preface, then a SETTINGS frame
 * on stream 0. Anything else is not worth handing to node:http2: Deno
 * 2.9.6's nghttp2 can abort the whole process (an assertion in
 * find_stream_on_goaway_func) while it answers such garbage with a GOAWAY.
 */
export function isHttp2Start(head: Uint8Array): boolean {
  if (head.length < PREFACE.length + 9) return false;
  for (let i = 0; i < PREFACE.length; i++) {
    if (head[i] !== PREFACE[i]) return false;
  }
  const o = PREFACE.length;
  const len = (head[o] << 16) | (head[o + 1] << 8) | head[o + 2];
  return head[o + 3] === SETTINGS && head[o + 4] === 0 &&
    (head[o + 5] | head[o + 6] | head[o + 7] | head[o + 8]) === 0 &&
    len % 6 === 0;
}

/** Options of {@linkcode serveBulkConnection}. */
export interface BulkServeOptions {
  /** Aborted when the server gives up on in-flight calls. */
  shutdownSignal?: AbortSignal;
  /** Told about every failed call (to log server-side failures). */
  onError?: (error: ConnectError) => void;
  /** A call started (for graceful shutdown's count of busy connections). */
  onStreamOpen?: () => void;
  /** A call ended. */
  onStreamClose?: () => void;
  /** Told about a connection-level protocol error. */
  onProtocolError?: (message: string) => void;
}

interface Stream {
  id: number;
  headers: [string, string][];
  body: Uint8Array[];
  bodyLen: number;
  /** Send window (peer's receive window for this stream). */
  window: number;
  abort: AbortController;
  started: boolean;
  closed: boolean;
}

/**
 * Serves a bulk Read connection whose first bytes `head` (from
 * {@linkcode sniffBulk}) were already read from `socket`.
 */
export function serveBulkConnection(
  socket: net.Socket,
  head: Uint8Array,
  blobs: BlobService,
  opts: BulkServeOptions = {},
): void {
  if (UNIX_SEND_BUFFER > 0) {
    void enlargeUnixSendBuffer(socket, UNIX_SEND_BUFFER).catch(() => {});
  }
  if (LOOPBACK_CONGESTION) {
    void setLoopbackCongestion(socket, LOOPBACK_CONGESTION).catch(() => {});
  }
  const streams = new Map<number, Stream>();
  let lastStream = 0;
  let peerMaxFrame = DEFAULT_MAX_FRAME;
  let peerInitialWindow = DEFAULT_WINDOW;
  let connWindow = DEFAULT_WINDOW;
  let headerBlockOf:
    | { stream: number; flags: number; parts: Uint8Array[] }
    | undefined;
  let dead = false;
  let goingAway = false;
  /** Writers waiting for window or socket room. */
  let waiters: (() => void)[] = [];
  const wakeAll = () => {
    const w = waiters;
    waiters = [];
    for (const f of w) f();
  };

  const send = (b: Uint8Array) => {
    if (!dead) socket.write(b);
  };

  const connectionError = (e: unknown) => {
    if (dead) return;
    const code = e instanceof H2Error ? e.code : INTERNAL_ERROR;
    opts.onProtocolError?.(String((e as Error)?.message ?? e));
    socket.write(goaway(lastStream, code));
    shutdownConnection();
    socket.end();
    setTimeout(() => socket.destroy(), 1000).unref?.();
  };

  const shutdownConnection = () => {
    if (dead) return;
    dead = true;
    for (const st of streams.values()) {
      st.abort.abort(
        new ConnectError("the client closed the connection", Code.Canceled),
      );
    }
    wakeAll();
  };

  const closeStream = (st: Stream) => {
    if (st.closed) return;
    st.closed = true;
    streams.delete(st.id);
    if (st.started) opts.onStreamClose?.();
    if (goingAway && streams.size === 0) socket.end();
  };

  const reader = new FrameReader({
    data(id, piece) {
      const st = streams.get(id);
      if (!st || st.started) return; // reset or already served: dropped
      st.bodyLen += piece.length;
      if (st.bodyLen <= MAX_MESSAGE_BYTES + 5) st.body.push(piece.slice());
    },
    dataEnd(id, flags, length) {
      // Request bodies are tiny: give the credit back at once.
      if (length > 0) {
        send(windowUpdate(0, length));
        if (!(flags & END_STREAM) && streams.has(id)) {
          send(windowUpdate(id, length));
        }
      }
      if (id > lastStream) {
        throw new H2Error(PROTOCOL_ERROR, `DATA on idle stream ${id}`);
      }
      const st = streams.get(id);
      if (st && !st.started && flags & END_STREAM) start(st);
    },
    frame(type, flags, id, payload) {
      if (headerBlockOf && type !== CONTINUATION) {
        throw new H2Error(PROTOCOL_ERROR, "expected CONTINUATION");
      }
      switch (type) {
        case SETTINGS:
          if (id !== 0) {
            throw new H2Error(PROTOCOL_ERROR, "SETTINGS on a stream");
          }
          if (flags & ACK) return;
          applySettings(parseSettings(payload));
          send(frame(SETTINGS, ACK, 0));
          return;
        case PING:
          if (payload.length !== 8) {
            throw new H2Error(PROTOCOL_ERROR, "PING of the wrong size");
          }
          if (!(flags & ACK)) send(frame(PING, ACK, 0, payload));
          return;
        case WINDOW_UPDATE: {
          if (payload.length !== 4) {
            throw new H2Error(
              PROTOCOL_ERROR,
              "WINDOW_UPDATE of the wrong size",
            );
          }
          const inc = uint32(payload, 0, true);
          if (inc === 0) {
            throw new H2Error(PROTOCOL_ERROR, "zero WINDOW_UPDATE");
          }
          if (id === 0) {
            connWindow += inc;
            if (connWindow > MAX_WINDOW) {
              throw new H2Error(FLOW_CONTROL_ERROR, "window over 2^31-1");
            }
          } else {
            const st = streams.get(id);
            if (st) st.window += inc;
          }
          wakeAll();
          return;
        }
        case HEADERS:
          if (id === 0 || id % 2 === 0) {
            throw new H2Error(PROTOCOL_ERROR, `HEADERS on stream ${id}`);
          }
          headerBlockOf = {
            stream: id,
            flags,
            parts: [headerBlock(flags, payload)],
          };
          if (flags & END_HEADERS) headersDone();
          return;
        case CONTINUATION:
          if (!headerBlockOf || headerBlockOf.stream !== id) {
            throw new H2Error(PROTOCOL_ERROR, "unexpected CONTINUATION");
          }
          appendHeaderBlock(headerBlockOf.parts, payload);
          if (flags & END_HEADERS) headersDone();
          return;
        case RST_STREAM: {
          const st = streams.get(id);
          if (st) {
            st.abort.abort(
              new ConnectError("the client cancelled the call", Code.Canceled),
            );
            closeStream(st);
          }
          wakeAll();
          return;
        }
        case GOAWAY:
          goingAway = true;
          if (streams.size === 0) socket.end();
          return;
        default:
          return; // PRIORITY and unknown types are ignored
      }
    },
  }, DEFAULT_MAX_FRAME);

  const applySettings = (s: Map<number, number>) => {
    const mf = s.get(SETTINGS_MAX_FRAME_SIZE);
    if (mf !== undefined) {
      if (mf < DEFAULT_MAX_FRAME || mf > 16_777_215) {
        throw new H2Error(PROTOCOL_ERROR, `bad SETTINGS_MAX_FRAME_SIZE ${mf}`);
      }
      peerMaxFrame = mf;
    }
    const iw = s.get(SETTINGS_INITIAL_WINDOW_SIZE);
    if (iw !== undefined) {
      if (iw > MAX_WINDOW) {
        throw new H2Error(FLOW_CONTROL_ERROR, "initial window over 2^31-1");
      }
      for (const st of streams.values()) st.window += iw - peerInitialWindow;
      peerInitialWindow = iw;
    }
    wakeAll();
  };

  const headersDone = () => {
    const { stream: id, flags, parts } = headerBlockOf!;
    headerBlockOf = undefined;
    const headers = decodeHeaders(
      parts.length === 1 ? parts[0] : concatBytes(parts),
    );
    const known = streams.get(id);
    if (known || id <= lastStream) {
      // Trailers of a request (or a stream already closed): only its end matters.
      if (known && !known.started && flags & END_STREAM) start(known);
      return;
    }
    lastStream = id;
    if (goingAway || streams.size >= MAX_STREAMS) {
      send(rstStream(id, REFUSED_STREAM));
      return;
    }
    const st: Stream = {
      id,
      headers,
      body: [],
      bodyLen: 0,
      window: peerInitialWindow,
      abort: new AbortController(),
      started: false,
      closed: false,
    };
    streams.set(id, st);
    if (flags & END_STREAM) start(st);
  };

  const start = (st: Stream) => {
    st.started = true;
    opts.onStreamOpen?.();
    void serveStream(st).finally(() => closeStream(st));
  };

  /** Waits until `ready()` or the stream is cancelled. */
  const waitFor = async (st: Stream, ready: () => boolean) => {
    while (!ready() && !st.abort.signal.aborted && !dead) {
      await new Promise<void>((r) => waiters.push(r));
    }
    throwIfAborted(st.abort.signal);
    if (dead) {
      throw new ConnectError("the connection closed", Code.Canceled);
    }
  };

  const onDrain = () => wakeAll();
  socket.on("drain", onDrain);

  /**
   * Writes one gRPC message (`hdr` then `parts`) in DATA frames. Each frame
   * waits until the socket took the previous writes (not `writableNeedDrain`;
   * the kernel's socket buffer is the write-ahead): writes queued behind one
   * in flight are joined into one copy by Bun's `_writev`, which measured
   * 1.4-2.1 instead of 0.7-0.9 ms CPU/MiB serving from memory over a unix
   * socket with 4 MiB allowed ahead (Deno: no clear difference).
   */
  const sendMessage = async (
    st: Stream,
    hdr: Uint8Array,
    parts: Uint8Array[],
    len: number,
    headroom = false,
    onWritten?: () => void,
  ) => {
    let rest = hdr.length + len; // message bytes still to frame
    let pi = -1; // part being sent (-1: the header)
    let po = 0; // offset in it
    while (rest > 0) {
      await waitFor(
        st,
        () => st.window > 0 && connWindow > 0 && !socket.writableNeedDrain,
      );
      const n = Math.min(rest, peerMaxFrame, st.window, connWindow);
      if (
        headroom && n === rest && pi === -1 && parts.length === 1 &&
        parts[0].byteOffset >= 9 + hdr.length
      ) {
        // The whole message in one frame, its headers written into the
        // free bytes in front of the part: one write, no copy.
        const p = parts[0];
        const b = new Uint8Array(
          p.buffer,
          p.byteOffset - 9 - hdr.length,
          9 + n,
        );
        writeFrameHeader(b, 0, n, DATA, 0, st.id);
        b.set(hdr, 9);
        st.window -= n;
        connWindow -= n;
        socket.write(b, onWritten);
        return;
      }
      st.window -= n;
      connWindow -= n;
      rest -= n;
      let left = n;
      if (pi === -1) {
        // The frame header and the message header in one small write.
        const take = Math.min(left, hdr.length - po);
        const b = new Uint8Array(9 + take);
        writeFrameHeader(b, 0, n, DATA, 0, st.id);
        b.set(hdr.subarray(po, po + take), 9);
        socket.write(b);
        left -= take;
        po += take;
        if (po === hdr.length) {
          pi = 0;
          po = 0;
        }
      } else {
        socket.write(frameHeader(n, DATA, 0, st.id));
      }
      while (left > 0) {
        const p = parts[pi];
        const take = Math.min(left, p.length - po);
        const last = rest === 0 && left === take;
        socket.write(
          take === p.length ? p : p.subarray(po, po + take),
          last ? onWritten : undefined,
        );
        left -= take;
        po += take;
        if (po === p.length) {
          pi++;
          po = 0;
        }
      }
    }
  };

  /** A header block in HEADERS (+ CONTINUATION) frames of the peer's size. */
  const sendHeaders = (
    st: Stream,
    headers: [string, string][],
    end: boolean,
  ) => {
    const block = encodeHeaders(headers);
    const max = peerMaxFrame;
    for (let o = 0; o === 0 || o < block.length; o += max) {
      const last = o + max >= block.length;
      send(frame(
        o === 0 ? HEADERS : CONTINUATION,
        (last ? END_HEADERS : 0) | (o === 0 && end ? END_STREAM : 0),
        st.id,
        block.subarray(o, o + max),
      ));
    }
  };

  const serveStream = async (st: Stream) => {
    const signal = st.abort.signal;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const onShutdown = () =>
      st.abort.abort(
        new ConnectError("the server is shutting down", Code.Canceled),
      );
    opts.shutdownSignal?.addEventListener("abort", onShutdown, { once: true });
    if (opts.shutdownSignal?.aborted) onShutdown();
    let reader: ReadableStreamDefaultReader<Uint8Array> | undefined;
    let stored: AsyncGenerator<ChunkPiece> | undefined;
    let headersSent = false;
    const type = header(st, "content-type");
    const responseType =
      type === "application/grpc+proto" || type === "application/grpc"
        ? type
        : "application/grpc+proto";
    try {
      if (header(st, ":method") !== "POST") {
        throw new ConnectError("only POST is served", Code.Unimplemented);
      }
      if (header(st, ":path") !== BLOB_READ_PATH) {
        throw new ConnectError(
          `${header(st, ":path")} is not served on a bulk Read connection`,
          Code.Unimplemented,
        );
      }
      if (type !== "application/grpc" && type !== "application/grpc+proto") {
        throw new ConnectError(
          `content-type ${type} is not served on a bulk Read connection`,
          Code.Unimplemented,
        );
      }
      const enc = header(st, "grpc-encoding");
      if (enc !== undefined && enc !== "identity") {
        throw new ConnectError(
          `grpc-encoding ${enc} is not served on a bulk Read connection`,
          Code.Unimplemented,
        );
      }
      const timeout = parseTimeout(
        header(st, "grpc-timeout") ?? null,
        Number.MAX_SAFE_INTEGER,
      );
      if (timeout.error) throw timeout.error;
      if (timeout.timeoutMs !== undefined) {
        timer = setTimeout(
          () =>
            st.abort.abort(
              new ConnectError(
                "the operation timed out",
                Code.DeadlineExceeded,
              ),
            ),
          timeout.timeoutMs,
        );
      }
      if (st.bodyLen > MAX_MESSAGE_BYTES + 5) {
        throw new ConnectError(
          `message size is larger than configured readMaxBytes ${MAX_MESSAGE_BYTES}`,
          Code.ResourceExhausted,
        );
      }
      const body = concatBytes(st.body, st.bodyLen);
      st.body = [];
      const sendReader = async (r: ReadableStreamDefaultReader<Uint8Array>) => {
        reader = r;
        for await (
          const group of regroup(
            readerIterable(r),
            MIN_DATA_MESSAGE_BYTES,
            MAX_DATA_MESSAGE_BYTES,
          )
        ) {
          throwIfAborted(signal);
          let len = 0;
          for (const p of group) len += p.length;
          await sendMessage(st, messageHeader(len), group, len);
        }
      };
      const onAbort = () => void reader?.cancel().catch(() => {});
      signal.addEventListener("abort", onAbort, { once: true });
      const zstd = SEND_STORED && canLocateChunks(blobs) &&
        (header(st, "grpc-accept-encoding") ?? "").split(",").some((e) =>
          e.trim() === ZSTD_ENCODING
        );
      if (zstd) {
        // The chunks' stored frames as compressed messages (./stored_chunks.ts).
        const request = decodeReadRequest(body);
        requireB3Digest(request.digest, "digest");
        stored = await storedChunks(blobs, request.digest);
        if (!stored) {
          throw new ConnectError(
            `blob ${showDigest(request.digest)} not found`,
            Code.NotFound,
          );
        }
        throwIfAborted(signal);
        sendHeaders(st, [
          [":status", "200"],
          ["content-type", responseType],
          ["grpc-encoding", ZSTD_ENCODING],
        ], false);
        headersSent = true;
        for await (const piece of stored) {
          throwIfAborted(signal);
          if ("data" in piece) {
            await sendReader(piece.data.getReader());
            continue;
          }
          if (piece.raw) {
            // Raw bytes: a plain message (flag 0 is allowed under an encoding).
            const raw = piece.raw;
            await sendMessage(
              st,
              messageHeader(raw.length),
              [raw],
              raw.length,
              true,
              () => releaseStored(raw),
            );
            continue;
          }
          // The BlobChunk's start in a frame of its own, then the stored one.
          const prefix = rawFrame(messageHeader(piece.size).subarray(5));
          const hdr = new Uint8Array(5 + prefix.length);
          hdr[0] = 1; // compressed
          new DataView(hdr.buffer).setUint32(
            1,
            prefix.length + piece.frame.length,
          );
          hdr.set(prefix, 5);
          const frame = piece.frame;
          await sendMessage(
            st,
            hdr,
            [frame],
            frame.length,
            true,
            () => releaseStored(frame),
          );
        }
      } else {
        const r = await openRequestedBlob(blobs, body);
        throwIfAborted(signal);
        sendHeaders(
          st,
          [[":status", "200"], ["content-type", responseType]],
          false,
        );
        headersSent = true;
        await sendReader(r);
      }
      throwIfAborted(signal);
      sendTrailers(st, headersSent, responseType, undefined);
    } catch (e) {
      const err = signal.aborted
        ? signal.reason as ConnectError
        : ConnectError.from(e);
      reader?.cancel().catch(() => {});
      void stored?.return(undefined).catch(() => {});
      opts.onError?.(err);
      if (!st.closed && !dead) sendTrailers(st, headersSent, responseType, err);
    } finally {
      if (timer !== undefined) clearTimeout(timer);
      opts.shutdownSignal?.removeEventListener("abort", onShutdown);
    }
  };

  const sendTrailers = (
    st: Stream,
    headersSent: boolean,
    type: string,
    error: ConnectError | undefined,
  ) => {
    const t = new Headers();
    // A long message is cut (the peer limits header blocks to 64 KiB).
    setTrailerStatus(
      t,
      error && error.rawMessage.length > MAX_STATUS_MESSAGE
        ? new ConnectError(
          error.rawMessage.slice(0, MAX_STATUS_MESSAGE) + "...",
          error.code,
        )
        : error,
    );
    const list: [string, string][] = headersSent
      ? []
      : [[":status", "200"], ["content-type", type]];
    t.forEach((v, k) => list.push([k, v]));
    sendHeaders(st, list, true);
  };

  socket.on("close", shutdownConnection);
  socket.on("error", shutdownConnection);
  const onData = (d: Uint8Array) => {
    if (dead) return;
    try {
      reader.push(d);
    } catch (e) {
      connectionError(e);
    }
  };
  send(settingsFrame([
    [BULK_SETTING, BULK_VERSION],
    [SETTINGS_HEADER_TABLE_SIZE, 0],
    [SETTINGS_MAX_CONCURRENT_STREAMS, MAX_STREAMS],
    [SETTINGS_INITIAL_WINDOW_SIZE, 1 << 20],
  ]));
  onData(head.subarray(PREFACE.length));
  socket.on("data", onData);
  socket.resume();
}

function header(st: Stream, name: string): string | undefined {
  for (const [k, v] of st.headers) if (k === name) return v;
  return undefined;
}
