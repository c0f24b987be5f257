/**
 * Client transports for `grpc+http://host:port` and `grpc+unix:///path.sock`:
 * one HTTP/2 connection per {@linkcode GrpcChannel}, with our message limits
 * and flow-control windows, closable.
 *
 * @module
 */
import * as net from "node:net";
import process from "node:process";
import type * as http2 from "node:http2";
import type { Transport } from "@connectrpc/connect";
import {
  createGrpcTransport,
  Http2SessionManager,
} from "@connectrpc/connect-node";
import { type RawHttp2Caller, readBlobBytes } from "./blob_read_client.ts";
import { BulkReader } from "./bulk_read_client.ts";
import {
  HTTP2_SETTINGS,
  MAX_MESSAGE_BYTES,
  SESSION_WINDOW_BYTES,
} from "./limits.ts";

/**
 * Under Bun 1.4, `setLocalWindowSize` on an HTTP/2 session stalls large
 * transfers: after about the first 4 MiB of a blob Read no more data arrives
 * (seen from the compiled binary as a client of any of our daemons), so Bun
 * keeps the default connection window.
 */
const BUN = typeof process.versions.bun === "string";

/** Silence on a connection with open calls before a PING is sent. */
const KEEPALIVE_INTERVAL_MS = 10_000;
/** How long a PING may go unanswered before the connection is given up. */
const KEEPALIVE_TIMEOUT_MS = 10_000;

/** Where a gRPC server listens, as a client dials it. */
export interface GrpcAddress {
  /** `http://host:port` (TCP) or `http://localhost` (unix socket; the authority is nominal). */
  baseUrl: string;
  /** The unix socket path, if any. */
  socketPath?: string;
}

/**
 * Parses `grpc+http://host:port`, `grpc+https://host:port` or
 * `grpc+unix:///abs/path.sock`; throws an `Error` naming what is wrong.
 */
export function parseGrpcAddress(url: string): GrpcAddress {
  if (url.startsWith("grpc+unix://")) {
    const socketPath = url.slice("grpc+unix://".length);
    if (!socketPath.startsWith("/")) {
      throw new Error(
        `"${url}": grpc+unix:// needs an absolute socket path (grpc+unix:///run/snix.sock)`,
      );
    }
    return { baseUrl: "http://localhost", socketPath };
  }
  if (url.startsWith("grpc+http://") || url.startsWith("grpc+https://")) {
    let u: URL;
    try {
      u = new URL(url.slice("grpc+".length));
    } catch {
      throw new Error(`"${url}" is not a valid URL`);
    }
    if (!u.port) {
      throw new Error(`"${url}" needs a port (grpc+http://[::1]:8000)`);
    }
    return { baseUrl: `${u.protocol}//${u.host}` };
  }
  throw new Error(
    `"${url}" is not a gRPC address (grpc+http://HOST:PORT or grpc+unix:///PATH)`,
  );
}

/** Options of {@linkcode openGrpcChannel}. */
export interface GrpcChannelOptions {
  /** Silence (ms) on a connection with open calls before a PING (default 10 s). */
  keepaliveIntervalMs?: number;
  /** How long (ms) a PING may go unanswered before the connection fails (default 10 s). */
  keepaliveTimeoutMs?: number;
}

/** A client connection: the transport for generated clients, and a way to close it. */
export interface GrpcChannel {
  /** Hand to `createClient(Service, transport)`. */
  readonly transport: Transport;
  /** A human-readable name of the peer, for error messages. */
  readonly peer: string;
  /** Closes the connection (and any open streams). */
  close(): void;
  /** Direct HTTP/2 requests on the same connection (for blob_read_client.ts). */
  readonly raw: RawHttp2Caller;
  /**
   * Blob Reads over a second, bulk connection where the server offers it
   * (./bulk_read_client.ts), else over `raw`; absent if turned off with
   * `SNIX_GRPC_BULK_READ=0`.
   */
  readonly bulk?: BulkReader;
}

/**
 * Wraps connect-node's session manager so every new HTTP/2 session gets a
 * large connection-level receive window: connect-node exposes no option for
 * it, and the 64 KiB default halves large-read throughput.
 */
class WindowedSessionManager {
  readonly #inner: Http2SessionManager;
  readonly #widened = new WeakSet<http2.Http2Session>();
  readonly authority: string;

  constructor(inner: Http2SessionManager) {
    this.#inner = inner;
    this.authority = inner.authority;
  }

  async request(
    method: string,
    path: string,
    headers: http2.OutgoingHttpHeaders,
    options: Omit<http2.ClientSessionRequestOptions, "signal">,
  ): Promise<http2.ClientHttp2Stream> {
    const stream = await this.#inner.request(method, path, headers, options);
    const session = stream.session;
    // Failures reach the caller through the call; a late 'error' event
    // (e.g. a keepalive PING timing out) must not become an uncaught one.
    stream.on("error", () => {});
    if (session && !this.#widened.has(session)) {
      this.#widened.add(session);
      session.on("error", () => {});
      if (!BUN) {
        try {
          session.setLocalWindowSize(SESSION_WINDOW_BYTES);
        } catch {
          // Not every runtime implements it; the default window still works.
        }
      }
    }
    return stream;
  }

  notifyResponseByteRead(stream: http2.ClientHttp2Stream): void {
    this.#inner.notifyResponseByteRead(stream);
  }

  abort(): void {
    this.#inner.abort();
  }
}

/** Opens a channel to a gRPC address (a URL string or a parsed {@linkcode GrpcAddress}). */
export function openGrpcChannel(
  address: string | GrpcAddress,
  opts: GrpcChannelOptions = {},
): GrpcChannel {
  const addr = typeof address === "string"
    ? parseGrpcAddress(address)
    : address;
  const socketPath = addr.socketPath;
  const nodeOptions: http2.ClientSessionOptions = {
    settings: {
      initialWindowSize: HTTP2_SETTINGS.initialWindowSize,
      maxFrameSize: HTTP2_SETTINGS.maxFrameSize,
    },
    ...(socketPath ? { createConnection: () => net.connect(socketPath) } : {}),
  };
  const manager = new WindowedSessionManager(
    new Http2SessionManager(
      addr.baseUrl,
      {
        idleConnectionTimeoutMs: 60_000,
        // Detect a peer that stopped answering (or never spoke HTTP/2): with
        // calls open, a PING goes out after this much silence, and the
        // connection fails if it is not answered in time.
        pingIntervalMs: opts.keepaliveIntervalMs ?? KEEPALIVE_INTERVAL_MS,
        pingTimeoutMs: opts.keepaliveTimeoutMs ?? KEEPALIVE_TIMEOUT_MS,
      },
      nodeOptions,
    ),
  );
  const transport = createGrpcTransport({
    baseUrl: addr.baseUrl,
    sessionManager: manager,
    readMaxBytes: MAX_MESSAGE_BYTES,
    writeMaxBytes: MAX_MESSAGE_BYTES,
    // Blob data is mostly incompressible; skip the cost.
    acceptCompression: [],
  });
  const raw: RawHttp2Caller = {
    request: (path, headers) => manager.request("POST", path, headers, {}),
    notifyResponseByteRead: (stream) => manager.notifyResponseByteRead(stream),
  };
  // The bulk connection is cleartext HTTP/2 only (TCP or unix socket).
  const bulk = process.env.SNIX_GRPC_BULK_READ === "0" ||
      !addr.baseUrl.startsWith("http:")
    ? undefined
    : new BulkReader(
      addr,
      (digest, signal) => readBlobBytes(raw, digest, signal),
    );
  return {
    transport,
    peer: socketPath ? `grpc+unix://${socketPath}` : `grpc+${addr.baseUrl}`,
    close: () => {
      bulk?.close();
      manager.abort();
    },
    raw,
    bulk,
  };
}

/** What every service client takes: a peer name for messages and a close hook. */
export interface ClientOptions {
  /** Name of the peer in error messages. */
  peer?: string;
  /** Called by the client's `close()`. */
  onClose?: () => void;
  /** Direct HTTP/2 access to the connection, where the client opened it. */
  raw?: RawHttp2Caller;
  /** Blob Reads over a bulk connection, where the client opened it. */
  bulk?: BulkReader;
}

/**
 * Opens a channel to `address` and builds a client on it with `make`; the
 * client's `close()` then also closes the channel.
 */
export function connectClient<O extends ClientOptions, C>(
  address: string | GrpcAddress,
  opts: O,
  make: (transport: Transport, opts: O) => C,
): C {
  const channel = openGrpcChannel(address);
  return make(channel.transport, {
    peer: channel.peer,
    raw: channel.raw,
    bulk: channel.bulk,
    ...opts,
    onClose: () => {
      opts.onClose?.();
      channel.close();
    },
  });
}
