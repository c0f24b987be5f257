/**
 * A client stream socket (TCP or unix) with the cheapest receive path each
 * runtime offers, behind one small interface.
 *
 * Why: under Deno 2.9, `node:net` hands every received piece over as a
 * fresh 64 KiB `Buffer` through the Readable stream machinery; measured on
 * this 2-core machine, receiving 512 MiB from a plain writer cost the
 * reader 0.60-0.88 ms CPU/MiB that way and 0.18-0.20 ms/MiB through
 * `Deno.connect` + `conn.read` (the same bytes, the same sockets). Here,
 * under Deno, reads go straight into large slabs (1 MiB, used up from the
 * front, a new one when little room is left), so received bytes stay valid
 * views without a copy or a buffer per read. Elsewhere (Bun, Node) it is
 * `node:net`, whose receive path there is already cheap.
 *
 * The implementation is chosen by which global exists (`SNIX_RAW_SOCKET=node`
 * forces `node:net`, to compare); nothing else in `lib/` touches `Deno`.
 *
 * @module
 */
import * as fs from "node:fs";
import * as net from "node:net";
import process from "node:process";

/** Where to connect: a unix socket path, or a TCP host and port. */
export type RawTarget = { path: string } | { host: string; port: number };

/** A connected stream socket. */
export interface RawSocket {
  /**
   * Starts delivering received bytes to `onData`, in order; each piece is
   * a view that stays valid (never reused). `onEnd` is called once, when
   * the peer closed (no argument) or the connection failed (an Error),
   * but not after {@linkcode RawSocket.close}.
   */
  start(
    onData: (piece: Uint8Array) => void,
    onEnd: (error?: Error) => void,
  ): void;
  /** Queues `bytes` to be sent after what was queued before (no copy: keep it unchanged). */
  write(bytes: Uint8Array): void;
  /** Keep the process alive while the socket is open (the default). */
  ref(): void;
  /** Do not keep the process alive for this socket. */
  unref(): void;
  /** Closes the socket now (queued writes may be lost). */
  close(): void;
}

/** The size of the receive slabs (Deno). */
const SLAB = 1 << 20;
/** A slab with less room than this left is replaced before a read. */
const MIN_READ = 64 << 10;

/** A readable name of `target` for messages. */
export function describeTarget(target: RawTarget): string {
  return "path" in target
    ? `unix:${target.path}`
    : `${
      target.host.includes(":") ? `[${target.host}]` : target.host
    }:${target.port}`;
}

/**
 * Connects to `target`. Rejects with an Error naming the target and the
 * reason (e.g. "cannot connect to unix:/x.sock: connection refused").
 */
export function connectRaw(target: RawTarget): Promise<RawSocket> {
  // deno-lint-ignore no-explicit-any
  const deno = (globalThis as any).Deno as DenoNet | undefined;
  if (deno?.connect && process.env.SNIX_RAW_SOCKET !== "node") {
    return connectDeno(deno, target);
  }
  return connectNode(target);
}

function connectError(target: RawTarget, e: unknown): Error {
  const code = (e as { code?: string })?.code;
  const name = (e as { name?: string })?.name;
  let why = String((e as Error)?.message ?? e);
  if (code === "ECONNREFUSED" || name === "ConnectionRefused") {
    why = "connection refused";
  } else if (code === "ENOENT" || name === "NotFound") {
    why = "no such socket";
  }
  return new Error(`cannot connect to ${describeTarget(target)}: ${why}`);
}

// The part of the Deno namespace used here (lib/ is type-checked without
// assuming Deno's globals are present at run time).
interface DenoConn {
  read(p: Uint8Array): Promise<number | null>;
  write(p: Uint8Array): Promise<number>;
  close(): void;
  ref(): void;
  unref(): void;
  setNoDelay?(noDelay?: boolean): void;
}
interface DenoNet {
  connect(
    o:
      | { transport: "unix"; path: string }
      | { transport?: "tcp"; hostname: string; port: number },
  ): Promise<DenoConn>;
}

async function connectDeno(
  deno: DenoNet,
  target: RawTarget,
): Promise<RawSocket> {
  let conn: DenoConn;
  try {
    conn = "path" in target
      ? await deno.connect({ transport: "unix", path: target.path })
      : await deno.connect({ hostname: target.host, port: target.port });
  } catch (e) {
    throw connectError(target, e);
  }
  conn.setNoDelay?.(true);
  return new DenoRawSocket(conn);
}

class DenoRawSocket implements RawSocket {
  readonly #conn: DenoConn;
  #closed = false;
  #ended = false;
  #onEnd: ((error?: Error) => void) | undefined;
  #queue: Uint8Array[] = [];
  #writing = false;
  #refed = true;

  constructor(conn: DenoConn) {
    this.#conn = conn;
  }

  start(onData: (piece: Uint8Array) => void, onEnd: (error?: Error) => void) {
    this.#onEnd = onEnd;
    void this.#readLoop(onData);
  }

  async #readLoop(onData: (piece: Uint8Array) => void): Promise<void> {
    let slab = new Uint8Array(SLAB);
    let used = 0;
    try {
      while (!this.#closed) {
        if (SLAB - used < MIN_READ) {
          slab = new Uint8Array(SLAB);
          used = 0;
        }
        const n = await this.#conn.read(slab.subarray(used));
        if (this.#closed) return;
        if (n === null) break;
        const piece = slab.subarray(used, used + n);
        used += n;
        onData(piece);
      }
      this.#end();
    } catch (e) {
      this.#end(e instanceof Error ? e : new Error(String(e)));
    }
  }

  #end(error?: Error): void {
    if (this.#ended || this.#closed) return;
    this.#ended = true;
    this.#onEnd?.(error);
  }

  write(bytes: Uint8Array): void {
    if (this.#closed || this.#ended) return;
    this.#queue.push(bytes);
    if (!this.#writing) void this.#writeLoop();
  }

  async #writeLoop(): Promise<void> {
    this.#writing = true;
    try {
      while (this.#queue.length > 0 && !this.#closed) {
        let b = this.#queue.shift()!;
        while (b.length > 0) b = b.subarray(await this.#conn.write(b));
      }
    } catch (e) {
      if (!this.#closed) {
        this.#end(e instanceof Error ? e : new Error(String(e)));
        this.close();
      }
    } finally {
      this.#writing = false;
    }
  }

  ref(): void {
    if (this.#refed || this.#closed) return;
    this.#refed = true;
    this.#conn.ref();
  }

  unref(): void {
    if (!this.#refed || this.#closed) return;
    this.#refed = false;
    this.#conn.unref();
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#queue = [];
    try {
      this.#conn.close();
    } catch {
      // already closed by the runtime
    }
  }
}

function connectNode(target: RawTarget): Promise<RawSocket> {
  return new Promise((resolve, reject) => {
    const socket = "path" in target
      ? net.connect(target.path)
      : net.connect({ host: target.host, port: target.port });
    const onError = (e: Error) => reject(connectError(target, e));
    socket.once("error", onError);
    socket.once("connect", () => {
      socket.off("error", onError);
      socket.setNoDelay?.(true);
      resolve(new NodeRawSocket(socket));
    });
  });
}

class NodeRawSocket implements RawSocket {
  readonly #socket: net.Socket;
  #closed = false;
  #ended = false;

  constructor(socket: net.Socket) {
    this.#socket = socket;
    // Errors before start() are reported by it (through "close").
    socket.on("error", () => {});
  }

  start(onData: (piece: Uint8Array) => void, onEnd: (error?: Error) => void) {
    let failure: Error | undefined;
    const end = () => {
      if (this.#ended || this.#closed) return;
      this.#ended = true;
      onEnd(failure);
    };
    this.#socket.on("data", (d: Uint8Array) => {
      if (!this.#closed) onData(d);
    });
    this.#socket.on("error", (e: Error) => {
      failure ??= e;
      end();
    });
    this.#socket.on("end", end);
    this.#socket.on("close", end);
    if (this.#socket.destroyed) end();
  }

  write(bytes: Uint8Array): void {
    if (!this.#closed) this.#socket.write(bytes);
  }

  ref(): void {
    this.#socket.ref();
  }

  unref(): void {
    this.#socket.unref();
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#socket.destroy();
  }
}

// --- send buffer of accepted unix sockets ---------------------------------

/** setsockopt/getsockopt over FFI (`buffer` arguments are byte arrays). */
interface SockOpt {
  setsockopt(
    fd: number,
    level: number,
    name: number,
    value: Uint8Array,
    len: number,
  ): number;
  getsockopt(
    fd: number,
    level: number,
    name: number,
    value: Uint8Array,
    len: Uint8Array,
  ): number;
  /** fcntl(fd, cmd, int arg) (the variadic int passes like a fixed one on x86-64 and aarch64). */
  fcntl(fd: number, cmd: number, arg: number): number;
  close(fd: number): number;
}

const SOL_SOCKET = 1;
const SO_SNDBUF = 7;
const SO_DOMAIN = 39;
const AF_UNIX = 1;

let sockOpt: Promise<SockOpt | undefined> | undefined;

/**
 * Whether FFI may be used without asking: always under Bun, under Deno only
 * if the permission is already granted (so loading a library through FFI
 * never brings up a permission prompt).
 */
export function ffiGranted(): boolean {
  // deno-lint-ignore no-explicit-any
  const g = globalThis as any;
  if (g.Bun !== undefined) return true;
  try {
    return g.Deno?.permissions?.querySync?.({ name: "ffi" }).state ===
      "granted";
  } catch {
    return false;
  }
}

async function loadSockOpt(): Promise<SockOpt | undefined> {
  // deno-lint-ignore no-explicit-any
  const g = globalThis as any;
  try {
    if (g.Bun !== undefined) {
      // A computed specifier keeps Deno's type checker from looking for it.
      const ffi = await import(["bun", "ffi"].join(":"));
      const { dlopen, FFIType } = ffi;
      const lib = dlopen("libc.so.6", {
        setsockopt: {
          args: [
            FFIType.i32,
            FFIType.i32,
            FFIType.i32,
            FFIType.ptr,
            FFIType.u32,
          ],
          returns: FFIType.i32,
        },
        getsockopt: {
          args: [
            FFIType.i32,
            FFIType.i32,
            FFIType.i32,
            FFIType.ptr,
            FFIType.ptr,
          ],
          returns: FFIType.i32,
        },
        fcntl: {
          args: [FFIType.i32, FFIType.i32, FFIType.i32],
          returns: FFIType.i32,
        },
        close: { args: [FFIType.i32], returns: FFIType.i32 },
      });
      return lib.symbols as SockOpt;
    }
    if (g.Deno?.dlopen) {
      // Only where FFI is already allowed: never a permission prompt.
      if (!ffiGranted()) return undefined;
      const lib = g.Deno.dlopen("libc.so.6", {
        setsockopt: {
          parameters: ["i32", "i32", "i32", "buffer", "u32"],
          result: "i32",
        },
        getsockopt: {
          parameters: ["i32", "i32", "i32", "buffer", "buffer"],
          result: "i32",
        },
        fcntl: { parameters: ["i32", "i32", "i32"], result: "i32" },
        close: { parameters: ["i32"], result: "i32" },
      });
      return lib.symbols as SockOpt;
    }
  } catch {
    // No FFI here (or no permission for it): sockets keep their defaults.
  }
  return undefined;
}

/**
 * Asks for a send buffer of `bytes` (the kernel caps it at
 * net.core.wmem_max) on `socket` if it is a unix stream socket; resolves
 * with whether it was set. Why: a unix socket's default send buffer
 * (net.core.wmem_default, ~208 KiB) is all a writer may have in flight, so
 * a bulk sender makes a partial write and waits for the reader every
 * ~200 KiB. Measured serving a 128 MiB blob from the store daemon under
 * Deno on this 2-core machine: 1.09-1.25 instead of 1.48-2.03 ms CPU/MiB
 * in the daemon and 830-970 instead of 550-650 MB/s. (TCP sockets tune
 * their own buffers and are left alone.) Needs FFI (Deno: --allow-ffi);
 * without it nothing changes.
 */
export async function enlargeUnixSendBuffer(
  socket: net.Socket,
  bytes: number,
): Promise<boolean> {
  const fd = handleFd(socket);
  if (fd === undefined) return false;
  const lib = await (sockOpt ??= loadSockOpt());
  if (!lib || socket.destroyed) return false;
  const v = new Uint8Array(4);
  const len = new Uint8Array(4);
  const dv = new DataView(v.buffer);
  new DataView(len.buffer).setUint32(0, 4, true);
  if (lib.getsockopt(fd, SOL_SOCKET, SO_DOMAIN, v, len) !== 0) return false;
  if (dv.getInt32(0, true) !== AF_UNIX) return false;
  dv.setInt32(0, bytes, true);
  return lib.setsockopt(fd, SOL_SOCKET, SO_SNDBUF, v, 4) === 0;
}

const F_SETPIPE_SZ = 1031;
const F_GETPIPE_SZ = 1032;

/**
 * Asks for a pipe buffer of at least `bytes` on `fd` if it is a pipe (the
 * kernel rounds up to a power of two of pages; above
 * /proc/sys/fs/pipe-max-size only root may go); resolves with the size it
 * then has, or `undefined` if `fd` is no pipe or there is no FFI. Why: a
 * pipe holds 64 KiB by default, so a NAR written to one (`nix-daemon
 * --stdio` under ssh-ng) wakes its reader and waits for it every 64 KiB.
 */
export async function enlargePipeBuffer(
  fd: number,
  bytes: number,
): Promise<number | undefined> {
  const lib = await (sockOpt ??= loadSockOpt());
  if (!lib) return undefined;
  const now = lib.fcntl(fd, F_GETPIPE_SZ, 0);
  if (now < 0) return undefined;
  if (now >= bytes) return now;
  const got = lib.fcntl(fd, F_SETPIPE_SZ, bytes);
  return got < 0 ? now : got;
}

// --- congestion control of loopback TCP connections ------------------------

const IPPROTO_TCP = 6;
const TCP_CONGESTION = 13;

/** `_handle.fd` of a node:net socket, where the runtime has one. */
/**
 * The file descriptor behind a node:net socket or server (`_handle.fd`),
 * where the runtime exposes it.
 */
export function handleFd(socket: net.Socket | net.Server): number | undefined {
  const fd = (socket as unknown as { _handle?: { fd?: unknown } })._handle?.fd;
  return typeof fd === "number" && fd >= 0 ? fd : undefined;
}

/**
 * The file descriptor of a connected TCP node:net socket: `_handle.fd`
 * (Node, Bun), else (Deno's TCP sockets have none) found through Linux's
 * /proc: the socket's inode from /proc/net/tcp{,6} by its two ports, then
 * the descriptor of /proc/self/fd that links to it. `undefined` if not found.
 */
function tcpSocketFd(socket: net.Socket): number | undefined {
  const own = handleFd(socket);
  if (own !== undefined) return own;
  const { localPort, remotePort } = socket;
  if (!localPort || !remotePort) return undefined;
  const port = (n: number) =>
    ":" + n.toString(16).toUpperCase().padStart(4, "0");
  const local = port(localPort);
  const remote = port(remotePort);
  let inode: string | undefined;
  try {
    for (const table of ["/proc/net/tcp", "/proc/net/tcp6"]) {
      for (const line of fs.readFileSync(table, "utf8").split("\n")) {
        const f = line.trim().split(/\s+/);
        if (f.length > 9 && f[1].endsWith(local) && f[2].endsWith(remote)) {
          inode = f[9];
        }
      }
    }
    if (!inode || inode === "0") return undefined;
    const link = `socket:[${inode}]`;
    for (const name of fs.readdirSync("/proc/self/fd")) {
      try {
        if (fs.readlinkSync(`/proc/self/fd/${name}`) === link) {
          return Number(name);
        }
      } catch { /* closed meanwhile */ }
    }
  } catch { /* no /proc */ }
  return undefined;
}

/** A descriptor of one's own: write to `fd`, then `close()` it. */
export interface OwnFd {
  readonly fd: number;
  close(): void;
}

const F_DUPFD_CLOEXEC = 1030;

/**
 * A duplicate of a connected node:net socket's (unix or TCP) descriptor, for
 * writes that bypass node:net (see lib/daemon/socket_streams.ts), or
 * `undefined` where it cannot be had (no FFI, no descriptor found, closed).
 * Why a duplicate: node:net closes its descriptor by itself when the peer
 * goes away, and the number is soon another connection's; the duplicate
 * keeps naming this socket (writes then fail with EPIPE) until closed.
 */
export async function dupSocketFd(
  socket: net.Socket,
): Promise<OwnFd | undefined> {
  const lib = await (sockOpt ??= loadSockOpt());
  // (no await between the check and the dup: node:net cannot close it)
  if (!lib || socket.destroyed) return undefined;
  const own = tcpSocketFd(socket);
  if (own === undefined) return undefined;
  const fd = lib.fcntl(own, F_DUPFD_CLOEXEC, 0);
  if (fd < 0) return undefined;
  let open = true;
  return {
    fd,
    close() {
      if (open) lib.close(fd);
      open = false;
    },
  };
}

/** Whether `address` is a loopback address (127/8, ::1, v4-mapped 127/8). */
function isLoopback(address: string | undefined): boolean {
  return address !== undefined &&
    (address.startsWith("127.") || address === "::1" ||
      address.startsWith("::ffff:127."));
}

/**
 * Sets the TCP congestion control `algorithm` (e.g. "cubic") of `socket`
 * if it is a TCP connection over loopback; resolves with whether it was
 * set. Why: where the system default is BBR (as on this machine), every
 * connection is paced by timers, which on loopback only costs the sender:
 * the store daemon serving a 128 MiB blob under Deno spent 1.11-1.26 ms
 * CPU/MiB with BBR and 1.02-1.09 with cubic (4 interleaved pairs, load
 * ~2-2.6). Needs FFI (Deno: --allow-ffi); without it nothing changes.
 */
export async function setLoopbackCongestion(
  socket: net.Socket,
  algorithm: string,
): Promise<boolean> {
  if (!isLoopback(socket.remoteAddress) || !algorithm) return false;
  const lib = await (sockOpt ??= loadSockOpt());
  if (!lib || socket.destroyed) return false;
  const fd = tcpSocketFd(socket);
  if (fd === undefined) return false;
  const name = new TextEncoder().encode(algorithm);
  return lib.setsockopt(fd, IPPROTO_TCP, TCP_CONGESTION, name, name.length) ===
    0;
}

/**
 * The congestion control algorithm of a TCP `socket` (for tests and
 * logs), or `undefined` where it cannot be read.
 */
export async function tcpCongestion(
  socket: net.Socket,
): Promise<string | undefined> {
  const lib = await (sockOpt ??= loadSockOpt());
  const fd = tcpSocketFd(socket);
  if (!lib || fd === undefined) return undefined;
  const v = new Uint8Array(16);
  const len = new Uint8Array(4);
  new DataView(len.buffer).setUint32(0, 16, true);
  if (lib.getsockopt(fd, IPPROTO_TCP, TCP_CONGESTION, v, len) !== 0) {
    return undefined;
  }
  const end = v.indexOf(0);
  return new TextDecoder().decode(v.subarray(0, end < 0 ? 16 : end));
}
