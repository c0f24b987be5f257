/**
 * The nix-daemon server: a unix socket (or stdin/stdout) and one
 * {@linkcode serveConnection} per client, many at once.
 *
 * @module
 */
import { chmodSync, existsSync, lstatSync, unlinkSync } from "node:fs";
import { createServer, type Server } from "node:net";
import { serveConnection } from "./connection.ts";
import { handlers } from "./ops/mod.ts";
import { socketStreams } from "./socket_streams.ts";
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
  /** Stops accepting, closes open connections, removes the socket. */
  close(): Promise<void>;
}

let nextId = 1;

/** Serves one connection over a pair of web streams (e.g. stdin/stdout). */
export function serveStreams(
  readable: ReadableStream<Uint8Array>,
  writable: WritableStream<Uint8Array>,
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
 */
export async function listenUnix(
  path: string,
  opts: DaemonOptions & { unlink?: boolean; mode?: number },
): Promise<RunningDaemon> {
  if (existsSync(path)) {
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
    const id = `#${nextId++}`;
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
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(path, () => {
      server.off("error", reject);
      resolve();
    });
  });
  if (opts.mode !== undefined) chmodSync(path, opts.mode);
  return {
    path,
    async close() {
      const closed = new Promise<void>((resolve) =>
        server.close(() => resolve())
      );
      for (const s of sockets) s.destroy();
      await closed;
      try {
        unlinkSync(path);
      } catch {
        // already gone
      }
    },
  };
}
