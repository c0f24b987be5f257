/**
 * A direct HTTP/2 implementation of `snix.castore.v1.BlobService/Read` for
 * the store daemon, in front of the Connect handler.
 *
 * Why not Connect for this one method: Connect serialises every message
 * (protobuf-es copies the data into its writer, concatenates, then copies
 * it again into the gRPC envelope) before HTTP/2 copies it once more.
 * Measured on this 2-core machine with the same HTTP/2 server, serving
 * 512 MiB from memory in 320 KiB messages cost the server ~4-5 ms of CPU
 * per MiB through Connect and ~1.7 ms written here (a 6-byte header per
 * message, then the blob's own bytes, no copy in JavaScript). For a blob
 * read from the local store that is the largest cost of the daemon after
 * reading the chunks themselves.
 *
 * Only plain gRPC requests take this path (`application/grpc` or
 * `application/grpc+proto`, no request compression); anything else (gRPC-web,
 * the Connect protocol, compressed requests) goes to Connect as before.
 * Behaviour matches the Connect path: the same status codes and messages,
 * `grpc-timeout` deadlines, client cancellation, message sizes, and the
 * server's shutdown signal.
 *
 * @module
 */
import type * as http2 from "node:http2";
import { fromBinary } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
// Private helpers of Connect's gRPC protocol (deliberately the same status
// encoding and timeout parsing as the Connect path); the version is pinned
// exactly in package.json.
import {
  parseTimeout,
  setTrailerStatus,
} from "@connectrpc/connect/protocol-grpc";
import {
  BlobService as BlobServiceDesc,
  type ReadBlobRequest,
  ReadBlobRequestSchema,
} from "../../proto/gen/snix/castore/protos/rpc_blobstore_pb.ts";
import type { BlobService } from "../castore/blob_service.ts";
import { requireB3Digest, showDigest } from "./check.ts";
import {
  MAX_DATA_MESSAGE_BYTES,
  MAX_MESSAGE_BYTES,
  MIN_DATA_MESSAGE_BYTES,
} from "./limits.ts";
import { regroup } from "./rechunk.ts";
import { concatBytes } from "../nix/bytes.ts";

/** The HTTP/2 path of BlobService.Read. */
export const BLOB_READ_PATH =
  `/${BlobServiceDesc.typeName}/${BlobServiceDesc.method.read.name}`;

/** Whether `req` is a plain gRPC BlobService.Read that {@linkcode serveBlobRead} handles. */
export function isPlainBlobRead(req: http2.Http2ServerRequest): boolean {
  if (req.method !== "POST" || req.url !== BLOB_READ_PATH) return false;
  const type = req.headers["content-type"];
  if (type !== "application/grpc" && type !== "application/grpc+proto") {
    return false;
  }
  const enc = req.headers["grpc-encoding"];
  return enc === undefined || enc === "identity";
}

/** Options of {@linkcode serveBlobRead}. */
export interface BlobReadOptions {
  /** Aborted when the server gives up on in-flight calls. */
  shutdownSignal?: AbortSignal;
  /** Told about every failed call (to log server-side failures). */
  onError?: (error: ConnectError) => void;
}

/** Serves one BlobService.Read request (see the module notes). */
export async function serveBlobRead(
  blobs: BlobService,
  req: http2.Http2ServerRequest,
  res: http2.Http2ServerResponse,
  opts: BlobReadOptions = {},
): Promise<void> {
  const abort = new AbortController();
  const cancel = (reason: ConnectError) => {
    if (!abort.signal.aborted) abort.abort(reason);
  };
  let timer: ReturnType<typeof setTimeout> | undefined;
  const onShutdown = () =>
    cancel(new ConnectError("the server is shutting down", Code.Canceled));
  opts.shutdownSignal?.addEventListener("abort", onShutdown, { once: true });
  // The client went away (RST_STREAM or a closed connection).
  const onClose = () =>
    cancel(new ConnectError("the client cancelled the call", Code.Canceled));
  res.once("close", onClose);
  let reader: ReadableStreamDefaultReader<Uint8Array> | undefined;
  try {
    const timeout = parseTimeout(
      req.headers["grpc-timeout"] as string | undefined ?? null,
      Number.MAX_SAFE_INTEGER,
    );
    if (timeout.error) throw timeout.error;
    if (timeout.timeoutMs !== undefined) {
      timer = setTimeout(
        () =>
          cancel(
            new ConnectError("the operation timed out", Code.DeadlineExceeded),
          ),
        timeout.timeoutMs,
      );
    }
    const body = await readRequestBody(req, abort.signal);
    reader = await openRequestedBlob(blobs, body);
    let unflushed = 0; // bytes written but not yet taken by HTTP/2
    let wakeWriter: (() => void) | undefined;
    const onAbort = () => void reader?.cancel().catch(() => {});
    abort.signal.addEventListener("abort", onAbort, { once: true });
    throwIfAborted(abort.signal);
    res.writeHead(200, { "content-type": responseType(req) });
    for await (
      const group of regroup(
        readerIterable(reader),
        MIN_DATA_MESSAGE_BYTES,
        MAX_DATA_MESSAGE_BYTES,
      )
    ) {
      throwIfAborted(abort.signal);
      let len = 0;
      for (const p of group) len += p.length;
      res.write(messageHeader(len));
      unflushed += len;
      const onTaken = () => {
        unflushed -= len;
        if (unflushed <= WRITE_AHEAD_BYTES / 2) wakeWriter?.();
      };
      for (let i = 0; i < group.length; i++) {
        if (i < group.length - 1) res.write(group[i]);
        else res.write(group[i], onTaken);
      }
      if (unflushed > WRITE_AHEAD_BYTES) {
        await flushed(res, abort.signal, (w) => wakeWriter = w);
        wakeWriter = undefined;
      }
    }
    throwIfAborted(abort.signal);
    finish(res, undefined);
  } catch (e) {
    const err = abort.signal.aborted
      ? abort.signal.reason as ConnectError
      : ConnectError.from(e);
    reader?.cancel().catch(() => {});
    opts.onError?.(err);
    finish(res, err);
  } finally {
    if (timer !== undefined) clearTimeout(timer);
    opts.shutdownSignal?.removeEventListener("abort", onShutdown);
    res.off("close", onClose);
  }
}

/** Throws the abort reason if `signal` is aborted. */
export function throwIfAborted(signal: AbortSignal): void {
  if (signal.aborted) throw signal.reason;
}

/** The response content type: the request's own (both are protobuf). */
function responseType(req: http2.Http2ServerRequest): string {
  return req.headers["content-type"] as string;
}

/** Ends the response with trailers carrying `error` (or OK). */
function finish(res: http2.Http2ServerResponse, error?: ConnectError): void {
  if (res.writableEnded || res.destroyed || res.stream.destroyed) return;
  if (!res.headersSent) {
    res.writeHead(200, { "content-type": "application/grpc+proto" });
  }
  const trailer = new Headers();
  setTrailerStatus(trailer, error);
  const t: Record<string, string> = {};
  trailer.forEach((v, k) => t[k] = v);
  res.addTrailers(t);
  res.end();
}

/** Reads the request body: one enveloped message, at most MAX_MESSAGE_BYTES. */
async function readRequestBody(
  req: http2.Http2ServerRequest,
  signal: AbortSignal,
): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  let n = 0;
  for await (const piece of req as AsyncIterable<Uint8Array>) {
    throwIfAborted(signal);
    n += piece.length;
    if (n > MAX_MESSAGE_BYTES + 5) {
      throw new ConnectError(
        `message size is larger than configured readMaxBytes ${MAX_MESSAGE_BYTES}`,
        Code.ResourceExhausted,
      );
    }
    parts.push(piece);
  }
  throwIfAborted(signal);
  return concatBytes(parts, n);
}

/**
 * The blob a Read request body asks for, opened for reading: `NotFound` if
 * missing, `InvalidArgument` for a bad request or digest.
 */
export async function openRequestedBlob(
  blobs: BlobService,
  body: Uint8Array,
): Promise<ReadableStreamDefaultReader<Uint8Array>> {
  const request = decodeReadRequest(body);
  requireB3Digest(request.digest, "digest");
  const stream = await blobs.read(request.digest);
  if (stream === undefined) {
    throw new ConnectError(
      `blob ${showDigest(request.digest)} not found`,
      Code.NotFound,
    );
  }
  return stream.getReader();
}

/** Decodes the single ReadBlobRequest envelope of a request body (ConnectError if malformed). */
export function decodeReadRequest(body: Uint8Array): ReadBlobRequest {
  if (body.length < 5) {
    throw new ConnectError(
      body.length === 0
        ? "protocol error: missing input message for unary method"
        : "protocol error: incomplete envelope",
      body.length === 0 ? Code.Unimplemented : Code.InvalidArgument,
    );
  }
  const flags = body[0];
  const len = new DataView(body.buffer, body.byteOffset, 5).getUint32(1);
  if (len > MAX_MESSAGE_BYTES) {
    throw new ConnectError(
      `message size ${len} is larger than configured readMaxBytes ${MAX_MESSAGE_BYTES}`,
      Code.ResourceExhausted,
    );
  }
  if (body.length < 5 + len) {
    throw new ConnectError(
      "protocol error: incomplete envelope",
      Code.InvalidArgument,
    );
  }
  if (body.length > 5 + len) {
    throw new ConnectError(
      "protocol error: received extra input message for unary method",
      Code.Unimplemented,
    );
  }
  if (flags !== 0) {
    throw new ConnectError(
      flags & 1
        ? "protocol error: received compressed message without grpc-encoding"
        : `protocol error: invalid envelope flags ${flags}`,
      Code.Internal,
    );
  }
  try {
    return fromBinary(ReadBlobRequestSchema, body.subarray(5));
  } catch (e) {
    throw new ConnectError(
      `parse binary: ${(e as Error).message}`,
      Code.InvalidArgument,
    );
  }
}

/**
 * The gRPC envelope header (flags, length) and the start of a BlobChunk
 * (field 1, length-delimited) for `len` data bytes that follow.
 */
export function messageHeader(len: number): Uint8Array {
  const h = new Uint8Array(11);
  let k = 6;
  h[5] = 0x0a;
  let v = len;
  while (v >= 0x80) {
    h[k++] = (v & 0x7f) | 0x80;
    v >>>= 7;
  }
  h[k++] = v;
  new DataView(h.buffer).setUint32(1, len + (k - 5));
  return h.subarray(0, k);
}

/** Bytes of a Read response that may be written ahead of what HTTP/2 has taken. */
const WRITE_AHEAD_BYTES = 2 << 20;

/** Resolves once `setWake`'s callback is called, the response closes or `signal` aborts. */
function flushed(
  res: http2.Http2ServerResponse,
  signal: AbortSignal,
  setWake: (wake: () => void) => void,
): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      res.off("close", done);
      signal.removeEventListener("abort", done);
      resolve();
    };
    setWake(done);
    res.once("close", done);
    signal.addEventListener("abort", done, { once: true });
  });
}

/** A stream reader's chunks as an async iterable (the reader stays the caller's). */
export async function* readerIterable(
  reader: ReadableStreamDefaultReader<Uint8Array>,
): AsyncGenerator<Uint8Array> {
  while (true) {
    const r = await reader.read();
    if (r.done) return;
    yield r.value;
  }
}
