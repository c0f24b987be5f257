/**
 * The few libc calls the FUSE server needs (open, close, mount, umount2,
 * read, write, poll), plus sendfile for `snix nar dump` and syncfs for the
 * local castore's commits, behind one small interface with a Deno and a Bun
 * implementation. The implementation is chosen at run time by which global
 * exists (`Deno` or `Bun`); nothing else in `lib/` touches either.
 *
 * Reading `/dev/fuse` blocks, so it is the one asynchronous call: under Deno
 * it runs on the runtime's blocking thread pool (an FFI symbol declared
 * `nonblocking`), under Bun in a `Worker` that does a plain blocking `read`.
 *
 * @module
 */

/** Open flags (Linux x86_64/aarch64 values). */
export const O_RDONLY = 0;
/** Open for reading and writing. */
export const O_RDWR = 2;
/** Close on exec. */
export const O_CLOEXEC = 0o2000000;

/** mount(2) flags. */
export const MS_RDONLY = 1n;
/** Do not honour set-user-ID bits. */
export const MS_NOSUID = 2n;
/** Do not allow device files. */
export const MS_NODEV = 4n;

/** umount2(2): force. */
export const MNT_FORCE = 1;
/** umount2(2): lazy unmount, detach now and clean up when no longer busy. */
export const MNT_DETACH = 2;

/** poll(2) event bits. */
export const POLLIN = 0x1;
/** Error condition. */
export const POLLERR = 0x8;
/** Writable without blocking. */
export const POLLOUT = 0x4;
/** Hung up. */
export const POLLHUP = 0x10;
/** Invalid fd. */
export const POLLNVAL = 0x20;
/** Negated by {@linkcode LibC.readNow} when a non-blocking fd has nothing. */
export const EAGAIN = 11;

/** Linux errno names for the values the FUSE code meets. */
const ERRNO_NAMES: Record<number, string> = {
  1: "EPERM",
  2: "ENOENT",
  4: "EINTR",
  5: "EIO",
  9: "EBADF",
  11: "EAGAIN",
  13: "EACCES",
  16: "EBUSY",
  19: "ENODEV",
  20: "ENOTDIR",
  22: "EINVAL",
  28: "ENOSPC",
  24: "EMFILE",
  30: "EROFS",
  32: "EPIPE",
  38: "ENOSYS",
  107: "ENOTCONN",
};

/** A failed system call; `errno` is the positive error number. */
export class OsError extends Error {
  /** The positive errno value. */
  readonly errno: number;
  /** The errno's symbolic name (`ENOENT`), or `errno N`. */
  readonly code: string;
  constructor(call: string, errno: number, detail?: string) {
    const code = ERRNO_NAMES[errno] ?? `errno ${errno}`;
    super(`${call}${detail ? ` ${detail}` : ""}: ${code}`);
    this.name = "OsError";
    this.errno = errno;
    this.code = code;
  }
}

/**
 * The `struct iovec` array for writev(2) (address, length pairs) of the
 * non-empty parts (an empty one's address may be null), and their count.
 * `addressOf` is the runtime's FFI pointer of a byte array's first byte.
 */
export function iovecs(
  parts: Uint8Array[],
  addressOf: (p: Uint8Array) => bigint,
): [Uint8Array<ArrayBuffer>, number] {
  const iov = new BigUint64Array(parts.length * 2);
  let n = 0;
  for (const p of parts) {
    if (p.byteLength === 0) continue;
    iov[n * 2] = addressOf(p);
    iov[n * 2 + 1] = BigInt(p.byteLength);
    n++;
  }
  return [new Uint8Array(iov.buffer), n];
}

/**
 * Reads whole messages from a character device such as `/dev/fuse`, one at a
 * time. The returned bytes are valid until the next `read()` call.
 */
export interface DeviceReader {
  /**
   * The next message, or `null` once the device is gone (unmounted,
   * aborted, closed). Transient errors (EINTR, EAGAIN, ENOENT) are retried.
   */
  read(): Promise<Uint8Array | null>;
  /** Stops reading (a read in flight still completes). */
  close(): void;
}

/** The libc calls we use. Synchronous calls throw {@linkcode OsError}. */
export interface LibC {
  /** Which runtime implements this. */
  readonly runtime: "deno" | "bun";
  /** open(2) (a string path is UTF-8 encoded); returns the fd. */
  open(path: string | Uint8Array, flags: number, mode?: number): number;
  /** close(2); errors are ignored. */
  close(fd: number): void;
  /** mount(2). */
  mount(
    source: string,
    target: string,
    fstype: string,
    flags: bigint,
    data: string,
  ): void;
  /** umount2(2). */
  umount2(target: string, flags: number): void;
  /** write(2): bytes written, or a negative errno (never throws: the hot path). */
  write(fd: number, data: Uint8Array): number;
  /**
   * writev(2) of `parts` in order, in one call (for FUSE replies: the kernel
   * takes a reply only whole, from a single write): bytes written, or a
   * negative errno (never throws). At most 1024 parts (IOV_MAX).
   */
  writev(fd: number, parts: Uint8Array[]): number;
  /**
   * sendfile(2) from the current offset of `inFd` (which it advances) to
   * `outFd`: bytes copied (0 at the end of the file), or a negative errno
   * (never throws: the hot path).
   */
  sendfile(outFd: number, inFd: number, count: number): number;
  /** poll(2) on one fd: the returned events (`revents`), 0 on timeout. */
  poll(fd: number, events: number, timeoutMs: number): number;
  /** A blocking reader of `fd` that does not block the event loop. */
  reader(fd: number, bufferSize: number): DeviceReader;
  /**
   * syncfs(2): writes the dirty data and metadata of the whole file system
   * holding `fd` to stable storage. It can take long (it waits for the
   * disk), so it runs off the main thread (Deno: the FFI blocking pool; Bun:
   * a worker) and never blocks the event loop. Rejects with
   * {@linkcode OsError} on failure.
   */
  syncfs(fd: number): Promise<void>;
  /**
   * read(2) on this thread: bytes read, or a negative errno (never throws:
   * the hot path). For a non-blocking fd ({@linkcode LibC.setNonBlocking}),
   * where it returns `-EAGAIN` instead of waiting. Optional (Deno has it).
   */
  readNow?(fd: number, buffer: Uint8Array): number;
  /**
   * poll(2) on one fd off this thread (Deno: the FFI blocking pool), so it
   * can wait without blocking the event loop: the returned events.
   * Optional (Deno has it).
   */
  pollAsync?(fd: number, events: number, timeoutMs: number): Promise<number>;
  /** Sets O_NONBLOCK on `fd` (fcntl(2)); false if that failed. Optional. */
  setNonBlocking?(fd: number): boolean;
}

let cached: Promise<LibC> | undefined;

/** The libc binding for the current runtime (loaded once). */
export function libc(): Promise<LibC> {
  cached ??= load();
  return cached;
}

/** Whether this runtime can load the FFI binding at all (Deno or Bun). */
export function ffiAvailable(): boolean {
  const g = globalThis as Record<string, unknown>;
  return g.Bun !== undefined || g.Deno !== undefined;
}

async function load(): Promise<LibC> {
  const g = globalThis as Record<string, unknown>;
  if (g.Bun !== undefined) {
    const m = await import("./libc_bun.ts");
    return m.openBunLibC();
  }
  if (g.Deno !== undefined) {
    const m = await import("./libc_deno.ts");
    return m.openDenoLibC();
  }
  throw new Error("FUSE needs Deno or Bun (FFI); this runtime has neither");
}

/** A NUL-terminated copy of `s` (strings are UTF-8 encoded). */
export function cString(s: string | Uint8Array): Uint8Array<ArrayBuffer> {
  const bytes = typeof s === "string" ? new TextEncoder().encode(s) : s;
  const out = new Uint8Array(bytes.length + 1);
  out.set(bytes);
  return out;
}

/** A path for messages: strings as they are, bytes decoded as UTF-8. */
export function showPath(p: string | Uint8Array): string {
  return typeof p === "string" ? p : new TextDecoder().decode(p);
}

/**
 * The raw FFI symbols behind {@linkcode pathCalls}, as both bindings declare
 * them (paths are NUL-terminated buffers; -1 means failure, see errno).
 */
export interface RawPathSymbols {
  open(path: Uint8Array, flags: number, mode: number): number;
  close(fd: number): number;
  mount(
    source: Uint8Array,
    target: Uint8Array,
    fstype: Uint8Array,
    flags: bigint,
    data: Uint8Array,
  ): number;
  umount2(target: Uint8Array, flags: number): number;
}

/**
 * open, close, mount and umount2 over a binding's raw symbols, the same for
 * Deno and Bun: failures throw {@linkcode OsError} with `errno()`.
 */
export function pathCalls(
  s: RawPathSymbols,
  errno: () => number,
): Pick<LibC, "open" | "close" | "mount" | "umount2"> {
  return {
    open(path, flags, mode = 0) {
      const fd = s.open(cString(path), flags, mode);
      if (fd < 0) throw new OsError("open", errno(), showPath(path));
      return fd;
    },
    close(fd) {
      s.close(fd);
    },
    mount(source, target, fstype, flags, data) {
      const r = s.mount(
        cString(source),
        cString(target),
        cString(fstype),
        flags,
        cString(data),
      );
      if (r < 0) throw new OsError("mount", errno(), target);
    },
    umount2(target, flags) {
      if (s.umount2(cString(target), flags) < 0) {
        throw new OsError("umount2", errno(), target);
      }
    },
  };
}
