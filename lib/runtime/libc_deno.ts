/**
 * The {@linkcode LibC} binding for Deno: `Deno.dlopen` on libc.so.6. `read`
 * is declared `nonblocking`, so it runs on Deno's blocking thread pool and
 * returns a Promise; errno of such a call lives on the pool thread and cannot
 * be read, so a failed read is classified with `poll` instead. `syncfs` is
 * nonblocking too (it waits for the disk).
 *
 * @module
 */
import {
  type DeviceReader,
  iovecs,
  type LibC,
  OsError,
  pathCalls,
  POLLERR,
  POLLHUP,
  POLLIN,
  POLLNVAL,
} from "./libc.ts";

const SYMBOLS = {
  open: { parameters: ["buffer", "i32", "u32"], result: "i32" },
  close: { parameters: ["i32"], result: "i32" },
  mount: {
    parameters: ["buffer", "buffer", "buffer", "u64", "buffer"],
    result: "i32",
  },
  umount2: { parameters: ["buffer", "i32"], result: "i32" },
  read: {
    parameters: ["i32", "buffer", "usize"],
    result: "isize",
    nonblocking: true,
  },
  write: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  writev: { parameters: ["i32", "buffer", "i32"], result: "isize" },
  sendfile: {
    parameters: ["i32", "i32", "pointer", "usize"],
    result: "isize",
  },
  poll: { parameters: ["buffer", "u64", "i32"], result: "i32" },
  syncfs: { parameters: ["i32"], result: "i32", nonblocking: true },
  // The same call on the main thread: only to learn errno after the
  // nonblocking one failed (its errno stayed on the pool thread).
  syncfs_errno: { name: "syncfs", parameters: ["i32"], result: "i32" },
  __errno_location: { parameters: [], result: "pointer" },
  // read and poll on the calling thread / off it (see LibC.readNow, pollAsync).
  read_now: {
    name: "read",
    parameters: ["i32", "buffer", "usize"],
    result: "isize",
  },
  poll_async: {
    name: "poll",
    parameters: ["buffer", "u64", "i32"],
    result: "i32",
    nonblocking: true,
  },
  // fcntl(fd, cmd, int arg): the variadic int passes like a fixed one on
  // the x86-64 and aarch64 Linux ABIs.
  fcntl: { parameters: ["i32", "i32", "i32"], result: "i32" },
} as const;

const F_GETFL = 3;
const F_SETFL = 4;
const O_NONBLOCK = 0o4000;

/** Opens libc with Deno's FFI (needs `--allow-ffi`). */
export function openDenoLibC(): LibC {
  let lib;
  try {
    lib = Deno.dlopen("libc.so.6", SYMBOLS);
  } catch (e) {
    throw new Error(
      `cannot load libc.so.6 via FFI (run with --allow-ffi): ${
        (e as Error).message
      }`,
    );
  }
  const s = lib.symbols;
  const errno = (): number => {
    const p = s.__errno_location();
    return p === null ? 0 : new Deno.UnsafePointerView(p).getInt32();
  };
  const pollBuf = new Uint8Array(8);
  const pollView = new DataView(pollBuf.buffer);
  const poll = (fd: number, events: number, timeoutMs: number): number => {
    pollView.setInt32(0, fd, true);
    pollView.setInt16(4, events, true);
    pollView.setInt16(6, 0, true);
    const r = s.poll(pollBuf, 1n, timeoutMs);
    if (r < 0) return POLLERR;
    return pollView.getUint16(6, true);
  };
  return {
    runtime: "deno",
    ...pathCalls(s, errno),
    write(fd, data) {
      const n = Number(
        s.write(fd, data as Uint8Array<ArrayBuffer>, BigInt(data.byteLength)),
      );
      return n < 0 ? -errno() : n;
    },
    writev(fd, parts) {
      const [iov, n] = iovecs(
        parts,
        (p) =>
          BigInt(
            Deno.UnsafePointer.value(
              Deno.UnsafePointer.of(p as Uint8Array<ArrayBuffer>),
            ),
          ),
      );
      if (n === 0) return 0;
      const r = Number(s.writev(fd, iov, n));
      return r < 0 ? -errno() : r;
    },
    sendfile(outFd, inFd, count) {
      const n = Number(s.sendfile(outFd, inFd, null, BigInt(count)));
      return n < 0 ? -errno() : n;
    },
    poll,
    async syncfs(fd) {
      if (await s.syncfs(fd) === 0) return;
      // Rare (EBADF, EIO, ENOSPC): a second call, on this thread, tells why
      // (or succeeds, and then everything is written after all).
      if (s.syncfs_errno(fd) < 0) throw new OsError("syncfs", errno());
    },
    readNow(fd, buffer) {
      const n = Number(
        s.read_now(
          fd,
          buffer as Uint8Array<ArrayBuffer>,
          BigInt(buffer.byteLength),
        ),
      );
      return n < 0 ? -errno() : n;
    },
    async pollAsync(fd, events, timeoutMs) {
      // Its own buffer: the call runs on another thread.
      const b = new Uint8Array(8);
      const v = new DataView(b.buffer);
      v.setInt32(0, fd, true);
      v.setInt16(4, events, true);
      const r = await s.poll_async(b, 1n, timeoutMs);
      return r < 0 ? POLLERR : v.getUint16(6, true);
    },
    setNonBlocking(fd) {
      const flags = s.fcntl(fd, F_GETFL, 0);
      return flags >= 0 && s.fcntl(fd, F_SETFL, flags | O_NONBLOCK) >= 0;
    },
    reader(fd, bufferSize): DeviceReader {
      const buf = new Uint8Array(bufferSize);
      let closed = false;
      return {
        async read() {
          let failures = 0;
          while (!closed) {
            const n = Number(await s.read(fd, buf, BigInt(bufferSize)));
            if (n > 0) return buf.subarray(0, n);
            if (n === 0 || ++failures > 1000) return null;
            // errno is not readable here (it belongs to the pool thread):
            // an unmounted or aborted connection reports POLLERR.
            const rev = poll(fd, POLLIN, 0);
            if (rev & (POLLERR | POLLHUP | POLLNVAL)) return null;
          }
          return null;
        },
        close() {
          closed = true;
        },
      };
    },
  };
}
