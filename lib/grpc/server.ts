/**
 * The gRPC server of `snix store daemon`: BlobService, DirectoryService,
 * PathInfoService and grpc.health.v1.Health on any number of TCP and unix
 * socket listeners (HTTP/2 cleartext), with deliberate message limits and
 * flow-control windows, read-only mode and graceful shutdown.
 *
 * @module
 */
import * as http2 from "node:http2";
import * as net from "node:net";
import process from "node:process";
import * as fs from "node:fs";
import {
  ConnectError,
  type ConnectRouter,
  type Interceptor,
} from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { getLogger } from "@logtape/logtape";
import { BlobService as BlobServiceDesc } from "../../proto/gen/snix/castore/protos/rpc_blobstore_pb.ts";
import { DirectoryService as DirectoryServiceDesc } from "../../proto/gen/snix/castore/protos/rpc_directory_pb.ts";
import { PathInfoService as PathInfoServiceDesc } from "../../proto/gen/snix/store/protos/rpc_pathinfo_pb.ts";
import { Health } from "../../proto/gen/grpc/health/v1/health_pb.ts";
import type { BlobService } from "../castore/blob_service.ts";
import type { DirectoryService } from "../castore/directory_service.ts";
import type { PathInfoService } from "../store/path_info_service.ts";
import { blobServer } from "./blob_server.ts";
import {
  BLOB_READ_PATH,
  isPlainBlobRead,
  serveBlobRead,
} from "./blob_read_server.ts";
import {
  isHttp2Start,
  serveBulkConnection,
  sniffBulk,
} from "./bulk_read_server.ts";
import { directoryServer } from "./directory_server.ts";
import { pathInfoServer } from "./path_info_server.ts";
import { healthServer } from "./health_server.ts";
import {
  HTTP2_SETTINGS,
  MAX_MESSAGE_BYTES,
  SESSION_WINDOW_BYTES,
} from "./limits.ts";
import {
  formatListenAddress,
  type ListenAddress,
  parseListenAddress,
} from "./listen_address.ts";

const log = getLogger(["snix", "grpc"]);

/**
 * Whether BlobService.Read takes the direct path (./blob_read_server.ts).
 * Not under Bun: Bun 1.4's node:http2 then sends DATA frames beyond the
 * client's flow-control window once a few MiB are queued (python grpcio:
 * "frame of size 16374 overflows local window", seen on the second 1 GiB
 * Read of a connection), so Bun keeps Connect's write-and-drain path.
 */
const DIRECT_READ = typeof process.versions.bun !== "string";

/** The services a store server exposes. */
export interface StoreBackends {
  blobs: BlobService;
  directories: DirectoryService;
  pathInfos: PathInfoService;
}

/** Options of {@linkcode createStoreRoutes}. */
export interface StoreRoutesOptions {
  /** Refuse every Put with PERMISSION_DENIED. */
  readOnly?: boolean;
  /** Whether the health check reports SERVING (flipped off on shutdown). */
  serving?: () => boolean;
}

/** Registers the three store services and Health on a Connect router. */
export function createStoreRoutes(
  backends: StoreBackends,
  opts: StoreRoutesOptions = {},
): (router: ConnectRouter) => void {
  const readOnly = opts.readOnly ?? false;
  return (router) => {
    router.service(BlobServiceDesc, blobServer(backends.blobs, { readOnly }));
    router.service(
      DirectoryServiceDesc,
      directoryServer(backends.directories, { readOnly }),
    );
    router.service(PathInfoServiceDesc, pathInfoServer(backends, { readOnly }));
    router.service(
      Health,
      healthServer(
        [
          BlobServiceDesc.typeName,
          DirectoryServiceDesc.typeName,
          PathInfoServiceDesc.typeName,
        ],
        opts.serving,
      ),
    );
  };
}

/** Options of {@linkcode startStoreServer}. */
export interface StoreServerOptions {
  /** Where to listen (`host:port`, `[v6]:port`, `unix:/path`), at least one. */
  listen: readonly (string | ListenAddress)[];
  /** Refuse every Put with PERMISSION_DENIED. */
  readOnly?: boolean;
  /** Replace an existing file at a unix socket path (a stale socket); otherwise that is an error. */
  unlinkStaleSocket?: boolean;
  /** File mode of unix sockets (default 0o660). */
  socketMode?: number;
  /**
   * Serve bulk Read connections (./bulk_read_server.ts) to clients that ask
   * for them (default true; every other connection is node:http2's either way).
   */
  bulkReads?: boolean;
}

/** A running server. */
export interface StoreServer {
  /** The addresses actually bound (port 0 resolved). */
  readonly addresses: string[];
  /**
   * Stops accepting, lets in-flight calls finish for up to `graceMs`
   * (default 5000), then cancels what is left and closes every listener.
   */
  shutdown(graceMs?: number): Promise<void>;
}

/** Server errors worth a log line (client mistakes are not). */
const SERVER_SIDE_CODES = new Set([2, 13, 14, 15]); // unknown, internal, unavailable, data loss

const logServerErrors: Interceptor = (next) => async (req) => {
  try {
    return await next(req);
  } catch (e) {
    const ce = ConnectError.from(e);
    if (SERVER_SIDE_CODES.has(ce.code)) {
      log.warn("{method} failed: {message}", {
        method: req.url,
        message: ce.rawMessage,
      });
    }
    throw e;
  }
};

/** Starts the store's gRPC server on every listen address. */
export async function startStoreServer(
  backends: StoreBackends,
  opts: StoreServerOptions,
): Promise<StoreServer> {
  if (opts.listen.length === 0) throw new Error("no listen address given");
  const listen = opts.listen.map((a) =>
    typeof a === "string" ? parseListenAddress(a) : a
  );
  let serving = true;
  const shutdownController = new AbortController();
  const handler = connectNodeAdapter({
    routes: createStoreRoutes(backends, {
      readOnly: opts.readOnly,
      serving: () => serving,
    }),
    readMaxBytes: MAX_MESSAGE_BYTES,
    writeMaxBytes: MAX_MESSAGE_BYTES,
    // Accept compressed requests, but never spend CPU compressing responses
    // (blob data is mostly incompressible; grpcio advertises gzip by default).
    compressMinBytes: Number.MAX_SAFE_INTEGER,
    shutdownSignal: shutdownController.signal,
    interceptors: [logServerErrors],
  });

  // One HTTP/2 server, fed by our own net.Servers: Deno's http2
  // `server.close()` and `session.close()/destroy()` send GOAWAY, and Deno's
  // HTTP/2 client (nghttp2) can abort on a GOAWAY arriving on a session with
  // closed streams (assertion in find_stream_on_goaway_func). Owning the raw
  // sockets lets shutdown close idle connections without a GOAWAY.
  // BlobService.Read in plain gRPC is served directly (see blob_read_server.ts).
  const onRequest = (
    req: http2.Http2ServerRequest,
    res: http2.Http2ServerResponse,
  ) => {
    if (!DIRECT_READ || !isPlainBlobRead(req)) return handler(req, res);
    void serveBlobRead(backends.blobs, req, res, {
      shutdownSignal: shutdownController.signal,
      onError: logReadError,
    });
  };
  const logReadError = (e: ConnectError) => {
    if (SERVER_SIDE_CODES.has(e.code)) {
      log.warn("{method} failed: {message}", {
        method: BLOB_READ_PATH,
        message: e.rawMessage,
      });
    }
  };
  const h2 = http2.createServer({ settings: HTTP2_SETTINGS }, onRequest);
  interface Conn {
    socket: net.Socket;
    active: number;
  }
  const conns = new Set<Conn>();
  let accepting: Conn | undefined;
  let draining = false;
  h2.on("session", (session) => {
    const conn = accepting; // 'session' is emitted within emit("connection")
    // A broken peer must not take the process down.
    session.on(
      "error",
      (e) =>
        log.debug("HTTP/2 session error: {message}", { message: String(e) }),
    );
    session.on("stream", (stream) => {
      if (!conn) return;
      conn.active++;
      stream.once("close", () => {
        conn.active--;
        if (draining && conn.active === 0) closeGently(conn.socket);
      });
    });
    widenSessionWindow(session);
  });
  h2.on(
    "sessionError",
    (e) => log.debug("HTTP/2 session error: {message}", { message: String(e) }),
  );
  const onConnection = (socket: net.Socket) => {
    socket.on(
      "error",
      (e) => log.debug("connection error: {message}", { message: String(e) }),
    );
    if (draining) {
      socket.destroy();
      return;
    }
    const conn: Conn = { socket, active: 0 };
    conns.add(conn);
    socket.once("close", () => conns.delete(conn));
    if (opts.bulkReads === false) {
      toHttp2(conn);
      return;
    }
    // Our blob client's bulk Read connection announces itself in its first
    // SETTINGS frame; any other connection goes to node:http2 with the bytes
    // read so far put back.
    void sniffBulk(socket).then((sniffed) => {
      if (!sniffed || (!sniffed.bulk && !isHttp2Start(sniffed.head))) {
        // Not HTTP/2 at all (see isHttp2Start): closed here.
        log.debug("not an HTTP/2 connection: closed");
        socket.destroy();
      } else if (sniffed.bulk && !draining) {
        serveBulkConnection(socket, sniffed.head, backends.blobs, {
          shutdownSignal: shutdownController.signal,
          onError: logReadError,
          onStreamOpen: () => conn.active++,
          onStreamClose: () => {
            conn.active--;
            if (draining && conn.active === 0) closeGently(socket);
          },
          onProtocolError: (message) =>
            log.debug("bulk Read connection error: {message}", { message }),
        });
      } else {
        socket.unshift(sniffed.head);
        toHttp2(conn);
        socket.resume();
      }
    });
  };
  const toHttp2 = (conn: Conn) => {
    accepting = conn;
    try {
      h2.emit("connection", conn.socket);
    } finally {
      accepting = undefined;
    }
  };

  const servers: net.Server[] = [];
  const socketFiles: string[] = [];
  const addresses: string[] = [];
  try {
    for (const addr of listen) {
      const server = net.createServer(onConnection);
      servers.push(server);
      if (addr.kind === "unix") {
        await prepareSocketPath(addr.path, opts.unlinkStaleSocket ?? false);
        await listenOn(server, addr.path);
        socketFiles.push(addr.path);
        fs.chmodSync(addr.path, opts.socketMode ?? 0o660);
        addresses.push(formatListenAddress(addr));
      } else {
        await listenOn(server, { host: addr.host, port: addr.port });
        const bound = server.address() as net.AddressInfo;
        addresses.push(
          formatListenAddress({
            kind: "tcp",
            host: addr.host,
            port: bound.port,
          }),
        );
      }
    }
  } catch (e) {
    for (const s of servers) s.close();
    for (const p of socketFiles) unlinkQuietly(p);
    throw e;
  }

  let closing: Promise<void> | undefined;
  return {
    addresses,
    shutdown(graceMs = 5000) {
      closing ??= (async () => {
        serving = false;
        draining = true;
        const closed = servers.map((s) =>
          new Promise<void>((resolve) => s.close(() => resolve()))
        );
        // Idle connections close now, busy ones when their last call ends.
        for (const c of conns) if (c.active === 0) closeGently(c.socket);
        const deadline = Date.now() + graceMs;
        while (conns.size > 0 && Date.now() < deadline) {
          await new Promise((r) => setTimeout(r, 20));
        }
        if (conns.size > 0) {
          log.warn("{n} connection(s) still busy after {ms} ms; cancelling", {
            n: conns.size,
            ms: graceMs,
          });
          shutdownController.abort();
          for (const c of conns) c.socket.destroy();
        }
        await Promise.race([
          Promise.all(closed),
          new Promise((r) => setTimeout(r, 1000)),
        ]);
        for (const p of socketFiles) unlinkQuietly(p);
      })();
      return closing;
    },
  };
}

/**
 * Ends a connection whose calls are all done: `end()` first sends what is
 * still queued on the socket (the tail of a finished stream may be; `destroy()`
 * would drop it and the peer would see a reset), then FIN; a peer that keeps
 * its side open is cut off after a second.
 */
function closeGently(socket: net.Socket): void {
  socket.end();
  setTimeout(() => socket.destroy(), 1000).unref?.();
}

/**
 * Gives a session a large connection-level receive window (for big Puts).
 * Not under Bun 1.4, where `setLocalWindowSize` stalls the transfer after
 * about 4 MiB (a 64 MiB Put from the compiled binary never finished).
 */
function widenSessionWindow(session: http2.ServerHttp2Session): void {
  if (typeof process.versions.bun === "string") return;
  const widen = () => {
    try {
      session.setLocalWindowSize(SESSION_WINDOW_BYTES);
    } catch {
      // Not supported by every runtime; the default window still works.
    }
  };
  if (session.connecting) session.once("connect", widen);
  else widen();
}

function listenOn(
  server: net.Server,
  where: string | net.ListenOptions,
): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (e: Error) => {
      server.off("listening", onListening);
      reject(listenError(where, e));
    };
    const onListening = () => {
      server.off("error", onError);
      server.on(
        "error",
        (e) => log.warn("listener error: {message}", { message: String(e) }),
      );
      resolve();
    };
    server.once("error", onError);
    server.once("listening", onListening);
    if (typeof where === "string") server.listen(where);
    else server.listen(where);
  });
}

function listenError(where: string | net.ListenOptions, e: Error): Error {
  const addr = typeof where === "string"
    ? `unix:${where}`
    : formatListenAddress({
      kind: "tcp",
      host: where.host ?? "",
      port: where.port ?? 0,
    });
  const code = (e as NodeJS.ErrnoException).code;
  const why = code === "EADDRINUSE"
    ? "address already in use"
    : code === "EACCES"
    ? "permission denied"
    : code === "EADDRNOTAVAIL" || code === "EINVAL"
    ? "address not available on this machine"
    : e.message;
  return new Error(`cannot listen on ${addr}: ${why}`);
}

/**
 * Makes sure a unix socket can be created at `path`: nothing there is fine;
 * an existing socket nobody answers on is removed only with `unlinkStale`;
 * anything else is an error saying what to do.
 */
async function prepareSocketPath(
  path: string,
  unlinkStale: boolean,
): Promise<void> {
  let st: fs.Stats;
  try {
    st = fs.lstatSync(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return;
    throw new Error(`cannot listen on unix:${path}: ${(e as Error).message}`);
  }
  if (!st.isSocket()) {
    throw new Error(
      `cannot listen on unix:${path}: a file that is not a socket exists there`,
    );
  }
  if (await socketAnswers(path)) {
    throw new Error(
      `cannot listen on unix:${path}: another process is listening on it`,
    );
  }
  if (!unlinkStale) {
    throw new Error(
      `cannot listen on unix:${path}: a stale socket file exists (remove it or pass --unix-listen-unlink)`,
    );
  }
  fs.unlinkSync(path);
}

function socketAnswers(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = net.connect(path);
    const done = (answer: boolean) => {
      sock.destroy();
      resolve(answer);
    };
    sock.once("connect", () => done(true));
    sock.once("error", () => done(false));
    setTimeout(() => done(false), 1000).unref?.();
  });
}

function unlinkQuietly(path: string): void {
  try {
    if (fs.lstatSync(path).isSocket()) fs.unlinkSync(path);
  } catch {
    // already gone
  }
}
