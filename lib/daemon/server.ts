/**
 * The nix-daemon server: a unix socket (or stdin/stdout) and one
 * {@linkcode serveConnection} per client, many at once.
 *
 * @module
 */
import { chmodSync, existsSync, lstatSync, unlinkSync } from "node:fs";
import { dirname } from "node:path";
import { createServer, type Server } from "node:net";
import process from "node:process";
import { serveConnection } from "./connection.ts";
import type { ByteSink } from "../wire/writer.ts";
import { handlers } from "./ops/mod.ts";
import { socketStreams } from "./socket_streams.ts";
import { enlargeUnixSendBuffer, handleFd } from "../runtime/raw_socket.ts";
import { type DaemonServices, DaemonStore } from "./store.ts";

/** How to run the daemon. */
export interface DaemonOptions {
  services: DaemonServices;
  /** Refuse every write. */
  readOnly?: boolean;
  /** The version string clients see. */
  daemonVersion: string;
  /** Decoded per-op log lines (`--log-wire`). */
  logWire?: (line: string) => void;
  /** One-line problem reports. */
  log: (line: string) => void;
}

/** A running daemon on a unix socket. */
export interface RunningDaemon {
  /** The socket path. */
  readonly path: string;
  /**
   * The listening socket's file descriptor (other processes may accept on
   * it too, see ./process_group.ts), if the runtime tells it.
   */
  readonly fd: number | undefined;
  /** This process's view of the store (its PathInfo cache). */
  readonly store: DaemonStore;
  /**
   * Stops accepting, closes open connections, removes the socket (unless
   * it was inherited).
   */
  close(): Promise<void>;
}

let nextId = 1;

/**
 * Send buffer asked for on each accepted connection (the kernel caps it at
 * net.core.wmem_max; needs FFI, else the default stays). A unix socket's
 * default (~208 KiB) is all a writer may have in flight, so NarFromPath made
 * a partial write and waited for the client every ~200 KiB. Measured on the
 * 76 MiB NAR of the bench, 10 fetches each, alternating: daemon CPU
 * 1.82-2.01 -> 1.33-1.40 s, 320-500 -> 370-720 MiB/s (load ~1.3).
 * `SNIX_DAEMON_UNIX_SNDBUF` overrides it in bytes (0: the system default).
 */
const SEND_BUFFER = Number(process.env.SNIX_DAEMON_UNIX_SNDBUF ?? 4 << 20);

/** Serves one connection over a pair of web streams (e.g. stdin/stdout). */
export function serveStreams(
  readable: ReadableStream<Uint8Array>,
  writable: WritableStream<Uint8Array> | ByteSink,
  opts: DaemonOptions,
): Promise<void> {
  const store = new DaemonStore(opts.services, opts.readOnly);
  return serveConnection(readable, writable, {
    store,
    handlers,
    daemonVersion: opts.daemonVersion,
    logWire: opts.logWire,
    log: opts.log,
    id: `#${nextId++}`,
  });
}

/**
 * Listens on the unix socket `path`. An existing socket file is an error
 * unless `unlink` is set; `mode` (e.g. 0o666) is applied to the socket.
 * With `inheritedFd`, accepts on that already listening socket instead
 * (made by another process for `path`), which it neither creates nor
 * removes. `idPrefix` starts the connection ids in logs (e.g. `2:`).
 */
export async function listenUnix(
  path: string,
  opts: DaemonOptions & {
    unlink?: boolean;
    mode?: number;
    inheritedFd?: number;
    idPrefix?: string;
  },
): Promise<RunningDaemon> {
  const inherited = opts.inheritedFd !== undefined;
  if (!inherited && existsSync(path)) {
    if (!opts.unlink) {
      throw new Error(
        `${path} already exists (use --unix-listen-unlink to replace it)`,
      );
    }
    if (!lstatSync(path).isSocket()) {
      throw new Error(`${path} exists and is not a socket; not removing it`);
    }
    unlinkSync(path);
  }
  const store = new DaemonStore(opts.services, opts.readOnly);
  const sockets = new Set<import("node:net").Socket>();
  const server: Server = createServer((socket) => {
    sockets.add(socket);
    if (SEND_BUFFER > 0) {
      void enlargeUnixSendBuffer(socket, SEND_BUFFER).catch(() => {});
    }
    const id = `#${opts.idPrefix ?? ""}${nextId++}`;
    const { readable, writable } = socketStreams(socket);
    serveConnection(readable, writable, {
      store,
      handlers,
      daemonVersion: opts.daemonVersion,
      logWire: opts.logWire,
      log: opts.log,
      id,
    }).finally(() => {
      sockets.delete(socket);
      socket.destroy();
    });
  });
  const dir = dirname(path);
  if (!inherited && !existsSync(dir)) {
    throw new Error(
      `cannot listen on ${path}: directory ${dir} does not exist`,
    );
  }
  await new Promise<void>((resolve, reject) => {
    const failed = (e: Error & { code?: string }) => {
      // (Bun's message does not say why: "Failed to listen at PATH")
      const why = e.code === "EACCES"
        ? "permission denied"
        : e.code ?? e.message;
      reject(new Error(`cannot listen on ${path}: ${why}`));
    };
    server.once("error", failed);
    const listening = () => {
      server.off("error", failed);
      resolve();
    };
    if (inherited) server.listen({ fd: opts.inheritedFd }, listening);
    else server.listen(path, listening);
  });
  if (opts.mode !== undefined && !inherited) chmodSync(path, opts.mode);
  return {
    path,
    fd: handleFd(server),
    store,
    async close() {
      const closed = new Promise<void>((resolve) =>
        server.close(() => resolve())
      );
      for (const s of sockets) s.destroy();
      await closed;
      if (inherited) return;
      try {
        unlinkSync(path);
      } catch {
        // already gone
      }
    },
  };
}
